"""The scaling benchmark (benchmarks/scaling.py): its smoke run end to end, and its helpers.

The smoke run is the real command at tiny sizes, so CI checks that the benchmark runs and
writes complete tables; it asserts what was measured, never how fast.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _bench import load_benchmark
import scipy.sparse as sp

from cellbridge.contract import validate_domain

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


sim = load_benchmark("_scaling_data")
scaling = load_benchmark("scaling")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, str]:
    """CSV table and Markdown report of one smoke run into a temporary folder."""
    out = tmp_path_factory.mktemp("scaling")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "scaling.py"), "--smoke", "--threads", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return pd.read_csv(out / "scaling.csv"), (out / "scaling.md").read_text()


def _positive_finite(values: pd.Series) -> bool:
    v = values.astype(float).to_numpy()
    return bool(np.all(np.isfinite(v)) and np.all(v > 0))


def test_smoke_has_one_measured_cellbridge_row_per_size(smoke):
    table, _ = smoke
    cb = table[table["method"] == "cellbridge"]
    assert cb["n_cells"].tolist() == [500]
    assert (cb["status"] == "ok").all()
    for col in ("epoch_s", "cells_per_s", "peak_train_mb", "peak_build_mb", "rss_data_mb", "data_mb",
                "translate_rna_to_image_s", "translate_image_to_rna_s", "peak_translate_mb", "steps_per_epoch",
                "file_mb", "flops_per_cell", "matmul_gflop_s", "model_gflop_s"):
        assert _positive_finite(cb[col]), col
    row = cb.iloc[0]
    # the arithmetic: training reaches part of what dense products of its shapes deliver
    assert 0 < row["matmul_fraction"] < 1.5
    assert row["batch_size"] == 128 and not row["x_on_disk"]  # "auto" keeps 128 below 262,144 cells
    # 500 cells: 100 held out, 40 of the rest validate, 360 train in batches of 128
    assert row["steps_per_epoch"] == row["steps_run"] == math.ceil(360 / 128)
    assert row["epoch_basis"] == "measured" and row["epoch_s"] == row["measured_epoch_s"]
    assert 0 < row["validation_s"] < row["epoch_s"]
    assert row["cells_per_s"] == pytest.approx(2 * 360 / row["epoch_s"])
    assert row["translated_cells"] == 500
    assert row["peak_train_mb"] >= row["rss_data_mb"] * 0.95  # the peak includes the data held in memory
    assert np.isfinite(row["beyond_data_mb"])


def test_smoke_has_gw_rows(smoke):
    table, _ = smoke
    gw = table[(table["method"] == "scot_gw") & (table["status"] == "ok")]
    assert gw["n_cells"].tolist() == [100, 200]
    for col in ("geodesic_s", "gw_s", "total_s", "peak_gw_mb"):
        assert _positive_finite(gw[col]), col
    assert (gw["k"] == [20, 40]).all()  # SCOT's default k = n / 5 below 250 cells


def test_smoke_markdown_names_machine_and_tables(smoke):
    _, md = smoke
    assert "nproc" in md and "RAM" in md and "date:" in md
    assert "| cells / domain | status | simulate s" in md
    assert "Gromov-Wasserstein" in md
    assert "1M-cell targets: not measured" in md


def test_capped_epoch_time_scales_steps_but_not_validation():
    record = {"steps": 10, "full_steps": 100, "validation_s": 5.0}
    seconds, basis = scaling.epoch_seconds(25.0, record)
    assert seconds == pytest.approx(5.0 + 20.0 * 10)
    assert basis == "extrapolated from 10 of 100 steps"
    assert scaling.epoch_seconds(25.0, {"steps": 100, "full_steps": 100}) == (25.0, "measured")


def test_resume_key_tells_capped_from_default_gw_solves():
    assert scaling.run_key("scot_gw", 1000, None) == scaling.run_key("scot_gw", 1000, 1000)
    assert scaling.run_key("scot_gw", 1000, 2) != scaling.run_key("scot_gw", 1000, None)
    assert scaling.run_key("cellbridge", 1000, 5) == ("cellbridge", 1000, None)


def test_parse_sizes_accepts_suffixes():
    assert scaling.parse_sizes("10k,100000,1M") == [10_000, 100_000, 1_000_000]
    assert scaling.parse_sizes("") == []


def test_gw_memory_limit_extrapolates_quadratic_growth():
    # solve memory 10 MiB at 1k cells growing as n^2, inputs 400 MiB
    rows = [{"method": "scot_gw", "status": "ok", "n_cells": n, "rss_data_mb": 400.0, "max_iter": 1000,
             "gw_extra_mb": 20.0 * (n / 1000) ** 2, "total_s": 2.0 * (n / 1000) ** 3} for n in (1000, 2000, 4000)]
    row = scaling.gw_memory_limit(rows, limit_mb=24 * 1024)
    expected = 1000 * math.sqrt((24 * 1024 - 400) / 20.0)
    assert row["status"] == "extrapolated"
    assert row["n_cells"] == pytest.approx(expected, rel=0.01)
    assert row["total_s"] == pytest.approx(2.0 * (expected / 1000) ** 3, rel=0.05)
    assert "extrapolated" in row["note"]


def test_gw_memory_limit_gives_seconds_per_iteration_of_capped_solves():
    rows = [{"method": "scot_gw", "status": "ok", "n_cells": n, "rss_data_mb": 400.0, "max_iter": 2,
             "gw_extra_mb": 20.0 * (n / 1000) ** 2, "gw_s": 2 * 3.0 * (n / 1000) ** 2} for n in (1000, 2000)]
    row = scaling.gw_memory_limit(rows, limit_mb=24 * 1024)
    seconds = 3.0 * ((24 * 1024 - 400) / 20.0)  # per iteration ~ n^2, evaluated at the limit
    assert "total_s" not in row
    assert f"about {seconds:,.0f} s there" in row["note"]


def test_gw_memory_limit_uses_peaks_of_timed_out_solves_for_memory_only():
    ok = {"method": "scot_gw", "status": "ok", "n_cells": 1000, "rss_data_mb": 400.0, "gw_extra_mb": 20.0,
          "total_s": 60.0, "max_iter": 1000}
    stopped = {"method": "scot_gw", "status": "timeout", "n_cells": 2000, "rss_data_mb": 400.0, "gw_extra_mb": 80.0,
               "max_iter": 1000}
    row = scaling.gw_memory_limit([ok, stopped], limit_mb=24 * 1024)
    assert row["n_cells"] == pytest.approx(1000 * math.sqrt((24 * 1024 - 400) / 20.0), rel=0.01)
    assert "1 stopped at the time limit" in row["note"]
    assert "total_s" not in row  # one finished size: no time extrapolation


def test_interrupted_solve_keeps_its_figures_and_the_polled_peak():
    partial = {"method": "scot_gw", "n_cells": 4000, "status": "running", "phase": "solve", "rss_data_mb": 500.0,
               "generate_s": 3.0, "geodesic_s": 9.0}
    row = scaling._interrupted_row({"kind": "gw", "n_cells": 4000}, partial, "timeout", 2, 1500.0, "stopped")
    assert row["status"] == "timeout" and "phase" not in row
    assert row["peak_gw_mb"] == 1500.0 and row["gw_extra_mb"] == 1000.0 and row["geodesic_s"] == 9.0
    assert "solve" in row["note"]
    lost = scaling._interrupted_row({"kind": "cellbridge", "n_cells": 10}, None, "failed (exit 1)", 2, None, "boom")
    assert lost["status"] == "failed (exit 1)" and lost["method"] == "cellbridge"


def test_gw_memory_limit_refuses_unmeasurable_growth():
    rows = [{"method": "scot_gw", "status": "ok", "n_cells": n, "rss_data_mb": 400.0, "gw_extra_mb": 2.0,
             "total_s": 1.0} for n in (100, 200)]
    assert scaling.gw_memory_limit(rows) is None


def test_log_normalised_matches_dense_formula():
    counts = sp.csr_matrix(np.array([[1, 0, 3], [0, 5, 0], [2, 2, 2]], dtype=np.int32))
    dense = counts.toarray().astype(float)
    expected = np.log1p(dense / dense.sum(1, keepdims=True) * 1e4)
    x = sim.log_normalised(counts, block=2)
    assert np.allclose(x.toarray(), expected, rtol=1e-6)
    assert not np.shares_memory(x.indices, counts.indices)


def test_simulated_domains_follow_the_prepared_contract():
    states = sim.simulated_states(80, seed=0)
    rna = sim.rna_domain(states, n_genes=100, seed=1)
    image = sim.image_domain(states, crop_size=16, pool_size=30, seed=2)
    assert validate_domain(rna, "rna", likelihood_target="counts") == "rna"
    assert validate_domain(image, "image", likelihood_target="image") == "image"
    crops = image.obsm["image"]
    assert crops.shape == (80, 16, 16) and crops.dtype == np.float32
    assert crops.min() >= 0 and crops.max() <= 1 and (crops[:, 0, 0] == 0).mean() > 0.9  # background 0
    assert sp.isspmatrix_csr(rna.X) and sp.isspmatrix_csr(rna.layers["counts"])

