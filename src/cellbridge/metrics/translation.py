"""Translation against measured truth: per-feature and per-cell correlation, RMSE, AUROC, pixel MSE, SSIM."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata
from ._checks import (
    ArrayLike,
    _REAL_KINDS,
    _as_dense_matrix,
    _as_matrix_keep_sparse,
    _column_blocks,
    _dense_rows,
    _lines_per_block,
    _require_finite,
    _require_rows,
    _require_same_shape,
)



# ------------------------------------------------------------------ translation vs truth


def _validate_prediction(
    pred: ArrayLike, true: ArrayLike
) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray | sp.csr_matrix]:
    # Not copied to float64: every use below converts one block at a time.
    p = _as_matrix_keep_sparse(pred, "pred", keep_dtype=True)
    t = _as_matrix_keep_sparse(true, "true", keep_dtype=True)
    _require_same_shape(p, t, "pred", "true", meaning="they must hold the same cells and features in the same order")
    return p, t


def per_feature_correlation(
    pred: ArrayLike, true: ArrayLike, *, method: Literal["pearson", "spearman"] = "pearson"
) -> np.ndarray:
    """Correlation between predicted and true values of each feature, across cells.

    Use it for translated expression or accessibility (one value per gene or peak)
    and for morphology features of predicted versus real nuclei.

    Parameters
    ----------
    pred, true
        Arrays or scipy sparse matrices of shape ``(n_cells, n_features)``, cells in
        the same order; at least two cells.
    method
        ``"pearson"``, or ``"spearman"`` (Pearson of the ranks, ties averaged).

    Returns
    -------
    numpy.ndarray
        Shape ``(n_features,)`` in ``[-1, 1]``; NaN where either column is constant,
        since a correlation is undefined there. Reduce with :func:`summarize`.
    """
    p, t = _validate_prediction(pred, true)
    _require_rows(p.shape[0], "pred", 2)
    return _columnwise_correlation(p, t, method)


def per_cell_correlation(
    pred: ArrayLike, true: ArrayLike, *, method: Literal["pearson", "spearman"] = "pearson"
) -> np.ndarray:
    """Correlation between predicted and true profile of each cell, across features.

    Parameters
    ----------
    pred, true
        Arrays or scipy sparse matrices of shape ``(n_cells, n_features)``; at least
        two features.
    method
        ``"pearson"`` or ``"spearman"``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_cells,)``; NaN for cells whose predicted or true profile is constant.
    """
    p, t = _validate_prediction(pred, true)
    if p.shape[1] < 2:
        raise ValueError(f"a per-cell correlation needs at least 2 features, got {p.shape[1]}")
    return _columnwise_correlation(p.T, t.T, method)


def _columnwise_correlation(a: Any, b: Any, method: str) -> np.ndarray:
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    out = np.empty(a.shape[1])
    for cols, a_block, b_block in _column_blocks(a, b):
        if method == "spearman":
            a_block = rankdata(a_block, axis=0)
            b_block = rankdata(b_block, axis=0)
        out[cols] = _pearson_columns(a_block, b_block)
    return out


def _pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns; NaN where either column is constant."""
    # Exact constancy from max == min: after centring, rounding can leave a constant
    # column with tiny non-zero deviations that would yield an arbitrary +-1.
    constant = (np.ptp(a, axis=0) == 0) | (np.ptp(b, axis=0) == 0)
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    numerator = np.einsum("ij,ij->j", a, b)
    denominator = np.sqrt(np.einsum("ij,ij->j", a, a) * np.einsum("ij,ij->j", b, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.clip(numerator / denominator, -1.0, 1.0)
    r[constant] = np.nan
    return r


def rmse(pred: ArrayLike, true: ArrayLike) -> float:
    """Root mean squared error over all entries of ``pred`` and ``true``.

    Parameters
    ----------
    pred, true
        Arrays or scipy sparse matrices of the same 2-D shape.

    Returns
    -------
    float
        0 for a perfect prediction, in the units of the data.
    """
    p, t = _validate_prediction(pred, true)
    return float(np.sqrt(_mean_squared_difference(p, t)))


def _mean_squared_difference(a: Any, b: Any) -> float:
    n_rows, n_cols = a.shape
    step = _lines_per_block(n_cols)
    total = 0.0
    for start in range(0, n_rows, step):
        rows = slice(start, min(start + step, n_rows))
        total += float(np.sum((_dense_rows(a, rows) - _dense_rows(b, rows)) ** 2))
    return total / (n_rows * n_cols)


def _as_binary(x: ArrayLike, name: str) -> np.ndarray | sp.csr_matrix:
    mat = _as_matrix_keep_sparse(x, name, keep_dtype=True)
    values = mat.data if sp.issparse(mat) else mat
    if not np.all((values == 0) | (values == 1)):
        raise ValueError(f"{name} must be binary (0/1 or bool); binarise accessibility counts first")
    return mat


def auroc_per_feature(scores: ArrayLike, binary_true: ArrayLike) -> np.ndarray:
    """Area under the ROC curve of each feature's scores against its 0/1 truth.

    Meant for accessibility-like targets: how well predicted probabilities rank the
    cells in which a peak is open above those in which it is closed.

    Parameters
    ----------
    scores
        Predicted scores ``(n_cells, n_features)``; higher means "more likely 1".
    binary_true
        Observed 0/1 (or bool) values of the same shape; dense or scipy sparse.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_features,)`` in ``[0, 1]``: 1 for perfect ranking, 0.5 for
        uninformative (e.g. constant) scores; NaN for features whose truth has only
        one class. Tied scores count one half (Mann-Whitney convention).
    """
    s = _as_matrix_keep_sparse(scores, "scores", keep_dtype=True)
    t = _as_binary(binary_true, "binary_true")
    _require_same_shape(s, t, "scores", "binary_true", meaning="they must hold the same cells and features")
    out = np.empty(s.shape[1])
    for cols, s_block, t_block in _column_blocks(s, t):
        out[cols] = _auroc_columns(s_block, t_block.astype(bool))
    return out


def auroc(scores: ArrayLike, binary_true: ArrayLike) -> float:
    """AUROC of all entries pooled (every cell and feature as one ranking).

    Parameters
    ----------
    scores, binary_true
        As in :func:`auroc_per_feature`. The pooled ranking holds ``n_cells *
        n_features`` values in memory (float32 scores are ranked as they are, not
        copied); subsample very large matrices first.

    Returns
    -------
    float
        In ``[0, 1]``; 0.5 for constant scores.

    Raises
    ------
    ValueError
        If ``binary_true`` contains only zeros or only ones.
    """
    # Ranks do not depend on the precision the scores are stored in: no float64 copy.
    s = _as_dense_matrix(scores, "scores", keep_dtype=True)
    t = _as_binary(binary_true, "binary_true")
    _require_same_shape(s, t, "scores", "binary_true", meaning="they must hold the same cells and features")
    truth = (t.toarray() if sp.issparse(t) else t).astype(bool)
    value = _auroc_columns(s.reshape(-1, 1), truth.reshape(-1, 1))[0]
    if np.isnan(value):
        raise ValueError("binary_true must contain both 0s and 1s for an AUROC")
    return float(value)


def _auroc_columns(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC of each column from average ranks; NaN for one-class columns."""
    ranks = rankdata(scores, axis=0)
    n_pos = positive.sum(axis=0).astype(np.float64)
    n_neg = positive.shape[0] - n_pos
    rank_sum = np.where(positive, ranks, 0.0).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    value[(n_pos == 0) | (n_neg == 0)] = np.nan
    return value


# ------------------------------------------------------------------------------ images


def _validate_crops(pred_crops: ArrayLike, true_crops: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The crops as arrays, real-valued input not copied (the metrics convert per block or crop)."""
    pred, true = np.asarray(pred_crops), np.asarray(true_crops)
    pred = pred if pred.dtype.kind in _REAL_KINDS else pred.astype(np.float64)
    true = true if true.dtype.kind in _REAL_KINDS else true.astype(np.float64)
    for name, crops in (("pred_crops", pred), ("true_crops", true)):
        if crops.ndim not in (3, 4):
            raise ValueError(
                f"{name} must have shape (n, height, width) or (n, height, width, channels), got {crops.shape}"
            )
        _require_rows(crops.shape[0], name, 1)
        _require_finite(crops, name)
    _require_same_shape(pred, true, "pred_crops", "true_crops", meaning="crop i of each must be the same nucleus")
    return pred, true


def pixel_mse(pred_crops: ArrayLike, true_crops: ArrayLike) -> float:
    """Mean squared pixel difference over all crops.

    Parameters
    ----------
    pred_crops, true_crops
        Arrays ``(n, height, width)`` or ``(n, height, width, channels)``; crop ``i``
        of each shows the same nucleus.

    Returns
    -------
    float
        0 for identical crops, in squared intensity units.
    """
    pred, true = _validate_crops(pred_crops, true_crops)
    # One row per crop, summed in blocks of rows: no full-size temporary.
    return _mean_squared_difference(pred.reshape(pred.shape[0], -1), true.reshape(true.shape[0], -1))


def ssim_per_crop(
    pred_crops: ArrayLike, true_crops: ArrayLike, *, data_range: float | None = None
) -> np.ndarray:
    """Structural similarity (SSIM) of each predicted crop with its true crop.

    Uses :func:`skimage.metrics.structural_similarity` with its default 7 x 7 window.

    Parameters
    ----------
    pred_crops, true_crops
        Arrays ``(n, height, width)`` or ``(n, height, width, channels)`` with height
        and width at least 7.
    data_range
        Width of the intensity scale (1.0 for crops scaled to [0, 1]). By default the
        range of ``true_crops`` as a whole, one value for every pair so scores are
        comparable between crops; pass it explicitly to compare across runs.

    Returns
    -------
    numpy.ndarray
        Shape ``(n,)``, at most 1 (identical crops).
    """
    # Imported here: skimage.metrics pulls in much of scikit-image, which only the
    # image metrics need.
    from skimage.metrics import structural_similarity

    pred, true = _validate_crops(pred_crops, true_crops)
    if min(true.shape[1:3]) < 7:
        raise ValueError(f"SSIM needs crops of at least 7 x 7 pixels, got {true.shape[1]} x {true.shape[2]}")
    if data_range is None:
        # In float64 whatever the crops are stored in (float32 crops are not copied).
        data_range = float(true.max()) - float(true.min())
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive number, got {data_range} (are the true crops constant?)")
    channel_axis = -1 if true.ndim == 4 else None
    return np.array(
        [
            # One crop at a time in float64: skimage would compute float32 crops in float32.
            structural_similarity(
                p.astype(np.float64), t.astype(np.float64), data_range=data_range, channel_axis=channel_axis
            )
            for p, t in zip(pred, true, strict=True)
        ]
    )


def ssim_mean(pred_crops: ArrayLike, true_crops: ArrayLike, *, data_range: float | None = None) -> float:
    """Mean of :func:`ssim_per_crop` over all crop pairs (1 = identical)."""
    return float(ssim_per_crop(pred_crops, true_crops, data_range=data_range).mean())
