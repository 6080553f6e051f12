"""Figures of the joint latent space: the domains embedded together, and a latent shift decoded."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._io import logger, save_figure
from ._common import (
    ArrayLike,
    _UNLABELLED,
    _category_colors,
    _positive_int,
    _truncate,
    domain_colors,
)

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
