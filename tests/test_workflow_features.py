"""End to end: a user's own data, an RNA count file and a ``features`` table, without truth."""

import json
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from _synthetic import latent_states, make_rna
from test_workflow import run_snakemake as _snakemake

N_CELLS = 150



@pytest.fixture(scope="module")
def byo(tmp_path_factory) -> Path:
    """A work folder with rna.h5ad (counts), pcs.csv (real values), labels and a config without truth."""
    work = tmp_path_factory.mktemp("byo")
    types, state = latent_states(N_CELLS, seed=4)
    rna = make_rna(types, state, seed=5)
    # raw counts in X, as a user's file holds them, with labels and held-out cells in obs
    counts = ad.AnnData(X=rna.layers["counts"].toarray(), obs=rna.obs[["cell_type"]].copy(), var=rna.var)
    counts.obs["split"] = np.where(np.arange(N_CELLS) % 5 == 0, "test", "train")
    counts.write_h5ad(work / "rna.h5ad")
    rng = np.random.default_rng(6)
    pcs = np.tanh(state @ rng.normal(size=(3, 10))) * np.geomspace(8, 0.3, 10) + rng.normal(0, 0.05, (N_CELLS, 10))
    names = [f"cell{i}" for i in range(N_CELLS)]
    pd.DataFrame(pcs, index=names, columns=[f"PC{j + 1}" for j in range(10)]).to_csv(work / "pcs.csv")
    pd.DataFrame({"cell_type": [f"type{t}" for t in types]}, index=names).to_csv(work / "pcs_labels.tsv", sep="\t")
    config = {
        "run": "byo",
        # no 'truth': real unpaired data has none
        "domains": {
            "rna": {"modality": "rna", "input": str(work / "rna.h5ad"), "model": {"hidden_dims": [32]}},
            "pcs": {"modality": "features", "input": str(work / "pcs.csv"), "labels": str(work / "pcs_labels.tsv"),
                    "model": {"hidden_dims": [32]}},
        },
        "preprocess": {"rna": {"min_genes": 5, "min_cells": 1, "max_pct_mito": 100, "n_top_genes": 40,
                               "min_cells_after_qc": 20}},
        "alignment": {"methods": ["mmd"], "baseline": False, "labels": {"use": True},
                      "warmup_epochs": 0, "ramp_epochs": 1},
        "model": {"latent_dim": 4},
        "training": {"max_epochs": 2, "batch_size": 64, "checkpoint_every": 1, "threads": 1},
    }
    (work / "byo.yaml").write_text(yaml.safe_dump(config))
    return work


def test_dry_run_plans_every_stage_for_a_features_domain(byo):
    proc = _snakemake(byo, byo / "byo.yaml", "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out.split("Job stats:")[1], flags=re.MULTILINE))
    assert stats == {"prepare": "2", "train": "1", "translate": "1", "evaluate": "1", "plot_shift": "1",
                     "plot_latents": "1", "compare": "1", "all": "1", "total": "9"}
    assert "results/byo/prepared/pcs.h5ad" in out
    assert "truth.tsv" not in out  # no truth: nothing makes or reads one
    assert "rna_to_pcs.png" not in out  # nor are the scatter plots against measured partners planned


@pytest.mark.slow
def test_features_domain_prepares_trains_and_is_evaluated_without_truth(byo):
    target = "results/byo/metrics/mmd/seed0.json"
    proc = _snakemake(byo, byo / "byo.yaml", target)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = byo / "results" / "byo"
    pcs = ad.read_h5ad(res / "prepared" / "pcs.h5ad")
    info = pcs.uns["cellbridge"]
    assert info["modality"] == "features" and info["domain"] == "pcs" and info["params"]["standardize"] is False
    assert (pcs.obs["domain"] == "pcs").all() and pcs.obs["cell_type"].notna().all()
    # used as given (the default): X holds the file's values, no second copy
    given = pd.read_csv(byo / "pcs.csv", index_col=0).loc[pcs.obs_names, list(pcs.var_names)].to_numpy()
    np.testing.assert_allclose(pcs.X, given, rtol=1e-5, atol=1e-6)
    assert "unscaled" not in pcs.layers
    assert (res / "plots" / "prepare" / "pcs.png").stat().st_size > 0

    model = json.loads((res / "models" / "mmd" / "seed0" / "config.json").read_text())["config"]
    assert model["domains"]["pcs"]["modality"] == "features" and model["domains"]["pcs"]["likelihood"] == "gaussian"
    latent = ad.read_h5ad(res / "models" / "mmd" / "seed0" / "pcs.h5ad")
    assert latent.obsm["X_cellbridge"].shape == (N_CELLS, 4)
    translated = ad.read_h5ad(res / "translated" / "mmd" / "seed0" / "rna_to_pcs.h5ad")
    assert list(translated.var_names) == list(pcs.var_names)

    metrics = json.loads((res / "metrics" / "mmd" / "seed0.json").read_text())
    assert any("no truth table" in s for s in metrics["skipped"])
    assert not any(k.startswith("foscttm") for k in metrics["metrics"])
    assert any(k.startswith("transfer") for k in metrics["metrics"])  # labels still score the alignment
