"""evaluate_run on hand-made runs with known answers, and skipping without truth/labels."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellbridge.evaluate import evaluate_run, held_out_mask


def _domain(name, z, ids, labels, split, x=None, image=None):
    n = len(ids)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(labels), "split": split},
        index=[f"{name}_{i:03d}" for i in range(n)],
    )
    a = ad.AnnData(X=np.zeros((n, 3), np.float32) if x is None else x.astype(np.float32), obs=obs)
    a.var_names = [f"{name}_f{j}" for j in range(a.n_vars)]
    a.obsm["X_cellbridge"] = z
    if image is not None:
        a.obsm["image"] = image.astype(np.float32)
    a.uns["cellbridge"] = {"domain": name}
    return a


@pytest.fixture
def run():
    rng = np.random.default_rng(0)
    n = 120
    types = np.repeat(["A", "B", "C"], n // 3)
    z = rng.normal(size=(n, 4)) + np.repeat(np.eye(4)[:3] * 6, n // 3, axis=0)
    split = np.where(rng.random(n) < 0.5, "test", "train")
    expr = rng.normal(size=(n, 30)) + z @ rng.normal(size=(4, 30))
    # the domains list the same cells in different orders
    perm = rng.permutation(n)
    rna = _domain("rna", z, np.arange(n), types, split, x=expr)
    img = _domain("image", z[perm], perm, types[perm], split[perm], x=expr[perm][:, :5])
    truth = pd.DataFrame({
        "cell_id": np.concatenate([np.arange(n), perm]).astype(str),
        "domain": ["rna"] * n + ["image"] * n,
        "obs_name": list(rna.obs_names) + list(img.obs_names),
    })
    return rna, img, truth, perm


def test_perfect_alignment_and_copied_translation(run):
    rna, img, truth, perm = run
    # image -> rna translation that returns the measured expression of the true partner
    tr = ad.AnnData(X=rna.X[perm], obs=img.obs.copy(), var=rna.var.copy())
    res = evaluate_run(
        {"rna": rna, "image": img}, translations={("image", "rna"): tr}, prepared={"rna": rna},
        truth=truth, label_key="cell_type", top_genes=10,
    )
    m = res["metrics"]
    assert m["foscttm_image_rna"] == pytest.approx(0.0)
    assert m["partner5_image_rna"] == pytest.approx(1.0)
    assert m["transfer_accuracy_rna_to_image"] == pytest.approx(1.0)
    assert m["pearson_gene_image_to_rna"] == pytest.approx(1.0)
    assert m["pearson_gene_top_image_to_rna"] == pytest.approx(1.0)
    assert m["rmse_image_to_rna"] == pytest.approx(0.0, abs=1e-6)
    assert res["trivial"]["rmse_image_to_rna"] > 0.5
    assert res["held_out"]["rna"]["split"] and res["held_out"]["rna"]["n_cells"] == (rna.obs.split == "test").sum()


def test_random_latents_score_chance(run):
    rna, img, truth, _ = run
    img = img.copy()
    img.obsm["X_cellbridge"] = np.random.default_rng(1).normal(size=img.obsm["X_cellbridge"].shape)
    m = evaluate_run({"rna": rna, "image": img}, truth=truth, label_key="cell_type")["metrics"]
    assert 0.35 < m["foscttm_image_rna"] < 0.65
    assert m["transfer_accuracy_rna_to_image"] < 0.6


def test_without_truth_or_labels_metrics_are_skipped_with_reasons(run):
    rna, img, _, _ = run
    rna.obs = rna.obs.drop(columns="cell_type")
    res = evaluate_run({"rna": rna, "image": img}, truth=None, label_key="cell_type")
    assert not any(k.startswith("foscttm") for k in res["metrics"])
    assert any("no truth table" in s for s in res["skipped"])
    assert any("label transfer" in s and "rna" in s for s in res["skipped"])
    assert "domain_entropy" in res["metrics"]


def test_reconstruction_is_compared_with_pca(run):
    rna, img, truth, _ = run
    recon = ad.AnnData(X=rna.X.copy(), obs=rna.obs.copy(), var=rna.var.copy())
    res = evaluate_run(
        {"rna": rna, "image": img}, translations={("rna", "rna"): recon}, prepared={"rna": rna},
        truth=truth, latent_dim=2,
    )
    m = res["metrics"]
    assert m["reconstruction_mse_rna"] == pytest.approx(0.0, abs=1e-10)
    assert 0 < m["pca_mse_rna"] < res["trivial"]["reconstruction_mse_rna"]


def test_held_out_mask_falls_back_to_all_cells():
    a = ad.AnnData(X=np.zeros((4, 1)))
    mask, held = held_out_mask(a)
    assert mask.all() and not held


def test_image_translation_without_morphology_scores_crops_and_skips_morph_r(run):
    rna, img, truth, perm = run
    rng = np.random.default_rng(1)
    crops = rng.random((len(img), 8, 8)).astype(np.float32)
    img.obsm["image"] = crops
    inv = np.argsort(perm)  # rna cell i is image row inv[i]
    # rna -> image translation giving the true partner's crops and no morphology features
    tr = ad.AnnData(X=np.zeros((len(rna), 0), np.float32), obs=rna.obs.copy())
    tr.obsm["image"] = crops[inv]
    res = evaluate_run({"rna": rna, "image": img}, translations={("rna", "image"): tr}, prepared={"image": img}, truth=truth)
    assert res["metrics"]["pixel_mse_rna_to_image"] == pytest.approx(0.0)
    assert "morph_r_rna_to_image" not in res["metrics"]
    assert any(s.startswith("morph_r_rna_to_image: no morphology features") for s in res["skipped"])
