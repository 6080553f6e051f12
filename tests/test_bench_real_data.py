"""Smoke test of benchmarks/real_data.py: every step of the published comparison, tiny.

The full benchmark (three data sets, all methods, settings and seeds) is not part of CI's
time budget; here each data set runs with a few hundred cells, 2 epochs, one cellbridge
method (plus anchors on sci-CAR), the three floors and SCOT's algorithm, through the same
code and into the same tables. Fast unit tests cover the table logic.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _bench import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MARKERS = {"scicar": "scicar_a549/shared_cells.pkl", "pbmc": "pbmc_multiome_unpaired/RNA_scaledata.txt",
           "scnmt": "scnmt_gastrulation/rna_30.txt"}
PRESENT = [name for name, marker in MARKERS.items() if (DATA / marker).exists()]

real_data = load_benchmark("real_data")


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory):
    if not PRESENT:
        pytest.skip(f"no real data set found in {DATA} (see ../shared/data/README.md)")
    out = tmp_path_factory.mktemp("real_data_out")
    work = tmp_path_factory.mktemp("real_data_work")
    env = {**os.environ, "CELLBRIDGE_THREADS": "1", "OMP_NUM_THREADS": "1"}

    def smoke(name: str) -> subprocess.CompletedProcess:
        # one data set per process (own tables real_data_{name}.*, own scratch folder)
        return subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "real_data.py"), "--smoke", "--datasets", name,
             "--out", str(out), "--workdir", str(work / name)],
            capture_output=True, text=True, env=env, timeout=900,
        )

    # the data sets are independent and each run is single-threaded: two at a time (CI has 2 cores)
    with ThreadPoolExecutor(2) as pool:
        procs = dict(zip(PRESENT, pool.map(smoke, PRESENT), strict=True))
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
    return out


def _tables(out: Path, name: str) -> tuple[pd.DataFrame, str]:
    if name not in PRESENT:
        pytest.skip(f"{name} data not found in {DATA / MARKERS[name]}")
    return pd.read_csv(out / f"real_data_{name}.tsv", sep="\t"), (out / f"real_data_{name}.md").read_text()


def _value(table: pd.DataFrame, method: str, metric: str, setting: str = "unsupervised") -> float:
    vals = table.loc[(table["method"] == method) & (table["setting"] == setting) & (table["metric"] == metric), "value"]
    assert len(vals) == 1, (method, metric, len(vals))
    return float(vals.iloc[0])


@pytest.mark.parametrize("name", ["scicar", "pbmc", "scnmt"])
def test_every_row_is_scored_in_long_format(smoke_out, name):
    table, md = _tables(smoke_out, name)
    assert list(table.columns) == ["method", "setting", "seed", "metric", "value"]
    rows = set(zip(table["method"], table["setting"], strict=True))
    expected = {("wasserstein", "unsupervised"), ("none", "unsupervised"), ("random", "unsupervised"),
                ("pca", "unsupervised"), ("scot_default", "unsupervised")}
    if name == "scicar":
        expected.add(("wasserstein", "anchors"))
    assert rows == expected
    assert "failed" not in set(table["metric"]), md
    assert (table["seed"] == 0).all()
    for method, setting in expected:
        assert _value(table, method, "wall_s", setting) > 0 and _value(table, method, "peak_rss_mb", setting) > 0
    # the random floor mixes the domains by construction; it is the reference for mixing
    assert _value(table, "random", "domain_entropy") > 0.8


def test_scicar_scores_pairing_and_translation(smoke_out):
    table, md = _tables(smoke_out, "scicar")
    for method in ("wasserstein", "none", "random", "pca", "scot_default"):
        assert 0 <= _value(table, method, "foscttm_atac_rna") <= 1
        assert 0 <= _value(table, method, "transfer_accuracy_rna_to_atac") <= 1
        assert -1 <= _value(table, method, "pearson_gene_top_atac_to_rna") <= 1
    assert "sci-CAR" in md and "CPUs" in md
    assert md.index("## unsupervised") < md.index("## anchors")
    assert "| scot_default" in md and "| wasserstein" in md


def test_pbmc_scores_shared_transfer_and_unshared_matching(smoke_out):
    table, md = _tables(smoke_out, "pbmc")
    for method in ("wasserstein", "none", "random", "pca", "scot_default"):
        for metric in ("shared_transfer", "shared_transfer_rna_to_atac", "shared_transfer_atac_to_rna",
                       "unshared_matched", "transfer_accuracy_rna_to_atac"):
            assert 0 <= _value(table, method, metric) <= 1, (method, metric)
    assert "PBMC" in md and "lower is better" in md and "## anchors" not in md


def test_scnmt_scores_stage_transfer_between_every_pair(smoke_out):
    table, md = _tables(smoke_out, "scnmt")
    domains = ("rna", "met", "acc")
    for method in ("wasserstein", "none", "random", "pca", "scot_default"):
        pairs = [_value(table, method, f"transfer_accuracy_{a}_to_{b}") for a in domains for b in domains if a != b]
        assert len(pairs) == 6 and all(0 <= p <= 1 for p in pairs)
        assert _value(table, method, "stage_transfer") == pytest.approx(np.mean(pairs))
        assert _value(table, method, "stage_transfer_worst_pair") == pytest.approx(min(pairs))
    assert "scNMT" in md


# ----------------------------------------------------------------------------- table logic (no data)
def test_stratified_split_holds_out_each_label():
    labels = np.repeat(np.array(["a", "b", "c"], dtype=object), [50, 10, 1])
    split = real_data.stratified_split(labels, 0.2, seed=0)
    assert [(split[labels == lab] == "test").sum() for lab in "abc"] == [10, 2, 0]
    assert (real_data.stratified_split(labels, 0.2, seed=0) == split).all()


def _long(method, setting, values, metric="shared_transfer"):
    return [{"method": method, "setting": setting, "seed": s, "metric": metric, "value": v} for s, v in enumerate(values)]


def test_summary_has_mean_sd_worst_and_unsupervised_first(tmp_path):
    ds = real_data.DATASETS["pbmc"]
    rows = (_long("wasserstein", "labels", [0.9, 0.8])
            + _long("wasserstein", "unsupervised", [0.5, 0.7, 0.6])
            + _long("wasserstein", "unsupervised", [0.2, 0.1, 0.3], metric="unshared_matched")
            + _long("scot_default", "unsupervised", [0.8])
            + _long("random", "unsupervised", [0.4, 0.3, 0.35]))
    tsv, md = real_data.write_tables(ds, rows, {}, tmp_path, header="test")
    summary = real_data.summary_table(ds, pd.read_csv(tsv, sep="\t")).set_index(["method", "setting"])
    w = summary.loc[("wasserstein", "unsupervised")]
    label = ds.headline["shared_transfer"][0]
    assert w[f"{label} mean"] == pytest.approx(0.6) and w[f"{label} sd"] == pytest.approx(0.1)
    assert w[f"{label} worst"] == pytest.approx(0.5)  # higher is better: the worst seed is the lowest
    unshared = ds.headline["unshared_matched"][0]
    assert w[f"{unshared} worst"] == pytest.approx(0.3)  # lower is better: the worst seed is the highest
    text = md.read_text()
    assert text.index("## unsupervised") < text.index("## labels")
    block = text[text.index("## unsupervised"):text.index("## labels")]
    # cellbridge, then floors, then peers
    assert block.index("| wasserstein") < block.index("| random") < block.index("| scot_default")
    assert "0.600 ± 0.100 (worst 0.500)" in block


def test_update_replaces_only_the_runs_measured_again(tmp_path):
    ds = real_data.DATASETS["scnmt"]
    real_data.write_tables(ds, _long("mmd", "unsupervised", [0.1, 0.2], "stage_transfer"), {"a": "kept"}, tmp_path, header="")
    tsv, _ = real_data.write_tables(ds, _long("pamona", "unsupervised", [0.5], "stage_transfer")
                                    + [{"method": "mmd", "setting": "unsupervised", "seed": 1, "metric": "stage_transfer",
                                        "value": 0.9}], {"b": "new"}, tmp_path, header="", update=True)
    table = pd.read_csv(tsv, sep="\t")
    got = {(m, s): v for m, s, v in zip(table["method"], table["seed"], table["value"], strict=True)}
    assert got == {("mmd", 0): 0.1, ("mmd", 1): 0.9, ("pamona", 0): 0.5}
    assert set(real_data.json.loads((tmp_path / "real_data_scnmt.notes.json").read_text())) == {"a", "b"}


def test_overrides_set_known_keys_only():
    """``--set`` changes one config key for an ablation, may set an option the defaults leave
    unset, and refuses a key the schema does not know or a value it does not allow."""
    from cellbridge.config import validate_config

    def config():
        return validate_config({"domains": {"rna": {"modality": "rna", "input": "simulated"},
                                            "image": {"modality": "image", "input": "simulated"}}})

    out = real_data.apply_overrides(config(), ["alignment.correspondence.n_restarts=5", "alignment.correspondence.k_grid=[30]"])
    assert out["alignment"]["correspondence"]["n_restarts"] == 5
    assert out["alignment"]["correspondence"]["k_grid"] == [30]
    assert "n_restarts=5" in real_data.overrides_note(["alignment.correspondence.n_restarts=5"])
    out = real_data.apply_overrides(config(), ["alignment.wasserstein.unbalanced=true"])
    assert out["alignment"]["wasserstein"]["unbalanced"] is True
    with pytest.raises(SystemExit, match="correspondance"):
        real_data.apply_overrides(config(), ["alignment.correspondance.n_restarts=5"])
    with pytest.raises(SystemExit, match="no config key"):
        real_data.apply_overrides(config(), ["alignment.nothing.here.n=5"])
    with pytest.raises(SystemExit, match="n_restarts"):
        real_data.apply_overrides(config(), ["alignment.correspondence.n_restarts=0"])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        real_data.apply_overrides(config(), ["alignment.correspondence.n_restarts"])


def test_children_share_the_cpus_instead_of_oversubscribing_them(monkeypatch):
    for name in ("CELLBRIDGE_THREADS", *real_data.THREAD_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # a limit the user set stays theirs
    monkeypatch.setattr(real_data.os, "cpu_count", lambda: 8)
    assert real_data.share_cpus(3) == 2
    assert os.environ["CELLBRIDGE_THREADS"] == os.environ["OMP_NUM_THREADS"] == "2"
    assert os.environ["MKL_NUM_THREADS"] == "3"
    monkeypatch.delenv("CELLBRIDGE_THREADS")
    assert real_data.share_cpus(16) == 1  # more jobs than CPUs: one thread each
    monkeypatch.setenv("CELLBRIDGE_THREADS", "4")
    assert real_data.share_cpus(8) == 4
