"""Where the correspondence prior's GW solves start: the product coupling alone, or also the
distance-profile start (:func:`cellbridge.geometry.distance_profile_start`).

GW is not convex. From the product coupling the solver can settle with two cell types
swapped; the distance-profile start sends each landmark to landmarks with the same
distribution of distances to the rest of their domain. Both runs then keep the least
distorting candidate (:func:`cellbridge.geometry.joint_selection`), so the question is
whether the extra candidates are kept, and whether what is kept is right.

Planted data (truth known): four cell types of unequal size in a 6-d state, seen through
two seeded random nonlinear maps (10 and 19 features, no shared feature), 200 cells;
one landmark set of 50, neighbourhood sizes 10 and 20. Score: the probability that a
pair drawn from the kept coupling joins two cells of one type (chance about 0.27).
For the real data sets run ``benchmarks/prior_selection.py --starts "product,distance profile"``.

    .venv/bin/python benchmarks/gw_starts.py               # 12 seeds, about 1 min
    .venv/bin/python benchmarks/gw_starts.py --seeds 0,1
    .venv/bin/python benchmarks/gw_starts.py --multiscale  # with the multi-scale candidates

Writes ``gw_starts.tsv`` (one row per seed and rule) and ``gw_starts.md`` under
``benchmarks/results/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from prior_selection import pair_agreement  # noqa: E402
from real_data import _atomic, machine  # noqa: E402

N_CELLS = 200
TYPE_SIZES = (0.33, 0.27, 0.22, 0.18)


def four_types(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Four cell types of unequal size in a 6-d state, seen through two seeded random
    nonlinear maps (10 and 19 features); both domains list the same cells in the same
    order. Returns ``(x, y, type)``."""
    rng = np.random.default_rng(seed)
    t = rng.choice(len(TYPE_SIZES), n, p=TYPE_SIZES)
    z = rng.normal(0, 3.0, (len(TYPE_SIZES), 6))[t] + rng.normal(0, 1.0, (n, 6))
    x = np.tanh(z @ rng.normal(size=(6, 10)) / 3) + rng.normal(0, 0.1, (n, 10))
    y = np.log1p(np.exp(z @ rng.normal(size=(6, 19)) / 2)) + rng.normal(0, 0.1, (n, 19))
    return x, y, t


def type_agreement(plan: np.ndarray, ga, gb, types: np.ndarray) -> float:
    """Probability that a pair drawn from the landmark coupling ``plan`` joins two cells of one
    type (both domains list the same cells, so one ``types`` serves both)."""
    return pair_agreement(plan, ga, gb, types, types)


def score_seed(seed: int, n_cells: int = N_CELLS, *, multiscale: bool = False) -> list[dict]:
    """Both rules on one planted seed: the kept candidate's start, k and type agreement
    (``multiscale``: every rule may also keep the multi-scale candidates, ``k = 0``)."""
    from cellbridge import geometry as G

    x, y, t = four_types(n_cells, seed)
    cells = np.arange(n_cells)
    ga, gb = (G.domain_geometry(G.representation(v, modality="features"), cells, k_grid=[10, 20], n_landmarks=50, seed=seed)
              for v in (x, y))
    cands = [dict(c, restart=0) for c in G.gw_candidates(ga, gb, starts=G.GW_STARTS, multiscale=multiscale)]
    distortion = G.distortion_scores(cands, [ga], [gb])
    rows = []
    for rule, starts in (("product start", ("product",)), ("product + distance-profile starts", G.GW_STARTS)):
        pool = [i for i, c in enumerate(cands) if c["start"] in starts]
        kept = pool[int(np.argmin(distortion[pool]))]
        rows.append({"seed": seed, "rule": rule, "start": cands[kept]["start"], "k": cands[kept]["k"],
                     "distortion": float(distortion[kept]),
                     "type_agreement": type_agreement(cands[kept]["coupling"], ga, gb, t)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=",".join(map(str, range(12))))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--multiscale", action="store_true", help="also the multi-scale candidates (k = 0)")
    args = parser.parse_args()
    rows = []
    for seed in (int(s) for s in args.seeds.split(",") if s):
        t0 = time.perf_counter()
        seed_rows = score_seed(seed, multiscale=args.multiscale)
        rows += seed_rows
        print(f"seed {seed} ({time.perf_counter() - t0:.0f} s): "
              + "; ".join(f"{r['rule']}: {r['type_agreement']:.3f} ({r['start']}, k={r['k']})" for r in seed_rows), flush=True)
    frame = pd.DataFrame(rows)
    per_rule = frame.groupby("rule", sort=False)["type_agreement"]
    table = pd.DataFrame({"seeds": per_rule.size(), "mean": per_rule.mean(), "sd": per_rule.std(ddof=1),
                          "worst": per_rule.min()}).round(3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / "gw_starts.tsv", frame.to_csv(sep="\t", index=False, float_format="%.6g"))
    text = (f"# GW starts of the correspondence prior, planted four types ({N_CELLS} cells)"
            f"{', with the multi-scale candidates' if args.multiscale else ''}\n\n"
            f"Type agreement of the kept coupling (chance about 0.27); {machine()}.\n\n{table.to_markdown()}\n")
    _atomic(out / "gw_starts.md", text)
    print(text)


if __name__ == "__main__":
    main()
