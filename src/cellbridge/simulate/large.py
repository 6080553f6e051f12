"""The simulator at scale: counts built chunk by chunk, nuclei written as ready crops.

:func:`~cellbridge.simulate.simulate_demo` builds dense ``cells x genes`` arrays and
renders whole microscopy fields that the workflow then segments: right for a few
thousand cells, out of reach at a million (16 GB of means alone, hours of rendering).
:func:`simulate_large` drives the same simulator functions in pieces:

* **RNA** -- :func:`rna_counts` follows :func:`~cellbridge.simulate.simulate_rna` in
  chunks of cells (one gene-program table for all chunks; per chunk the expression
  proportions and negative-binomial counts) and stacks the chunks as int32 CSR, so the
  dense matrix never exists as a whole.
* **images** -- :func:`pooled_crops` renders nuclei with
  :func:`~cellbridge.simulate.render_nucleus` (blurred by the simulator's point-spread
  width, cut to one fixed window, resized, intensity-normalised). Rendering costs about a
  millisecond per nucleus, so at most ``pool_size`` nuclei are rendered; every further
  cell gets the rendered nucleus nearest to its own morphology traits
  (:func:`~cellbridge.simulate.nucleus_traits`, standardised), randomly rotated/flipped,
  with fresh per-pixel intensity noise. Crops follow each cell's latent state; they are
  not all distinct renders. They are written as ready crops (``obsm["image"]``), the
  image input the workflow takes from users whose segmentation ran elsewhere.

The data differ from the demo's (other random streams, no segmentation step, no ATAC);
``benchmarks/scaling.py`` builds its prepared domains from the same functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._io import logger, write_h5ad, write_table
from .imaging import nucleus_traits, render_nucleus
from .rna import _library_sizes, gene_programs, min_genes, rna_expression_proportions, sample_negative_binomial
from .state import simulate_states

__all__ = ["PooledCrops", "pooled_crops", "rna_counts", "simulate_large", "stack_rows"]

#: Standard deviation (px) of the simulator's point-spread function (``imaging._PSF_SIGMA``).
PSF_SIGMA = 1.0
#: Traits (columns of ``nucleus_traits``) that decide which rendered nucleus a cell reuses.
MATCH_TRAITS = ("radius", "aspect", "brightness", "texture_contrast", "texture_scale", "radial_bias")
#: Relative per-pixel intensity noise given to a reused nucleus so that no two crops are equal.
REUSE_NOISE = 0.05
#: The simulator's RNA defaults (``simulate_rna``).
MEDIAN_LIBRARY_SIZE = 4500.0
LIBRARY_SIZE_SDLOG = 0.45
#: Side (px) of the fixed field window a nucleus is cut from before resizing.
WINDOW = 48


def rna_counts(
    states: pd.DataFrame, *, n_genes: int = 2000, chunk_size: int = 10_000, seed=0
) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """Simulated UMI counts as int32 CSR, generated ``chunk_size`` cells at a time.

    Parameters
    ----------
    states
        Output of :func:`~cellbridge.simulate.simulate_states`; rows in the order wanted.
    n_genes
        Genes, including the 13 mitochondrial ones.
    chunk_size
        Cells per dense chunk (a chunk holds a few ``chunk_size x n_genes`` float64 arrays).
    seed
        Seed (or generator) of the gene programs and of the counts.

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
    return stack_rows(chunks), genes


def stack_rows(chunks: list[sp.csr_matrix]) -> sp.csr_matrix:
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
    traits: pd.DataFrame, *, crop_size: int = 16, window: int = WINDOW, seed: int = 0
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
    from scipy import ndimage

    # the imaging preprocessing's own resize and normalisation, so crops look as it makes them
    from ..preprocess.crops import _normalise, _resize_stack

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
    from scipy.spatial import cKDTree

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


@dataclass
class PooledCrops:
    """Output of :func:`pooled_crops`."""

    #: ``(n_cells, crop_size, crop_size)`` float32 in ``[0, 1]``, one per cell in ``states`` order
    crops: np.ndarray
    #: the rendered nuclei (the first ``len(pool)`` cells' own)
    pool: np.ndarray
    #: per cell, the index into ``pool`` of the nucleus its crop was made from
    source: np.ndarray
    #: photo-electrons mapped to 1
    scale: float


def pooled_crops(
    states: pd.DataFrame,
    *,
    crop_size: int = 16,
    window: int = WINDOW,
    pool_size: int = 4096,
    chunk_size: int = 50_000,
    seed: int = 0,
) -> PooledCrops:
    """One nucleus crop per cell of ``states``, following its state (see the module notes).

    Parameters
    ----------
    states
        Output of :func:`~cellbridge.simulate.simulate_states`.
    crop_size, window
        Crop side and the fixed field window (px) it is cut from.
    pool_size
        At most this many nuclei are rendered (the first cells); the other cells reuse
        the nearest rendered nucleus.
    chunk_size
        Cells whose reused crops are built at once.
    seed
        Seed of traits, rendering and reuse.
    """
    rng = np.random.default_rng(seed)
    traits = nucleus_traits(states, seed=rng)
    n_rendered = min(len(states), pool_size)
    pool, scale = render_crops(traits.iloc[:n_rendered], crop_size=crop_size, window=window, seed=seed + 1)
    source = nearest_rendered(traits, n_rendered)
    crops = np.empty((len(states), crop_size, crop_size), dtype=np.float32)
    crops[:n_rendered] = pool
    for start in range(n_rendered, len(states), chunk_size):
        stop = min(start + chunk_size, len(states))
        _reuse_crops(pool, source[start:stop], crops[start:stop], rng)
    return PooledCrops(crops=crops, pool=pool, source=source, scale=float(scale))


def _profile_names(prefix: str, n: int) -> pd.Index:
    """``<prefix>_00000`` ... in file order: names that reveal no pairing across domains."""
    width = max(5, len(str(n - 1)))
    return pd.Index([f"{prefix}_{i:0{width}d}" for i in range(n)])


def simulate_large(
    out_dir: str | os.PathLike,
    *,
    n_cells: int = 100_000,
    n_genes: int = 2000,
    n_types: int = 5,
    crop_size: int = 16,
    crop_pool: int = 4096,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Path]:
    """Simulate jointly measured cells at scale; write RNA counts and ready nucleus crops, unpaired.

    Parameters
    ----------
    out_dir
        Output folder (created if needed). Every file is written atomically.
    n_cells
        Cells; every cell appears once in each domain, in its own shuffled order.
    n_genes
        Genes (including 13 ``MT-`` genes).
    n_types
        Cell types (at least 2).
    crop_size
        Side (px) of the written crops.
    crop_pool
        Most nuclei rendered; further cells reuse the nearest rendered one.
    test_fraction
        Fraction of cells held out for evaluation (the same cells in both domains).
    seed
        Random seed; the same seed gives identical files.

    Returns
    -------
    dict of str to pathlib.Path
        ``"rna"`` (``rna.h5ad``: int32 CSR counts, ``obs`` ``cell_type``/``split``),
        ``"crops"`` (``crops.h5ad``: ``obsm["image"]``, the same ``obs`` columns) and
        ``"truth"`` (``truth.tsv``, both domains identified by ``obs_name``).
    """
    import anndata as ad

    from .writer import build_truth_table

    if n_genes < min_genes(n_types):
        raise ValueError(f"n_genes must be at least {min_genes(n_types)} for {n_types} cell types")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s_state, s_rna, s_img, s_order = np.random.SeedSequence(seed).spawn(4)
    states = simulate_states(n_cells, n_types=n_types, test_fraction=test_fraction, seed=s_state)
    order_rng = np.random.default_rng(s_order)
    # each domain is generated directly in its own order: no reordering copy of the counts
    ordered = {d: states.iloc[order_rng.permutation(n_cells)] for d in ("rna", "image")}
    sequencing: dict[str, pd.Series] = {}
    paths: dict[str, Path] = {}
    obs = {}
    for domain, part in ordered.items():
        names = _profile_names(domain, n_cells)
        sequencing[domain] = pd.Series(part.index.to_numpy(), index=names, name="cell_id")
        obs[domain] = pd.DataFrame(
            {"cell_type": part["cell_type"].to_numpy(), "split": part["split"].to_numpy()}, index=names
        )

    counts, genes = rna_counts(ordered["rna"], n_genes=n_genes, seed=s_rna)
    var = pd.DataFrame({"sim_program": pd.Categorical(genes["program"])}, index=genes.index.rename(None))
    rna = ad.AnnData(X=counts, obs=obs["rna"], var=var)
    del counts
    paths["rna"] = write_h5ad(rna, out / "rna.h5ad")
    del rna
    logger.info("simulated RNA counts of %d cells x %d genes into %s", n_cells, n_genes, paths["rna"])

    img_seed = int(s_img.generate_state(1)[0])
    pooled = pooled_crops(ordered["image"], crop_size=crop_size, pool_size=crop_pool, seed=img_seed)
    crops = ad.AnnData(obs=obs["image"])
    crops.obsm["image"] = pooled.crops
    crops.uns["simulation"] = {"rendered_nuclei": len(pooled.pool), "intensity_scale": pooled.scale}
    paths["crops"] = write_h5ad(crops, out / "crops.h5ad")
    del crops, pooled

    # image rows are named like sequencing rows: ready crops carry their obs names through
    truth = build_truth_table(states, sequencing=sequencing)
    paths["truth"] = write_table(truth, out / "truth.tsv", index=False)
    logger.info(
        "simulated %d cells (%d types) into %s: %d-px crops from at most %d rendered nuclei",
        n_cells, n_types, out, crop_size, crop_pool,
    )  # fmt: skip
    return paths
