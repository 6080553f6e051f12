"""The results page the Snakemake report opens on (``workflow/report/workflow.rst``).

:func:`results_page` writes a self-contained HTML fragment: the comparison table of the
headline metrics (mean +- SD over seeds, baselines labelled), the comparison figure
(embedded as a data URI) and one section per method with links to its figures in the
report. The rule ``compare`` writes it to ``results/{run}/report/results.html``; the
report's front page includes it (a docutils ``raw`` directive reading that file).
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._io import atomic_path

PathLike = str | os.PathLike

_TABLE_STYLE = "border-collapse:collapse;font-size:13px;margin:8px 0 4px 0"
_CELL_STYLE = "border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap"
_HEAD_STYLE = "border:1px solid #ccc;padding:3px 7px;background:#f0f0f0;text-align:center"


def _cell(mean: float, sd: float | None) -> str:
    if not np.isfinite(mean):
        return "n/a"
    text = f"{mean:.3f}"
    if sd is not None and np.isfinite(sd):
        text += f" &plusmn; {sd:.3f}"
    return text


def summary_html(summary: pd.DataFrame, metrics: list[str]) -> str:
    """HTML table: one row per method (kind, seeds) and the mean +- SD of each metric."""
    from .plotting import metric_label

    head = "".join(
        f'<th style="{_HEAD_STYLE}">{html.escape(x)}</th>' for x in ["method", "kind", "seeds", *map(metric_label, metrics)]
    )
    rows = []
    for _, row in summary.iterrows():
        seeds = "" if pd.isna(row["n_seeds"]) or row["method"] == "trivial" else str(int(row["n_seeds"]))
        cells = [
            f'<td style="{_CELL_STYLE};text-align:left"><b>{html.escape(str(row["method"]))}</b></td>',
            f'<td style="{_CELL_STYLE};text-align:left">{html.escape(str(row["kind"]))}</td>',
            f'<td style="{_CELL_STYLE}">{seeds}</td>',
        ]
        for m in metrics:
            mean = float(row.get(f"{m}_mean", np.nan))
            sd = row.get(f"{m}_sd")
            cells.append(f'<td style="{_CELL_STYLE}">{_cell(mean, None if sd is None or pd.isna(sd) else float(sd))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table style="{_TABLE_STYLE}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _link(path: str, text: str) -> str:
    """A link that opens ``path`` (a result of the report, as the workflow declares it) in the report."""
    target = html.escape(path.replace("\\", "/").replace("'", "\\'"), quote=True)
    return f"<a href=\"javascript:app.showResultInfo('{target}')\" style=\"color:#1d4ed8\">{html.escape(text)}</a>"


def method_figures(config: dict[str, Any], method: str, seed: int | str) -> list[tuple[str, str]]:
    """(report path, description) of every figure the workflow makes for one model."""
    from . import stages

    run = stages.results_dir(config).as_posix()
    out = [(f"{run}/models/{method}/seed{seed}/loss_curve.png", "training curves")]
    out += [
        (f"{run}/plots/translate/{method}/seed{seed}/{s}_to_{t}.png", f"gallery {s} \u2192 {t}")
        for s, t in stages.image_pairs(config)
    ]
    if config.get("truth"):
        out += [
            (f"{run}/plots/evaluate/{method}/seed{seed}/{s}_to_{t}.png", f"scatter {s} \u2192 {t}")
            for s, t in stages.vector_pairs(config)
        ]
    out += [
        (f"{run}/plots/evaluate/{method}/seed{seed}/latent_shift.png", "latent shift"),
        (f"{run}/plots/evaluate/{method}/seed{seed}/latent_umap.png", "joint latent (UMAP)"),
    ]
    return out


def results_page(
    config: dict[str, Any],
    per_seed: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    figure: PathLike | None,
    path: PathLike,
) -> Path:
    """Write the report's results page (an HTML fragment; see the module notes).

    Parameters
    ----------
    config
        Validated workflow configuration (run name, domains, seeds).
    per_seed, summary
        The tables of :func:`cellbridge.stages.comparison_tables`.
    figure
        The comparison PNG, embedded in the page (None: no figure).
    path
        Destination ``.html``; written atomically.
    """
    from .plotting import metric_label
    from .stages import BASELINES, headline_metrics

    metrics = headline_metrics(per_seed)
    parts = [
        # Snakemake's front page centres a narrow description beside the rule graph: a long
        # page then starts above the top of the window. Stack them, top-aligned, full width.
        "<style>.h-screen.items-center{align-items:flex-start!important}"
        ".grow.flex.gap-3.p-3.items-start{flex-direction:column!important}"
        ".prose.max-w-lg{max-width:none!important}</style>",
        '<div style="width:min(1150px,92vw);font-size:14px;line-height:1.45">',
        f"<h2>Results of run '{html.escape(str(config['run']))}': methods compared on held-out cells</h2>",
        "<p>Mean &plusmn; sample SD over seeds (SD only with two or more seeds); the baselines are the floor "
        "every method must beat: <i>none</i> (the same autoencoders without alignment) and <i>trivial</i> "
        "(every prediction is the training mean; it has no seed). All values per seed: "
        "<code>comparison.tsv</code>; means and SDs of every metric: <code>comparison_summary.tsv</code>.</p>",
        summary_html(summary, metrics),
    ]
    if figure is not None and Path(figure).exists():
        data = base64.b64encode(Path(figure).read_bytes()).decode("ascii")
        parts.append(
            f'<p><img alt="comparison of methods" src="data:image/png;base64,{data}" '
            'style="max-width:100%;height:auto;border:0"></p>'
        )
    for method in summary["method"]:
        if method == "trivial":
            continue
        rows = per_seed[per_seed["method"] == method]
        kind = BASELINES.get(method, "alignment method")
        parts.append(f"<h3>{html.escape(str(method))} <small style='color:#666'>({html.escape(kind)})</small></h3>")
        values = "; ".join(
            f"{html.escape(metric_label(m))}: "
            + ", ".join(f"{v:.3f}" for v in rows[m].to_numpy(dtype=float) if np.isfinite(v))
            for m in metrics[:3]
        )
        parts.append(f"<p>Per seed ({', '.join(str(int(s)) for s in rows['seed'].dropna())}): {values}.</p><ul>")
        for seed in rows["seed"].dropna():
            links = ", ".join(_link(p, text) for p, text in method_figures(config, method, int(seed)))
            parts.append(f"<li>seed {int(seed)}: {links}</li>")
        parts.append("</ul>")
    parts.append("</div>")
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(parts), encoding="utf-8")
    return Path(path)
