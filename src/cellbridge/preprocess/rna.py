"""scRNA-seq preprocessing: QC, normalisation, highly variable genes.

:func:`prepare_rna` turns raw UMI counts into the prepared RNA domain of ``docs/design.md``:

1. QC metrics of every input cell (:func:`scanpy.pp.calculate_qc_metrics`), including the
   mitochondrial fraction when mitochondrial genes are recognisable by name;
2. cells with fewer than ``min_genes`` detected genes or more than ``max_pct_mito`` percent
   mitochondrial counts are removed, then genes detected in fewer than ``min_cells`` cells;
3. ``layers["counts"]`` keeps the integer counts, ``obs["total_counts"]`` the library size used
   for normalisation, so that ``X == log1p(counts / total_counts * target_sum)`` exactly (the
   model relies on this to map predicted counts back into ``X``'s space);
4. ``X`` = ``log1p`` of counts scaled to ``target_sum`` per cell, restricted to the
   ``n_top_genes`` highly variable genes, as float32.

The per-cell QC table of all input cells (kept and removed) is stored in
``uns["cellbridge"]["qc"]``; :func:`cellbridge.plotting.plot_qc` draws it.
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._io import InputError, logger
from ..contract import finalize_domain
from .counts import attach_labels, integer_counts, require_counts

__all__ = ["HVG_FLAVORS", "prepare_rna"]

#: Highly-variable-gene methods; the ``seurat_v3`` ones work on counts and need scikit-misc.
HVG_FLAVORS = ("seurat_v3", "seurat_v3_paper", "seurat", "cell_ranger")
_COUNT_BASED_FLAVORS = ("seurat_v3", "seurat_v3_paper")
#: fewest genes highly-variable-gene selection is run on: seurat_v3's loess fit fails on
#: fewer (a segfault at 3 genes, "svddc failed in l2fit" or near-singularities up to ~15)
MIN_GENES_FOR_HVG = 20


def _resolve_hvg_flavor(flavor: str) -> str:
    """The flavour that can actually run: count-based ones need ``skmisc`` (loess)."""
    if flavor not in HVG_FLAVORS:
        raise ValueError(f"hvg_flavor must be one of {', '.join(HVG_FLAVORS)}, not {flavor!r}")
    if flavor in _COUNT_BASED_FLAVORS and importlib.util.find_spec("skmisc") is None:
        logger.warning(
            "hvg_flavor=%r needs scikit-misc, which is not installed; using 'seurat' on the "
            "log-normalised data instead (pip install scikit-misc to get %r)",
            flavor,
            flavor,
        )
        return "seurat"
    return flavor


def _mito_mask(var_names: pd.Index, prefixes: Sequence[str]) -> np.ndarray:
    names = var_names.astype(str)
    return np.asarray(names.str.startswith(tuple(prefixes)), dtype=bool)


def _qc_table(adata: ad.AnnData, *, mito: np.ndarray) -> pd.DataFrame:
    """Per-cell QC metrics; ``pct_counts_mt`` only when mitochondrial genes were found."""
    import scanpy as sc

    tmp = ad.AnnData(X=adata.X, obs=pd.DataFrame(index=adata.obs_names), var=pd.DataFrame(index=adata.var_names))
    qc_vars: list[str] = []
    if mito.any():
        tmp.var["mt"] = mito
        qc_vars = ["mt"]
    obs_metrics, _ = sc.pp.calculate_qc_metrics(tmp, qc_vars=qc_vars, percent_top=None, log1p=False, inplace=False)
    columns = ["n_genes_by_counts", "total_counts"] + (["pct_counts_mt"] if qc_vars else [])
    return obs_metrics[columns].copy()


def _with_float_counts(adata: ad.AnnData) -> ad.AnnData:
    """A copy of ``adata`` whose ``X`` is float32 (CSR when sparse), the input untouched.

    Same slots as ``adata.copy()``, but the integer ``X`` is never copied as such: one
    copy of the matrix less at the peak.
    """
    x = adata.X
    if sp.issparse(x):
        x = x.tocsr()
        float_x = sp.csr_matrix((x.data.astype(np.float32), x.indices.copy(), x.indptr.copy()), shape=x.shape)
    else:
        float_x = np.array(x, dtype=np.float32)
    return ad.AnnData(
        X=float_x,
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        uns=copy.deepcopy(dict(adata.uns)),
        obsm={k: v.copy() for k, v in adata.obsm.items()},
        varm={k: v.copy() for k, v in adata.varm.items()},
        layers={k: v.copy() for k, v in adata.layers.items()},
    )


def _subset(adata: ad.AnnData, rows, cols=slice(None)) -> ad.AnnData:
    """``adata[rows, cols].copy()``, or ``adata`` itself when the masks keep everything.

    At a million cells each copy of the matrices is gigabytes, and QC usually keeps
    every gene (and most often every cell) of clean data.
    """
    keeps_all = lambda m: isinstance(m, slice) or bool(np.all(m))  # noqa: E731
    if keeps_all(rows) and keeps_all(cols):
        return adata
    return adata[rows, cols].copy()


def _cells_per_gene(x) -> np.ndarray:
    """Cells with a count above zero, per gene (sparse: no boolean copy of the matrix)."""
    if sp.issparse(x):
        x = x.tocsr()
        return np.bincount(x.indices[x.data > 0], minlength=x.shape[1])
    return np.asarray((x > 0).sum(axis=0)).ravel()


def prepare_rna(
    adata: ad.AnnData,
    *,
    domain: str = "rna",
    label_key: str = "cell_type",
    labels: str | os.PathLike | None = None,
    min_genes: int = 200,
    min_cells: int = 3,
    max_pct_mito: float | None = 20.0,
    mito_prefix: str | Sequence[str] = ("MT-", "mt-"),
    n_top_genes: int | None = 2000,
    hvg_flavor: str = "seurat_v3",
    target_sum: float = 1e4,
    min_cells_after_qc: int = 50,
    source: str | os.PathLike | None = None,
) -> ad.AnnData:
    """Prepare scRNA-seq counts as a cellbridge RNA domain.

    Parameters
    ----------
    adata
        Cells x genes raw UMI counts in ``X`` (e.g. from :func:`~cellbridge.preprocess.counts.read_counts`).
        Not modified. ``obs`` columns (labels, ``split``) are carried over for kept cells.
    domain
        Domain name written to ``obs["domain"]``.
    label_key
        Column that holds (or receives) cell labels.
    labels
        Optional label source, see :func:`~cellbridge.preprocess.counts.attach_labels`.
    min_genes
        Keep cells with at least this many detected genes.
    min_cells
        Keep genes detected in at least this many of the kept cells.
    max_pct_mito
        Remove cells with a larger percentage of counts in mitochondrial genes; ``None`` turns
        the filter off. Skipped (with a log message) when no gene name starts with
        ``mito_prefix``.
    mito_prefix
        Gene-name prefix(es) of mitochondrial genes (human ``MT-``, mouse ``mt-``).
    n_top_genes
        Number of highly variable genes kept; ``None`` (or more than there are genes) keeps
        every gene, still annotated.
    hvg_flavor
        :func:`scanpy.pp.highly_variable_genes` flavour: ``"seurat_v3"``/``"seurat_v3_paper"``
        (on counts; need scikit-misc, else ``"seurat"`` is used and a warning logged),
        ``"seurat"`` or ``"cell_ranger"`` (on log data). The flavour used is recorded in
        ``uns["cellbridge"]["params"]["hvg_flavor_used"]``.
    target_sum
        Counts per cell after normalisation, before ``log1p``.
    min_cells_after_qc
        Fewest cells that may remain; fewer is an error.
    source
        Input path, recorded and named in errors.

    Returns
    -------
    A new AnnData following the RNA contract: ``X`` float32 log1p-normalised HVG expression
    (CSR when the input was sparse), ``layers["counts"]`` integer counts of the same genes,
    ``obs`` with ``total_counts``, ``n_genes_by_counts``, ``pct_counts_mt`` (when available),
    ``domain`` and labels; ``var`` with ``highly_variable``, ``means``, ``dispersions`` (or
    ``variances`` for the seurat_v3 flavours); ``uns["cellbridge"]`` with ``params`` and ``qc``
    (QC metrics of every input cell and a ``kept`` flag).

    Raises
    ------
    InputError
        When the input is not raw counts (see :func:`~cellbridge.preprocess.counts.require_counts`)
        or fewer than ``min_cells_after_qc`` cells pass QC.
    """
    import scanpy as sc

    require_counts(adata, source, modality="rna")
    flavor_used = _resolve_hvg_flavor(hvg_flavor)
    if isinstance(mito_prefix, str):  # a bare "MT-" would otherwise be read as ("M", "T", "-")
        mito_prefix = (mito_prefix,)
    # float counts for the scanpy steps (the integer copy goes to layers["counts"] later),
    # in a new AnnData: the input stays as it was, and when the caller keeps no reference
    # to it its matrix is freed here rather than held through every step (1M cells)
    adata = _with_float_counts(adata)
    gc.collect()  # an AnnData holds reference cycles: the input goes only when collected
    attach_labels(adata, labels, label_key=label_key, source=source)

    mito = _mito_mask(adata.var_names, mito_prefix)
    if mito.any():
        logger.info("%s: %d mitochondrial genes recognised (prefixes %s)", source, int(mito.sum()), list(mito_prefix))
    else:
        logger.info("%s: no gene name starts with %s; mitochondrial QC skipped", source, list(mito_prefix))
    qc = _qc_table(adata, mito=mito)
    keep = qc["n_genes_by_counts"].to_numpy() >= min_genes
    mito_filtered = max_pct_mito is not None and "pct_counts_mt" in qc
    if mito_filtered:
        keep &= qc["pct_counts_mt"].to_numpy() <= max_pct_mito
    adata = _subset(adata, keep)
    gc.collect()  # the copy before the cell filter
    gene_ok = _cells_per_gene(adata.X) >= min_cells
    adata = _subset(adata, slice(None), gene_ok)
    # a cell whose genes were all dropped has no library size to normalise by
    nonempty = np.asarray(adata.X.sum(axis=1)).ravel() > 0
    adata = _subset(adata, nonempty)
    gc.collect()  # the copies before the gene and empty-cell filters
    keep[np.flatnonzero(keep)[~nonempty]] = False
    qc["kept"] = keep

    if adata.n_obs < min_cells_after_qc:
        raise InputError(
            source,
            f"only {adata.n_obs} of {len(qc)} cells pass RNA QC (min_genes={min_genes}, "
            f"max_pct_mito={max_pct_mito if mito_filtered else 'not applied'}, min_cells={min_cells}); "
            f"at least min_cells_after_qc={min_cells_after_qc} are needed - relax the thresholds "
            "or check that the file holds raw counts of cells, not genes (transpose?)",
        )
    logger.info("%s: %d of %d cells and %d genes pass QC", source, adata.n_obs, len(qc), adata.n_vars)

    adata.layers["counts"] = integer_counts(adata.X)
    final_qc = _qc_table(adata, mito=_mito_mask(adata.var_names, mito_prefix))
    for column in final_qc.columns:
        adata.obs[column] = final_qc[column].to_numpy()

    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    adata.uns.pop("log1p", None)  # scanpy's marker; the base is recorded in our params

    if adata.n_vars < MIN_GENES_FOR_HVG:
        raise InputError(
            source,
            f"only {adata.n_vars} gene(s) are detected in at least min_cells={min_cells} of the "
            f"{adata.n_obs} cells passing QC; at least {MIN_GENES_FOR_HVG} are needed to select highly "
            "variable genes - lower min_cells or check that the file holds genes as columns (transpose?)",
        )
    n_hvg = adata.n_vars if n_top_genes is None else min(n_top_genes, adata.n_vars)
    hvg_kwargs = {"layer": "counts"} if flavor_used in _COUNT_BASED_FLAVORS else {}
    try:
        sc.pp.highly_variable_genes(adata, flavor=flavor_used, n_top_genes=n_hvg, subset=False, **hvg_kwargs)
    except ValueError as err:  # the loess of the seurat_v3 flavours on degenerate genes
        raise InputError(
            source,
            f"highly variable gene selection ({flavor_used}) failed on {adata.n_vars} genes x {adata.n_obs} "
            f"cells: {err}; too few or too uniform genes pass QC - lower min_cells or check the input",
        ) from None
    adata.uns.pop("hvg", None)
    adata = _subset(adata, slice(None), adata.var["highly_variable"].to_numpy())
    adata.X = adata.X.astype(np.float32, copy=False) if sp.issparse(adata.X) else np.asarray(adata.X, dtype=np.float32)

    params = {
        "label_key": label_key,
        "labels": labels,
        "min_genes": min_genes,
        "min_cells": min_cells,
        "max_pct_mito": max_pct_mito,
        "mito_prefix": list(mito_prefix),
        "mito_filter_applied": bool(mito_filtered),
        "n_top_genes": n_top_genes,
        "hvg_flavor": hvg_flavor,
        "hvg_flavor_used": flavor_used,
        "target_sum": float(target_sum),
        "log_base": None,  # natural log, as scanpy's log1p
        "min_cells_after_qc": min_cells_after_qc,
    }
    return finalize_domain(adata, domain=domain, modality="rna", label_key=label_key, params=params, source=source, qc=qc)
