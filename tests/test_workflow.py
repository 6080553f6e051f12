"""End to end: the Snakemake workflow on a tiny demo, run as a user would."""

import copy
import re
import shutil
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

TINY = {
    "run": "tiny",
    "simulate": {"n_cells": 240, "n_genes": 300, "n_peaks": 200, "atac": True, "seed": 3},
    "truth": "simulated",
    "domains": {
        "rna": {"modality": "rna", "input": "simulated"},
        "atac": {"modality": "atac", "input": "simulated"},
        "image": {"modality": "image", "input": "simulated", "annotations": "simulated"},
    },
    "preprocess": {
        "rna": {"n_top_genes": 100, "min_genes": 10, "max_pct_mito": 100, "min_cells_after_qc": 20},
        "atac": {"min_cells_after_qc": 20},
        "image": {"crop_size": 32},
    },
    # small and fast: one method plus the 'none' baseline, a few epochs
    "alignment": {"methods": ["mmd"], "labels": {"use": True}, "warmup_epochs": 1, "ramp_epochs": 1},
    "training": {"max_epochs": 3, "checkpoint_every": 1, "batch_size": 64},
}


def run_snakemake(workdir: Path, config: Path, *extra: str) -> subprocess.CompletedProcess:
    if not SNAKEMAKE.exists():
        pytest.skip(f"snakemake is not installed beside {sys.executable}")
    cmd = [
        str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(config), "--cores", "2", *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("wf")
    cfg = work / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    proc = run_snakemake(work, cfg)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work


@pytest.mark.slow
def test_workflow_prepares_every_domain(tiny_run):
    res = tiny_run / "results" / "tiny"
    for domain in TINY["domains"]:
        adata = ad.read_h5ad(res / "prepared" / f"{domain}.h5ad")
        assert adata.obs_names.is_unique
        assert (adata.obs["domain"] == domain).all()
        meta = adata.uns["cellbridge"]
        assert meta["domain"] == domain and meta["modality"] == TINY["domains"][domain]["modality"]
        assert "params" in meta
        assert (res / "plots" / "prepare" / f"{domain}.png").stat().st_size > 0
        assert (res / "logs" / "prepare" / f"{domain}.log").exists()
    img = ad.read_h5ad(res / "prepared" / "image.h5ad")
    assert img.obsm["image"].shape[1:] == (32, 32) and img.obsm["image"].dtype == np.float32
    assert img.obs["cell_type"].notna().mean() > 0.9  # annotations joined by position
    rna = ad.read_h5ad(res / "prepared" / "rna.h5ad")
    assert "counts" in rna.layers and rna.n_vars == 100


@pytest.mark.slow
def test_workflow_trains_translates_and_evaluates(tiny_run):
    import json

    import pandas as pd

    res = tiny_run / "results" / "tiny"
    domains = list(TINY["domains"])
    for method in ("mmd", "none"):
        model = res / "models" / method / "seed0"
        assert (model / "model.pt").exists() and (model / "loss_curve.png").exists()
        history = pd.read_csv(model / "history.tsv", sep="\t")
        assert len(history) == 3
        for d in domains:
            lat = ad.read_h5ad(model / f"{d}.h5ad")
            assert lat.obsm["X_cellbridge"].shape[1] == 16
            for t in domains:
                tr = ad.read_h5ad(res / "translated" / method / "seed0" / f"{d}_to_{t}.h5ad")
                assert tr.n_obs == lat.n_obs and (tr.obs_names == lat.obs_names).all()
                if t == "image":
                    assert tr.obsm["image"].shape[1:] == (32, 32) and tr.n_vars > 10
        metrics = json.loads((res / "metrics" / method / "seed0.json").read_text())
        assert 0 <= metrics["metrics"]["foscttm_image_rna"] <= 1
        assert metrics["held_out"]["rna"]["split"]
    table = pd.read_csv(res / "comparison.tsv", sep="\t")
    assert set(table["method"]) == {"mmd", "none", "trivial"}
    for figure in ("latent_umap", "latent_shift"):
        assert (res / "plots" / "evaluate" / "mmd" / "seed0" / f"{figure}.png").stat().st_size > 0
    assert (res / "checkpoints" / "mmd" / "seed0" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_report_after_a_run(tiny_run):
    proc = run_snakemake(tiny_run, tiny_run / "tiny.yaml", "--report", "report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (tiny_run / "report.html").read_text(errors="replace")
    for category in ("0. Comparison", "1. Preprocessing", "2. Training", "3. Translation", "4. Evaluation"):
        assert category in html


@pytest.mark.slow
def test_rerun_has_nothing_to_do(tiny_run):
    proc = run_snakemake(tiny_run, tiny_run / "tiny.yaml", "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _override(config: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(config)
    *parents, key = dotted.split(".")
    node = out
    for part in parents:
        node = node.setdefault(part, {})
    node[key] = value
    return out


def dry_run_jobs(workdir: Path, config: dict, *extra: str, name: str = "changed") -> set[tuple[str, str]]:
    """(rule, method or domain) of every job a dry run schedules, the 'all' target aside.

    ``name`` names the config file written into ``workdir`` (distinct names let dry runs
    share the work folder at the same time; --nolock, as a dry run writes nothing).
    """
    cfg = workdir / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    proc = run_snakemake(workdir, cfg, "-n", "--nolock", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = set()
    for rule, body in re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n?)*)", proc.stdout, flags=re.M):
        wildcards = dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"wildcards: (.*)", body).group(1))) if "wildcards:" in body else {}
        if rule != "all":
            jobs.add((rule, wildcards.get("method", wildcards.get("domain", ""))))
    return jobs


def _after_training(*methods: str) -> set[tuple[str, str]]:
    jobs = {("plot_latents", ""), ("compare", "")}
    for m in methods:
        jobs |= {("train", m), ("translate", m), ("evaluate", m), ("plot_shift", m)}
    return jobs


#: one changed key per stage -> exactly the jobs that must rerun (TINY trains mmd + none)
RERUNS = [
    ("simulate.seed", 4, None),  # None: every job
    ("preprocess.rna.n_top_genes", 90, {("prepare", "rna")} | _after_training("mmd", "none")),
    ("preprocess.image.min_area", 25, {("prepare", "image")} | _after_training("mmd", "none")),
    ("domains.image.model.dropout", 0.2, _after_training("mmd", "none")),  # architecture: no new preparation
    ("model.latent_dim", 8, _after_training("mmd", "none")),
    ("training.max_epochs", 4, _after_training("mmd", "none")),
    ("alignment.weight", 0.5, _after_training("mmd")),  # 'none' has no alignment loss
    ("alignment.mmd.scales", [0.5, 2.0], _after_training("mmd")),
    ("alignment.warmup_epochs", 2, _after_training("mmd", "none")),  # shared keys count for 'none' too
    ("evaluation.label_k", 3, {("evaluate", "mmd"), ("evaluate", "none"), ("compare", "")}),
    # the sample the metrics and the latent-shift figure are drawn on
    ("evaluation.sample_seed", 5, {(r, m) for r in ("evaluate", "plot_shift") for m in ("mmd", "none")} | {("compare", "")}),
    ("training.threads", 1, set()),  # how a job runs, not what it computes
]


#: command-line overrides -> exactly the jobs that must rerun
OVERRIDES = [
    ("alignment={weight: 0.5}", _after_training("mmd")),
    ("training={max_epochs: 4}", _after_training("mmd", "none")),
    ("alignment={mmd: {unbiased: true}}", _after_training("mmd")),
    ("training={early_stopping_patience: null}", set()),  # null is the default: nothing changes
]


@pytest.fixture(scope="module")
def planned(tiny_run) -> dict[str, Future]:
    """The dry runs of every RERUNS and OVERRIDES case on the one finished tiny run.

    Each is a separate snakemake process in the same work folder; they run two at a time
    (a dry run keeps one core busy; CI has two) and each test reads its own result, so
    a failing dry run fails the test of its case.
    """
    pool = ThreadPoolExecutor(2)
    runs = {}
    for i, (key, value, _) in enumerate(RERUNS):
        runs[key] = pool.submit(dry_run_jobs, tiny_run, _override(TINY, key, value), name=f"rerun{i}")
    for i, (override, _) in enumerate(OVERRIDES):
        runs[override] = pool.submit(dry_run_jobs, tiny_run, TINY, "--config", override, name=f"override{i}")
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("key,value,expected", RERUNS, ids=[r[0] for r in RERUNS])
def test_a_config_change_reruns_exactly_the_affected_jobs(planned, key, value, expected):
    jobs = planned[key].result()
    if expected is None:
        # every job: simulate, 3 preparation jobs, 4 per method (train, translate, evaluate, plot_shift), plot_latents, compare
        assert ("simulate", "") in jobs and len(jobs) == 1 + 3 + 2 * 4 + 2
    else:
        assert jobs == expected


@pytest.mark.slow
@pytest.mark.parametrize("override,expected", OVERRIDES)
def test_config_overrides_on_the_command_line_are_typed(planned, override, expected):
    assert planned[override].result() == expected


def test_invalid_config_stops_the_workflow_naming_the_key(tmp_path):
    bad = dict(TINY, simulate={"n_cells": 10})
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(bad))
    proc = run_snakemake(tmp_path, cfg, "-n")
    assert proc.returncode != 0
    assert "n_cells" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("device,gpus", [("cuda", "gpu=1"), ("auto", "gpu=0")])
def test_training_requests_a_gpu_only_for_cuda(tmp_path, device, gpus):
    """With device: cuda the train jobs ask the scheduler for a GPU (SLURM: --gpus=1)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(dict(TINY, training={**TINY["training"], "device": device})))
    proc = run_snakemake(tmp_path, cfg, "-n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    train_jobs = [block for block in proc.stdout.split("\n\n") if "rule train:" in block]
    assert train_jobs and all(gpus in block for block in train_jobs)
