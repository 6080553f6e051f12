"""Geometry-aware correspondence between unpaired domains (a Gromov-Wasserstein prior).

Matching two latent *distributions* (OT, MMD, a discriminator) has many equally good
solutions on unpaired data: rotations, reflections, swapped clusters. What pins the
answer down is each domain's own geometry: cells that are neighbours in one domain
should be neighbours of each other's partners in the other. Gromov-Wasserstein (GW)
compares exactly that, the within-domain distance structures, without a shared
feature space (SCOT, Demetci et al. 2022; Pamona, Cao et al. 2022). This module
computes a GW coupling between every pair of domains *before* training; the
autoencoders are then pulled towards it (:func:`cellbridge.align.anchor_loss` on
pairs drawn from the coupling, see :class:`cellbridge.training.Trainer`).

Steps, per domain:

1. **representation** (:func:`representation`): the domain's ``X`` (morphology
   features for images), reduced to at most 50 principal components (truncated SVD
   for sparse ATAC, first component dropped: it follows sequencing depth). Dense
   features are seen in two **views** (:data:`SCALINGS`): standardised (every feature
   weighs the same) and as given (the user's own scale, e.g. PCA coordinates whose
   trailing components are small because they are mostly noise). Each view gets the
   whole procedure below; the view whose chosen correspondence distorts least is kept,
   and in it the candidates are judged again on the landmarks of every view
   (:func:`pooled_distortion`);
2. **landmarks** (:func:`landmarks`): k-means centres (``n_landmarks``, at most one per
   four cells) on at most ``max_cells`` cells (a seeded sample beyond that), every cell
   assigned to its nearest centre; each
   landmark weighs the fraction of cells it holds and is represented by its medoid;
3. **geodesic distances** between landmarks (:func:`landmark_geodesics`): rows
   centred and scaled to unit norm (correlation geometry, as SCOT), a kNN
   connectivity graph over the sampled cells, shortest paths from every medoid,
   divided by the maximum.

Steps 2-3 are repeated for ``n_restarts`` independent landmark sets (k-means seeds).
Then between the first domain (the hub) and each other one, an entropic GW coupling
between the landmark distance matrices (POT), for every restart, neighbourhood size
``k`` and starting coupling (:func:`gw_candidates`), and **unsupervised selection** (:func:`joint_selection`).
A candidate's own GW value cannot choose: values under different ``k`` and landmarks are
not comparable. Each candidate's **distortion** is therefore measured on one common
yardstick (:func:`distortion_scores`: its coupling carried onto every restart's
landmarks through the cells they share, GW loss under every ``k``, mean log), and the
least distorting candidate is kept: the correspondence that best preserves both
domains' geometry at every scale tried, which is what GW asks for, judged fairly. With
three or more domains the candidates of all hub pairs are chosen *together*: one per
pair from the same restart (they share the hub's landmarks), each combination implying
a coupling between every two non-hub domains (:func:`composed_coupling`), whose
distortion counts too. A hub that cannot tell a trajectory from its mirror image then
still has to orient both of its partners alike.

Measured with ``benchmarks/prior_selection.py`` (every candidate scored against the
truth) and the trained models of ``benchmarks/real_data.py`` (``wasserstein``, no
labels), December 2026, against the previous rule, the *consensus* (the candidate that
agrees most with the others on where it sends the same cells; :func:`select_candidate`,
still reported as ``disagreement``):

- sci-CAR, prior FOSCTTM 0.440 +- 0.006 (worst 0.448) against 0.489 +- 0.060 (worst 0.567):
  the consensus followed the majority of restarts, which on sci-CAR land mirrored;
- PBMC, pair agreement 0.530 +- 0.013 against 0.521 +- 0.004;
- scNMT-seq (three domains), pair agreement 0.556 +- 0.096 (worst 0.396) jointly, against
  0.475 +- 0.119 pair by pair and 0.556 +- 0.085 (worst 0.429) for the consensus. The
  mirror image of RNA-accessibility distorts *less* than the truth; the joint rule gives
  back what pair-by-pair distortion loses there, not more: on reduced features, a
  trajectory's orientation is often not in the geometry at all.

Which scaling (:data:`SCALINGS`; ``benchmarks/prior_selection.py``, December 2026): standardising
a domain given as 30 principal components (scNMT-seq) blows its trailing, noisy components
up to the size of the leading ones, and the geometry loses the trajectory: pair agreement
0.556 +- 0.096 (worst 0.396) standardised against 0.721 +- 0.005 as given. On PBMC (RNA as 50
PCs, ATAC as scaled LSI) the opposite: 0.530 +- 0.013 standardised, 0.327 +- 0.179 as given.
Within each view the joint choice is made on that view's own yardstick; between views the
lower joint distortion kept the right view on every seed of both data sets (the domains
look more alike in the view that keeps their shared structure). It is a heuristic: on
planted clusters with many quiet noise features it keeps "as given" on 5 of 6 seeds
(agreement 0.63 against 0.39 standardised alone), but with one loud pure-noise feature per
domain it fell for "as given" twice in 6 (0.50 against 0.61; 0.53 with the pooled candidate
choice below). Sparse inputs (counts,
TF-IDF) have one view, so sci-CAR is unchanged.

Which candidate within the kept view (December 2026, late): judged on the landmarks of *every*
view (:func:`pooled_distortion`), not only its own. The views hold the same cells; a
correspondence right for the cells preserves their geometry however the features are
scaled, while one fitted to an artefact of one scaling distorts the other. On planted
types of SNARE-seq's shape (1,047 cells, two nonlinear maps of a 6-d state, 10 and 19
features, 12 seeds), the standardised view's own yardstick preferred a candidate that
matched the types wrong (seed 2: type agreement 0.33) where both views' landmarks prefer a
right one of the same view (0.98): prior type agreement 0.707 -> 0.764 over 12 seeds,
trained FOSCTTM 0.271 -> 0.240 (that seed 0.531 -> 0.124; seed 3 0.144 -> 0.166). PBMC and
scNMT-seq keep the same candidates (scNMT-seq but one of 10 pairs, a near twin, whose trained
stage transfer went 0.798 -> 0.772); the simulated demo's seed 1 keeps another, a little
worse (FOSCTTM +0.005 to +0.016 for the three aligners). Choosing the *view* on the pooled yardstick too
was tried first and left: it moved PBMC to "as given" candidates (trained shared-type
transfer 0.918 / 0.909 / 0.904 / 0.848 -> 0.841 / 0.958 / 0.812 / 0.858 on seeds 0-3) and the
simulated demo's unsupervised seed 0 from FOSCTTM 0.155 to 0.267.

Where GW starts (:data:`GW_STARTS`, both by default: :data:`DEFAULT_STARTS`): from the
product coupling, and from the ``distance profile`` start (:func:`distance_profile_start`),
one candidate each per restart x ``k``; the least distorting is kept as for any candidate.
From the product coupling alone GW often settles with cell types swapped. With the second
start (December 2026): planted cell types (``benchmarks/gw_starts.py``, 12 seeds) 0.656
against 0.480 type agreement; the simulated demo, unsupervised, trained FOSCTTM 0.141-0.161
against 0.393-0.396 for the three aligners (3 seeds, label transfer 0.87-0.98 against 0.33-0.36);
planted SNARE-seq-shaped types (1,047 cells, 12 seeds, prior only) 0.663 against 0.630
(better on 2 seeds, slightly worse on one), trained a wash (9 seeds: FOSCTTM 0.240 against
0.221 on the mean, 0.101 against 0.135 on the median); sci-CAR and PBMC keep the same candidates;
scNMT-seq pair agreement 0.721 +- 0.008 against 0.716 +- 0.004, trained stage transfer
0.803 +- 0.024 against 0.801 +- 0.020 (5 seeds). It was off by default while the prior saw
standardised features only: there it found the mirror image of scNMT-seq's trajectory
(trained stage transfer of one seed 0.67 -> 0.32); in the view as given, which scNMT-seq
keeps since, it does not.

Multi-scale candidate (:data:`MULTISCALE`): the yardstick judges a candidate by its
distortion under every ``k`` at once, while each candidate answers to one ``k``. One more
candidate per restart solves GW on each domain's geodesics averaged over ``k_grid`` (``k``
recorded as :data:`MULTISCALE_K`), i.e. asks GW for what the selection measures. December
2026, 5 seeds: scNMT-seq prior pair agreement 0.734 +- 0.004 against 0.716 +- 0.004 (kept on
every seed and pair), trained stage transfer 0.819 +- 0.016 (worst 0.793) against 0.801 +-
0.020 (worst 0.775); PBMC never keeps it (unchanged); sci-CAR keeps it on one seed (trained
FOSCTTM 0.420 +- 0.005 against 0.423 +- 0.008). But where the geometry is shared and made of
types (``benchmarks/gw_starts.py``, 12 planted seeds) it was kept on 8 and never better, worse
on 3 (type agreement 0.453 against 0.480), and on the simulated demo it was kept on every
seed and lost (FOSCTTM 0.470 +- 0.010 against 0.396 +- 0.092, label transfer below no
alignment): a better optimiser of the criterion, right on the two trajectories, wrong on
types. Off by default (``multiscale``; measured from the product start alone, the default then).

Refinement of the kept correspondence (:func:`refined_prior`, ``refine``, on by default since
December 2026): the candidates are searched on coarse landmarks with enough entropy for the solver to
explore, and the kept coupling says nothing about which cell of a landmark goes where. With
``refine`` it is carried onto finer landmarks (every cell up to :data:`REFINE_LANDMARKS` per
domain) and GW continues from it at a lower entropy (:data:`REFINE_EPSILON`) under the kept
``k``: a descent within the basin the selection chose, not a new search. December 2026, 5 seeds
trained (``wasserstein``) unless said: PBMC pair agreement 0.536 -> 0.598 and 0.510 -> 0.566
(seeds 1, 3), shared-type transfer 0.899 +- 0.028 (worst 0.850) -> 0.915 +- 0.030 (worst 0.880);
sci-CAR FOSCTTM 0.423 +- 0.009 -> 0.413 +- 0.005, better on every seed; scNMT-seq stage
transfer 0.797 +- 0.028 -> 0.803 +- 0.017 (better on 3 seeds, worse on 2); planted
SNARE-seq-shaped types (12 seeds, FOSCTTM) 0.240 -> 0.241, a wash; the simulated demo,
unsupervised, worse for every aligner (FOSCTTM 0.147-0.162 -> 0.169-0.173, 3 seeds). It costs one GW solve on
up to 2,000 x 2,000 points per domain pair (15-20 s on sci-CAR and PBMC).

Rejected on the way (same benchmarks): cycle consistency over three domains (reversing
one domain against the other two is itself cycle-consistent), more restarts (8: sci-CAR
consensus worse), rank sums and tolerance bands between the two criteria, a consensus
weighted towards the least distorting third (trained sci-CAR 0.456 +- 0.069), an equal
mixture of the best candidates (PBMC trained 0.886 against 0.926), an unbalanced GW
coupling for domains with unshared cell types (mirror descent with unbalanced Sinkhorn
steps, marginal penalty 0.05-1: on PBMC it sheds mass evenly rather than from the
one-domain-only types, and the shared types' mass lands right less often, 0.73-0.88
against 0.75-0.88 per neighbourhood size), and one landmark per cell on small data
(177 sci-CAR cells, 3 seeds: 0.536 / 0.478 / 0.442 FOSCTTM against 0.456 / 0.428 / 0.537).
December 2026, late: joining a kNN graph's pieces at their closest cells (gaps counted in
typical kNN steps, Isomap's repair) instead of one shared maximum distance between pieces
(real data are one piece: unchanged; planted SNARE-seq-shaped types 0.678 against 0.663,
trained 0.192 against 0.240 FOSCTTM over 9 seeds; but planted types at 200 cells 0.572
against 0.656, because gaps between pieces are distances in each domain's own features and
disagree across domains, and the demo's unsupervised seed 2 FOSCTTM 0.155 -> 0.250, because
with counted gaps the view with more pieces looks less distorted and is kept), and
distortion relative to the independent coupling's, to compare views (0.659 against 0.663);
README, "Tried and not adopted".

Cost: k-means and the assignment are O(n L); the kNN graph and the shortest paths are
computed on at most ``max_cells`` cells; GW is O(L^3) per iteration, independent of n.
Memory beyond the sample is O(n) (one landmark index per cell).
"""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

__all__ = [
    "CorrespondencePrior",
    "DomainGeometry",
    "distortion_scores",
    "correspondence_priors",
    "domain_geometry",
    "distance_profile_start",
    "distance_quantiles",
    "distinct_views",
    "gw_candidates",
    "landmark_geodesics",
    "landmark_label_cost",
    "landmarks",
    "representation",
    "representations",
    "candidate_couplings",
    "composed_coupling",
    "consensus_scores",
    "joint_selection",
    "pooled_choice",
    "pooled_distortion",
    "restart_geometries",
    "select_candidate",
]

#: components kept by :func:`representation`
N_COMPONENTS = 50
#: default landmark count and the largest sample the kNN graph is built on
N_LANDMARKS = 300
MAX_CELLS = 20_000
#: neighbourhood sizes tried (capped at a fifth of the smaller sample, as SCOT's default)
K_GRID = (10, 20, 30, 50)
#: entropic regularisation of GW relative to distances scaled to [0, 1]
EPSILON = 5e-3
#: outer GW iterations: at eps 5e-3 the GW value is settled to 5 digits by 50 (measured on
#: scNMT-seq landmarks: 0.025074 after 50, 0.025076 after 200), at a quarter of the time
GW_MAX_ITER = 50
#: independent landmark sets per domain (see :func:`correspondence_priors`)
N_RESTARTS = 3
#: also a candidate on every domain's geodesics averaged over ``k_grid`` (recorded as ``k = 0``):
#: off by default, see the module notes
MULTISCALE = False
#: the ``k`` recorded for that multi-scale candidate
MULTISCALE_K = 0
#: cells of the first domain on which candidate correspondences are compared
CONSENSUS_CELLS = 5000


# ----------------------------------------------------------------------------- per domain
#: how dense features are scaled before their geometry (:func:`representation`)
SCALINGS = ("standardised", "as given")
#: every scaling is tried; the prior keeps the one whose domains look most alike (see the module docstring)
DEFAULT_SCALINGS = SCALINGS


def representation(
    x: Any, *, modality: str = "rna", n_components: int = N_COMPONENTS, seed: int = 0, scaling: str = "standardised"
) -> np.ndarray:
    """A dense, low-dimensional view of a domain's features for its geometry.

    Dense inputs are centred per feature (constant features dropped), with ``scaling``
    ``"standardised"`` also scaled to unit SD (every feature weighs the same) or, with
    ``"as given"``, left at their own scale (PCA or LSI coordinates keep their leading
    components leading); when wider than ``n_components`` they are then projected on
    their leading principal components. Sparse inputs (ATAC TF-IDF, counts) go through
    truncated SVD whatever the scaling; for ATAC the first component is dropped, as it
    tracks sequencing depth rather than cell state.
    """
    from sklearn.decomposition import PCA, TruncatedSVD

    from ._io import OnDiskCSR, as_rows

    n, p = x.shape
    x = as_rows(x)
    if isinstance(x, OnDiskCSR):
        return _on_disk_representation(x, modality=modality, n_components=n_components, seed=seed)
    if sp.issparse(x):
        drop = 1 if modality == "atac" else 0
        k = max(1, min(n_components + drop, p - 1, n - 1))
        out = TruncatedSVD(k, random_state=seed).fit_transform(x.astype(np.float64))
        return out[:, drop:] if out.shape[1] > drop else out
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; expected one of {list(SCALINGS)}")
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(0)
    x = x[:, sd > 0] - x[:, sd > 0].mean(0)
    if scaling == "standardised":
        x = x / sd[sd > 0]
    if x.shape[1] > n_components and n > n_components:
        x = PCA(n_components, random_state=seed, svd_solver="randomized").fit_transform(x)
    return x


def representations(
    adata: Any, *, modality: str, scalings: Sequence[str] = DEFAULT_SCALINGS, seed: int = 0
) -> dict[str, np.ndarray]:
    """:func:`representation` of a prepared domain under each of ``scalings``.

    ``"as given"`` means the values as the user gave them: a ``features`` domain that
    preparation standardised is scaled back by its ``var["std"]`` (centring is
    :func:`representation`'s). A sparse ``X`` has one representation whatever the
    scaling: the same array is returned under every name.
    """
    from ._io import OnDiskCSR, as_rows

    x = as_rows(adata.X)
    if sp.issparse(x) or isinstance(x, OnDiskCSR):
        rep = representation(x, modality=modality, seed=seed)
        return {scaling: rep for scaling in scalings}
    params = adata.uns.get("cellbridge", {}).get("params", {})
    standardised_input = modality == "features" and bool(params.get("standardize")) and "std" in adata.var
    out = {}
    for scaling in scalings:
        values = x
        if scaling == "as given" and standardised_input:
            values = np.asarray(x, dtype=np.float64) * adata.var["std"].to_numpy(dtype=np.float64)
        out[scaling] = representation(values, modality=modality, seed=seed, scaling=scaling)
    return out


#: rows a truncated SVD of an on-disk matrix is fitted on (all rows are then projected block by block)
ON_DISK_FIT_ROWS = 50_000


def _on_disk_representation(x: Any, *, modality: str, n_components: int, seed: int) -> np.ndarray:
    """:func:`representation` of a matrix left in its file, in O(rows x components) memory.

    The truncated SVD is fitted on a seeded sample of at most :data:`ON_DISK_FIT_ROWS`
    rows, then every row is projected on it block by block.
    """
    from sklearn.decomposition import TruncatedSVD

    n, p = x.shape
    drop = 1 if modality == "atac" else 0
    k = max(1, min(n_components + drop, p - 1, n - 1))
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, ON_DISK_FIT_ROWS, replace=False)) if n > ON_DISK_FIT_ROWS else np.arange(n)
    svd = TruncatedSVD(k, random_state=seed).fit(x[fit_rows].astype(np.float64))
    out = np.concatenate([svd.transform(block.astype(np.float64)) for block in x.blocks()])
    return out[:, drop:] if out.shape[1] > drop else out


def _correlation_rows(x: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm: Euclidean distance becomes a monotone
    function of the correlation distance, so fast Euclidean kNN gives SCOT's graph."""
    x = x - x.mean(1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


@dataclass
class DomainGeometry:
    """Landmarks of one domain and their geodesic distances.

    Attributes
    ----------
    cells
        Indices (into the domain) of the cells the geometry covers.
    assignment
        Landmark of each of ``cells``.
    weights
        Fraction of ``cells`` held by each landmark (sums to 1).
    distances
        ``{k: (L, L)`` geodesic distances between landmarks in ``[0, 1]``} per
        neighbourhood size.
    centres
        Landmark centres in the representation (used to compare candidates).
    """

    cells: np.ndarray
    assignment: np.ndarray
    weights: np.ndarray
    distances: dict[int, np.ndarray]
    centres: np.ndarray


def landmarks(x: np.ndarray, n_landmarks: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means landmarks of ``x``: ``(centres (L, d), assignment (n,), medoids (L,))``.

    Empty clusters are dropped; the medoid of a landmark is its cell nearest to the centre.
    With at least as many landmarks as cells, every cell is a landmark (no k-means).
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n = x.shape[0]
    if n_landmarks >= n:  # as many landmarks as cells: every cell is its own
        return x.copy(), np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64)
    km_cls = MiniBatchKMeans if n > 20_000 else KMeans
    kwargs = {"batch_size": 4096} if km_cls is MiniBatchKMeans else {}
    km = km_cls(n_landmarks, n_init=1, random_state=seed, **kwargs).fit(x)
    assignment = km.labels_.astype(np.int64)
    used = np.unique(assignment)
    remap = np.full(n_landmarks, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    assignment = remap[assignment]
    centres = km.cluster_centers_[used]
    dist = ((x - centres[assignment]) ** 2).sum(1)
    order = np.lexsort((dist, assignment))  # by landmark, then by distance to the centre
    first = np.r_[0, np.flatnonzero(np.diff(assignment[order])) + 1]
    medoids = order[first]
    return centres, assignment, medoids


def landmark_geodesics(x: np.ndarray, medoids: np.ndarray, k: int) -> np.ndarray:
    """Shortest-path distances between ``medoids`` on the kNN connectivity graph of ``x``.

    Every edge weighs one (SCOT's connectivity graph, each cell among its own
    neighbours): the distance counts steps between neighbourhoods, which is robust to
    the scale differences between domains. Unreachable pairs get the largest finite
    distance; the result is symmetric and divided by its maximum.
    """
    from scipy.sparse.csgraph import dijkstra
    from sklearn.neighbors import kneighbors_graph

    n = x.shape[0]
    k = int(min(max(k, 2), n))
    graph = kneighbors_graph(_correlation_rows(x), k, mode="connectivity", include_self=True)
    out = np.empty((len(medoids), len(medoids)))
    for start in range(0, len(medoids), 64):  # 64 sources at a time: memory O(64 n), not O(L n)
        rows = dijkstra(graph, directed=False, indices=medoids[start : start + 64], unweighted=True)
        out[start : start + 64] = rows[:, medoids]
    finite = np.isfinite(out)
    out[~finite] = out[finite].max() if finite.any() else 1.0
    out = 0.5 * (out + out.T)
    np.fill_diagonal(out, 0.0)
    top = out.max()
    return out / top if top > 0 else out


#: cell-to-centre distances computed at once when assigning cells beyond the graph sample (128 MB)
ASSIGN_BLOCK = 2**24


def domain_geometry(
    x: np.ndarray,
    cells: np.ndarray,
    *,
    k_grid: Sequence[int] = K_GRID,
    n_landmarks: int = N_LANDMARKS,
    max_cells: int = MAX_CELLS,
    cells_per_landmark: int = 4,
    seed: int = 0,
) -> DomainGeometry:
    """Landmarks and landmark geodesics of the representation ``x`` of ``cells``.

    Beyond ``max_cells`` cells, landmarks and graph come from a seeded sample and the
    remaining cells are assigned to the nearest landmark centre (in blocks: O(n) memory).
    """
    cells = np.asarray(cells, dtype=np.int64)
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng([seed, 17])
    sample = np.sort(rng.choice(len(x), max_cells, replace=False)) if len(x) > max_cells else np.arange(len(x))
    xs = _correlation_rows(x[sample])
    # at least four cells a landmark: finer landmarks only make GW slower (O(L^3)) without
    # adding structure the kNN graph can resolve
    n_landmarks = max(2, min(n_landmarks, len(sample) // cells_per_landmark))
    centres, assign_s, medoids = landmarks(xs, n_landmarks, seed=seed)
    if len(sample) == len(x):
        assignment = assign_s
    else:
        xc = _correlation_rows(x)
        assignment = np.empty(len(x), dtype=np.int64)
        c2 = (centres**2).sum(1)
        rows = max(1024, ASSIGN_BLOCK // len(centres))  # blocks of at most ASSIGN_BLOCK distances
        for start in range(0, len(x), rows):
            block = xc[start : start + rows]
            assignment[start : start + rows] = np.argmin(c2[None] - 2 * block @ centres.T, axis=1)
    weights = np.bincount(assignment, minlength=len(centres)).astype(np.float64)
    weights = np.maximum(weights, 1e-12)  # a centre may lose all cells to the full assignment
    weights /= weights.sum()
    small = min(len(sample), len(x))
    ks = sorted({int(min(k, max(2, small // 5))) for k in k_grid})
    distances = {k: landmark_geodesics(x[sample], medoids, k) for k in ks}
    return DomainGeometry(cells=cells, assignment=assignment, weights=weights, distances=distances, centres=centres)


# ----------------------------------------------------------------------------- between domains
def landmark_label_cost(
    ga: DomainGeometry, gb: DomainGeometry, codes_a: np.ndarray, codes_b: np.ndarray
) -> np.ndarray:
    """Probability that a random cell of landmark ``l`` (A) and one of ``m`` (B) differ in label.

    Only cells with a known label (code >= 0) count; a landmark without any costs 0.5
    against everything (no evidence either way).
    """
    n_labels = int(max(np.max(codes_a, initial=-1), np.max(codes_b, initial=-1))) + 1

    def mixture(g: DomainGeometry, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes = np.asarray(codes)[g.cells]
        known = codes >= 0
        hist = np.zeros((len(g.weights), max(n_labels, 1)))
        np.add.at(hist, (g.assignment[known], codes[known]), 1.0)
        total = hist.sum(1, keepdims=True)
        return hist / np.where(total > 0, total, 1.0), total.ravel() > 0

    ha, ka = mixture(ga, codes_a)
    hb, kb = mixture(gb, codes_b)
    cost = 1.0 - ha @ hb.T
    cost[~ka] = 0.5
    cost[:, ~kb] = 0.5
    return cost


@dataclass
class CorrespondencePrior:
    """A soft correspondence between the cells of two domains, at landmark resolution.

    ``coupling[l, m]`` is the mass GW moves from landmark ``l`` of ``domain_a`` to
    landmark ``m`` of ``domain_b`` (sums to 1). Pairs drawn from it
    (:meth:`sample_pairs`) feed the correspondence loss during training.
    """

    domain_a: str
    domain_b: str
    geometry_a: DomainGeometry
    geometry_b: DomainGeometry
    coupling: np.ndarray
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def restrict(self, allowed_a: np.ndarray, allowed_b: np.ndarray) -> CorrespondencePrior:
        """The same prior, linking only ``allowed_a`` to ``allowed_b`` cells (e.g. training cells).

        Landmarks of B without an allowed cell cannot be drawn: their mass is spread
        over the rest of each row.
        """
        out = CorrespondencePrior(self.domain_a, self.domain_b, self.geometry_a, self.geometry_b, self.coupling, self.candidates)
        pools_b = _pools(self.geometry_b, allowed_b)
        ok_b = np.array([len(p) > 0 for p in pools_b])
        if not ok_b.any():
            raise ValueError(f"no allowed cells of {self.domain_b!r} in the correspondence prior")
        rows = self.coupling * ok_b[None]
        total = rows.sum(1, keepdims=True)
        # a landmark of A whose partners are all disallowed falls back to B's landmark weights
        rows = np.where(total > 0, rows / np.where(total > 0, total, 1.0), (self.geometry_b.weights * ok_b) / (self.geometry_b.weights * ok_b).sum())
        out._cumulative = np.cumsum(rows, axis=1)
        out._pools_b = pools_b
        landmark_of = np.full(int(self.geometry_a.cells.max()) + 1 if len(self.geometry_a.cells) else 0, -1, dtype=np.int64)
        landmark_of[self.geometry_a.cells] = self.geometry_a.assignment
        out._landmark_a = landmark_of
        out._allowed_b = np.asarray(allowed_b)
        return out

    def partners(self, idx_a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One partner in B for each cell ``idx_a`` of A, drawn from the coupling.

        The partner's landmark is drawn from the row of the cell's landmark, then a
        cell of that landmark at random; cells of A outside the prior get a random
        allowed cell of B. Drawing A's cells uniformly and their partners this way
        samples pairs from the coupling itself.
        """
        if not hasattr(self, "_cumulative"):
            raise RuntimeError("call restrict() before drawing partners")
        idx_a = np.asarray(idx_a, dtype=np.int64)
        lut = self._landmark_a
        land = np.where(idx_a < len(lut), lut[np.minimum(idx_a, max(len(lut) - 1, 0))], -1) if len(lut) else np.full(len(idx_a), -1)
        out = self._allowed_b[rng.integers(len(self._allowed_b), size=len(idx_a))]
        known = land >= 0
        if known.any():
            cum = self._cumulative[land[known]]
            u = np.maximum(rng.random(int(known.sum())), 1e-12)[:, None] * cum[:, -1:]
            target = np.minimum((cum < u).sum(1), cum.shape[1] - 1)
            out[known] = [self._pools_b[m][rng.integers(len(self._pools_b[m]))] for m in target]
        return out

    def latent_pull(self, z_a: np.ndarray, z_b: np.ndarray) -> float:
        """How closely a latent space keeps the prior's pairs together: the mean squared latent
        distance of a pair drawn from the coupling over that of two cells drawn independently
        (from the same marginals). 0: partners coincide; about 1: the latent ignores the prior.

        ``z_a``, ``z_b`` hold the latents of every cell of each domain (rows as the cell indices
        of the geometries). Exact from each landmark's latent mean and spread, so O(n) in the
        cells: ``E|z_i - z_j|^2 = |mean_l - mean_m|^2 + spread_l + spread_m`` for cells i of
        landmark l and j of landmark m.
        """
        def moments(geometry: DomainGeometry, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            z = np.asarray(z, dtype=np.float64)[geometry.cells]
            counts = np.maximum(np.bincount(geometry.assignment, minlength=len(geometry.weights)), 1)[:, None]
            means = np.zeros((len(geometry.weights), z.shape[1]))
            np.add.at(means, geometry.assignment, z)
            means /= counts
            spread = np.bincount(geometry.assignment, ((z - means[geometry.assignment]) ** 2).sum(1),
                                 minlength=len(geometry.weights)) / counts[:, 0]
            return means, spread

        (mean_a, spread_a), (mean_b, spread_b) = moments(self.geometry_a, z_a), moments(self.geometry_b, z_b)
        plan = self.coupling / self.coupling.sum()
        p, q = plan.sum(1), plan.sum(0)
        between = (mean_a**2).sum(1)[:, None] + (mean_b**2).sum(1)[None] - 2 * mean_a @ mean_b.T
        within = p @ spread_a + q @ spread_b
        paired = float((plan * between).sum()) + within
        independent = float(p @ between @ q) + within
        return paired / independent if independent > 0 else 0.0

    def cell_coupling(self) -> np.ndarray:
        """The coupling spread over cells, ``(n_a, n_b)`` (for small data and tests)."""
        ga, gb = self.geometry_a, self.geometry_b
        na = np.bincount(ga.assignment, minlength=len(ga.weights))
        nb = np.bincount(gb.assignment, minlength=len(gb.weights))
        block = self.coupling / np.maximum(na, 1)[:, None] / np.maximum(nb, 1)[None]
        return block[ga.assignment][:, gb.assignment]


def _pools(geometry: DomainGeometry, allowed: np.ndarray) -> list[np.ndarray]:
    keep = np.isin(geometry.cells, allowed)
    order = np.argsort(geometry.assignment[keep], kind="stable")
    cells = geometry.cells[keep][order]
    bounds = np.searchsorted(geometry.assignment[keep][order], np.arange(len(geometry.weights) + 1))
    return [cells[bounds[i] : bounds[i + 1]] for i in range(len(geometry.weights))]


def sinkhorn_plan(p: np.ndarray, q: np.ndarray, cost: np.ndarray, epsilon: float, *,
                  max_iter: int = 1000, tol: float = 1e-9) -> np.ndarray:
    """Entropic optimal transport plan between ``p`` and ``q`` by Sinkhorn's matrix scaling.

    POT's ``sinkhorn_knopp`` step for step (its updates, its marginal error every 10th
    iteration, its return to the previous scaling on a numerical failure), so the plans are
    the same to the last bit; it tests the scalings' finiteness once per iteration instead of
    five times through POT's backend, which on the prior's small problems (tens to hundreds
    of landmarks, about 1,000 iterations per call) was a third of the prior's time.
    """
    kernel = np.exp(cost / -epsilon)
    scaled = (1 / p).reshape(-1, 1) * kernel
    u, v = np.ones(len(p)) / len(p), np.ones(len(q)) / len(q)
    for it in range(max_iter):
        u_prev, v_prev = u, v
        v = q / np.dot(kernel.T, u)  # a zero column sum gives inf: caught below
        u = 1.0 / np.dot(scaled, v)
        if not (np.isfinite(u).all() and np.isfinite(v).all()):
            u, v = u_prev, v_prev  # machine precision reached: keep the last good scaling
            break
        if it % 10 == 0 and np.linalg.norm(np.einsum("i,ij,j->j", u, kernel, v) - q) < tol:
            break
    return u.reshape(-1, 1) * kernel * v.reshape(1, -1)


def entropic_gw_plan(ca: np.ndarray, cb: np.ndarray, p: np.ndarray, q: np.ndarray, epsilon: float, *,
                     start: np.ndarray | None = None, max_iter: int = 1000, tol: float = 1e-9,
                     feature_cost: np.ndarray | None = None, alpha: float = 0.5) -> np.ndarray:
    """Entropic Gromov-Wasserstein plan (square loss) by projected gradient: each step the
    Sinkhorn plan (:func:`sinkhorn_plan`) of the GW gradient at the current plan.

    With ``feature_cost`` (``(n_a, n_b)``), fused GW: the gradient weighted by ``alpha``
    plus the feature cost by ``1 - alpha``. The iteration of POT's
    ``entropic_gromov_wasserstein`` / ``entropic_fused_gromov_wasserstein`` (solver ``PGD``:
    the same gradient, its change of plan tested every 10th step against ``tol``), with
    :func:`sinkhorn_plan` inside, so the plans match POT's.
    """
    import ot

    def gw_terms(c1: np.ndarray, c2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # constC, hC1, hC2
        return ot.gromov.init_matrix(c1, c2, p, q, "square_loss")

    terms = [gw_terms(ca, cb)]
    if not (np.allclose(ca, ca.T, atol=1e-10) and np.allclose(cb, cb.T, atol=1e-10)):
        terms.append(gw_terms(ca.T, cb.T))  # asymmetric costs: the mean of both gradients
    plan = np.outer(p, q) if start is None else start
    step, change = 0, 1.0
    while change > tol and step < max_iter:
        previous = plan
        grads = [2 * (const - np.dot(np.dot(h1, plan), h2.T)) for const, h1, h2 in terms]
        # each expression as POT writes it, so that the rounding is the same
        if feature_cost is None:
            grad = grads[0] if len(grads) == 1 else 0.5 * (grads[0] + grads[1])
        elif len(grads) == 1:
            grad = alpha * grads[0] + (1 - alpha) * feature_cost
        else:
            grad = (alpha * 0.5) * (grads[0] + grads[1]) + (1 - alpha) * feature_cost
        plan = sinkhorn_plan(p, q, grad, epsilon)
        if step % 10 == 0:
            change = float(np.linalg.norm(plan - previous))
        step += 1
    return plan


def _entropic_gw(
    ca: np.ndarray, cb: np.ndarray, p: np.ndarray, q: np.ndarray, epsilon: float, max_iter: int,
    label_cost: np.ndarray | None = None, alpha: float = 0.5, start: np.ndarray | None = None,
):
    """Entropic GW plan (fused with ``label_cost`` when given) and its GW loss, from
    ``start`` (a coupling; default the product ``p q^T``)."""
    import ot

    def solve(eps: float) -> np.ndarray:
        with np.errstate(all="ignore"):
            plan = entropic_gw_plan(ca, cb, p, q, eps, start=start, max_iter=max_iter, tol=1e-7,
                                    feature_cost=label_cost, alpha=alpha)
        return np.asarray(plan, dtype=np.float64)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a failed (NaN) plan's loss warns; the plan is checked here
        plan = solve(epsilon)
        for factor in (4, 16):  # too little entropy for these distances: a blurrier plan
            if np.all(np.isfinite(plan)) and plan.sum() > 0.95:
                break
            plan = solve(factor * epsilon)
        value = float(ot.gromov.gwloss(*ot.gromov.init_matrix(ca, cb, p, q, "square_loss"), plan))
    return plan / plan.sum(), value


#: levels at which :func:`distance_quantiles` describes each landmark's distances
N_QUANTILES = 64


def distance_quantiles(distances: np.ndarray, weights: np.ndarray, n_levels: int = N_QUANTILES) -> np.ndarray:
    """``(L, n_levels)``: quantiles of each landmark's distances to all landmarks (weighted).

    A landmark's distribution of distances to the others is unchanged by any isometry,
    so two landmarks that GW should match have similar quantiles (Memoli 2011, the
    "third lower bound" of the GW distance).
    """
    levels = (np.arange(n_levels) + 0.5) / n_levels
    order = np.argsort(distances, axis=1)
    values = np.take_along_axis(distances, order, axis=1)
    w = np.asarray(weights, dtype=np.float64)[order]
    cumulative = np.cumsum(w, axis=1) - 0.5 * w
    return np.stack([np.interp(levels, cumulative[i], values[i]) for i in range(len(distances))])


def distance_profile_start(ca: np.ndarray, cb: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """An informed start for GW: the optimal transport between the two domains' landmarks
    under the squared difference of their distance quantiles (:func:`distance_quantiles`).

    GW is not convex; from the product coupling the solver follows the symmetric
    start into whichever local optimum is nearest, on cluster data often one with two
    cell types swapped. This start already sends each landmark to landmarks with the
    same place in their domain (central / peripheral, in a large or a small group).
    """
    import ot

    qa, qb = distance_quantiles(ca, p), distance_quantiles(cb, q)
    cost = ((qa[:, None, :] - qb[None, :, :]) ** 2).mean(2)
    return np.asarray(ot.emd(p, q, cost / max(cost.max(), 1e-300)), dtype=np.float64)


#: where GW can start, each start a candidate: the product coupling, and :func:`distance_profile_start`
GW_STARTS = ("product", "distance profile")
#: the starts used by default: both (why: "Where GW starts" in the module docstring)
DEFAULT_STARTS = GW_STARTS


def gw_candidates(
    ga: DomainGeometry,
    gb: DomainGeometry,
    *,
    epsilon: float = EPSILON,
    max_iter: int = GW_MAX_ITER,
    label_cost: np.ndarray | None = None,
    starts: Sequence[str] = DEFAULT_STARTS,
    multiscale: bool = MULTISCALE,
) -> list[dict[str, Any]]:
    """One entropic GW coupling per neighbourhood size shared by both geometries and start.

    Each candidate is ``{"k", "start", "epsilon", "gw", "seconds", "coupling"}``; ``gw`` is
    the (unregularised) GW loss of the coupling under its own distances; ``start`` is
    where the solver began (:data:`GW_STARTS`). With ``label_cost`` (landmarks of A x
    landmarks of B, in [0, 1]) the coupling is fused GW: half structure, half label agreement.

    With ``multiscale`` and more than one ``k``, one more candidate per start solves GW
    between each domain's geodesics *averaged* over its ``k`` (``k`` recorded as
    :data:`MULTISCALE_K`): the selection (:func:`distortion_scores`) judges candidates by
    their distortion at every ``k`` at once, and this candidate asks GW for exactly that,
    where each single-``k`` one answers to one scale.
    """
    unknown = set(starts) - set(GW_STARTS)
    if unknown:
        raise ValueError(f"unknown GW start(s) {sorted(unknown)}; expected some of {list(GW_STARTS)}")
    scales = []  # (recorded k, distances of A, distances of B)
    for k in sorted(set(ga.distances) & set(gb.distances)) or [None]:
        if k is None:  # the two domains capped k differently: pair them by rank
            pairs = list(zip(sorted(ga.distances), sorted(gb.distances), strict=False))
        else:
            pairs = [(k, k)]
        scales += [(int(ka), ga.distances[ka], gb.distances[kb]) for ka, kb in pairs]
    if multiscale and max(len(ga.distances), len(gb.distances)) > 1:
        scales.append((MULTISCALE_K, *(np.mean(list(g.distances.values()), axis=0) for g in (ga, gb))))
    out = []
    for k, ca, cb in scales:
        for start in starts:
            t0 = time.perf_counter()
            g0 = distance_profile_start(ca, cb, ga.weights, gb.weights) if start == "distance profile" else None
            plan, value = _entropic_gw(ca, cb, ga.weights, gb.weights, epsilon, max_iter, label_cost=label_cost, start=g0)
            out.append({"k": k, "start": start, "epsilon": float(epsilon), "gw": value,
                        "seconds": time.perf_counter() - t0, "coupling": plan})
    return out


def consensus_scores(
    projections: Sequence[np.ndarray], weights: np.ndarray | None = None, *, witnesses: np.ndarray | None = None
) -> np.ndarray:
    """Mean disagreement of each candidate correspondence with the others (or with weighted witnesses).

    ``projections[c]`` maps the same points of domain A (rows) into domain B's
    representation under candidate ``c``. The disagreement of two candidates is the
    (``weights``-weighted) mean squared distance between their projections, divided by
    the total variance of the projections. A candidate's score is its mean disagreement
    with the other candidates or, given ``witnesses`` (one non-negative weight per
    candidate), its ``witnesses``-weighted mean disagreement with every candidate,
    itself included at zero. Lower is more consensual.
    """
    n_c = len(projections)
    if n_c == 1:
        return np.zeros(1)
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in projections])
    w = np.full(stacked.shape[1], 1.0 / stacked.shape[1]) if weights is None else np.asarray(weights, float) / np.sum(weights)
    pooled = stacked.reshape(-1, stacked.shape[2])
    variance = float(((pooled - pooled.mean(0)) ** 2).sum(1).mean()) or 1.0
    d = np.zeros((n_c, n_c))
    for i, j in itertools.combinations(range(n_c), 2):
        d[i, j] = d[j, i] = float((((stacked[i] - stacked[j]) ** 2).sum(1) * w).sum() / variance)
    if witnesses is None:
        return d.sum(1) / (n_c - 1)
    witnesses = np.asarray(witnesses, dtype=np.float64)
    return d @ witnesses / witnesses.sum()


def _row_projection(plan: np.ndarray, centres_b: np.ndarray) -> np.ndarray:
    """Barycentric projection of A's landmarks into B: rows of ``plan`` normalised, times B's centres."""
    plan = np.asarray(plan)
    rows = plan.sum(1, keepdims=True)
    return (plan / np.where(rows > 0, rows, 1.0)) @ centres_b


def _landmark_overlap(source: DomainGeometry, target: DomainGeometry) -> np.ndarray:
    """``(L_target, L_source)``: the share of each source landmark's cells in each target landmark.

    Both geometries cover the same cells (two landmark restarts of one domain).
    """
    n_s, n_t = len(source.weights), len(target.weights)
    counts = np.bincount(target.assignment * n_s + source.assignment, minlength=n_t * n_s).reshape(n_t, n_s)
    return counts / np.maximum(counts.sum(0, keepdims=True), 1)


def distortion_scores(
    candidates: Sequence[Mapping[str, Any]],
    geometries_a: Sequence[DomainGeometry],
    geometries_b: Sequence[DomainGeometry],
) -> np.ndarray:
    """Each candidate's GW distortion under one common yardstick (mean log GW loss; lower is better).

    A candidate's own GW value was computed on its restart's landmarks under its own
    ``k``: values of different candidates are not comparable. Here every candidate's
    coupling (``candidate["coupling"]`` between the landmarks of restart
    ``candidate["restart"]``) is carried onto the landmarks of *every* restart, through
    the cells the landmarks share, and its GW loss is measured there under every ``k``
    both domains have; the score is the mean log loss over these restarts and ``k``.
    """
    import ot

    overlap_a = [[_landmark_overlap(s, t) for s in geometries_a] for t in geometries_a]
    overlap_b = [[_landmark_overlap(s, t) for s in geometries_b] for t in geometries_b]
    out = np.zeros(len(candidates))
    for c, cand in enumerate(candidates):
        r = cand["restart"]
        logs = []
        for t, (ga, gb) in enumerate(zip(geometries_a, geometries_b, strict=True)):
            plan = overlap_a[t][r] @ np.asarray(cand["coupling"]) @ overlap_b[t][r].T
            plan = plan / plan.sum()
            p, q = plan.sum(1), plan.sum(0)
            for k in sorted(set(ga.distances) & set(gb.distances)):
                loss = ot.gromov.gwloss(*ot.gromov.init_matrix(ga.distances[k], gb.distances[k], p, q, "square_loss"), plan)
                logs.append(np.log(max(float(loss), 1e-300)))
        out[c] = float(np.mean(logs)) if logs else 0.0
    return out


def select_candidate(projections: Sequence[np.ndarray]) -> tuple[int, np.ndarray]:
    """The consensus candidate: ``(index, disagreement scores)`` (the selection rule until
    December 2026, kept for comparisons; the prior uses :func:`joint_selection`).

    ``projections[c]`` are the same cells of domain A mapped into B by candidate ``c``;
    the candidate whose projection disagrees least with the others'
    (:func:`consensus_scores`) is kept. With one candidate, it is kept.
    """
    score = consensus_scores(projections)
    return int(np.argmin(score)), score


def composed_coupling(plan_ab: np.ndarray, plan_ac: np.ndarray) -> np.ndarray:
    """The coupling between B and C implied by two couplings from the same landmarks of A.

    ``P_bc[m, n] = sum_l P_ab[l, m] P_ac[l, n] / p_a[l]``: B's landmark ``m`` and C's
    landmark ``n`` are linked as much as they share partners in A.
    """
    plan_ab, plan_ac = np.asarray(plan_ab, dtype=np.float64), np.asarray(plan_ac, dtype=np.float64)
    p_a = plan_ab.sum(1)
    out = plan_ab.T @ (plan_ac / np.where(p_a > 0, p_a, 1.0)[:, None])
    return out / out.sum()


#: above this many combinations per restart, :func:`joint_selection` keeps each pair's
#: ``JOINT_TOP`` least distorting candidates of the restart (4+ domains)
MAX_JOINT = 256
JOINT_TOP = 4


def joint_selection(
    candidates: Mapping[str, Sequence[Mapping[str, Any]]],
    distortion: Mapping[str, np.ndarray],
    geometries: Sequence[Mapping[str, DomainGeometry]],
) -> tuple[dict[str, int], float]:
    """The candidates, one per domain pair, that together distort every domain's geometry least.

    ``candidates[b]`` couple the first domain (the hub) to ``b``, ``distortion[b]`` their
    :func:`distortion_scores`. With two domains this is the least distorting candidate.
    With more, every combination of one candidate per pair *from the same landmark
    restart* (they share the hub's landmarks) also implies a coupling between each two
    non-hub domains (:func:`composed_coupling`), whose distortion counts too: the score is
    the sum of the distortions of every pair, direct and implied. Returns the chosen
    index per domain and the chosen combination's score.
    """
    others = list(candidates)
    if len(others) == 1:
        (b,) = others
        best = int(np.argmin(distortion[b]))
        return {b: best}, float(distortion[b][best])
    hub = next(iter(set(geometries[0]) - set(others)))
    chosen, best_score = None, np.inf
    for r, g in enumerate(geometries):
        pools = {}
        for b in others:
            idx = [i for i, c in enumerate(candidates[b]) if c["restart"] == r]
            pools[b] = sorted(idx, key=lambda i, b=b: distortion[b][i])
        if np.prod([len(v) for v in pools.values()]) > MAX_JOINT:
            pools = {b: v[:JOINT_TOP] for b, v in pools.items()}
        if any(len(v) == 0 for v in pools.values()):
            continue
        combos = list(itertools.product(*(pools[b] for b in others)))
        score = np.array([sum(distortion[b][i] for b, i in zip(others, combo, strict=True)) for combo in combos])
        for (x, b), (y, c) in itertools.combinations(enumerate(others), 2):
            implied = [
                {"restart": r, "coupling": composed_coupling(candidates[b][combo[x]]["coupling"], candidates[c][combo[y]]["coupling"])}
                for combo in combos
            ]
            score += distortion_scores(implied, [h[b] for h in geometries], [h[c] for h in geometries])
        i = int(np.argmin(score))
        if score[i] < best_score:
            chosen, best_score = dict(zip(others, combos[i], strict=True)), float(score[i])
    if chosen is None:
        raise ValueError(f"no landmark restart holds a candidate for every domain pair from {hub!r}")
    return chosen, best_score


def restart_geometries(
    representations: Mapping[str, np.ndarray],
    cells: Mapping[str, np.ndarray],
    *,
    k_grid: Sequence[int] = K_GRID,
    n_landmarks: int = N_LANDMARKS,
    max_cells: int = MAX_CELLS,
    n_restarts: int = N_RESTARTS,
    seed: int = 0,
) -> list[dict[str, DomainGeometry]]:
    """Per landmark restart, every domain's :func:`domain_geometry` (k-means seed ``seed + 1000 r``)."""
    reps = {name: np.asarray(x)[cells[name]] for name, x in representations.items()}
    return [
        {
            name: domain_geometry(
                reps[name], cells[name], k_grid=k_grid, n_landmarks=n_landmarks, max_cells=max_cells, seed=seed + 1000 * r
            )
            for name in reps
        }
        for r in range(max(1, int(n_restarts)))
    ]


def candidate_couplings(
    geometries: Sequence[Mapping[str, DomainGeometry]],
    a: str,
    b: str,
    probe: np.ndarray,
    *,
    epsilon: float = EPSILON,
    label_codes: Mapping[str, np.ndarray] | None = None,
    starts: Sequence[str] = DEFAULT_STARTS,
    multiscale: bool = MULTISCALE,
) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Every restart x ``k`` x start GW candidate from ``a`` to ``b`` (:func:`gw_candidates`, with
    its ``"restart"``) and where each sends the ``probe`` cells of ``a`` in ``b``'s representation."""
    cands, projections = [], []
    for r, g in enumerate(geometries):
        cost = None if label_codes is None else landmark_label_cost(g[a], g[b], label_codes[a], label_codes[b])
        for c in gw_candidates(g[a], g[b], epsilon=epsilon, label_cost=cost, starts=starts, multiscale=multiscale):
            c["restart"] = r
            cands.append(c)
            projections.append(_row_projection(c["coupling"], g[b].centres)[g[a].assignment[probe]])
    return cands, projections


def distinct_views(views: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Mapping[str, np.ndarray]]:
    """Named views (per domain a representation) with those whose arrays are all the same
    objects merged into one, named ``"first / second"`` (e.g. sparse counts: one
    representation whatever the scaling, so one prior, not two identical ones)."""
    out: dict[str, Mapping[str, np.ndarray]] = {}
    for name, reps in views.items():
        same = [v for v, other in out.items() if all(reps[d] is other[d] for d in reps)]
        if same:
            out[f"{same[0]} / {name}"] = out.pop(same[0])
        else:
            out[name] = reps
    return out


def pooled_distortion(
    candidates: Mapping[str, Sequence[Mapping[str, Any]]],
    geometries: Sequence[Mapping[str, DomainGeometry]],
    other_geometries: Sequence[Mapping[str, DomainGeometry]],
) -> dict[str, np.ndarray]:
    """:func:`distortion_scores` of one view's candidates on the landmarks of every view: the
    restarts of its own view (``geometries``, which the candidates' ``"restart"`` indexes)
    and those of the other views (``other_geometries``, the same cells under other feature
    scalings). ``candidates[b]`` couple the hub (the domain not among the keys) to ``b``.

    The views are representations of the same cells: the right correspondence preserves the
    domains' geometry however the features are scaled, while one that fits an artefact of
    one scaling (a block structure, a loud feature) distorts the other.
    """
    pooled = [*geometries, *other_geometries]
    hub = next(iter(set(pooled[0]) - set(candidates)))
    return {b: distortion_scores(cands, [g[hub] for g in pooled], [g[b] for g in pooled]) for b, cands in candidates.items()}


def pooled_choice(
    views: Mapping[str, tuple[Sequence[Mapping[str, DomainGeometry]], Mapping[str, Sequence[Mapping[str, Any]]]]],
    kept: str,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, int] | None]:
    """The kept view's candidates chosen again on every view's landmarks.

    ``views[v]`` is ``(geometries, candidates)`` of view ``v``: its landmark restarts and,
    per non-hub domain, its candidates. Returns every view's :func:`pooled_distortion`
    (per view, per domain) and the :func:`joint_selection` among the ``kept`` view's
    candidates on it; with one view, its own distortion would be recomputed, so the
    pooled scores are empty and the choice ``None`` (the view's own choice stands).
    """
    if len(views) < 2:
        return {}, None
    others = {v: [g for o, (geoms, _) in views.items() if o != v for g in geoms] for v in views}
    pooled = {v: pooled_distortion(found, geoms, others[v]) for v, (geoms, found) in views.items()}
    # the other views' restarts hold no candidate of the kept view: joint_selection passes them by
    chosen, _ = joint_selection(views[kept][1], pooled[kept], [*views[kept][0], *others[kept]])
    return pooled, chosen


#: the kept correspondence is refined on at most this many landmarks per domain: every
#: cell up to that many, k-means centres beyond (:func:`refined_prior`)
REFINE_LANDMARKS = 2000
#: GW entropy of the refinement: sharper than the search's :data:`EPSILON`, which blurs
#: to let the solver explore; the refinement only descends within the basin found
REFINE_EPSILON = 1e-3
#: outer GW iterations of the refinement (it starts from a solution)
REFINE_MAX_ITER = 10
#: refine the kept correspondence by default (measured: the module docstring)
REFINE = True


def refined_prior(
    prior: CorrespondencePrior,
    representations: Mapping[str, np.ndarray],
    k: int,
    *,
    n_landmarks: int = REFINE_LANDMARKS,
    epsilon: float = REFINE_EPSILON,
    max_iter: int = REFINE_MAX_ITER,
    max_cells: int = MAX_CELLS,
    label_codes: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
) -> CorrespondencePrior:
    """The prior's coupling carried onto finer landmarks (every cell on small data) and
    descended there by entropic GW at a lower entropy.

    The candidates are searched on coarse landmarks (one per four cells or more) with
    enough entropy for the solver to explore; which cell of a landmark goes where is
    left uniform. Here each domain gets up to ``n_landmarks`` landmarks on the same cells
    (:func:`domain_geometry`, one cell per landmark at least), the kept coupling is
    carried onto them through the cells they share and GW under the kept ``k`` (the
    geodesics averaged over the coarse ``k`` for the multi-scale candidate) continues from
    it at ``epsilon``. ``representations`` are the kept view's, per domain.
    """
    ga, gb = prior.geometry_a, prior.geometry_b
    fine, overlap = {}, {}
    for name, g in ((prior.domain_a, ga), (prior.domain_b, gb)):
        ks = sorted(g.distances) if k == MULTISCALE_K else [k]
        f = domain_geometry(
            np.asarray(representations[name])[g.cells], g.cells, k_grid=ks, n_landmarks=n_landmarks,
            max_cells=max_cells, cells_per_landmark=1, seed=seed,
        )
        if k == MULTISCALE_K:
            f.distances = {MULTISCALE_K: np.mean(list(f.distances.values()), axis=0)}
        fine[name], overlap[name] = f, _landmark_overlap(g, f)
    fa, fb = fine[prior.domain_a], fine[prior.domain_b]
    start = overlap[prior.domain_a] @ prior.coupling @ overlap[prior.domain_b].T
    start = start / start.sum()
    cost = None if label_codes is None else landmark_label_cost(fa, fb, label_codes[prior.domain_a], label_codes[prior.domain_b])
    (ka,), (kb,) = fa.distances, fb.distances
    plan, _ = _entropic_gw(fa.distances[ka], fb.distances[kb], fa.weights, fb.weights, epsilon, max_iter,
                           label_cost=cost, start=start)
    return CorrespondencePrior(prior.domain_a, prior.domain_b, fa, fb, plan, prior.candidates)


def correspondence_priors(
    representations: Mapping[str, np.ndarray] | Mapping[str, Mapping[str, np.ndarray]],
    cells: Mapping[str, np.ndarray],
    *,
    k_grid: Sequence[int] = K_GRID,
    n_landmarks: int = N_LANDMARKS,
    epsilon: float = EPSILON,
    max_cells: int = MAX_CELLS,
    n_restarts: int = N_RESTARTS,
    seed: int = 0,
    label_codes: Mapping[str, np.ndarray] | None = None,
    starts: Sequence[str] = DEFAULT_STARTS,
    multiscale: bool = MULTISCALE,
    refine: bool = REFINE,
) -> list[CorrespondencePrior]:
    """A GW correspondence prior between the first domain and each other domain.

    Parameters
    ----------
    representations
        Per domain, a dense ``(n_cells, d)`` view of the features (:func:`representation`);
        or, per named view (e.g. the :data:`SCALINGS`, from :func:`representations`), such a
        mapping. Each view gets its own landmarks, candidates and joint choice; the view
        whose choice distorts least is kept (its domains look most alike there). Views
        whose arrays are all the same objects are one view, named ``"first / second"``.
    cells
        Per domain, the indices of the cells the prior may use (e.g. all but test cells).
    k_grid, n_landmarks, epsilon, max_cells
        Neighbourhood sizes tried, landmarks per domain, GW entropy, graph sample size.
    n_restarts
        Independent landmark sets (k-means seeds) per domain. Every restart x ``k``
        gives a candidate. GW from a given pair of landmark sets sometimes lands in a
        swapped local optimum that the other ``k`` of the same restart share; another
        landmark set may not (on sci-CAR most restarts land mirrored: which is right is
        decided by the distortion, not by a majority).
    seed
        Seed of k-means and the graph sample (a model passes its own seed, so the
        spread over training seeds includes the prior's).
    label_codes
        Per domain, integer label codes of *all* cells (``-1`` unknown). When given,
        the couplings are fused GW: landmarks whose label mixtures disagree cost
        more to match (:func:`landmark_label_cost`).
    starts
        Where GW starts (some of :data:`GW_STARTS`; default :data:`DEFAULT_STARTS`); every
        start is a candidate of its own.
    multiscale
        Also a candidate per restart x start on the geodesics averaged over ``k_grid``
        (``k`` recorded as :data:`MULTISCALE_K`; see :func:`gw_candidates`).
    refine
        Carry each kept coupling onto every cell (at most :data:`REFINE_LANDMARKS` landmarks
        per domain) and let GW descend there at :data:`REFINE_EPSILON` (:func:`refined_prior`);
        the candidate table is the coarse search's.

    Notes
    -----
    The candidate kept per pair is :func:`joint_selection`'s (in the kept view); each
    candidate's ``view``, distortion
    and its disagreement with the others (:func:`consensus_scores`, on a seeded sample of
    at most ``CONSENSUS_CELLS`` of the first domain's cells) are recorded in its table.
    Memory stays O(n).
    """
    if all(isinstance(v, Mapping) for v in representations.values()):
        views = dict(representations)
    else:
        views = {"": representations}
    kept_views = distinct_views(views)
    names = list(next(iter(kept_views.values())))
    a = names[0]  # a star from the first domain: training draws every other domain's batch from it
    rng = np.random.default_rng([seed, 29])
    n_a = len(cells[a])
    probe = np.sort(rng.choice(n_a, CONSENSUS_CELLS, replace=False)) if n_a > CONSENSUS_CELLS else np.arange(n_a)
    results = {}
    for view, reps in kept_views.items():
        geoms = restart_geometries(
            reps, cells, k_grid=k_grid, n_landmarks=n_landmarks, max_cells=max_cells, n_restarts=n_restarts, seed=seed
        )
        found, distortion, agreement = {}, {}, {}
        for b in names[1:]:
            cands, projections = candidate_couplings(
                geoms, a, b, probe, epsilon=epsilon, label_codes=label_codes, starts=starts, multiscale=multiscale
            )
            found[b] = cands
            distortion[b] = distortion_scores(cands, [g[a] for g in geoms], [g[b] for g in geoms])
            agreement[b] = consensus_scores(projections)  # reported: how far the candidates agree
        chosen, score = joint_selection(found, distortion, geoms)
        results[view] = (geoms, found, distortion, agreement, chosen, score)
    # each view's choice was judged on its own yardstick; between views, the lower joint
    # distortion says in which view the domains' geometries are closer to isometric
    kept = min(results, key=lambda v: results[v][-1])
    # which correspondence: the kept view's candidates judged on every view's landmarks
    pooled, chosen = pooled_choice({v: (r[0], r[1]) for v, r in results.items()}, kept)
    if chosen is not None:
        logger.info("correspondence views (joint distortion): %s; kept %r",
                    {v: round(r[-1], 3) for v, r in results.items()}, kept)
        results[kept] = (*results[kept][:4], chosen, results[kept][5])
    priors = []
    for b in names[1:]:
        table = []
        for view, (geoms, found, distortion, agreement, chosen, score) in results.items():
            table += [
                {"domain_a": a, "domain_b": b, "view": view, "restart": c["restart"], "k": c["k"], "start": c["start"],
                 "epsilon": c["epsilon"], "gw": round(c["gw"], 6), "distortion": round(float(distortion[b][i]), 6),
                 "disagreement": round(float(agreement[b][i]), 6), "view_distortion": round(float(score), 6),
                 "pooled_distortion": round(float(pooled[view][b][i] if pooled else distortion[b][i]), 6),
                 "chosen": view == kept and i == chosen[b]}
                for i, c in enumerate(found[b])
            ]
        geoms, found, distortion, _, chosen, _ = results[kept]
        best = found[b][chosen[b]]
        logger.info(
            "correspondence %s-%s: %srestart %d, k=%s, %s start chosen of %d candidates (distortion %s%s)",
            a, b, f"view {kept!r}, " if kept else "", best["restart"], best["k"], best["start"], len(found[b]),
            np.round((pooled[kept] if pooled else distortion)[b], 3).tolist(), " on every view's landmarks" if pooled else "",
        )
        g = geoms[best["restart"]]
        prior = CorrespondencePrior(a, b, g[a], g[b], best["coupling"], table)
        if refine:
            t0 = time.perf_counter()
            prior = refined_prior(prior, kept_views[kept], best["k"], max_cells=max_cells, label_codes=label_codes, seed=seed)
            logger.info("correspondence %s-%s refined on %d x %d landmarks in %.1f s", a, b,
                        len(prior.geometry_a.weights), len(prior.geometry_b.weights), time.perf_counter() - t0)
        priors.append(prior)
    return priors
