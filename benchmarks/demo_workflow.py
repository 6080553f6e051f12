"""Wall time of the full demo workflow (target: under 10 minutes on 2 cores).

Runs `snakemake --cores 2` on the default config in a fresh working directory, from
nothing to the comparison (simulation included), then `--report`. Prints the total, the
time of each job (from the rules' `benchmark:` files) and the headline metrics, and
writes them to benchmarks/results/demo_workflow.tsv.

    .venv/bin/python benchmarks/demo_workflow.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "demo_workflow.tsv"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="run in this folder and keep it (default: a temporary one)")
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cellbridge-demo-"))
    if (work / "results").exists():
        # snakemake would find the old outputs up to date and time nothing
        sys.exit(f"{work} already holds results/; give an empty or new folder to --keep")
    work.mkdir(parents=True, exist_ok=True)
    base = [str(SNAKEMAKE), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
            "--configfile", str(ROOT / "config" / "config.yaml")]
    t0 = time.perf_counter()
    subprocess.run([*base, "--cores", str(args.cores)], check=True, capture_output=True)
    total = time.perf_counter() - t0
    t1 = time.perf_counter()
    subprocess.run([*base, "--report", str(work / "report.html")], check=True, capture_output=True)
    report = time.perf_counter() - t1

    rows = []
    for f in sorted((work / "results" / "demo" / "benchmarks").rglob("*.tsv")):
        job = str(f.relative_to(work / "results" / "demo" / "benchmarks").with_suffix(""))
        b = pd.read_csv(f, sep="\t")
        rows.append({"job": job, "seconds": round(float(b["s"].iloc[0]), 1),
                     "cpu_seconds": round(float(b["cpu_time"].iloc[0]), 1)})
    rows += [{"job": "workflow total (wall)", "seconds": round(total, 1)},
             {"job": "report", "seconds": round(report, 1)}]
    table = pd.DataFrame(rows)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT, sep="\t", index=False)
    print(table.to_string(index=False))
    print(f"target: full demo < 600 s on {args.cores} cores -> {'met' if total < 600 else 'NOT met'} ({total:.0f} s)")
    comparison = pd.read_csv(work / "results" / "demo" / "comparison.tsv", sep="\t").set_index("method")
    headline = [c for c in ("foscttm_image_rna", "transfer_accuracy_rna_to_image", "transfer_accuracy_image_to_rna",
                            "pearson_gene_top_image_to_rna", "morph_r_rna_to_image", "ssim_rna_to_image")
                if c in comparison]
    print(comparison[headline].round(3).to_string())
    print(f"written to {OUT}; run folder {work}")


if __name__ == "__main__":
    main()
