"""Run one published peer method on unpaired single-cell domains and save its joint embedding.

Runs with either virtualenv: the main ``.venv`` (``scot_default``, ``scot_tuned``: our own
SCOT implementation in ``benchmarks/_scot.py``, numpy/scipy/sklearn/POT only) or the peers
venv ``benchmarks/.venv-peers`` built from ``benchmarks/requirements-peers.txt`` (every
method, including the PyPI packages ``uniport``, ``scotplus`` and ``pamona``).

Inputs are either the sci-CAR RNA + ATAC layout below or any number of feature domains
(``domains`` + ``x_{domain}``, see "Feature domains"). Methods for more than two domains
align every other domain onto the first one (the *anchor*): SCOT and SCOT+ pair by pair,
Pamona and uniPort in one joint run with the anchor as their reference data set.

Self-tuning (``*_tuned``) is SCOT's own unsupervised rule, the converged solve with the
lowest Gromov-Wasserstein distortion of its coupling over a ``k`` x ``epsilon`` grid,
visited largest epsilon first until ``--time-budget`` is spent. Pamona and SCOT+ ship no
tuning procedure of their own, so ``pamona_tuned`` and ``scotplus_tuned`` apply the same
rule to their own couplings and graph distances.

Three modes
-----------
Run a method (exit status 0 even when the method fails; the failure is recorded)::

    python benchmarks/peers_run.py --method {scot_default,scot_tuned,uniport,scotplus,scotplus_tuned,pamona,pamona_tuned} \
        --inputs inputs.npz --out result.npz [--threads 1] [--seed 0] \
        [--ks 20,60,100] [--epsilons 0.01,0.005,0.001] [--time-budget 1800] \
        [--k 50] [--epsilon 0.001] [--max-iter 1000] [--uniport-iterations 30000]

Build the inputs from the sci-CAR A549 folder (main venv: numpy, scipy, sklearn, pandas, cellbridge)::

    python benchmarks/peers_run.py --make-inputs ../shared/data/scicar_a549 --inputs inputs.npz [--seed 0]

Score a result against the truth pairing and labels (main venv; uses ``cellbridge.metrics``)::

    python benchmarks/peers_run.py --score result.npz --inputs inputs.npz

``inputs.npz`` (all arrays; no pickled objects)
-----------------------------------------------
``rna_pca``        float64 ``(n_rna, 30)``  RNA: library-size normalised, log1p, PCA 30.
``atac_svd``       float64 ``(n_atac, 30)`` ATAC: binarised, TF-IDF, TruncatedSVD 31 minus component 1.
``rna_counts_data``, ``rna_counts_indices``, ``rna_counts_indptr``, ``rna_counts_shape``
                   raw RNA counts, cells x genes, as the components of a
                   ``scipy.sparse.csr_matrix`` (data int32, indices int32, indptr int64,
                   shape int64 ``[n_rna, n_genes]``). A dense 2-D ``rna_counts`` array is
                   accepted instead.
``atac_counts_*``  the same for ATAC (cells x peaks).
``cell_ids_rna``, ``cell_ids_atac``  unicode ``(n,)``: the cell id of each row. The two
                   domains are shuffled independently, so rows are *not* paired; the ids
                   give the truth pairing to the scorer only. No method reads them.
``labels_rna``, ``labels_atac``  optional unicode ``(n,)`` (treatment time); only the
                   scorer reads them.

Feature domains (any number >= 2)
---------------------------------
``domains``        unicode ``(n_domains,)``: domain names; the first is the anchor.
``x_{domain}``     float64 ``(n_cells, n_features)``: that domain's features as every method
                   receives them (the benchmark passes every feature standardised, see
                   ``real_data.write_feature_peer_inputs``).
``cell_ids_{domain}``, ``labels_{domain}``  as above, for the scorer only.
The result then holds ``z_{domain}`` for every domain (all in one space).

``result.npz``
--------------
``z_rna``   float64 ``(n_rna, d)``, rows in the order of ``inputs.npz``'s RNA rows;
``z_atac``  float64 ``(n_atac, d)``, same ``d``, one common space with ``z_rna``;
``info``    0-d unicode: a JSON object with ``method``, ``wall_s`` (the method only,
            excluding reading inputs), ``peak_rss_mb`` (``resource.getrusage`` max RSS of this
            process), ``hyperparameters``, ``package``/``package_version``, ``threads``,
            ``space`` (what the common space is), ``error`` (``null`` on success);
``error``   0-d unicode, empty on success, else ``"ExceptionType: message"`` (and then
            ``z_rna``/``z_atac`` are absent).
Read with ``r = np.load(out); info = json.loads(str(r["info"])); err = str(r["error"])``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

METHODS = ("scot_default", "scot_tuned", "uniport", "scotplus", "scotplus_tuned", "pamona", "pamona_tuned")
#: self-tuning grids of the package peers (largest epsilon first, as for SCOT)
SCOTPLUS_TUNE_KS = (20, 50, 100)
SCOTPLUS_TUNE_EPSILONS = (1e-2, 5e-3, 1e-3)
PAMONA_TUNE_KS = (10, 30, 50)  # 10: Pamona's default; 30: its authors' PBMC example
PAMONA_TUNE_EPSILONS = (5e-3, 1e-3)
N_COMPONENTS = 30
# self-tuning grid used by default on real data: a subset of SCOT's own grid
# (k = linspace(20, 100, 5), epsilon = logspace(-1, -3, 12)) that fits a time budget
DEFAULT_TUNE_KS = (20, 60, 100)
DEFAULT_TUNE_EPSILONS = (1e-2, 5e-3, 2e-3, 1e-3)
DEFAULT_TIME_BUDGET_S = 1800.0


# ----------------------------------------------------------------------------- threads
def _limit_threads(n: int) -> None:
    """Cap BLAS/OpenMP threads; must run before numpy/torch are imported."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(n)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# ----------------------------------------------------------------------------- npz helpers
def save_csr(store: dict[str, Any], name: str, matrix: Any) -> None:
    """Put a sparse matrix into ``store`` as ``{name}_data/_indices/_indptr/_shape``."""
    import numpy as np
    import scipy.sparse as sp

    m = sp.csr_matrix(matrix)
    store[f"{name}_data"] = m.data.astype(np.int32)
    store[f"{name}_indices"] = m.indices.astype(np.int32)
    store[f"{name}_indptr"] = m.indptr.astype(np.int64)
    store[f"{name}_shape"] = np.asarray(m.shape, dtype=np.int64)


def load_counts(inputs: Any, name: str) -> Any:
    """``rna_counts``/``atac_counts`` from the loaded inputs: CSR components or a dense array."""
    import scipy.sparse as sp

    if name in inputs:
        return sp.csr_matrix(inputs[name])
    return sp.csr_matrix(
        (inputs[f"{name}_data"], inputs[f"{name}_indices"], inputs[f"{name}_indptr"]),
        shape=tuple(int(v) for v in inputs[f"{name}_shape"]),
    )


def domain_features(inp: Any) -> dict[str, Any]:
    """``{domain: features}`` in anchor-first order: ``x_{d}`` for feature inputs, else RNA PCA + ATAC SVD."""
    import numpy as np

    if "domains" in inp:
        return {str(d): np.asarray(inp[f"x_{d}"], dtype=np.float64) for d in inp["domains"]}
    return {"rna": np.asarray(inp["rna_pca"], dtype=np.float64), "atac": np.asarray(inp["atac_svd"], dtype=np.float64)}


def _per_pair(hyper: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One pair: its hyperparameters as they are; several: keyed by ``domain->anchor``."""
    return next(iter(hyper.values())) if len(hyper) == 1 else hyper


# ----------------------------------------------------------------------------- inputs
def preprocess_rna(counts: Any, n_components: int = N_COMPONENTS, seed: int = 0) -> Any:
    """Library-size normalise (to the median total), log1p, PCA ``n_components``."""
    import numpy as np
    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    x = sp.csr_matrix(counts, dtype=np.float64)
    totals = np.asarray(x.sum(axis=1)).ravel()
    target = float(np.median(totals[totals > 0]))
    scale = np.where(totals > 0, target / np.maximum(totals, 1e-12), 0.0)
    x = sp.diags(scale) @ x
    x.data = np.log1p(x.data)
    return PCA(n_components=n_components, random_state=seed).fit_transform(x.toarray())


def preprocess_atac(counts: Any, n_components: int = N_COMPONENTS, seed: int = 0) -> Any:
    """Binarise, TF-IDF (term frequency x log(1 + n_cells / peak count)), SVD, drop comp. 1."""
    import numpy as np
    import scipy.sparse as sp
    from sklearn.decomposition import TruncatedSVD

    x = sp.csr_matrix(counts, dtype=np.float64)
    x.data[:] = 1.0
    per_cell = np.asarray(x.sum(axis=1)).ravel()
    per_peak = np.asarray(x.sum(axis=0)).ravel()
    tf = sp.diags(1.0 / np.maximum(per_cell, 1.0)) @ x
    idf = np.log1p(x.shape[0] / np.maximum(per_peak, 1.0))
    tfidf = tf @ sp.diags(idf)
    svd = TruncatedSVD(n_components=n_components + 1, random_state=seed).fit_transform(tfidf)
    return svd[:, 1:]


def make_inputs(data_dir: Path, out: Path, *, seed: int = 0) -> dict[str, Any]:
    """Write ``inputs.npz`` from the sci-CAR A549 folder, each domain shuffled on its own."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    rna = sp.load_npz(data_dir / "diff_expr_shared_cells.npz").T.tocsr()  # cells x genes
    atac = sp.load_npz(data_dir / "diff_atac_shared_cells.npz").T.tocsr()  # cells x peaks
    from cellbridge.preprocess.scicar import read_cell_list  # restricted unpickler

    cells = np.asarray([str(c) for c in read_cell_list(data_dir / "shared_cells.pkl")])
    if not (rna.shape[0] == atac.shape[0] == cells.size):
        raise ValueError(f"cell counts differ: rna {rna.shape}, atac {atac.shape}, ids {cells.size}")
    meta = pd.read_csv(data_dir / "GSM3271040_RNA_sciCAR_A549_cell.txt")
    hours = meta.set_index("sample")["treatment_time"].reindex(cells)
    labels = np.asarray([f"{int(h)}h" if pd.notna(h) else "NA" for h in hours])

    rna_pca = preprocess_rna(rna, seed=seed)
    atac_svd = preprocess_atac(atac, seed=seed)

    rng = np.random.default_rng(seed)
    p_rna, p_atac = rng.permutation(cells.size), rng.permutation(cells.size)
    store: dict[str, Any] = {
        "rna_pca": rna_pca[p_rna],
        "atac_svd": atac_svd[p_atac],
        "cell_ids_rna": cells[p_rna].astype(str),
        "cell_ids_atac": cells[p_atac].astype(str),
        "labels_rna": labels[p_rna].astype(str),
        "labels_atac": labels[p_atac].astype(str),
    }
    save_csr(store, "rna_counts", rna[p_rna])
    save_csr(store, "atac_counts", atac[p_atac])
    np.savez_compressed(out, **store)
    return {"n_cells": int(cells.size), "n_genes": int(rna.shape[1]), "n_peaks": int(atac.shape[1])}


# ----------------------------------------------------------------------------- methods
def run_scot_default(inp: Any, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """SCOT with the authors' defaults: k = min(0.2 n, 50), epsilon = 1e-3; each domain onto the anchor."""
    import _scot

    feats = domain_features(inp)
    anchor, *others = feats
    z, hyper = {}, {}
    for d in others:
        x, y = feats[anchor], feats[d]
        k = args.k if args.k is not None else _scot.default_k(x.shape[0], y.shape[0])
        eps = args.epsilon if args.epsilon is not None else _scot.DEFAULT_EPSILON
        z[anchor], z[d] = _scot.scot_align(x, y, k=k, epsilon=eps, max_iter=args.max_iter)
        hyper[f"{d}->{anchor}"] = {"k": int(k), "epsilon": float(eps), "max_iter": args.max_iter}
    return z, {"hyperparameters": _per_pair(hyper)}


def run_scot_tuned(inp: Any, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """SCOT's unsupervised self-tuning (lowest GW distance) over a time-bounded grid, per pair."""
    import _scot

    feats = domain_features(inp)
    anchor, *others = feats
    z, hyper, trials, skipped = {}, {}, {}, {}
    for d in others:
        res = _scot.scot_self_tune(
            feats[anchor], feats[d], ks=args.ks, epsilons=args.epsilons,
            time_budget_s=args.time_budget / len(others), max_iter=args.max_iter,
        )
        z[anchor], z[d] = res.x_aligned, res.y_aligned
        pair = f"{d}->{anchor}"
        hyper[pair] = {"k": int(res.k), "epsilon": float(res.epsilon), "max_iter": args.max_iter, "gw_dist": res.gw_dist}
        trials[pair], skipped[pair] = res.trials, res.skipped
    extra = {
        "hyperparameters": _per_pair(hyper),
        "grid": {"ks": list(args.ks), "epsilons": list(args.epsilons), "time_budget_s": args.time_budget},
        "trials": _per_pair(trials),
        "skipped": _per_pair(skipped),
    }
    return z, extra


def run_uniport(inp: Any, args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """uniPort diagonal integration (``mode='d'``) at its defaults.

    From the sci-CAR layout (raw counts), preprocessing as its diagonal tutorial
    (docs/source/examples/diagonal_PBMC.ipynb, scATAC peaks + scRNA counts, no prior):
      ATAC: ``X[X > 1] = 1``; ``sc.pp.normalize_total``; ``up.TFIDF_LSI`` (50 comps, the
            first dropped -> 49); ``MinMaxScaler`` on ``obsm['X_lsi']``;
      RNA:  ``sc.pp.normalize_total``; ``sc.pp.log1p``; 2000 highly variable genes
            (``subset=True``); ``up.batch_scale`` (per-source MaxAbs scaling).
    It starts from the raw counts, not from ``rna_pca``/``atac_svd``. Feature domains
    (``x_{domain}``, already reduced) are min-max scaled to [0, 1] each, as the tutorial scales
    the LSI: uniPort's default reconstruction loss is a binary cross-entropy.
    ``up.Run(adatas, use_rep, mode='d')`` with defaults: the reference is the last data set,
    here the anchor (RNA), 16-d latent, unbalanced OT reg=0.1, reg_m=1.0. The joint
    embedding is each data set's ``obsm['latent']``.
    """
    import tempfile

    import anndata as ad
    import numpy as np
    import pandas as pd
    import scanpy as sc
    import torch
    import uniport as up
    from sklearn.preprocessing import MinMaxScaler

    def obs(name: str, n: int, domain: int) -> pd.DataFrame:
        frame = pd.DataFrame(index=[f"{name}_{i}" for i in range(n)])
        frame["domain_id"] = pd.Categorical([domain] * n)
        frame["source"] = name
        return frame

    # float64: with float32 values MinMaxScaler can return 1.0000001, which uniPort's BCE
    # reconstruction loss rejects ("target should be between 0 and 1")
    if "domains" in inp:
        feats = domain_features(inp)
        order = list(feats)[::-1]  # the anchor last: uniPort's reference
        adatas = [ad.AnnData(np.clip(MinMaxScaler().fit_transform(feats[d]), 0.0, 1.0), obs=obs(d, len(feats[d]), i))
                  for i, d in enumerate(order)]
        use_rep = ["X"] * len(adatas)
        hyper: dict[str, Any] = {"inputs": "given features, min-max scaled per domain"}
    else:
        rna_counts = load_counts(inp, "rna_counts").astype(np.float64)
        atac_counts = load_counts(inp, "atac_counts").astype(np.float64)
        atac = ad.AnnData(atac_counts, obs=obs("atac", atac_counts.shape[0], 0))
        rna = ad.AnnData(rna_counts, obs=obs("rna", rna_counts.shape[0], 1))
        atac.X[atac.X > 1] = 1
        sc.pp.normalize_total(atac)
        up.TFIDF_LSI(atac)
        atac.obsm["X_lsi"] = MinMaxScaler().fit_transform(atac.obsm["X_lsi"])
        sc.pp.normalize_total(rna)
        sc.pp.log1p(rna)
        n_hvg = min(2000, rna.n_vars)
        sc.pp.highly_variable_genes(rna, n_top_genes=n_hvg, subset=True)
        up.batch_scale(rna)
        order, adatas, use_rep = ["atac", "rna"], [atac, rna], ["X_lsi", "X"]
        hyper = {"inputs": "raw counts", "n_hvg": n_hvg, "lsi_components": 49}

    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="uniport_") as outdir:
        up.Run(adatas=adatas, use_rep=use_rep, mode="d", outdir=outdir,
               iteration=args.uniport_iterations, seed=args.seed, verbose=False)
    z = {d: np.asarray(a.obsm["latent"], dtype=np.float64) for d, a in zip(order, adatas, strict=True)}
    hyper.update({"mode": "d", "use_rep": use_rep, "iteration": args.uniport_iterations, "reg": 0.1, "reg_m": 1.0,
                  "seed": args.seed})
    return z, {"hyperparameters": hyper}


def _gw_loss(c1: Any, c2: Any, coupling: Any) -> float:
    """Gromov-Wasserstein distortion of ``coupling`` (square loss, POT), per unit of mass squared."""
    import numpy as np
    from ot.gromov import gwloss, init_matrix

    t = np.asarray(coupling, dtype=np.float64)
    mass = t.sum()
    t = t / mass
    const_c, h1, h2 = init_matrix(np.asarray(c1, np.float64), np.asarray(c2, np.float64), t.sum(1), t.sum(0), "square_loss")
    return float(gwloss(const_c, h1, h2, t))


def budgeted_grid(solve, ks, epsilons, budget: float, errors: tuple = ()):
    """SCOT's self-tuning rule on a time budget: ``solve(k, eps) -> (embedding, gw)`` over
    ``epsilons`` x ``ks`` (in that order), the lowest GW distance kept.

    A solve raising one of ``errors`` counts as failed (GW = inf). Once ``budget`` seconds
    have passed (after at least one solve), the remaining settings are listed, not run.
    Returns ``(best, tried, skipped)``: ``best`` = ``(gw, k, eps, embedding)`` or None.
    """
    start, best, tried, left = time.perf_counter(), None, [], []
    for eps in epsilons:
        for k in ks:
            if tried and time.perf_counter() - start >= budget:
                left.append({"k": k, "epsilon": eps})
                continue
            t0 = time.perf_counter()
            try:
                z, gw = solve(k, eps)
            except errors:
                z, gw = None, float("inf")
            tried.append({"k": k, "epsilon": eps, "gw_dist": gw, "seconds": time.perf_counter() - t0})
            if z is not None and (best is None or gw < best[0]):
                best = (gw, k, eps, z)
    return best, tried, left


def _scotplus_solver(args: argparse.Namespace) -> Any:
    """SCOT+'s ``SinkhornSolver`` at its defaults, but ``--nits-uot`` Sinkhorn iterations when given."""
    from scotplus.solvers import SinkhornSolver

    return SinkhornSolver() if args.nits_uot is None else SinkhornSolver(nits_uot=int(args.nits_uot))


def _scotplus_pair(x: Any, y: Any, k: int, eps: float, solver: Any) -> tuple[Any, Any, float]:
    """SCOT+ balanced GW of ``y`` onto ``x`` (both row-normalised); projection and GW distortion."""
    import numpy as np
    import torch
    from scotplus.utils.alignment import compute_graph_distances, get_barycentre

    dx = compute_graph_distances(x, n_neighbors=k, mode="connectivity", metric="correlation")
    dy = compute_graph_distances(y, n_neighbors=k, mode="connectivity", metric="correlation")
    pi_samp, _, _ = solver.gw(torch.from_numpy(dx), torch.from_numpy(dy), eps=eps, verbose=False)
    pi_samp = pi_samp.detach()
    if not torch.isfinite(pi_samp).all() or (pi_samp.sum(0) <= 0).any() or (pi_samp.sum(1) <= 0).any():
        raise RuntimeError(f"SCOT+ GW coupling has NaN or empty rows/columns for k={k}, eps={eps:g}")
    z_y = get_barycentre(x, pi_samp.T).numpy()  # y cells projected into x's space
    return np.asarray(z_y, dtype=np.float64), pi_samp.numpy(), _gw_loss(dx, dy, pi_samp.numpy())


def run_scotplus(inp: Any, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """SCOT+ (``scotplus``) balanced GW as in its GW/UGW tutorial; each domain onto the anchor.

    Tutorial steps: L2-normalise each cell (``sklearn.preprocessing.normalize``);
    ``compute_graph_distances(data, n_neighbors=k, mode='connectivity', metric='correlation')``
    per domain; ``SinkhornSolver().gw(Dx, Dy, eps=eps)``; ``get_barycentre(Xt, pi)`` to
    project the other domain onto the anchor.
    """
    import scotplus
    from sklearn.preprocessing import normalize

    k = args.k if args.k is not None else 50
    eps = args.epsilon if args.epsilon is not None else 1e-3
    feats = {d: normalize(x) for d, x in domain_features(inp).items()}
    anchor, *others = feats
    z, hyper = {anchor: feats[anchor]}, {}
    solver = _scotplus_solver(args)
    solver_cfg = {"nits_bcd": solver.nits_bcd, "tol_bcd": solver.tol_bcd, "nits_uot": solver.nits_uot, "tol_uot": solver.tol_uot}
    for d in others:
        z[d], _, gw = _scotplus_pair(feats[anchor], feats[d], k, eps, solver)
        hyper[f"{d}->{anchor}"] = {"k": int(k), "epsilon": float(eps), **solver_cfg, "gw_dist": gw}
    return z, {"hyperparameters": _per_pair(hyper), "package_version": getattr(scotplus, "__version__", None)}


def run_scotplus_tuned(inp: Any, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """SCOT+ self-tuned: per pair, the lowest GW distortion over ``k`` x ``epsilon`` (time-bounded)."""
    from sklearn.preprocessing import normalize

    feats = {d: normalize(x) for d, x in domain_features(inp).items()}
    anchor, *others = feats
    z, hyper, trials, skipped = {anchor: feats[anchor]}, {}, {}, {}
    budget = args.time_budget / len(others)
    solver = _scotplus_solver(args)
    for d in others:

        def solve(k, eps, d=d):
            zy, _, gw = _scotplus_pair(feats[anchor], feats[d], k, eps, solver)
            return zy, gw

        best, tried, left = budgeted_grid(solve, SCOTPLUS_TUNE_KS, SCOTPLUS_TUNE_EPSILONS, budget, (RuntimeError,))
        if best is None:
            raise RuntimeError(f"no SCOT+ solve converged for {d}; tried {[(t['k'], t['epsilon']) for t in tried]}")
        gw, k, eps, z[d] = best
        pair = f"{d}->{anchor}"
        hyper[pair] = {"k": int(k), "epsilon": float(eps), "nits_uot": solver.nits_uot, "gw_dist": gw}
        trials[pair], skipped[pair] = tried, left
    grid = {"ks": list(SCOTPLUS_TUNE_KS), "epsilons": list(SCOTPLUS_TUNE_EPSILONS), "time_budget_s": args.time_budget}
    return z, {"hyperparameters": _per_pair(hyper), "grid": grid, "trials": _per_pair(trials), "skipped": _per_pair(skipped)}


def _pamona_once(feats: dict[str, Any], *, k: int, eps: float, max_iter: int) -> tuple[dict[str, Any], float]:
    """One Pamona run (defaults but ``k``/``eps``/``max_iter``); embedding and summed GW distortion."""
    import contextlib
    import io

    import numpy as np
    from pamona import Pamona
    from pamona.utils import zscore_standardize

    anchor, *others = feats
    order = [*others, anchor]  # Pamona's reference (all others are matched to it) is the last set
    data = [zscore_standardize(feats[d]) for d in order]  # as in Pamona's PBMC example
    output_dim = min(30, *(x.shape[0] - 1 for x in data))
    pa = Pamona.Pamona(n_neighbors=k, epsilon=eps, output_dim=output_dim, max_iter=max_iter, verbose=False)
    with contextlib.redirect_stdout(io.StringIO()):
        integrated, couplings = pa.run_Pamona(data)
    z = {d: np.real(np.asarray(e)) for d, e in zip(order, integrated, strict=True)}
    gw = 0.0
    for i, _ in enumerate(others):
        t = np.asarray(pa.Gc[i], dtype=np.float64)
        if not np.all(np.isfinite(t)) or t.sum() <= 0:
            raise RuntimeError(f"Pamona coupling is NaN or empty for k={k}, eps={eps:g}")
        gw += _gw_loss(pa.dist[i], pa.dist[-1], t)
    for d, e in z.items():
        if not np.all(np.isfinite(e)):
            raise RuntimeError(f"Pamona embedding of {d} is not finite for k={k}, eps={eps:g}")
    return z, gw


def run_pamona(inp: Any, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pamona (``pamona`` 0.1.0, partial GW + manifold alignment) at its defaults.

    ``Pamona(n_neighbors=10, epsilon=1e-3, Lambda=1, n_shared=None)`` (n_shared: the smaller
    data set's size), ``zscore_standardize`` on each data set as in its PBMC example, the
    anchor domain as the reference (last) data set, 30 output dimensions; ``--max-iter``
    caps its outer iterations (its default 1000).
    """
    import pamona  # noqa: F401  (fail early and clearly when absent)

    k = args.k if args.k is not None else 10
    eps = args.epsilon if args.epsilon is not None else 1e-3
    z, gw = _pamona_once(domain_features(inp), k=k, eps=eps, max_iter=args.max_iter)
    return z, {"hyperparameters": {"k": int(k), "epsilon": float(eps), "max_iter": args.max_iter, "gw_dist": gw}}


def run_pamona_tuned(inp: Any, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pamona self-tuned: the lowest (summed) GW distortion over ``k`` x ``epsilon``, time-bounded."""
    import numpy as np

    feats = domain_features(inp)
    best, tried, left = budgeted_grid(
        lambda k, eps: _pamona_once(feats, k=k, eps=eps, max_iter=args.max_iter),
        PAMONA_TUNE_KS, PAMONA_TUNE_EPSILONS, args.time_budget, (RuntimeError, ValueError, np.linalg.LinAlgError),
    )
    if best is None:
        raise RuntimeError(f"no Pamona run succeeded; tried {[(t['k'], t['epsilon']) for t in tried]}")
    gw, k, eps, z = best
    grid = {"ks": list(PAMONA_TUNE_KS), "epsilons": list(PAMONA_TUNE_EPSILONS), "time_budget_s": args.time_budget}
    hyper = {"k": int(k), "epsilon": float(eps), "max_iter": args.max_iter, "gw_dist": gw}
    return z, {"hyperparameters": hyper, "grid": grid, "trials": tried, "skipped": left}


RUNNERS = {
    "scot_default": (run_scot_default, "cellbridge benchmarks/_scot.py (POT)", "pot"),
    "scot_tuned": (run_scot_tuned, "cellbridge benchmarks/_scot.py (POT)", "pot"),
    "uniport": (run_uniport, "uniport", "uniport"),
    "scotplus": (run_scotplus, "scotplus", "scotplus"),
    "scotplus_tuned": (run_scotplus_tuned, "scotplus", "scotplus"),
    "pamona": (run_pamona, "pamona", "pamona"),
    "pamona_tuned": (run_pamona_tuned, "pamona", "pamona"),
}
SPACES = {
    "scot_default": "anchor's (RNA's) features, L2-normalised rows; other domains = barycentric projection",
    "scot_tuned": "anchor's (RNA's) features, L2-normalised rows; other domains = barycentric projection",
    "uniport": "uniPort 16-d VAE latent (obsm['latent']) of every domain",
    "scotplus": "anchor's (RNA's) features, L2-normalised rows; other domains = barycentric projection",
    "scotplus_tuned": "anchor's features, L2-normalised rows; other domains = barycentric projection",
    "pamona": "Pamona's joint manifold-alignment embedding (30-d)",
    "pamona_tuned": "Pamona's joint manifold-alignment embedding (30-d)",
}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def run_method(method: str, inputs: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``method`` and write ``out``; never raises for a method failure (see ``error``)."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if method in ("uniport", "scotplus", "scotplus_tuned"):  # torch users; the SCOT methods do not import torch
        import torch

        torch.set_num_threads(args.threads)

    runner, package, dist = RUNNERS[method]
    info: dict[str, Any] = {
        "method": method, "package": package, "package_version": _version(dist),
        "threads": args.threads, "space": SPACES[method], "error": None,
    }
    store: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        with np.load(inputs, allow_pickle=False) as npz:
            inp = {key: npz[key] for key in npz.files}
        t0 = time.perf_counter()
        z, extra = runner(inp, args)
        info["wall_s"] = time.perf_counter() - t0
        feats = domain_features(inp)
        z = {d: np.asarray(z[d], dtype=np.float64) for d in feats}
        dims = {v.shape[1] for v in z.values()}
        if any(z[d].shape[0] != feats[d].shape[0] for d in feats) or len(dims) != 1:
            raise RuntimeError(f"bad output shapes {({d: v.shape for d, v in z.items()})}")
        if not all(np.isfinite(v).all() for v in z.values()):
            raise RuntimeError("non-finite values in the embedding")
        info.update({k: v for k, v in extra.items() if v is not None})
        store.update({f"z_{d}": v for d, v in z.items()})
        error = ""
    except BaseException as exc:  # noqa: BLE001 - record everything, incl. SystemExit from a peer
        if isinstance(exc, KeyboardInterrupt):
            raise
        info["wall_s"] = time.perf_counter() - t0
        error = f"{type(exc).__name__}: {exc}"
        info["error"] = error
        info["traceback"] = traceback.format_exc(limit=20)
    info["peak_rss_mb"] = _peak_rss_mb()
    store["info"] = np.asarray(json.dumps(info, default=_json_default))
    store["error"] = np.asarray(error)
    np.savez(out, **store)
    return info


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


# ----------------------------------------------------------------------------- scoring
def score(result: Path, inputs: Path, *, k: int = 5) -> dict[str, Any]:
    """FOSCTTM (both directions, mean) and kNN label transfer (k=5, both directions, mean)."""
    import numpy as np

    from cellbridge.metrics import foscttm, knn_label_transfer

    res = np.load(result, allow_pickle=False)
    info = json.loads(str(res["info"]))
    out: dict[str, Any] = {"method": info.get("method"), "wall_s": info.get("wall_s"),
                           "peak_rss_mb": info.get("peak_rss_mb"), "error": str(res["error"]) or None}
    if out["error"]:
        return out
    inp = np.load(inputs, allow_pickle=False)
    ids_rna, ids_atac = inp["cell_ids_rna"], inp["cell_ids_atac"]
    pos = {c: i for i, c in enumerate(ids_atac)}
    order = np.asarray([pos[c] for c in ids_rna])  # atac row of each rna row's partner
    z_rna, z_atac = res["z_rna"], res["z_atac"][order]
    out["foscttm"] = foscttm(z_rna, z_atac)
    if "labels_rna" in inp.files:
        la, lb = inp["labels_rna"], inp["labels_atac"]
        a = knn_label_transfer(res["z_rna"], la, res["z_atac"], lb, k=k)["accuracy"]
        b = knn_label_transfer(res["z_atac"], lb, res["z_rna"], la, k=k)["accuracy"]
        out["label_transfer"] = (a + b) / 2.0
        out["label_transfer_rna_to_atac"], out["label_transfer_atac_to_rna"] = a, b
    out["hyperparameters"] = info.get("hyperparameters")
    return out


# ----------------------------------------------------------------------------- CLI
def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--method", choices=METHODS, help="peer to run on --inputs, writing --out")
    mode.add_argument("--make-inputs", type=Path, metavar="DATA_DIR", help="build --inputs from the sci-CAR folder")
    mode.add_argument("--score", type=Path, metavar="RESULT", help="score a result.npz against --inputs (main venv)")
    p.add_argument("--inputs", type=Path, required=True, help="inputs.npz (read, or written by --make-inputs)")
    p.add_argument("--out", type=Path, help="result.npz to write (with --method)")
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=None, help="scot_default/scotplus/pamona: neighbours (default SCOT's / 50 / 10)")
    p.add_argument("--epsilon", type=float, default=None, help="scot_default/scotplus/pamona: entropy (default 1e-3)")
    p.add_argument("--max-iter", type=int, default=1000, help="scot_*, pamona*: outer GW iterations (their default 1000)")
    p.add_argument("--ks", type=_ints, default=list(DEFAULT_TUNE_KS), help="scot_tuned: k grid, comma separated")
    p.add_argument("--epsilons", type=_floats, default=list(DEFAULT_TUNE_EPSILONS), help="scot_tuned: epsilon grid")
    p.add_argument("--time-budget", type=float, default=DEFAULT_TIME_BUDGET_S, help="*_tuned: seconds before no new solve starts")
    p.add_argument("--nits-uot", type=int, default=None, help="scotplus*: Sinkhorn iterations per OT problem (default its 100000)")
    p.add_argument("--uniport-iterations", type=int, default=30000, help="uniport: max training iterations (its default)")
    args = p.parse_args(argv)
    if args.method and args.out is None:
        p.error("--method needs --out")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _limit_threads(args.threads)
    if args.make_inputs is not None:
        print(json.dumps(make_inputs(args.make_inputs, args.inputs, seed=args.seed)))
        return 0
    if args.score is not None:
        print(json.dumps(score(args.score, args.inputs), default=_json_default))
        return 0
    info = run_method(args.method, args.inputs, args.out, args)
    summary = {k: info.get(k) for k in ("method", "wall_s", "peak_rss_mb", "hyperparameters", "error")}
    print(json.dumps(summary, default=_json_default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
