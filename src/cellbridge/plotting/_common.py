"""What every figure shares: colours per domain and label, input checks, feature picks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from matplotlib import colormaps
from matplotlib.colors import to_hex


ArrayLike = Any  # numpy array, scipy sparse matrix, or anything np.asarray accepts

# Fixed colours per modality so that a domain looks the same in every figure.
_MODALITY_COLORS: dict[str, str] = {
    "rna": "#1b9e77",  # teal
    "atac": "#d95f02",  # orange
    "image": "#7570b3",  # purple
    "protein": "#e7298a",  # pink
}
_MODALITY_ALIASES: dict[str, tuple[str, ...]] = {
    "rna": ("rna", "gex", "expression"),
    "atac": ("atac", "chromatin", "peak"),
    "image": ("image", "img", "nucle", "microscopy", "morph"),
    "protein": ("protein", "adt", "cite"),
}
_EXTRA_COLORS = ("#66a61e", "#e6ab02", "#a6761d", "#1f78b4", "#b15928", "#666666", "#fb9a99", "#6a3d9a")
_UNLABELLED = "unlabelled"
_UNLABELLED_COLOR = "#c8c8c8"

# ------------------------------------------------------------------------------ helpers


def domain_colors(domains: Iterable[str]) -> dict[str, str]:
    """Colour of each domain, the same in every cellbridge figure.

    A domain whose name names a modality (``rna``, ``atac``, ``image``/``nuclei``,
    ``protein``, matched case-insensitively as a substring) gets that modality's colour;
    the first domain of each modality takes it and any further one, or a domain with
    another name, takes the next unused colour of a fixed list, in the order given.

    Parameters
    ----------
    domains
        Domain names.

    Returns
    -------
    dict
        Domain name -> hex colour.
    """
    names = list(dict.fromkeys(str(d) for d in domains))
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        low = name.lower()
        for modality, aliases in _MODALITY_ALIASES.items():
            colour = _MODALITY_COLORS[modality]
            if colour not in used and any(a in low for a in aliases):
                out[name] = colour
                used.add(colour)
                break
    spare = [c for c in (*_EXTRA_COLORS, *_MODALITY_COLORS.values()) if c not in used]
    for name in names:
        if name not in out:
            out[name] = spare.pop(0) if spare else to_hex(colormaps["tab20"](len(out) % 20))
    return out


def _category_colors(categories: Sequence[str]) -> dict[str, str]:
    """Distinct colours for categorical labels (grey for the unlabelled category)."""
    cats = [c for c in categories if c != _UNLABELLED]
    if len(cats) <= 10:
        cmap, positions = colormaps["tab10"], range(len(cats))
        colours = [to_hex(cmap(i)) for i in positions]
    elif len(cats) <= 20:
        cmap = colormaps["tab20"]
        colours = [to_hex(cmap(i)) for i in range(len(cats))]
    else:
        cmap = colormaps["turbo"]
        colours = [to_hex(cmap(x)) for x in np.linspace(0.05, 0.95, len(cats))]
    out = dict(zip(cats, colours, strict=True))
    out[_UNLABELLED] = _UNLABELLED_COLOR
    return out


def _positive_int(value: Any, name: str, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _as_2d(x: ArrayLike, name: str) -> np.ndarray | sp.csr_matrix:
    """2-D float array or CSR matrix (NaN allowed); ValueError naming ``name`` otherwise."""
    if sp.issparse(x):
        return sp.csr_matrix(x, dtype=np.float64)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (cells x features), got shape {arr.shape}")
    return arr


def _as_crops(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"{name} must have shape (n_cells, height, width), got {arr.shape}")
    return arr


def _dense_columns(x: np.ndarray | sp.csr_matrix, cols: Any) -> np.ndarray:
    block = x[:, cols]
    return block.toarray() if sp.issparse(block) else np.asarray(block)


def _dense_rows(x: np.ndarray | sp.csr_matrix, rows: Any) -> np.ndarray:
    block = x[rows]
    return block.toarray() if sp.issparse(block) else np.asarray(block)


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


# ----------------------------------------------------------------- correlation selection


def best_and_worst(r: ArrayLike, n_best: int = 3, n_worst: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the features with the highest and the lowest correlation.

    NaN entries are never chosen. When there are fewer defined values than
    ``n_best + n_worst``, the best are filled first and the worst take only what is
    left, so no feature appears twice. Ties keep the lower index first.

    Parameters
    ----------
    r
        1-D per-feature scores (e.g. Pearson r), NaN where undefined.
    n_best, n_worst
        How many of each to return (>= 0).

    Returns
    -------
    best, worst
        Integer index arrays; ``best`` ordered from the highest value down, ``worst``
        from the lowest value up.

    Examples
    --------
    >>> best_and_worst([0.1, 0.9, float("nan"), -0.3, 0.5], 2, 1)
    (array([1, 4]), array([3]))
    """
    arr = np.asarray(r, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"r must be 1-D (one value per feature), got shape {arr.shape}")
    n_best = _positive_int(n_best, "n_best", allow_zero=True)
    n_worst = _positive_int(n_worst, "n_worst", allow_zero=True)
    finite = np.flatnonzero(np.isfinite(arr))
    descending = finite[np.argsort(-arr[finite], kind="stable")]
    best = descending[:n_best]
    rest = descending[len(best) :]
    ascending = rest[np.argsort(arr[rest], kind="stable")]
    worst = ascending[:n_worst]
    return best.astype(np.intp), worst.astype(np.intp)
