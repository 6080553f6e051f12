"""A training job killed halfway resumes from its checkpoint when rerun (no lost work)."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 8

CONFIG = {
    "run": "resume",
    "simulate": {"n_cells": 200, "n_genes": 200, "atac": False, "seed": 1},
    "domains": {
        "rna": {"modality": "rna", "input": "simulated"},
        "image": {"modality": "image", "input": "simulated", "annotations": "simulated"},
    },
    "preprocess": {"rna": {"n_top_genes": 80, "min_genes": 10, "max_pct_mito": 100, "min_cells_after_qc": 20}},
    # unsupervised mmd: the correspondence prior is on (resumed runs recompute it), at cheap settings
    "alignment": {"methods": ["mmd"], "warmup_epochs": 1, "ramp_epochs": 1,
                  "correspondence": {"k_grid": [10], "epsilon": 0.02, "n_restarts": 1}},
    "training": {"max_epochs": EPOCHS, "checkpoint_every": 1, "batch_size": 32, "threads": 1},
}


def _cli(*args: str, cwd: Path) -> list[str]:
    return [sys.executable, "-m", "cellbridge.cli", *args, "--config", str(cwd / "c.yaml")]


def _checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except Exception:  # being replaced right now, or not there yet
        return 0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A project folder with the config, simulated and prepared data (shared, copied per test)."""
    work = tmp_path_factory.mktemp("resume_prepared")
    (work / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    for step in (["simulate"], ["prepare"]):
        subprocess.run(_cli(*step, cwd=work), cwd=work, check=True, capture_output=True)
    return work


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_training_resumes_from_checkpoint(prepared, tmp_path, sig):
    tmp_path = tmp_path / "project"
    shutil.copytree(prepared, tmp_path, symlinks=True)  # inputs only: no checkpoint, no model yet
    ckpt = tmp_path / "results" / "resume" / "checkpoints" / "mmd" / "seed0" / "checkpoint.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(_cli("train", "-m", "mmd", "-q", cwd=tmp_path), cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while _checkpoint_epoch(ckpt) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    killed_at = _checkpoint_epoch(ckpt)
    assert 3 <= killed_at < EPOCHS
    model_dir = tmp_path / "results" / "resume" / "models" / "mmd" / "seed0"
    assert not (model_dir / "model.pt").exists()  # no output from the interrupted run

    rerun = subprocess.run(_cli("train", "-m", "mmd", "-q", cwd=tmp_path), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"after epoch {killed_at}" in rerun.stdout + rerun.stderr  # resumed, not restarted
    history = pd.read_csv(model_dir / "history.tsv", sep="\t")
    assert len(history) == EPOCHS  # same final epoch count, earlier epochs kept
