"""The training curves of one run (:meth:`cellbridge.CrossModalModel.train`'s history)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .._io import save_figure


def plot_history(history: pd.DataFrame, path: str | Path, *, title: str = "", align_weight: float | None = None) -> Path:
    """Write a PNG of the training curves: losses and accuracies on separate axes.

    Panels (those with data): reconstruction loss per domain; the alignment loss as it
    enters the total loss (raw value x schedule x ``align_weight``: zero during warm-up,
    then ramped in) with the raw value thin beside it (the training cells' raw OT or
    MMD value is not computed during warm-up; the validation cells' is, every epoch); the other supervision losses
    (labels, discriminator, anchors, prior); the accuracies (labels, discriminator);
    the total loss. Training cells solid, validation cells dashed. A dotted vertical
    line marks the end of the warm-up, where the alignment loss is switched on.

    Parameters
    ----------
    history
        As returned by :meth:`CrossModalModel.train` (indexed by epoch).
    path
        Destination PNG; written atomically.
    title
        What was trained, e.g. ``"wasserstein, seed 0"``; the figure title starts with it.
    align_weight
        Weight of the alignment loss in the total (default 1: the curve is then raw x schedule).
    """
    from matplotlib.figure import Figure

    weight = 1.0 if align_weight is None else float(align_weight)
    weighted = pd.DataFrame(index=history.index)
    if "align" in history.columns or "val_align" in history.columns:
        factor = history["schedule"] * weight if "schedule" in history.columns else pd.Series(weight, index=history.index)
        for col in ("align", "val_align"):
            if col in history.columns:
                # zero where the weight is: the training term is not computed during warm-up
                weighted[col] = (history[col] * factor).mask(factor == 0, 0.0)
    losses = [c for c in history.columns if c.endswith(("label_loss", "anchor_loss", "prior_loss", "discriminator_loss"))]
    panels = [
        ("reconstruction", "reconstruction loss (per cell)", history, [c for c in history.columns if c.startswith(("recon_", "val_recon_"))]),
        ("alignment (as weighted in the total)", f"alignment loss x schedule x {weight:g}", weighted, list(weighted.columns)),
        ("supervision losses", "loss (per cell)", history, losses),
        ("accuracies", "accuracy (fraction of cells)", history, [c for c in history.columns if c.endswith("_acc")]),
        ("total", "total loss (per cell)", history, [c for c in ("loss", "val_loss") if c in history.columns]),
    ]
    panels = [p for p in panels if p[3]]
    n_cols = min(3, len(panels))
    n_rows = -(-len(panels) // n_cols)
    fig = Figure(figsize=(4.6 * n_cols, 4.4 * n_rows + 0.4))
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False)).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    warmup_end = None
    if "schedule" in history.columns and len(history) and (history["schedule"] < 1).any():
        on = history.index[history["schedule"] > 0]
        if len(on) and on[0] > history.index[0]:
            warmup_end = on[0] - 0.5
    for ax, (name, ylabel, frame, cols) in zip(axes, panels, strict=False):
        terms = list(dict.fromkeys(c.removeprefix("val_") for c in cols))
        for col in cols:
            val = col.startswith("val_")
            term = col.removeprefix("val_")
            ax.plot(frame.index, frame[col], label=term + (" (validation)" if val else ""),
                    linestyle="--" if val else "-", color=f"C{terms.index(term)}")
        if name.startswith("alignment") and "align" in history.columns:
            ax.plot(history.index, history["align"], color="#aaaaaa", linewidth=1.0,
                    label="align, raw (unweighted)")
        if name == "accuracies":
            ax.set_ylim(-0.02, 1.02)
        elif name in ("reconstruction", "total"):
            values = frame[cols].to_numpy(dtype=float)
            values = values[np.isfinite(values) & (values > 0)]
            if values.size and values.max() / values.min() > 20:
                ax.set_yscale("log")
                ylabel += ", log scale"
        if warmup_end is not None:
            ax.axvline(warmup_end, color="grey", linewidth=0.9, linestyle=":", label="end of warm-up (alignment on)")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False, ncol=2)
    head = f"{title}: training curves" if title else "Training curves"
    fig.suptitle(f"{head} (solid: training cells, dashed: validation cells)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
