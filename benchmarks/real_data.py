"""cellbridge against published unpaired-integration methods on three real data sets.

Data sets (read from ``../shared/data/``, see its README; a missing one is skipped with a
message, never copied into the repository):

- ``scicar``: sci-CAR A549 RNA + ATAC co-assay (1874 cells, paired). Every method sees the
  two modalities as unpaired; the true pairing scores FOSCTTM, partner-in-kNN and
  translation. Domains go through cellbridge's RNA and ATAC preprocessing
  (``config/scicar.yaml``), the held-out 20% is cellbridge's sci-CAR split.
- ``pbmc``: PBMC multiome as two *unpaired* domains (1985 RNA, 1919 ATAC profiles, 50
  scaled features each) with partly shared cell types: 0-3 in both, 4-5 ATAC only, 6-9
  RNA only. No pairing exists: scored by label transfer on the 4 shared types and by the
  fraction of one-domain-only cells matched onto a shared type
  (:func:`cellbridge.metrics.unshared_matched_fraction`, lower is better).
- ``scnmt``: scNMT-seq mouse gastrulation, three unpaired domains (RNA 597, methylation
  725, accessibility 647 cells; 30 features each), scored by stage transfer between every
  pair of domains and domain mixing.

PBMC and scNMT are whitespace-separated matrices; each domain is written as an AnnData
(labels and a seeded, label-stratified 20% held-out split in ``obs``) and prepared by the
workflow's own ``features`` modality (:func:`cellbridge.stages.prepare_domain`: Gaussian
likelihood, standardised features). Every method is scored on the held-out cells only.

Rows, per data set:

- cellbridge, package defaults, each alignment method (``--methods``) and seed
  (``--seeds``) in the settings ``unsupervised``, ``labels`` (the cell type / stage as a
  shared label) and ``anchors`` (10% of the training cells as known pairs; sci-CAR only);
- floors (``--floors``): ``none`` (cellbridge without alignment, every seed), ``random``
  (a random Gaussian latent of the model's size, every seed), ``pca`` (each domain's own
  PCA at the latent size, no alignment; deterministic, seed 0);
- peers (``--peers``, run by ``benchmarks/peers_run.py`` on the same features, seed 0):
  SCOT (our POT implementation, ``_scot.py``), SCOT+ (``scotplus``) and Pamona
  (``pamona``) at their defaults and self-tuned, uniPort on sci-CAR. Peers align all
  cells transductively and are scored on the same held-out cells. On sci-CAR their
  "translation" is the average of the partner domain's 15 nearest training cells.

Every run is a child process, so wall time and peak memory (max RSS) are its own.

    .venv/bin/python benchmarks/real_data.py                       # everything (many hours on 2 cores)
    .venv/bin/python benchmarks/real_data.py --datasets pbmc --seeds 0,1,2,3,4 --settings unsupervised
    .venv/bin/python benchmarks/real_data.py --smoke               # tiny version of every data set (CI)
    .venv/bin/python benchmarks/real_data.py --datasets pbmc,scnmt --methods '' --settings '' \\
        --floors '' --peer-max-iter 100 --peer-timeout 1200 --update   # peers only

Writes ``real_data_<name>.tsv`` (long format: ``method, setting, seed, metric, value``;
``wall_s`` and ``peak_rss_mb`` are metrics too) and ``real_data_<name>.md`` (per method x
setting: mean, sd and worst seed of each headline metric; unsupervised block first) under
``benchmarks/results/`` (or ``--out``).
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from peers_run import load_counts, make_inputs, save_csr  # noqa: E402  (the peers' prescribed inputs)

DATA_ROOT = ROOT.parent / "shared" / "data"
PEERS_PYTHON = ROOT / "benchmarks" / ".venv-peers" / "bin" / "python"
SETTINGS = ("unsupervised", "labels", "anchors")
METHODS = ("adversarial", "wasserstein", "mmd")
FLOORS = ("none", "random", "pca")
SEEDS = (0, 1, 2, 3, 4)
#: peers that need the separate peers environment (the SCOT algorithm runs on POT here)
ENV_PEERS = {"uniport", "scotplus", "scotplus_tuned", "pamona", "pamona_tuned"}
#: what "default" and "self-tuned" mean per peer (printed under every table)
PEER_NOTES = {
    "scot_default": "SCOT (POT re-implementation, benchmarks/_scot.py): authors' defaults k = min(0.2 n, 50), "
                    "eps = 1e-3",
    "scot_tuned": "SCOT self-tuned: SCOT's own rule, lowest GW distance over k in {20, 60, 100} x "
                  "eps in {1e-2, 5e-3, 2e-3, 1e-3}, largest eps first, within the time budget",
    "scotplus": "SCOT+ (scotplus 1.0.2) balanced GW as in its tutorial: k = 50, eps = 1e-3",
    "scotplus_tuned": "SCOT+ self-tuned: SCOT's rule (SCOT+ ships none), lowest GW distortion over "
                      "k in {20, 50, 100} x eps in {1e-2, 5e-3, 1e-3}, within the time budget",
    "pamona": "Pamona 0.1.0 defaults: k = 10, eps = 1e-3, Lambda = 1, n_shared = smaller data set, z-scored inputs",
    "pamona_tuned": "Pamona self-tuned: SCOT's rule (Pamona ships none), lowest partial-GW distortion over "
                    "k in {10, 30, 50} x eps in {5e-3, 1e-3}, within the time budget",
    "uniport": "uniPort 1.3 diagonal integration at its defaults (30,000 iterations): from raw counts with its "
               "tutorial's preprocessing (sci-CAR), else the given features min-max scaled per domain",
}
ANCHOR_FRACTION = 0.10
TEST_FRACTION = 0.2
TRANSLATION_K = 15
#: cells kept by --smoke (the GW peers are quadratic in memory and slow beyond a few hundred)
SMOKE_CELLS = {"scicar": 300, "pbmc": 200, "scnmt": 120}
#: outer GW iterations of the peers in --smoke
SMOKE_PEER_MAX_ITER = 20


# ----------------------------------------------------------------------------- data sets
@dataclass
class Dataset:
    """One real data set: where it is, how it is prepared and how it is scored.

    ``headline`` maps metric keys to (column header, higher is better); ``peers`` are the
    peer methods run on it; ``anchors`` whether a truth pairing exists for the anchor
    setting.
    """

    name: str
    title: str
    folder: str
    marker: str
    headline: dict[str, tuple[str, bool]]
    peers: tuple[str, ...]
    anchors: bool = False
    label_key: str = "cell_type"
    files: dict[str, tuple[str, str]] = field(default_factory=dict)  # domain -> (matrix, labels)

    def path(self, root: Path) -> Path:
        return root / self.folder

    def available(self, root: Path) -> bool:
        return (self.path(root) / self.marker).exists()


GW_PEERS = ("scot_default", "scot_tuned", "scotplus", "scotplus_tuned", "pamona", "pamona_tuned")
DATASETS = {
    "scicar": Dataset(
        name="scicar", title="sci-CAR A549 (1874 co-assayed cells, RNA + ATAC given unpaired)",
        folder="scicar_a549", marker="shared_cells.pkl", anchors=True, label_key="treatment_time",
        peers=(*GW_PEERS, "uniport"),
        headline={
            "foscttm_atac_rna": ("FOSCTTM", False),
            "partner5_atac_rna": ("partner in 5-NN", True),
            "transfer_accuracy_rna_to_atac": ("label transfer rna->atac", True),
            "transfer_accuracy_atac_to_rna": ("label transfer atac->rna", True),
            "pearson_gene_top_atac_to_rna": ("atac->rna Pearson (top genes)", True),
            "auroc_rna_to_atac": ("rna->atac AUROC", True),
        },
    ),
    "pbmc": Dataset(
        name="pbmc", title="PBMC multiome, unpaired (1985 RNA, 1919 ATAC profiles; 4 shared cell types)",
        folder="pbmc_multiome_unpaired", marker="RNA_scaledata.txt", peers=(*GW_PEERS, "uniport"),
        files={"rna": ("RNA_scaledata.txt", "RNA_type.txt"), "atac": ("ATAC_scaledata.txt", "ATAC_type.txt")},
        headline={
            "shared_transfer": ("label transfer, shared types (mean)", True),
            "shared_transfer_rna_to_atac": ("shared rna->atac", True),
            "shared_transfer_atac_to_rna": ("shared atac->rna", True),
            "unshared_matched": ("one-domain-only cells on a shared type (lower better)", False),
            "domain_entropy": ("domain mixing", True),
        },
    ),
    "scnmt": Dataset(
        name="scnmt", title="scNMT-seq gastrulation, three unpaired domains (RNA 597, methylation 725, accessibility 647)",
        folder="scnmt_gastrulation", marker="rna_30.txt", label_key="stage", peers=(*GW_PEERS, "uniport"),
        files={d: (f"{d}_30.txt", f"{d}_stage.txt") for d in ("rna", "met", "acc")},
        headline={
            "stage_transfer": ("stage transfer (mean of 6 pairs)", True),
            "stage_transfer_worst_pair": ("worst pair", True),
            "domain_entropy": ("domain mixing", True),
        },
    ),
}
#: PBMC cell types by number (``celltype-map.txt``); 0-3 are in both domains
PBMC_TYPES = {0: "CD8Tex", 1: "Monocytes", 2: "NaiveCD4Tcells", 3: "RestNK", 4: "Tfh", 5: "MemoryBcells",
              6: "CD8Tcells", 7: "RestMemCD4Tcells", 8: "RestpDCs", 9: "NaiveBcells"}
PBMC_SHARED = tuple(PBMC_TYPES[i] for i in range(4))
SCNMT_STAGES = {0: "E4.5", 1: "E5.5", 2: "E6.5", 3: "E7.5"}


# ----------------------------------------------------------------------------- set-up
def bench_config(ds: Dataset, root: Path, workdir: Path, *, smoke: bool) -> dict:
    """The workflow config of a data set (package defaults); tiny training for --smoke."""
    from cellbridge.config import load_config, validate_config

    if ds.name == "scicar":
        config = load_config(ROOT / "config" / "scicar.yaml")
        config["scicar"]["path"] = str(ds.path(root))
    else:
        domains = {d: {"modality": "features", "input": str(workdir / "inputs" / f"{d}.h5ad")} for d in ds.files}
        config = validate_config({"run": "bench", "label_key": ds.label_key, "truth": None, "domains": domains})
    config["run"] = "bench"
    config["training"]["threads"] = int(os.environ.get("CELLBRIDGE_THREADS", "2"))
    if smoke:
        config["training"]["max_epochs"] = 2
        config["alignment"]["warmup_epochs"] = 0
        config["alignment"]["ramp_epochs"] = 1
        if "correspondence" in config["alignment"]:  # the geometric prior, exercised but small
            config["alignment"]["correspondence"].update(n_landmarks=50, k_grid=[10], n_restarts=1)
    return config


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    """``config`` with ``KEY=VALUE`` overrides applied (dotted keys; YAML values), validated.

    For ablations of a default (e.g. ``alignment.correspondence.n_restarts=5``); the tables
    header names them. A key the defaults leave unset (``alignment.wasserstein.unbalanced``)
    may be set where its parent exists; the schema refuses keys it does not know.
    """
    import yaml

    from cellbridge.config import validate_config
    from cellbridge._io import InputError

    if not overrides:
        return config
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise SystemExit(f"--set {item!r}: no config key {key!r}")
        node[leaf] = yaml.safe_load(value)
    try:
        return validate_config(config)
    except InputError as err:
        raise SystemExit(f"--set {' '.join(overrides)}: {err}") from None


def overrides_note(overrides: list[str]) -> str:
    return f" except {', '.join(overrides)}" if overrides else ""


def setting_config(config: dict, setting: str, anchors: Path | None) -> dict:
    """The config of one supervision setting (a deep copy)."""
    config = json.loads(json.dumps(config))
    config["alignment"]["labels"]["use"] = setting == "labels"
    # with labels, the `none` row is the label-matching reference: the classifier, no aligner
    config["alignment"]["labels"]["baseline"] = setting == "labels"
    if setting == "anchors":
        config["alignment"]["anchors"].update(table=str(anchors), fraction=ANCHOR_FRACTION)
    return config


def read_feature_domain(ds: Dataset, root: Path, domain: str):
    """One PBMC/scNMT domain as read: ``(values, labels)`` (labels named, as strings)."""
    matrix, label_file = ds.files[domain]
    x = np.loadtxt(ds.path(root) / matrix, dtype=np.float64, ndmin=2)
    codes = np.loadtxt(ds.path(root) / label_file, dtype=np.float64).astype(int)
    if codes.shape[0] != x.shape[0]:
        raise ValueError(f"{label_file}: {codes.shape[0]} labels for {x.shape[0]} rows of {matrix}")
    names = PBMC_TYPES if ds.name == "pbmc" else SCNMT_STAGES
    return x, np.asarray([names[c] for c in codes], dtype=object)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``"test"`` for a seeded ``fraction`` of every label's cells (at least one), else ``"train"``."""
    rng = np.random.default_rng(seed)
    split = np.full(labels.shape[0], "train", dtype=object)
    for lab in sorted(set(labels)):
        idx = np.flatnonzero(labels == lab)
        n_test = max(1, int(round(fraction * idx.size))) if idx.size > 1 else 0
        split[rng.choice(idx, n_test, replace=False)] = "test"
    return split


def write_feature_inputs(ds: Dataset, root: Path, config: dict, *, smoke: bool) -> None:
    """Each PBMC/scNMT domain as an ``.h5ad`` the workflow's ``features`` preparation reads.

    Cells are named ``{domain}_{row}`` in file order; ``obs`` holds the label and a seeded,
    label-stratified held-out split. With ``smoke``, a seeded subset of cells is kept.
    """
    import anndata as ad

    from cellbridge._io import write_h5ad

    for i, (domain, dom) in enumerate(config["domains"].items()):
        x, labels = read_feature_domain(ds, root, domain)
        rows = np.arange(x.shape[0])
        if smoke:
            rows = np.sort(np.random.default_rng(100 + i).choice(rows, min(SMOKE_CELLS[ds.name], rows.size), replace=False))
        obs = pd.DataFrame(
            {ds.label_key: pd.Categorical(labels[rows].astype(str)),
             "split": stratified_split(labels[rows], TEST_FRACTION, seed=i)},
            index=[f"{domain}_{r:04d}" for r in rows],
        )
        a = ad.AnnData(x[rows].astype(np.float32), obs=obs)
        a.var_names = [f"{domain}_f{j:02d}" for j in range(x.shape[1])]
        write_h5ad(a, Path(dom["input"]))


def prepare(ds: Dataset, root: Path, config: dict, *, smoke: bool) -> None:
    """Prepare every domain with cellbridge's own preprocessing (the workflow's prepare stage)."""
    from cellbridge import stages

    if ds.name == "scicar":
        stages.import_scicar(config)
    else:
        write_feature_inputs(ds, root, config, smoke=smoke)
    for domain in config["domains"]:
        stages.prepare_domain(config, domain)


def write_feature_peer_inputs(config: dict, path: Path) -> None:
    """Peer inputs of a features data set: each domain's features standardised per feature, anchor first.

    Standardised whatever cellbridge's ``preprocess.features.standardize`` (its default uses the
    values as given): the peers' inputs stay what every peer run in the tables was given (as
    Pamona's PBMC example z-scores its features).
    """
    from cellbridge import stages
    from cellbridge.preprocess.features import UNSCALED_LAYER, standardize_features

    adatas = stages.read_prepared(config)
    store: dict = {"domains": np.asarray(list(adatas), dtype=str)}
    for d, a in adatas.items():
        given = a.layers[UNSCALED_LAYER] if UNSCALED_LAYER in a.layers else a.X
        x = standardize_features(given, a.var["mean"].to_numpy(), a.var["std"].to_numpy())
        store[f"x_{d}"] = np.asarray(x, dtype=np.float64)
        store[f"cell_ids_{d}"] = np.asarray(a.obs_names, dtype=str)
        store[f"labels_{d}"] = np.asarray(a.obs[config["label_key"]].astype(str), dtype=str)
    np.savez_compressed(path, **store)


def write_anchor_table(config: dict, path: Path) -> Path:
    """Known pairs among the training cells present in both prepared domains (sci-CAR).

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
    """Keep ``n_cells`` seeded cells in the prepared sci-CAR domains and the peer inputs (--smoke)."""
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


# ----------------------------------------------------------------------------- scoring
def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def knn_translation(z_src: np.ndarray, z_ref: np.ndarray, ref, *, k: int = TRANSLATION_K):
    """Mean of each source cell's k nearest reference cells (rows of ``ref``) in the embedding."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(z_ref))
    idx = NearestNeighbors(n_neighbors=k).fit(z_ref).kneighbors(z_src, return_distance=False)
    ref = ref.toarray() if hasattr(ref, "toarray") else np.asarray(ref)
    return ref[idx].mean(axis=1)


def extra_metrics(ds: Dataset, config: dict, latents: dict) -> dict[str, float]:
    """The data set's own headline metrics on held-out cells, beyond ``evaluate_run``'s.

    PBMC: kNN label transfer with both domains restricted to the 4 shared types, and the
    fraction of one-domain-only cells matched onto a shared type. scNMT: stage transfer
    averaged over the 6 ordered pairs of domains, and its worst pair.
    """
    from cellbridge import metrics as M
    from cellbridge.contract import LATENT_KEY
    from cellbridge.evaluate import held_out_mask

    k = config["evaluation"]["label_k"]
    z, lab = {}, {}
    for d, a in latents.items():
        held = held_out_mask(a)[0]
        z[d] = np.asarray(a.obsm[LATENT_KEY], dtype=np.float64)[held]
        lab[d] = a.obs[config["label_key"]].astype(str).to_numpy()[held]
    out: dict[str, float] = {}
    if ds.name == "pbmc":
        (a, b) = ("rna", "atac")
        sa, sb = np.isin(lab[a], PBMC_SHARED), np.isin(lab[b], PBMC_SHARED)
        out["shared_transfer_rna_to_atac"] = M.knn_label_transfer(z[a][sa], lab[a][sa], z[b][sb], lab[b][sb], k=k)["accuracy"]
        out["shared_transfer_atac_to_rna"] = M.knn_label_transfer(z[b][sb], lab[b][sb], z[a][sa], lab[a][sa], k=k)["accuracy"]
        out["shared_transfer"] = (out["shared_transfer_rna_to_atac"] + out["shared_transfer_atac_to_rna"]) / 2
        um = M.unshared_matched_fraction(z[a], lab[a], z[b], lab[b], k=k, shared=PBMC_SHARED)
        out["unshared_matched"] = um["fraction"]
        out["unshared_matched_rna_to_atac"], out["unshared_matched_atac_to_rna"] = um["a_to_b"], um["b_to_a"]
    elif ds.name == "scnmt":
        pairs = [M.knn_label_transfer(z[a], lab[a], z[b], lab[b], k=k)["accuracy"]
                 for a in z for b in z if a != b]
        out["stage_transfer"] = float(np.mean(pairs))
        out["stage_transfer_worst_pair"] = float(np.min(pairs))
    return out


def score_embedding(ds: Dataset, config: dict, z: dict[str, np.ndarray], ids: dict[str, np.ndarray]) -> dict:
    """Score a joint embedding made outside cellbridge (a peer or a floor) like a cellbridge run.

    ``z[d]`` has one row per entry of ``ids[d]`` (sci-CAR cell ids, or the prepared cells'
    names for features data sets); rows are placed on cellbridge's prepared cells, so every
    method is scored on the same held-out cells. On sci-CAR the translation of each source
    cell is the mean of the target domain's ``TRANSLATION_K`` nearest *training* cells.
    """
    import anndata as ad

    from cellbridge import stages
    from cellbridge.contract import LATENT_KEY
    from cellbridge.evaluate import evaluate_run, held_out_mask
    from cellbridge.truth import cell_ids_for, read_truth

    prepared = stages.read_prepared(config)
    truth = read_truth(stages.truth_path(config)) if stages.truth_path(config) else None
    latents, translations = {}, {}
    for d, a in prepared.items():
        keys = cell_ids_for(a.obs, truth) if truth is not None else np.asarray(a.obs_names)
        rows = pd.Index(ids[d]).get_indexer(keys)
        if (rows < 0).any():
            raise ValueError(f"{(rows < 0).sum()} prepared {d} cells are missing from the embedding")
        lat = ad.AnnData(obs=a.obs.copy())
        lat.obsm[LATENT_KEY] = np.asarray(z[d], dtype=np.float64)[rows]
        latents[d] = lat
    if truth is not None:
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
    ev = config["evaluation"]
    metrics = evaluate_run(latents, translations=translations, prepared=prepared, truth=truth,
                           label_key=config["label_key"], k_values=tuple(ev["k"]), label_k=ev["label_k"],
                           entropy_k=ev["entropy_k"], top_genes=ev["top_genes"])["metrics"]
    return {**metrics, **extra_metrics(ds, config, latents)}


# ----------------------------------------------------------------------------- children
def run_cellbridge(ds: Dataset, config: dict, method: str, seed: int) -> dict:
    """Train, translate and evaluate one model (package defaults); metrics plus time and memory."""
    from cellbridge import stages
    from cellbridge._io import read_h5ad

    t0 = time.perf_counter()
    model = stages.train(config, method, seed)
    stages.translate(config, method, seed)
    seconds = time.perf_counter() - t0
    result = stages.evaluate(config, method, seed)
    latents = {d: read_h5ad(stages.model_dir(config, method, seed) / f"{d}.h5ad", d) for d in config["domains"]}
    metrics = {**result["metrics"], **extra_metrics(ds, config, latents)}
    # the geometric prior's cost beside the training epochs', in the same process (issue 16: <= 2x)
    metrics["train_epochs_s"] = float(model.history["seconds"].sum())
    if "seconds" in model.config.get("correspondence", {}):
        metrics["prior_s"] = float(model.config["correspondence"]["seconds"])
    if "latent_pull" in model.config.get("correspondence", {}):
        # how closely the trained latent keeps the prior's pairs (no truth; lower is closer)
        metrics["latent_pull"] = float(np.mean(list(model.config["correspondence"]["latent_pull"].values())))
    return {"metrics": metrics, "seconds": seconds, "peak_mb": peak_rss_mb(), "epochs": len(model.history)}


def run_floor(ds: Dataset, config: dict, floor: str, seed: int) -> dict:
    """``random`` (Gaussian latent of the model's size) or ``pca`` (each domain's own PCA)."""
    from sklearn.decomposition import PCA

    from cellbridge import stages

    t0 = time.perf_counter()
    dim = config["model"]["latent_dim"]
    prepared = stages.read_prepared(config)
    rng = np.random.default_rng(seed)
    z = {}
    for d, a in prepared.items():
        if floor == "random":
            z[d] = rng.normal(size=(a.n_obs, dim))
        else:
            x = a.X.toarray() if hasattr(a.X, "toarray") else np.asarray(a.X, dtype=np.float64)
            z[d] = PCA(n_components=min(dim, *x.shape), random_state=0).fit_transform(x)
            if z[d].shape[1] < dim:
                z[d] = np.pad(z[d], ((0, 0), (0, dim - z[d].shape[1])))
    seconds = time.perf_counter() - t0
    ids = _embedding_ids(config, prepared)
    return {"metrics": score_embedding(ds, config, z, ids), "seconds": seconds, "peak_mb": peak_rss_mb()}


def _embedding_ids(config: dict, prepared: dict) -> dict[str, np.ndarray]:
    """The keys :func:`score_embedding` places rows by, for embeddings in prepared-row order."""
    from cellbridge import stages
    from cellbridge.truth import cell_ids_for, read_truth

    tpath = stages.truth_path(config)
    truth = read_truth(tpath) if tpath else None
    return {d: (cell_ids_for(a.obs, truth) if truth is not None else np.asarray(a.obs_names)) for d, a in prepared.items()}


def run_child(args: argparse.Namespace) -> None:
    """One row of the table, in its own process; JSON to --result."""
    config = json.loads(Path(args.child_config).read_text())
    ds = DATASETS[args.dataset]
    os.chdir(args.workdir)
    if args.kind == "cellbridge":
        out = run_cellbridge(ds, config, args.name, args.child_seed)
    elif args.kind == "floor":
        out = run_floor(ds, config, args.name, args.child_seed)
    else:
        out = run_peer(ds, config, args.name, Path(args.workdir), args)
    Path(args.result).write_text(json.dumps(out, default=float))


def _find(folder: Path, *names: str) -> Path | None:
    for name in names:
        if (folder / name).exists():
            return folder / name
    return None


def run_peer(ds: Dataset, config: dict, peer: str, workdir: Path, args: argparse.Namespace) -> dict:
    """Run a peer in its environment's interpreter and score its embedding here.

    With ``--reuse-peers DIR``, an earlier result ``DIR[/<data set>]/{peer}.npz`` (or
    ``peer_{peer}.npz``, as this script leaves them in its work folder) is scored instead,
    provided it was made from identical inputs (``inputs.npz`` / ``peer_inputs.npz`` beside it).
    """
    inputs = workdir / "peer_inputs.npz"
    python = str(PEERS_PYTHON) if peer in ENV_PEERS else sys.executable
    out = workdir / f"peer_{peer}.npz"
    seconds = float("nan")
    reuse = None
    if args.reuse_peers:
        base = Path(args.reuse_peers)
        for folder in (base / ds.name, base):
            found = _find(folder, f"{peer}.npz", f"peer_{peer}.npz")
            if found is not None and found.resolve() != out.resolve():
                reuse = (folder, found)
                break
    if reuse is not None:
        same = _find(reuse[0], "inputs.npz", "peer_inputs.npz")
        if same is None or not _same_arrays(same, inputs):
            return {"error": f"{reuse[0]}: inputs differ from this run's; cannot reuse {reuse[1].name}"}
        out = reuse[1]
    else:
        cmd = [python, str(ROOT / "benchmarks" / "peers_run.py"), "--method", peer, "--inputs", str(inputs),
               "--out", str(out), "--time-budget", str(args.peer_time_budget)]
        if args.peer_max_iter:
            cmd += ["--max-iter", str(args.peer_max_iter)]
        if args.scotplus_nits_uot:
            cmd += ["--nits-uot", str(args.scotplus_nits_uot)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.peer_timeout or None)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {args.peer_timeout:.0f} s (--peer-timeout)",
                    "seconds": time.perf_counter() - t0}
        seconds = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            return {"error": f"peers_run.py exited {proc.returncode}: {proc.stderr.strip()[-2000:]}", "seconds": seconds}
    res = np.load(out, allow_pickle=False)
    info = json.loads(str(res["info"]))
    if str(res["error"]):
        return {"error": str(res["error"]), "seconds": seconds, "info": info}
    inp = np.load(inputs, allow_pickle=False)
    domains = [str(d) for d in inp["domains"]] if "domains" in inp else ["rna", "atac"]
    ids = {d: inp[f"cell_ids_{d}"] for d in domains}
    metrics = score_embedding(ds, config, {d: res[f"z_{d}"] for d in domains}, ids)
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
    """Config of another run that reads the prepared domains (and truth) of ``config``'s run."""
    from cellbridge import stages

    base = stages.results_dir(config).resolve()
    other = {**config, "run": run}
    target = stages.results_dir(other)
    target.mkdir(parents=True, exist_ok=True)
    for sub in ("prepared", "scicar"):
        if (base / sub).exists() and not (target / sub).exists():
            (target / sub).symlink_to(base / sub)
    # every row is a fresh measurement: no resuming from an earlier run's checkpoints
    for sub in ("checkpoints", "models", "translated", "metrics"):
        shutil.rmtree(target / sub, ignore_errors=True)
    return other


def spawn(ds: Dataset, kind: str, name: str, seed: int, config: dict, workdir: Path, args) -> dict:
    tag = f"{kind}_{name}_{config.get('run', '')}_seed{seed}"
    cfg = workdir / f"config_{tag}.json"
    cfg.write_text(json.dumps(config))
    result = workdir / f"result_{tag}.json"
    if args.reuse_results and result.exists():  # an interrupted benchmark picks up where it stopped
        print(f"[{ds.name}] reusing {result.name}", flush=True)
        return json.loads(result.read_text())
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", kind, name, "--child-seed", str(seed), "--datasets", ds.name,
           "--child-config", str(cfg), "--workdir", str(workdir), "--result", str(result),
           "--peer-time-budget", str(args.peer_time_budget), "--peer-timeout", str(args.peer_timeout or 0)]
    if args.peer_max_iter:
        cmd += ["--peer-max-iter", str(args.peer_max_iter)]
    if args.scotplus_nits_uot:
        cmd += ["--scotplus-nits-uot", str(args.scotplus_nits_uot)]
    if args.reuse_peers:
        cmd += ["--reuse-peers", str(Path(args.reuse_peers).resolve())]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not result.exists():
        return {"error": proc.stderr.strip()[-2000:] or f"child exited {proc.returncode}"}
    return json.loads(result.read_text())


def long_rows(method: str, setting: str, seed: int, out: dict) -> list[dict]:
    """The TSV rows of one run: every metric, wall time and peak memory (``failed`` = 1 on error)."""
    rows = [{"method": method, "setting": setting, "seed": seed, "metric": k, "value": float(v)}
            for k, v in sorted((out.get("metrics") or {}).items()) if v is not None]
    for key, metric in (("seconds", "wall_s"), ("peak_mb", "peak_rss_mb"), ("epochs", "epochs")):
        if out.get(key) is not None and np.isfinite(float(out[key])):
            rows.append({"method": method, "setting": setting, "seed": seed, "metric": metric, "value": float(out[key])})
    if out.get("error"):
        rows.append({"method": method, "setting": setting, "seed": seed, "metric": "failed", "value": 1.0})
    return rows


def run_note(out: dict) -> str:
    """Errors, a peer's caps and chosen hyperparameters: what the table alone does not say."""
    caps = f"{out['caps']}; " if out.get("caps") else ""
    if out.get("error"):
        lines = out["error"].strip().splitlines() or ["(no message)"]
        return f"{caps}error: {lines[-1][:300]}"
    params = (out.get("info") or {}).get("hyperparameters")
    return caps + (json.dumps(params, default=str) if params else "")


KIND_ORDER = {"cellbridge": 0, "floor": 1, "peer": 2}


def summary_table(ds: Dataset, table: pd.DataFrame) -> pd.DataFrame:
    """Per method x setting: n seeds, then mean, sd and worst seed of every headline metric."""
    rows = []
    for (method, setting), grp in table.groupby(["method", "setting"], sort=False):
        row = {"setting": setting, "method": method}
        seeds = sorted(grp["seed"].unique())
        failed = grp[grp["metric"] == "failed"]
        row["seeds"] = f"{len(seeds) - failed['seed'].nunique()}/{len(seeds)}"
        for key, (label, higher) in [*ds.headline.items(), ("wall_s", ("wall s", False)), ("peak_rss_mb", ("peak MB", False))]:
            vals = grp.loc[grp["metric"] == key, "value"].to_numpy(dtype=float)
            if key in ("wall_s", "peak_rss_mb"):
                row[label] = (vals.mean() if key == "wall_s" else vals.max()) if vals.size else np.nan
                continue
            row[f"{label} mean"] = vals.mean() if vals.size else np.nan
            row[f"{label} sd"] = vals.std(ddof=1) if vals.size > 1 else np.nan
            row[f"{label} worst"] = (vals.min() if higher else vals.max()) if vals.size else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _sort_summary(rows: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """Settings in SETTINGS order (unsupervised first); in each, cellbridge, floors, peers."""
    setting_order = {s: i for i, s in enumerate(SETTINGS)}
    key = rows.apply(lambda r: (setting_order.get(r["setting"], 99), KIND_ORDER.get(kinds.get(r["method"], "peer"), 3),
                                _rank(r["method"]), r["method"]), axis=1)
    return rows.iloc[sorted(range(len(rows)), key=lambda i: key.iloc[i])].reset_index(drop=True)


def format_summary(ds: Dataset, block: pd.DataFrame) -> pd.DataFrame:
    """One cell per headline metric: ``mean ± sd (worst w)``, or the value alone for one seed."""
    out = block[["method", "seeds"]].copy()
    for label, _ in ds.headline.values():
        cells = []
        for _, r in block.iterrows():
            mean, sd, worst = r[f"{label} mean"], r[f"{label} sd"], r[f"{label} worst"]
            if pd.isna(mean):
                cells.append("")
            elif pd.isna(sd):
                cells.append(f"{mean:.3f}")
            else:
                cells.append(f"{mean:.3f} ± {sd:.3f} (worst {worst:.3f})")
        out[label] = cells
    out["wall s (mean)"] = block["wall s"].round(1)
    out["peak MB (max)"] = block["peak MB"].round(0)
    return out


def _rank(method: str) -> int:
    for group in (METHODS, FLOORS, tuple(PEER_NOTES)):
        if method in group:
            return group.index(method)
    return 0


def method_kind(method: str) -> str:
    if method in FLOORS:
        return "floor"
    return "peer" if method in PEER_NOTES else "cellbridge"


def write_tables(ds: Dataset, long: list[dict], notes: dict[str, str], out_dir: Path, *, header: str,
                 update: bool = False) -> tuple[Path, Path]:
    """``real_data_<name>.tsv`` (long format) and ``real_data_<name>.md`` (summary), each atomic.

    With ``update``, rows of an existing table are kept unless this run measured the same
    (method, setting, seed), so peers and cellbridge can be measured in separate runs.
    Notes (a peer's chosen hyperparameters, errors) are kept beside it in ``.notes.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tsv, md, notes_path = (out_dir / f"real_data_{ds.name}.{ext}" for ext in ("tsv", "md", "notes.json"))
    table = pd.DataFrame(long, columns=["method", "setting", "seed", "metric", "value"])
    if update and tsv.exists():
        old = pd.read_csv(tsv, sep="\t")
        measured = set(zip(table["method"], table["setting"], table["seed"], strict=True))
        keep = [(m, s, int(e)) not in measured for m, s, e in zip(old["method"], old["setting"], old["seed"], strict=True)]
        table = pd.concat([old[keep], table], ignore_index=True)
        if notes_path.exists():
            notes = {**json.loads(notes_path.read_text()), **notes}
    table["seed"] = table["seed"].astype(int)
    _atomic(tsv, table.to_csv(sep="\t", index=False))
    _atomic(notes_path, json.dumps(notes, indent=1, sort_keys=True))
    kinds = {m: method_kind(m) for m in table["method"].unique()}
    summary = summary_table(ds, table)
    parts = [f"# {ds.title}", "", header, ""]
    if not summary.empty:
        summary = _sort_summary(summary, kinds)
        for setting, block in summary.groupby("setting", sort=False):
            parts += [f"## {setting}", "", format_summary(ds, block).to_markdown(index=False), ""]
    parts += ["Headline metrics (held-out cells): "
              + "; ".join(f"{label} (`{key}`, {'higher' if hi else 'lower'} is better)" for key, (label, hi) in ds.headline.items())
              + ". `worst` is the worst seed; `seeds` counts successful/attempted seeds.", ""]
    used = [p for p in PEER_NOTES if p in kinds]
    if used:
        parts += ["What the peers ran with:", ""] + [f"- `{p}`: {PEER_NOTES[p]}" for p in used] + [""]
    if notes:
        parts += ["Run notes (chosen hyperparameters, errors):", ""]
        parts += [f"- `{k}`: {v}" for k, v in sorted(notes.items()) if v] + [""]
    _atomic(md, "\n".join(parts))
    return tsv, md


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def run_dataset(ds: Dataset, args: argparse.Namespace, root: Path, workroot: Path) -> tuple[Path, Path] | None:
    """Prepare one data set, run every requested row in a child, write its tables."""
    if not ds.available(root):
        print(f"[{ds.name}] skipped: data not found in {ds.path(root)} (see ../shared/data/README.md)", flush=True)
        return None
    t_start = time.perf_counter()
    workdir = (workroot / ds.name).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    config = apply_overrides(bench_config(ds, root, workdir, smoke=args.smoke), args.set)
    prepare(ds, root, config, smoke=args.smoke)
    peers = [p for p in (_names(args.peers) if args.peers is not None else ds.peers) if p in ds.peers]
    skipped_peers = [p for p in (_names(args.peers) if args.peers is not None else []) if p not in ds.peers]
    if skipped_peers:
        print(f"[{ds.name}] peers not run on this data set: {', '.join(skipped_peers)}", flush=True)
    inputs = workdir / "peer_inputs.npz"
    if peers:
        if ds.name == "scicar":
            make_inputs(ds.path(root), inputs)
        else:
            write_feature_peer_inputs(config, inputs)
    if ds.name == "scicar" and args.smoke:
        subset_cells(config, inputs, SMOKE_CELLS["scicar"])
    anchors = write_anchor_table(config, workdir / "anchors.tsv") if ds.anchors else None
    seeds = [int(s) for s in _names(args.seeds)]
    long: list[dict] = []
    notes: dict[str, str] = {}

    def record(method: str, setting: str, seed: int, out: dict) -> None:
        long.extend(long_rows(method, setting, seed, out))
        note = run_note(out)
        if note:
            notes[f"{method} / {setting} / seed {seed}"] = note
        shown = {k: (out.get("metrics") or {}).get(k) for k in ds.headline}
        print(f"[{ds.name}] {method:>14} {setting:>12} seed {seed}: "
              + ", ".join(f"{k}={v:.3f}" for k, v in shown.items() if v is not None)
              + (f"  wall {out['seconds']:.1f}s" if out.get("seconds") is not None else "")
              + (f"  ERROR {note}" if out.get("error") else ""), flush=True)

    settings = _names(args.settings)
    if not ds.anchors and "anchors" in settings:
        print(f"[{ds.name}] setting 'anchors' skipped: no truth pairing in this data set", flush=True)
        settings = [s for s in settings if s != "anchors"]
    floors = [f for f in _names(args.floors) if not (args.no_reference and f == "none")]
    methods = _names(args.methods)
    # every run is listed first (run folders linked here, not concurrently), then spawned,
    # --jobs at a time; rows are recorded in the listed order
    runs: list[tuple[str, str, str, int, dict]] = []  # (row name, setting, kind, seed, config)
    for setting in [s for s in SETTINGS if s in settings]:
        cfg = share_inputs(setting_config(config, setting, anchors), f"bench_{setting}")
        runs += [(method, setting, "cellbridge", seed, cfg) for method in methods for seed in seeds]
    # the floors use no supervision: they belong to the unsupervised block
    for floor in floors:
        if floor == "none":
            cfg = share_inputs(setting_config(config, "unsupervised", anchors), "bench_none")
            runs += [("none", "unsupervised", "cellbridge", seed, cfg) for seed in seeds]
        else:
            runs += [(floor, "unsupervised", "floor", seed, config) for seed in (seeds if floor != "pca" else seeds[:1])]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(spawn, ds, kind, name, seed, cfg, workdir, args) for name, _, kind, seed, cfg in runs]
        for (name, setting, _, seed, _), future in zip(runs, futures, strict=True):
            record(name, setting, seed, future.result())
    caps = (f"caps: outer GW iterations {args.peer_max_iter or 'as each peer defaults (1000)'}, "
            f"SCOT+ Sinkhorn iterations {args.scotplus_nits_uot or 'its default (100000)'}, "
            f"self-tuning budget {args.peer_time_budget:.0f} s, timeout {args.peer_timeout or 'none'} s")
    for peer in peers:
        if peer in ENV_PEERS and not PEERS_PYTHON.exists() and not args.reuse_peers:
            record(peer, "unsupervised", 0, {"error": f"peers environment {PEERS_PYTHON} absent (build it as the "
                                              "header of benchmarks/requirements-peers.txt says)"})
            continue
        record(peer, "unsupervised", 0, {**spawn(ds, "peer", peer, 0, config, workdir, args), "caps": caps})
    header = (f"{'SMOKE (tiny, not a result): ' if args.smoke else ''}held-out {int(TEST_FRACTION * 100)}% of the "
              f"cells scored; cellbridge at package defaults{overrides_note(args.set)}; peers with the caps in their run notes; "
              f"{dt.date.today().isoformat()}; {machine()}.")
    tsv, md = write_tables(ds, long, notes, Path(args.out), header=header, update=args.update)
    print(md.read_text())
    print(f"[{ds.name}] written to {tsv} and {md} ({time.perf_counter() - t_start:.0f} s)", flush=True)
    return tsv, md


#: the thread-count variables of the numerical libraries a child uses (torch reads the config)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def share_cpus(jobs: int) -> int:
    """Threads per child so that ``jobs`` children at a time fit the CPUs: ``CELLBRIDGE_THREADS``
    when set, else the CPUs divided by ``jobs`` (at least one); children inherit it, for torch
    (the training config) and for the BLAS of the prior (the ``THREAD_VARIABLES`` not set already).

    Two children of two threads each on two CPUs made PBMC's training epochs take 440-480 s
    against 50 s for the same run alone (December 2026): the costs the table reports are only
    comparable when the CPUs are not oversubscribed.
    """
    threads = int(os.environ.get("CELLBRIDGE_THREADS") or max(1, (os.cpu_count() or 1) // max(1, jobs)))
    os.environ["CELLBRIDGE_THREADS"] = str(threads)
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))
    return threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA_ROOT), help="folder holding the data sets (default ../shared/data)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma separated: scicar, pbmc, scnmt")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="cellbridge / random-floor seeds")
    parser.add_argument("--methods", default=",".join(METHODS), help="cellbridge alignment methods ('' for none)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="unsupervised, labels, anchors")
    parser.add_argument("--floors", default=",".join(FLOORS), help="none, random, pca ('' for none)")
    parser.add_argument("--peers", default=None, help="peer methods (default: every peer of each data set; '' for none)")
    parser.add_argument("--peer-max-iter", type=int, default=None, help="cap on the GW peers' outer iterations")
    parser.add_argument("--scotplus-nits-uot", type=int, default=None,
                        help="cap on SCOT+'s Sinkhorn iterations per OT problem (its default 100000)")
    parser.add_argument("--peer-time-budget", type=float, default=1800.0, help="self-tuning budget per peer (s)")
    parser.add_argument("--peer-timeout", type=float, default=0, help="kill a peer run after this many s (0: never)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key of the cellbridge rows (dotted, YAML value; repeatable), "
                             "e.g. alignment.correspondence.n_restarts=5")
    parser.add_argument("--jobs", type=int, default=1,
                        help="cellbridge and floor runs at a time (each a child process; wall times then share the CPUs)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    parser.add_argument("--reuse-peers", metavar="DIR",
                        help="score peer results DIR[/<data set>]/{peer}.npz made from identical inputs beside them")
    parser.add_argument("--update", action="store_true", help="merge into existing tables instead of replacing them")
    parser.add_argument("--reuse-results", action="store_true",
                        help="keep the result of every run already in --workdir (same data set, kind, row, run and seed) "
                             "instead of running it again: resumes an interrupted benchmark")
    parser.add_argument("--no-reference", action="store_true", help="skip the 'none' floor")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny: few cells, 2 epochs, seed 0, wasserstein unsupervised (+ anchors on sci-CAR), "
                             "floors, SCOT defaults with 20 outer iterations")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "NAME"), help=argparse.SUPPRESS)
    parser.add_argument("--child-seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.kind, args.name = args.child
        args.dataset = args.datasets
        run_child(args)
        return
    unknown = [d for d in _names(args.datasets) if d not in DATASETS]
    if unknown:
        sys.exit(f"unknown data set(s) {unknown}; choose from {', '.join(DATASETS)}")
    share_cpus(args.jobs)
    if args.smoke:
        args.methods, args.settings, args.seeds = "wasserstein", "unsupervised,anchors", "0"
        args.peers = "scot_default" if args.peers is None else args.peers
        args.peer_max_iter = args.peer_max_iter or SMOKE_PEER_MAX_ITER
    root = Path(args.data).resolve()
    workroot = Path(args.workdir or tempfile.mkdtemp(prefix="cellbridge-realdata-")).resolve()
    workroot.mkdir(parents=True, exist_ok=True)
    args.out = str(Path(args.out).resolve())
    written = [run_dataset(DATASETS[name], args, root, workroot) for name in _names(args.datasets)]
    if not any(written):
        sys.exit(f"none of the data sets {args.datasets} found under {root} (see ../shared/data/README.md)")


if __name__ == "__main__":
    main()
