"""Alignment metrics: known pairs (FOSCTTM, partner among the nearest), label transfer and silhouettes, domain mixing."""

from __future__ import annotations


import numpy as np
import pandas as pd
from scipy.stats import hypergeom
from sklearn.metrics import f1_score, silhouette_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from ._checks import (
    ArrayLike,
    _as_dense_matrix,
    _as_labels,
    _lines_per_block,
    _require_k,
    _require_same_shape,
)

# Squared distances that differ by less than this fraction of the squared norms they
# were computed from are treated as tied: the ``|a|^2 + |b|^2 - 2 a.b`` expansion
# cannot resolve finer differences, and a collapsed latent (all cells identical)
# must come out as uninformative (FOSCTTM 0.5), not as perfect.
_TIE_RTOL = 1e-10



# --------------------------------------------------------------------- paired alignment


def _validate_pair(za: ArrayLike, zb: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a = _as_dense_matrix(za, "za", min_rows=2)
    b = _as_dense_matrix(zb, "zb")
    _require_same_shape(a, b, "za", "zb", meaning="row i of each must be the same cell in a shared latent space")
    return a, b


def _partner_rank_counts(za: np.ndarray, zb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Count, per cell, the other-domain cells closer than / tied with its true partner.

    Returns ``(closer_ab, tied_ab, closer_ba, tied_ba)``: for cell ``i`` of A, how many
    B cells ``j != i`` are strictly closer to ``za[i]`` than ``zb[i]`` is, and how many
    are at the same distance; then the same for each cell of B against A. The
    squared-distance matrix is built one block of A rows at a time.
    """
    n = za.shape[0]
    # Centring both latents on their pooled mean keeps the norms (and so the rounding
    # error of the dot-product expansion) small and makes translations exact no-ops.
    centre = np.concatenate([za, zb]).mean(axis=0)
    a = za - centre
    b = zb - centre
    a_sq = np.einsum("ij,ij->i", a, a)
    b_sq = np.einsum("ij,ij->i", b, b)
    partner = np.einsum("ij,ij->i", a - b, a - b)
    tol_ab = _TIE_RTOL * (a_sq + b_sq.max())
    tol_ba = _TIE_RTOL * (b_sq + a_sq.max())

    # Comparing against per-cell thresholds avoids materialising difference matrices.
    below_ab, above_ab = partner - tol_ab, partner + tol_ab
    below_ba, above_ba = partner - tol_ba, partner + tol_ba
    closer_ab = np.zeros(n, dtype=np.int64)
    within_ab = np.zeros(n, dtype=np.int64)
    closer_ba = np.zeros(n, dtype=np.int64)
    within_ba = np.zeros(n, dtype=np.int64)
    step = _lines_per_block(n)
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        local = np.arange(rows.stop - rows.start)
        sq_dist = a_sq[rows, None] + b_sq[None, :] - 2.0 * (a[rows] @ b.T)
        # The true partner is not a competitor of itself; NaN drops out of every comparison.
        sq_dist[local, local + start] = np.nan
        closer_ab[rows] = np.count_nonzero(sq_dist < below_ab[rows, None], axis=1)
        within_ab[rows] = np.count_nonzero(sq_dist <= above_ab[rows, None], axis=1)
        closer_ba += np.count_nonzero(sq_dist < below_ba[None, :], axis=0)
        within_ba += np.count_nonzero(sq_dist <= above_ba[None, :], axis=0)
    tied_ab = within_ab - closer_ab
    tied_ba = within_ba - closer_ba
    return closer_ab, tied_ab, closer_ba, tied_ba


def foscttm_per_cell(za: ArrayLike, zb: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell Fraction Of Samples Closer Than the True Match, in both directions.

    For cell ``i`` of domain A, the fraction of the other ``n - 1`` cells of domain B
    whose latent is closer (Euclidean) to ``za[i]`` than its true partner ``zb[i]``;
    and the same for every cell of B against A. Other cells at exactly the partner's
    distance count one half, the expected value under random tie-breaking, so a
    collapsed latent scores 0.5 rather than a spurious 0.

    Parameters
    ----------
    za, zb
        Latent coordinates ``(n_cells, n_dims)`` of the same ``n_cells >= 2`` cells
        measured in two domains; row ``i`` of each is the same cell.

    Returns
    -------
    a_to_b, b_to_a
        Arrays of shape ``(n_cells,)`` with values in ``[0, 1]``; 0 means the true
        partner is the nearest cross-domain cell.

    Raises
    ------
    ValueError
        If the shapes differ, there are fewer than two cells, or a value is not finite.

    See Also
    --------
    foscttm : the mean over both directions.
    """
    a, b = _validate_pair(za, zb)
    closer_ab, tied_ab, closer_ba, tied_ba = _partner_rank_counts(a, b)
    n_others = a.shape[0] - 1
    return (closer_ab + 0.5 * tied_ab) / n_others, (closer_ba + 0.5 * tied_ba) / n_others


def foscttm(za: ArrayLike, zb: ArrayLike) -> float:
    """Mean FOSCTTM over all cells of both domains (Liu et al. 2019; Yang et al. 2021).

    Perfect alignment gives 0; latents that carry no information about the pairing
    give about 0.5. The value is symmetric in ``za`` and ``zb`` and invariant to any
    rotation, reflection or translation applied to both latents together.

    Parameters
    ----------
    za, zb
        Latent coordinates ``(n_cells, n_dims)``; row ``i`` of each is the same cell.

    Returns
    -------
    float
        The average of :func:`foscttm_per_cell` over both directions, in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[0.0], [1.0], [3.0]])
    >>> foscttm(z, z)
    0.0
    """
    a_to_b, b_to_a = foscttm_per_cell(za, zb)
    return float((a_to_b.mean() + b_to_a.mean()) / 2.0)


def partner_in_knn(za: ArrayLike, zb: ArrayLike, *, k: int = 5) -> float:
    """Fraction of cells whose true partner is among their ``k`` nearest cross-domain cells.

    Computed for every cell of A against the cells of B and vice versa, then averaged
    over both directions. Yang et al. (2021) report ``k=5`` and ``k=50``. When cells at
    the partner's distance straddle the k-th place, the cell counts with the
    probability that random tie-breaking puts the partner inside the first ``k``.

    Parameters
    ----------
    za, zb
        Latent coordinates ``(n_cells, n_dims)``; row ``i`` of each is the same cell.
    k
        Neighbourhood size, ``1 <= k <= n_cells - 1``.

    Returns
    -------
    float
        In ``[0, 1]``; 1 for perfect alignment, about ``k / n_cells`` for random latents.
    """
    a, b = _validate_pair(za, zb)
    _require_k(k, a.shape[0] - 1, "other cells")
    closer_ab, tied_ab, closer_ba, tied_ba = _partner_rank_counts(a, b)
    hit_ab = _partner_within_k_probability(closer_ab, tied_ab, k)
    hit_ba = _partner_within_k_probability(closer_ba, tied_ba, k)
    return float((hit_ab.mean() + hit_ba.mean()) / 2.0)


def _partner_within_k_probability(closer: np.ndarray, tied: np.ndarray, k: int) -> np.ndarray:
    """Probability that the partner lands in the first ``k`` places, ties broken at random.

    ``closer`` cells take the first places for sure; the ``k - closer`` places left are
    shared at random among the partner and its ``tied`` rivals.
    """
    return np.clip((k - closer) / (tied + 1.0), 0.0, 1.0)


# ----------------------------------------------------------------------------- labels


def knn_label_transfer(
    z_ref: ArrayLike,
    labels_ref: ArrayLike,
    z_query: ArrayLike,
    labels_query: ArrayLike,
    *,
    k: int = 5,
) -> dict[str, float]:
    """Predict query labels by majority vote of the ``k`` nearest reference cells.

    Trains a k-nearest-neighbour classifier on one domain's latent and labels and
    scores its predictions for the other domain's cells; good integration puts cells
    of a type next to the same type from the other domain.

    Parameters
    ----------
    z_ref, labels_ref
        Reference latent ``(n_ref, n_dims)`` and its labels ``(n_ref,)``.
    z_query, labels_query
        Query latent ``(n_query, n_dims)`` and its true labels ``(n_query,)``.
    k
        Number of reference neighbours voting (Euclidean distance, uniform weights;
        a tied vote goes to the label that sorts first).

    Returns
    -------
    dict
        ``accuracy``: fraction of query cells predicted correctly; ``macro_f1``: the
        unweighted mean F1 over every label that occurs in the query truth or in the
        predictions (query labels absent from the reference score 0).

    Raises
    ------
    ValueError
        On mismatched lengths or dimensions, missing labels, non-finite latents, or
        ``k`` larger than the reference.
    """
    ref = _as_dense_matrix(z_ref, "z_ref")
    query = _as_dense_matrix(z_query, "z_query")
    if ref.shape[1] != query.shape[1]:
        raise ValueError(
            f"z_ref has {ref.shape[1]} dimensions but z_query has {query.shape[1]}; "
            "both must be in the same latent space"
        )
    y_ref = _as_labels(labels_ref, "labels_ref", ref.shape[0])
    y_query = _as_labels(labels_query, "labels_query", query.shape[0])
    _require_k(k, ref.shape[0], "reference cells")

    classifier = KNeighborsClassifier(n_neighbors=k).fit(ref, y_ref)
    predicted = classifier.predict(query)
    return {
        "accuracy": float(np.mean(predicted == y_query)),
        "macro_f1": float(f1_score(y_query, predicted, average="macro", zero_division=0.0)),
    }


def unshared_matched_fraction(
    z_a: ArrayLike,
    labels_a: ArrayLike,
    z_b: ArrayLike,
    labels_b: ArrayLike,
    *,
    k: int = 5,
    shared: ArrayLike | None = None,
) -> dict[str, float]:
    """Fraction of cells of one-domain-only types that are matched onto a shared type.

    When two domains hold partly different cell types, a good alignment must not force
    the cells of a type found in one domain only onto the types both domains share. Each
    such cell gets the label voted by its ``k`` nearest cells of the other domain (as
    :func:`knn_label_transfer`: Euclidean distance, uniform weights, a tied vote goes to
    the label that sorts first); it counts as *matched onto a shared type* when that
    label is one of the shared types. Lower is better: 0 when every one-domain-only cell
    lands among the other domain's own unshared types, and a latent in which the domains
    are placed at random scores about the share of shared-type cells in the other domain.

    Parameters
    ----------
    z_a, labels_a
        Latent ``(n_a, n_dims)`` and labels ``(n_a,)`` of domain A.
    z_b, labels_b
        Latent ``(n_b, n_dims)`` and labels ``(n_b,)`` of domain B, same latent space.
    k
        Number of other-domain neighbours voting.
    shared
        The shared types; default: the labels present in both domains. Labels are
        compared as strings.

    Returns
    -------
    dict
        ``fraction``: over the one-domain-only cells of both domains together;
        ``a_to_b`` / ``b_to_a``: over those of A (voted by B) / of B (voted by A), NaN
        when that domain has none; ``n_a``, ``n_b``: how many such cells each domain has.

    Raises
    ------
    ValueError
        On mismatched lengths or dimensions, missing labels, non-finite latents, ``k``
        larger than a domain, no shared type, or no one-domain-only cell in either domain.
    """
    a = _as_dense_matrix(z_a, "z_a")
    b = _as_dense_matrix(z_b, "z_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"z_a has {a.shape[1]} dimensions but z_b has {b.shape[1]}; both must be in the same latent space"
        )
    la = _as_labels(labels_a, "labels_a", a.shape[0]).astype(str)
    lb = _as_labels(labels_b, "labels_b", b.shape[0]).astype(str)
    _require_k(k, min(a.shape[0], b.shape[0]), "cells of the smaller domain")
    common = set(la) & set(lb) if shared is None else {str(t) for t in np.asarray(shared).ravel()}
    if not common:
        raise ValueError("no cell type is shared by the two domains; nothing to be matched onto")
    only_a, only_b = ~np.isin(la, list(common)), ~np.isin(lb, list(common))
    if not only_a.any() and not only_b.any():
        raise ValueError("every cell belongs to a shared type; there are no one-domain-only cells to score")

    def matched(z_ref: np.ndarray, y_ref: np.ndarray, z_query: np.ndarray) -> np.ndarray:
        predicted = KNeighborsClassifier(n_neighbors=k).fit(z_ref, y_ref).predict(z_query)
        return np.isin(predicted, list(common))

    hits_a = matched(b, lb, a[only_a]) if only_a.any() else np.zeros(0, dtype=bool)
    hits_b = matched(a, la, b[only_b]) if only_b.any() else np.zeros(0, dtype=bool)
    return {
        "fraction": float(np.concatenate([hits_a, hits_b]).mean()),
        "a_to_b": float(hits_a.mean()) if hits_a.size else float("nan"),
        "b_to_a": float(hits_b.mean()) if hits_b.size else float("nan"),
        "n_a": float(hits_a.size),
        "n_b": float(hits_b.size),
    }


def silhouette_by_label(z: ArrayLike, labels: ArrayLike, *, max_cells: int = 5000, seed: int = 0) -> float:
    """Mean silhouette width of the labels in the latent space (higher = better separated).

    Parameters
    ----------
    z
        Latent coordinates ``(n_cells, n_dims)``.
    labels
        One label per cell; at least two distinct labels, fewer than ``n_cells``.
    max_cells
        Above this many cells the silhouette is computed on a random subset of this
        size (its cost is quadratic in the cell count).
    seed
        Seed of that subset, so the value is reproducible.

    Returns
    -------
    float
        In ``[-1, 1]``: near 1 for compact, well-separated label clusters, near 0 for
        overlapping labels, negative when cells sit closer to another label.
    """
    return _subsampled_silhouette(z, labels, "labels", max_cells=max_cells, seed=seed)


def _subsampled_silhouette(z: ArrayLike, labels: ArrayLike, name: str, *, max_cells: int, seed: int) -> float:
    mat = _as_dense_matrix(z, "z", min_rows=3)
    groups = _as_labels(labels, name, mat.shape[0])
    n_groups = len(pd.unique(groups))
    if not 2 <= n_groups <= mat.shape[0] - 1:
        raise ValueError(f"the silhouette needs between 2 and n_cells - 1 distinct {name}, got {n_groups}")
    if max_cells < 3:
        raise ValueError(f"max_cells must be at least 3, got {max_cells}")
    sample_size = max_cells if mat.shape[0] > max_cells else None
    return float(silhouette_score(mat, groups, sample_size=sample_size, random_state=seed))


# ----------------------------------------------------------------------------- mixing


def domain_entropy_per_cell(z: ArrayLike, domains: ArrayLike, *, k: int = 30) -> np.ndarray:
    """Normalised Shannon entropy of the domain labels among each cell's ``k`` neighbours.

    For each cell, the entropy of the domain composition of its ``k`` nearest
    neighbours (the cell itself excluded) is divided by the entropy expected if those
    ``k`` neighbours were drawn at random, without replacement, from all other cells.
    That expectation is computed exactly from the global domain counts (hypergeometric
    marginals), so it already accounts for unbalanced domains and for the finite
    ``k``: 1 means the neighbourhood is as mixed as the global proportions allow,
    0 means every neighbour is from a single domain. Values somewhat above 1 are
    possible when neighbourhoods are more even than random draws would be.

    Parameters
    ----------
    z
        Latent coordinates ``(n_cells, n_dims)`` of the cells of all domains.
    domains
        Domain of each cell; at least two domains, each with at least two cells.
    k
        Neighbourhood size, ``1 <= k <= n_cells - 1``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_cells,)``, non-negative.
    """
    mat = _as_dense_matrix(z, "z", min_rows=2)
    domain_names, codes, domain_counts = np.unique(
        _as_labels(domains, "domains", mat.shape[0]), return_inverse=True, return_counts=True
    )
    if len(domain_names) < 2:
        raise ValueError("domains must contain at least two different domains to measure mixing")
    if domain_counts.min() < 2:
        small = domain_names[domain_counts < 2].tolist()
        raise ValueError(f"every domain needs at least two cells; too few in {small}")
    _require_k(k, mat.shape[0] - 1, "other cells")

    # Without a query, sklearn returns each point's neighbours excluding itself, even
    # when duplicates of the point exist.
    neighbours = NearestNeighbors(n_neighbors=k).fit(mat).kneighbors(return_distance=False)
    observed = _composition_entropy(_neighbour_domain_counts(codes[neighbours], len(domain_names)) / k)
    expected = _expected_random_entropy(domain_counts, k)
    return observed / expected[codes]


def domain_entropy(z: ArrayLike, domains: ArrayLike, *, k: int = 30) -> float:
    """Mean of :func:`domain_entropy_per_cell`: about 1 = well mixed, 0 = separated.

    See :func:`domain_entropy_per_cell` for the normalisation and parameters.
    """
    return float(domain_entropy_per_cell(z, domains, k=k).mean())


def _neighbour_domain_counts(neighbour_codes: np.ndarray, n_domains: int) -> np.ndarray:
    """Count, per row, how many neighbours come from each domain: ``(n_cells, n_domains)``."""
    n_cells = neighbour_codes.shape[0]
    flat = (np.arange(n_cells)[:, None] * n_domains + neighbour_codes).ravel()
    return np.bincount(flat, minlength=n_cells * n_domains).reshape(n_cells, n_domains)


def _composition_entropy(proportions: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of proportions, with 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(proportions > 0, -proportions * np.log(proportions), 0.0)
    return terms.sum(axis=-1)


def _expected_random_entropy(domain_counts: np.ndarray, k: int) -> np.ndarray:
    """Expected neighbourhood entropy of a cell of each domain under random neighbours.

    A cell of domain ``e`` draws ``k`` neighbours without replacement from the other
    ``n - 1`` cells. Entropy is a sum of per-domain terms, so its expectation only
    needs each domain's hypergeometric count distribution.
    """
    n_domains = len(domain_counts)
    total_others = int(domain_counts.sum()) - 1
    draws = np.arange(k + 1)
    term = _composition_entropy((draws / k)[:, None])  # -(c/k) log(c/k) for c = 0..k
    expected = np.zeros(n_domains)
    for own in range(n_domains):
        others = domain_counts - (np.arange(n_domains) == own)
        pmf = hypergeom.pmf(draws[None, :], total_others, others[:, None], k)
        expected[own] = float(np.sum(pmf @ term))
    return expected


def silhouette_by_domain(z: ArrayLike, domains: ArrayLike, *, max_cells: int = 5000, seed: int = 0) -> float:
    """Mean silhouette width of the domain labels (closer to 0 = better mixed).

    Near 1 means the domains form separate clusters in the latent space (failed
    integration); near 0 means cells are as close to other domains as to their own.
    Clearly negative values are unusual and mean cells sit nearer to the other
    domain than to their own. Compare ``abs(value)``, lower is better.

    Parameters
    ----------
    z
        Latent coordinates ``(n_cells, n_dims)`` of the cells of all domains.
    domains
        Domain of each cell; at least two domains.
    max_cells, seed
        Subsampling as in :func:`silhouette_by_label`.

    Returns
    -------
    float
        In ``[-1, 1]``.
    """
    return _subsampled_silhouette(z, domains, "domains", max_cells=max_cells, seed=seed)
