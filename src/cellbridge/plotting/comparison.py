"""Figures comparing methods and seeds: the metric panels and the autoencoder against PCA."""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._io import save_figure
from ._common import (
    _truncate,
    domain_colors,
)

#: Metrics (or metric-name parts, see :func:`plot_comparison`) for which smaller is better.
LOWER_IS_BETTER: frozenset[str] = frozenset(
    {"foscttm", "rmse", "mse", "pixel_mse", "reconstruction_error", "silhouette_by_domain", "loss"}
)

#: Rows of a comparison table drawn as reference lines instead of bars:
#: ``none`` = autoencoders trained without alignment loss, ``trivial`` = predict the training mean.
REFERENCE_METHODS: tuple[str, ...] = ("none", "trivial")

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
