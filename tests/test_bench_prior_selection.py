"""Smoke test of benchmarks/prior_selection.py: every candidate scored, every rule keeps one per pair."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (DATA / "scnmt_gastrulation" / "rna_30.txt").exists(),
                    reason="scNMT-seq data not found in ../shared/data (see its README)")
def test_every_candidate_scored_and_each_rule_keeps_one_per_pair(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "prior_selection.py"), "--smoke", "--datasets", "scnmt",
         "--seeds", "0", "--multiscale", "--out", str(out), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pd.read_csv(out / "prior_selection.tsv", sep="\t", keep_default_na=False)
    # RNA to methylation and to accessibility, 2 feature scalings x 2 restarts x (2 neighbourhood
    # sizes + the multi-scale candidate, k = 0, asked for by --multiscale) x 2 GW starts each
    assert sorted(frame["pair"].unique()) == ["rna-acc", "rna-met"]
    assert (frame.groupby(["pair", "view"]).size() == 12).all() and set(frame["view"]) == {"standardised", "as given"}
    assert frame["k"].nunique() == 3 and frame["k"].min() == 0 and frame["start"].nunique() == 2
    assert frame["pair_agreement"].between(0, 1).all() and frame["witness"].astype(str).eq("True").sum() == 2 * (12 // 3)  # the least distorting third, first view
    for rule in ("joint", "consensus", "distortion", "witness", "oracle"):
        kept = frame[frame["kept_by"].str.split(",").apply(lambda r, rule=rule: rule in r)]
        assert len(kept) == 2 and sorted(kept["pair"]) == ["rna-acc", "rna-met"], rule
    # the oracle keeps the best candidate of each pair by the truth
    best = frame.loc[frame.groupby("pair")["pair_agreement"].idxmax()]
    assert set(best["kept_by"].str.contains("oracle")) == {True}
    # the joint rule keeps both of its candidates from one landmark restart (they share the hub's landmarks)
    # and from one view: the one whose joint choice distorts least
    joint = frame[frame["kept_by"].str.contains("joint")]
    assert joint["restart"].nunique() == 1 and joint["view"].nunique() == 1
    assert joint["view_distortion"].iloc[0] == frame["view_distortion"].min()
    # every candidate is also judged on both views' landmarks (the joint rule's yardstick within its view)
    assert np.isfinite(frame["pooled_distortion"].astype(float)).all()
    assert not np.allclose(frame["pooled_distortion"].astype(float), frame["distortion"].astype(float))
    summary = (out / "prior_selection.md").read_text()
    assert "SMOKE" in summary and "consensus" in summary and "mean candidate" in summary
