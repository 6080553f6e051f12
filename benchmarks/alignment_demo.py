"""Alignment quality and training speed of every method on the demo (issue targets).

Runs the workflow's own stage functions (simulate -> prepare -> train -> translate ->
evaluate) on the default config (`config/config.yaml`) in a scratch folder, trained
unpaired on the cells not held out and scored on the held-out cells with the simulator's
truth. Prints one row per method and writes benchmarks/results/alignment_demo.tsv.

Targets: adversarial, wasserstein and mmd reach FOSCTTM <= 0.10 and kNN label transfer
>= 0.90 between image and RNA; `none` stays at FOSCTTM >= 0.30; image -> RNA mean
per-gene Pearson over the most variable genes >= 0.5; training under 3 minutes per method.

    .venv/bin/python benchmarks/alignment_demo.py [--methods adversarial,wasserstein,mmd,none]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from cellbridge import stages
from cellbridge.config import load_config

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "alignment_demo.tsv"
COLUMNS = {
    "foscttm_image_rna": "FOSCTTM",
    "partner5_image_rna": "partner in 5-NN",
    "partner50_image_rna": "partner in 50-NN",
    "transfer_accuracy_rna_to_image": "label transfer rna->image",
    "transfer_accuracy_image_to_rna": "label transfer image->rna",
    "pearson_gene_top_image_to_rna": "image->rna Pearson (top genes)",
    "morph_r_rna_to_image": "rna->image morphology r",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--methods", default="adversarial,wasserstein,mmd,none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    config = load_config(args.config)
    config["run"] = "bench"
    os.chdir(args.workdir or tempfile.mkdtemp(prefix="cellbridge-align-"))
    stages.simulate(config)
    for domain in config["domains"]:
        stages.prepare_domain(config, domain)
    rows = []
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        model = stages.train(config, method, args.seed)
        seconds = time.perf_counter() - t0
        stages.translate(config, method, args.seed)
        metrics = stages.evaluate(config, method, args.seed)["metrics"]
        n_train = sum(int((a.obs.get("split", pd.Series("train", index=a.obs_names)).astype(str) != "test").sum())
                      for a in model.adatas.values())
        row = {"method": method, **{label: metrics.get(key) for key, label in COLUMNS.items()},
               "epochs": len(model.history), "train seconds": seconds,
               "cells/s": n_train * len(model.history) / seconds}
        rows.append(row)
        print(pd.DataFrame([row]).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT, sep="\t", index=False)
    print(table.round(3).to_string(index=False))
    print(f"written to {OUT}")


if __name__ == "__main__":
    main()
