"""Time and memory of the evaluation at a million cells per domain (issue 13).

Random latents stand in for a trained model: ``n`` cells per domain with 16 latent
dimensions and 5 cell types, the second domain listing the same cells in another order
(a truth table pairs them) and a mediocre alignment (FOSCTTM about 0.2). Measured, in one
process, with the evaluation defaults (``evaluation.max_cells`` 5,000, ``umap_max_cells`` 5,000):

* ``evaluate_run`` on the latents, every cell held out (alignment, label and mixing
  metrics on their samples), at ``n`` and at ``n`` = the cap (nothing sampled);
* each metric on its sample (the work above the bookkeeping), with its tracemalloc peak;
  and the same metric on every cell of a smaller size (``--exact-cells``), extrapolated
  to ``n`` as ``n**2`` (labelled as such: the cost without a cap);
* translation metrics: ``evaluate_run`` with prepared RNA of ``--genes`` features, an
  image -> RNA translation and an RNA reconstruction of all ``n`` cells (80 % held out),
  held in memory and opened backed from ``.h5ad`` files as the evaluate stage does;
* ``plot_joint_latent`` (the ``plot_latents`` stage's figure) of the ``n``-cell latents,
  UMAP of a 5,000-cell sample, numba compilation included.

Wall time, CPU time (all threads) and peak resident memory (``ru_maxrss``, reset before
each phase with ``/proc/self/clear_refs``; "above start" subtracts the RSS when the phase
began, i.e. the data). Results: printed and written to
``benchmarks/results/evaluate_scaling.md``::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/evaluate_scaling.py [--cells 1000000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from cellbridge import metrics as M
from cellbridge.evaluate import MAX_CELLS, evaluate_run, sample_rows
from cellbridge.plotting import plot_joint_latent

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scaling import (  # noqa: E402  (the benchmarks folder is not a package)
    cpu_seconds, current_rss_mb, machine_info, peak_rss_mb, release_freed_memory, reset_peak_rss,
)

OUT = Path(__file__).resolve().parent / "results"
N_TYPES, LATENT_DIM = 5, 16


def simulated_run(n: int, *, genes: int = 0, test_fraction: float = 1.0, seed: int = 0) -> dict:
    """Latents (and optionally expression) of ``n`` cells in two domains plus their truth table."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, N_TYPES, n)
    truth_z = 3.0 * np.eye(N_TYPES, LATENT_DIM)[types] + rng.normal(size=(n, LATENT_DIM))
    perm = rng.permutation(n)  # image row i is cell perm[i]
    split = np.where(rng.random(n) < test_fraction, "test", "train")
    names = {d: np.char.add(f"{d}_", np.arange(n).astype(str)) for d in ("rna", "image")}
    latents = {}
    for d, order in (("rna", np.arange(n)), ("image", perm)):
        obs = pd.DataFrame({"cell_type": pd.Categorical(types[order].astype(str)), "split": split[order]},
                           index=pd.Index(names[d]))
        latents[d] = ad.AnnData(obs=obs)
        latents[d].obsm["X_cellbridge"] = truth_z[order] + 1.5 * rng.normal(size=(n, LATENT_DIM))
    ids = np.arange(n).astype(str)
    truth = pd.DataFrame({"cell_id": np.concatenate([ids, ids[perm]]), "domain": ["rna"] * n + ["image"] * n,
                          "obs_name": np.concatenate([names["rna"], names["image"]])})
    run = {"latents": latents, "truth": truth, "perm": perm}
    if genes:
        loadings = rng.normal(size=(LATENT_DIM, genes)).astype(np.float32)
        expr = truth_z.astype(np.float32) @ loadings
        expr += rng.normal(size=expr.shape).astype(np.float32)
        prepared = ad.AnnData(X=expr, obs=latents["rna"].obs.copy())
        noise = rng.normal(scale=0.5, size=expr.shape).astype(np.float32)
        run["prepared"] = {"rna": prepared}
        run["translations"] = {
            ("image", "rna"): ad.AnnData(X=expr[perm] + noise[perm], obs=latents["image"].obs.copy()),
            ("rna", "rna"): ad.AnnData(X=expr + noise, obs=latents["rna"].obs.copy()),
        }
    return run


def measured(fn, *args, trace: bool = False, **kwargs) -> tuple[object, dict]:
    """Run ``fn``; wall and CPU seconds, peak RSS (absolute and above the start), tracemalloc peak."""
    release_freed_memory()
    reset_peak_rss()
    start_rss, wall, cpu = current_rss_mb(), time.perf_counter(), cpu_seconds()
    if trace:
        tracemalloc.start()
    try:
        out = fn(*args, **kwargs)
        traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    finally:
        if trace:
            tracemalloc.stop()
    peak = peak_rss_mb()
    return out, {"wall_s": time.perf_counter() - wall, "cpu_s": cpu_seconds() - cpu, "peak_mb": peak,
                 "above_start_mb": peak - start_rss, "traced_mb": traced}


def sampled_inputs(run: dict, max_cells: int) -> dict:
    """The arrays each metric reads in ``evaluate_run`` (the same samples, every cell held out)."""
    z = {d: a.obsm["X_cellbridge"] for d, a in run["latents"].items()}
    labels = {d: a.obs["cell_type"].astype(str).to_numpy() for d, a in run["latents"].items()}
    n = len(run["perm"])
    # image row i is cell perm[i] = rna row perm[i]: the pairs, in image order
    ia, ib = np.arange(n), run["perm"]
    keep = sample_rows(n, max_cells, key="image_rna")
    rows = {d: sample_rows(n, max_cells, key=d) for d in z}
    zz = np.vstack([z[d][rows[d]] for d in z])
    return {
        "pair": (z["image"][ia[keep]], z["rna"][ib[keep]]),
        "z": {d: z[d][rows[d]] for d in z},
        "labels": {d: labels[d][rows[d]] for d in z},
        "pooled": (zz, np.repeat(list(z), [len(rows[d]) for d in z]),
                   np.concatenate([labels[d][rows[d]] for d in z])),
    }


def metric_calls(x: dict) -> dict:
    """Metric name -> zero-argument call, as ``evaluate_run`` makes them."""
    za, zb = x["pair"]
    zz, dom, lab = x["pooled"]
    return {
        "foscttm": lambda: M.foscttm(za, zb),
        "partner5": lambda: M.partner_in_knn(za, zb, k=5),
        "partner50": lambda: M.partner_in_knn(za, zb, k=50),
        "transfer rna -> image": lambda: M.knn_label_transfer(x["z"]["rna"], x["labels"]["rna"],
                                                              x["z"]["image"], x["labels"]["image"], k=5),
        "transfer image -> rna": lambda: M.knn_label_transfer(x["z"]["image"], x["labels"]["image"],
                                                              x["z"]["rna"], x["labels"]["rna"], k=5),
        "silhouette_label": lambda: M.silhouette_by_label(zz, lab, max_cells=MAX_CELLS),
        "domain_entropy": lambda: M.domain_entropy(zz, dom, k=30),
        "silhouette_by_domain": lambda: M.silhouette_by_domain(zz, dom, max_cells=MAX_CELLS),
    }


def evaluate_latents(run: dict) -> dict:
    return evaluate_run(run["latents"], truth=run["truth"], label_key="cell_type")


def evaluate_translations(run: dict, translations: dict) -> dict:
    return evaluate_run(run["latents"], translations=translations, prepared=run["prepared"], truth=run["truth"],
                        label_key="cell_type", latent_dim=LATENT_DIM)


def fmt_row(name: str, m: dict) -> str:
    def num(v, digits=1):
        return "" if v is None else f"{v:,.{digits}f}"

    return (f"| {name} | {num(m['wall_s'], 2)} | {num(m['cpu_s'], 1)} | {num(m['peak_mb'], 0)} | "
            f"{num(m['above_start_mb'], 0)} | {num(m.get('traced_mb'), 1)} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=1_000_000, help="cells per domain")
    p.add_argument("--exact-cells", type=int, default=20_000, help="size of the exact (unsampled) runs")
    p.add_argument("--genes", type=int, default=100, help="features of the translation phase")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    n = args.cells
    lines = [f"# Evaluation at {n:,} cells per domain", "",
             f"- {' '.join(sys.argv)}; evaluation.max_cells = {MAX_CELLS:,}; latent {LATENT_DIM}-d, "
             f"{N_TYPES} cell types",
             "- machine: " + ", ".join(f"{k} {v}" for k, v in machine_info().items() if k != "omp_wait_policy"),
             ""]
    header = ["| phase | wall s | CPU s | peak RSS MiB | above start MiB | tracemalloc peak MiB |",
              "|---|---|---|---|---|---|"]

    def show(name, m, rows):
        rows.append(fmt_row(name, m))
        print(rows[-1], flush=True)

    # ---- latents: evaluate_run at n and at the cap
    phases = []
    run, m = measured(simulated_run, n)
    show(f"simulate latents + truth ({n:,} cells/domain)", m, phases)
    res, m = measured(evaluate_latents, run)
    show(f"evaluate_run, latents, {n:,} cells/domain held out", m, phases)
    sampled = {k: v for k, v in res["metrics"].items() if k.startswith("n_sampled")}
    small = simulated_run(MAX_CELLS)
    res_cap, m = measured(evaluate_latents, small)
    show(f"evaluate_run, latents, {MAX_CELLS:,} cells/domain (the cap: nothing sampled)", m, phases)

    # ---- each metric: on its sample at n, and exact at --exact-cells (extrapolated to n)
    per_metric = ["| metric | on the sample at n: wall s | tracemalloc peak MiB | "
                  f"exact at {args.exact_cells:,}: wall s | tracemalloc peak MiB | "
                  f"exact at {n:,}, extrapolated (n^2): h |", "|---|---|---|---|---|---|"]
    at_n = metric_calls(sampled_inputs(run, MAX_CELLS))
    exact_run = simulated_run(args.exact_cells, seed=1)
    exact = metric_calls(sampled_inputs(exact_run, args.exact_cells))
    values = {}
    for name in at_n:
        values[name], ms = measured(at_n[name], trace=True)
        _, me = measured(exact[name], trace=True)
        silhouette = name.startswith("silhouette")  # subsampled to the cap either way
        extrapolated = "(subsampled)" if silhouette else f"{me['wall_s'] * (n / args.exact_cells) ** 2 / 3600:,.1f}"
        per_metric.append(f"| {name} | {ms['wall_s']:.2f} | {ms['traced_mb']:.1f} | {me['wall_s']:.2f} | "
                          f"{me['traced_mb']:.1f} | {extrapolated} |")
        print(per_metric[-1], flush=True)
    del exact_run, exact, small

    # ---- plot_latents' figure at n
    with tempfile.TemporaryDirectory() as tmp:
        z = {d: a.obsm["X_cellbridge"] for d, a in run["latents"].items()}
        labels = {d: a.obs["cell_type"].to_numpy() for d, a in run["latents"].items()}
        _, m = measured(plot_joint_latent, z, labels=labels, path=Path(tmp) / "umap.png", method="random latents")
        show(f"plot_joint_latent (plot_latents), {n:,} cells/domain, UMAP of {MAX_CELLS:,}", m, phases)
    del run, z, labels

    # ---- translation metrics at n: in memory, then opened backed as the stage does
    trun, m = measured(simulated_run, n, genes=args.genes, test_fraction=0.8)
    show(f"simulate latents + {args.genes} features, 3 matrices of {n:,} cells", m, phases)
    res_tr, m = measured(evaluate_translations, trun, trun["translations"])
    show(f"evaluate_run with translations in memory ({n:,} cells, 80 % held out)", m, phases)
    with tempfile.TemporaryDirectory(dir=args.out.parent if args.out.parent.exists() else None) as tmp:
        paths = {}
        for key, tr in trun["translations"].items():
            paths[key] = Path(tmp) / f"{key[0]}_to_{key[1]}.h5ad"
            tr.write_h5ad(paths[key])
        del trun["translations"]
        release_freed_memory()
        backed = {key: ad.read_h5ad(path, backed="r") for key, path in paths.items()}
        res_backed, m = measured(evaluate_translations, trun, backed)
        for tr in backed.values():
            tr.file.close()
        show("evaluate_run with the translations opened backed (the evaluate stage)", m, phases)
    assert res_backed["metrics"] == res_tr["metrics"]

    keep = ("foscttm_image_rna", "partner5_image_rna", "transfer_accuracy_rna_to_image", "domain_entropy",
            "silhouette_label")
    lines += ["## Phases", "", *header, *phases, "",
              f"Sample sizes at {n:,}: " + ", ".join(f"`{k}` {int(v):,}" for k, v in sorted(sampled.items())),
              "",
              "Latent metrics at n (sampled) vs at the cap (all cells of a run of that size): "
              + "; ".join(f"{k} {res['metrics'][k]:.4f} / {res_cap['metrics'][k]:.4f}" for k in keep),
              "",
              "Translation metrics at n: " + "; ".join(
                  f"{k} {v:.4f}" for k, v in sorted(res_tr["metrics"].items())
                  if ("_to_" in k or k.startswith(("reconstruction", "pca"))) and not k.startswith("transfer")),
              "", "## Each metric", "",
              f"On its sample at {n:,} cells per domain ({MAX_CELLS:,} pairs or cells per domain; the "
              "bookkeeping of the first phase, pairing and labels over every cell, is not included), and "
              f"on every cell at {args.exact_cells:,} per domain, extrapolated to {n:,} as n^2:", "",
              *per_metric, ""]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluate_scaling.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
