"""What a user reads: the comparison tables' formats and the report's results page."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellbridge import stages
from cellbridge.report import results_page

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "run": "t",
    "truth": "simulated",
    "domains": {"rna": {"modality": "rna"}, "image": {"modality": "image"}},
}


def _result(method, seed, foscttm, n_pairs=399.0):
    """One metrics/*.json content, as evaluate writes it (n_pairs as a float)."""
    return {
        "method": method,
        "seed": seed,
        "metrics": {
            "n_pairs_image_rna": n_pairs,
            "foscttm_image_rna": foscttm,
            "transfer_accuracy_rna_to_image": 0.9123456789,
        },
        "trivial": {"pearson_gene_top_image_to_rna": 0.0123456789},
    }


@pytest.fixture
def results():
    rng = np.random.default_rng(0)
    out = [_result(m, s, float(rng.uniform(0.05, 0.15))) for m in ("wasserstein", "mmd") for s in (0, 1, 2)]
    return out + [_result("none", 0, 0.4987654321)]


def test_per_seed_table_formats(results, tmp_path):
    per_seed, _ = stages.comparison_tables(results)
    # trained methods first, in the given order, then the baselines, labelled as such
    assert list(per_seed["method"]) == ["wasserstein"] * 3 + ["mmd"] * 3 + ["none", "trivial"]
    kinds = dict(zip(per_seed["method"], per_seed["kind"], strict=False))
    assert kinds == {"wasserstein": "method", "mmd": "method", "none": "baseline: no alignment",
                     "trivial": "baseline: training mean"}
    # the trivial predictor has no seed (not -1); counts are integers
    assert per_seed["seed"].dtype == "Int64" and per_seed["seed"].isna().tolist() == [False] * 7 + [True]
    assert per_seed["n_pairs_image_rna"].dtype == "Int64"
    assert per_seed.loc[per_seed["method"] == "none", "foscttm_image_rna"].item() == 0.4988  # 4 significant digits
    from cellbridge._io import write_table

    write_table(per_seed, tmp_path / "c.tsv", index=False)
    text = (tmp_path / "c.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines()]
    header = rows[0]
    trivial = rows[-1]
    assert trivial[header.index("method")] == "trivial" and trivial[header.index("seed")] == ""
    assert rows[1][header.index("n_pairs_image_rna")] == "399" and rows[1][header.index("seed")] == "0"
    # no 16-digit floats anywhere
    assert not re.search(r"\d\.\d{6,}", text)


def test_summary_gives_sd_only_with_two_seeds(results):
    _, summary = stages.comparison_tables(results)
    summary = summary.set_index("method")
    assert summary.loc["wasserstein", "n_seeds"] == 3 and summary.loc["none", "n_seeds"] == 1
    assert summary.loc["trivial", "n_seeds"] == 0
    foscttm = [r["metrics"]["foscttm_image_rna"] for r in results if r["method"] == "mmd"]
    assert summary.loc["mmd", "foscttm_image_rna_sd"] == pytest.approx(np.std(foscttm, ddof=1), abs=1e-4)
    assert pd.isna(summary.loc["none", "foscttm_image_rna_sd"])  # one seed: no SD
    assert "n_pairs_image_rna_sd" not in summary.columns  # counts are not spread
    assert summary["n_pairs_image_rna_mean"].dtype == "Int64"
    # with a single seed everywhere there is no SD column at all
    _, single = stages.comparison_tables([r for r in results if r["seed"] == 0])
    assert not [c for c in single.columns if c.endswith("_sd")]


def test_results_page_table_then_figure_then_methods(results, tmp_path):
    from cellbridge.plotting import plot_comparison

    per_seed, summary = stages.comparison_tables(results)
    fig = plot_comparison(per_seed.drop(columns="kind"), path=tmp_path / "c.png", title="t")
    page = results_page(CONFIG, per_seed, summary, figure=fig, path=tmp_path / "report" / "results.html")
    text = page.read_text()
    table, image = text.index("<table"), text.index('<img alt="comparison of methods" src="data:image/png;base64,')
    sections = [text.index(f"<h3>{m} ") for m in ("wasserstein", "mmd", "none")]
    assert table < image < sections[0] < sections[1] < sections[2]
    assert "<h3>trivial" not in text  # a baseline row in the table, no figures of its own
    # readable metric names, mean +- SD, the baselines labelled
    assert "FOSCTTM (image, rna)" in text and "&plusmn;" in text and "baseline: training mean" in text
    # the per-method links open the figures the workflow registers in the report
    assert "app.showResultInfo('results/t/models/mmd/seed2/loss_curve.png')" in text
    assert "app.showResultInfo('results/t/plots/evaluate/none/seed0/rna_to_image.png')" not in text
    assert "app.showResultInfo('results/t/plots/evaluate/none/seed0/image_to_rna.png')" in text
    assert "app.showResultInfo('results/t/plots/translate/wasserstein/seed0/rna_to_image.png')" in text


def test_report_front_page_includes_the_results_page():
    snakefile = (ROOT / "Snakefile").read_text()
    assert re.search(r'^report: "workflow/report/workflow\.rst"', snakefile, flags=re.M)
    front = (ROOT / "workflow" / "report" / "workflow.rst").read_text()
    assert ':file: results/{{ snakemake.config["run"] }}/report/results.html' in front
    rules = (ROOT / "workflow" / "rules" / "evaluate.smk").read_text()
    assert 'page=f"{RESULTS}/report/results.html"' in rules
