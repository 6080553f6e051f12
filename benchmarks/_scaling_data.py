"""Prepared RNA and image domains from the demo simulator, built chunk by chunk.

The scaling benchmark needs up to a million simulated cells. The demo simulator
(:mod:`cellbridge.simulate`) builds dense ``cells x genes`` arrays and renders whole
microscopy fields, which does not fit at that size, so this module drives the same
simulator functions in pieces and assembles prepared domains (the AnnData contract of
``docs/design.md``) directly, without the workflow's QC / HVG / segmentation steps:

* **RNA** -- :func:`rna_counts` follows :func:`cellbridge.simulate.simulate_rna` in
  chunks of cells (one gene-program table for all chunks; per chunk
  :func:`~cellbridge.simulate.rna_expression_proportions` and
  :func:`~cellbridge.simulate.rna.sample_negative_binomial`) and stacks the chunks as
  CSR, so the dense matrix never exists as a whole. :func:`rna_domain` stores the
  int32 counts in ``layers["counts"]`` (as the RNA preprocessing does) and
  ``X = log1p(counts / total * 1e4)`` as float32 CSR, on all simulated genes.
* **image** -- :func:`image_crops` renders nuclei with
  :func:`~cellbridge.simulate.render_nucleus` (blurred by the simulator's point-spread
  width, cut to one fixed window, resized and intensity-normalised with the imaging
  preprocessing's own helpers). Rendering costs about a millisecond per nucleus, so at
  most ``pool_size`` nuclei are rendered; every further cell gets the rendered nucleus
  nearest to its own morphology traits (:func:`~cellbridge.simulate.nucleus_traits`,
  standardised), randomly rotated/flipped, with fresh per-pixel intensity noise. Crops
  therefore still follow each cell's latent state; they are not all distinct renders.
  ``X`` holds the morphology features of the chosen rendered nucleus.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import ndimage
from scipy.spatial import cKDTree

from cellbridge.preprocess.image import _normalise, _resize_stack
from cellbridge.preprocess.morphology import crop_features
from cellbridge.simulate import (
    gene_programs,
    nucleus_traits,
    render_nucleus,
    rna_expression_proportions,
    simulate_states,
)
from cellbridge.simulate.rna import _library_sizes, sample_negative_binomial

#: Standard deviation (px) of the simulator's point-spread function (``imaging._PSF_SIGMA``).
PSF_SIGMA = 1.0
#: Traits (columns of ``nucleus_traits``) that decide which rendered nucleus a cell reuses.
MATCH_TRAITS = ("radius", "aspect", "brightness", "texture_contrast", "texture_scale", "radial_bias")
#: Relative per-pixel intensity noise given to a reused nucleus so that no two crops are equal.
REUSE_NOISE = 0.05
#: The simulator's RNA defaults (``simulate_rna``).
MEDIAN_LIBRARY_SIZE = 4500.0
LIBRARY_SIZE_SDLOG = 0.45
TARGET_SUM = 1e4


def simulated_states(n_cells: int, *, n_types: int = 5, seed: int = 0) -> pd.DataFrame:
    """Latent states of ``n_cells`` cells (20 % held out as ``split == "test"``)."""
    return simulate_states(n_cells, n_types=n_types, test_fraction=0.2, seed=seed)


def rna_counts(
    states: pd.DataFrame, *, n_genes: int = 2000, chunk_size: int = 10_000, seed: int = 0
) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """Simulated UMI counts as int32 CSR, generated ``chunk_size`` cells at a time.

    Parameters
    ----------
    states
        Output of :func:`simulated_states`.
    n_genes
        Genes, including the 13 mitochondrial ones.
    chunk_size
        Cells per dense chunk (a chunk holds a few ``chunk_size x n_genes`` float64 arrays).
    seed
        Seed of the gene programs and of the counts.

    Returns
    -------
    counts
        ``(n_cells, n_genes)`` int32 CSR.
    genes
        The gene-program table (:func:`~cellbridge.simulate.gene_programs`).
    """
    rng = np.random.default_rng(seed)
    n_types = len(states["cell_type"].cat.categories)
    genes = gene_programs(n_genes, n_types, seed=rng)
    # as simulate_rna: broad per-type shifts of every gene except the stable ones
    stable = genes["program"].isin(["housekeeping", "mito"]).to_numpy()
    type_offsets = np.where(stable[None, :], 0.0, rng.normal(0.0, 0.2, (n_types, n_genes)))
    mito = (genes["program"] == "mito").to_numpy()
    theta = genes["theta"].to_numpy()[None, :]
    chunks = []
    for start in range(0, len(states), chunk_size):
        part = states.iloc[start : start + chunk_size]
        props = rna_expression_proportions(part, genes, type_offsets=type_offsets)
        props[:, mito] *= np.exp(rng.normal(0.0, 0.3, (len(part), 1)))
        props /= props.sum(axis=1, keepdims=True)
        mean = props * _library_sizes(part, MEDIAN_LIBRARY_SIZE, LIBRARY_SIZE_SDLOG, rng)[:, None]
        del props
        chunks.append(sp.csr_matrix(sample_negative_binomial(mean, theta, rng).astype(np.int32)))
    return _stack_rows(chunks), genes


def _stack_rows(chunks: list[sp.csr_matrix]) -> sp.csr_matrix:
    """Row-stack CSR chunks (emptying ``chunks``), one array at a time.

    ``scipy.sparse.vstack`` would hold every chunk and the result at once; here only one
    of the index and value arrays exists twice at any moment.
    """
    shape = (sum(c.shape[0] for c in chunks), chunks[0].shape[1])
    offsets = np.cumsum([0] + [c.nnz for c in chunks])
    index_dtype = np.int32 if offsets[-1] < np.iinfo(np.int32).max else np.int64
    shifted = [c.indptr[1:].astype(np.int64) + off for c, off in zip(chunks, offsets[:-1], strict=True)]
    indptr = np.concatenate([[0], *shifted])
    parts = [(c.indices, c.data) for c in chunks]
    chunks.clear()
    indices = np.concatenate([p[0].astype(index_dtype, copy=False) for p in parts])
    parts = [(None, p[1]) for p in parts]
    data = np.concatenate([p[1] for p in parts])
    del parts
    return sp.csr_matrix((data, indices, indptr.astype(index_dtype)), shape=shape, copy=False)


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


def _fixed_window(patch: np.ndarray, side: int) -> np.ndarray:
    """Centre ``patch`` (odd square) in a ``side x side`` window, cutting or padding with 0."""
    out = np.zeros((side, side), dtype=np.float64)
    p = patch.shape[0]
    take = min(p, side)
    src = (p - take) // 2
    dst = (side - take) // 2
    out[dst : dst + take, dst : dst + take] = patch[src : src + take, src : src + take]
    return out


def render_crops(
    traits: pd.DataFrame, *, crop_size: int = 16, window: int = 48, seed: int = 0
) -> tuple[np.ndarray, float]:
    """Render each row of ``traits`` as one nucleus crop, as the imaging preprocessing stores it.

    Each nucleus (:func:`~cellbridge.simulate.render_nucleus`, random sub-pixel offset) is
    blurred by the point-spread function, cut to a fixed ``window`` px window (keeping
    absolute size, as the ``fixed`` crop window does), resized to ``crop_size`` with
    anti-aliasing and scaled so the 99.5th percentile of nucleus pixels is 1.

    Returns
    -------
    crops
        ``(n, crop_size, crop_size)`` float32 in ``[0, 1]``, background 0.
    scale
        The intensity scale (photo-electrons mapped to 1).
    """
    rng = np.random.default_rng(seed)
    stack = np.empty((len(traits), window, window), dtype=np.float32)
    for i, row in enumerate(traits.to_dict("records")):
        signal, _ = render_nucleus(row, offset=tuple(rng.uniform(0.0, 1.0, 2)), seed=rng)
        stack[i] = _fixed_window(ndimage.gaussian_filter(signal, PSF_SIGMA), window)
    crops = _resize_stack(stack, crop_size)
    return _normalise(crops, normalize="dataset", percentile=99.5)


def _standardised(traits: pd.DataFrame) -> np.ndarray:
    values = traits[list(MATCH_TRAITS)].to_numpy(dtype=np.float64)
    sd = values.std(axis=0)
    return (values - values.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def nearest_rendered(traits: pd.DataFrame, n_rendered: int) -> np.ndarray:
    """Index of the rendered nucleus (one of the first ``n_rendered`` rows) closest to each row.

    Distances are Euclidean over :data:`MATCH_TRAITS` standardised over all rows; the
    rendered rows map to themselves.
    """
    z = _standardised(traits)
    _, idx = cKDTree(z[:n_rendered]).query(z, k=1)
    idx = np.asarray(idx, dtype=np.int64)
    idx[:n_rendered] = np.arange(n_rendered)
    return idx


def _reuse_crops(pool: np.ndarray, source: np.ndarray, out: np.ndarray, rng: np.random.Generator) -> None:
    """Fill ``out`` with ``pool[source]`` under a random dihedral transform and pixel noise."""
    flips = rng.integers(0, 8, len(source))
    for k in range(8):
        rows = np.flatnonzero(flips == k)
        if not len(rows):
            continue
        crops = np.rot90(pool[source[rows]], k % 4, axes=(1, 2))
        if k >= 4:
            crops = crops[:, :, ::-1]
        noise = 1.0 + REUSE_NOISE * rng.standard_normal(crops.shape, dtype=np.float32)
        out[rows] = np.clip(crops * noise, 0.0, 1.0)


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
    rng = np.random.default_rng(seed)
    traits = nucleus_traits(states, seed=rng)
    n_rendered = min(len(states), pool_size)
    pool, scale = render_crops(traits.iloc[:n_rendered], crop_size=crop_size, window=window, seed=seed + 1)
    mask_opts = {"mask_threshold": 0.02, "n_shells": 5, "glcm_levels": 16}
    pool_features = crop_features(pool, **mask_opts).replace([np.inf, -np.inf], np.nan).fillna(0.0)
    source = nearest_rendered(traits, n_rendered)
    crops = np.empty((len(states), crop_size, crop_size), dtype=np.float32)
    crops[:n_rendered] = pool
    for start in range(n_rendered, len(states), chunk_size):
        stop = min(start + chunk_size, len(states))
        _reuse_crops(pool, source[start:stop], crops[start:stop], rng)
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
