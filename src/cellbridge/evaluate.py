"""Score a trained model's latents and translations on held-out cells.

:func:`evaluate_run` gathers every metric of :mod:`cellbridge.metrics` that the available
information allows and returns one flat ``{name: value}`` dict, plus the same metrics
for the trivial predictor (the training mean of the target) so that every number has a
floor beside it. What cannot be computed (no truth table, no labels, too few held-out
cells) is skipped with the reason recorded in ``"skipped"`` and logged, not an error.

Metric names are ``<metric>_<domains>``, e.g. ``foscttm_image_rna`` (pairs are listed
in sorted order) or ``pearson_gene_top_image_to_rna`` (translations read source ``_to_``
target).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import metrics as M
from .truth import cell_ids_for, paired_indices

logger = logging.getLogger("cellbridge")

LATENT_KEY = "X_cellbridge"
#: the metrics that decide a comparison; the first ones are what the report shows on top
HEADLINE_METRICS = (
    "foscttm",
    "partner5",
    "transfer_accuracy",
    "pearson_gene_top",
    "morph_r",
    "domain_entropy",
)


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def held_out_mask(adata: ad.AnnData, split_key: str = "split") -> tuple[np.ndarray, bool]:
    """Boolean mask of held-out cells, and whether a held-out split existed at all.

    Without an ``obs[split_key]`` column holding ``"test"``, every cell is scored (the
    alignment never saw pairs, so this is still honest, but not held out).
    """
    if split_key in adata.obs and (adata.obs[split_key].astype(str) == "test").any():
        return (adata.obs[split_key].astype(str) == "test").to_numpy(), True
    return np.ones(adata.n_obs, dtype=bool), False


def labels_for(adata: ad.AnnData, label_key: str | None, ids: np.ndarray | None, truth: pd.DataFrame | None):
    """Labels for evaluation: obs[label_key], else the truth table's cell_type by cell id."""
    if label_key and label_key in adata.obs and adata.obs[label_key].notna().any():
        return adata.obs[label_key].astype(object).where(adata.obs[label_key].notna(), None).to_numpy()
    if truth is not None and ids is not None and "cell_type" in truth:
        lookup = truth.dropna(subset=["cell_id"]).drop_duplicates("cell_id").set_index("cell_id")["cell_type"]
        return np.array([lookup.get(i) if i is not None else None for i in ids], dtype=object)
    return None


class _Scores:
    """Collects metrics and skip reasons."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.trivial: dict[str, float] = {}
        self.skipped: list[str] = []

    def skip(self, what: str, why: str) -> None:
        msg = f"{what}: {why}"
        logger.info("skipped %s", msg)
        self.skipped.append(msg)


def evaluate_run(
    latents: Mapping[str, ad.AnnData],
    *,
    translations: Mapping[tuple[str, str], ad.AnnData] | None = None,
    prepared: Mapping[str, ad.AnnData] | None = None,
    truth: pd.DataFrame | None = None,
    label_key: str | None = None,
    latent_dim: int | None = None,
    k_values: tuple[int, ...] = (5, 50),
    label_k: int = 5,
    entropy_k: int = 30,
    top_genes: int = 100,
    split_key: str = "split",
) -> dict[str, Any]:
    """All metrics of one trained model on held-out cells.

    Parameters
    ----------
    latents
        Per domain, the AnnData written by training (``obsm["X_cellbridge"]``, obs with
        the split and labels).
    translations
        ``(source, target) -> AnnData`` written by translation for the same cells as
        ``latents[source]``; ``(d, d)`` entries are reconstructions (compression metrics).
    prepared
        The prepared domains (the measured values translations are scored against).
    truth
        Truth table (:func:`cellbridge.truth.read_truth`) or None.
    label_key
        Shared label column.
    latent_dim
        Latent size, for the PCA baseline at equal size.
    k_values, label_k, entropy_k
        Neighbourhood sizes of partner-in-kNN, label transfer and domain entropy.
    top_genes
        Size of the "most variable features" set (by variance of the measured values
        over training cells) for the headline translation correlation.
    split_key
        obs column marking held-out (``"test"``) cells.
    """
    translations = dict(translations or {})
    prepared = dict(prepared or {})
    s = _Scores()
    domains = list(latents)
    masks, held_out = {}, {}
    for d in domains:
        masks[d], held_out[d] = held_out_mask(latents[d], split_key)
        if LATENT_KEY not in latents[d].obsm:
            raise ValueError(f"domain {d!r}: obsm[{LATENT_KEY!r}] is missing; pass the training outputs")
    z = {d: np.asarray(latents[d].obsm[LATENT_KEY], dtype=np.float64)[masks[d]] for d in domains}
    obs = {d: latents[d].obs.loc[masks[d]] for d in domains}
    ids = {d: cell_ids_for(obs[d], truth) for d in domains} if truth is not None else None
    if truth is None:
        s.skip("alignment with known pairs and translation accuracy", "no truth table configured")
    labels = {d: labels_for(latents[d][masks[d]], label_key, ids[d] if ids else None, truth) for d in domains}

    _alignment_scores(s, z, ids, k_values)
    _label_scores(s, z, labels, label_k)
    _mixing_scores(s, z, entropy_k)
    if ids is not None:
        for (src, tgt), tr in translations.items():
            if src != tgt and tgt in prepared:
                _translation_scores(s, src, tgt, tr, masks[src], ids[src], prepared[tgt], truth, top_genes, split_key)
    for d in domains:
        if (d, d) in translations and d in prepared:
            _compression_scores(s, d, translations[(d, d)], masks[d], prepared[d], latent_dim, split_key)
    return {
        "held_out": {d: {"n_cells": int(masks[d].sum()), "split": held_out[d]} for d in domains},
        "metrics": s.values,
        "trivial": s.trivial,
        "skipped": s.skipped,
    }


def _alignment_scores(s: _Scores, z, ids, k_values) -> None:
    if ids is None:
        return
    for a, b in itertools.combinations(sorted(z), 2):
        ia, ib = paired_indices(ids[a], ids[b])
        tag = f"{a}_{b}"
        if len(ia) < 3:
            s.skip(f"foscttm_{tag}", f"only {len(ia)} truly paired held-out cells")
            continue
        s.values[f"n_pairs_{tag}"] = float(len(ia))
        s.values[f"foscttm_{tag}"] = M.foscttm(z[a][ia], z[b][ib])
        for k in k_values:
            if k < len(ia):
                s.values[f"partner{k}_{tag}"] = M.partner_in_knn(z[a][ia], z[b][ib], k=k)


def _label_scores(s: _Scores, z, labels, k) -> None:
    have = {d: lab for d, lab in labels.items() if lab is not None and pd.notna(pd.Series(lab)).sum() > k}
    missing = sorted(set(z) - set(have))
    if missing:
        s.skip("label transfer for " + ", ".join(missing), "no labels in these domains")
    for a, b in itertools.permutations(sorted(have), 2):
        ka, kb = pd.notna(pd.Series(have[a])).to_numpy(), pd.notna(pd.Series(have[b])).to_numpy()
        res = M.knn_label_transfer(
            z[a][ka], have[a][ka].astype(str), z[b][kb], have[b][kb].astype(str), k=k
        )
        s.values[f"transfer_accuracy_{a}_to_{b}"] = res["accuracy"]
        s.values[f"transfer_f1_{a}_to_{b}"] = res["macro_f1"]
    if have:
        zz = np.vstack([z[d][pd.notna(pd.Series(have[d])).to_numpy()] for d in have])
        ll = np.concatenate([have[d][pd.notna(pd.Series(have[d])).to_numpy()].astype(str) for d in have])
        if len(set(ll)) > 1:
            s.values["silhouette_label"] = M.silhouette_by_label(zz, ll)


def _mixing_scores(s: _Scores, z, k) -> None:
    zz = np.vstack(list(z.values()))
    dom = np.concatenate([[d] * len(z[d]) for d in z])
    if min(len(v) for v in z.values()) < 2 or len(zz) <= k:
        s.skip("mixing", "too few held-out cells")
        return
    s.values["domain_entropy"] = M.domain_entropy(zz, dom, k=k)
    s.values["silhouette_by_domain"] = M.silhouette_by_domain(zz, dom)


def _train_rows(adata: ad.AnnData, split_key: str) -> np.ndarray:
    mask, had = held_out_mask(adata, split_key)
    return ~mask if had else np.ones(adata.n_obs, dtype=bool)


def _translation_scores(s, src, tgt, tr, src_mask, src_ids, target, truth, top_genes, split_key) -> None:
    tag = f"{src}_to_{tgt}"
    if tr.n_obs == src_mask.size:  # translation of every source cell: keep the held-out ones
        tr = tr[src_mask]
    tgt_ids = cell_ids_for(target.obs, truth)
    ip, it = paired_indices(src_ids, tgt_ids)
    if len(ip) < 3:
        s.skip(tag, f"only {len(ip)} held-out source cells have a measured partner in {tgt}")
        return
    s.values[f"n_pairs_{tag}"] = float(len(ip))
    train = _train_rows(target, split_key)
    if "image" in target.obsm and "image" in tr.obsm:
        pred_img = np.asarray(tr.obsm["image"], dtype=np.float64)[ip]
        true_img = np.asarray(target.obsm["image"], dtype=np.float64)[it]
        mean_img = np.asarray(target.obsm["image"], dtype=np.float64)[train].mean(axis=0)
        trivial = np.broadcast_to(mean_img, true_img.shape)
        for name, fn in (("pixel_mse", M.pixel_mse), ("ssim", lambda p, t: M.ssim_mean(p, t, data_range=1.0))):
            s.values[f"{name}_{tag}"] = fn(pred_img, true_img)
            s.trivial[f"{name}_{tag}"] = fn(trivial, true_img)
        r = M.per_feature_correlation(_dense(tr.X)[ip], _dense(target.X)[it])
        s.values[f"morph_r_{tag}"] = M.summarize(r)["mean"]
        return
    pred = _dense(tr.X)[ip]
    true = _dense(target.X)[it]
    mean = _dense(target.X)[train].mean(axis=0, keepdims=True)
    trivial = np.broadcast_to(mean, true.shape)
    variance = _dense(target.X)[train].var(axis=0)
    top = np.argsort(-variance)[: min(top_genes, variance.size)]
    r = M.per_feature_correlation(pred, true)
    s.values[f"pearson_gene_{tag}"] = M.summarize(r)["mean"]
    s.values[f"pearson_gene_top_{tag}"] = M.summarize(r[top])["mean"]
    s.values[f"spearman_gene_{tag}"] = M.summarize(M.per_feature_correlation(pred, true, method="spearman"))["mean"]
    s.values[f"pearson_cell_{tag}"] = M.summarize(M.per_cell_correlation(pred, true))["mean"]
    s.trivial[f"pearson_cell_{tag}"] = M.summarize(M.per_cell_correlation(trivial, true))["mean"]
    s.values[f"rmse_{tag}"] = M.rmse(pred, true)
    s.trivial[f"rmse_{tag}"] = M.rmse(trivial, true)
    if "binary" in target.layers:
        scores = _dense(tr.layers["probability"])[ip] if "probability" in tr.layers else pred
        truth_bin = _dense(target.layers["binary"])[it] > 0
        if truth_bin.any() and not truth_bin.all():
            s.values[f"auroc_{tag}"] = M.auroc(scores, truth_bin)


def _compression_scores(s, d, recon, mask, target, latent_dim, split_key) -> None:
    """Held-out reconstruction error of the autoencoder vs PCA at the same latent size."""
    train = _train_rows(target, split_key)
    if recon.n_obs == mask.size:
        recon = recon[mask]
    test_rows = target.obs_names.get_indexer(recon.obs_names)
    if (test_rows < 0).any():
        s.skip(f"compression_{d}", "reconstructed cells are not in the prepared data")
        return
    if "image" in target.obsm and "image" in recon.obsm:
        flat = np.asarray(target.obsm["image"], dtype=np.float64).reshape(target.n_obs, -1)
        pred = np.asarray(recon.obsm["image"], dtype=np.float64).reshape(recon.n_obs, -1)
    else:
        flat, pred = _dense(target.X), _dense(recon.X)
    test = flat[test_rows]
    s.values[f"reconstruction_mse_{d}"] = float(np.mean((pred - test) ** 2))
    s.trivial[f"reconstruction_mse_{d}"] = M.mean_predictor_error(flat[train], test)
    if latent_dim:
        n_comp = int(min(latent_dim, flat[train].shape[0] - 1, flat.shape[1]))
        s.values[f"pca_mse_{d}"] = M.pca_reconstruction_error(flat[train], test, n_components=n_comp)
