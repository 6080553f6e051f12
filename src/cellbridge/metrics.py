"""Evaluation metrics for cross-modal integration and translation.

Every function here is a pure function of numpy arrays (scipy sparse matrices are
accepted where a modality is usually stored sparse), is deterministic, and raises a
:class:`ValueError` naming the argument when the input cannot give a meaningful
number (mismatched shapes, too few cells, NaN or infinite values).

The metrics fall into five groups:

* **alignment with known pairs** (row ``i`` of ``za`` and ``zb`` is the same cell):
  :func:`foscttm`, :func:`foscttm_per_cell`, :func:`partner_in_knn`;
* **labels**: :func:`knn_label_transfer`, :func:`silhouette_by_label`,
  :func:`unshared_matched_fraction` (domains with partly shared cell types);
* **domain mixing**: :func:`domain_entropy`, :func:`domain_entropy_per_cell`,
  :func:`silhouette_by_domain`;
* **translation against measured truth**: :func:`per_feature_correlation`,
  :func:`per_cell_correlation`, :func:`rmse`, :func:`auroc_per_feature`,
  :func:`auroc`, :func:`pixel_mse`, :func:`ssim_per_crop`, :func:`ssim_mean`
  (morphology features are compared with :func:`per_feature_correlation`);
* **compression baselines**: :func:`pca_reconstruction_error`,
  :func:`mean_predictor_error`;

plus :func:`summarize` to reduce per-feature or per-cell values that contain NaN.

Quadratic computations (all cross-domain distances, ranks of large matrices) are
done in blocks of about ``2**22`` numbers so memory stays bounded for 10,000 cells.
Matrices of translated values and crops are not copied whole: float32 (or integer,
bool) input keeps its dtype and is converted to float64 one block of rows or columns
(or one crop) at a time, so the correlations, RMSE, per-feature AUROC, pixel MSE and
SSIM need a block beyond their input, not another matrix of every cell; only the pooled
:func:`auroc` ranks every entry at once. Time is still quadratic in cells for alignment,
neighbours and silhouettes: :mod:`cellbridge.evaluate` passes at most ``max_cells``
cells of each set (a seeded random sample above that) to every metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import hypergeom, rankdata
from sklearn.decomposition import PCA
from sklearn.metrics import f1_score, silhouette_score
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

__all__ = [
    "auroc",
    "auroc_per_feature",
    "domain_entropy",
    "domain_entropy_per_cell",
    "foscttm",
    "foscttm_per_cell",
    "knn_label_transfer",
    "mean_predictor_error",
    "partner_in_knn",
    "pca_reconstruction_error",
    "per_cell_correlation",
    "per_feature_correlation",
    "pixel_mse",
    "rmse",
    "silhouette_by_domain",
    "silhouette_by_label",
    "ssim_mean",
    "ssim_per_crop",
    "summarize",
    "unshared_matched_fraction",
]

# Numbers per temporary block in the blocked computations: 2**22 float64 = 32 MiB.
_BLOCK_ELEMENTS = 2**22

# Squared distances that differ by less than this fraction of the squared norms they
# were computed from are treated as tied: the ``|a|^2 + |b|^2 - 2 a.b`` expansion
# cannot resolve finer differences, and a collapsed latent (all cells identical)
# must come out as uninformative (FOSCTTM 0.5), not as perfect.
_TIE_RTOL = 1e-10

# Array kinds (bool, signed, unsigned, float) that blocked computations accept without
# a float64 copy of the whole matrix.
_REAL_KINDS = "biuf"

# Above this many features the p x p covariance is too large to decompose for sparse
# input asking for every component.
_MAX_FEATURES_COVARIANCE_PCA = 4096

ArrayLike = Any  # numpy array, scipy sparse matrix, or anything np.asarray accepts


# --------------------------------------------------------------------------- input checks


def _as_dense_matrix(x: ArrayLike, name: str, *, min_rows: int = 1, keep_dtype: bool = False) -> np.ndarray:
    """Return ``x`` as a finite 2-D array, or raise a ValueError naming ``name``.

    The array is float64 unless ``keep_dtype``: then real-valued input (bool, integer,
    float32) is returned as it is, without a copy.
    """
    if sp.issparse(x):
        x = x.toarray()
    arr = np.asarray(x)
    if not (keep_dtype and arr.dtype.kind in _REAL_KINDS):
        arr = arr.astype(np.float64, copy=False)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (cells x dimensions), got shape {arr.shape}")
    _require_rows(arr.shape[0], name, min_rows)
    _require_finite(arr, name)
    return arr


def _as_matrix_keep_sparse(
    x: ArrayLike, name: str, *, min_rows: int = 1, keep_dtype: bool = False
) -> np.ndarray | sp.csr_matrix:
    """Return ``x`` as a finite 2-D array or CSR matrix, keeping sparsity.

    Values are float64 unless ``keep_dtype`` (real-valued input is then not copied):
    for computations that go through :func:`_dense_rows` or :func:`_column_blocks`,
    which convert one block at a time.
    """
    if sp.issparse(x):
        if keep_dtype and x.dtype.kind in _REAL_KINDS:
            mat = x.tocsr()
        else:
            mat = sp.csr_matrix(x, dtype=np.float64)
        _require_rows(mat.shape[0], name, min_rows)
        _require_finite(mat.data, name)
        return mat
    return _as_dense_matrix(x, name, min_rows=min_rows, keep_dtype=keep_dtype)


def _require_rows(n_rows: int, name: str, min_rows: int) -> None:
    if n_rows < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (cells), got {n_rows}")


def _require_finite(values: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or infinite values; remove or impute them first")


def _require_same_shape(a: Any, b: Any, name_a: str, name_b: str, *, meaning: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; {meaning}")


def _as_labels(labels: ArrayLike, name: str, n_rows: int) -> np.ndarray:
    """Return labels as a 1-D array with one entry per row, without missing values."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per cell), got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} entries but the latent has {n_rows} cells")
    if pd.isna(arr).any():
        raise ValueError(f"{name} contains missing labels; drop the unlabelled cells first")
    return arr


def _require_k(k: int, n_available: int, what: str) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > n_available:
        raise ValueError(f"k={k} exceeds the {n_available} {what} available as neighbours")


def _lines_per_block(line_length: int) -> int:
    """How many rows (or columns) of ``line_length`` numbers fit in one block."""
    return max(1, _BLOCK_ELEMENTS // max(1, line_length))


def _dense_rows(x: np.ndarray | sp.spmatrix, rows: slice) -> np.ndarray:
    block = x[rows]
    return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64)


def _column_blocks(
    a: np.ndarray | sp.spmatrix, b: np.ndarray | sp.spmatrix
) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Yield ``(columns, a_block, b_block)`` as dense float64 blocks of bounded size."""
    n_rows, n_cols = a.shape
    # CSC makes the column slices cheap; densifying one block at a time bounds memory.
    a = a.tocsc() if sp.issparse(a) else a
    b = b.tocsc() if sp.issparse(b) else b
    width = _lines_per_block(n_rows)
    for start in range(0, n_cols, width):
        cols = slice(start, min(start + width, n_cols))
        yield cols, _dense_columns(a, cols), _dense_columns(b, cols)


def _dense_columns(x: np.ndarray | sp.spmatrix, cols: slice) -> np.ndarray:
    block = x[:, cols]
    return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64)


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


# ------------------------------------------------------------------ translation vs truth


def _validate_prediction(
    pred: ArrayLike, true: ArrayLike
) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray | sp.csr_matrix]:
    # Not copied to float64: every use below converts one block at a time.
    p = _as_matrix_keep_sparse(pred, "pred", keep_dtype=True)
    t = _as_matrix_keep_sparse(true, "true", keep_dtype=True)
    _require_same_shape(p, t, "pred", "true", meaning="they must hold the same cells and features in the same order")
    return p, t


def per_feature_correlation(
    pred: ArrayLike, true: ArrayLike, *, method: Literal["pearson", "spearman"] = "pearson"
) -> np.ndarray:
    """Correlation between predicted and true values of each feature, across cells.

    Use it for translated expression or accessibility (one value per gene or peak)
    and for morphology features of predicted versus real nuclei.

    Parameters
    ----------
    pred, true
        Arrays or scipy sparse matrices of shape ``(n_cells, n_features)``, cells in
        the same order; at least two cells.
    method
        ``"pearson"``, or ``"spearman"`` (Pearson of the ranks, ties averaged).

    Returns
    -------
    numpy.ndarray
        Shape ``(n_features,)`` in ``[-1, 1]``; NaN where either column is constant,
        since a correlation is undefined there. Reduce with :func:`summarize`.
    """
    p, t = _validate_prediction(pred, true)
    _require_rows(p.shape[0], "pred", 2)
    return _columnwise_correlation(p, t, method)


def per_cell_correlation(
    pred: ArrayLike, true: ArrayLike, *, method: Literal["pearson", "spearman"] = "pearson"
) -> np.ndarray:
    """Correlation between predicted and true profile of each cell, across features.

    Parameters
    ----------
    pred, true
        Arrays or scipy sparse matrices of shape ``(n_cells, n_features)``; at least
        two features.
    method
        ``"pearson"`` or ``"spearman"``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_cells,)``; NaN for cells whose predicted or true profile is constant.
    """
    p, t = _validate_prediction(pred, true)
    if p.shape[1] < 2:
        raise ValueError(f"a per-cell correlation needs at least 2 features, got {p.shape[1]}")
    return _columnwise_correlation(p.T, t.T, method)


def _columnwise_correlation(a: Any, b: Any, method: str) -> np.ndarray:
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    out = np.empty(a.shape[1])
    for cols, a_block, b_block in _column_blocks(a, b):
        if method == "spearman":
            a_block = rankdata(a_block, axis=0)
            b_block = rankdata(b_block, axis=0)
        out[cols] = _pearson_columns(a_block, b_block)
    return out


def _pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns; NaN where either column is constant."""
    # Exact constancy from max == min: after centring, rounding can leave a constant
    # column with tiny non-zero deviations that would yield an arbitrary +-1.
    constant = (np.ptp(a, axis=0) == 0) | (np.ptp(b, axis=0) == 0)
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    numerator = np.einsum("ij,ij->j", a, b)
    denominator = np.sqrt(np.einsum("ij,ij->j", a, a) * np.einsum("ij,ij->j", b, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.clip(numerator / denominator, -1.0, 1.0)
    r[constant] = np.nan
    return r


def rmse(pred: ArrayLike, true: ArrayLike) -> float:
    """Root mean squared error over all entries of ``pred`` and ``true``.

    Parameters
    ----------
    pred, true
        Arrays or scipy sparse matrices of the same 2-D shape.

    Returns
    -------
    float
        0 for a perfect prediction, in the units of the data.
    """
    p, t = _validate_prediction(pred, true)
    return float(np.sqrt(_mean_squared_difference(p, t)))


def _mean_squared_difference(a: Any, b: Any) -> float:
    n_rows, n_cols = a.shape
    step = _lines_per_block(n_cols)
    total = 0.0
    for start in range(0, n_rows, step):
        rows = slice(start, min(start + step, n_rows))
        total += float(np.sum((_dense_rows(a, rows) - _dense_rows(b, rows)) ** 2))
    return total / (n_rows * n_cols)


def _as_binary(x: ArrayLike, name: str) -> np.ndarray | sp.csr_matrix:
    mat = _as_matrix_keep_sparse(x, name, keep_dtype=True)
    values = mat.data if sp.issparse(mat) else mat
    if not np.all((values == 0) | (values == 1)):
        raise ValueError(f"{name} must be binary (0/1 or bool); binarise accessibility counts first")
    return mat


def auroc_per_feature(scores: ArrayLike, binary_true: ArrayLike) -> np.ndarray:
    """Area under the ROC curve of each feature's scores against its 0/1 truth.

    Meant for accessibility-like targets: how well predicted probabilities rank the
    cells in which a peak is open above those in which it is closed.

    Parameters
    ----------
    scores
        Predicted scores ``(n_cells, n_features)``; higher means "more likely 1".
    binary_true
        Observed 0/1 (or bool) values of the same shape; dense or scipy sparse.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_features,)`` in ``[0, 1]``: 1 for perfect ranking, 0.5 for
        uninformative (e.g. constant) scores; NaN for features whose truth has only
        one class. Tied scores count one half (Mann-Whitney convention).
    """
    s = _as_matrix_keep_sparse(scores, "scores", keep_dtype=True)
    t = _as_binary(binary_true, "binary_true")
    _require_same_shape(s, t, "scores", "binary_true", meaning="they must hold the same cells and features")
    out = np.empty(s.shape[1])
    for cols, s_block, t_block in _column_blocks(s, t):
        out[cols] = _auroc_columns(s_block, t_block.astype(bool))
    return out


def auroc(scores: ArrayLike, binary_true: ArrayLike) -> float:
    """AUROC of all entries pooled (every cell and feature as one ranking).

    Parameters
    ----------
    scores, binary_true
        As in :func:`auroc_per_feature`. The pooled ranking holds ``n_cells *
        n_features`` values in memory (float32 scores are ranked as they are, not
        copied); subsample very large matrices first.

    Returns
    -------
    float
        In ``[0, 1]``; 0.5 for constant scores.

    Raises
    ------
    ValueError
        If ``binary_true`` contains only zeros or only ones.
    """
    # Ranks do not depend on the precision the scores are stored in: no float64 copy.
    s = _as_dense_matrix(scores, "scores", keep_dtype=True)
    t = _as_binary(binary_true, "binary_true")
    _require_same_shape(s, t, "scores", "binary_true", meaning="they must hold the same cells and features")
    truth = (t.toarray() if sp.issparse(t) else t).astype(bool)
    value = _auroc_columns(s.reshape(-1, 1), truth.reshape(-1, 1))[0]
    if np.isnan(value):
        raise ValueError("binary_true must contain both 0s and 1s for an AUROC")
    return float(value)


def _auroc_columns(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC of each column from average ranks; NaN for one-class columns."""
    ranks = rankdata(scores, axis=0)
    n_pos = positive.sum(axis=0).astype(np.float64)
    n_neg = positive.shape[0] - n_pos
    rank_sum = np.where(positive, ranks, 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    value[(n_pos == 0) | (n_neg == 0)] = np.nan
    return value


# ------------------------------------------------------------------------------ images


def _validate_crops(pred_crops: ArrayLike, true_crops: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The crops as arrays, real-valued input not copied (the metrics convert per block or crop)."""
    pred, true = np.asarray(pred_crops), np.asarray(true_crops)
    pred = pred if pred.dtype.kind in _REAL_KINDS else pred.astype(np.float64)
    true = true if true.dtype.kind in _REAL_KINDS else true.astype(np.float64)
    for name, crops in (("pred_crops", pred), ("true_crops", true)):
        if crops.ndim not in (3, 4):
            raise ValueError(
                f"{name} must have shape (n, height, width) or (n, height, width, channels), got {crops.shape}"
            )
        _require_rows(crops.shape[0], name, 1)
        _require_finite(crops, name)
    _require_same_shape(pred, true, "pred_crops", "true_crops", meaning="crop i of each must be the same nucleus")
    return pred, true


def pixel_mse(pred_crops: ArrayLike, true_crops: ArrayLike) -> float:
    """Mean squared pixel difference over all crops.

    Parameters
    ----------
    pred_crops, true_crops
        Arrays ``(n, height, width)`` or ``(n, height, width, channels)``; crop ``i``
        of each shows the same nucleus.

    Returns
    -------
    float
        0 for identical crops, in squared intensity units.
    """
    pred, true = _validate_crops(pred_crops, true_crops)
    # One row per crop, summed in blocks of rows: no full-size temporary.
    return _mean_squared_difference(pred.reshape(pred.shape[0], -1), true.reshape(true.shape[0], -1))


def ssim_per_crop(
    pred_crops: ArrayLike, true_crops: ArrayLike, *, data_range: float | None = None
) -> np.ndarray:
    """Structural similarity (SSIM) of each predicted crop with its true crop.

    Uses :func:`skimage.metrics.structural_similarity` with its default 7 x 7 window.

    Parameters
    ----------
    pred_crops, true_crops
        Arrays ``(n, height, width)`` or ``(n, height, width, channels)`` with height
        and width at least 7.
    data_range
        Width of the intensity scale (1.0 for crops scaled to [0, 1]). By default the
        range of ``true_crops`` as a whole, one value for every pair so scores are
        comparable between crops; pass it explicitly to compare across runs.

    Returns
    -------
    numpy.ndarray
        Shape ``(n,)``, at most 1 (identical crops).
    """
    # Imported here: skimage.metrics pulls in much of scikit-image, which only the
    # image metrics need.
    from skimage.metrics import structural_similarity

    pred, true = _validate_crops(pred_crops, true_crops)
    if min(true.shape[1:3]) < 7:
        raise ValueError(f"SSIM needs crops of at least 7 x 7 pixels, got {true.shape[1]} x {true.shape[2]}")
    if data_range is None:
        # In float64 whatever the crops are stored in (float32 crops are not copied).
        data_range = float(true.max()) - float(true.min())
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive number, got {data_range} (are the true crops constant?)")
    channel_axis = -1 if true.ndim == 4 else None
    return np.array(
        [
            # One crop at a time in float64: skimage would compute float32 crops in float32.
            structural_similarity(
                p.astype(np.float64), t.astype(np.float64), data_range=data_range, channel_axis=channel_axis
            )
            for p, t in zip(pred, true, strict=True)
        ]
    )


def ssim_mean(pred_crops: ArrayLike, true_crops: ArrayLike, *, data_range: float | None = None) -> float:
    """Mean of :func:`ssim_per_crop` over all crop pairs (1 = identical)."""
    return float(ssim_per_crop(pred_crops, true_crops, data_range=data_range).mean())


# ----------------------------------------------------------------- compression baselines


def _validate_train_test(train: ArrayLike, test: ArrayLike) -> tuple[Any, Any]:
    tr = _as_matrix_keep_sparse(train, "train")
    te = _as_matrix_keep_sparse(test, "test")
    if tr.shape[1] != te.shape[1]:
        raise ValueError(
            f"train has {tr.shape[1]} features but test has {te.shape[1]}; they must be the same features"
        )
    return tr, te


def pca_reconstruction_error(train: ArrayLike, test: ArrayLike, *, n_components: int) -> float:
    """Held-out mean squared error of PCA reconstruction with ``n_components`` components.

    PCA (with centring) is fitted on ``train``; each ``test`` cell is projected onto
    the components and mapped back. Comparing this with an autoencoder's held-out MSE
    on the same matrix and the same latent size shows whether the non-linear model
    compresses better than a linear one; :func:`mean_predictor_error` is the trivial
    baseline with no components at all.

    Parameters
    ----------
    train, test
        ``(n_cells, n_features)`` arrays or scipy sparse matrices with the same
        features (e.g. the prepared ``X``), from disjoint cells.
    n_components
        Latent size, ``1 <= n_components <= min(n_train_cells, n_features)``; for
        sparse input with more than 4096 features strictly below that minimum.

    Returns
    -------
    float
        Mean over all test entries of the squared reconstruction error; about 0 once
        ``n_components`` reaches the rank of the (centred) data.
    """
    tr, te = _validate_train_test(train, test)
    n_train, n_features = tr.shape
    limit = min(n_train, n_features)
    is_integer = isinstance(n_components, (int, np.integer)) and not isinstance(n_components, bool)
    if not is_integer or not 1 <= n_components <= limit:
        raise ValueError(f"n_components must be an integer in [1, {limit}] for this train set, got {n_components!r}")
    pca = _fit_pca(tr, n_components)

    step = _lines_per_block(n_features)
    total = 0.0
    for start in range(0, te.shape[0], step):
        rows = slice(start, min(start + step, te.shape[0]))
        block = _dense_rows(te, rows)
        total += float(np.sum((block - pca.inverse_transform(pca.transform(block))) ** 2))
    return total / (te.shape[0] * n_features)


def _fit_pca(train: Any, n_components: int) -> PCA:
    """Fit a deterministic PCA on dense or sparse ``train``."""
    if not sp.issparse(train):
        # sklearn's own choice: an exact solver for small inputs or many components,
        # a seeded randomized SVD (accurate for a few leading components) otherwise.
        return PCA(n_components=n_components, svd_solver="auto", random_state=0).fit(train)
    if n_components < min(train.shape):
        # ARPACK centres implicitly, so the sparse matrix is never densified.
        solver = "arpack"
    elif train.shape[1] <= _MAX_FEATURES_COVARIANCE_PCA:
        # ARPACK cannot return all components; the p x p covariance is small enough.
        solver = "covariance_eigh"
    else:
        raise ValueError(
            f"for sparse input with {train.shape[1]} features n_components must be below "
            f"{min(train.shape)} (ARPACK); got {n_components}"
        )
    return PCA(n_components=n_components, svd_solver=solver, random_state=0).fit(train)


def mean_predictor_error(train: ArrayLike, test: ArrayLike) -> float:
    """Held-out mean squared error of predicting every test cell as the training mean.

    The trivial baseline for :func:`pca_reconstruction_error` and autoencoder errors:
    a model that does not beat it has learnt nothing about individual cells.

    Parameters
    ----------
    train, test
        ``(n_cells, n_features)`` arrays or scipy sparse matrices with the same features.

    Returns
    -------
    float
        Mean over all test entries of the squared difference to the training column means.
    """
    tr, te = _validate_train_test(train, test)
    column_mean = np.asarray(tr.mean(axis=0), dtype=np.float64).reshape(1, -1)
    step = _lines_per_block(te.shape[1])
    total = 0.0
    for start in range(0, te.shape[0], step):
        rows = slice(start, min(start + step, te.shape[0]))
        total += float(np.sum((_dense_rows(te, rows) - column_mean) ** 2))
    return total / (te.shape[0] * te.shape[1])


# ----------------------------------------------------------------------------- summary


def summarize(values: ArrayLike) -> dict[str, float | int]:
    """Mean and median of per-feature or per-cell values, ignoring NaN.

    Parameters
    ----------
    values
        Numbers of any shape, e.g. the output of :func:`per_feature_correlation`,
        where NaN marks undefined entries.

    Returns
    -------
    dict
        ``mean`` and ``median`` of the non-NaN values (NaN if there are none) and
        ``n_valid``, how many values were not NaN.
    """
    arr = np.asarray(values, dtype=np.float64).ravel()
    valid = arr[~np.isnan(arr)]
    if valid.size == 0:
        return {"mean": float("nan"), "median": float("nan"), "n_valid": 0}
    return {"mean": float(valid.mean()), "median": float(np.median(valid)), "n_valid": int(valid.size)}
