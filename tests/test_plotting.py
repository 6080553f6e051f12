"""Tests for cellbridge.plotting: every figure is written from small seeded inputs,
survives NaN and tiny inputs, and rejects mismatched shapes with a clear ValueError."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellbridge import plotting
from cellbridge.metrics import per_feature_correlation
from cellbridge.plotting import (
    best_and_worst,
    domain_colors,
    plot_comparison,
    plot_image_gallery,
    plot_joint_latent,
    plot_latent_shift,
    plot_reconstruction_vs_pca,
    plot_translation_scatter,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def assert_png(path) -> None:
    assert path.exists(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    # atomic write: no temporary file left beside the figure
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]


def crops(rng: np.random.Generator, n: int, size: int = 12) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    radii = rng.uniform(2, size / 2, n)
    d2 = (yy - size / 2) ** 2 + (xx - size / 2) ** 2
    return np.clip(1 - d2[None] / radii[:, None, None] ** 2, 0, 1)


# -------------------------------------------------------------------- best_and_worst


def test_best_and_worst_hand_made_case():
    r = np.array([0.1, 0.9, np.nan, -0.3, 0.5, 0.9, -0.8])
    best, worst = best_and_worst(r, 3, 2)
    # ties (0.9 at 1 and 5) keep the lower index first; NaN is never chosen
    assert best.tolist() == [1, 5, 4]
    assert worst.tolist() == [6, 3]


def test_best_and_worst_never_repeats_when_few_values():
    r = np.array([np.nan, 0.2, 0.7, np.nan])
    best, worst = best_and_worst(r, 3, 3)
    assert best.tolist() == [2, 1]
    assert worst.tolist() == []
    best, worst = best_and_worst(r, 1, 3)
    assert best.tolist() == [2] and worst.tolist() == [1]
    assert [x.size for x in best_and_worst(np.full(4, np.nan), 2, 2)] == [0, 0]
    assert [x.size for x in best_and_worst(r, 0, 0)] == [0, 0]


def test_best_and_worst_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        best_and_worst(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="n_best"):
        best_and_worst([0.1], -1, 1)


# ---------------------------------------------------------------------- domain colours


def test_domain_colors_are_stable_and_distinct():
    a = domain_colors(["rna", "atac", "image"])
    b = domain_colors(["image", "rna"])
    assert a["rna"] == b["rna"] and a["image"] == b["image"]
    many = domain_colors(["rna", "rna2", "nuclei", "atac", "other", "x"])
    assert len(set(many.values())) == 6


# ---------------------------------------------------------------------- joint latent


def test_plot_joint_latent_writes_png_with_nan_and_missing_labels(rng, tmp_path):
    latents = {"rna": rng.normal(size=(30, 4)), "atac": rng.normal(size=(20, 4)), "image": rng.normal(size=(15, 4))}
    latents["image"][0, 1] = np.nan
    labels = {"rna": rng.choice(["B", "T"], 30), "atac": np.array(["B", None] * 10, dtype=object)}
    out = plot_joint_latent(
        latents, labels=labels, path=tmp_path / "joint.png", method="mmd", embedding="pca", max_cells=40
    )
    assert out == tmp_path / "joint.png"
    assert_png(out)


def test_plot_joint_latent_small_and_unlabelled(rng, tmp_path):
    # fewer cells than UMAP needs: falls back to PCA without importing umap
    latents = {"rna": rng.normal(size=(3, 2)), "atac": rng.normal(size=(2, 2))}
    assert_png(plot_joint_latent(latents, path=tmp_path / "small.png"))
    assert_png(plot_joint_latent({"rna": rng.normal(size=(4, 1))}, path=tmp_path / "one_dim.png", embedding="pca"))


def test_plot_joint_latent_umap_branch_and_fallback(rng, tmp_path, monkeypatch):
    calls = {}

    class FakeUMAP:
        def __init__(self, **kwargs):
            calls.update(kwargs)

        def fit_transform(self, z):
            return z[:, :2]

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    latents = {"rna": rng.normal(size=(30, 3)), "atac": rng.normal(size=(30, 3))}
    assert_png(plot_joint_latent(latents, path=tmp_path / "umap.png", seed=3))
    assert calls["random_state"] == 3 and calls["n_neighbors"] == 15

    monkeypatch.setitem(sys.modules, "umap", None)  # import fails -> PCA with a note
    coords, name, _, note = plotting.latent._embed_2d(latents["rna"], "umap", 0)
    assert name == "PCA" and "not installed" in note and coords.shape == (30, 2)


def test_plot_joint_latent_rejects_mismatches(rng, tmp_path):
    with pytest.raises(ValueError, match="latent dims"):
        plot_joint_latent({"rna": rng.normal(size=(5, 3)), "atac": rng.normal(size=(5, 4))}, path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="labels\\['rna'\\]"):
        plot_joint_latent({"rna": rng.normal(size=(5, 3))}, labels={"rna": ["a"] * 4}, path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="not in latents"):
        plot_joint_latent({"rna": rng.normal(size=(5, 3))}, labels={"atac": ["a"] * 5}, path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="finite"):
        plot_joint_latent({"rna": np.full((3, 2), np.nan)}, path=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --------------------------------------------------------------- translation scatter


def test_plot_translation_scatter_writes_png(rng, tmp_path):
    true = rng.normal(size=(30, 8))
    pred = true + rng.normal(size=(30, 8)) * np.linspace(0.1, 3, 8)
    pred[:, 7] = 0.0  # constant -> undefined r
    names = [f"g{j}" for j in range(8)]
    assert_png(plot_translation_scatter(pred, true, feature_names=names, path=tmp_path / "s.png", title="rna -> atac"))
    r = per_feature_correlation(pred, true)
    assert np.isnan(r[7])
    assert_png(
        plot_translation_scatter(
            sp.csr_matrix(pred), true, feature_names=names, per_feature_r=r,
            path=tmp_path / "sparse.png", max_points=20, n_best=1, n_worst=1,
        )
    )


def test_plot_translation_scatter_few_features_and_all_nan(rng, tmp_path):
    pred, true = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    few = plot_translation_scatter(pred, true, feature_names=["a", "b"], path=tmp_path / "few.png", n_best=3, n_worst=3)
    assert_png(few)
    assert_png(
        plot_translation_scatter(
            np.ones((5, 2)), true, feature_names=["a", "b"], path=tmp_path / "none.png"
        )
    )


def test_plot_translation_scatter_rejects_mismatches(rng, tmp_path):
    pred = rng.normal(size=(6, 3))
    with pytest.raises(ValueError, match="shape"):
        plot_translation_scatter(pred, pred[:, :2], feature_names=["a", "b", "c"], path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="feature_names"):
        plot_translation_scatter(pred, pred, feature_names=["a", "b"], path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="per_feature_r"):
        plot_translation_scatter(
            pred, pred, feature_names=["a", "b", "c"], per_feature_r=[0.1], path=tmp_path / "x.png"
        )


# --------------------------------------------------------------------- image gallery


def test_plot_image_gallery_vector_source(rng, tmp_path):
    pred, true = crops(rng, 4), crops(rng, 4)
    pred[0, 0, 0] = np.nan
    source = rng.poisson(1.0, size=(4, 10)).astype(float)
    source[1, 3] = np.nan
    out = plot_image_gallery(
        pred, source=source, true_crops=true, path=tmp_path / "g.png", n=12,  # more than there are cells
        source_feature_names=[f"gene{j}" for j in range(10)], labels=["B", None, "T", "B"], source_name="rna",
    )
    assert_png(out)
    # sparse source, constant features (no defined z-score), no truth
    assert_png(plot_image_gallery(pred, source=sp.csr_matrix(np.ones((4, 3))), path=tmp_path / "flat.png", n=2))


def test_plot_image_gallery_image_source_and_prediction_only(rng, tmp_path):
    pred = crops(rng, 5)
    source = crops(rng, 5, size=16)  # the source image may have another size
    assert_png(plot_image_gallery(pred, source=source, source_kind="image", path=tmp_path / "i.png", n=2))
    assert_png(plot_image_gallery(pred[:1], path=tmp_path / "one.png", row_labels=["decoded"]))


def test_plot_image_gallery_rejects_mismatches(rng, tmp_path):
    pred = crops(rng, 4)
    with pytest.raises(ValueError, match="true_crops"):
        plot_image_gallery(pred, true_crops=crops(rng, 3), path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="source has 5 cells"):
        plot_image_gallery(pred, source=rng.normal(size=(5, 3)), path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="source_feature_names"):
        plot_image_gallery(pred, source=rng.normal(size=(4, 3)), source_feature_names=["a"], path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="pred_crops must have shape"):
        plot_image_gallery(rng.normal(size=(4, 9)), path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="row_labels"):
        plot_image_gallery(pred, row_labels=["a", "b"], path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="source_kind"):
        plot_image_gallery(pred, source_kind="text", path=tmp_path / "x.png")


# ------------------------------------------------------------------------ comparison


def comparison_table(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for method, base in [("adversarial", 0.1), ("mmd", 0.2), ("none", 0.4), ("trivial", 0.5)]:
        for seed in range(3):
            rows.append({"method": method, "seed": seed, "foscttm": base + 0.01 * rng.normal(), "accuracy": 1 - base})
    table = pd.DataFrame(rows)
    table.loc[0, "foscttm"] = np.nan
    table.loc[table["method"] == "trivial", "accuracy"] = np.nan
    return table


def test_plot_comparison_wide_and_long(rng, tmp_path):
    table = comparison_table(rng)
    assert_png(plot_comparison(table, path=tmp_path / "wide.png"))
    long = table.melt(id_vars=["method", "seed"], var_name="metric", value_name="value")
    assert_png(plot_comparison(long, path=tmp_path / "long.png", metrics=["accuracy"]))
    # one seed, a method with no value at all, only reference methods
    single = pd.DataFrame({"method": ["a", "b", "none"], "foscttm": [0.1, np.nan, 0.4]})
    assert_png(plot_comparison(single, path=tmp_path / "single.png"))
    assert_png(plot_comparison(pd.DataFrame({"method": ["none"], "x": [1.0]}), path=tmp_path / "refs.png"))


def test_comparison_direction_matching():
    assert plotting.comparison._is_lower_better("foscttm_rna_atac", plotting.LOWER_IS_BETTER)
    assert plotting.comparison._is_lower_better("pixel_mse", plotting.LOWER_IS_BETTER)
    assert not plotting.comparison._is_lower_better("domain_entropy", plotting.LOWER_IS_BETTER)
    assert plotting.comparison._is_lower_better("custom", {"custom"})


def test_plot_comparison_rejects_bad_tables(rng, tmp_path):
    with pytest.raises(ValueError, match="'method' column"):
        plot_comparison(pd.DataFrame({"x": [1.0]}), path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="not columns"):
        plot_comparison(comparison_table(rng), metrics=["nope"], path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="numeric"):
        plot_comparison(pd.DataFrame({"method": ["a"], "note": ["x"]}), path=tmp_path / "x.png")


# ---------------------------------------------------------------------- latent shift


def test_plot_latent_shift_vectors_and_images(rng, tmp_path):
    before = {"rna": rng.normal(size=(10, 20)), "image": crops(rng, 10)}
    after = {"rna": before["rna"][:6] + np.r_[3.0, -2.0, np.zeros(18)], "image": crops(rng, 6)}
    after["rna"][0, 5] = np.nan
    before["image"][0, 0, 0] = np.nan
    names = {"rna": [f"gene{j}" for j in range(20)]}
    out = plot_latent_shift(before, after, feature_names=names, path=tmp_path / "shift.png", top=5, title="B -> T")
    assert_png(out)
    # more top than features, sparse input, no names
    small_b = {"atac": sp.csr_matrix(rng.poisson(1.0, size=(3, 2)).astype(float))}
    small_a = {"atac": rng.normal(size=(2, 2))}
    assert_png(plot_latent_shift(small_b, small_a, feature_names={}, path=tmp_path / "small.png", top=10))


def test_plot_latent_shift_rejects_mismatches(rng, tmp_path):
    with pytest.raises(ValueError, match="domains"):
        plot_latent_shift(
            {"rna": np.zeros((2, 3))}, {"atac": np.zeros((2, 3))}, feature_names={}, path=tmp_path / "x.png"
        )
    with pytest.raises(ValueError, match="must match"):
        plot_latent_shift(
            {"rna": np.zeros((2, 3))}, {"rna": np.zeros((2, 4))}, feature_names={}, path=tmp_path / "x.png"
        )
    with pytest.raises(ValueError, match="feature_names\\['rna'\\]"):
        plot_latent_shift(
            {"rna": np.zeros((2, 3))}, {"rna": np.ones((2, 3))}, feature_names={"rna": ["a"]}, path=tmp_path / "x.png"
        )


# ------------------------------------------------------------ reconstruction vs PCA


def test_plot_reconstruction_vs_pca_wide_long_and_nan(tmp_path):
    wide = pd.DataFrame(
        {
            "domain": ["rna", "atac", "image", "rna"],
            "seed": [0, 0, 0, 1],
            "latent_dim": 8,
            "autoencoder": [0.3, 0.05, np.nan, 0.32],
            "pca": [0.35, 0.06, 0.02, 0.36],
            "mean_predictor": [0.6, 0.07, 0.05, 0.6],
        }
    )
    assert_png(plot_reconstruction_vs_pca(wide, path=tmp_path / "wide.png"))
    long = pd.DataFrame({"domain": ["rna", "rna"], "predictor": ["autoencoder", "trivial"], "error": [0.2, 0.5]})
    assert_png(plot_reconstruction_vs_pca(long, path=tmp_path / "long.png", title="demo"))


def test_plot_reconstruction_vs_pca_rejects_bad_tables(tmp_path):
    with pytest.raises(ValueError, match="'domain'"):
        plot_reconstruction_vs_pca(pd.DataFrame({"pca": [1.0]}), path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="error columns"):
        plot_reconstruction_vs_pca(pd.DataFrame({"domain": ["rna"], "other": [1.0]}), path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="unknown predictors"):
        plot_reconstruction_vs_pca(
            pd.DataFrame({"domain": ["rna"], "predictor": ["vae"], "error": [1.0]}), path=tmp_path / "x.png"
        )
