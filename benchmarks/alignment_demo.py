"""Alignment quality and training speed of every method on the demo (issue targets).

Runs the workflow's own stage functions (simulate -> prepare -> train -> translate ->
evaluate) on the default config (`config/config.yaml`) in a scratch folder, trained
unpaired on the cells not held out and scored on the held-out cells with the simulator's
truth. Every method is trained once per seed (``--seeds 0,1,2``: the seed sets weight
initialisation, validation split and minibatch order; the data stay the same), in
``--jobs`` worker processes of one torch thread each, as the workflow runs them with
``--cores 2``. ``--latent-dims 8,16`` repeats everything at each latent size on the same
prepared data (default: the config's ``model.latent_dim``). ``--settings
unsupervised,labels`` trains each method without labels (no label classifier, no
conditional discriminator: the geometric correspondence prior is then on by default)
and with the config's label supervision; ``none`` is trained once, in the first setting. Prints one row per method,
latent size and seed, then the mean, standard deviation, minimum and maximum over seeds,
and writes both tables to benchmarks/results/alignment_demo.tsv and
alignment_demo_summary.tsv: a run replaces both files, unless ``--update`` merges its rows
into the table already there (rows of the same setting, method, latent size and seed are
replaced, all others kept; the summary is recomputed from the merged table).

Targets: adversarial, wasserstein and mmd reach FOSCTTM <= 0.10 and kNN label transfer
>= 0.90 between image and RNA; `none` stays at FOSCTTM >= 0.30; image -> RNA mean
per-gene Pearson over the most variable genes >= 0.5; training under 3 minutes per method.

    .venv/bin/python benchmarks/alignment_demo.py [--methods adversarial,wasserstein,mmd,none] [--seeds 0,1,2]
        [--latent-dims 8,16] [--settings unsupervised,labels] [--jobs 2] [--update]
"""

from __future__ import annotations

import argparse
import copy
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
    # held-out reconstruction against PCA with as many components as the latent has
    "reconstruction_mse_rna": "rna reconstruction MSE",
    "pca_mse_rna": "rna PCA MSE",
    "reconstruction_mse_image": "image reconstruction MSE",
    "pca_mse_image": "image PCA MSE",
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
        "setting": setting_of(config),
        "latent": config["model"]["latent_dim"],
        "seed": seed,
        **{label: metrics.get(key) for key, label in COLUMNS.items()},
        "epochs": len(model.history),
        "train seconds": seconds,
        "cells/s": n_train * len(model.history) / seconds,
    }


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation, minimum and maximum over seeds of every metric, per method and latent size."""
    keys = ["setting", "method", "latent"]
    numeric = table.drop(columns=["seed"]).groupby(keys, sort=False)
    parts = {stat: getattr(numeric, stat)() for stat in ("mean", "std", "min", "max")}
    out = pd.concat(parts, axis=1)
    out.columns = [f"{col} {stat}" for stat, col in out.columns]
    out.insert(0, "seeds", table.groupby(keys, sort=False)["seed"].size())
    return out.reset_index()


KEYS = ["setting", "method", "latent", "seed"]


def merge_rows(path: Path, new: pd.DataFrame) -> pd.DataFrame:
    """The table at ``path`` (if any) with ``new``'s rows added, replacing rows of the same
    setting, method, latent size and seed; sorted by setting and method (each in the order first
    seen), then latent size and seed."""
    if not path.exists():
        return new
    old = pd.read_csv(path, sep="\t")
    fresh = pd.MultiIndex.from_frame(new[KEYS].astype({"latent": int, "seed": int}))
    kept = old[~pd.MultiIndex.from_frame(old[KEYS].astype({"latent": int, "seed": int})).isin(fresh)]
    merged = pd.concat([kept, new], ignore_index=True)
    order = {k: {v: i for i, v in enumerate(dict.fromkeys(merged[k]))} for k in ("setting", "method")}
    merged = merged.sort_values(
        KEYS, key=lambda col: col.map(order[col.name]) if col.name in order else col, kind="stable"
    )
    return merged.reset_index(drop=True)


def at_latent_size(config: dict, latent_dim: int) -> dict:
    """A copy of ``config`` at ``latent_dim``, in its own run folder that shares the prepared data."""
    out = copy.deepcopy(config)
    out["model"]["latent_dim"] = latent_dim
    out["run"] = f"{config['run']}_latent{latent_dim}"
    _share_prepared(config["run"], out["run"])
    return out


def _share_prepared(run: str, other: str) -> None:
    """Link run folder ``other``'s simulated and prepared data to those of ``run``."""
    shared, own = Path("results", run), Path("results", other)
    own.mkdir(parents=True, exist_ok=True)
    for sub in ("simulated", "prepared"):
        if not (own / sub).exists():
            (own / sub).symlink_to((shared / sub).resolve(), target_is_directory=True)


def setting_of(config: dict) -> str:
    """``labels`` when the config supervises with labels, else ``unsupervised``."""
    return "labels" if config["alignment"]["labels"]["use"] else "unsupervised"


def in_setting(config: dict, setting: str) -> dict:
    """A copy of ``config`` trained ``unsupervised`` (no labels) or with its ``labels`` settings,
    in its own run folder sharing the prepared data (latent-size folders nest inside)."""
    if setting not in ("unsupervised", "labels"):
        raise ValueError(f"setting must be 'unsupervised' or 'labels', not {setting!r}")
    out = copy.deepcopy(config)
    if setting == "unsupervised":
        out["alignment"]["labels"]["use"] = False
        out["alignment"]["adversarial"]["conditional"] = False
        out["run"] = f"{config['run']}_unsupervised"
        _share_prepared(config["run"], out["run"])
    return out


def main() -> None:
    from cellbridge import stages
    from cellbridge.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--methods", default="adversarial,wasserstein,mmd,none")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--latent-dims", help="comma-separated latent sizes (default: the config's)")
    parser.add_argument("--settings", default="labels", help="comma-separated: unsupervised, labels")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    parser.add_argument(
        "--update",
        action="store_true",
        help="merge into the existing result tables (rows of the same setting, method, latent and seed"
        " replaced) instead of replacing them",
    )
    args = parser.parse_args()
    config = load_config(args.config)
    config["run"] = "bench"
    config["training"]["threads"] = 1
    os.chdir(args.workdir or tempfile.mkdtemp(prefix="cellbridge-align-"))
    stages.simulate(config)
    for domain in config["domains"]:
        stages.prepare_domain(config, domain)
    sizes = [int(v) for v in (args.latent_dims or str(config["model"]["latent_dim"])).split(",")]
    settings = args.settings.split(",")
    configs = [at_latent_size(in_setting(config, st), size) for st in settings for size in sizes]
    runs = [
        (c, m, int(s))
        for c in configs
        for m in args.methods.split(",")
        if m != "none" or setting_of(c) == settings[0]  # the reference does not depend on the setting
        for s in args.seeds.split(",")
    ]
    rows = []
    # spawned (not forked) workers: each starts its own torch thread pool
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_one, c, m, s) for c, m, s in runs]
        for future in futures:
            rows.append(future.result())
            print(pd.DataFrame([rows[-1]]).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    if args.update:
        table = merge_rows(OUT, table)
    summary = summarise(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT, sep="\t", index=False)
    summary.to_csv(SUMMARY, sep="\t", index=False)
    print(table.round(3).to_string(index=False))
    brief = [c for c in summary.columns if c.split(" ")[0] in ("FOSCTTM", "label", "train")]
    print(summary[["setting", "method", "latent", "seeds", *brief]].round(3).to_string(index=False))
    print(f"written to {OUT} and {SUMMARY}")


if __name__ == "__main__":
    main()
