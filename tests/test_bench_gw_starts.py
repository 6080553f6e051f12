"""Smoke test of benchmarks/gw_starts.py: both rules scored on a planted seed, tables written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def test_both_rules_scored_and_tables_written(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gw_starts.py"), "--seeds", "0", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pd.read_csv(tmp_path / "gw_starts.tsv", sep="\t")
    assert list(frame["rule"]) == ["product start", "product + distance-profile starts"]
    assert frame["type_agreement"].between(0, 1).all()
    # the product-only rule can only keep a product-start candidate; with both, never a more distorting one
    assert frame.loc[0, "start"] == "product"
    assert frame.loc[1, "distortion"] <= frame.loc[0, "distortion"]
    assert "mean" in (tmp_path / "gw_starts.md").read_text()


def test_multiscale_candidates_only_add_choices():
    """With the multi-scale candidates every rule chooses among more: never a more distorting one."""
    from _bench import load_benchmark

    gw_starts = load_benchmark("gw_starts")
    plain, multi = gw_starts.score_seed(0), gw_starts.score_seed(0, multiscale=True)
    assert [r["rule"] for r in multi] == [r["rule"] for r in plain]
    for m, p in zip(multi, plain, strict=True):
        assert m["distortion"] <= p["distortion"] + 1e-12
        assert 0 <= m["type_agreement"] <= 1
