"""Score a trained model's latents and translations on held-out cells.

:func:`evaluate_run` gathers every metric of :mod:`cellbridge.metrics` that the available
information allows and returns one flat ``{name: value}`` dict, plus the same metrics
for the trivial predictor (the training mean of the target) so that every number has a
floor beside it. What cannot be computed (no truth table, no labels, too few held-out
cells) is skipped with the reason recorded in ``"skipped"`` and logged, not an error.

Metric names are ``<metric>_<domains>``, e.g. ``foscttm_image_rna`` (pairs are listed
in sorted order) or ``pearson_gene_top_image_to_rna`` (translations read source ``_to_``
target).

Every metric is computed on at most ``max_cells`` cells of each set it reads (default
:data:`MAX_CELLS`): the truly paired held-out cells of two domains (alignment, translation),
the held-out cells of one domain (labels, mixing, reconstruction) or its training cells
(the trivial predictor and the PCA baseline). A larger set is replaced by a seeded random
sample (:func:`sample_rows`; pairs are sampled as pairs), and ``n_sampled_<set>`` in the
metrics gives the sample size (``n_sampled_image_rna``, ``n_sampled_image_to_rna``,
``n_sampled_rna``, ``n_sampled_train_rna``). Smaller sets are used whole, with exactly the
values an evaluation without a cap gives. Above the cap, neighbourhoods (partner-in-kNN,
label transfer, mixing entropy) are taken among the sampled cells: ``k`` nearest of
``max_cells``, not of every held-out cell.
"""

from __future__ import annotations

import itertools
import logging
import zlib
from collections.abc import Mapping
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import metrics as M
from .contract import LATENT_KEY, SPLIT_KEY
from .truth import cell_ids_for, paired_indices

logger = logging.getLogger("cellbridge")

#: the metrics that decide a comparison; the first ones are what the report shows on top
HEADLINE_METRICS = (
    "foscttm",
    "partner5",
    "transfer_accuracy",
    "pearson_gene_top",
    "morph_r",
    "domain_entropy",
)
#: Default cap on the cells of one set a metric is computed on (see :func:`sample_rows`).
#: The alignment metrics cost ``max_cells**2`` distances: at 5,000 each metric of a pair
#: of domains takes under a second on one core and the whole evaluation of a million cells
#: per domain about 12 s (``benchmarks/evaluate_scaling.py``); the FOSCTTM of 5,000 sampled
#: pairs varies by about 0.003 (SD over samples, at FOSCTTM 0.15), well inside the 0.01
#: that separates methods; and 5,000 was already the silhouettes' and the figure's subsample.
MAX_CELLS = 5000


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def sample_rows(n_rows: int, max_cells: int, *, seed: int = 0, key: str = "") -> np.ndarray:
    """Positions of the rows a metric is computed on: all of them, or a seeded random sample.

    Parameters
    ----------
    n_rows
        Size of the set (held-out cells of a domain, truly paired cells of two domains).
    max_cells
        At most this many positions are returned.
    seed, key
        The sample is drawn by ``numpy.random.default_rng([seed, zlib.crc32(key)])``:
        the same for the same ``seed`` in every process, and independent between the
        sets of one evaluation, which ``key`` names (e.g. ``"image_rna"``).

    Returns
    -------
    numpy.ndarray
        Increasing positions: ``arange(n_rows)`` when ``n_rows <= max_cells`` (nothing is
        sampled), else ``max_cells`` distinct positions drawn uniformly at random.
    """
    if isinstance(max_cells, bool) or not isinstance(max_cells, (int, np.integer)) or max_cells < 1:
        raise ValueError(f"max_cells must be a positive integer, got {max_cells!r}")
    if n_rows <= max_cells:
        return np.arange(n_rows)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return np.sort(rng.choice(n_rows, size=max_cells, replace=False))


def take_rows(x, rows: np.ndarray):
    """Rows ``rows`` (distinct positions, any order) of an in-memory or on-disk (backed) matrix.

    An on-disk matrix is read in increasing row order, which h5py requires, and only
    those rows are read; the result is then put back in the order asked for.
    """
    if isinstance(x, np.ndarray) or sp.issparse(x):
        return x[rows]
    order = np.argsort(rows, kind="stable")
    block = x[rows[order]]
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return block[inverse]


def held_out_mask(adata: ad.AnnData, split_key: str = SPLIT_KEY) -> tuple[np.ndarray, bool]:
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
        # One vectorised lookup (a loop over a million ids takes seconds); unknown ids are None.
        found = lookup.reindex(pd.Index(ids, dtype=object)).to_numpy(dtype=object)
        return np.where(pd.isna(found), None, found)
    return None


class _Scores:
    """Collects metrics and skip reasons, and draws the cell samples (:func:`sample_rows`)."""

    def __init__(self, max_cells: int, seed: int) -> None:
        self.values: dict[str, float] = {}
        self.trivial: dict[str, float] = {}
        self.skipped: list[str] = []
        sample_rows(0, max_cells)  # a bad cap fails here, before any work
        self.max_cells = max_cells
        self.seed = seed

    def sample(self, key: str, n_rows: int) -> np.ndarray:
        """Positions of the rows of set ``key`` to score (:func:`sample_rows`), recorded."""
        rows = sample_rows(n_rows, self.max_cells, seed=self.seed, key=key)
        self.record_sample(key, rows.size, n_rows)
        return rows

    def record_sample(self, key: str, n_used: int, n_rows: int) -> None:
        """Give ``n_sampled_<key>`` when fewer than all ``n_rows`` rows are scored."""
        if n_used < n_rows:
            if f"n_sampled_{key}" not in self.values:
                logger.info("%s: metrics on a random sample of %d of %d cells", key, n_used, n_rows)
            self.values[f"n_sampled_{key}"] = float(n_used)

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
    split_key: str = SPLIT_KEY,
    max_cells: int = MAX_CELLS,
    sample_seed: int = 0,
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
        They may be opened backed (``anndata.read_h5ad(path, backed="r")``): only the
        rows scored are read from ``X``.
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
    max_cells
        Cap on the cells of each set a metric reads; larger sets are sampled
        (:func:`sample_rows`, sizes in ``n_sampled_*``). Also the silhouettes' subsample.
    sample_seed
        Seed of those samples.

    Returns
    -------
    dict
        ``held_out`` (per domain: ``n_cells``, ``split``), ``sampling`` (``max_cells``,
        ``seed``), ``metrics``, ``trivial`` (the training-mean predictor) and ``skipped``.
    """
    translations = dict(translations or {})
    prepared = dict(prepared or {})
    s = _Scores(max_cells, sample_seed)
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
    # Labels and mixing read one sample of each domain's held-out cells.
    rows = {d: s.sample(d, len(z[d])) for d in domains}
    z_rows = {d: z[d][rows[d]] for d in domains}
    label_rows = {d: None if labels[d] is None else labels[d][rows[d]] for d in domains}
    _label_scores(s, z_rows, label_rows, label_k)
    _mixing_scores(s, z_rows, entropy_k)
    if ids is not None:
        for (src, tgt), tr in translations.items():
            if src != tgt and tgt in prepared:
                _translation_scores(s, src, tgt, tr, masks[src], ids[src], prepared[tgt], truth, top_genes, split_key)
    for d in domains:
        if (d, d) in translations and d in prepared:
            _compression_scores(s, d, translations[(d, d)], masks[d], prepared[d], latent_dim, split_key)
    return {
        "held_out": {d: {"n_cells": int(masks[d].sum()), "split": held_out[d]} for d in domains},
        "sampling": {"max_cells": int(max_cells), "seed": int(sample_seed)},
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
        keep = s.sample(tag, len(ia))  # pairs stay pairs: one sample of positions for both
        za, zb = z[a][ia[keep]], z[b][ib[keep]]
        s.values[f"foscttm_{tag}"] = M.foscttm(za, zb)
        for k in k_values:
            if k < len(keep):
                s.values[f"partner{k}_{tag}"] = M.partner_in_knn(za, zb, k=k)


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
            s.values["silhouette_label"] = M.silhouette_by_label(zz, ll, max_cells=s.max_cells, seed=s.seed)


def _mixing_scores(s: _Scores, z, k) -> None:
    zz = np.vstack(list(z.values()))
    dom = np.concatenate([[d] * len(z[d]) for d in z])
    if min(len(v) for v in z.values()) < 2 or len(zz) <= k:
        s.skip("mixing", "too few held-out cells")
        return
    s.values["domain_entropy"] = M.domain_entropy(zz, dom, k=k)
    s.values["silhouette_by_domain"] = M.silhouette_by_domain(zz, dom, max_cells=s.max_cells, seed=s.seed)


def _train_rows(adata: ad.AnnData, split_key: str) -> np.ndarray:
    mask, had = held_out_mask(adata, split_key)
    return ~mask if had else np.ones(adata.n_obs, dtype=bool)


def _sampled_train_rows(s: _Scores, adata: ad.AnnData, domain: str, split_key: str) -> np.ndarray:
    """Positions of the training cells of ``domain`` that the trivial predictor and PCA are fitted on."""
    train = np.flatnonzero(_train_rows(adata, split_key))
    return train[s.sample(f"train_{domain}", train.size)]


def _rows_scored(translation: ad.AnnData, source_mask: np.ndarray) -> np.ndarray:
    """Rows of ``translation`` that hold the held-out source cells, in their order.

    A translation of every source cell is narrowed to the held-out ones; one that has
    exactly those rows is used as it is.
    """
    if translation.n_obs == source_mask.size:
        return np.flatnonzero(source_mask)
    return np.arange(translation.n_obs)


def translation_pairs(
    translation: ad.AnnData,
    source_mask: np.ndarray,
    source_ids: np.ndarray,
    target: ad.AnnData,
    truth: pd.DataFrame,
    *,
    max_cells: int = MAX_CELLS,
    seed: int = 0,
    key: str = "",
) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of a translation and of its target that are the same held-out cells, sampled as pairs.

    Parameters
    ----------
    translation
        Translated AnnData of every source cell, or of the held-out ones only.
    source_mask
        Held-out mask of the source domain (:func:`held_out_mask`).
    source_ids
        True cell ids of the held-out source cells (:func:`cellbridge.truth.cell_ids_for`).
    target
        The prepared target domain.
    truth
        Truth table.
    max_cells, seed, key
        At most ``max_cells`` pairs are kept (:func:`sample_rows`; ``key`` is
        ``"<source>_to_<target>"`` in :func:`evaluate_run`).

    Returns
    -------
    translation_rows, target_rows
        Positions, row ``i`` of each being the same cell.
    n_pairs
        How many truly paired held-out cells there are before sampling.
    """
    ip, it = paired_indices(source_ids, cell_ids_for(target.obs, truth))
    keep = sample_rows(len(ip), max_cells, seed=seed, key=key)
    return _rows_scored(translation, source_mask)[ip[keep]], it[keep], len(ip)


def _translation_scores(s, src, tgt, tr, src_mask, src_ids, target, truth, top_genes, split_key) -> None:
    tag = f"{src}_to_{tgt}"
    ip, it, n_pairs = translation_pairs(
        tr, src_mask, src_ids, target, truth, max_cells=s.max_cells, seed=s.seed, key=tag
    )
    if n_pairs < 3:
        s.skip(tag, f"only {n_pairs} held-out source cells have a measured partner in {tgt}")
        return
    s.values[f"n_pairs_{tag}"] = float(n_pairs)
    s.record_sample(tag, len(ip), n_pairs)
    train = _sampled_train_rows(s, target, tgt, split_key)
    if "image" in target.obsm and "image" in tr.obsm:
        pred_img = np.asarray(take_rows(tr.obsm["image"], ip), dtype=np.float64)
        true_img = np.asarray(take_rows(target.obsm["image"], it), dtype=np.float64)
        mean_img = np.asarray(take_rows(target.obsm["image"], train), dtype=np.float64).mean(axis=0)
        trivial = np.broadcast_to(mean_img, true_img.shape)
        for name, fn in (("pixel_mse", M.pixel_mse), ("ssim", lambda p, t: M.ssim_mean(p, t, data_range=1.0))):
            s.values[f"{name}_{tag}"] = fn(pred_img, true_img)
            s.trivial[f"{name}_{tag}"] = fn(trivial, true_img)
        if tr.n_vars == 0:
            s.skip(f"morph_r_{tag}", "no morphology features in the translation (translation.morphology: false)")
            return
        r = M.per_feature_correlation(_dense(take_rows(tr.X, ip)), _dense(take_rows(target.X, it)))
        s.values[f"morph_r_{tag}"] = M.summarize(r)["mean"]
        return
    pred = _dense(take_rows(tr.X, ip))
    true = _dense(take_rows(target.X, it))
    train_x = _dense(take_rows(target.X, train))
    mean = train_x.mean(axis=0, keepdims=True)
    trivial = np.broadcast_to(mean, true.shape)
    variance = train_x.var(axis=0)
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
        scores = _dense(take_rows(tr.layers["probability"], ip)) if "probability" in tr.layers else pred
        truth_bin = _dense(take_rows(target.layers["binary"], it)) > 0
        if truth_bin.any() and not truth_bin.all():
            s.values[f"auroc_{tag}"] = M.auroc(scores, truth_bin)


def _compression_scores(s, d, recon, mask, target, latent_dim, split_key) -> None:
    """Held-out reconstruction error of the autoencoder vs PCA at the same latent size."""
    held = _rows_scored(recon, mask)
    # The same sample as the domain's label and mixing metrics (same key, same count).
    held = held[s.sample(d, held.size)]
    test_rows = target.obs_names.get_indexer(recon.obs_names[held])
    if (test_rows < 0).any():
        s.skip(f"compression_{d}", "reconstructed cells are not in the prepared data")
        return
    train = _sampled_train_rows(s, target, d, split_key)
    if "image" in target.obsm and "image" in recon.obsm:
        def flat_rows(x, rows):
            return np.asarray(take_rows(x, rows), dtype=np.float64).reshape(len(rows), -1)

        test, train_x = flat_rows(target.obsm["image"], test_rows), flat_rows(target.obsm["image"], train)
        pred = flat_rows(recon.obsm["image"], held)
    else:
        test, train_x = _dense(take_rows(target.X, test_rows)), _dense(take_rows(target.X, train))
        pred = _dense(take_rows(recon.X, held))
    s.values[f"reconstruction_mse_{d}"] = float(np.mean((pred - test) ** 2))
    s.trivial[f"reconstruction_mse_{d}"] = M.mean_predictor_error(train_x, test)
    if latent_dim:
        n_comp = int(min(latent_dim, train_x.shape[0] - 1, train_x.shape[1]))
        s.values[f"pca_mse_{d}"] = M.pca_reconstruction_error(train_x, test, n_components=n_comp)
