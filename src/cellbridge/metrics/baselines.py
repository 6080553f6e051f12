"""Compression baselines (PCA at the same size, the training mean) and :func:`summarize`."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA
from ._checks import (
    ArrayLike,
    _as_matrix_keep_sparse,
    _dense_rows,
    _lines_per_block,
)

# Above this many features the p x p covariance is too large to decompose for sparse
# input asking for every component.
_MAX_FEATURES_COVARIANCE_PCA = 4096



# ----------------------------------------------------------------- compression baselines


def _validate_train_test(train: ArrayLike, test: ArrayLike) -> tuple[Any, Any]:
    tr = _as_matrix_keep_sparse(train, "train")
    te = _as_matrix_keep_sparse(test, "test")
    if tr.shape[1] != te.shape[1]:
        raise ValueError(
            f"train has {tr.shape[1]} features but test has {te.shape[1]}; they must be the same features"
        )
    return tr, te


def pca_reconstruction_error(train: ArrayLike, test: ArrayLike, *, n_components: int) -> float:
    """Held-out mean squared error of PCA reconstruction with ``n_components`` components.

    PCA (with centring) is fitted on ``train``; each ``test`` cell is projected onto
    the components and mapped back. Comparing this with an autoencoder's held-out MSE
    on the same matrix and the same latent size shows whether the non-linear model
    compresses better than a linear one; :func:`mean_predictor_error` is the trivial
    baseline with no components at all.

    Parameters
    ----------
    train, test
        ``(n_cells, n_features)`` arrays or scipy sparse matrices with the same
        features (e.g. the prepared ``X``), from disjoint cells.
    n_components
        Latent size, ``1 <= n_components <= min(n_train_cells, n_features)``; for
        sparse input with more than 4096 features strictly below that minimum.

    Returns
    -------
    float
        Mean over all test entries of the squared reconstruction error; about 0 once
        ``n_components`` reaches the rank of the (centred) data.
    """
    tr, te = _validate_train_test(train, test)
    n_train, n_features = tr.shape
    limit = min(n_train, n_features)
    is_integer = isinstance(n_components, (int, np.integer)) and not isinstance(n_components, bool)
    if not is_integer or not 1 <= n_components <= limit:
        raise ValueError(f"n_components must be an integer in [1, {limit}] for this train set, got {n_components!r}")
    pca = _fit_pca(tr, n_components)

    step = _lines_per_block(n_features)
    total = 0.0
    for start in range(0, te.shape[0], step):
        rows = slice(start, min(start + step, te.shape[0]))
        block = _dense_rows(te, rows)
        total += float(np.sum((block - pca.inverse_transform(pca.transform(block))) ** 2))
    return total / (te.shape[0] * n_features)


def _fit_pca(train: Any, n_components: int) -> PCA:
    """Fit a deterministic PCA on dense or sparse ``train``."""
    if not sp.issparse(train):
        # sklearn's own choice: an exact solver for small inputs or many components,
        # a seeded randomized SVD (accurate for a few leading components) otherwise.
        return PCA(n_components=n_components, svd_solver="auto", random_state=0).fit(train)
    if n_components < min(train.shape):
        # ARPACK centres implicitly, so the sparse matrix is never densified.
        solver = "arpack"
    elif train.shape[1] <= _MAX_FEATURES_COVARIANCE_PCA:
        # ARPACK cannot return all components; the p x p covariance is small enough.
        solver = "covariance_eigh"
    else:
        raise ValueError(
            f"for sparse input with {train.shape[1]} features n_components must be below "
            f"{min(train.shape)} (ARPACK); got {n_components}"
        )
    return PCA(n_components=n_components, svd_solver=solver, random_state=0).fit(train)


def mean_predictor_error(train: ArrayLike, test: ArrayLike) -> float:
    """Held-out mean squared error of predicting every test cell as the training mean.

    The trivial baseline for :func:`pca_reconstruction_error` and autoencoder errors:
    a model that does not beat it has learnt nothing about individual cells.

    Parameters
    ----------
    train, test
        ``(n_cells, n_features)`` arrays or scipy sparse matrices with the same features.

    Returns
    -------
    float
        Mean over all test entries of the squared difference to the training column means.
    """
    tr, te = _validate_train_test(train, test)
    column_mean = np.asarray(tr.mean(axis=0), dtype=np.float64).reshape(1, -1)
    step = _lines_per_block(te.shape[1])
    total = 0.0
    for start in range(0, te.shape[0], step):
        rows = slice(start, min(start + step, te.shape[0]))
        total += float(np.sum((_dense_rows(te, rows) - column_mean) ** 2))
    return total / (te.shape[0] * te.shape[1])


# ----------------------------------------------------------------------------- summary


def summarize(values: ArrayLike) -> dict[str, float | int]:
    """Mean and median of per-feature or per-cell values, ignoring NaN.

    Parameters
    ----------
    values
        Numbers of any shape, e.g. the output of :func:`per_feature_correlation`,
        where NaN marks undefined entries.

    Returns
    -------
    dict
        ``mean`` and ``median`` of the non-NaN values (NaN if there are none) and
        ``n_valid``, how many values were not NaN.
    """
    arr = np.asarray(values, dtype=np.float64).ravel()
    valid = arr[~np.isnan(arr)]
    if valid.size == 0:
        return {"mean": float("nan"), "median": float("nan"), "n_valid": 0}
    return {"mean": float(valid.mean()), "median": float(np.median(valid)), "n_valid": int(valid.size)}
