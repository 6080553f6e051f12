"""cellbridge against published unpaired-integration methods on the sci-CAR A549 co-assay.

Both modalities of every cell were measured together, so the true pairing scores each
method, while every method sees RNA and ATAC as unpaired. A fixed, seeded 20% of the
cells (cellbridge's sci-CAR split, seed 0) are held out and scored.

- cellbridge: each alignment method (package defaults, ``config/scicar.yaml``) in three
  settings -- ``unsupervised``; ``labels`` (treatment time as a shared label); ``anchors``
  (10% of the training cells given as known pairs) -- plus the ``none`` reference.
- Peers, run by ``benchmarks/peers_run.py`` on the inputs the issue prescribes (RNA:
  normalised, log1p, PCA 30; ATAC: binarised, TF-IDF, SVD 30 without the first
  component): SCOT's algorithm (POT) with the authors' defaults and self-tuned, and the
  PyPI packages ``uniport`` and ``scotplus`` from the peers environment
  (``benchmarks/requirements-peers.txt``) where it exists. Peers align all cells
  transductively and are scored on the same held-out cells; their "translation" is the
  average of the partner domain's 15 nearest training cells in the joint embedding.

Every run is a child process, so wall time and peak memory (max RSS) are its own. The
metrics are the workflow's (:func:`cellbridge.evaluate.evaluate_run`) for every row.

    .venv/bin/python benchmarks/real_data.py            # full run (about an hour on 2 cores)
    .venv/bin/python benchmarks/real_data.py --smoke    # tiny version (CI)
    .venv/bin/python benchmarks/real_data.py --methods '' --settings '' --no-reference --update  # peers only

Writes ``real_data.csv`` and ``real_data.md`` under ``benchmarks/results/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from peers_run import load_counts, make_inputs, save_csr  # noqa: E402  (the peers' prescribed inputs)

DATA = ROOT.parent / "shared" / "data" / "scicar_a549"
PEERS_PYTHON = ROOT / "benchmarks" / ".venv-peers" / "bin" / "python"
SETTINGS = ("unsupervised", "labels", "anchors")
METHODS = ("adversarial", "wasserstein", "mmd")
PEERS = ("scot_default", "scot_tuned", "uniport", "scotplus")
#: peers that need the separate peers environment (the SCOT algorithm runs on POT here)
ENV_PEERS = {"uniport", "scotplus"}
ANCHOR_FRACTION = 0.10
TRANSLATION_K = 15
#: cells kept by --smoke (the SCOT peer is quadratic in memory and slow beyond a few hundred)
SMOKE_CELLS = 300
#: columns of the published table: metric key in evaluate_run -> header
COLUMNS = {
    "foscttm_atac_rna": "FOSCTTM",
    "partner5_atac_rna": "partner in 5-NN",
    "partner50_atac_rna": "partner in 50-NN",
    "transfer_accuracy_rna_to_atac": "label transfer rna->atac",
    "transfer_accuracy_atac_to_rna": "label transfer atac->rna",
    "pearson_gene_top_atac_to_rna": "atac->rna Pearson (top genes)",
    "pearson_gene_atac_to_rna": "atac->rna Pearson (all genes)",
    "auroc_rna_to_atac": "rna->atac AUROC",
}


# ----------------------------------------------------------------------------- set-up
def bench_config(data: Path, *, smoke: bool) -> dict:
    """The sci-CAR workflow config with the data path set; tiny training for --smoke."""
    from cellbridge.config import load_config

    config = load_config(ROOT / "config" / "scicar.yaml")
    config["run"] = "bench"
    config["scicar"]["path"] = str(data)
    config["training"]["threads"] = int(os.environ.get("CELLBRIDGE_THREADS", "2"))
    if smoke:
        config["training"]["max_epochs"] = 2
        config["alignment"]["warmup_epochs"] = 0
        config["alignment"]["ramp_epochs"] = 1
    return config


def setting_config(config: dict, setting: str, anchors: Path) -> dict:
    """The config of one supervision setting (a deep copy)."""
    config = json.loads(json.dumps(config))
    config["alignment"]["labels"]["use"] = setting == "labels"
    if setting == "anchors":
        config["alignment"]["anchors"].update(table=str(anchors), fraction=ANCHOR_FRACTION)
    return config


def prepare(config: dict) -> None:
    """Import sci-CAR and prepare both domains with cellbridge's own preprocessing."""
    from cellbridge import stages

    stages.import_scicar(config)
    for domain in config["domains"]:
        stages.prepare_domain(config, domain)


def write_anchor_table(config: dict, path: Path) -> Path:
    """Known pairs among the training cells present in both prepared domains.

    The model uses a seeded ``ANCHOR_FRACTION`` of these rows, i.e. 10% of the training
    cells; held-out cells are never anchors.
    """
    from cellbridge import stages
    from cellbridge.evaluate import held_out_mask
    from cellbridge.truth import cell_ids_for, read_truth

    truth = read_truth(stages.truth_path(config))
    adatas = stages.read_prepared(config)
    cols = {}
    for d, a in adatas.items():
        train = ~held_out_mask(a)[0]
        cols[d] = pd.Series(a.obs_names[train], index=cell_ids_for(a.obs[train], truth))
    table = pd.DataFrame(cols).dropna()
    table.to_csv(path, sep="\t", index=False)
    return path


def subset_cells(config: dict, inputs: Path, n_cells: int, *, seed: int = 0) -> None:
    """Keep ``n_cells`` seeded cells in the prepared domains and the peer inputs (--smoke).

    The same cell ids are kept everywhere, so the smoke run exercises every step on a
    data set small enough for the Gromov-Wasserstein peers.
    """
    from cellbridge import stages
    from cellbridge._io import write_h5ad
    from cellbridge.truth import cell_ids_for, read_truth

    truth = read_truth(stages.truth_path(config))
    adatas = stages.read_prepared(config)
    ids = {d: cell_ids_for(a.obs, truth) for d, a in adatas.items()}
    shared = sorted(set.intersection(*(set(v) for v in ids.values())))
    keep = set(np.random.default_rng(seed).choice(shared, min(n_cells, len(shared)), replace=False))
    for d, a in adatas.items():
        write_h5ad(a[np.isin(ids[d], list(keep))].copy(), stages.prepared_path(config, d))
    if not inputs.exists():
        return
    with np.load(inputs, allow_pickle=False) as inp:
        store = dict(inp)
    for d in ("rna", "atac"):
        rows = np.flatnonzero(np.isin(store[f"cell_ids_{d}"], list(keep)))
        for key in (f"{d}_pca" if d == "rna" else "atac_svd", f"cell_ids_{d}", f"labels_{d}"):
            if key in store:
                store[key] = store[key][rows]
        counts = load_counts(store, f"{d}_counts")[rows]
        for key in [k for k in store if k.startswith(f"{d}_counts")]:
            del store[key]
        save_csr(store, f"{d}_counts", counts)
    np.savez_compressed(inputs, **store)


# ----------------------------------------------------------------------------- children
def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_cellbridge(config: dict, method: str, seed: int = 0) -> dict:
    """Train, translate and evaluate one model; metrics plus time and memory."""
    from cellbridge import stages

    t0 = time.perf_counter()
    model = stages.train(config, method, seed)
    stages.translate(config, method, seed)
    seconds = time.perf_counter() - t0
    result = stages.evaluate(config, method, seed)
    return {"metrics": result["metrics"], "seconds": seconds, "peak_mb": peak_rss_mb(), "epochs": len(model.history)}


def knn_translation(z_src: np.ndarray, z_ref: np.ndarray, ref, *, k: int = TRANSLATION_K):
    """Mean of each source cell's k nearest reference cells (rows of ``ref``) in the embedding."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(z_ref))
    idx = NearestNeighbors(n_neighbors=k).fit(z_ref).kneighbors(z_src, return_distance=False)
    ref = ref.toarray() if hasattr(ref, "toarray") else np.asarray(ref)
    return ref[idx].mean(axis=1)


def score_peer(config: dict, z: dict[str, np.ndarray], ids: dict[str, np.ndarray]) -> dict:
    """Score a peer's joint embedding (rows named by sci-CAR cell ids) with the workflow's metrics.

    The embedding is placed on cellbridge's prepared cells (by cell id), so peers and
    cellbridge are scored on the same held-out cells. Its translation of each source cell is the mean of the target domain's
    ``TRANSLATION_K`` nearest *training* cells (held-out partners are never averaged).
    """
    import anndata as ad

    from cellbridge import stages
    from cellbridge.evaluate import LATENT_KEY, evaluate_run, held_out_mask
    from cellbridge.truth import cell_ids_for, read_truth

    prepared = stages.read_prepared(config)
    truth = read_truth(stages.truth_path(config))
    latents, translations = {}, {}
    for d, a in prepared.items():
        rows = pd.Index(ids[d]).get_indexer(cell_ids_for(a.obs, truth))
        if (rows < 0).any():
            raise ValueError(f"{(rows < 0).sum()} prepared {d} cells are missing from the peer's embedding")
        emb = np.asarray(z[d], dtype=np.float64)[rows]
        lat = ad.AnnData(obs=a.obs.copy())
        lat.obsm[LATENT_KEY] = emb
        latents[d] = lat
    for src in prepared:
        for tgt in prepared:
            if src == tgt:
                continue
            tgt_ad = prepared[tgt]
            train = ~held_out_mask(tgt_ad)[0]
            z_src, z_ref = latents[src].obsm[LATENT_KEY], latents[tgt].obsm[LATENT_KEY][train]
            tr = ad.AnnData(knn_translation(z_src, z_ref, tgt_ad.X[train]), obs=prepared[src].obs.copy())
            if "binary" in tgt_ad.layers:
                tr.layers["probability"] = knn_translation(z_src, z_ref, tgt_ad.layers["binary"][train])
            translations[(src, tgt)] = tr
    return evaluate_run(latents, translations=translations, prepared=prepared, truth=truth,
                        label_key=config["label_key"])["metrics"]


def run_child(args: argparse.Namespace) -> None:
    """One row of the table, in its own process; JSON to --result."""
    config = json.loads(Path(args.child_config).read_text())
    os.chdir(args.workdir)
    if args.kind == "cellbridge":
        out = run_cellbridge(config, args.name)
    else:
        out = run_peer(config, args.name, Path(args.workdir), Path(args.reuse_peers) if args.reuse_peers else None)
    Path(args.result).write_text(json.dumps(out, default=float))


def run_peer(config: dict, peer: str, workdir: Path, reuse: Path | None = None) -> dict:
    """Run a peer in its environment's interpreter and score its embedding here.

    With ``reuse``, an earlier ``peers_run.py`` result ``{reuse}/{peer}.npz`` is scored
    instead, provided it was made from identical inputs (``{reuse}/inputs.npz``).
    """
    inputs = workdir / "peer_inputs.npz"
    python = str(PEERS_PYTHON) if peer in ENV_PEERS else sys.executable
    out = workdir / f"peer_{peer}.npz"
    seconds = float("nan")
    if reuse is not None and (reuse / f"{peer}.npz").exists():
        if not _same_arrays(reuse / "inputs.npz", inputs):
            return {"error": f"{reuse}/inputs.npz differs from this run's inputs; cannot reuse {peer}.npz"}
        out = reuse / f"{peer}.npz"
    else:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [python, str(ROOT / "benchmarks" / "peers_run.py"), "--method", peer, "--inputs", str(inputs), "--out", str(out)],
            capture_output=True, text=True,
        )
        seconds = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            return {"error": f"peers_run.py exited {proc.returncode}: {proc.stderr.strip()[-2000:]}", "seconds": seconds}
    res = np.load(out, allow_pickle=False)
    info = json.loads(str(res["info"]))
    if str(res["error"]):
        return {"error": str(res["error"]), "seconds": seconds, "info": info}
    inp = np.load(inputs, allow_pickle=False)
    ids = {"rna": inp["cell_ids_rna"], "atac": inp["cell_ids_atac"]}
    metrics = score_peer(config, {"rna": res["z_rna"], "atac": res["z_atac"]}, ids)
    return {"metrics": metrics, "seconds": info["wall_s"], "peak_mb": info["peak_rss_mb"], "info": info}


def _same_arrays(a: Path, b: Path) -> bool:
    if not a.exists():
        return False
    with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
        # floats to rounding: BLAS thread counts change the last bits of the PCA/SVD
        return set(x) == set(y) and all(_equal(x[k], y[k]) for k in x)


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    return bool(np.allclose(a, b, rtol=1e-8, atol=1e-10)) if a.dtype.kind == "f" else bool(np.array_equal(a, b))


# ----------------------------------------------------------------------------- parent
def share_inputs(config: dict, run: str) -> dict:
    """Config of another run that reads the prepared domains and truth of ``config``'s run."""
    from cellbridge import stages

    base = stages.results_dir(config).resolve()
    other = {**config, "run": run}
    target = stages.results_dir(other)
    target.mkdir(parents=True, exist_ok=True)
    for sub in ("prepared", "scicar"):
        if not (target / sub).exists():
            (target / sub).symlink_to(base / sub)
    # every row is a fresh measurement: no resuming from an earlier run's checkpoints
    for sub in ("checkpoints", "models", "translated", "metrics"):
        shutil.rmtree(target / sub, ignore_errors=True)
    return other


def spawn(kind: str, name: str, config: dict, workdir: Path, reuse: str | None = None) -> dict:
    cfg = workdir / f"config_{kind}_{name}.json"
    cfg.write_text(json.dumps(config))
    result = workdir / f"result_{kind}_{name}.json"
    cmd = [sys.executable, __file__, "--child", kind, name, "--child-config", str(cfg), "--workdir", str(workdir),
           "--result", str(result), *(["--reuse-peers", str(reuse)] if reuse else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-2000:]}
    return json.loads(result.read_text())


def table_row(method: str, setting: str, out: dict) -> dict:
    row = {"method": method, "setting": setting}
    metrics = out.get("metrics", {})
    row.update({label: metrics.get(key) for key, label in COLUMNS.items()})
    row["wall s"] = out.get("seconds")
    row["peak MB"] = out.get("peak_mb")
    row["note"] = (out.get("error") or "").splitlines()[-1][:200] if out.get("error") else _note(out)
    return row


def _note(out: dict) -> str:
    info = out.get("info") or {}
    params = info.get("hyperparameters")
    return f"epochs {out['epochs']}" if "epochs" in out else (json.dumps(params) if params else "")


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, threads {os.environ.get('CELLBRIDGE_THREADS', '2')}"


def write_tables(rows: list[dict], out_dir: Path, *, note: str, update: bool = False) -> tuple[Path, Path]:
    """CSV and Markdown table, each written atomically.

    With ``update``, rows of an existing table are kept unless this run measured the same
    (method, setting), so peers and cellbridge can be measured in separate runs.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, md = out_dir / "real_data.csv", out_dir / "real_data.md"
    table = pd.DataFrame(rows)
    if update and csv.exists():
        old = pd.read_csv(csv)
        measured = set(zip(table["method"], table["setting"], strict=True))
        old = old[[(m, s) not in measured for m, s in zip(old["method"], old["setting"], strict=True)]]
        table = pd.concat([old, table], ignore_index=True)
    tmp = csv.with_suffix(".csv.tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, csv)
    text = f"{note}\n\n{table.round(3).to_markdown(index=False)}\n"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, md)
    return csv, md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="sci-CAR folder (default ../shared/data/scicar_a549)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    parser.add_argument("--reuse-peers", metavar="DIR",
                        help="score peers_run.py results DIR/{peer}.npz made from identical inputs DIR/inputs.npz")
    parser.add_argument("--update", action="store_true", help="merge into an existing table instead of replacing it")
    parser.add_argument("--no-reference", action="store_true", help="skip the 'none' reference row")
    parser.add_argument("--smoke", action="store_true", help="2 epochs, one method and setting, SCOT defaults")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "NAME"), help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.kind, args.name = args.child
        run_child(args)
        return
    data = Path(args.data)
    if not (data / "shared_cells.pkl").exists():
        sys.exit(f"sci-CAR data not found in {data} (see ../shared/data/README.md)")
    if args.smoke:
        args.methods, args.settings, args.peers = "wasserstein", "unsupervised,anchors", "scot_default"
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cellbridge-realdata-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    config = bench_config(data, smoke=args.smoke)
    prepare(config)
    peers = [p for p in args.peers.split(",") if p]
    if peers:
        make_inputs(data, workdir / "peer_inputs.npz")
    if args.smoke:
        subset_cells(config, workdir / "peer_inputs.npz", SMOKE_CELLS)
    anchors = write_anchor_table(config, workdir / "anchors.tsv")
    rows = []

    def record(method: str, setting: str, out: dict) -> None:
        rows.append(table_row(method, setting, out))
        print(pd.DataFrame(rows[-1:]).round(3).to_string(index=False), flush=True)

    settings = [s for s in args.settings.split(",") if s]
    for setting in settings:
        cfg = setting_config(config, setting, anchors)
        for method in [m for m in args.methods.split(",") if m]:
            record(method, setting, spawn("cellbridge", method, share_inputs(cfg, f"bench_{setting}"), workdir))
    # the no-alignment reference ignores labels and anchors: one row serves every setting
    if not args.no_reference:
        none_cfg = setting_config(config, "unsupervised", anchors)
        record("none", "reference", spawn("cellbridge", "none", share_inputs(none_cfg, "bench_none"), workdir))
    if peers:
        for peer in peers:
            if peer in ENV_PEERS and not PEERS_PYTHON.exists():
                record(peer, "unsupervised", {"error": f"peers environment {PEERS_PYTHON} absent "
                                              "(python -m venv benchmarks/.venv-peers && "
                                              "pip install -r benchmarks/requirements-peers.txt)"})
                continue
            record(peer, "unsupervised", spawn("peer", peer, config, workdir, args.reuse_peers))
    note = (f"sci-CAR A549 (1874 co-assayed cells), held-out 20% scored; "
            f"{dt.date.today().isoformat()}; {machine()}")
    csv, md = write_tables(rows, Path(args.out), note=note, update=args.update)
    print(Path(md).read_text())
    print(f"written to {csv} and {md}")


if __name__ == "__main__":
    main()
