"""File helpers shared by every stage: clear input errors and atomic writes.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger("cellbridge")


class InputError(ValueError):
    """An input file or value is unusable; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def require_path(path: str | os.PathLike, what: str = "input") -> Path:
    """Return ``path`` as a :class:`Path`, raising :class:`InputError` if it does not exist."""
    p = Path(path)
    if not p.exists():
        raise InputError(p, f"{what} does not exist")
    if p.is_file() and not os.access(p, os.R_OK):
        raise InputError(p, f"{what} is not readable")
    return p


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
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_h5ad(adata, path: str | os.PathLike) -> Path:
    """Write an AnnData atomically (compressed) and return the destination path."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")
    return Path(path)


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
