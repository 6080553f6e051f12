"""Smoke test of benchmarks/real_data.py: every step of the published comparison, tiny.

The full benchmark (all methods and settings, 1874 cells) is not part of CI's time budget;
here 300 sci-CAR cells, 2 epochs, one cellbridge method in two settings, the ``none``
reference and SCOT's algorithm go through the same code and land in the same tables.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "scicar_a549"

pytestmark = pytest.mark.skipif(
    not (DATA / "shared_cells.pkl").exists(), reason=f"sci-CAR data not found in {DATA} (see ../shared/data/README.md)"
)


@pytest.fixture(scope="module")
def smoke_tables(tmp_path_factory):
    out = tmp_path_factory.mktemp("real_data_out")
    work = tmp_path_factory.mktemp("real_data_work")
    env = {**os.environ, "CELLBRIDGE_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "real_data.py"), "--smoke", "--out", str(out), "--workdir", str(work)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return pd.read_csv(out / "real_data.csv"), (out / "real_data.md").read_text()


def test_every_row_is_scored(smoke_tables):
    table, _ = smoke_tables
    rows = set(zip(table["method"], table["setting"], strict=True))
    assert rows == {("wasserstein", "unsupervised"), ("wasserstein", "anchors"), ("none", "reference"),
                    ("scot_default", "unsupervised")}
    assert table["note"].fillna("").str.contains("Error|exited").sum() == 0, table["note"].tolist()
    fos = table["FOSCTTM"].to_numpy(dtype=float)
    assert np.all((fos >= 0) & (fos <= 1))
    for col in ("label transfer rna->atac", "label transfer atac->rna", "rna->atac AUROC"):
        assert table[col].between(0, 1).all(), col
    assert table["atac->rna Pearson (top genes)"].between(-1, 1).all()
    assert (table["wall s"] > 0).all() and (table["peak MB"] > 0).all()


def test_markdown_table_names_data_and_machine(smoke_tables):
    _, md = smoke_tables
    assert "sci-CAR" in md and "CPUs" in md
    assert "| scot_default" in md and "| wasserstein" in md
