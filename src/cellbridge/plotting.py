"""Evaluation figures: pure functions from arrays or tables to a PNG.

Every function takes numpy arrays (scipy sparse matrices where a modality is usually
stored sparse) or a :class:`pandas.DataFrame`, draws one figure, writes it atomically
with :func:`cellbridge._io.save_figure` and returns the path. None of them reads
files or model objects, so each can be called from a stage, a notebook or a test.

* :func:`plot_joint_latent` -- UMAP (or PCA) of the joint latent space, coloured by
  domain and by cell label;
* :func:`plot_translation_scatter` -- predicted vs measured values of the best- and
  worst-predicted features, with the distribution of per-feature Pearson r;
* :func:`plot_image_gallery` -- source cells, predicted nuclei and measured nuclei;
* :func:`plot_comparison` -- one panel per metric, one bar per method (mean +- std
  over seeds), with the ``none`` (no alignment) and ``trivial`` (training mean)
  references as lines;
* :func:`plot_latent_shift` -- predicted change of every domain after adding an
  attribute vector in latent space;
* :func:`plot_reconstruction_vs_pca` -- held-out reconstruction error of the
  autoencoder vs PCA at the same latent size vs the training-mean predictor.

Missing values (NaN) are skipped, never propagated into a whole panel; inputs whose
shapes do not match raise a :class:`ValueError` naming the arguments. Domains keep
the same colour in every figure (:func:`domain_colors`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ._io import logger, save_figure
from .metrics import per_feature_correlation

__all__ = [
    "LOWER_IS_BETTER",
    "METRIC_NAMES",
    "REFERENCE_METHODS",
    "best_and_worst",
    "domain_colors",
    "plot_comparison",
    "plot_image_gallery",
    "plot_joint_latent",
    "plot_latent_shift",
    "plot_reconstruction_vs_pca",
    "plot_translation_scatter",
    "metric_label",
]

ArrayLike = Any  # numpy array, scipy sparse matrix, or anything np.asarray accepts

#: Metrics (or metric-name parts, see :func:`plot_comparison`) for which smaller is better.
LOWER_IS_BETTER: frozenset[str] = frozenset(
    {"foscttm", "rmse", "mse", "pixel_mse", "reconstruction_error", "silhouette_by_domain", "loss"}
)

#: Rows of a comparison table drawn as reference lines instead of bars:
#: ``none`` = autoencoders trained without alignment loss, ``trivial`` = predict the training mean.
REFERENCE_METHODS: tuple[str, ...] = ("none", "trivial")

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

# Predictor colours of plot_reconstruction_vs_pca.
_PREDICTORS: tuple[tuple[str, str, str], ...] = (
    ("autoencoder", "autoencoder", "#2c7fb8"),
    ("pca", "PCA (same latent size)", "#fdae61"),
    ("mean_predictor", "training mean", "#969696"),
)
_PREDICTOR_ALIASES: dict[str, str] = {
    "autoencoder": "autoencoder",
    "ae": "autoencoder",
    "model": "autoencoder",
    "pca": "pca",
    "mean_predictor": "mean_predictor",
    "mean": "mean_predictor",
    "training_mean": "mean_predictor",
    "trivial": "mean_predictor",
}


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


# ---------------------------------------------------------------------------- joint latent


def _embed_2d(z: np.ndarray, embedding: str, seed: int) -> tuple[np.ndarray, str, tuple[str, str], str]:
    """2-D coordinates of ``z``: (coords, method name, axis labels, note for the title)."""
    note = ""
    if embedding == "umap":
        if z.shape[0] < 10:
            note = "too few cells for UMAP"
        else:
            try:
                import umap  # noqa: PLC0415  (slow import, only when needed)
            except ImportError:
                note = "umap-learn is not installed"
                logger.warning("umap-learn is not installed; the joint latent is drawn with PCA")
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    reducer = umap.UMAP(n_neighbors=min(15, z.shape[0] - 1), random_state=seed, n_components=2)
                    coords = np.asarray(reducer.fit_transform(z), dtype=np.float64)
                return coords, "UMAP", ("UMAP 1", "UMAP 2"), ""
    centred = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, vt.shape[0])
    coords = np.zeros((z.shape[0], 2))
    coords[:, :k] = centred @ vt[:k].T
    total = float((s**2).sum())
    share = [(s[i] ** 2 / total * 100) if total > 0 and i < k else 0.0 for i in range(2)]
    return coords, "PCA", (f"PC 1 ({share[0]:.0f}% of variance)", f"PC 2 ({share[1]:.0f}% of variance)"), note


def plot_joint_latent(
    latents: Mapping[str, ArrayLike],
    *,
    labels: Mapping[str, ArrayLike] | None = None,
    path: str | os.PathLike,
    method: str = "",
    seed: int = 0,
    max_cells: int = 5000,
    embedding: Literal["umap", "pca"] = "umap",
) -> Path:
    """Draw the joint latent space of all domains, coloured by domain and by label.

    One 2-D embedding (UMAP, or PCA when umap-learn is missing or there are fewer than
    10 cells; the title then says so) is computed on the concatenated latent of all
    domains, so the panels are directly comparable: a well-integrated model mixes the
    domain colours while keeping the label colours separate.

    Parameters
    ----------
    latents
        Domain name -> latent coordinates ``(n_cells, n_dims)``; every domain the same
        ``n_dims``. Cells with a non-finite coordinate are left out (counted in the title).
    labels
        Optional domain name -> one label per cell (e.g. cell type). Domains without an
        entry, and missing labels, are drawn as "unlabelled" in grey. Without ``labels``
        only the domain panel is drawn.
    path
        PNG to write (atomically).
    method
        Model / alignment name for the title.
    seed
        Seed of the subsampling and of UMAP.
    max_cells
        At most this many cells are embedded, subsampled from each domain in
        proportion to its size.
    embedding
        ``"umap"`` (default) or ``"pca"``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if not latents:
        raise ValueError("latents is empty; pass at least one domain")
    if embedding not in ("umap", "pca"):
        raise ValueError(f"embedding must be 'umap' or 'pca', got {embedding!r}")
    max_cells = _positive_int(max_cells, "max_cells")
    labels = dict(labels or {})
    unknown = sorted(set(labels) - set(latents))
    if unknown:
        raise ValueError(f"labels has domains {unknown} that are not in latents {sorted(latents)}")

    arrays: dict[str, np.ndarray] = {}
    label_arrays: dict[str, np.ndarray] = {}
    n_dims = None
    for name, z in latents.items():
        arr = np.asarray(z.toarray() if sp.issparse(z) else z, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"latents[{name!r}] must be 2-D (cells x latent dims), got shape {arr.shape}")
        if n_dims is None:
            n_dims = arr.shape[1]
        elif arr.shape[1] != n_dims:
            raise ValueError(
                f"latents[{name!r}] has {arr.shape[1]} latent dims but the first domain has {n_dims}; "
                "all domains must share one latent space"
            )
        arrays[str(name)] = arr
        if name in labels:
            lab = np.asarray(labels[name], dtype=object)
            if lab.ndim != 1 or lab.shape[0] != arr.shape[0]:
                raise ValueError(
                    f"labels[{name!r}] has shape {lab.shape} but latents[{name!r}] has {arr.shape[0]} cells"
                )
            lab = np.where(pd.isna(lab), _UNLABELLED, lab).astype(str)
        else:
            lab = np.full(arr.shape[0], _UNLABELLED, dtype=object).astype(str)
        label_arrays[str(name)] = lab

    rng = np.random.default_rng(seed)
    total = sum(a.shape[0] for a in arrays.values())
    parts_z, parts_dom, parts_lab = [], [], []
    n_dropped = 0
    n_input: dict[str, int] = {}
    for name, arr in arrays.items():
        keep = np.flatnonzero(np.all(np.isfinite(arr), axis=1))
        n_dropped += arr.shape[0] - keep.size
        n_input[name] = arr.shape[0]
        if total > max_cells and keep.size:
            take = max(1, int(max_cells * arr.shape[0] / total))
            if take < keep.size:
                keep = np.sort(rng.choice(keep, size=take, replace=False))
        parts_z.append(arr[keep])
        parts_dom.append(np.full(keep.size, name, dtype=object))
        parts_lab.append(label_arrays[name][keep])
    z = np.concatenate(parts_z)
    dom = np.concatenate(parts_dom).astype(str)
    lab = np.concatenate(parts_lab).astype(str)
    if z.shape[0] == 0:
        raise ValueError("no cell has a finite latent coordinate; nothing to draw")

    coords, embed_name, axis_labels, note = _embed_2d(z, embedding, seed)
    order = rng.permutation(z.shape[0])  # no domain is drawn on top of the others
    size = float(np.clip(4000.0 / z.shape[0], 1.0, 30.0))
    dcolors = domain_colors(arrays)
    has_labels = bool(labels)
    categories = sorted(set(lab) - {_UNLABELLED}) + ([_UNLABELLED] if _UNLABELLED in set(lab) else [])
    lcolors = _category_colors(categories)

    n_panels = 2 if has_labels else 1
    fig = Figure(figsize=(6.2 * n_panels, 4.6))
    axes = np.atleast_1d(fig.subplots(1, n_panels))
    panels = [("domain", dom, dcolors, list(arrays))]
    if has_labels:
        panels.append(("label", lab, lcolors, categories))
    for ax, (what, values, colours, cats) in zip(axes, panels, strict=True):
        ax.scatter(
            coords[order, 0],
            coords[order, 1],
            c=[colours[v] for v in values[order]],
            s=size,
            linewidths=0,
            alpha=0.8,
            rasterized=True,
        )
        handles = []
        for cat in cats:
            count = int(np.sum(values == cat))
            if what == "domain":
                text = f"{cat} ({count} of {n_input[cat]} cells)" if count != n_input[cat] else f"{cat} ({count} cells)"
            else:
                text = f"{_truncate(cat, 28)} ({count})"
            handles.append(Line2D([], [], marker="o", linestyle="", color=colours[cat], markersize=6, label=text))
        ncol = max(1, math.ceil(len(handles) / 22))
        ax.legend(
            handles=handles,
            title="domain" if what == "domain" else "cell label",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=7,
            title_fontsize=8,
            frameon=False,
            ncol=ncol,
        )
        ax.set_title(f"coloured by {what}", fontsize=10)
        ax.set_xlabel(axis_labels[0], fontsize=9)
        ax.set_ylabel(axis_labels[1], fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")

    head = f"{method}: joint latent space" if method else "Joint latent space"
    details = [f"{z.shape[0]} cells from {len(arrays)} domains", f"{embed_name} of the {n_dims}-d latent"]
    if z.shape[0] + n_dropped < total:
        details.append(f"subsampled from {total}")
    if n_dropped:
        details.append(f"{n_dropped} cells with NaN latent left out")
    if note:
        details.append(note)
    fig.suptitle(f"{head}\n" + "; ".join(details), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# ------------------------------------------------------------------ translation scatter


def plot_translation_scatter(
    pred: ArrayLike,
    true: ArrayLike,
    *,
    feature_names: Sequence[str],
    per_feature_r: ArrayLike | None = None,
    path: str | os.PathLike,
    n_best: int = 3,
    n_worst: int = 3,
    title: str = "",
    max_points: int = 3000,
    seed: int = 0,
    pred_label: str = "predicted",
    true_label: str = "measured",
    units: str = "",
    varying_quantile: float = 0.5,
) -> Path:
    """Draw predicted vs measured values of the best- and worst-predicted features.

    Top row: the ``n_best`` features with the highest Pearson r; second row: the
    ``n_worst`` with the lowest among the features whose measured SD is at least its
    ``varying_quantile`` quantile over features (a near-constant feature's r is noise);
    one scatter per feature (one point per cell) with the identity line. Right:
    histogram of the r of all features, with the median and the shown features marked.

    Parameters
    ----------
    pred, true
        ``(n_cells, n_features)`` arrays or scipy sparse matrices of the same shape
        (same cells, same features, same order). NaN entries are skipped.
    feature_names
        One name per feature.
    per_feature_r
        Per-feature correlation already computed (e.g. by
        :func:`cellbridge.metrics.per_feature_correlation`); computed with
        :func:`cellbridge.metrics.per_feature_correlation` when not given.
    path
        PNG to write (atomically).
    n_best, n_worst
        Number of best and worst features to show (see :func:`best_and_worst`).
    title
        Figure title, e.g. ``"RNA -> ATAC gene activity, held-out cells"``.
    max_points
        At most this many cells are drawn per scatter (random subsample).
    seed
        Seed of that subsample.
    pred_label, true_label
        Axis labels.
    units
        What the values are (e.g. ``"log1p-normalised expression"``), added to the axis labels.
    varying_quantile
        The worst features are chosen among those whose measured SD is at least this
        quantile of the features' SDs (0: among all features).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    p = _as_2d(pred, "pred")
    t = _as_2d(true, "true")
    if p.shape != t.shape:
        raise ValueError(
            f"pred has shape {p.shape} but true has shape {t.shape}; they must hold the same cells and features"
        )
    names = [str(x) for x in feature_names]
    if len(names) != p.shape[1]:
        raise ValueError(f"feature_names has {len(names)} entries but pred and true have {p.shape[1]} features")
    if per_feature_r is None:
        r = per_feature_correlation(p, t)
    else:
        r = np.asarray(per_feature_r, dtype=np.float64)
        if r.shape != (p.shape[1],):
            raise ValueError(f"per_feature_r has shape {r.shape} but pred and true have {p.shape[1]} features")
    max_points = _positive_int(max_points, "max_points")
    # the worst are ranked among features that vary: a near-constant (noise) feature has an
    # r near 0 that says nothing about the translation
    _, sd = _column_mean_std(t)
    varying = np.isfinite(sd) & (sd >= np.nanquantile(sd, varying_quantile)) if np.isfinite(sd).any() else sd > 0
    best, _ = best_and_worst(r, n_best, 0)
    r_varying = np.where(varying, r, np.nan)
    r_varying[best] = np.nan
    _, worst = best_and_worst(r_varying, 0, n_worst)

    rows: list[tuple[str, np.ndarray]] = []
    if best.size:
        rows.append(("best", best))
    if worst.size:
        rows.append(("worst", worst))
    n_cols = max([len(idx) for _, idx in rows], default=0)
    n_rows = max(len(rows), 1)
    fig = Figure(figsize=(2.7 * n_cols + 3.6, 2.8 * n_rows + 0.6))
    grid = fig.add_gridspec(n_rows, n_cols + 1, width_ratios=[1.0] * n_cols + [1.35])

    rng = np.random.default_rng(seed)
    cells = np.arange(p.shape[0])
    if cells.size > max_points:
        cells = np.sort(rng.choice(cells, size=max_points, replace=False))
    for row, (kind, indices) in enumerate(rows):
        colour = "#1a9850" if kind == "best" else "#d73027"
        for col, j in enumerate(indices):
            ax = fig.add_subplot(grid[row, col])
            x = _dense_columns(t, [int(j)])[cells, 0]
            y = _dense_columns(p, [int(j)])[cells, 0]
            ok = np.isfinite(x) & np.isfinite(y)
            ax.scatter(x[ok], y[ok], s=5, alpha=0.5, color=colour, linewidths=0, rasterized=True)
            if ok.any():
                lo = float(min(x[ok].min(), y[ok].min()))
                hi = float(max(x[ok].max(), y[ok].max()))
                pad = 0.05 * (hi - lo) if hi > lo else 0.5
                ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="black", linestyle="--", linewidth=0.8)
            ax.set_title(f"{kind} #{col + 1}: {_truncate(names[j], 22)}\nr = {r[j]:.2f}", fontsize=9.5, color=colour)
            ax.set_xlabel(f"{true_label}\n({units})" if units else true_label, fontsize=8.5)
            if col == 0:
                ax.set_ylabel(f"{pred_label}\n({units})" if units else pred_label, fontsize=8.5)
            ax.tick_params(labelsize=7.5)

    hist = fig.add_subplot(grid[:, n_cols])
    finite = r[np.isfinite(r)]
    n_undefined = int(r.size - finite.size)
    if finite.size:
        bins = 40 if finite.size >= 100 else 20  # width 0.05 or 0.1 on [-1, 1]
        hist.hist(finite, bins=bins, range=(-1.0, 1.0), color="#4d4d4d", alpha=0.8)
        median = float(np.median(finite))
        hist.axvline(median, color="black", linestyle="-", linewidth=1.2, label=f"median r = {median:.2f}")
        for kind, indices in rows:
            colour = "#1a9850" if kind == "best" else "#d73027"
            for k, j in enumerate(indices):
                hist.axvline(r[j], color=colour, linestyle=":", linewidth=1, label=f"{kind} shown" if k == 0 else None)
        hist.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    else:
        hist.text(0.5, 0.5, "no feature has a defined r", ha="center", va="center", transform=hist.transAxes)
    hist.set_xlim(-1.05, 1.05)
    hist.set_xlabel(f"Pearson r ({pred_label} vs {true_label})", fontsize=8)
    hist.set_ylabel("features", fontsize=8)
    sub = f"all {r.size} features"
    if worst.size and varying_quantile > 0:
        sub += f"\n(worst: among the {int(varying.sum())} most variable)"
    if n_undefined:
        sub += f"\n({n_undefined} undefined: constant or missing)"
    hist.set_title(sub, fontsize=9)
    hist.tick_params(labelsize=7)

    head = title or "Translation: predicted vs measured"
    drawn = f" ({cells.size} drawn per panel)" if cells.size < p.shape[0] else ""
    fig.suptitle(f"{head}\n{p.shape[0]} cells, one point per cell{drawn}", fontsize=10.5)
    fig.tight_layout()
    return save_figure(fig, path)


# ------------------------------------------------------------------------- image gallery


def _column_mean_std(x: np.ndarray | sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """NaN-skipping column mean and standard deviation (dense or sparse)."""
    if sp.issparse(x):
        mean = np.asarray(x.mean(axis=0)).ravel()
        sq = np.asarray(x.multiply(x).mean(axis=0)).ravel()
        return mean, np.sqrt(np.maximum(sq - mean**2, 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=0), np.nanstd(x, axis=0)


def plot_image_gallery(
    pred_crops: ArrayLike,
    *,
    source: ArrayLike | None = None,
    true_crops: ArrayLike | None = None,
    path: str | os.PathLike,
    n: int = 12,
    seed: int = 0,
    source_kind: Literal["image", "vector"] = "vector",
    source_feature_names: Sequence[str] | None = None,
    source_name: str = "source",
    labels: ArrayLike | None = None,
    row_labels: Sequence[str] | None = None,
    n_top_features: int = 5,
    cell_names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Draw example cells: their source, the predicted nucleus and the measured nucleus.

    One column per example cell (a random subset of ``n``, grouped by label when
    ``labels`` are given). Rows:

    1. the source cell, when ``source`` is given: its crop for an image source, or for a
       vector source (RNA, ATAC, ...) a bar chart of the ``n_top_features`` features most
       above their average in this cell (z-score over all cells passed, positive only), with names;
    2. the nucleus predicted from it;
    3. the measured nucleus, when ``true_crops`` is given (e.g. for paired test data).

    All crops share one grayscale intensity scale (0 to the 99.5th percentile of the
    shown crops) with a colorbar; NaN pixels are drawn red.

    Parameters
    ----------
    pred_crops
        ``(n_cells, S, S)`` predicted nucleus images.
    source
        Optional source of each prediction, row ``i`` -> crop ``i``: ``(n_cells, S', S')``
        images for ``source_kind="image"``, ``(n_cells, n_features)`` array or sparse
        matrix for ``"vector"``.
    true_crops
        Optional measured nuclei, same shape as ``pred_crops``.
    path
        PNG to write (atomically).
    n
        Number of example cells (all if there are fewer).
    seed
        Seed of the choice of examples.
    source_kind
        ``"image"`` or ``"vector"``.
    source_feature_names
        Feature names of a vector source (default ``feature 0``, ``feature 1``, ...).
    source_name
        Name of the source domain, used in the default row label.
    labels
        Optional label per cell (e.g. cell type), shown above each column.
    row_labels
        Override the row labels, one per drawn row.
    n_top_features
        Bars per vector-source cell.
    cell_names
        One name per cell (e.g. ``obs_names``) shown above each column (default: the row index).
    title
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    pred = _as_crops(pred_crops, "pred_crops")
    n_cells = pred.shape[0]
    if n_cells == 0:
        raise ValueError("pred_crops holds no cells")
    n = _positive_int(n, "n")
    n_top_features = _positive_int(n_top_features, "n_top_features")
    if source_kind not in ("image", "vector"):
        raise ValueError(f"source_kind must be 'image' or 'vector', got {source_kind!r}")
    true = None
    if true_crops is not None:
        true = _as_crops(true_crops, "true_crops")
        if true.shape != pred.shape:
            raise ValueError(f"true_crops has shape {true.shape} but pred_crops has shape {pred.shape}")
    src = None
    names: list[str] = []
    if source is not None:
        if source_kind == "image":
            src = _as_crops(source, "source")
        else:
            src = _as_2d(source, "source")
            names = (
                [str(x) for x in source_feature_names]
                if source_feature_names is not None
                else [f"feature {j}" for j in range(src.shape[1])]
            )
            if len(names) != src.shape[1]:
                raise ValueError(
                    f"source_feature_names has {len(names)} entries but source has {src.shape[1]} features"
                )
        if src.shape[0] != n_cells:
            raise ValueError(
                f"source has {src.shape[0]} cells but pred_crops has {n_cells}; row i must be crop i's source"
            )
    lab = None
    if labels is not None:
        lab = np.asarray(labels, dtype=object)
        if lab.shape != (n_cells,):
            raise ValueError(f"labels has shape {lab.shape} but pred_crops has {n_cells} cells")
        lab = np.where(pd.isna(lab), _UNLABELLED, lab).astype(str)

    cells = [str(x) for x in cell_names] if cell_names is not None else [f"cell {i}" for i in range(n_cells)]
    if len(cells) != n_cells:
        raise ValueError(f"cell_names has {len(cells)} entries but pred_crops has {n_cells} cells")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n_cells, size=min(n, n_cells), replace=False))
    if lab is not None:
        chosen = chosen[np.argsort(lab[chosen], kind="stable")]

    row_kinds: list[str] = []
    default_labels: list[str] = []
    if src is not None:
        row_kinds.append("source")
        default_labels.append(
            f"{source_name} cell" if source_kind == "image" else f"{source_name}: top features\n(z-score vs all cells)"
        )
    row_kinds.append("pred")
    default_labels.append("predicted\nnucleus")
    if true is not None:
        row_kinds.append("true")
        default_labels.append("measured\nnucleus")
    if row_labels is None:
        row_text = default_labels
    else:
        row_text = [str(x) for x in row_labels]
        if len(row_text) != len(row_kinds):
            raise ValueError(
                f"row_labels has {len(row_text)} entries but the gallery has {len(row_kinds)} rows ({row_kinds})"
            )

    shown = [pred[chosen]]
    if true is not None:
        shown.append(true[chosen])
    if src is not None and source_kind == "image":
        shown.append(src[chosen])
    pixels = np.concatenate([a.ravel() for a in shown])
    pixels = pixels[np.isfinite(pixels)]
    vmin = float(min(0.0, pixels.min())) if pixels.size else 0.0
    vmax = float(np.percentile(pixels, 99.5)) if pixels.size else 1.0
    if vmax <= vmin:
        vmax = vmin + 1.0
    cmap = colormaps["gray"].with_extremes(bad="red")

    zscores = None
    if src is not None and source_kind == "vector":
        mean, std = _column_mean_std(src)
        with np.errstate(divide="ignore", invalid="ignore"):
            zscores = (_dense_rows(src, chosen) - mean) / np.where(std > 0, std, np.nan)

    n_cols = chosen.size
    heights = [1.25 if k == "source" and source_kind == "vector" else 1.0 for k in row_kinds]
    fig = Figure(figsize=(1.75 * n_cols + 1.8, 1.8 * sum(heights) + 1.0))
    grid = fig.add_gridspec(len(row_kinds), n_cols + 1, height_ratios=heights, width_ratios=[1.0] * n_cols + [0.08])
    image = None
    for r_i, kind in enumerate(row_kinds):
        for c_i, cell in enumerate(chosen):
            ax = fig.add_subplot(grid[r_i, c_i])
            if kind == "source" and source_kind == "vector":
                z_row = zscores[c_i]
                ok = np.flatnonzero(np.isfinite(z_row) & (z_row > 0))  # only features above average
                top = ok[np.argsort(-z_row[ok], kind="stable")][:n_top_features]
                if top.size:
                    ypos = np.arange(top.size)[::-1]
                    ax.barh(ypos, z_row[top], color=domain_colors([source_name])[source_name], height=0.8)
                    for y, j in zip(ypos, top, strict=True):
                        ax.text(0.03, y, _truncate(names[j], 14), fontsize=7.5, va="center", ha="left",
                                transform=ax.get_yaxis_transform())
                    ax.set_xlim(0, max(float(np.nanmax(z_row[top])) * 1.05, 1.0))
                    ax.set_ylim(-0.6, n_top_features - 0.4)
                    ax.tick_params(axis="x", labelsize=7, length=2, pad=1)
                else:
                    ax.text(
                        0.5, 0.5, "no feature\nabove average", ha="center", va="center", fontsize=7.5,
                        transform=ax.transAxes,
                    )
                    ax.set_xticks([])
                ax.set_yticks([])
            else:
                crops = {"pred": pred, "true": true, "source": src}[kind]
                image = ax.imshow(
                    np.ma.masked_invalid(crops[cell]), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest"
                )
                ax.set_xticks([])
                ax.set_yticks([])
            if r_i == 0:
                head = _truncate(lab[cell], 16) if lab is not None else ""
                name = _truncate(cells[cell], 16)
                ax.set_title(f"{head}\n{name}" if head else name, fontsize=8.5)
            if c_i == 0:
                ax.set_ylabel(row_text[r_i], fontsize=9.5)
    if image is not None:
        cax = fig.add_subplot(grid[:, n_cols])
        fig.colorbar(image, cax=cax).set_label("intensity (normalised, shared scale)", fontsize=9)
        cax.tick_params(labelsize=8)
    head = title or "Predicted nuclei"
    fig.suptitle(f"{head}\n{n_cols} of {n_cells} cells, chosen at random", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------- method comparison


#: Readable names of metric families (metric ids are ``<family>_<domains>``, see cellbridge.evaluate).
METRIC_NAMES: dict[str, str] = {
    "foscttm": "FOSCTTM",
    "partner5": "true partner among 5 nearest",
    "partner10": "true partner among 10 nearest",
    "transfer_accuracy": "label transfer accuracy",
    "transfer_f1": "label transfer macro F1",
    "pearson_gene_top": "Pearson r, top genes",
    "pearson_gene": "Pearson r per feature",
    "pearson_cell": "Pearson r per cell",
    "spearman_gene": "Spearman r per feature",
    "morph_r": "morphology r",
    "pixel_mse": "pixel MSE",
    "ssim": "SSIM",
    "rmse": "RMSE",
    "auroc": "AUROC",
    "domain_entropy": "domain mixing entropy",
    "silhouette_by_domain": "silhouette by domain",
    "silhouette_label": "silhouette by label",
    "reconstruction_mse": "reconstruction MSE",
    "pca_mse": "PCA reconstruction MSE",
    "n_pairs": "true pairs",
}


def metric_label(metric: str) -> str:
    """Readable name of a metric id: ``foscttm_image_rna`` -> ``FOSCTTM (image, rna)``,
    ``transfer_accuracy_rna_to_image`` -> ``label transfer accuracy (rna → image)``."""
    for family in sorted(METRIC_NAMES, key=len, reverse=True):
        if metric == family or metric.startswith(family + "_"):
            rest = metric[len(family) + 1 :]
            if not rest:
                return METRIC_NAMES[family]
            where = " \u2192 ".join(rest.split("_to_")) if "_to_" in rest else ", ".join(rest.split("_"))
            return f"{METRIC_NAMES[family]} ({where})"
    return metric.replace("_to_", " \u2192 ").replace("_", " ")


def _is_lower_better(metric: str, lower_is_better: Collection[str]) -> bool:
    low = metric.lower()
    for token in lower_is_better:
        tok = token.lower()
        if low == tok or low.startswith(tok + "_") or low.endswith("_" + tok) or f"_{tok}_" in low:
            return True
    return False


def _long_to_wide(table: pd.DataFrame, method_col: str, seed_col: str) -> pd.DataFrame:
    index = [method_col] + ([seed_col] if seed_col in table.columns else [])
    wide = table.pivot_table(index=index, columns="metric", values="value", aggfunc="mean", dropna=False, sort=False)
    wide.columns = [str(c) for c in wide.columns]
    return wide.reset_index()


def plot_comparison(
    table: pd.DataFrame,
    *,
    path: str | os.PathLike,
    metrics: Sequence[str] | None = None,
    lower_is_better: Collection[str] = LOWER_IS_BETTER,
    method_col: str = "method",
    seed_col: str = "seed",
    title: str = "",
) -> Path:
    """Compare methods on several metrics: one panel per metric, one bar per method.

    Bars show the mean over seeds with the standard deviation as error bar (when a
    method has at least two seeds with a value) and each seed as a dot. The rows of
    :data:`REFERENCE_METHODS` are drawn as horizontal lines across the panel instead
    (dashed: ``none``, autoencoders without alignment; dotted: ``trivial``, the training
    mean), with a band of +- one std over seeds.

    Parameters
    ----------
    table
        Wide format: a ``method_col`` column, optionally ``seed_col``, and one numeric
        column per metric, one row per method and seed. Long format (columns ``metric``
        and ``value``) is accepted as well. NaN values are skipped.
    path
        PNG to write (atomically).
    metrics
        Metric columns to draw, in order (default: every numeric column except the seed).
    lower_is_better
        Metric names, or parts of names separated by ``_`` (``"foscttm"`` matches
        ``"foscttm_rna_atac"``), for which smaller is better; shown in each panel title.
    method_col, seed_col
        Column names of the method and the seed.
    title
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if method_col not in table.columns:
        raise ValueError(f"table has no {method_col!r} column; columns are {list(table.columns)}")
    if {"metric", "value"} <= set(table.columns):
        table = _long_to_wide(table, method_col, seed_col)
    if table.empty:
        raise ValueError("table has no rows")
    if metrics is None:
        metrics = [
            c for c in table.columns if c not in (method_col, seed_col) and pd.api.types.is_numeric_dtype(table[c])
        ]
        if not metrics:
            raise ValueError(f"table has no numeric metric column; columns are {list(table.columns)}")
    metrics = list(metrics)
    missing = [m for m in metrics if m not in table.columns]
    if missing:
        raise ValueError(f"metrics {missing} are not columns of table; columns are {list(table.columns)}")
    if not metrics:
        raise ValueError("metrics is empty")

    methods_all = [str(m) for m in pd.unique(table[method_col].astype(str))]
    references = [m for m in REFERENCE_METHODS if m in methods_all]
    methods = [m for m in methods_all if m not in REFERENCE_METHODS] or references
    if methods == references:
        references = []
    palette = {m: to_hex(colormaps["tab10"](i % 10)) for i, m in enumerate(methods)}
    ref_style = {"none": ("--", "#555555", "none (no alignment)"), "trivial": (":", "black", "trivial (training mean)")}
    # the trivial predictor has no seed of its own: count the trained models' seeds only
    trained = table[table[method_col].astype(str) != "trivial"]
    n_seeds = trained[seed_col].nunique() if seed_col in table.columns else 1

    n_panels = len(metrics)
    n_cols = min(n_panels, 3)
    n_rows = math.ceil(n_panels / n_cols)
    width = max(3.0, 0.7 * len(methods) + 1.6)
    fig = Figure(figsize=(width * n_cols + 0.4, 3.6 * n_rows + 0.6))
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False)).ravel()
    rng = np.random.default_rng(0)
    method_values = table[method_col].astype(str)
    for ax, metric in zip(axes, metrics, strict=False):
        values = pd.to_numeric(table[metric], errors="coerce")
        x = np.arange(len(methods))
        for i, m in enumerate(methods):
            v = values[method_values == m].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            if v.size == 0:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7, color="#777777")
                continue
            err = float(np.std(v, ddof=1)) if v.size >= 2 else None
            ax.bar(i, float(v.mean()), yerr=err, color=palette[m], alpha=0.85, capsize=3, width=0.7)
            text = f"{v.mean():.3f}" + (f"\n\u00b1{err:.3f}" if err is not None else "")
            top = float(max(v.max(), v.mean() + (err or 0.0)))
            ax.annotate(text, (i, top), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7.5)
            if n_seeds > 1 or v.size > 1:
                jitter = rng.uniform(-0.15, 0.15, size=v.size)
                ax.scatter(i + jitter, v, s=10, color="black", zorder=3, linewidths=0)
        handles = []
        for ref in references:
            v = values[method_values == ref].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            if v.size == 0:
                continue
            style, colour, text = ref_style[ref]
            mean = float(v.mean())
            ax.axhline(mean, linestyle=style, color=colour, linewidth=1.3, zorder=4)
            if v.size >= 2:
                sd = float(np.std(v, ddof=1))
                ax.axhspan(mean - sd, mean + sd, color=colour, alpha=0.12, linewidth=0)
            handles.append(Line2D([], [], linestyle=style, color=colour, label=f"{text}: {mean:.3g}"))
        if handles:
            ax.legend(handles=handles, fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
        direction = "\u2193 lower is better" if _is_lower_better(metric, lower_is_better) else "\u2191 higher is better"
        ax.set_title(f"{metric_label(metric)}\n({direction})", fontsize=9.5)
        ax.set_ylabel(metric_label(metric).split(" (")[0], fontsize=8.5)
        ax.margins(y=0.18)
        ax.set_xticks(x)
        ax.set_xticklabels([_truncate(m, 18) for m in methods], rotation=35, ha="right", fontsize=8.5)
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    seeds_text = (
        f"bars: mean over {n_seeds} seeds (value \u00b1 sample SD above), dots: single seeds"
        if n_seeds > 1
        else "one seed per method: no error bars"
    )
    fig.suptitle(f"{title or 'Method comparison'}\n{seeds_text}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# -------------------------------------------------------------------------- latent shift


def plot_latent_shift(
    before: Mapping[str, ArrayLike],
    after: Mapping[str, ArrayLike],
    *,
    feature_names: Mapping[str, Sequence[str]],
    path: str | os.PathLike,
    top: int = 10,
    title: str = "",
) -> Path:
    """Draw what a shift in latent space (an "attribute vector") changes in every domain.

    For the attribute-vector experiment (the difference of two groups' latent means
    added to one group's latent codes, then decoded in every domain): one row per
    domain. Vector domains show the ``top`` features with the largest absolute change
    of the mean (after - before) as horizontal bars (red up, blue down) annotated with
    the mean before -> after. Image domains, ``(n, S, S)``, show the mean image before
    and after on one grayscale and their difference on a symmetric diverging scale.

    Parameters
    ----------
    before, after
        Domain name -> decoded cells before and after the shift: ``(n, n_features)``
        arrays or sparse matrices, or ``(n, S, S)`` images. Same domains in both; per
        domain the same feature shape (the number of cells may differ). NaN is skipped.
    feature_names
        Domain name -> one name per feature, for the vector domains (a domain without
        an entry gets ``feature 0``, ``feature 1``, ...).
    path
        PNG to write (atomically).
    top
        Features per vector domain.
    title
        Figure title, e.g. ``"B cell -> T cell attribute vector added to B cells"``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if not before:
        raise ValueError("before is empty; pass at least one domain")
    if set(before) != set(after):
        raise ValueError(f"before has domains {sorted(before)} but after has {sorted(after)}; they must match")
    top = _positive_int(top, "top")
    rows: list[tuple[str, str, Any]] = []
    for name in before:
        b, a = before[name], after[name]
        b = b.toarray() if sp.issparse(b) else np.asarray(b, dtype=np.float64)
        a = a.toarray() if sp.issparse(a) else np.asarray(a, dtype=np.float64)
        if b.shape[1:] != a.shape[1:]:
            raise ValueError(
                f"domain {name!r}: before has shape {b.shape} but after has shape {a.shape}; "
                "the features (or image size) must match"
            )
        if b.shape[0] == 0 or a.shape[0] == 0:
            raise ValueError(f"domain {name!r}: before and after need at least one cell each")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mb, ma = np.nanmean(b, axis=0), np.nanmean(a, axis=0)
        if b.ndim == 3:
            rows.append((str(name), "image", (mb, ma, b.shape[0], a.shape[0])))
        elif b.ndim == 2:
            names = feature_names.get(name)
            names = [str(x) for x in names] if names is not None else [f"feature {j}" for j in range(b.shape[1])]
            if len(names) != b.shape[1]:
                raise ValueError(
                    f"feature_names[{name!r}] has {len(names)} entries but domain {name!r} has {b.shape[1]} features"
                )
            rows.append((str(name), "vector", (mb, ma, names, b.shape[0], a.shape[0])))
        else:
            raise ValueError(f"domain {name!r}: expected (n, n_features) or (n, S, S), got shape {b.shape}")

    colours = domain_colors([r[0] for r in rows])
    heights = [max(1.6, 0.28 * min(top, len(r[2][2])) + 0.6) if r[1] == "vector" else 2.3 for r in rows]
    fig = Figure(figsize=(10.5, sum(heights) + 0.8))
    grid = fig.add_gridspec(len(rows), 3, height_ratios=heights)
    for i, (name, kind, data) in enumerate(rows):
        if kind == "vector":
            mb, ma, names, nb, na = data
            delta = ma - mb
            ok = np.flatnonzero(np.isfinite(delta))
            chosen = ok[np.argsort(-np.abs(delta[ok]), kind="stable")][:top]
            ax = fig.add_subplot(grid[i, :])
            if chosen.size:
                y = np.arange(chosen.size)[::-1]
                ax.barh(y, delta[chosen], color=np.where(delta[chosen] >= 0, "#d6604d", "#4393c3"), height=0.7)
                ax.set_yticks(y)
                ax.set_yticklabels([_truncate(names[j], 30) for j in chosen], fontsize=7.5)
                ax.axvline(0, color="black", linewidth=0.8)
                span = float(np.max(np.abs(delta[chosen]))) or 1.0
                ax.set_xlim(-span * 1.45, span * 1.45)
                for yy, j in zip(y, chosen, strict=True):
                    d = delta[j]
                    ax.text(d + (0.02 if d >= 0 else -0.02) * span * 1.45, yy, f"{mb[j]:.2g} \u2192 {ma[j]:.2g}",
                            va="center", ha="left" if d >= 0 else "right", fontsize=6.5, color="#333333")
            else:
                ax.text(0.5, 0.5, "no feature with a defined change", ha="center", va="center", transform=ax.transAxes)
                ax.set_yticks([])
            ax.set_xlabel(
                "predicted change of the mean (after \u2212 before); labels: mean before \u2192 after", fontsize=8
            )
            ax.set_title(f"{name}: top {chosen.size} changed of {len(names)} features ({nb} cells before, {na} after)",
                         fontsize=9, color=colours[name], loc="left")
            ax.tick_params(axis="x", labelsize=7)
        else:
            mb, ma, nb, na = data
            both = np.concatenate([mb.ravel(), ma.ravel()])
            both = both[np.isfinite(both)]
            vmin = float(min(0.0, both.min())) if both.size else 0.0
            vmax = float(both.max()) if both.size else 1.0
            if vmax <= vmin:
                vmax = vmin + 1.0
            diff = ma - mb
            lim = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 1.0
            lim = lim or 1.0
            gray = colormaps["gray"].with_extremes(bad="red")
            panels = [
                (mb, f"{name}: mean before ({nb} cells)", gray, vmin, vmax, "intensity"),
                (ma, f"{name}: mean after ({na} cells)", gray, vmin, vmax, "intensity"),
                (diff, "after \u2212 before", colormaps["RdBu_r"].with_extremes(bad="yellow"), -lim, lim, "change"),
            ]
            for col, (img, text, cmap, lo, hi, clabel) in enumerate(panels):
                ax = fig.add_subplot(grid[i, col])
                im = ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
                ax.set_title(text, fontsize=9, color=colours[name])
                ax.set_xticks([])
                ax.set_yticks([])
                cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
                cb.set_label(clabel, fontsize=7)
                cb.ax.tick_params(labelsize=6)
    fig.suptitle(title or "Predicted effect of a latent shift", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


# ------------------------------------------------------------- reconstruction vs PCA


def _reconstruction_long(table: pd.DataFrame) -> pd.DataFrame:
    """Return columns domain, predictor (canonical), error, [seed], [latent_dim]."""
    if "domain" not in table.columns:
        raise ValueError(f"table has no 'domain' column; columns are {list(table.columns)}")
    extra = [c for c in ("seed", "latent_dim", "n_components") if c in table.columns]
    if "predictor" in table.columns:
        value_col = next((c for c in ("error", "mse", "value") if c in table.columns), None)
        if value_col is None:
            raise ValueError("a long table with a 'predictor' column needs an 'error' (or 'mse'/'value') column")
        long = table[["domain", "predictor", value_col, *extra]].rename(columns={value_col: "error"})
    else:
        value_cols = [c for c in table.columns if str(c).lower() in _PREDICTOR_ALIASES]
        if not value_cols:
            raise ValueError(
                "table needs error columns named autoencoder, pca and/or mean_predictor "
                f"(or a long 'predictor'/'error' layout); columns are {list(table.columns)}"
            )
        long = table.melt(id_vars=["domain", *extra], value_vars=value_cols, var_name="predictor", value_name="error")
    long = long.copy()
    canonical = long["predictor"].astype(str).str.lower().map(_PREDICTOR_ALIASES)
    unknown = sorted(set(long.loc[canonical.isna(), "predictor"].astype(str)))
    if unknown:
        raise ValueError(f"unknown predictors {unknown}; use autoencoder, pca or mean_predictor")
    long["predictor"] = canonical
    long["domain"] = long["domain"].astype(str)
    long["error"] = pd.to_numeric(long["error"], errors="coerce")
    return long


def plot_reconstruction_vs_pca(table: pd.DataFrame, *, path: str | os.PathLike, title: str = "") -> Path:
    """Compare held-out reconstruction error: autoencoder vs PCA vs training mean.

    One panel per domain (own y scale, since the domains' values are on different
    scales) with three bars: the autoencoder, PCA with as many components as the
    latent size, and the training-mean predictor (the floor a model must beat). Each
    bar is labelled with its error as a percentage of the training-mean error (the
    share of variance left unexplained). With several seeds the bars are means with
    std error bars.

    Parameters
    ----------
    table
        Wide: columns ``domain`` and any of ``autoencoder``, ``pca``, ``mean_predictor``
        (aliases ``mean``, ``training_mean``, ``trivial``), optionally ``seed`` and
        ``latent_dim``; or long: ``domain``, ``predictor``, ``error`` (``mse``). Values
        are held-out mean squared errors, e.g. from
        :func:`cellbridge.metrics.pca_reconstruction_error` and
        :func:`cellbridge.metrics.mean_predictor_error`. NaN values are skipped.
    path
        PNG to write (atomically).
    title
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if table.empty:
        raise ValueError("table has no rows")
    long = _reconstruction_long(table)
    domains = list(dict.fromkeys(long["domain"]))
    colours = domain_colors(domains)
    latent_col = next((c for c in ("latent_dim", "n_components") if c in long.columns), None)

    n_cols = min(len(domains), 4)
    n_rows = math.ceil(len(domains) / n_cols)
    fig = Figure(figsize=(3.3 * n_cols + 0.3, 3.3 * n_rows + 0.6))
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False)).ravel()
    for ax, domain in zip(axes, domains, strict=False):
        sub = long[long["domain"] == domain]
        stats = {}
        for key, _, _ in _PREDICTORS:
            v = sub.loc[sub["predictor"] == key, "error"].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            stats[key] = v
        floor = float(stats["mean_predictor"].mean()) if stats["mean_predictor"].size else None
        for i, (key, text, colour) in enumerate(_PREDICTORS):
            v = stats[key]
            if v.size == 0:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7, color="#777777")
                continue
            mean = float(v.mean())
            err = float(np.std(v, ddof=1)) if v.size >= 2 else None
            ax.bar(i, mean, yerr=err, color=colour, capsize=3, width=0.7)
            if v.size >= 2:
                ax.scatter(i + np.linspace(-0.12, 0.12, v.size), v, s=9, color="black", zorder=3, linewidths=0)
            label = f"{mean:.3g}"
            if floor:
                label += f"\n{100 * mean / floor:.0f}%"
            ax.annotate(label, (i, mean + (err or 0.0)), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(_PREDICTORS)))
        ax.set_xticklabels([t.replace(" (", "\n(") for _, t, _ in _PREDICTORS], fontsize=7.5)
        ax.set_ylabel("held-out MSE", fontsize=8)
        ax.margins(y=0.22)
        ax.set_ylim(bottom=0)
        ax.tick_params(axis="y", labelsize=7)
        head = domain
        if latent_col is not None:
            dims = sorted({int(d) for d in sub[latent_col].dropna().unique()})
            if dims:
                head += f" (latent size {', '.join(map(str, dims))})"
        ax.set_title(head, fontsize=9.5, color=colours[domain])
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in axes[len(domains):]:
        ax.set_visible(False)
    fig.suptitle(
        f"{title or 'Held-out reconstruction error'}\n"
        "% = error relative to predicting the training mean (lower is better)",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure(fig, path)
