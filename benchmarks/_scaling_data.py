"""Prepared RNA and image domains from the large-data simulator, for the scaling benchmark.

:mod:`cellbridge.simulate.large` makes the raw data chunk by chunk (int32 CSR counts,
pooled nucleus renders; see its notes). This module assembles *prepared* domains (the
AnnData contract of ``docs/design.md``) from them directly, without the workflow's QC /
HVG / morphology steps, so the benchmark times training and translation only:

* **RNA** -- :func:`rna_domain` stores the int32 counts in ``layers["counts"]`` (as the
  RNA preprocessing does) and ``X = log1p(counts / total * 1e4)`` as float32 CSR, on all
  simulated genes.
* **image** -- :func:`image_domain` stores the crops in ``obsm["image"]`` and in ``X``
  the morphology features of the rendered nucleus each crop was made from.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellbridge.preprocess.morphology import crop_features
from cellbridge.simulate import simulate_states
from cellbridge.simulate.large import pooled_crops, rna_counts

TARGET_SUM = 1e4


def simulated_states(n_cells: int, *, n_types: int = 5, seed: int = 0) -> pd.DataFrame:
    """Latent states of ``n_cells`` cells (20 % held out as ``split == "test"``)."""
    return simulate_states(n_cells, n_types=n_types, test_fraction=0.2, seed=seed)


def log_normalised(
    counts: sp.csr_matrix, *, target_sum: float = TARGET_SUM, block: int = 50_000
) -> sp.csr_matrix:
    """``log1p(counts / total * target_sum)`` as float32 CSR with its own index arrays.

    Computed ``block`` rows at a time so no per-entry temporary of the whole matrix exists.
    """
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    data = np.empty(counts.nnz, dtype=np.float32)
    indptr = counts.indptr
    for start in range(0, counts.shape[0], block):
        stop = min(start + block, counts.shape[0])
        lo, hi = indptr[start], indptr[stop]
        rows = np.repeat(np.arange(start, stop), np.diff(indptr[start : stop + 1]))
        data[lo:hi] = np.log1p(counts.data[lo:hi] / totals[rows] * target_sum)
    # own copies of indices/indptr, as an X read from a prepared .h5ad would have
    return sp.csr_matrix((data, counts.indices.copy(), indptr.copy()), shape=counts.shape, copy=False)


def _obs(states: pd.DataFrame, prefix: str, domain: str) -> pd.DataFrame:
    obs = pd.DataFrame(
        {"cell_type": states["cell_type"].array, "split": states["split"].array},  # categorical, as simulated
        index=pd.Index(f"{prefix}_" + states.index.astype(str), name=None),
    )
    obs["domain"] = pd.Categorical([domain] * len(obs))
    return obs


def _uns(modality: str, domain: str, params: dict) -> dict:
    from cellbridge import __version__

    return {
        "cellbridge": {
            "modality": modality,
            "domain": domain,
            "params": params,
            "source": "simulated:benchmarks/scaling.py",
            "version": __version__,
        }
    }


def rna_domain(
    states: pd.DataFrame, *, n_genes: int = 2000, chunk_size: int = 10_000, seed: int = 0, domain: str = "rna"
) -> ad.AnnData:
    """A prepared RNA domain: log1p-normalised float32 CSR ``X``, int32 CSR ``layers["counts"]``."""
    counts, genes = rna_counts(states, n_genes=n_genes, chunk_size=chunk_size, seed=seed)
    x = log_normalised(counts)
    obs = _obs(states, "rna", domain)
    obs["total_counts"] = np.asarray(counts.sum(axis=1), dtype=np.float32).ravel()
    var = pd.DataFrame({"sim_program": pd.Categorical(genes["program"])}, index=genes.index.rename(None))
    adata = ad.AnnData(X=x, obs=obs, var=var)
    adata.layers["counts"] = counts
    params = {"target_sum": TARGET_SUM, "n_top_genes": n_genes, "qc": "none (benchmark: all simulated genes)"}
    adata.uns.update(_uns("rna", domain, params))
    return adata


def image_domain(
    states: pd.DataFrame,
    *,
    crop_size: int = 16,
    window: int = 48,
    pool_size: int = 4096,
    chunk_size: int = 50_000,
    seed: int = 0,
    domain: str = "image",
) -> ad.AnnData:
    """A prepared image domain: ``obsm["image"]`` crops following each cell's state, features in ``X``.

    Parameters
    ----------
    states
        Output of :func:`simulated_states`.
    crop_size, window
        Stored crop side and the fixed field window (px) it is cut from.
    pool_size
        At most this many nuclei are rendered (the first cells); the other cells reuse
        the nearest rendered nucleus (see the module notes).
    chunk_size
        Cells whose reused crops are built at once.
    seed
        Seed of traits, rendering and reuse.
    """
    pooled = pooled_crops(states, crop_size=crop_size, window=window, pool_size=pool_size,
                          chunk_size=chunk_size, seed=seed)
    pool, source, crops, scale = pooled.pool, pooled.source, pooled.crops, pooled.scale
    n_rendered = len(pool)
    mask_opts = {"mask_threshold": 0.02, "n_shells": 5, "glcm_levels": 16}
    pool_features = crop_features(pool, **mask_opts).replace([np.inf, -np.inf], np.nan).fillna(0.0)
    adata = ad.AnnData(
        X=pool_features.to_numpy(np.float32)[source],
        obs=_obs(states, "image", domain),
        var=pd.DataFrame(index=pd.Index(pool_features.columns, name="feature")),
    )
    adata.obs["source_file"] = "simulated"
    adata.obs["label"] = np.arange(len(states))
    adata.obsm["image"] = crops
    params = {
        "crop_size": crop_size,
        "window": "fixed",
        "window_px": window,
        "normalize": "dataset",
        "percentile": 99.5,
        "intensity_scale": scale,
        "rendered_nuclei": n_rendered,
        **mask_opts,
    }
    adata.uns.update(_uns("image", domain, params))
    return adata


def data_nbytes(adata: ad.AnnData) -> int:
    """Bytes held by an AnnData's matrices (X, layers, obsm) and its obs/var tables."""

    def size(mat) -> int:
        if sp.issparse(mat):
            return int(mat.data.nbytes + mat.indices.nbytes + mat.indptr.nbytes)
        return int(np.asarray(mat).nbytes)

    total = size(adata.X) + sum(size(m) for m in adata.layers.values()) + sum(size(m) for m in adata.obsm.values())
    total += int(adata.obs.memory_usage(deep=True).sum() + adata.obs.index.memory_usage(deep=True))
    total += int(adata.var.memory_usage(deep=True).sum() + adata.var.index.memory_usage(deep=True))
    return total
