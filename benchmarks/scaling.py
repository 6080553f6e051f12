"""Scaling of cellbridge training and translation with the number of cells, and of a dense GW baseline.

cellbridge: two simulated domains of ``n`` cells each -- RNA (2,000 genes, log1p-normalised
CSR ``X`` plus int32 CSR counts; the sparse matrices are only densified per minibatch)
and images (16 x 16 nucleus crops) -- built from the demo simulator by
``benchmarks/_scaling_data.py``, written as prepared ``.h5ad`` files and read back as the
train stage reads them (:func:`cellbridge.stages.read_prepared` with ``for_training``: no
counts layer for the Gaussian likelihood, a sparse X over 2 GiB left on disk). The model
is the workflow default (latent 16, default architectures, Wasserstein alignment with
``reg=0.05``, cell-type supervision, ``batch_size="auto"``, lr 0.002 for 128 cells); one
epoch is trained (warm-up 0, so the alignment term is on) and both translations are run
over every cell, in chunks of ``--translate-chunk`` cells.

Reported per size (each in a fresh subprocess so sizes do not share memory):

* ``epoch_s`` -- one full epoch as the trainer records it (training steps + validation on
  the 10 % held-out cells; ``validation_s`` is the latter); with ``--max-steps`` the epoch
  is capped and its time extrapolated (``epoch_basis`` says which);
  ``cells_per_s`` -- training cells of both domains / ``epoch_s``;
* ``data_mb`` -- bytes of the two simulated AnnData objects (matrices, obs, var);
  ``file_mb`` -- their prepared files; ``rss_data_mb`` -- process RSS once the files are
  read as training reads them (includes Python, torch and the libraries);
* ``flops_per_cell``, ``matmul_gflop_s``, ``model_gflop_s``, ``matmul_fraction`` -- the
  arithmetic of a training step (:func:`model_arithmetic`) and the share of the dense
  matmul ceiling of its shapes that training reaches;
* ``peak_build_mb`` / ``peak_train_mb`` / ``peak_translate_mb`` -- peak RSS of building the
  model, of training and of translating; the peak is reset between phases (Linux
  ``/proc/self/clear_refs``), so the simulator's own peak is not counted.
  ``beyond_data_mb`` = max(build, train peaks) - ``rss_data_mb``: what training needs
  beyond holding the data;
* ``translate_rna_to_image_s`` (crops only, ``morphology=False``, the bulk path) and
  ``translate_image_to_rna_s``, over all cells or the first ``--translate-max-cells``;
  ``morphology_ms_per_cell`` -- measuring the predicted crops' morphology (``translate``'s
  default), timed on the first chunk.

SCOT-style dense baseline (``benchmarks/_scot.py``): kNN-graph geodesic distances
(SCOT's ``k = min(n / 5, 50)``, correlation metric) on 30 PCs of the simulated RNA and
30 PCs of the image crops, then one entropic Gromov-Wasserstein solve (``epsilon = 1e-3``,
up to 1,000 outer iterations), timed with its peak RSS. The size at which it would need
24 GB is extrapolated from a log-log fit of the measured solve memory, labelled as such.

Workers get ``OMP_WAIT_POLICY=PASSIVE`` unless it is set (see :func:`_child_env`). The
smoke run (``--smoke``: 500 cells, GW 100 and 200 cells with 10 outer iterations) runs
its sizes in one worker process. ``--resume`` keeps the measured rows of an existing
``scaling.csv`` and runs only the missing sizes.

Targets (issue): 1M cells x 2,000 genes, one epoch < 10 min on 2 cores with peak
memory < 8 GB. Results go to ``benchmarks/results/scaling.{csv,md}``::

    .venv/bin/python benchmarks/scaling.py [--sizes 10000,100000,1000000]
        [--gw-sizes 1000,2000,4000,8000] [--threads 2] [--smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import gc
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results"
GB = 1024.0  # MB per GB: memory is reported in MiB and GiB
GW_LIMIT_MB = 24 * GB
#: SCOT's (and POT's) outer-iteration limit of entropic GW (``_scot.DEFAULT_MAX_ITER``)
DEFAULT_GW_MAX_ITER = 1000
TARGET_EPOCH_S = 600.0
TARGET_PEAK_MB = 8 * GB
TARGET_CELLS = 1_000_000
TARGET_SMALL_CELLS = 100_000
TARGET_SMALL_EPOCH_S = 60.0

COLUMNS = [
    "method", "n_cells", "status", "threads", "n_genes", "crop_size", "batch_size", "alignment",
    "rna_likelihood", "lr", "generate_s", "data_mb", "write_s", "file_mb", "x_on_disk", "rss_data_mb", "build_s",
    "peak_build_mb", "flops_per_cell", "matmul_gflop_s", "model_gflop_s", "matmul_fraction", "epoch_s",
    "epoch_basis", "measured_epoch_s", "validation_s", "train_wall_s", "train_cpu_s", "steps_per_epoch", "steps_run",
    "cells_per_s", "peak_train_mb", "beyond_data_mb",
    "translated_cells", "translate_rna_to_image_s", "morphology_ms_per_cell", "translate_image_to_rna_s", "translate_chunk",
    "peak_translate_mb", "peak_generate_mb", "k", "epsilon", "geodesic_s", "gw_s", "total_s",
    "total_cpu_s", "max_iter", "peak_gw_mb", "gw_extra_mb", "converged", "measured_at", "note",
]  # fmt: skip


# ----------------------------------------------------------------------------- memory
def current_rss_mb() -> float:
    """Resident set size of this process now (MiB)."""
    try:
        text = Path("/proc/self/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024.0
    except (OSError, AttributeError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size since start or the last :func:`reset_peak_rss` (MiB).

    ``ru_maxrss`` (KiB on Linux) follows the kernel's high-water mark, which
    :func:`reset_peak_rss` lowers to the current RSS.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (less sensitive to a shared CPU than wall time)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux only); return whether it worked.

    Without it, phase peaks are cumulative (a later phase reports at least the earlier peaks).
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so RSS shows live data only."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# ----------------------------------------------------------------------------- cellbridge worker
#: ``report(row, phase)``: a measurement hands over its figures so far as a phase starts, so a
#: worker killed in that phase (timeout) still yields them
Report = Callable[[dict[str, Any], str], None]


def _no_report(row: dict[str, Any], phase: str) -> None:
    """Default :data:`Report`: keep nothing."""


def capped_sampler(max_steps: int | None, record: dict[str, Any]):
    """A sampler factory (``CrossModalModel.train(sampler=...)``) that caps an epoch at
    ``max_steps`` steps (``None``: the full epoch) and records the full and the run number of
    steps and the training cells."""
    from cellbridge.sampling import default_sampler

    def make(trainer):
        sampler = default_sampler(trainer)
        record["full_steps"] = sampler.steps_per_epoch
        record["train_cells"] = sum(len(c) for c in sampler.cells.values())
        if max_steps is not None:
            sampler.steps_per_epoch = min(sampler.steps_per_epoch, max_steps)
        record["steps"] = sampler.steps_per_epoch
        return sampler

    return make


def epoch_seconds(measured_s: float, record: dict[str, Any]) -> tuple[float, str]:
    """Seconds of a full epoch and how they were obtained.

    A capped epoch's step time is scaled to the full number of steps linearly (every step
    costs the same: one minibatch per domain); the validation pass always runs in full.
    """
    steps, full = record["steps"], record["full_steps"]
    if steps >= full:
        return measured_s, "measured"
    val = record.get("validation_s", 0.0)
    return val + (measured_s - val) * full / steps, f"extrapolated from {steps} of {full} steps"


def translate_all(model, adata, source: str, target: str, chunk: int, *, morphology: bool = True) -> tuple[float, float]:
    """Translate every cell of ``adata`` from ``source`` into ``target`` in chunks.

    Returns the seconds and the part of them spent measuring predicted crops' morphology.

    Results are dropped after each chunk: at a million cells the full image -> RNA
    output alone would be a dense 1M x 2,000 float32 matrix (8 GB).
    """
    import cellbridge.model as cbm

    spent = {"morphology": 0.0}
    original = cbm._crop_morphology

    def timed_morphology(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent["morphology"] += time.perf_counter() - t0

    cbm._crop_morphology = timed_morphology
    try:
        t0 = time.perf_counter()
        for start in range(0, adata.n_obs, chunk):
            out = model.translate(source, target, adata[start : start + chunk], morphology=morphology)
            del out
        return time.perf_counter() - t0, spent["morphology"]
    finally:
        cbm._crop_morphology = original


def simulated_domains(n_cells: int, *, n_genes: int, crop_size: int, pool_size: int, seed: int) -> dict[str, Any]:
    """The prepared RNA and image domains of ``n_cells`` simulated cells (see ``_scaling_data``)."""
    import _scaling_data as sim

    states = sim.simulated_states(n_cells, seed=seed)
    return {
        "rna": sim.rna_domain(states, n_genes=n_genes, seed=seed + 1),
        "image": sim.image_domain(states, crop_size=crop_size, pool_size=pool_size, seed=seed + 2),
    }


def default_model(adatas: dict[str, Any], *, alignment: str, rna_likelihood: str, seed: int):
    """The workflow's default model on ``adatas`` (latent 16, default architectures, label supervision)."""
    from cellbridge.model import CrossModalModel

    # the demo config's aligner options (config/config.yaml)
    options = {"wasserstein": {"reg": 0.05}, "adversarial": {"conditional": True}}.get(alignment, {})
    return CrossModalModel(
        adatas, latent_dim=16, alignment=alignment, alignment_kwargs=options, label_key="cell_type",
        domain_kwargs={"rna": {"likelihood": rna_likelihood}}, seed=seed, device="cpu",
    )


def model_arithmetic(model, adatas: dict[str, Any], *, batch: int = 512, repeats: int = 5) -> dict[str, Any]:
    """FLOPs per cell of a training step, and the GFLOP/s the CPU gives dense matmuls of the model's shapes.

    ``flops_per_cell``: multiply-adds x 2 of every Linear / Conv2d / ConvTranspose2d layer of
    the autoencoders over one cell of each domain (forward, counted by hooks on a real
    forward pass), x 3 for the step (the backward pass costs about twice the forward).
    ``matmul_gflop_s``: the same work as dense ``torch.mm`` products -- each Linear layer's
    ``(batch, in) @ (in, out)`` and each convolution as its im2col product -- timed with
    this process's threads; the model's measured cells/s x ``flops_per_cell`` over it is the
    fraction of that ceiling training reaches.
    """
    import torch
    from torch import nn

    flops: list[float] = []
    shapes: list[tuple[int, int, int]] = []  # (rows, inner, cols) of the equivalent matmul for one cell

    def hook(module, inputs, output):
        x = inputs[0]
        n = x.shape[0]
        if isinstance(module, nn.Linear):
            flops.append(2.0 * module.in_features * module.out_features * n)
            shapes.append((1, module.in_features, module.out_features))
        else:  # convolutions: one output position = a (C_in * k * k) x C_out product per cell
            k = module.kernel_size[0] * module.kernel_size[1]
            positions = output.shape[2] * output.shape[3] if isinstance(module, nn.Conv2d) else x.shape[2] * x.shape[3]
            inner = module.in_channels * k if isinstance(module, nn.Conv2d) else module.in_channels
            cols = module.out_channels if isinstance(module, nn.Conv2d) else module.out_channels * k
            flops.append(2.0 * inner * cols * positions * n)
            shapes.append((positions, inner, cols))

    handles = [m.register_forward_hook(hook) for m in model.module.modules()
               if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    n_probe = 8
    try:
        with torch.no_grad():
            for name in model.module.autoencoders:
                model.module.domain_losses(name, model.data[name].batch(np.arange(n_probe), torch.device("cpu")), sample=False)
    finally:
        for h in handles:
            h.remove()
    per_cell = 3.0 * sum(flops) / n_probe
    # every layer call as a dense product at ``batch`` cells, three times (forward, two for backward)
    mats = [(torch.randn(batch * r, i), torch.randn(i, c)) for r, i, c in shapes]
    for a, b in mats:
        a @ b  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        for a, b in mats:
            for _ in range(3):
                a @ b
    seconds = (time.perf_counter() - t0) / repeats
    work = sum(3 * 2.0 * batch * r * i * c for r, i, c in shapes)
    return {"flops_per_cell": per_cell, "matmul_gflop_s": work / seconds / 1e9}


def train_one_epoch(model, *, batch_size: int | str, max_steps: int | None) -> dict[str, Any]:
    """Train one (possibly capped) epoch; return its timings, full-epoch seconds and cells/s."""
    record: dict[str, Any] = {}
    t0, c0 = time.perf_counter(), cpu_seconds()
    history = model.train(
        max_epochs=1, batch_size=batch_size, lr=0.002, warmup_epochs=0, ramp_epochs=0, progress=False,
        sampler=capped_sampler(max_steps, record),
    )
    out = {"train_wall_s": time.perf_counter() - t0, "train_cpu_s": cpu_seconds() - c0}
    record["validation_s"] = float(history["validation_seconds"].iloc[0])
    out["measured_epoch_s"] = float(history["seconds"].iloc[0])
    out["epoch_s"], out["epoch_basis"] = epoch_seconds(out["measured_epoch_s"], record)
    out["steps_per_epoch"], out["steps_run"] = record["full_steps"], record["steps"]
    out["validation_s"] = record.get("validation_s")
    out["cells_per_s"] = record["train_cells"] / out["epoch_s"]
    return out


def translate_both_ways(model, adatas: dict[str, Any], *, n_cells: int, chunk: int) -> dict[str, Any]:
    """Seconds to translate the first ``n_cells`` cells rna -> image (crops only, the bulk path) and
    image -> rna, and the seconds of the predicted crops' morphology on one chunk."""
    out: dict[str, Any] = {"translated_cells": n_cells}
    out["translate_rna_to_image_s"], _ = translate_all(
        model, adatas["rna"][:n_cells], "rna", "image", chunk, morphology=False
    )
    first = min(chunk, n_cells)
    _, spent = translate_all(model, adatas["rna"][:first], "rna", "image", chunk)
    out["morphology_ms_per_cell"] = 1e3 * spent / first
    out["translate_image_to_rna_s"], _ = translate_all(model, adatas["image"][:n_cells], "image", "rna", chunk)
    return out


def measure_cellbridge(
    n_cells: int,
    *,
    n_genes: int = 2000,
    crop_size: int = 16,
    batch_size: int | str = "auto",
    alignment: str = "wasserstein",
    rna_likelihood: str = "auto",
    translate_chunk: int = 20_000,
    translate_max_cells: int | None = None,
    max_steps: int | None = None,
    pool_size: int = 4096,
    threads: int = 1,
    seed: int = 0,
    data_dir: str | None = None,
    report: Report | None = None,
) -> dict[str, Any]:
    """Simulate two domains of ``n_cells`` cells, train one epoch, translate the cells; return the figures.

    ``max_steps`` caps the epoch (its time is then extrapolated, see :func:`epoch_seconds`);
    ``translate_max_cells`` translates only the first cells of each domain. The peak RSS
    is reset before each phase (build, train, translate), so each peak is its own;
    ``report(row, phase)`` is called with the figures so far as each phase starts.
    """
    report = report or _no_report
    import _scaling_data as sim
    import torch

    torch.set_num_threads(threads)
    row: dict[str, Any] = {"method": "cellbridge", "n_cells": n_cells, "threads": threads, "n_genes": n_genes,
                           "crop_size": crop_size, "batch_size": batch_size, "alignment": alignment,
                           "rna_likelihood": rna_likelihood, "translate_chunk": translate_chunk}
    # the prepared files, read back the way the train stage reads them (only the layers the
    # likelihoods use; a sparse X over 2 GiB left on disk), so the peaks below are a training job's
    keep = data_dir is not None
    folder = (Path(data_dir) / f"sim_n{n_cells}_g{n_genes}_c{crop_size}_p{pool_size}_s{seed}" if keep
              else Path(tempfile.mkdtemp(prefix="cellbridge-scaling-")))
    paths = {name: folder / f"{name}.h5ad" for name in ("rna", "image")}
    try:
        if keep and all(p.exists() for p in paths.values()):
            row["note"] = f"prepared files reused from {folder}"
        else:
            folder.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            adatas = simulated_domains(n_cells, n_genes=n_genes, crop_size=crop_size, pool_size=pool_size, seed=seed)
            row["generate_s"] = time.perf_counter() - t0
            row["peak_generate_mb"] = peak_rss_mb()
            row["data_mb"] = sum(sim.data_nbytes(a) for a in adatas.values()) / 2**20
            t0 = time.perf_counter()
            for name, adata in adatas.items():
                adata.write_h5ad(folder / f".{name}.h5ad.tmp")
                os.replace(folder / f".{name}.h5ad.tmp", paths[name])
            row["write_s"] = time.perf_counter() - t0
            del adatas, adata
        row["file_mb"] = sum(p.stat().st_size for p in paths.values()) / 2**20
        release_freed_memory()
        resettable = reset_peak_rss()
        adatas = training_inputs(paths, rna_likelihood=rna_likelihood)
        row["x_on_disk"] = _on_disk(adatas["rna"].X)
        row["rss_data_mb"] = current_rss_mb()
        return _train_and_translate(row, adatas, alignment=alignment, rna_likelihood=rna_likelihood, seed=seed,
                                    batch_size=batch_size, max_steps=max_steps, translate_chunk=translate_chunk,
                                    translate_max_cells=translate_max_cells, resettable=resettable, report=report)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def training_inputs(paths: dict[str, Path], *, rna_likelihood: str) -> dict[str, Any]:
    """The domains as the train stage reads them (:func:`cellbridge.stages.read_prepared`, ``for_training``)."""
    from cellbridge import stages

    config = {
        "domains": {"rna": {"modality": "rna", "model": {"likelihood": rna_likelihood}},
                    "image": {"modality": "image", "model": {"likelihood": "auto"}}},
        "training": {"load_x": "auto"},
    }
    return stages.read_prepared(config, paths, for_training=True)


def _on_disk(x: Any) -> bool:
    from cellbridge._io import on_disk

    return on_disk(x)


def _train_and_translate(row, adatas, *, alignment, rna_likelihood, seed, batch_size, max_steps, translate_chunk,
                         translate_max_cells, resettable, report) -> dict[str, Any]:
    """Build, train one epoch and translate (the phases after the data is read), each with its own peak."""
    n_cells = row["n_cells"]
    report(row, "build")
    t0 = time.perf_counter()
    model = default_model(adatas, alignment=alignment, rna_likelihood=rna_likelihood, seed=seed)
    row["build_s"] = time.perf_counter() - t0
    row["peak_build_mb"] = peak_rss_mb()
    release_freed_memory()
    reset_peak_rss()

    row.update(model_arithmetic(model, adatas))
    report(row, "train")
    row.update(train_one_epoch(model, batch_size=batch_size, max_steps=max_steps))
    row["batch_size"], row["lr"] = model.training_settings["batch_size"], model.training_settings["lr"]
    row["model_gflop_s"] = row["cells_per_s"] * row["flops_per_cell"] / 1e9
    row["matmul_fraction"] = row["model_gflop_s"] / row["matmul_gflop_s"]
    row["peak_train_mb"] = peak_rss_mb()
    row["beyond_data_mb"] = max(row["peak_build_mb"], row["peak_train_mb"]) - row["rss_data_mb"]
    release_freed_memory()
    reset_peak_rss()

    n_translate = n_cells if translate_max_cells is None else min(n_cells, translate_max_cells)
    report(row, "translate")
    row.update(translate_both_ways(model, adatas, n_cells=n_translate, chunk=translate_chunk))
    row["peak_translate_mb"] = peak_rss_mb()
    row["status"] = "ok"
    if not resettable:
        row["note"] = "; ".join(filter(None, [row.get("note"), "peak RSS could not be reset between phases (cumulative peaks)"]))
    return row


# ----------------------------------------------------------------------------- GW worker
def gw_inputs(n_cells: int, *, n_genes: int = 2000, n_pcs: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """30 principal components of simulated RNA (log1p-normalised) and of image crops of the same states."""
    import _scaling_data as sim
    from sklearn.decomposition import PCA

    states = sim.simulated_states(n_cells, seed=seed)
    rna = sim.rna_domain(states, n_genes=n_genes, seed=seed + 1)
    image = sim.image_domain(states, crop_size=16, seed=seed + 2)
    n_pcs = min(n_pcs, n_cells - 1)
    x = PCA(n_pcs, random_state=seed).fit_transform(rna.X.toarray())
    y = PCA(n_pcs, random_state=seed).fit_transform(image.obsm["image"].reshape(n_cells, -1))
    return x, y


def measure_gw(
    n_cells: int, *, n_genes: int = 2000, k: int | None = None, epsilon: float | None = None,
    max_iter: int | None = None, threads: int = 1, seed: int = 0, report: Report | None = None,
) -> dict[str, Any]:
    """Time SCOT's geodesic distances and one entropic GW solve on ``n_cells`` cells per domain.

    ``k``, ``epsilon`` and ``max_iter`` default to SCOT's published defaults (``_scot``);
    ``report(row, "solve")`` is called with the figures so far before the solve.
    """
    report = report or _no_report
    import _scot as scot

    k = scot.default_k(n_cells, n_cells) if k is None else k
    epsilon = scot.DEFAULT_EPSILON if epsilon is None else epsilon
    max_iter = scot.DEFAULT_MAX_ITER if max_iter is None else max_iter
    row: dict[str, Any] = {"method": "scot_gw", "n_cells": n_cells, "threads": threads, "n_genes": n_genes,
                           "k": k, "epsilon": epsilon, "max_iter": max_iter}
    t0 = time.perf_counter()
    x, y = gw_inputs(n_cells, n_genes=n_genes, seed=seed)
    row["generate_s"] = time.perf_counter() - t0
    row["peak_generate_mb"] = peak_rss_mb()
    release_freed_memory()
    row["rss_data_mb"] = current_rss_mb()
    reset_peak_rss()

    t0, c0 = time.perf_counter(), cpu_seconds()
    cx = scot.geodesic_distances(scot.normalize_rows(x), k)
    cy = scot.geodesic_distances(scot.normalize_rows(y), k)
    row["geodesic_s"] = time.perf_counter() - t0
    report(row, "solve")
    t1 = time.perf_counter()
    _, _, converged = scot.gw_coupling(cx, cy, epsilon=epsilon, max_iter=max_iter)
    row["gw_s"] = time.perf_counter() - t1
    row["total_s"] = time.perf_counter() - t0
    row["total_cpu_s"] = cpu_seconds() - c0
    row["peak_gw_mb"] = peak_rss_mb()
    row["gw_extra_mb"] = row["peak_gw_mb"] - row["rss_data_mb"]
    row["converged"] = bool(converged)
    row["status"] = "ok"
    return row


# ----------------------------------------------------------------------------- running workers
def _child_env(threads: int) -> dict[str, str]:
    """Environment of a worker: BLAS/OpenMP pools sized like torch's, benchmarks/ importable.

    OpenMP threads wait passively unless ``OMP_WAIT_POLICY`` is set: on a shared CPU a
    thread spinning at a barrier while its partner is descheduled made a 2-thread epoch
    5-7 times slower than 1 thread (measured at 10k cells with the load at 5 on 2 cores);
    passive waiting removed that and costs little on an idle machine.
    """
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _child_peak_mb(pid: int) -> float | None:
    """High-water RSS of a running child (MiB), read while it runs so a timed-out run still has one."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024.0
    except (OSError, AttributeError):
        return None


def _failed_row(job: dict[str, Any], status: str, threads: int, peak_mb: float | None, note: str) -> dict[str, Any]:
    """Row for a measurement that timed out or crashed (with the last peak RSS seen from outside)."""
    gw = job["kind"] == "gw"
    row = {"method": _METHOD[job["kind"]], "n_cells": job["n_cells"], "threads": threads,
           "status": status, "peak_gw_mb" if gw else "peak_train_mb": peak_mb, "note": note}
    if gw:
        row["max_iter"] = run_key("scot_gw", job["n_cells"], job.get("options", {}).get("max_iter"))[2]
    return row


#: the peak-RSS column of each phase a measurement reports (see :data:`Report`)
PHASE_PEAK = {
    "build": "peak_build_mb", "train": "peak_train_mb", "translate": "peak_translate_mb", "solve": "peak_gw_mb",
}


def _interrupted_row(
    job: dict[str, Any], partial: dict[str, Any] | None, status: str, threads: int, peak_mb: float | None, why: str
) -> dict[str, Any]:
    """Row of a measurement stopped in some phase: its figures so far plus the peak RSS polled from outside.

    The polled peak is the worker's high-water mark since its last reset, i.e. the peak of
    the interrupted phase so far. A GW solve allocates its dense matrices in its first
    iteration, so for ``solve`` it is (nearly) the solve's peak; ``gw_extra_mb`` follows.
    """
    if partial is None:
        return _failed_row(job, status, threads, peak_mb, why)
    row = {k: v for k, v in partial.items() if k != "phase"}
    phase = partial.get("phase", "")
    row.update(status=status, note=f"{why} during the {phase} phase")
    if phase in PHASE_PEAK:
        row[PHASE_PEAK[phase]] = peak_mb
    if phase == "solve" and peak_mb is not None and row.get("rss_data_mb") is not None:
        row["gw_extra_mb"] = peak_mb - row["rss_data_mb"]
    return row


def run_worker(jobs: Sequence[dict[str, Any]], *, threads: int, timeout: float) -> list[dict[str, Any]]:
    """Run measurements one after the other in one fresh Python process; return a row per job.

    The worker writes its rows after every job, so a timeout or crash keeps the finished
    rows and marks the rest (``status`` "timeout" or "failed (exit N)"). The child's
    peak RSS is polled while it runs, so a killed run still reports the peak seen last
    (after the worker's own resets; a lower bound).
    """
    with tempfile.TemporaryDirectory(prefix="cellbridge-scaling-") as tmp:
        result, log = Path(tmp) / "rows.json", Path(tmp) / "log.txt"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker-jobs", json.dumps(list(jobs)),
               "--threads", str(threads), "--worker-result", str(result)]
        start, seen_peak, status = time.perf_counter(), None, None
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, env=_child_env(threads), stdout=fh, stderr=subprocess.STDOUT)
            try:
                while status is None:
                    try:
                        proc.wait(timeout=1.0)
                        status = "done"
                    except subprocess.TimeoutExpired:
                        seen_peak = _child_peak_mb(proc.pid) or seen_peak
                        if time.perf_counter() - start > timeout:
                            status = "timeout"
            finally:  # also on Ctrl-C / SIGTERM of the parent: never leave a worker behind
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        rows = json.loads(result.read_text()) if result.exists() else []
        finished = [r for r in rows if r.get("status") != "running"]
        if len(finished) < len(jobs):
            tail = log.read_text()[-3000:].strip()
            print(tail, file=sys.stderr)
            failed = "timeout" if status == "timeout" else f"failed (exit {proc.returncode})"
            last_line = (tail.splitlines() or [""])[-1][:200]
            why = f"stopped at the {timeout:.0f} s limit" if status == "timeout" else last_line
            partial = rows[len(finished)] if len(rows) > len(finished) else None
            finished.append(_interrupted_row(jobs[len(finished)], partial, failed, threads, seen_peak, why))
            finished += [_failed_row(j, "not run", threads, None, "an earlier size in the same process failed")
                         for j in jobs[len(finished):]]
        return finished


# ----------------------------------------------------------------------------- analysis
def fit_power_law(n: Sequence[float], y: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares fit of ``log y = a + b log n``; ``(a, b)`` or ``None`` with fewer than two points."""
    n, y = np.asarray(n, float), np.asarray(y, float)
    ok = np.isfinite(n) & np.isfinite(y) & (n > 0) & (y > 0)
    if ok.sum() < 2 or len(np.unique(n[ok])) < 2:
        return None
    b, a = np.polyfit(np.log(n[ok]), np.log(y[ok]), 1)
    return float(a), float(b)


def gw_memory_limit(rows: Sequence[dict[str, Any]], limit_mb: float = GW_LIMIT_MB) -> dict[str, Any] | None:
    """Extrapolated GW row: cells at which the solve's peak RSS would reach ``limit_mb``.

    The memory the solve adds to the process (``gw_extra_mb``: distance matrices, coupling,
    POT's work arrays) is fitted as a power of ``n`` over the finished rows and those stopped
    at the time limit (whose dense matrices were allocated in the first iteration); the
    limit is where the inputs' RSS plus that extra reaches ``limit_mb``. The solve time is
    extrapolated from finished solves at SCOT's settings when there are two, else the
    seconds per outer iteration of finished capped solves (``max_iter <= 10``) are. Returns
    ``None`` when fewer than two sizes were measured or the growth is not measurable
    (extras under 16 MiB, as at smoke sizes).
    """
    gw = [r for r in rows if r.get("method") == "scot_gw"]
    sized = [r for r in gw if r.get("status") in ("ok", "timeout") and (r.get("gw_extra_mb") or 0) > 16]
    mem = fit_power_law([r["n_cells"] for r in sized], [r["gw_extra_mb"] for r in sized])
    if mem is None or not 0.5 < mem[1] < 4:
        return None
    base = float(np.median([r["rss_data_mb"] for r in sized]))
    n_limit = math.exp((math.log(limit_mb - base) - mem[0]) / mem[1])
    stopped = sum(r["status"] == "timeout" for r in sized)
    note = f"extrapolated from {len(sized)} sizes" + (f" ({stopped} stopped at the time limit)" if stopped else "")
    row = {"method": "scot_gw", "n_cells": round(n_limit / 100) * 100, "status": "extrapolated", "peak_gw_mb": limit_mb,
           "note": f"{note}: solve memory ~ n^{mem[1]:.2f}"}
    # time: full solves at SCOT's settings if two finished, else seconds per outer iteration of capped solves
    full = [r for r in gw if r.get("status") == "ok" and r.get("max_iter") == DEFAULT_GW_MAX_ITER]
    capped = [r for r in gw if r.get("status") == "ok" and (r.get("max_iter") or DEFAULT_GW_MAX_ITER) <= 10]
    tim = fit_power_law([r["n_cells"] for r in full], [r["total_s"] for r in full])
    if tim is not None:
        row["total_s"] = math.exp(tim[0] + tim[1] * math.log(n_limit))
        row["note"] += f", solve time ~ n^{tim[1]:.2f}"
        return row
    per_iter = fit_power_law([r["n_cells"] for r in capped], [r["gw_s"] / r["max_iter"] for r in capped])
    if per_iter is not None:
        seconds = math.exp(per_iter[0] + per_iter[1] * math.log(n_limit))
        row["note"] += f", one outer GW iteration ~ n^{per_iter[1]:.2f}, about {seconds:,.0f} s there"
    return row


def machine_info() -> dict[str, str]:
    """Date, CPU count, CPU model, total RAM and load average (the CPU may be shared)."""
    model = platform.processor() or platform.machine()
    try:
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        model = match.group(1).strip() if match else model
    except OSError:
        pass
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        ram = f"{kb / 2**20:.1f} GiB"
    except (OSError, AttributeError):
        ram = "unknown"
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return {"date": dt.datetime.now().isoformat(timespec="seconds"), "nproc": str(nproc), "cpu": model,
            "ram": ram, "load": load, "python": platform.python_version(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE (set by this script)")}


# ----------------------------------------------------------------------------- output
def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, int]]) -> list[str]:
    lines = ["| " + " | ".join(label for _, label, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(key), digits) for key, _, digits in columns) + " |")
    return lines


CB_COLUMNS = [
    ("n_cells", "cells / domain", 0), ("status", "status", 0), ("generate_s", "simulate s", 1),
    ("data_mb", "simulated MiB", 0), ("file_mb", "files MiB", 0), ("x_on_disk", "X on disk", 0),
    ("rss_data_mb", "RSS with data MiB", 0), ("build_s", "build s", 1), ("batch_size", "batch", 0),
    ("peak_build_mb", "peak build MiB", 0), ("steps_per_epoch", "steps", 0), ("epoch_s", "epoch s", 1),
    ("epoch_basis", "epoch", 0), ("validation_s", "(validation s)", 1), ("train_cpu_s", "train CPU s", 0),
    ("cells_per_s", "cells/s", 0), ("flops_per_cell", "FLOP per cell-step", 0), ("model_gflop_s", "GFLOP/s", 1),
    ("matmul_gflop_s", "matmul GFLOP/s", 1), ("matmul_fraction", "of matmul", 2),
    ("peak_train_mb", "peak train MiB", 0), ("beyond_data_mb", "beyond data MiB", 0),
    ("translated_cells", "translated", 0), ("translate_rna_to_image_s", "rna->image s", 1),
    ("morphology_ms_per_cell", "morphology ms/cell", 2),
    ("translate_image_to_rna_s", "image->rna s", 1), ("peak_translate_mb", "peak translate MiB", 0),
    ("measured_at", "measured at", 0), ("note", "note", 0),
]  # fmt: skip
GW_COLUMNS = [
    ("n_cells", "cells / domain", 0), ("status", "status", 0), ("k", "k", 0), ("epsilon", "epsilon", 4),
    ("geodesic_s", "geodesic s", 1), ("gw_s", "GW s", 1), ("total_s", "total s", 1),
    ("total_cpu_s", "CPU s", 0), ("max_iter", "max iter", 0), ("peak_gw_mb", "peak MiB", 0),
    ("gw_extra_mb", "solve MiB", 0), ("converged", "SCOT check", 0),
    ("measured_at", "measured at", 0), ("note", "note", 0),
]  # fmt: skip


def target_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Whether the 100k- and 1M-cell targets are met, from the measured rows (or that they were not measured)."""
    lines = []
    small = next((r for r in rows if r.get("method") == "cellbridge" and r.get("n_cells") == TARGET_SMALL_CELLS), None)
    if small is not None and small.get("status") == "ok":
        ok = "met" if small["epoch_s"] <= TARGET_SMALL_EPOCH_S else "not met"
        lines.append(f"- 100k cells, one epoch <= {TARGET_SMALL_EPOCH_S:.0f} s: **{ok}** ({small['epoch_s']:.0f} s)")
    row = next((r for r in rows if r.get("method") == "cellbridge" and r.get("n_cells") == TARGET_CELLS), None)
    if row is None or row.get("status") != "ok":
        why = f"status {row['status']}" if row else "size not run"
        return [*lines, f"- 1M-cell targets: not measured in this run ({why})."]
    peak = max(row["peak_build_mb"], row["peak_train_mb"])
    epoch_ok = "met" if row["epoch_s"] < TARGET_EPOCH_S else "not met"
    peak_ok = "met" if peak < TARGET_PEAK_MB else "not met"
    return [
        *lines,
        f"- 1M cells, one epoch < 10 min: **{epoch_ok}** ({row['epoch_s'] / 60:.1f} min with {row['threads']} threads)",
        (
            f"- 1M cells, peak memory < 8 GiB (model build and training): **{peak_ok}** ({peak / GB:.2f} GiB; "
            f"RSS with the data read as training reads them {row['rss_data_mb'] / GB:.2f} GiB; the "
            f"prepared files {row['file_mb'] / GB:.2f} GiB)"
        ),
    ]


def _machine_line(info: dict[str, str]) -> str:
    return (
        f"- machine: nproc {info['nproc']}, CPU {info['cpu']}, RAM {info['ram']}, Python {info['python']}; "
        f"load average (1/5/15 min) at start: {info['load']}, when written: {machine_info()['load']} -- "
        "the CPU may be shared with other work (a load above nproc means it was), so wall times are upper "
        "bounds for an idle machine; the CPU seconds (all threads) are less affected"
    )


def _cellbridge_intro(first: dict[str, Any]) -> str:
    return (
        f"Simulated RNA ({first.get('n_genes', '')} genes, sparse) + image ({first.get('crop_size', '')} px "
        f"crops) domains of n cells each; {first.get('alignment', '')} alignment, RNA likelihood "
        f"{first.get('rna_likelihood', '')}, batch {first.get('batch_size', '')}, {first.get('threads', '')} "
        "thread(s) ('auto': 128 cells per step up to 262,144 training cells, then the power of two that keeps "
        "an epoch within 2,048 steps, lr 0.002 x sqrt(batch / 128); 'batch' gives the size used). The simulated "
        "domains are written as prepared .h5ad files and read back as the train stage reads them (only the "
        "layers the likelihoods use; a sparse X over 2 GiB left on disk, 'X on disk'), so 'RSS with data' "
        "and the peaks are a training job's. 'FLOP per cell-step' = 3 x the forward multiply-adds x 2 of "
        "every linear and convolution layer for one cell of each domain; 'GFLOP/s' = that x cells/s; "
        "'matmul GFLOP/s' = the same products as dense torch.mm at 512 cells on these threads, the "
        "ceiling; 'of matmul' = the fraction of it training reaches. "
        "'epoch s' = one epoch (steps + validation, of which '(validation s)'), measured in full "
        "or, where 'epoch' says so, extrapolated from the first steps. cells/s = training cells of both "
        "domains per epoch second; 'train CPU s' = CPU time of the (possibly capped) training call, all threads. "
        "Peaks are per phase (reset in between); 'beyond data' = max(build, train peak) - RSS with the data "
        "loaded. Translation runs over the first 'translated' cells of each domain (all unless capped), "
        f"{first.get('translate_chunk', '')} cells per `translate` call; rna->image is the bulk path "
        "(`morphology=False`: crops only); 'morphology ms/cell' = measuring the predicted crops' morphology "
        "(`translate`'s default), timed on the first chunk."
    )


GW_INTRO = (
    "SCOT (benchmarks/_scot.py): kNN-graph geodesic distances on 30 PCs of RNA and of the image "
    "crops, entropic GW with POT (square loss), one solve at SCOT's defaults (k = min(n/5, 50), "
    "epsilon 1e-3, tol 1e-9) with at most 'max iter' outer iterations: 1,000 is SCOT's setting, a "
    "smaller cap measures the memory (the dense n x n matrices exist from the first iteration) and "
    "the seconds per iteration. 'peak' = process peak RSS during the solve; 'solve' = that peak minus "
    "the RSS with the inputs loaded; for a solve stopped at the time limit, the peak polled until then. "
    "'SCOT check': the coupling passes SCOT's convergence test (no NaN or empty row, mass >= 0.95), which "
    "a capped solve can pass without its iterations having converged."
)


def _extrapolation_line(gw: Sequence[dict[str, Any]]) -> list[str]:
    r = next((r for r in gw if r.get("status") == "extrapolated"), None)
    if r is None:
        return ["- No 24 GiB extrapolation: fewer than two GW sizes with measurable memory growth."] if gw else []
    hours = f"; about {r['total_s'] / 3600:.1f} h per solve there" if r.get("total_s") else ""
    line = (
        f"- **Extrapolated, not measured**: the dense GW baseline would exceed 24 GiB at about "
        f"{r['n_cells']:,} cells per domain ({r['note']}{hours})."
    )
    return [line]


def markdown(rows: Sequence[dict[str, Any]], info: dict[str, str], command: str) -> str:
    """The Markdown report: machine, both tables, the GW extrapolation and the targets."""
    cb = [r for r in rows if r.get("method") == "cellbridge"]
    gw = [r for r in rows if r.get("method") == "scot_gw"]
    lines = [
        "# cellbridge scaling benchmark",
        "",
        f"- date: {info['date']}; command: `{command}`; OpenMP wait policy: {info['omp_wait_policy']}"
        + ("; rows of earlier runs were kept (`--resume`, see 'measured at')" if "--resume" in command else ""),
        _machine_line(info),
        "",
        "## cellbridge: one training epoch and full translation",
        "",
        _cellbridge_intro(cb[0] if cb else {}),
        "",
        *_table(cb, CB_COLUMNS),
        "",
        "## SCOT-style dense Gromov-Wasserstein baseline",
        "",
        GW_INTRO,
        "",
        *_table(gw, GW_COLUMNS),
        "",
        *_extrapolation_line(gw),
        *target_lines(rows),
    ]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_results(rows: Sequence[dict[str, Any]], out: Path, info: dict[str, str], command: str) -> None:
    """Write ``scaling.csv`` (one row per measurement, plus the GW extrapolation) and ``scaling.md``."""
    import pandas as pd

    all_rows = sorted(rows, key=lambda r: (r["method"], r["n_cells"]))
    extra = gw_memory_limit(rows)
    if extra is not None:
        all_rows.append(extra)
    table = pd.DataFrame(all_rows).reindex(columns=COLUMNS)
    _write_atomic(out / "scaling.csv", table.to_csv(index=False))
    _write_atomic(out / "scaling.md", markdown(all_rows, info, command))


# ----------------------------------------------------------------------------- command line
def parse_sizes(text: str) -> list[int]:
    """``"10k,100k,1M"`` or ``"10000,100000"`` -> list of ints (empty string -> [])."""
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        factor = {"k": 1_000, "m": 1_000_000}.get(part[-1].lower(), 1)
        sizes.append(int(float(part[:-1] if factor > 1 else part) * factor))
    return sizes


def _batch_size(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="cells per domain for cellbridge")
    p.add_argument("--gw-sizes", default="1000,2000,4000,8000", help="cells per domain for the GW baseline")
    p.add_argument("--threads", type=int, default=2, help="torch / BLAS threads of each measurement")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (500 cells; GW 100, 200), well under a minute")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder for scaling.csv and scaling.md")
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--crop-size", type=int, default=16)
    p.add_argument("--batch-size", type=_batch_size, default="auto",
                   help="cells per step, or auto (the package default: 128 up to 262,144 training cells, larger beyond)")
    p.add_argument("--data-dir", default=None,
                   help="keep the simulated prepared .h5ad files here and reuse them in later runs "
                        "(default: a temporary folder, deleted)")
    p.add_argument("--alignment", default="wasserstein", choices=["wasserstein", "mmd", "adversarial", "none"])
    p.add_argument("--rna-likelihood", default="auto", choices=["auto", "gaussian", "nb"])
    p.add_argument("--translate-chunk", type=int, default=20_000)
    p.add_argument("--translate-max-cells", type=int, default=None, help="translate only this many cells per domain")
    p.add_argument("--max-steps", type=int, default=None,
                   help="cap the epoch at this many steps and extrapolate its time (default: a full epoch)")
    p.add_argument("--gw-max-iter", type=int, default=None,
                   help="cap the outer GW iterations (default SCOT's 1000); a small cap measures memory, s/iteration")
    p.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per cellbridge size")
    p.add_argument("--gw-timeout", type=float, default=1800, help="seconds per GW size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true",
                   help="keep the measured rows of an existing scaling.csv in --out and run only the missing sizes")
    # internal: the measurements a worker process runs
    p.add_argument("--worker-jobs", help=argparse.SUPPRESS)
    p.add_argument("--worker-result", help=argparse.SUPPRESS)
    return p


_METHOD = {"cellbridge": "cellbridge", "gw": "scot_gw"}


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def previous_rows(path: Path) -> list[dict[str, Any]]:
    """Finished or timed-out rows of an earlier ``scaling.csv``, for ``--resume``."""
    import pandas as pd

    if not path.exists():
        return []
    table = pd.read_csv(path)
    table = table[table["status"].isin(["ok", "timeout"])].astype(object)
    rows = table.where(table.notna(), None).to_dict("records")
    for r in rows:  # a CSV column with blanks reads as float
        r.update({c: int(r[c]) for c in INT_COLUMNS if r.get(c) is not None})
    return rows


#: integer columns of the CSV (restored as int by :func:`previous_rows`)
INT_COLUMNS = ("n_cells", "threads", "n_genes", "crop_size", "batch_size", "steps_per_epoch", "steps_run",
               "translated_cells", "translate_chunk", "k", "max_iter")


def run_key(method: str, n_cells: int, max_iter: int | None) -> tuple[str, int, int | None]:
    """What ``--resume`` matches on: method, cells and, for GW, the outer-iteration cap (default SCOT's)."""
    if method != "scot_gw":
        return method, n_cells, None
    return method, n_cells, DEFAULT_GW_MAX_ITER if max_iter is None else int(max_iter)


def _worker_main(args: argparse.Namespace) -> None:
    """Measure each job of ``--worker-jobs`` in this process, writing all rows so far after each."""
    rows: list[dict[str, Any]] = []

    def save(extra: Sequence[dict[str, Any]] = ()) -> None:
        text = json.dumps([*rows, *extra], default=lambda v: v.item() if hasattr(v, "item") else str(v))
        _write_atomic(Path(args.worker_result), text)

    def report(row: dict[str, Any], phase: str) -> None:
        save([{**row, "status": "running", "phase": phase, "measured_at": _now()}])

    for job in json.loads(args.worker_jobs):
        measure = measure_cellbridge if job["kind"] == "cellbridge" else measure_gw
        if rows:  # smoke runs share one process: start each size from its own peak
            release_freed_memory()
            reset_peak_rss()
        row = measure(job["n_cells"], threads=args.threads, report=report, **job["options"])
        rows.append({**row, "measured_at": _now()})
        save()


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Run every size, printing each row as it finishes, and write the results; return the rows."""
    args = _parser().parse_args(argv)
    if args.worker_jobs:
        _worker_main(args)
        return []
    # SIGTERM as SystemExit, so run_worker's cleanup kills the running worker
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes, gw_sizes = parse_sizes(args.sizes), parse_sizes(args.gw_sizes)
    cb_options = {"n_genes": args.genes, "crop_size": args.crop_size, "batch_size": args.batch_size,
                  "alignment": args.alignment, "rna_likelihood": args.rna_likelihood,
                  "translate_chunk": args.translate_chunk, "translate_max_cells": args.translate_max_cells,
                  "max_steps": args.max_steps, "seed": args.seed, "data_dir": args.data_dir}
    gw_options = {"n_genes": args.genes, "max_iter": args.gw_max_iter, "seed": args.seed}
    if args.smoke:
        # small enough for CI; the genes stay above the simulator's minimum for 5 types
        sizes, gw_sizes = [500], [100, 200]
        cb_options.update(n_genes=200, pool_size=256)
        # a handful of outer iterations: the smoke run checks the plumbing, not GW convergence
        gw_options.update(n_genes=200, max_iter=args.gw_max_iter or 10)
    jobs = [{"kind": "cellbridge", "n_cells": n, "options": cb_options, "timeout": args.timeout} for n in sizes]
    jobs += [{"kind": "gw", "n_cells": n, "options": gw_options, "timeout": args.gw_timeout} for n in gw_sizes]
    # one fresh process per size, so sizes do not share memory; the smoke run shares one
    # process (peaks reset in between) because starting Python + torch + POT dominates it
    out = Path(args.out)
    rows = previous_rows(out / "scaling.csv") if args.resume else []
    done = {run_key(r["method"], r["n_cells"], r.get("max_iter")) for r in rows}
    jobs = [j for j in jobs if run_key(_METHOD[j["kind"]], j["n_cells"], j["options"].get("max_iter")) not in done]
    groups = [jobs] if args.smoke and jobs else [[job] for job in jobs]
    command = "python benchmarks/scaling.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info = machine_info()
    for group in groups:
        print("[scaling] " + ", ".join(f"{j['kind']} n={j['n_cells']:,}" for j in group) + " ...", flush=True)
        timeout = sum(j["timeout"] for j in group)
        for row in run_worker([{k: j[k] for k in ("kind", "n_cells", "options")} for j in group],
                              threads=args.threads, timeout=timeout):
            rows.append(row)
            print("[scaling] " + json.dumps({k: v for k, v in row.items() if v is not None}), flush=True)
        write_results(rows, out, info, command)  # after every size, so a long run leaves partial results
    print((out / "scaling.md").read_text())
    return rows


if __name__ == "__main__":
    main()
