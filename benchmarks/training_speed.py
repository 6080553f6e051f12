"""Training throughput per alignment method on the simulated demo.

Trains each method for a few epochs on the prepared demo (RNA + image, the
training cells only) and reports cells per second: (training cells of all
domains) x epochs / wall seconds, validation included. Writes
``benchmarks/results/training_speed.tsv``.

Usage::

    python benchmarks/training_speed.py [--epochs 5] [--threads 2] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alignment_demo import COMMON_MODEL, METHODS, MODEL_OPTIONS, RESULTS, TRAIN, prepare_demo  # noqa: E402

from cellbridge._io import write_table  # noqa: E402
from cellbridge.model import CrossModalModel  # noqa: E402


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n-cells", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rna, img, _ = prepare_demo(args.n_cells, 0)
    n_train = int((rna.obs["split"] != "test").sum() + (img.obs["split"].astype(str) != "test").sum())
    rows = []
    for method in args.methods.split(","):
        model = CrossModalModel(
            {"rna": rna, "image": img},
            alignment=method,
            label_key=None if method == "none" else "cell_type",
            device=args.device,
            **{**COMMON_MODEL, **MODEL_OPTIONS.get(method, {})},
        )
        t0 = time.perf_counter()
        history = model.train(max_epochs=args.epochs, progress=False, **{**TRAIN, "warmup_epochs": 0})
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "method": method,
                "device": str(model.device),
                "threads": args.threads,
                "epochs": len(history),
                "seconds": seconds,
                "seconds_per_epoch": seconds / len(history),
                "cells_per_s": n_train * len(history) / seconds,
            }
        )
        print(pd.DataFrame(rows[-1:]).round(2).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    write_table(table, RESULTS / "training_speed.tsv", index=False)
    print(table.round(2).to_string(index=False))
    return table


if __name__ == "__main__":
    main()
