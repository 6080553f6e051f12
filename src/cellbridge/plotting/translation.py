"""Figures of translated cells against measured ones: feature scatters and nucleus galleries."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from matplotlib import colormaps
from matplotlib.figure import Figure

from .._io import save_figure
from ..metrics import per_feature_correlation
from ._common import (
    ArrayLike,
    _UNLABELLED,
    _as_2d,
    _as_crops,
    _dense_columns,
    _dense_rows,
    _positive_int,
    _truncate,
    best_and_worst,
    domain_colors,
)

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
