"""Preprocessing speed on the 2,000-cell demo (target: all domains in under 60 s on 2 cores).

Simulates the demo (RNA, ATAC, microscopy fields) into a temporary folder, then times
the same `prepare` stage the workflow runs, one domain at a time. Prints a table and
writes it to benchmarks/results/preprocessing.tsv.

    .venv/bin/python benchmarks/preprocessing.py [--cells 2000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from cellbridge import stages
from cellbridge.config import validate_config

OUT = Path(__file__).resolve().parent / "results" / "preprocessing.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # stages write below results/{run}/ in the working directory
        config = validate_config(
            {
                "run": "bench",
                "simulate": {"n_cells": args.cells, "atac": True},
                "domains": {
                    "rna": {"modality": "rna", "input": "simulated"},
                    "atac": {"modality": "atac", "input": "simulated"},
                    "image": {"modality": "image", "input": "simulated", "annotations": "simulated"},
                },
            }
        )
        t0 = time.perf_counter()
        stages.simulate(config)
        rows = [{"step": "simulate (not part of the target)", "cells": args.cells,
                 "seconds": time.perf_counter() - t0}]
        total = 0.0
        for domain in config["domains"]:
            t0 = time.perf_counter()
            adata = stages.prepare_domain(config, domain, plot=f"{domain}.png")
            dt = time.perf_counter() - t0
            total += dt
            rows.append({"step": f"prepare {domain}", "cells": adata.n_obs, "seconds": dt})
        rows.append({"step": "prepare, all domains", "cells": args.cells, "seconds": total})
    table = pd.DataFrame(rows)
    table["seconds"] = table["seconds"].round(2)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT, sep="\t", index=False)
    print(table.to_string(index=False))
    print(f"target: all domains < 60 s -> {'met' if total < 60 else 'NOT met'} ({total:.1f} s)")
    print(f"written to {OUT}")


if __name__ == "__main__":
    main()
