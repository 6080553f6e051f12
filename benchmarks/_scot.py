"""SCOT's algorithm (Demetci et al.), re-implemented with POT for the peer benchmarks.

SCOT aligns two unpaired single-cell domains in four steps; this module follows the
authors' published defaults (SCOT v1, ``rsinghlab/SCOT``, class ``SCOT`` in ``scotv1.py``)
but is our own code:

1. **normalise** each cell (row) to unit L2 norm (:func:`normalize_rows`);
2. **geodesic distances** inside each domain: a kNN graph (``metric="correlation"``,
   ``mode="connectivity"``, each cell counted among its own neighbours), all-pairs
   shortest paths, unreachable pairs set to the largest finite distance, then divided by
   the maximum so every entry lies in ``[0, 1]`` (:func:`geodesic_distances`);
3. **entropic Gromov-Wasserstein** between the two distance matrices with uniform
   marginals (``ot.gromov.entropic_gromov_wasserstein``, square loss) giving a coupling
   ``(n_x, n_y)`` and the GW distance (:func:`gw_coupling`, :func:`scot_coupling`);
4. **barycentric projection** of one domain onto the other (:func:`barycentric_projection`).

Defaults: ``k = min(0.2 * n_x, 0.2 * n_y, 50)`` and ``epsilon = 1e-3``
(:func:`default_k`, :data:`DEFAULT_EPSILON`).

:func:`scot_self_tune` is the authors' unsupervised hyperparameter selection: solve on a
grid of ``k`` x ``epsilon`` and keep the solution with the lowest GW distance (their grid:
``k = linspace(20, 100, 5)`` for ``n > 250`` else ``linspace(n//20, n//6, 5)``, and
``epsilon = logspace(-1, -3, 12)``; see :func:`default_tuning_grid`). Because a single
solve at small ``epsilon`` can take many minutes, ours takes a ``time_budget_s`` and stops
starting new solves once it is spent.

Only numpy, scipy, scikit-learn and POT are needed, so this runs in the main venv.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import ot
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from sklearn.neighbors import kneighbors_graph
from sklearn.preprocessing import normalize as _sk_normalize

DEFAULT_EPSILON = 1e-3
DEFAULT_MAX_ITER = 1000
DEFAULT_TOL = 1e-9

__all__ = [
    "DEFAULT_EPSILON",
    "ScotTuneResult",
    "barycentric_projection",
    "default_k",
    "default_tuning_grid",
    "geodesic_distances",
    "gw_coupling",
    "is_converged",
    "normalize_rows",
    "scot_align",
    "scot_coupling",
    "scot_self_tune",
]


# ----------------------------------------------------------------------------- preprocessing
def normalize_rows(x: np.ndarray, norm: str = "l2") -> np.ndarray:
    """Scale every row (cell) to unit ``norm`` as SCOT does before building graphs.

    ``norm`` is ``"l2"`` (SCOT's default), ``"l1"``, ``"max"`` or ``"zscore"`` (per-feature
    standardisation instead of per-cell scaling). Rows of zeros stay zero.
    """
    x = np.asarray(x, dtype=np.float64)
    if norm == "zscore":
        sd = x.std(axis=0)
        return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    if norm not in ("l1", "l2", "max"):
        raise ValueError(f"norm must be 'l1', 'l2', 'max' or 'zscore', not {norm!r}")
    return _sk_normalize(x, norm=norm, axis=1)


def default_k(n_x: int, n_y: int) -> int:
    """SCOT's default neighbourhood size: 20 % of the smaller domain, at most 50."""
    return max(1, min(int(n_x * 0.2), int(n_y * 0.2), 50))


# ----------------------------------------------------------------------------- step 2
def geodesic_distances(
    x: np.ndarray, k: int, mode: str = "connectivity", metric: str = "correlation"
) -> np.ndarray:
    """Normalised shortest-path distances on the kNN graph of ``x`` (cells x features).

    The graph joins each cell to its ``k`` nearest cells under ``metric`` (with
    ``mode="connectivity"`` every edge weighs 1 and a cell counts as its own neighbour, as
    in SCOT; with ``mode="distance"`` edges carry the metric distance). Paths are taken on
    the undirected graph. Pairs in different connected components get the largest finite
    distance, and the matrix is divided by its maximum.

    Returns
    -------
    np.ndarray
        ``(n, n)`` float64, symmetric, zero diagonal, finite, values in ``[0, 1]``.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 cells to build a graph, got {n}")
    if mode not in ("connectivity", "distance"):
        raise ValueError(f"mode must be 'connectivity' or 'distance', not {mode!r}")
    include_self = mode == "connectivity"
    # with include_self the cell itself takes one of the k places; keep k within range
    k_eff = int(min(max(int(k), 1), n if include_self else n - 1))
    graph = kneighbors_graph(x, k_eff, mode=mode, metric=metric, include_self=include_self)
    dist = dijkstra(csgraph=csr_matrix(graph), directed=False, return_predecessors=False)
    finite = np.isfinite(dist)
    dmax = dist[finite].max() if finite.any() else 0.0
    dist[~finite] = dmax
    if dmax > 0:
        dist /= dmax
    # dijkstra on the undirected graph is symmetric already; make it exact
    dist = 0.5 * (dist + dist.T)
    np.fill_diagonal(dist, 0.0)
    return dist


# ----------------------------------------------------------------------------- step 3
def is_converged(coupling: np.ndarray) -> bool:
    """SCOT's convergence check: no NaN, no empty row/column, total mass at least 0.95."""
    c = np.asarray(coupling)
    if not np.all(np.isfinite(c)):
        return False
    if np.any(~c.any(axis=1)) or np.any(~c.any(axis=0)):
        return False
    return bool(c.sum() >= 0.95)


def gw_coupling(
    cx: np.ndarray,
    cy: np.ndarray,
    *,
    epsilon: float,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    verbose: bool = False,
) -> tuple[np.ndarray, float, bool]:
    """Entropic GW coupling between two intra-domain distance matrices (uniform marginals).

    Returns ``(coupling (n_x, n_y), gw_distance, converged)``; ``gw_distance`` is POT's
    ``log["gw_dist"]`` (the GW loss of the coupling, what SCOT minimises when tuning),
    ``converged`` is :func:`is_converged` (``gw_distance`` is ``inf`` when it is False).
    """
    p = ot.unif(cx.shape[0])
    q = ot.unif(cy.shape[0])
    with warnings.catch_warnings():
        # POT warns on sinkhorn underflow / unfinished plans; we report it via `converged`
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            coupling, log = ot.gromov.entropic_gromov_wasserstein(
                cx, cy, p, q, loss_fun="square_loss", epsilon=float(epsilon),
                max_iter=int(max_iter), tol=float(tol), log=True, verbose=verbose,
            )
    coupling = np.asarray(coupling)
    ok = is_converged(coupling)
    gw = float(log["gw_dist"]) if ok else float("inf")
    if not np.isfinite(gw):
        ok = False
    return coupling, gw, ok


def scot_coupling(
    x: np.ndarray,
    y: np.ndarray,
    *,
    k: int | None = None,
    epsilon: float = DEFAULT_EPSILON,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    normalize: bool = True,
    mode: str = "connectivity",
    metric: str = "correlation",
    return_gw: bool = False,
) -> np.ndarray | tuple[np.ndarray, float]:
    """SCOT's coupling ``(n_x, n_y)`` between cells of ``x`` and cells of ``y``.

    Rows are L2-normalised (unless ``normalize=False``), geodesic distances are built with
    ``k`` neighbours (default :func:`default_k`), and entropic GW is solved with
    ``epsilon``. Rows of the coupling sum to ``1/n_x``, columns to ``1/n_y``.

    Raises
    ------
    RuntimeError
        When the solver does not converge (NaN / empty rows), as SCOT reports it
        ("try a larger epsilon").
    """
    xn = normalize_rows(x) if normalize else np.asarray(x, dtype=np.float64)
    yn = normalize_rows(y) if normalize else np.asarray(y, dtype=np.float64)
    if k is None:
        k = default_k(xn.shape[0], yn.shape[0])
    cx = geodesic_distances(xn, k, mode=mode, metric=metric)
    cy = geodesic_distances(yn, k, mode=mode, metric=metric)
    coupling, gw, ok = gw_coupling(cx, cy, epsilon=epsilon, max_iter=max_iter, tol=tol)
    if not ok:
        raise RuntimeError(
            f"entropic GW did not converge for k={k}, epsilon={epsilon:g} "
            "(NaN or empty rows/columns in the coupling); try a larger epsilon"
        )
    return (coupling, gw) if return_gw else coupling


# ----------------------------------------------------------------------------- step 4
def barycentric_projection(coupling: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Map each row-point of ``coupling`` to the coupling-weighted mean of ``y``'s cells.

    ``coupling`` is ``(n_x, n_y)`` and ``y`` is ``(n_y, d)``; returns ``(n_x, d)`` with row
    ``i`` equal to ``sum_j coupling[i, j] * y[j] / sum_j coupling[i, j]``. To project
    ``y`` into ``x``'s space use ``barycentric_projection(coupling.T, x)``.
    """
    coupling = np.asarray(coupling, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if coupling.shape[1] != y.shape[0]:
        raise ValueError(f"coupling has {coupling.shape[1]} columns but y has {y.shape[0]} rows")
    weights = coupling.sum(axis=1)
    if np.any(weights <= 0):
        raise ValueError("coupling has rows without mass; cannot project them")
    return (coupling @ y) / weights[:, None]


def scot_align(
    x: np.ndarray,
    y: np.ndarray,
    *,
    k: int | None = None,
    epsilon: float = DEFAULT_EPSILON,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Align ``y`` onto ``x``: returns ``(x_norm, y_projected)`` in ``x``'s feature space.

    ``x_norm`` is ``x`` after SCOT's row normalisation; ``y_projected`` is the barycentric
    projection of every ``y`` cell onto ``x_norm`` (SCOT's ``XontoY=False`` direction).
    Both have ``x.shape[1]`` columns and can be compared directly (FOSCTTM, kNN).
    """
    xn = normalize_rows(x) if normalize else np.asarray(x, dtype=np.float64)
    coupling = scot_coupling(x, y, k=k, epsilon=epsilon, max_iter=max_iter, tol=tol, normalize=normalize)
    return xn, barycentric_projection(coupling.T, xn)


# ----------------------------------------------------------------------------- self-tuning
def default_tuning_grid(n_x: int, n_y: int) -> tuple[list[int], list[float]]:
    """The authors' self-tuning grid (SCOT v1): 5 values of k, 12 of epsilon."""
    n = min(n_x, n_y)
    if n > 250:
        ks = np.linspace(20, 100, 5)
    else:
        ks = np.linspace(max(n // 20, 1), max(n // 6, 2), 5)
    ks = sorted({int(v) for v in ks})
    es = [float(e) for e in np.logspace(-1, -3, 12)]
    return ks, es


@dataclass
class ScotTuneResult:
    """What :func:`scot_self_tune` found.

    ``x_aligned``/``y_aligned`` follow :func:`scot_align` (``y`` projected into ``x``'s
    normalised space) for the chosen ``k``/``epsilon`` (lowest GW distance among converged
    solves). ``trials`` lists every solve tried: ``k``, ``epsilon``, ``gw_dist``
    (``inf`` when it did not converge), ``converged`` and ``seconds``; ``skipped`` the grid
    points not tried because ``time_budget_s`` ran out.
    """

    x_aligned: np.ndarray
    y_aligned: np.ndarray
    k: int
    epsilon: float
    gw_dist: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    coupling: np.ndarray | None = None


def scot_self_tune(
    x: np.ndarray,
    y: np.ndarray,
    *,
    ks: Sequence[int] | None = None,
    epsilons: Sequence[float] | None = None,
    time_budget_s: float | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    normalize: bool = True,
    keep_coupling: bool = False,
) -> ScotTuneResult:
    """SCOT's unsupervised hyperparameter selection: lowest GW distance over a k x eps grid.

    As in the authors' ``search_scot``, every grid point is solved, solves that do not
    converge are dropped, and the converged solve with the lowest ``gw_dist`` wins. The
    visiting order differs: ``epsilons`` outer (in the given order; pass them largest
    first, the cheap solves) and ``ks`` inner, with the graph distances cached per ``k``,
    so that a time budget covers every ``k`` at the cheaper epsilons before the costly
    small ones. Over a complete grid the choice is the same as the authors'. Defaults for ``ks``/``epsilons`` are :func:`default_tuning_grid`
    (60 solves, too many for large data: pass a small grid).

    ``time_budget_s`` bounds the search: no new solve starts once that many seconds have
    passed since the search began (a running solve is not interrupted, so the total can exceed the budget by one
    solve). At least one solve always runs.

    Raises
    ------
    RuntimeError
        When no tried solve converged.
    """
    xn = normalize_rows(x) if normalize else np.asarray(x, dtype=np.float64)
    yn = normalize_rows(y) if normalize else np.asarray(y, dtype=np.float64)
    d_ks, d_es = default_tuning_grid(xn.shape[0], yn.shape[0])
    ks = [int(v) for v in (d_ks if ks is None else ks)]
    epsilons = [float(v) for v in (d_es if epsilons is None else epsilons)]
    if not ks or not epsilons:
        raise ValueError("ks and epsilons must be non-empty")

    start = time.perf_counter()
    trials: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    best: tuple[float, int, float, np.ndarray] | None = None

    def out_of_time() -> bool:
        return time_budget_s is not None and bool(trials) and time.perf_counter() - start >= time_budget_s

    distances: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per k, built on first use
    for e in epsilons:
        for k in ks:
            if out_of_time():
                skipped.append({"k": k, "epsilon": e})
                continue
            if k not in distances:
                distances[k] = (geodesic_distances(xn, k), geodesic_distances(yn, k))
            cx, cy = distances[k]
            t0 = time.perf_counter()
            coupling, gw, ok = gw_coupling(cx, cy, epsilon=e, max_iter=max_iter, tol=tol)
            trials.append(
                {"k": k, "epsilon": e, "gw_dist": gw, "converged": ok, "seconds": time.perf_counter() - t0}
            )
            if ok and (best is None or gw < best[0]):
                best = (gw, k, e, coupling)
    distances.clear()

    if best is None:
        raise RuntimeError(f"no SCOT solve converged; tried {[(t['k'], t['epsilon']) for t in trials]}")
    gw, k, e, coupling = best
    return ScotTuneResult(
        x_aligned=xn,
        y_aligned=barycentric_projection(coupling.T, xn),
        k=k,
        epsilon=e,
        gw_dist=gw,
        trials=trials,
        skipped=skipped,
        coupling=coupling if keep_coupling else None,
    )
