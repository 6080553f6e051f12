"""Time, peak memory and file sizes of the translate stage at scale (issue 13).

Simulated prepared RNA (2,000 genes, sparse ``X``) and image (16 px crops) domains of
``--cells`` cells each, made as ``benchmarks/scaling.py`` makes them
(:func:`scaling.simulated_domains`) and written as the prepare stage writes them, and
the workflow's default model (:func:`scaling.default_model`) trained one epoch on a
2,000-cell subsample: translation time does not depend on training. The translate stage
(:func:`cellbridge.stages.translate`: all four pairs, chunk by chunk, and the RNA -> image
gallery) runs in a fresh process per measurement, as a workflow job does; wall time, CPU
time and peak resident memory (``VmHWM``: ``ru_maxrss`` of a child counts the RSS of
the parent it was forked from) are that process's, "at start" its RSS once the packages
are imported:

* every pair of all cells with ``translation.morphology: false`` (the bulk path) in chunks
  of ``--chunk`` cells;
* the first ``--sweep-cells`` cells in chunks of each ``--sweep`` size (the largest: one
  piece), to choose the default chunk;
* one chunk of cells (the first ``--morphology-cells``) with morphology off and on: the
  difference is the morphology of the predicted crops (two image targets per source cell);
* writing one chunk of a translated ``X`` with the compressions h5py offers, beside the
  ``gzip`` every ``.h5ad`` of the workflow is written with.

A million cells is extrapolated linearly from the measured size (labelled as such).
Results: printed and written to ``benchmarks/results/translate_scaling.md``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/translate_scaling.py [--cells 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

OUT = Path(__file__).resolve().parent / "results"
N_GENES, CROP_SIZE, POOL_SIZE = 2000, 16, 4096
TRAIN_CELLS = 2000
MILLION = 1_000_000
PAIRS = [(s, t) for s in ("rna", "image") for t in ("rna", "image")]


# ----------------------------------------------------------------------------- the stage, in a child
def stage_config(paths: dict[str, Path], *, chunk: int, morphology: bool) -> dict:
    from cellbridge.config import validate_config

    return validate_config({
        "run": "translate_scaling",
        "label_key": "cell_type",
        "domains": {d: {"modality": d, "input": str(p)} for d, p in paths.items()},
        "translation": {"chunk_cells": chunk, "morphology": morphology},
    })


def run_stage(folder: Path, data: str, out: Path, *, chunk: int, morphology: bool) -> dict:
    """The translate stage on ``folder/{data}_{domain}.h5ad`` into ``out`` (in this process); its figures."""
    import torch  # noqa: F401  (imported before the start RSS is read: every job imports it)

    from cellbridge import stages

    paths = {d: folder / f"{data}_{d}.h5ad" for d in ("rna", "image")}
    config = stage_config(paths, chunk=chunk, morphology=morphology)
    outputs = {(s, t): out / f"{s}_to_{t}.h5ad" for s, t in PAIRS}
    start_mb = _rss_mb()
    usage0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    stages.translate(config, "wasserstein", 0, model_path=folder / "model", prepared=paths, outputs=outputs,
                     galleries={("rna", "image"): out / "rna_to_image.png"})
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime,
        "peak_mb": _peak_rss_mb(),
        "start_mb": start_mb,
        "file_mb": {f"{s}_to_{t}": outputs[(s, t)].stat().st_size / 2**20 for s, t in PAIRS},
    }


def _rss_mb() -> float:
    from scaling import current_rss_mb

    return current_rss_mb()


def _peak_rss_mb() -> float:
    """This process's peak RSS (MiB) from ``VmHWM``: unlike ``ru_maxrss``, it starts afresh at ``exec``."""
    import re

    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024.0


def measured_stage(folder: Path, data: str, *, chunk: int, morphology: bool, keep: bool = False) -> dict:
    """:func:`run_stage` in a fresh Python process (its own peak RSS); its outputs are deleted unless ``keep``."""
    out = folder / f"out_{data}_{chunk}_{'on' if morphology else 'off'}"
    cmd = [sys.executable, __file__, "--worker", str(folder), "--data", data, "--out", str(out),
           "--chunk", str(chunk), "--morphology", "on" if morphology else "off"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the translate stage failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["out"] = str(out)
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return result


# ----------------------------------------------------------------------------- data and model
def prepare(folder: Path, n_cells: int, subsets: dict[str, int]) -> dict:
    """Write the prepared domains (``all`` cells and each subset of the first cells) and the model into ``folder``."""
    from scaling import default_model, simulated_domains

    from cellbridge._io import write_h5ad

    t0 = time.perf_counter()
    adatas = simulated_domains(n_cells, n_genes=N_GENES, crop_size=CROP_SIZE, pool_size=POOL_SIZE, seed=0)
    info = {"simulate_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    for name, adata in adatas.items():
        write_h5ad(adata, folder / f"all_{name}.h5ad")
        for subset, first in subsets.items():
            write_h5ad(adata[:first].copy(), folder / f"{subset}_{name}.h5ad")
    info["write_s"] = time.perf_counter() - t0
    info["prepared_mb"] = {name: (folder / f"all_{name}.h5ad").stat().st_size / 2**20 for name in adatas}
    info["x_nnz_per_cell"] = adatas["rna"].X.nnz / n_cells
    sub = {name: adata[:TRAIN_CELLS].copy() for name, adata in adatas.items()}
    del adatas
    model = default_model(sub, alignment="wasserstein", rna_likelihood="auto", seed=0)
    model.train(max_epochs=1, progress=False)
    model.save(folder / "model")
    return info


def compression_costs(path: Path, rows: int) -> list[dict]:
    """Seconds and bytes of writing the first ``rows`` rows of a translated ``X`` per compression."""
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        x = np.asarray(f["X"][:rows])
        chunks = f["X"].chunks
    out = []
    for name, kwargs in (("gzip (level 4, as written)", {"compression": "gzip"}),
                         ("gzip level 1", {"compression": "gzip", "compression_opts": 1}),
                         ("shuffle + gzip", {"compression": "gzip", "shuffle": True}),
                         ("lzf", {"compression": "lzf"}),
                         ("none", {})):
        with tempfile.NamedTemporaryFile(suffix=".h5", dir=path.parent) as tmp:
            t0 = time.perf_counter()
            with h5py.File(tmp.name, "w") as f:
                f.create_dataset("X", data=x, chunks=chunks, **kwargs)
            seconds = time.perf_counter() - t0
            out.append({"compression": name, "s": seconds, "mb": os.path.getsize(tmp.name) / 2**20})
    return out


# ----------------------------------------------------------------------------- report
def _row(name: str, r: dict, n_cells: int) -> str:
    return (f"| {name} | {r['wall_s']:,.1f} | {r['cpu_s']:,.1f} | {n_cells * 4 / r['wall_s']:,.0f} | "
            f"{r['peak_mb']:,.0f} | {r['start_mb']:,.0f} | {sum(r['file_mb'].values()):,.0f} |")


def report(args, info: dict, runs: dict[str, dict], comp: list[dict]) -> str:
    from scaling import machine_info

    n, m = args.cells, args.morphology_cells
    bulk, off, on = runs["bulk"], runs["morphology off"], runs["morphology on"]
    scale = MILLION / n
    morph_ms = 1e3 * (on["wall_s"] - off["wall_s"]) / (2 * m)
    # memory per cell: the run on all cells against the sweep run with the same chunk (fewer cells)
    fewer = runs.get(f"sweep {args.chunk}")
    per_cell_kb = None if fewer is None else (bulk["peak_mb"] - fewer["peak_mb"]) * 1024 / (n - args.sweep_cells)
    lines = [
        f"# The translate stage at {n:,} cells per domain", "",
        f"- `{' '.join(sys.argv)}`; RNA {N_GENES:,} genes (sparse X, {info['x_nnz_per_cell']:,.0f} stored values "
        f"per cell), image {CROP_SIZE} px crops; default model trained 1 epoch on {TRAIN_CELLS:,} cells",
        "- machine: " + ", ".join(f"{k} {v}" for k, v in machine_info().items() if k != "omp_wait_policy")
        + f"; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "- prepared files: " + ", ".join(f"{d} {mb:,.0f} MiB" for d, mb in info["prepared_mb"].items())
        + f" (simulated in {info['simulate_s']:.0f} s, written in {info['write_s']:.0f} s; not part of the stage)",
        "",
        "## The stage: all four pairs (rna/image -> rna/image) and the rna -> image gallery", "",
        "One process per row: wall and CPU time, translated cells per second (4 pairs x cells / wall), peak "
        "resident memory, the RSS once the packages are imported, and the four files written.", "",
        "| run | wall s | CPU s | cells/s | peak RSS MiB | at start MiB | files MiB |",
        "|---|---|---|---|---|---|---|",
        _row(f"{n:,} cells, chunk_cells {args.chunk:,}, morphology off", bulk, n),
        *[_row(f"first {args.sweep_cells:,} cells, chunk_cells {c:,}, morphology off", runs[f"sweep {c}"],
               args.sweep_cells) for c in args.sweep],
        _row(f"first {m:,} cells, one chunk, morphology off", off, m),
        _row(f"first {m:,} cells, one chunk, morphology on", on, m),
        "",
        f"Files of {n:,} cells: " + ", ".join(f"{k} {v:,.0f} MiB" for k, v in bulk["file_mb"].items()),
        "",
        f"Morphology of predicted crops: {morph_ms:.2f} ms per crop "
        f"(({on['wall_s']:.1f} s - {off['wall_s']:.1f} s) / (2 image targets x {m:,} cells)).",
        "",
        f"## Extrapolated to {MILLION:,} cells per domain (linear in cells; not measured)", "",
        f"- time, morphology off: {bulk['wall_s'] * scale / 60:,.1f} min; morphology on adds "
        f"{morph_ms * 2 * MILLION / 1e3 / 60:,.1f} min (2 x {MILLION:,} crops)",
        f"- files: {sum(bulk['file_mb'].values()) * scale / 1024:,.1f} GiB",
        f"- peak RSS: {bulk['peak_mb']:,.0f} MiB here, growing by {per_cell_kb:.1f} KB per cell (the image "
        f"domain's {CROP_SIZE} px crops held in memory, 1 KB, and obs), measured between {args.sweep_cells:,} and "
        f"{n:,} cells at chunk_cells {args.chunk:,}: about "
        f"{(bulk['peak_mb'] + per_cell_kb * (MILLION - n) / 1024) / 1024:,.1f} GiB"
        if per_cell_kb is not None else f"- peak RSS: {bulk['peak_mb']:,.0f} MiB here",
        "",
        f"## Writing {args.compression_rows:,} rows of the image -> rna X ({N_GENES:,} float32 per row)", "",
        "| compression | s | MiB |", "|---|---|---|",
        *[f"| {c['compression']} | {c['s']:.2f} | {c['mb']:,.1f} |" for c in comp],
        "",
        f"At the first rate, compressing X of the two rna targets of {n:,} cells takes about "
        f"{comp[0]['s'] * 2 * n / args.compression_rows:,.0f} s of the stage's {bulk['wall_s']:,.0f} s (estimated).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=200_000, help="cells per domain")
    p.add_argument("--chunk", type=int, default=5_000, help="translation.chunk_cells of the run on all cells")
    p.add_argument("--sweep-cells", type=int, default=40_000, help="cells of the chunk-size runs")
    p.add_argument("--sweep", type=int, nargs="+", default=[5_000, 20_000, 40_000], help="chunk sizes compared")
    p.add_argument("--morphology-cells", type=int, default=10_000, help="cells of the morphology on/off runs")
    p.add_argument("--compression-rows", type=int, default=20_000)
    p.add_argument("--data-dir", default=None, help="folder for the temporary files (default: the system's)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--data", default="all", help=argparse.SUPPRESS)
    p.add_argument("--morphology", choices=["on", "off"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        result = run_stage(args.worker, args.data, args.out, chunk=args.chunk, morphology=args.morphology == "on")
        print(json.dumps(result))
        return
    folder = Path(tempfile.mkdtemp(prefix="cellbridge-translate-", dir=args.data_dir))
    try:
        info = prepare(folder, args.cells, {"sweep": args.sweep_cells, "morph": args.morphology_cells})
        print(f"data: {info}", flush=True)
        runs = {"bulk": measured_stage(folder, "all", chunk=args.chunk, morphology=False, keep=True)}
        print(f"bulk: {runs['bulk']}", flush=True)
        comp = compression_costs(Path(runs["bulk"]["out"]) / "image_to_rna.h5ad", args.compression_rows)
        shutil.rmtree(runs["bulk"]["out"], ignore_errors=True)
        for chunk in args.sweep:
            runs[f"sweep {chunk}"] = measured_stage(folder, "sweep", chunk=chunk, morphology=False)
            print(f"sweep {chunk}: {runs[f'sweep {chunk}']}", flush=True)
        for morphology in (False, True):
            key = f"morphology {'on' if morphology else 'off'}"
            runs[key] = measured_stage(folder, "morph", chunk=args.morphology_cells, morphology=morphology)
            print(f"{key}: {runs[key]}", flush=True)
        text = report(args, info, runs, comp)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "translate_scaling.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
