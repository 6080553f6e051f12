"""Reading and checking count matrices and attaching labels.

These helpers are shared by every modality:

* :func:`read_counts` reads a cells x features matrix from the formats single-cell
  tools usually produce (``.h5ad``, 10x ``.h5``, 10x matrix-market folders, CSV/TSV,
  scipy ``.npz``) into an :class:`~anndata.AnnData`. It checks nothing about the values,
  so the ``features`` modality (any real-valued matrix) reads its input with it too.
* :func:`validate_matrix` refuses what no modality can use (empty, non-numeric, NaN/inf,
  duplicated cell names); :func:`validate_counts` adds what cannot be raw counts (negative
  or fractional values, zeros only); :func:`require_counts`, the gate of the RNA, ATAC and
  protein preparers, adds what is whole-numbered but still not counts of that modality
  (0/1 protein matrices, ATAC matrices non-zero almost everywhere). Each raises an
  :class:`~cellbridge.InputError` that names the file, so a user learns which input to fix
  (and that values which are not counts belong in a ``features`` domain) rather than
  seeing a crash deep inside training, or a domain preprocessed into noise.
* :func:`attach_labels` merges optional cell labels from an ``obs`` column or a table.

Every modality's preparation ends with :func:`cellbridge.contract.finalize_domain`.

Duplicate names: cell names (``obs_names``) identify profiles and are used to join labels
and the truth table, so duplicated cell names are an error. Feature names are often
duplicated legitimately (two Ensembl ids sharing one gene symbol in 10x files); they are
made unique by appending ``-1``, ``-2``, ... (:meth:`anndata.AnnData.var_names_make_unique`)
and a warning is logged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._io import InputError, logger, require_path
from ..contract import COUNT_MODALITIES, as_label_categories, check_labels

__all__ = [
    "COUNT_FORMATS",
    "NOT_COUNTS_HINT",
    "attach_labels",
    "detect_format",
    "integer_counts",
    "read_counts",
    "require_counts",
    "validate_counts",
    "validate_matrix",
]

#: Formats understood by :func:`read_counts` (``"auto"`` picks one from the path).
COUNT_FORMATS = ("h5ad", "10x_h5", "10x_mtx", "csv", "tsv", "npz")

CountFormat = Literal["auto", "h5ad", "10x_h5", "10x_mtx", "csv", "tsv", "npz"]


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
def detect_format(path: str | os.PathLike) -> str:
    """Guess the count-matrix format of ``path`` from its name (or from being a folder).

    Parameters
    ----------
    path
        File or folder to read.

    Returns
    -------
    One of :data:`COUNT_FORMATS`.

    Raises
    ------
    InputError
        If the suffix is not recognised.
    """
    p = Path(path)
    if p.is_dir():
        return "10x_mtx"
    name = p.name.lower()
    for suffix in (".gz", ".bz2"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith(".h5"):
        return "10x_h5"
    if name.endswith(".mtx"):
        return "10x_mtx"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".tsv", ".txt", ".tab")):
        return "tsv"
    if name.endswith(".npz"):
        return "npz"
    raise InputError(
        p,
        "cannot tell the count-matrix format from the file name; expected a folder "
        "(10x matrix market) or a name ending in .h5ad, .h5, .mtx(.gz), .csv(.gz), "
        ".tsv(.gz)/.txt(.gz) or .npz; rename the file accordingly (from Python: read_counts(..., format=...))",
    )


def read_counts(
    path: str | os.PathLike,
    *,
    format: CountFormat = "auto",
    layer: str | None = None,
    transpose: bool = False,
) -> ad.AnnData:
    """Read a count matrix into an AnnData with cells as observations.

    Parameters
    ----------
    path
        The input. Supported formats:

        ``"h5ad"``
            AnnData file; counts are taken from ``X`` or from ``layer``.
        ``"10x_h5"``
            Cell Ranger HDF5 (v2 or v3) via :func:`scanpy.read_10x_h5`. All feature types are
            kept (``var["feature_types"]`` tells them apart); subset it yourself when a file
            holds several modalities (e.g. ``"Antibody Capture"`` for proteins).
        ``"10x_mtx"``
            A folder with ``matrix.mtx``, ``features.tsv`` or ``genes.tsv`` and
            ``barcodes.tsv``, each optionally gzipped (or the path of the ``matrix.mtx(.gz)``
            file inside it). Standard Cell Ranger layouts are read with
            :func:`scanpy.read_10x_mtx`; other combinations with the same conventions
            (``var_names`` = gene symbols, ``var["gene_ids"]``, ``var["feature_types"]``).
        ``"csv"`` / ``"tsv"``
            A delimited table with a header row of feature names and a first column of cell
            names (cells x features; ``transpose=True`` for features x cells). May be gzipped.
        ``"npz"``
            A scipy sparse matrix saved with :func:`scipy.sparse.save_npz` (cells x features,
            or features x cells with ``transpose=True``). Such files carry no names: cells are
            named ``cell_0000``... and features ``feature_0000``...
    format
        One of ``"auto"`` (from the path, see :func:`detect_format`) or the names above.
    layer
        ``.h5ad`` only: where the raw counts are when ``X`` holds normalised values; a key of
        ``layers`` or ``"raw"`` for ``adata.raw`` (all of its features). The chosen matrix
        becomes ``X``.
    transpose
        The file stores features x cells (CSV/TSV and ``.npz`` only).

    Returns
    -------
    The counts in ``X`` (unchecked: call :func:`validate_counts`), with unique feature names.

    Raises
    ------
    InputError
        If the file is missing, cannot be parsed in the given format, or an option does not
        apply to it.
    """
    p = require_path(path, "count matrix")
    fmt = detect_format(p) if format == "auto" else format
    if fmt not in COUNT_FORMATS:
        raise InputError(p, f"unknown count format {fmt!r}; choose one of {', '.join(COUNT_FORMATS)}")
    if layer is not None and fmt != "h5ad":
        raise InputError(p, f"layer={layer!r} applies only to .h5ad files, not to {fmt} input")
    if transpose and fmt not in ("csv", "tsv", "npz"):
        raise InputError(p, f"transpose applies only to CSV/TSV and .npz input; {fmt} is always cells x features")

    readers = {
        "h5ad": lambda: _read_h5ad(p, layer=layer),
        "10x_h5": lambda: _read_10x_h5(p),
        "10x_mtx": lambda: _read_mtx_folder(p),
        "csv": lambda: _read_delimited(p, sep=",", transpose=transpose),
        "tsv": lambda: _read_delimited(p, sep="\t", transpose=transpose),
        "npz": lambda: _read_npz(p, transpose=transpose),
    }
    try:
        adata = readers[fmt]()
    except InputError:
        raise
    except Exception as exc:  # any parser failure means the file is not what it claims
        raise InputError(p, f"could not be read as {fmt}: {type(exc).__name__}: {exc}") from exc
    if fmt in ("csv", "tsv", "npz"):
        fix = f"set transpose: {'false' if transpose else 'true'}"
    else:
        fix = "store it as cells x features"
    _check_orientation(adata, path=p, fix=fix)
    _make_var_names_unique(adata, path=p)
    logger.info("read %s: %d cells x %d features (%s)", p, adata.n_obs, adata.n_vars, fmt)
    return adata


def _read_h5ad(path: Path, *, layer: str | None) -> ad.AnnData:
    adata = ad.read_h5ad(path)
    if layer is None:
        return adata
    if layer == "raw":
        if adata.raw is None:
            raise InputError(path, "layer='raw' was asked for but the file has no .raw")
        return adata.raw.to_adata()
    if layer not in adata.layers:
        raise InputError(path, f"has no layer {layer!r}; layers present: {sorted(adata.layers) or 'none'}")
    adata.X = adata.layers[layer]
    # the layer is now X; keeping a second copy would only double the memory
    del adata.layers[layer]
    return adata


def _read_10x_h5(path: Path) -> ad.AnnData:
    import scanpy as sc

    return sc.read_10x_h5(path, gex_only=False)


def _find_one(folder: Path, stems: tuple[str, ...]) -> Path | None:
    for stem in stems:
        for suffix in ("", ".gz"):
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _read_mtx_folder(path: Path) -> ad.AnnData:
    import scanpy as sc
    import scipy.io

    folder = path.parent if path.is_file() else path
    matrix = _find_one(folder, ("matrix.mtx",))
    features = _find_one(folder, ("features.tsv", "genes.tsv"))
    barcodes = _find_one(folder, ("barcodes.tsv",))
    missing = [n for n, f in (("matrix.mtx", matrix), ("features.tsv/genes.tsv", features), ("barcodes.tsv", barcodes)) if f is None]
    if missing:
        raise InputError(folder, f"10x matrix folder lacks {', '.join(missing)} (optionally .gz)")

    # scanpy knows exactly two layouts: Cell Ranger v2 (plain, genes.tsv) and v3 (all gzipped)
    v2 = matrix.name == "matrix.mtx" and features.name == "genes.tsv" and barcodes.name == "barcodes.tsv"
    v3 = matrix.name == "matrix.mtx.gz" and features.name == "features.tsv.gz" and barcodes.name == "barcodes.tsv.gz"
    if v2 or v3:
        return sc.read_10x_mtx(folder, gex_only=False)

    X = sp.csr_matrix(scipy.io.mmread(matrix).T)  # files store features x cells
    feat = pd.read_csv(features, sep="\t", header=None, dtype=str)
    cells = pd.read_csv(barcodes, sep="\t", header=None, dtype=str)[0].to_numpy()
    var = pd.DataFrame(index=pd.Index(feat[1] if feat.shape[1] > 1 else feat[0]).astype(str))
    var["gene_ids"] = feat[0].to_numpy()
    if feat.shape[1] > 2:
        var["feature_types"] = feat[2].to_numpy()
    if X.shape != (len(cells), len(var)):
        raise InputError(
            matrix,
            f"matrix is {X.shape[1]} features x {X.shape[0]} cells but {features.name} lists "
            f"{len(var)} features and {barcodes.name} {len(cells)} barcodes",
        )
    return ad.AnnData(X=X, obs=pd.DataFrame(index=pd.Index(cells)), var=var)


def _read_delimited(path: Path, *, sep: str, transpose: bool) -> ad.AnnData:
    table = pd.read_csv(path, sep=sep, index_col=0)
    if table.shape[1] == 0:
        raise InputError(path, "has no data columns; expected a header row of feature names and one row per cell")
    if table.shape[0] == 0:
        # checked first: pandas types the columns of an empty table as text
        raise InputError(path, "has a header row but no data rows; expected one row per cell")
    non_numeric = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if non_numeric:
        raise InputError(
            path,
            f"{len(non_numeric)} column(s) are not numeric (first: {non_numeric[0]!r}); "
            "expected a header row, an index column of names and numbers everywhere else",
        )
    if transpose:
        table = table.T
    return ad.AnnData(
        X=table.to_numpy(dtype=np.float64),
        obs=pd.DataFrame(index=table.index.astype(str)),
        var=pd.DataFrame(index=table.columns.astype(str)),
    )


def _numbered(prefix: str, n: int) -> pd.Index:
    width = max(4, len(str(max(n - 1, 0))))
    return pd.Index([f"{prefix}_{i:0{width}d}" for i in range(n)])


def _read_npz(path: Path, *, transpose: bool) -> ad.AnnData:
    try:
        X = sp.load_npz(path)
    except (ValueError, KeyError) as exc:
        raise InputError(path, f"is not a scipy sparse matrix saved with scipy.sparse.save_npz ({exc})") from exc
    X = sp.csr_matrix(X.T if transpose else X)
    return ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=_numbered("cell", X.shape[0])),
        var=pd.DataFrame(index=_numbered("feature", X.shape[1])),
    )


#: names only cells carry (10x barcodes, "cell_12") and only features carry (Ensembl ids, "Gene0217")
_CELL_NAME = re.compile(r"^([ACGTN]{8,}([-_.]\d+)?|(cell|barcode)[-_.]?\w*\d+)$", re.IGNORECASE)
_GENE_NAME = re.compile(r"^(ENS[A-Z]*G\d{6,}(\.\d+)?|gene[-_.]?\d+)$", re.IGNORECASE)


def _check_orientation(adata: ad.AnnData, *, path: Path, fix: str) -> None:
    """Refuse a features x cells matrix read as cells x features, recognised by its names.

    Read the wrong way round, genes become "cells" that pass QC and train as cells:
    only names tell, so the check fires when nearly all names on one axis look like the
    other axis's (files with anonymous names are not checked).
    """

    def share(names: pd.Index, pattern: re.Pattern) -> float:
        sample = names[:: max(1, len(names) // 500)].astype(str)
        return float(np.mean([bool(pattern.match(n)) for n in sample])) if len(sample) else 0.0

    rows_are_features = share(adata.obs_names, _GENE_NAME) >= 0.9 or share(adata.var_names, _CELL_NAME) >= 0.9
    if rows_are_features and share(adata.var_names, _GENE_NAME) < 0.5:
        raise InputError(
            path,
            f"rows look like features and columns like cells (rows: {adata.obs_names[0]!r}, ...; columns: "
            f"{adata.var_names[0]!r}, ...); the matrix is features x cells: {fix}",
        )


def _make_var_names_unique(adata: ad.AnnData, *, path: Path | str | None) -> None:
    if adata.var_names.is_unique:
        return
    duplicated = adata.var_names[adata.var_names.duplicated()].unique()
    logger.warning(
        "%s: %d feature name(s) occur more than once (e.g. %r); suffixes -1, -2, ... were appended",
        path,
        len(duplicated),
        duplicated[0],
    )
    adata.var_names_make_unique()


# --------------------------------------------------------------------------------------
# checking
# --------------------------------------------------------------------------------------
def _first_offending(X, bad) -> tuple[int, int, float]:
    """Row, column and value of the first stored entry where ``bad(values)`` is true."""
    if sp.issparse(X):
        coo = sp.coo_matrix(X)
        k = int(np.flatnonzero(bad(coo.data))[0])
        return int(coo.row[k]), int(coo.col[k]), float(coo.data[k])
    arr = np.asarray(X)
    i, j = np.argwhere(bad(arr))[0]
    return int(i), int(j), float(arr[i, j])


#: Appended to every "these are not counts" message: where such values belong instead.
NOT_COUNTS_HINT = (
    "values that are not counts (PCA, LSI, topics, methylation rates, scaled data) belong in a "
    "domain with 'modality: features'"
)
#: ATAC input with a larger fraction of non-zero entries is refused (see :func:`require_counts`).
ATAC_MAX_DENSITY = 0.95


def _offending(adata: ad.AnnData, bad) -> str:
    """``e.g. <value> in cell <name>, feature <name>`` for the first entry where ``bad`` holds."""
    i, j, v = _first_offending(adata.X, bad)
    return f"e.g. {v!r} in cell {adata.obs_names[i]!r}, feature {adata.var_names[j]!r}"


def validate_matrix(
    adata: ad.AnnData,
    *,
    path: str | os.PathLike | None,
    what: str = "X",
) -> np.ndarray:
    """Checks every input matrix must pass, counts or not.

    Parameters
    ----------
    adata
        Cells x features.
    path
        The file the data came from; every error names it.
    what
        How to call the matrix in messages.

    Returns
    -------
    The stored values of ``adata.X`` (``X.data`` when sparse, else the dense array), so that
    callers can run further checks without converting again.

    Raises
    ------
    InputError
        For an empty matrix (no cells or no features), a missing matrix, duplicated cell
        names, a non-numeric dtype, NaN or infinite values.
    """
    X = adata.X
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(path, f"{what} is empty ({adata.n_obs} cells x {adata.n_vars} features)")
    if X is None:
        raise InputError(path, f"{what} holds no matrix")
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()].unique()
        raise InputError(
            path,
            f"{len(dup)} cell name(s) occur more than once (e.g. {dup[0]!r}); cell names must be "
            "unique so that labels and truth tables can be joined",
        )
    values = X.data if sp.issparse(X) else np.asarray(X)
    if values.dtype.kind not in "biuf":
        raise InputError(path, f"{what} has non-numeric dtype {values.dtype}")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise InputError(
            path, f"{what} contains NaN or infinite values ({_offending(adata, lambda a: ~np.isfinite(a))})"
        )
    return values


def validate_counts(
    adata: ad.AnnData,
    *,
    path: str | os.PathLike | None,
    require_integer: bool = True,
    what: str = "X",
) -> ad.AnnData:
    """Check that ``adata.X`` can be a raw count matrix.

    Parameters
    ----------
    adata
        Cells x features.
    path
        The file the data came from; every error names it.
    require_integer
        Refuse fractional values (raw UMI / fragment counts are whole numbers). Values within
        ``1e-6`` of an integer are accepted, so counts stored as floats pass.
    what
        How to call the matrix in messages (e.g. ``"layer 'counts'"``).

    Returns
    -------
    ``adata``, unchanged, for chaining.

    Raises
    ------
    InputError
        For everything :func:`validate_matrix` refuses, negative values, (with
        ``require_integer``) fractional values and a matrix of zeros only. The message names
        the file, the first offending cell and feature and says what to do, including where
        values that are not counts belong (:data:`NOT_COUNTS_HINT`).
    """
    values = validate_matrix(adata, path=path, what=what)
    X = adata.X
    if values.dtype.kind in "if" and values.size and values.min() < 0:
        raise InputError(
            path,
            f"{what} contains negative values ({_offending(adata, lambda a: a < 0)}); raw counts are "
            f"required, not scaled or centred data - {NOT_COUNTS_HINT}",
        )
    if require_integer and values.dtype.kind == "f":
        fractional = lambda a: np.abs(a - np.rint(a)) > 1e-6  # noqa: E731
        if np.any(fractional(values)):
            raise InputError(
                path,
                f"{what} contains non-integer values ({_offending(adata, fractional)}); raw integer counts "
                "are required - if X holds normalised data, point the 'layer' option at the "
                f"raw counts (e.g. layer='counts' or layer='raw'); {NOT_COUNTS_HINT}",
            )
    nnz = X.count_nonzero() if sp.issparse(X) else np.count_nonzero(values)
    if nnz == 0:
        raise InputError(path, f"{what} contains only zeros")
    return adata


def require_counts(adata: ad.AnnData, source: str | os.PathLike | None, *, modality: str) -> ad.AnnData:
    """Refuse input that is not plausibly raw counts of ``modality`` (RNA, ATAC or protein).

    The one gate of every count-based preparer, so that RNA, ATAC and protein refuse the
    same things with the same words. Besides :func:`validate_counts` (NaN, negative or
    fractional values, empty matrices), two checks catch values that are whole numbers but
    still not counts of the modality, each of which the preprocessing would otherwise turn
    into a domain without information:

    * ``protein``: a matrix of only 0 and 1 (binary calls, 0/1 methylation states).
      Antibody-derived tag counts are not binary, and the per-cell CLR of a 0/1 matrix only
      reflects how many ones a cell has.
    * ``atac``: more than :data:`ATAC_MAX_DENSITY` of all entries non-zero (dense topic or
      score matrices rounded to integers). Peak counts are sparse; binarising a matrix that
      is non-zero almost everywhere gives almost every cell the same all-ones profile.

    Integer-valued floats (counts stored as ``float32``) are counts and pass.

    Parameters
    ----------
    adata
        Cells x features, values in ``X``; not modified.
    source
        The input file, named in every message.
    modality
        ``"rna"``, ``"atac"`` or ``"protein"``.

    Returns
    -------
    ``adata``, unchanged, for chaining.

    Raises
    ------
    InputError
        One line naming ``source``, the problem and (for values that are not counts) the
        ``features`` modality.
    ValueError
        If ``modality`` is not a count modality.
    """
    if modality not in COUNT_MODALITIES:
        raise ValueError(f"require_counts applies to {', '.join(COUNT_MODALITIES)}, not {modality!r}")
    validate_counts(adata, path=source)
    X = adata.X
    values = X.data if sp.issparse(X) else np.asarray(X)
    if modality == "protein" and values.size and values.max() <= 1:
        raise InputError(
            source,
            "X holds only 0 and 1, which antibody-derived tag counts never do (binary calls or "
            f"methylation states are not protein counts); {NOT_COUNTS_HINT}",
        )
    if modality == "atac":
        nnz = X.count_nonzero() if sp.issparse(X) else np.count_nonzero(values)
        density = nnz / (adata.n_obs * adata.n_vars)
        if density > ATAC_MAX_DENSITY:
            raise InputError(
                source,
                f"{density:.0%} of X's entries are non-zero, but peak counts are sparse: binarised, "
                f"nearly every cell would be the same all-ones profile; {NOT_COUNTS_HINT}",
            )
    return adata


def integer_counts(X):
    """Integer copy of a validated count matrix: int32 when the values fit, else int64.

    Parameters
    ----------
    X
        Dense array or sparse matrix of whole numbers (possibly stored as floats).

    Returns
    -------
    CSR matrix when ``X`` is sparse, else a dense array.
    """
    csr = X.tocsr() if sp.issparse(X) else None
    values = csr.data if csr is not None else np.asarray(X)
    top = values.max() if values.size else 0
    dtype = np.int32 if top <= np.iinfo(np.int32).max else np.int64
    # rounded straight into the integer array: no float temporary of the whole matrix
    rounded = np.rint(values, out=np.empty(values.shape, dtype=dtype), casting="unsafe")
    if csr is None:
        return rounded
    return sp.csr_matrix((rounded, csr.indices.copy(), csr.indptr.copy()), shape=csr.shape)


# --------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------
def _read_label_table(path: Path, *, label_key: str, column: str | None) -> pd.Series:
    name = path.name.lower().removesuffix(".gz")
    sep = "," if name.endswith(".csv") else "\t"
    try:
        table = pd.read_csv(path, sep=sep, index_col=0, dtype=str)
    except Exception as exc:
        raise InputError(path, f"label table could not be read: {type(exc).__name__}: {exc}") from exc
    if table.shape[1] == 0:
        raise InputError(path, "label table has no label column; expected cell names in the first column and labels in another")
    if column is None:
        if table.shape[1] == 1:
            column = table.columns[0]
        elif label_key in table.columns:
            column = label_key
        else:
            raise InputError(
                path,
                f"label table has several columns ({', '.join(map(str, table.columns))}) and none "
                f"is called {label_key!r}; name the column to use",
            )
    if column not in table.columns:
        raise InputError(path, f"label table has no column {column!r}; columns: {', '.join(map(str, table.columns))}")
    if not table.index.is_unique:
        dup = table.index[table.index.duplicated()].unique()
        raise InputError(path, f"label table lists {len(dup)} cell(s) more than once (e.g. {dup[0]!r})")
    labels = table[column]
    labels.index = labels.index.astype(str)
    return labels


def attach_labels(
    adata: ad.AnnData,
    labels: str | os.PathLike | None,
    *,
    label_key: str = "cell_type",
    column: str | None = None,
    source: str | os.PathLike | None = None,
) -> ad.AnnData:
    """Put cell labels into ``adata.obs[label_key]`` (in place).

    Parameters
    ----------
    adata
        The cells to label.
    labels
        ``None`` to use ``obs[label_key]`` if present; the name of a column of ``obs``
        (copied into ``label_key``); or the path of a CSV/TSV table whose first column holds
        cell names (matched to ``obs_names``) and another column the labels. Cells missing from
        the table get no label (NaN), which semi-supervised training tolerates.
    label_key
        Destination column.
    column
        Column of the table to use; by default its only column, or the one called
        ``label_key``.
    source
        The data file, named in errors about ``obs`` columns.

    Returns
    -------
    ``adata`` with a categorical ``obs[label_key]`` (string categories), when labels exist.

    Raises
    ------
    InputError
        When ``labels`` is neither a column nor an existing file, the table is malformed, or no
        cell gets a label (all NaN; e.g. the table's cell names do not match).
    """
    if labels is None:
        if label_key in adata.obs:
            check_labels(adata.obs[label_key], path=source, what=f"obs column {label_key!r}")
            adata.obs[label_key] = as_label_categories(adata.obs[label_key])
        return adata
    if isinstance(labels, str) and labels in adata.obs.columns:
        values = adata.obs[labels]
        check_labels(values, path=source, what=f"obs column {labels!r}")
        adata.obs[label_key] = as_label_categories(values)
        return adata
    path = Path(labels)
    if not path.is_file():
        raise InputError(
            path,
            f"labels is neither a column of obs ({', '.join(map(str, adata.obs.columns)) or 'none'}) "
            "nor an existing label table",
        )
    table = _read_label_table(path, label_key=label_key, column=column)
    merged = table.reindex(adata.obs_names)
    if merged.notna().sum() == 0:
        raise InputError(
            path,
            f"no cell received a label: none of the {len(table)} names in the table match the "
            f"{adata.n_obs} cell names of the data (table has e.g. {table.index[0] if len(table) else None!r}, "
            f"data has e.g. {adata.obs_names[0]!r}), or all their labels are empty",
        )
    n_missing = int(merged.isna().sum())
    if n_missing:
        logger.warning("%s: %d of %d cells have no label", path, n_missing, adata.n_obs)
    adata.obs[label_key] = as_label_categories(merged)
    return adata


