"""Input checks and the blocking rules every metric shares (memory stays bounded at 10,000 cells)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp


# Numbers per temporary block in the blocked computations: 2**22 float64 = 32 MiB.
_BLOCK_ELEMENTS = 2**22

# Array kinds (bool, signed, unsigned, float) that blocked computations accept without
# a float64 copy of the whole matrix.
_REAL_KINDS = "biuf"

ArrayLike = Any  # numpy array, scipy sparse matrix, or anything np.asarray accepts


# --------------------------------------------------------------------------- input checks


def _as_dense_matrix(x: ArrayLike, name: str, *, min_rows: int = 1, keep_dtype: bool = False) -> np.ndarray:
    """Return ``x`` as a finite 2-D array, or raise a ValueError naming ``name``.

    The array is float64 unless ``keep_dtype``: then real-valued input (bool, integer,
    float32) is returned as it is, without a copy.
    """
    if sp.issparse(x):
        x = x.toarray()
    arr = np.asarray(x)
    if not (keep_dtype and arr.dtype.kind in _REAL_KINDS):
        arr = arr.astype(np.float64, copy=False)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (cells x dimensions), got shape {arr.shape}")
    _require_rows(arr.shape[0], name, min_rows)
    _require_finite(arr, name)
    return arr


def _as_matrix_keep_sparse(
    x: ArrayLike, name: str, *, min_rows: int = 1, keep_dtype: bool = False
) -> np.ndarray | sp.csr_matrix:
    """Return ``x`` as a finite 2-D array or CSR matrix, keeping sparsity.

    Values are float64 unless ``keep_dtype`` (real-valued input is then not copied):
    for computations that go through :func:`_dense_rows` or :func:`_column_blocks`,
    which convert one block at a time.
    """
    if sp.issparse(x):
        if keep_dtype and x.dtype.kind in _REAL_KINDS:
            mat = x.tocsr()
        else:
            mat = sp.csr_matrix(x, dtype=np.float64)
        _require_rows(mat.shape[0], name, min_rows)
        _require_finite(mat.data, name)
        return mat
    return _as_dense_matrix(x, name, min_rows=min_rows, keep_dtype=keep_dtype)


def _require_rows(n_rows: int, name: str, min_rows: int) -> None:
    if n_rows < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (cells), got {n_rows}")


def _require_finite(values: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or infinite values; remove or impute them first")


def _require_same_shape(a: Any, b: Any, name_a: str, name_b: str, *, meaning: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; {meaning}")


def _as_labels(labels: ArrayLike, name: str, n_rows: int) -> np.ndarray:
    """Return labels as a 1-D array with one entry per row, without missing values."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per cell), got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} entries but the latent has {n_rows} cells")
    if pd.isna(arr).any():
        raise ValueError(f"{name} contains missing labels; drop the unlabelled cells first")
    return arr


def _require_k(k: int, n_available: int, what: str) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > n_available:
        raise ValueError(f"k={k} exceeds the {n_available} {what} available as neighbours")


def _lines_per_block(line_length: int) -> int:
    """How many rows (or columns) of ``line_length`` numbers fit in one block."""
    return max(1, _BLOCK_ELEMENTS // max(1, line_length))


def _dense_rows(x: np.ndarray | sp.spmatrix, rows: slice) -> np.ndarray:
    block = x[rows]
    return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64)


def _column_blocks(
    a: np.ndarray | sp.spmatrix, b: np.ndarray | sp.spmatrix
) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
    """Yield ``(columns, a_block, b_block)`` as dense float64 blocks of bounded size."""
    n_rows, n_cols = a.shape
    # CSC makes the column slices cheap; densifying one block at a time bounds memory.
    a = a.tocsc() if sp.issparse(a) else a
    b = b.tocsc() if sp.issparse(b) else b
    width = _lines_per_block(n_rows)
    for start in range(0, n_cols, width):
        cols = slice(start, min(start + width, n_cols))
        yield cols, _dense_columns(a, cols), _dense_columns(b, cols)


def _dense_columns(x: np.ndarray | sp.spmatrix, cols: slice) -> np.ndarray:
    block = x[:, cols]
    return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64)
