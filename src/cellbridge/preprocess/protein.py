"""Surface-protein (antibody-derived tag) preprocessing: centred log-ratio per cell.

The CLR is the one of Seurat (``NormalizeData(normalization.method = "CLR", margin = 2)``) and
muon (``muon.prot.pp.clr``). For cell ``i`` with counts ``x[i, 1..D]`` over ``D`` proteins::

    g[i]    = exp( (1 / D) * sum_j log(1 + x[i, j]) )     # geometric mean of (1 + x) over proteins
    X[i, j] = log(1 + x[i, j] / g[i])

i.e. ``log(x + g) - log(g)``: a centred log-ratio whose pseudocount scales with the cell, so
zeros map to zero and ``X`` stays non-negative.
"""

from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._io import InputError, logger
from ..contract import finalize_domain
from .counts import attach_labels, integer_counts, require_counts

__all__ = ["clr", "prepare_protein"]


def clr(counts) -> np.ndarray:
    """Per-cell centred log-ratio of a cells x proteins count matrix (formula in the module docstring).

    Parameters
    ----------
    counts
        Non-negative cells x proteins matrix, dense or sparse.

    Returns
    -------
    Dense float32 array of the same shape (protein panels are small, and CLR values are
    rarely zero where counts are non-zero).
    """
    x = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    x = x.astype(np.float64)
    log_geo_mean = np.log1p(x).mean(axis=1, keepdims=True)
    return np.log1p(x / np.exp(log_geo_mean)).astype(np.float32)


def prepare_protein(
    adata: ad.AnnData,
    *,
    domain: str = "protein",
    label_key: str = "cell_type",
    labels: str | os.PathLike | None = None,
    min_counts: int = 1,
    min_cells_after_qc: int = 50,
    source: str | os.PathLike | None = None,
) -> ad.AnnData:
    """Prepare antibody-tag counts as a cellbridge protein domain.

    Parameters
    ----------
    adata
        Cells x proteins raw counts in ``X``; not modified.
    domain
        Domain name written to ``obs["domain"]``.
    label_key
        Column that holds (or receives) cell labels.
    labels
        Optional label source, see :func:`~cellbridge.preprocess.counts.attach_labels`.
    min_counts
        Remove cells with fewer total tag counts (a cell without counts carries no
        information; its CLR is all zero).
    min_cells_after_qc
        Fewest cells that may remain; fewer is an error.
    source
        Input path, recorded and named in errors.

    Returns
    -------
    A new AnnData following the protein contract: ``X`` dense float32 CLR values,
    ``layers["counts"]`` integer counts, ``obs["total_counts"]``, ``uns["cellbridge"]`` with
    ``params`` and ``qc`` (every input cell, ``kept`` flag).

    Raises
    ------
    InputError
        When the input is not plausibly raw counts (see
        :func:`~cellbridge.preprocess.counts.require_counts`; values that are not counts
        belong in a ``features`` domain) or fewer than ``min_cells_after_qc`` cells remain.
    """
    require_counts(adata, source, modality="protein")
    adata = adata.copy()
    attach_labels(adata, labels, label_key=label_key, source=source)
    counts = integer_counts(adata.X)
    totals = np.asarray(counts.sum(axis=1)).ravel()
    qc = pd.DataFrame({"total_counts": totals, "kept": totals >= min_counts}, index=adata.obs_names.copy())
    keep = qc["kept"].to_numpy()
    adata = adata[keep].copy()
    if adata.n_obs < min_cells_after_qc:
        raise InputError(
            source,
            f"only {adata.n_obs} of {len(qc)} cells have at least min_counts={min_counts} tag counts; "
            f"at least min_cells_after_qc={min_cells_after_qc} are needed",
        )
    logger.info("%s: %d of %d cells pass protein QC", source, adata.n_obs, len(qc))
    counts = counts[keep]
    adata.layers["counts"] = counts
    adata.obs["total_counts"] = totals[keep]
    adata.X = clr(counts)
    params = {
        "label_key": label_key,
        "labels": labels,
        "min_counts": min_counts,
        "normalisation": "clr",
        "clr_formula": "log(1 + x_ij / exp(mean_j log(1 + x_ij)))",
        "min_cells_after_qc": min_cells_after_qc,
    }
    return finalize_domain(adata, domain=domain, modality="protein", label_key=label_key, params=params, source=source, qc=qc)
