"""scATAC-seq preprocessing: peak/cell filtering, binarisation, TF-IDF and LSI.

TF-IDF follows Signac's ``RunTFIDF(method = 1)``. For the cells x peaks matrix ``B`` (the
binarised counts, or the raw counts with ``binarize=False``)::

    tf[i, j]  = B[i, j] / sum_k B[i, k]          # term frequency within cell i
    idf[j]    = n_cells / sum_i B[i, j]           # inverse "document" frequency of peak j
    X[i, j]   = log(1 + tf[i, j] * idf[j] * scale_factor)

with the natural logarithm and ``scale_factor = 1e4`` by default. Zeros stay zeros, so ``X``
keeps the sparsity of ``B``.

LSI (optional) is a truncated SVD of the TF-IDF matrix. Its first component usually tracks
sequencing depth rather than biology, so it is dropped by default (``lsi_drop_first``).
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

__all__ = ["lsi", "prepare_atac", "tfidf"]


def tfidf(B, *, scale_factor: float = 1e4) -> sp.csr_matrix:
    """Signac-style TF-IDF, ``log(1 + tf * idf * scale_factor)`` (see the module docstring).

    Parameters
    ----------
    B
        Cells x peaks non-negative matrix (dense or sparse) without empty rows or columns.
    scale_factor
        Multiplier applied before the logarithm.

    Returns
    -------
    The float32 TF-IDF matrix as CSR.

    Raises
    ------
    ValueError
        If a cell or a peak has no counts (tf or idf would be undefined).
    """
    B = sp.csr_matrix(B, dtype=np.float64)
    cell_totals = np.asarray(B.sum(axis=1)).ravel()
    peak_totals = np.asarray(B.sum(axis=0)).ravel()
    if np.any(cell_totals == 0) or np.any(peak_totals == 0):
        raise ValueError("TF-IDF needs every cell and every peak to have at least one count")
    idf = B.shape[0] / peak_totals
    out = sp.diags(1.0 / cell_totals) @ B @ sp.diags(idf)
    out = sp.csr_matrix(out)
    out.data = np.log1p(out.data * scale_factor)
    return out.astype(np.float32)


def lsi(X, *, n_components: int, drop_first: bool = True, seed: int = 0) -> np.ndarray:
    """Latent semantic indexing: truncated SVD of a TF-IDF matrix.

    Parameters
    ----------
    X
        Cells x peaks TF-IDF matrix.
    n_components
        Number of components returned (after dropping the first one when asked).
    drop_first
        Compute one extra component and discard the first, which mostly reflects depth.
    seed
        Random state of the randomised SVD.

    Returns
    -------
    Cells x ``n_components`` float32 array: the left singular vectors scaled by the singular
    values.
    """
    from sklearn.decomposition import TruncatedSVD

    k = n_components + int(drop_first)
    if k >= min(X.shape):
        raise ValueError(
            f"lsi needs fewer components than min(cells, peaks) = {min(X.shape)}; asked for {k}"
            + (" (including the dropped first one)" if drop_first else "")
        )
    svd = TruncatedSVD(n_components=k, algorithm="randomized", random_state=seed)
    embedding = svd.fit_transform(X)
    return np.ascontiguousarray(embedding[:, int(drop_first) :], dtype=np.float32)


def prepare_atac(
    adata: ad.AnnData,
    *,
    domain: str = "atac",
    label_key: str = "cell_type",
    labels: str | os.PathLike | None = None,
    min_cells: int = 5,
    min_peaks_per_cell: int = 10,
    n_top_peaks: int | None = None,
    binarize: bool = True,
    tfidf: bool = True,
    scale_factor: float = 1e4,
    lsi_components: int = 0,
    lsi_drop_first: bool = True,
    seed: int = 0,
    min_cells_after_qc: int = 50,
    source: str | os.PathLike | None = None,
) -> ad.AnnData:
    """Prepare scATAC-seq peak counts as a cellbridge ATAC domain.

    Parameters
    ----------
    adata
        Cells x peaks raw counts in ``X``; not modified.
    domain
        Domain name written to ``obs["domain"]``.
    label_key
        Column that holds (or receives) cell labels.
    labels
        Optional label source, see :func:`~cellbridge.preprocess.counts.attach_labels`.
    min_cells
        Keep peaks accessible in at least this many of the kept cells (peaks with no count are
        always removed, as their IDF is undefined).
    min_peaks_per_cell
        Keep cells with at least this many accessible peaks.
    n_top_peaks
        Keep only the peaks accessible in the most cells (Signac's ``FindTopFeatures``);
        ``None`` keeps all. Cells left without any count are then removed.
    binarize
        Compute TF-IDF on the 0/1 matrix (``layers["binary"]``) rather than on counts.
    tfidf
        ``X`` = TF-IDF (see the module docstring); otherwise ``X`` is the binary (or count)
        matrix as float32.
    scale_factor
        TF-IDF scale factor.
    lsi_components
        Number of LSI components in ``obsm["X_lsi"]``; ``0`` turns LSI off.
    lsi_drop_first
        Drop the first LSI component, which tracks depth.
    seed
        Random state of the LSI SVD.
    min_cells_after_qc
        Fewest cells that may remain; fewer is an error.
    source
        Input path, recorded and named in errors.

    Returns
    -------
    A new AnnData following the ATAC contract: ``X`` float32 CSR, ``layers["counts"]``
    integer counts, ``layers["binary"]`` 0/1 (int8), ``obs["n_peaks"]`` and
    ``obs["total_counts"]``, ``var["n_cells"]``, optionally ``obsm["X_lsi"]``, and
    ``uns["cellbridge"]`` with ``params`` and ``qc`` (every input cell, ``kept`` flag).

    Raises
    ------
    InputError
        When the input is not plausibly raw counts (see
        :func:`~cellbridge.preprocess.counts.require_counts`; values that are not counts
        belong in a ``features`` domain) or fewer than ``min_cells_after_qc`` cells remain.
    """
    require_counts(adata, source, modality="atac")
    if lsi_components < 0:
        raise ValueError(f"lsi_components must be >= 0, not {lsi_components}")
    adata = adata.copy()
    attach_labels(adata, labels, label_key=label_key, source=source)
    counts = integer_counts(sp.csr_matrix(adata.X))
    counts.eliminate_zeros()
    adata.X = counts

    qc = pd.DataFrame(
        {
            "n_peaks": np.diff(counts.indptr),
            "total_counts": np.asarray(counts.sum(axis=1)).ravel(),
        },
        index=adata.obs_names.copy(),
    )
    keep = qc["n_peaks"].to_numpy() >= max(min_peaks_per_cell, 1)
    adata = adata[keep].copy()

    n_cells = np.diff(sp.csc_matrix(adata.X).indptr)
    peak_ok = n_cells >= max(min_cells, 1)
    if n_top_peaks is not None and peak_ok.sum() > n_top_peaks:
        # rank by accessibility; stable sort keeps the file's order among ties
        order = np.argsort(-np.where(peak_ok, n_cells, -1), kind="stable")
        peak_ok = np.zeros_like(peak_ok)
        peak_ok[order[:n_top_peaks]] = True
    adata = adata[:, peak_ok].copy()
    nonempty = np.diff(adata.X.indptr) > 0
    adata = adata[nonempty].copy()
    keep[np.flatnonzero(keep)[~nonempty]] = False
    qc["kept"] = keep

    if adata.n_obs < min_cells_after_qc:
        raise InputError(
            source,
            f"only {adata.n_obs} of {len(qc)} cells pass ATAC QC (min_peaks_per_cell={min_peaks_per_cell}, "
            f"min_cells={min_cells}, n_top_peaks={n_top_peaks}); at least "
            f"min_cells_after_qc={min_cells_after_qc} are needed - relax the thresholds",
        )
    logger.info("%s: %d of %d cells and %d peaks pass ATAC QC", source, adata.n_obs, len(qc), adata.n_vars)

    counts = adata.X
    binary = counts.copy()
    binary.data = np.ones_like(binary.data, dtype=np.int8)
    binary = binary.astype(np.int8)
    adata.layers["counts"] = counts
    adata.layers["binary"] = binary
    adata.obs["n_peaks"] = np.diff(counts.indptr)
    adata.obs["total_counts"] = np.asarray(counts.sum(axis=1)).ravel()
    adata.var["n_cells"] = np.diff(sp.csc_matrix(counts).indptr)

    basis = binary if binarize else counts
    adata.X = _tfidf(basis, scale_factor=scale_factor) if tfidf else sp.csr_matrix(basis, dtype=np.float32)
    if lsi_components:
        adata.obsm["X_lsi"] = lsi(adata.X, n_components=lsi_components, drop_first=lsi_drop_first, seed=seed)

    params = {
        "label_key": label_key,
        "labels": labels,
        "min_cells": min_cells,
        "min_peaks_per_cell": min_peaks_per_cell,
        "n_top_peaks": n_top_peaks,
        "binarize": binarize,
        "tfidf": tfidf,
        "tfidf_formula": "log(1 + B_ij / sum_k B_ik * n_cells / sum_i B_ij * scale_factor)",
        "scale_factor": float(scale_factor),
        "lsi_components": lsi_components,
        "lsi_drop_first": lsi_drop_first,
        "seed": seed,
        "min_cells_after_qc": min_cells_after_qc,
    }
    return finalize_domain(adata, domain=domain, modality="atac", label_key=label_key, params=params, source=source, qc=qc)


# the ``tfidf`` flag of prepare_atac shadows the function inside it
_tfidf = tfidf
