"""The QC figure of a prepared vector domain (RNA, ATAC, protein, features).

Every ``prepare_*`` function stores the QC table of all input cells, with a ``kept``
flag, in ``uns["cellbridge"]["qc"]`` and its thresholds in ``uns["cellbridge"]["params"]``;
:func:`plot_qc` draws that table the same way for every modality.
"""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .._io import save_figure
from ..modalities import get_modality

__all__ = ["plot_qc"]


def _bin_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Histogram edges that also work when all values are equal up to rounding.

    Topic proportions, for one, have the same per-cell mean in every cell but for the last
    bits; numpy cannot cut such a range into ``bins`` bins and raises.
    """
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if hi - lo <= 1e-9 * max(1.0, abs(lo), abs(hi)):
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def plot_qc(adata: ad.AnnData, path: str | os.PathLike, *, bins: int = 50) -> Path:
    """Histograms of the per-cell QC metrics, kept vs removed cells, with the thresholds.

    Parameters
    ----------
    adata
        Output of :func:`~cellbridge.preprocess.rna.prepare_rna`,
        :func:`~cellbridge.preprocess.atac.prepare_atac`,
        :func:`~cellbridge.preprocess.protein.prepare_protein` or
        :func:`~cellbridge.preprocess.features.prepare_features`.
    path
        PNG to write (atomically).
    bins
        Histogram bins.
    """
    from matplotlib.figure import Figure

    info = adata.uns.get("cellbridge", {})
    if "qc" not in info:
        raise ValueError("adata.uns['cellbridge']['qc'] is missing; pass the output of a prepare_* function")
    modality = get_modality(info.get("modality"))
    if modality.image:
        raise ValueError("plot_qc draws vector domains; the image QC sheet is cellbridge.preprocess.image.plot_image_qc")
    qc: pd.DataFrame = info["qc"]
    params = info.get("params", {})
    kept = qc["kept"].to_numpy(dtype=bool)
    panels = [p for p in modality.qc_panels if p.column in qc]
    first = panels[0].column
    scatter = "total_counts" in qc and first != "total_counts"

    fig = Figure(figsize=(4.2 * (len(panels) + scatter), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(panels) + scatter))
    for ax, panel in zip(axes, panels, strict=False):
        values = qc[panel.column].to_numpy(dtype=float)
        threshold = params.get(panel.threshold) if panel.threshold else None
        title = panel.title
        if panel.log:
            values = np.log10(values + 1)
            title += " (log10(x+1))"
            threshold = None if threshold is None else np.log10(threshold + 1)
        edges = _bin_edges(values[np.isfinite(values)], bins)
        ax.hist(
            [values[kept], values[~kept]], bins=edges, stacked=True,
            color=["tab:blue", "tab:red"], label=["kept", "removed"],
        )
        if threshold is not None:
            ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("cells")
        ax.legend(fontsize=7)
    if scatter:
        ax = axes[-1]
        ax.scatter(qc["total_counts"][kept], qc[first][kept], s=3, c="tab:blue", label="kept")
        ax.scatter(qc["total_counts"][~kept], qc[first][~kept], s=3, c="tab:red", label="removed")
        ax.set_xscale("symlog")
        ax.set_xlabel("total counts")
        ax.set_ylabel(panels[0].title.replace(" per cell", ""))
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{info.get('domain', modality.name)}: {int(kept.sum())} of {len(kept)} cells kept "
        f"({int((~kept).sum())} removed); {adata.n_vars} {modality.feature_noun}",
        fontsize=10,
    )
    fig.tight_layout()
    return save_figure(fig, path)
