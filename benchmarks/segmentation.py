"""Segmentation benchmark: F1 at IoU 0.5 on simulated fields and a real nucleus image.

Rows (printed and written to ``benchmarks/results/segmentation.tsv``):

* ``simulated`` — fields of the built-in demo simulator
  (``simulate_demo(n_cells=400, atac=False, seed=1)``) against its true masks,
  pooled over all fields;
* ``stardist_img2d`` — the 2018 Data Science Bowl image shipped with stardist
  (``../shared/data/nuclei``) against its hand-drawn mask (skipped with a message
  when the shared data folder is absent);

each with the default watershed segmenter and, as a reference, plain Otsu
thresholding with connected components. Also reports the time to prepare the
image domain (segmentation + crops + features) with
:func:`cellbridge.preprocess.image.prepare_image` on a demo of
``--timing-cells`` cells (default 2000: about 250 fields of 256 x 256; target
well under 30 s on one core; 0 skips it).

Run from the repository root::

    .venv/bin/python benchmarks/segmentation.py [--timing-cells 2000]

Targets: F1 >= 0.95 on simulated fields and >= 0.80 on the real image.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from cellbridge._io import write_table
from cellbridge.preprocess.image import find_image_files, prepare_image
from cellbridge.preprocess.segment import match_labels, segment_nuclei

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "nuclei"
RESULTS = ROOT / "benchmarks" / "results" / "segmentation.tsv"
TARGETS = {"simulated": 0.95, "stardist_img2d": 0.80}

METHODS = {
    "watershed (default)": {},
    "plain Otsu (reference)": {"method": "threshold", "threshold": "otsu", "background_sigma": None},
}


def _pooled(pairs: list[tuple[np.ndarray, np.ndarray]], options: dict) -> dict[str, float]:
    """Match counts summed over fields, then precision / recall / F1 of the pool."""
    tp = fp = fn = 0
    ious: list[float] = []
    for image, truth in pairs:
        res = match_labels(segment_nuclei(image, **options), truth)
        tp, fp, fn = tp + res["tp"], fp + res["fp"], fn + res["fn"]
        if res["tp"]:
            ious.append(res["mean_iou"] * res["tp"])
    return {
        "n_true": tp + fn,
        "n_pred": tp + fp,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"),
        "mean_iou": sum(ious) / tp if tp else float("nan"),
    }


def simulated_pairs(folder: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], Path]:
    """Simulate the demo fields and return (field, true mask) pairs and the fields folder."""
    from cellbridge.simulate import simulate_demo

    paths = simulate_demo(folder, n_cells=400, atac=False, seed=1)
    pairs = []
    for field in find_image_files(paths["fields"]):
        pairs.append((tifffile.imread(field), tifffile.imread(paths["masks"] / field.name)))
    return pairs, paths["fields"]


def real_pairs() -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The stardist example image and mask, or ``None`` when the shared data is absent."""
    img, mask = DATA / "stardist_img2d.tif", DATA / "stardist_mask2d.tif"
    if not (img.exists() and mask.exists()):
        return None
    return [(tifffile.imread(img), tifffile.imread(mask))]


def time_prepare(n_cells: int, folder: Path) -> tuple[int, int, float, float]:
    """Fields, nuclei, wall and CPU seconds of ``prepare_image`` on a demo of ``n_cells`` cells."""
    from cellbridge.simulate import simulate_demo

    paths = simulate_demo(folder, n_cells=n_cells, atac=False, seed=1)
    n_fields = len(find_image_files(paths["fields"]))
    wall, cpu = time.perf_counter(), time.process_time()
    adata = prepare_image(paths["fields"])
    return n_fields, adata.n_obs, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timing-cells", type=int, default=2000, help="demo size for the timing line (0: skip)")
    args = parser.parse_args(argv)
    rows = []
    timing = None
    with tempfile.TemporaryDirectory() as tmp:
        pairs, _ = simulated_pairs(Path(tmp) / "bench")
        datasets = {"simulated": pairs}
        real = real_pairs()
        if real is None:
            print(f"skipping the real-image rows: {DATA} not found (the shared data folder is absent)")
        else:
            datasets["stardist_img2d"] = real
        for name, data in datasets.items():
            for method, options in METHODS.items():
                start = time.perf_counter()
                res = _pooled(data, options)
                rows.append(
                    {"dataset": name, "method": method, "n_fields": len(data)}
                    | res
                    | {"seconds": time.perf_counter() - start}
                )
        if args.timing_cells > 0:
            timing = time_prepare(args.timing_cells, Path(tmp) / "timing")

    table = pd.DataFrame(rows)
    write_table(table, RESULTS, index=False, float_format="%.4f")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if timing is not None:
        n_fields, n_nuclei, wall, cpu = timing
        print(
            f"\nprepare_image on a {args.timing_cells}-cell demo: {n_nuclei} nuclei from {n_fields} fields "
            f"in {wall:.1f} s wall, {cpu:.1f} s CPU"
        )
    print(f"results written to {RESULTS}")

    failed = []
    for name, target in TARGETS.items():
        got = table.loc[(table["dataset"] == name) & (table["method"] == "watershed (default)"), "f1"]
        if len(got):
            status = "ok" if got.iloc[0] >= target else "BELOW TARGET"
            print(f"target {name}: F1 {got.iloc[0]:.3f} >= {target:.2f}? {status}")
            if got.iloc[0] < target:
                failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
