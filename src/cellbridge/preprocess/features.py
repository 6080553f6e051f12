"""Bring-your-own features: any real-valued cells x features matrix as a domain.

The ``features`` modality takes values some other tool has already made: PCA or LSI
coordinates, topic proportions, methylation rates, scaled expression. Unlike RNA, ATAC and
protein, nothing here assumes counts: values may be negative or fractional, nothing is
normalised, log-transformed or selected. What :func:`prepare_features` does:

1. refuses what no model can use (empty, non-numeric, NaN/inf, duplicated cell names);
   NaN in particular is refused rather than imputed, because how to fill a missing
   methylation rate is the user's decision, not ours;
2. drops features that are constant over all cells (they carry nothing, and cannot be
   standardised);
3. with ``standardize`` (off by default), centres every feature on its mean and scales it
   to unit standard deviation over all cells::

       X[i, j] = (x[i, j] - mean_j) / sd_j        # sd_j: population SD (ddof = 0)

   and keeps the values as read in ``layers["unscaled"]``. The per-feature ``mean`` and
   ``std`` of the input are in ``var`` either way, so ``X`` can be mapped back.

Why the values are used as given by default: what this modality receives is mostly the
coordinates of one space (principal components, LSI components, topics, rates on one scale),
where each feature's variance *is* the information: the leading components hold the cell
types, the trailing ones mostly noise. A domain's Gaussian reconstruction loss is the squared
error divided by the data's *mean* per-feature variance (see
:class:`~cellbridge.nn.likelihoods.Gaussian`), so as given, features count in proportion to
their variance, as they do in the PCA that made them. Standardising whitens such
coordinates: every trailing component becomes as loud as the first. Measured (December 2026,
``benchmarks/real_data.py``, 5 seeds, no labels): PBMC's RNA as 50 principal components
separates its four shared cell types by 5 nearest neighbours at 0.985 as given and 0.897
standardised, and trained shared-type transfer was 0.953 +- 0.010 as given against 0.915 +-
0.030 standardised; scNMT-seq (30 components per domain) stage transfer 0.818 +- 0.017 against
0.803 +- 0.017. Turn it on when the features are in different units (morphology measures,
genes of very different expression, mixed assays): then variance reflects the unit, not the
biology. :func:`prepare_features` warns when the features' SDs differ by more than
:data:`SCALE_SPREAD_WARNING` times and they are left as given.

The prepared domain follows the contract of ``docs/design.md`` like every other modality
(``obs["domain"]``, labels, ``obs["split"]``, ``uns["cellbridge"]`` with the modality and
every parameter) and is modelled by an MLP autoencoder with a Gaussian likelihood on ``X``
(``mse`` also allowed).
"""

from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._io import InputError, logger
from ..contract import finalize_domain
from .counts import attach_labels, validate_matrix

__all__ = ["prepare_features", "standardize_features"]

#: layer that keeps the values as read when ``X`` is standardised
UNSCALED_LAYER = "unscaled"
#: features left as given whose SDs differ by more than this factor get a warning: principal
#: components of real data differ by 3-15 times (PBMC, scNMT-seq), measures in different units
#: (an area in pixels and a ratio) by thousands
SCALE_SPREAD_WARNING = 100.0


def _column_stats(X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature mean, population SD and whether the feature is constant (float64)."""
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        mean = np.asarray(X.mean(axis=0)).ravel()
        sq = np.asarray(X.multiply(X).mean(axis=0)).ravel()
        var = np.maximum(sq - mean**2, 0.0)
        # max == min is exact where a variance computed in floating point need not be 0
        constant = np.asarray(X.max(axis=0).toarray()).ravel() == np.asarray(X.min(axis=0).toarray()).ravel()
    else:
        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(axis=0)
        var = X.var(axis=0)
        constant = X.max(axis=0) == X.min(axis=0)
    return mean, np.sqrt(var), constant


def standardize_features(X, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(X - mean) / std`` per feature, as a dense float32 array.

    Parameters
    ----------
    X
        Cells x features, dense or sparse (centring makes the result dense).
    mean, std
        Per-feature mean and (non-zero) standard deviation.

    Returns
    -------
    Dense float32 array of ``X``'s shape.
    """
    dense = X.toarray() if sp.issparse(X) else np.asarray(X)
    return ((dense.astype(np.float64) - mean) / std).astype(np.float32)


def prepare_features(
    adata: ad.AnnData,
    *,
    domain: str = "features",
    label_key: str = "cell_type",
    labels: str | os.PathLike | None = None,
    standardize: bool = False,
    source: str | os.PathLike | None = None,
) -> ad.AnnData:
    """Prepare a real-valued cells x features matrix as a cellbridge ``features`` domain.

    Parameters
    ----------
    adata
        Cells x features in ``X`` (e.g. from :func:`~cellbridge.preprocess.counts.read_counts`);
        any real values. Not modified. ``obs`` columns (labels, ``split``) are carried over.
    domain
        Domain name written to ``obs["domain"]``.
    label_key
        Column that holds (or receives) cell labels.
    labels
        Optional label source, see :func:`~cellbridge.preprocess.counts.attach_labels`.
    standardize
        Centre and scale every feature to mean 0 and SD 1 over all cells: for features in
        different units. Off by default, the values are used as given (see the module
        docstring for why, and when to turn it on).
    source
        Input path, recorded and named in errors.

    Returns
    -------
    A new AnnData following the features contract: ``X`` float32 (dense when standardised,
    else dense or CSR as read) over the non-constant features; ``layers["unscaled"]`` the
    values as read (float32, only when standardised); ``var["mean"]``, ``var["std"]`` of the
    input values; ``obs["mean_value"]``, ``obs["sd_value"]`` per cell (input values);
    ``uns["cellbridge"]`` with ``params`` and ``qc`` (every input cell, all kept).

    Raises
    ------
    InputError
        For an empty or non-numeric matrix, NaN or infinite values, duplicated cell names,
        or when every feature is constant.
    """
    validate_matrix(adata, path=source)
    adata = adata.copy()
    attach_labels(adata, labels, label_key=label_key, source=source)

    X = adata.X
    mean, std, constant = _column_stats(X)
    if constant.all():
        raise InputError(source, f"all {adata.n_vars} features are constant over the cells; nothing to learn from")
    if constant.any():
        dropped = adata.var_names[constant]
        logger.info(
            "%s: %d constant feature(s) dropped (e.g. %r)", source, int(constant.sum()), str(dropped[0])
        )

    # per-cell summaries of the values as read (all features), for the QC figure
    row_mean, row_sd, _ = _column_stats(X.T)
    qc = pd.DataFrame(
        {
            "mean_value": row_mean,
            "sd_value": row_sd,
            # no cell is removed: without counts there is no library size or detection
            # rate to filter on, and the tool that made the features has chosen the cells
            "kept": np.ones(adata.n_obs, dtype=bool),
        },
        index=adata.obs_names.copy(),
    )

    keep = ~constant
    adata = adata[:, keep].copy()
    mean, std = mean[keep], std[keep]
    values = sp.csr_matrix(adata.X, dtype=np.float32) if sp.issparse(adata.X) else np.asarray(adata.X, dtype=np.float32)
    adata.var["mean"] = mean
    adata.var["std"] = std
    adata.obs["mean_value"] = qc["mean_value"].to_numpy()
    adata.obs["sd_value"] = qc["sd_value"].to_numpy()
    if standardize:
        adata.layers[UNSCALED_LAYER] = values
        adata.X = standardize_features(values, mean, std)
    else:
        adata.X = values
        spread = float(std.max() / std.min())
        if spread > SCALE_SPREAD_WARNING:
            logger.warning(
                "%s: features used as given differ in SD by %.0f times (largest %r, smallest %r); the "
                "reconstruction weighs them by their variance. If they are in different units, set "
                "preprocess.features.standardize: true", source, spread,
                str(adata.var_names[int(np.argmax(std))]), str(adata.var_names[int(np.argmin(std))]),
            )
    logger.info(
        "%s: %d cells x %d features%s", source, adata.n_obs, adata.n_vars, " (standardised)" if standardize else ""
    )

    params = {
        "label_key": label_key,
        "labels": labels,
        "standardize": bool(standardize),
        "standardize_formula": "(x_ij - mean_j) / sd_j, population SD over all cells" if standardize else None,
        "unscaled_layer": UNSCALED_LAYER if standardize else None,
        "constant_features_dropped": int(constant.sum()),
    }
    return finalize_domain(
        adata, domain=domain, modality="features", label_key=label_key, params=params, source=source, qc=qc
    )
