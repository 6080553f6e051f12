"""How well the correspondence prior's unsupervised selection picks among its GW candidates.

The geometric prior (:mod:`cellbridge.geometry`) computes one Gromov-Wasserstein coupling
per landmark restart x neighbourhood size and keeps one without looking at any truth.
This script scores *every* candidate against the truth of the real data sets of
``benchmarks/real_data.py`` (prepared the same way, training cells only, no model
trained) and shows which candidate each selection rule keeps, per seed:

- ``joint`` (the package's rule, :func:`cellbridge.geometry.joint_selection`): one candidate
  per domain pair, together the least distorting, implied pairs between non-hub domains
  included (the same as ``distortion`` with two domains); the feature scaling (view) whose
  choice distorts least is kept, and in it the candidates are judged again on every view's
  landmarks (:func:`cellbridge.geometry.pooled_distortion`);
- ``consensus`` (the package's rule until December 2026, :func:`cellbridge.geometry.select_candidate`):
  agreement with all other candidates;
- ``distortion``: the lowest GW distortion under the common yardstick, pair by pair
  (:func:`cellbridge.geometry.distortion_scores`);
- ``witness``: agreement with the least distorting third of the candidates (tried as a
  default in December 2026 and left: see :mod:`cellbridge.geometry`);
- ``oracle``: the best candidate by the truth (what a perfect rule would keep).

Truth scores of a coupling ``P`` between landmarks:

- ``pair_agreement``: the probability that a pair drawn from ``P`` (as training draws
  prior partners) has the same label (cell type, stage, treatment time);
- ``foscttm`` (sci-CAR only, cells co-assayed): each RNA cell sent to the barycentre of
  its landmark's partners in ATAC's representation; the fraction of ATAC cells closer
  to it than its true partner.

    .venv/bin/python benchmarks/prior_selection.py                        # 3 data sets x 5 seeds (~15 min)
    .venv/bin/python benchmarks/prior_selection.py --datasets pbmc --seeds 0,1

Writes ``prior_selection.tsv`` (one row per candidate: scores and which rules keep it)
and ``prior_selection.md`` (per data set and rule: mean, sd and worst seed) under
``benchmarks/results/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import real_data  # noqa: E402  (the data sets, prepared as the real-data benchmark prepares them)

RULES = ("joint", "consensus", "distortion", "witness", "oracle")


def prepared_views(
    ds: real_data.Dataset, root: Path, workdir: Path, *, smoke: bool, scalings: list[str] | None = None
) -> tuple[dict, dict]:
    """Per domain the prior's representation, labels, cell ids and, per seed, training cells
    (``views[d]["cells"](seed)``: the model of that seed holds out its own validation cells)."""
    from cellbridge import stages
    from cellbridge.geometry import representations
    from cellbridge.truth import cell_ids_for, read_truth

    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    config = real_data.bench_config(ds, root, workdir, smoke=smoke)
    real_data.prepare(ds, root, config, smoke=smoke)
    if ds.name == "scicar" and smoke:
        real_data.subset_cells(config, workdir / "unused_peer_inputs.npz", real_data.SMOKE_CELLS["scicar"])
    adatas = stages.read_prepared(config, None, for_training=True)
    truth = read_truth(stages.truth_path(config)) if stages.truth_path(config) else None

    def training_cells(domain: str):
        return lambda seed: stages.build_model(config, adatas, "wasserstein", seed).data[domain].training_cells(
            use_test_cells=False
        )

    scalings = scalings or config["alignment"]["correspondence"]["scalings"]
    views = {}
    for d, a in adatas.items():
        views[d] = {
            "reps": representations(a, modality=config["domains"][d]["modality"], scalings=scalings),
            "cells": training_cells(d),
            "labels": a.obs[config["label_key"]].astype(str).to_numpy(),
            "ids": np.asarray(cell_ids_for(a.obs, truth) if truth is not None else a.obs_names),
        }
    return views, config["alignment"]["correspondence"]


def _label_mix(geometry, labels: np.ndarray, names: list[str]) -> np.ndarray:
    """Per landmark, the label distribution of its cells."""
    codes = pd.Index(names).get_indexer(labels[geometry.cells])
    hist = np.zeros((len(geometry.weights), len(names)))
    np.add.at(hist, (geometry.assignment, codes), 1.0)
    return hist / np.maximum(hist.sum(1, keepdims=True), 1)


def pair_agreement(coupling: np.ndarray, ga, gb, labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Probability that a pair drawn from the landmark ``coupling`` joins two cells of one label
    (``labels_*`` over all cells of each domain; the geometries say which cells they cover)."""
    names = sorted(set(labels_a) | set(labels_b))
    return float((coupling / coupling.sum() * (_label_mix(ga, labels_a, names) @ _label_mix(gb, labels_b, names).T)).sum())


def truth_scores(coupling: np.ndarray, ga, gb, va: dict, vb: dict, *, paired: bool) -> dict[str, float]:
    """``pair_agreement`` (and ``foscttm`` when the domains hold the same cells) of one coupling."""
    from cellbridge.geometry import _correlation_rows, _row_projection

    out = {"pair_agreement": pair_agreement(coupling, ga, gb, va["labels"], vb["labels"])}
    if paired:
        _, ia, ib = np.intersect1d(va["ids"][ga.cells], vb["ids"][gb.cells], return_indices=True)
        sent = _row_projection(coupling, gb.centres)[ga.assignment[ia]]
        target = _correlation_rows(vb["rep"][gb.cells])[ib]  # the representation gb was built on
        d = ((sent[:, None, :] - target[None]) ** 2).sum(-1)
        out["foscttm"] = float((d < np.diag(d)[:, None]).mean())
    return out


def score_seed(name: str, views: dict, options: dict, seed: int) -> list[dict]:
    """Every candidate of every prior pair and view for one seed, with its truth scores and the rules keeping it.

    ``joint`` is the package's rule (each view's joint choice on its own yardstick, the view
    whose choice distorts least, and in it the joint choice on every view's landmarks,
    :func:`cellbridge.geometry.pooled_distortion`); ``consensus``, ``distortion`` and ``witness`` are scored in the first
    view only (the rules the package used before views existed); ``oracle`` over all views.
    """
    from cellbridge import geometry as G

    keys = ("k_grid", "n_landmarks", "max_cells", "n_restarts")
    starts = options.get("starts", G.DEFAULT_STARTS)
    names = list(views)
    a = names[0]
    cells = {d: v["cells"](seed) for d, v in views.items()}
    probe = np.arange(len(cells[a]))  # the package samples CONSENSUS_CELLS; these data sets are smaller
    scalings = list(views[a]["reps"])
    per_view, per_view_reps = {}, {}
    for view, reps in G.distinct_views({s: {d: v["reps"][s] for d, v in views.items()} for s in scalings}).items():
        geoms = G.restart_geometries(reps, cells, seed=seed, **{k: options[k] for k in keys if k in options})
        found, projections, distortion = {}, {}, {}
        for b in names[1:]:
            found[b], projections[b] = G.candidate_couplings(
                geoms, a, b, probe, epsilon=options.get("epsilon", G.EPSILON), starts=starts,
                multiscale=options.get("multiscale", G.MULTISCALE),
            )
            distortion[b] = G.distortion_scores(found[b], [g[a] for g in geoms], [g[b] for g in geoms])
        joint, score = G.joint_selection(found, distortion, geoms)
        per_view[view], per_view_reps[view] = (geoms, found, projections, distortion, joint, score), reps
    kept_view = min(per_view, key=lambda v: per_view[v][-1])
    # as the package: in the kept view, the candidates judged on every view's landmarks
    pooled, joint = G.pooled_choice({v: (r[0], r[1]) for v, r in per_view.items()}, kept_view)
    if joint is not None:
        per_view[kept_view] = (*per_view[kept_view][:4], joint, per_view[kept_view][5])
    rows = []
    for b in names[1:]:
        table, picks = [], {}
        for vi, (view, (geoms, found, projections, distortion, joint, score)) in enumerate(per_view.items()):
            cands = found[b]
            offset = len(table)
            if view == kept_view:
                picks["joint"] = offset + joint[b]
            witnesses = np.zeros(len(cands))
            consensus = witness_score = np.full(len(cands), np.nan)
            if vi == 0:
                best, consensus = G.select_candidate(projections[b])
                witnesses[np.argsort(distortion[b], kind="stable")[: max(1, len(cands) // 3)]] = 1.0
                witness_score = G.consensus_scores(projections[b], witnesses=witnesses)
                picks.update({"consensus": best, "distortion": int(np.argmin(distortion[b])),
                              "witness": int(np.argmin(witness_score))})
            for i, c in enumerate(cands):
                g = geoms[c["restart"]]
                va, vb = ({**views[d], "rep": per_view_reps[view][d]} for d in (a, b))
                table.append({"dataset": name, "seed": seed, "pair": f"{a}-{b}", "view": view, "view_distortion": score,
                              "restart": c["restart"], "k": c["k"], "start": c["start"], "gw": c["gw"],
                              "distortion": distortion[b][i], "pooled_distortion": pooled[view][b][i] if pooled else distortion[b][i],
                              "witness": bool(witnesses[i]),
                              "disagreement_witnesses": witness_score[i], "disagreement_all": consensus[i],
                              **truth_scores(c["coupling"], g[a], g[b], va, vb, paired=name == "scicar")})
        frame = pd.DataFrame(table)
        truth = frame["foscttm"].to_numpy() if name == "scicar" else -frame["pair_agreement"].to_numpy()
        picks["oracle"] = int(np.argmin(truth))
        for row_i, row in enumerate(table):
            row["kept_by"] = ",".join(rule for rule in RULES if picks.get(rule) == row_i)
        rows += table
    return rows


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per data set and rule: the kept candidates' scores, mean over pairs per seed, then mean, sd, worst seed."""
    out = []
    for name, block in frame.groupby("dataset", sort=False):
        metrics = ["pair_agreement"] + (["foscttm"] if name == "scicar" else [])
        for rule in RULES:
            kept = block[block["kept_by"].str.split(",").apply(lambda r, rule=rule: rule in r)]
            per_seed = kept.groupby("seed")[metrics].mean()
            row = {"dataset": name, "rule": rule, "seeds": len(per_seed)}
            for m in metrics:
                worst = per_seed[m].max() if m == "foscttm" else per_seed[m].min()
                row[m] = f"{per_seed[m].mean():.3f} ± {per_seed[m].std(ddof=1) if len(per_seed) > 1 else 0:.3f} (worst {worst:.3f})"
            out.append(row)
        mean_row = {"dataset": name, "rule": "mean candidate", "seeds": block["seed"].nunique()}
        for m in metrics:
            per_seed = block.groupby("seed")[m].mean()
            mean_row[m] = f"{per_seed.mean():.3f} ± {per_seed.std(ddof=1) if len(per_seed) > 1 else 0:.3f}"
        out.append(mean_row)
    return pd.DataFrame(out).fillna("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(real_data.DATA_ROOT))
    parser.add_argument("--datasets", default="scicar,pbmc,scnmt")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help="the real-data benchmark's tiny subsets (tests)")
    parser.add_argument("--n-restarts", type=int, help="landmark restarts per seed (default: the package's)")
    parser.add_argument("--scalings", help="comma separated feature scalings, e.g. 'standardised' (default: the package's)")
    parser.add_argument("--starts", help="comma separated GW starts, e.g. 'product,distance profile' (default: the package's)")
    parser.add_argument("--multiscale", action="store_true", help="add the multi-scale candidates (k = 0; default: the package's)")
    args = parser.parse_args()
    root, out = Path(args.data).resolve(), Path(args.out).resolve()
    workroot = Path(args.workdir).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="prior_selection_"))
    rows = []
    for name in real_data._names(args.datasets):
        ds = real_data.DATASETS[name]
        if not ds.available(root):
            print(f"[{name}] skipped: data not found in {ds.path(root)} (see ../shared/data/README.md)", flush=True)
            continue
        scalings = [x.strip() for x in args.scalings.split(",")] if args.scalings else None
        views, options = prepared_views(ds, root, workroot / name, smoke=args.smoke, scalings=scalings)
        if args.smoke:
            options = {**options, "n_landmarks": 30, "k_grid": [10, 20], "n_restarts": 2}
        if args.n_restarts is not None:
            options = {**options, "n_restarts": args.n_restarts}
        if args.starts:
            options = {**options, "starts": [s.strip() for s in args.starts.split(",")]}
        if args.multiscale:
            options = {**options, "multiscale": True}
        for seed in (int(s) for s in real_data._names(args.seeds)):
            t0 = time.perf_counter()
            seed_rows = score_seed(name, views, options, seed)
            rows += seed_rows
            kept = {r["kept_by"]: r for r in seed_rows if r["kept_by"]}
            print(f"[{name}] seed {seed}: {len(seed_rows)} candidates, {time.perf_counter() - t0:.0f} s; "
                  + "; ".join(f"{k}: agreement {r['pair_agreement']:.3f}" for k, r in kept.items()), flush=True)
    if not rows:
        raise SystemExit("no data set found")
    frame = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    real_data._atomic(out / "prior_selection.tsv", frame.to_csv(sep="\t", index=False, float_format="%.6g"))
    table = summary(frame)
    text = (f"# Correspondence prior: which GW candidate each selection rule keeps\n\n"
            f"{'SMOKE (tiny, not a result). ' if args.smoke else ''}Truth used only to score; training cells; "
            f"landmark restarts: {args.n_restarts or 'the package default'}; feature scalings: {args.scalings or 'the package default'}; GW starts: {args.starts or 'the package default'}; multi-scale candidates: {'on' if args.multiscale else 'the package default'}; "
            f"{real_data.machine()}.\n\n{table.to_markdown(index=False)}\n")
    real_data._atomic(out / "prior_selection.md", text)
    print(text)


if __name__ == "__main__":
    main()
