"""File helpers shared by every stage: clear input errors, atomic writes, matrices left on disk.

Every output is written to a temporary file in the destination folder and moved
into place with :func:`os.replace`, so an interrupted or failed step never leaves
a half-written file that a later step (or Snakemake) would mistake for a result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger("cellbridge")


class InputError(ValueError):
    """An input file or value is unusable; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class DiskFullError(InputError):
    """No space was left on the device while writing an output.

    After a failed HDF5 write the library's own exit handler can crash the interpreter
    (a segfault once the error has been reported), so the command-line entry points end
    the process through :func:`exit_process` instead of a normal shutdown.
    """


def exit_process(err: BaseException, code: int) -> None:
    """End the process at once (no interpreter shutdown) after a :class:`DiskFullError`.

    Does nothing for any other error. Standard streams are flushed first; callers close
    their log files before calling.
    """
    if not isinstance(err, DiskFullError):
        return
    import sys

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def require_path(path: str | os.PathLike, what: str = "input") -> Path:
    """Return ``path`` as a :class:`Path`, raising :class:`InputError` if it does not exist."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, f"{what} does not exist")
    if p.is_file() and not os.access(p, os.R_OK):
        raise InputError(p, f"{what} is not readable")
    return p


def load_tensors(path: str | os.PathLike, what: str, *, map_location: Any = "cpu") -> Any:
    """``torch.load`` of tensors only, with a one-line :class:`InputError` when that fails.

    Parameters
    ----------
    path
        A file written by ``torch.save`` (a model's ``model.pt``, a training checkpoint).
    what
        What the file is, for the message (e.g. ``"model weights"``).
    map_location
        Passed to :func:`torch.load`.

    Raises
    ------
    InputError
        Naming ``path``: empty, truncated or not a PyTorch file, or holding objects other
        than tensors and plain containers. The last is refused outright: such a pickle can
        run code when loaded, so unlike torch's own message this never suggests
        ``weights_only=False``.
    """
    import pickle

    import torch

    p = require_path(path, what)
    if p.stat().st_size == 0:
        raise InputError(p, f"{what} file is empty (an interrupted write?); delete it and rerun the step that wrote it")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise InputError(
                p, f"{what} file holds objects other than tensors (a pickle that could run code); refused to load it"
            ) from None
        logger.debug("torch.load(%s) failed: %s", p, err)
        raise InputError(p, f"{what} file is damaged (not a PyTorch file?); delete it and rerun the step that wrote it") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, IndexError, KeyError) as err:
        # torch reports truncated zip archives and foreign files with internal messages
        # (a miniz error, a bare key) that say nothing to a user: kept for --verbose only
        logger.debug("torch.load(%s) failed: %s", p, err)
        raise InputError(p, f"{what} file is truncated or not a PyTorch file; delete it and rerun the step that wrote it") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    The temporary file keeps the destination's suffix (or ``suffix``) because some
    writers (matplotlib, anndata) choose the format from it.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=suffix if suffix is not None else dest.suffix, dir=dest.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates files readable by the owner only; give the result the
        # permissions a plain open() would (shared project folders on clusters).
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    except (OSError, RuntimeError) as err:
        # writers report a full disk in their own words (torch: "enforce fail at
        # inline_container.cc ... unexpected pos"); checked while the partial file still fills it
        if _disk_full(err, dest.parent):
            raise DiskFullError(dest, "no space left on the device while writing it; free some space and rerun") from err
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


#: free space below which a failed write is put down to a full disk
_NEARLY_FULL_BYTES = 1 << 20


def _disk_full(err: BaseException, folder: Path) -> bool:
    """Whether a failed write is explained by a full disk (or an exhausted quota)."""
    import errno
    import shutil

    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(err):
        return True
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL_BYTES
    except OSError:
        return False


def read_h5ad(
    path: str | os.PathLike,
    what: str,
    *,
    layers: Collection[str] | None = None,
    lazy_x: bool = False,
    backed: bool = False,
):
    """Read an AnnData, with an :class:`InputError` naming ``what`` when it is missing or unreadable.

    Parameters
    ----------
    path
        The ``.h5ad`` file.
    what
        What the file is, for the message (e.g. ``"translation rna -> image"``).
    layers
        Layers to read (``None``: all). Training reads only what its likelihoods use:
        a Gaussian RNA domain never reads its raw counts.
    lazy_x
        Leave a sparse (CSR) ``X`` in the file: ``adata.X`` is then anndata's on-disk
        dataset, whose rows are read when selected (the file stays open while it is
        referenced). A dense ``X`` is read as usual.
    backed
        Open in anndata's backed mode (``X``, sparse or dense, stays in the file; the rest
        is read): for reading a few rows of a large result.
    """
    import anndata as ad

    p = require_path(path, what)
    try:
        if backed:
            return ad.read_h5ad(p, backed="r")
        if layers is None and not lazy_x:
            return ad.read_h5ad(p)
        return _read_h5ad_parts(p, layers=layers, lazy_x=lazy_x)
    except (OSError, KeyError, ValueError) as err:
        logger.debug("reading %s failed: %s", p, err)
        raise InputError(p, f"{what} is not a readable .h5ad file (truncated?); delete it and rerun the step that wrote it") from None


def _read_h5ad_parts(path: Path, *, layers: Collection[str] | None, lazy_x: bool):
    """An AnnData from the elements of an ``.h5ad`` file: chosen layers, ``X`` optionally left on disk."""
    import anndata as ad
    import h5py
    from anndata.io import read_elem, sparse_dataset

    f = h5py.File(path, "r")
    try:
        x = f.get("X")
        if x is not None and lazy_x and isinstance(x, h5py.Group) and x.attrs.get("encoding-type") == "csr_matrix":
            x = sparse_dataset(x)  # keeps the file open
        elif x is not None:
            x = read_elem(x)
        parts = {key: read_elem(f[key]) for key in ("obs", "var", "uns", "obsm", "varm", "obsp", "varp") if key in f}
        stored = f.get("layers", {})
        keep = list(stored) if layers is None else [k for k in layers if k in stored]
        adata = ad.AnnData(X=x, layers={k: read_elem(stored[k]) for k in keep}, **parts)
    except BaseException:
        f.close()
        raise
    if not lazy_x or not hasattr(adata.X, "group"):
        f.close()
    return adata


def is_user_error(err: BaseException) -> bool:
    """Errors whose message says all a user needs: reported in one line, without a traceback.

    :class:`InputError` and :class:`~cellbridge.training.TrainingDivergedError` (looked up
    only when training was imported, so checking never imports torch).
    """
    import sys

    training = sys.modules.get("cellbridge.training")
    expected: tuple[type[BaseException], ...] = (InputError,)
    if training is not None:
        expected += (training.TrainingDivergedError,)
    return isinstance(err, expected)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_h5ad(adata, path: str | os.PathLike, *, compression: str | None = "gzip") -> Path:
    """Write an AnnData atomically (gzip-compressed unless ``compression=None``); return the path."""
    with atomic_path(path) as tmp, _quiet_h5py_cleanup():
        adata.write_h5ad(tmp, compression=compression)
    return Path(path)


@contextlib.contextmanager
def _quiet_h5py_cleanup() -> Iterator[None]:
    """Keep h5py's clean-up errors after a failed write off stderr (logged at debug level).

    When a write fails (a full disk), every HDF5 object freed on the way out fails to
    flush, and h5py's ``__dealloc__`` prints its traceback twice (through
    ``sys.excepthook`` and ``sys.unraisablehook``): dozens of lines burying the one error
    that says what happened.
    """
    import sys
    import traceback

    previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

    def from_h5py_cleanup(tb) -> bool:
        return any("h5py/_objects" in frame.filename for frame in traceback.extract_tb(tb))

    def unraisable_hook(unraisable) -> None:
        if "h5py" in repr(unraisable.object) or from_h5py_cleanup(unraisable.exc_traceback):
            logger.debug("h5py clean-up after a failed write: %s", unraisable.exc_value)
        else:
            previous_unraisable(unraisable)

    def except_hook(kind, value, tb) -> None:
        if from_h5py_cleanup(tb):
            logger.debug("h5py clean-up after a failed write: %s", value)
        else:
            previous_except(kind, value, tb)

    sys.unraisablehook, sys.excepthook = unraisable_hook, except_hook
    try:
        yield
    finally:
        sys.unraisablehook, sys.excepthook = previous_unraisable, previous_except


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically; numpy scalars and arrays are converted to plain Python."""

    def _default(o):
        if hasattr(o, "tolist"):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o).__name__}")

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_default, allow_nan=True) + "\n")
    return Path(path)


def write_table(df, path: str | os.PathLike, **kwargs) -> Path:
    """Write a pandas DataFrame as TSV atomically."""
    kwargs.setdefault("sep", "\t")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)
    return Path(path)


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


# ------------------------------------------------------------ matrices left in their file
#: entries handled at once by the whole-matrix checks and statistics below, so their
#: temporaries stay small (a few tens of MB) however many cells a domain has
BLOCK_ENTRIES = 1 << 22


def block_rows(row_size: int) -> int:
    """Rows per block so that a block holds about :data:`BLOCK_ENTRIES` entries."""
    return max(1, BLOCK_ENTRIES // max(1, row_size))


class OnDiskCSR:
    """A CSR matrix left in its ``.h5ad`` file; rows are read when selected.

    Wraps anndata's on-disk sparse dataset with what training and the whole-matrix
    checks need: ``shape``, ``ndim``, ``dtype`` and row selection by slice or integer
    array (``m[rows]``, an in-memory float32 CSR with the rows in the order asked), with
    an optional column order applied after reading (a model's feature order).

    Parameters
    ----------
    dataset
        ``anndata.abc.CSRDataset`` (``anndata.io.sparse_dataset`` of the file's ``X``).
    columns
        Column indices to keep, in order (``None``: all).
    binary
        Return ``1`` where a value is positive, else ``0`` (a Bernoulli target read from ``X``).
    """

    ndim = 2
    dtype = np.dtype(np.float32)
    #: an index array is read as the contiguous span it covers when the span is at most
    #: this many times its length (one sequential read beats many small ones)
    SPAN_FACTOR = 4

    def __init__(self, dataset: Any, columns: np.ndarray | None = None, *, binary: bool = False):
        self.dataset = dataset
        self.columns = columns
        self.binary = binary
        n_rows, n_cols = dataset.shape
        self.shape = (n_rows, n_cols if columns is None else len(columns))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice | np.ndarray) -> sp.csr_matrix:
        if isinstance(rows, slice):
            block = self.dataset[rows]
        else:
            rows = np.asarray(rows, dtype=np.int64).reshape(-1)
            if rows.size == 0:
                return sp.csr_matrix((0, self.shape[1]), dtype=np.float32)
            low, high = int(rows.min()), int(rows.max()) + 1
            if high - low <= self.SPAN_FACTOR * rows.size:
                block = self.dataset[low:high][rows - low]
            else:
                # the file is read in increasing row order, once per distinct row
                unique, inverse = np.unique(rows, return_inverse=True)
                block = self.dataset[unique][inverse]
        if self.columns is not None:
            block = block[:, self.columns]
        if self.binary:
            block = block > 0
        return sp.csr_matrix(block, dtype=np.float32)

    def with_columns(self, columns: np.ndarray | None) -> OnDiskCSR:
        """The same file with ``columns`` (of this view) selected."""
        if columns is None:
            return self
        base = columns if self.columns is None else self.columns[columns]
        return OnDiskCSR(self.dataset, base, binary=self.binary)

    def binarized(self) -> OnDiskCSR:
        """The same file read as 0/1 (positive entries -> 1)."""
        return OnDiskCSR(self.dataset, self.columns, binary=True)

    def blocks(self) -> Iterator[sp.csr_matrix]:
        """The whole matrix as consecutive in-memory row blocks of about :data:`BLOCK_ENTRIES` values."""
        step = block_rows(self.shape[1])
        for start in range(0, self.shape[0], step):
            yield self[start : start + step]


def on_disk(mat: Any) -> bool:
    """Whether ``mat`` is a sparse matrix left in its file (anndata's dataset or :class:`OnDiskCSR`)."""
    if isinstance(mat, OnDiskCSR):
        return True
    try:
        from anndata.abc import CSRDataset
    except ImportError:  # anndata < 0.11 has no lazy datasets
        return False
    return isinstance(mat, CSRDataset)


def as_rows(mat: Any) -> Any:
    """``mat`` with on-disk datasets wrapped in :class:`OnDiskCSR`; anything else unchanged."""
    if on_disk(mat) and not isinstance(mat, OnDiskCSR):
        return OnDiskCSR(mat)
    return mat
