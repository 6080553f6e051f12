"""Alignment quality and training speed of every method on the demo (issue targets).

Runs the workflow's own stage functions (simulate -> prepare -> train -> translate ->
evaluate) on the default config (`config/config.yaml`) in a scratch folder, trained
unpaired on the cells not held out and scored on the held-out cells with the simulator's
truth. Every method is trained once per seed (``--seeds 0,1,2``: the seed sets weight
initialisation, validation split and minibatch order; the data stay the same), in
``--jobs`` worker processes of one torch thread each, as the workflow runs them with
``--cores 2``. Prints one row per method and seed, then the mean, standard deviation,
minimum and maximum over seeds, and writes both tables to
benchmarks/results/alignment_demo.tsv and alignment_demo_summary.tsv.

Targets: adversarial, wasserstein and mmd reach FOSCTTM <= 0.10 and kNN label transfer
>= 0.90 between image and RNA; `none` stays at FOSCTTM >= 0.30; image -> RNA mean
per-gene Pearson over the most variable genes >= 0.5; training under 3 minutes per method.

    .venv/bin/python benchmarks/alignment_demo.py [--methods adversarial,wasserstein,mmd,none] [--seeds 0,1,2] [--jobs 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "alignment_demo.tsv"
SUMMARY = OUT.with_name("alignment_demo_summary.tsv")
COLUMNS = {
    "foscttm_image_rna": "FOSCTTM",
    "partner5_image_rna": "partner in 5-NN",
    "partner50_image_rna": "partner in 50-NN",
    "transfer_accuracy_rna_to_image": "label transfer rna->image",
    "transfer_accuracy_image_to_rna": "label transfer image->rna",
    "pearson_gene_top_image_to_rna": "image->rna Pearson (top genes)",
    "morph_r_rna_to_image": "rna->image morphology r",
}


def run_one(config: dict, method: str, seed: int) -> dict:
    """Train, translate and evaluate one method and seed (in a worker process)."""
    from cellbridge import stages

    t0 = time.perf_counter()
    model = stages.train(config, method, seed)
    seconds = time.perf_counter() - t0
    stages.translate(config, method, seed)
    metrics = stages.evaluate(config, method, seed)["metrics"]
    n_train = sum(
        int((a.obs.get("split", pd.Series("train", index=a.obs_names)).astype(str) != "test").sum())
        for a in model.adatas.values()
    )
    return {
        "method": method,
        "seed": seed,
        **{label: metrics.get(key) for key, label in COLUMNS.items()},
        "epochs": len(model.history),
        "train seconds": seconds,
        "cells/s": n_train * len(model.history) / seconds,
    }


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation, minimum and maximum of every metric per method."""
    numeric = table.drop(columns=["seed"]).groupby("method", sort=False)
    parts = {stat: getattr(numeric, stat)() for stat in ("mean", "std", "min", "max")}
    out = pd.concat(parts, axis=1)
    out.columns = [f"{col} {stat}" for stat, col in out.columns]
    out.insert(0, "seeds", table.groupby("method", sort=False)["seed"].size())
    return out.reset_index()


def main() -> None:
    from cellbridge import stages
    from cellbridge.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--methods", default="adversarial,wasserstein,mmd,none")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    config = load_config(args.config)
    config["run"] = "bench"
    config["training"]["threads"] = 1
    os.chdir(args.workdir or tempfile.mkdtemp(prefix="cellbridge-align-"))
    stages.simulate(config)
    for domain in config["domains"]:
        stages.prepare_domain(config, domain)
    runs = [(m, int(s)) for m in args.methods.split(",") for s in args.seeds.split(",")]
    rows = []
    # spawned (not forked) workers: each starts its own torch thread pool
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_one, config, m, s) for m, s in runs]
        for future in futures:
            rows.append(future.result())
            print(pd.DataFrame([rows[-1]]).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    summary = summarise(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT, sep="\t", index=False)
    summary.to_csv(SUMMARY, sep="\t", index=False)
    print(table.round(3).to_string(index=False))
    brief = [c for c in summary.columns if c.split(" ")[0] in ("FOSCTTM", "label", "train")]
    print(summary[["method", "seeds", *brief]].round(3).to_string(index=False))
    print(f"written to {OUT} and {SUMMARY}")


if __name__ == "__main__":
    main()
