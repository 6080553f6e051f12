"""Evaluation on a seeded sample of held-out cells (``evaluation.max_cells``, issue 13).

Below the cap nothing is sampled and every metric is exactly what it was without one;
above it the metrics come from a reproducible sample, close to the exact values, and the
sample sizes are in the output.
"""

import tracemalloc

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellbridge import metrics as M
from cellbridge import stages
from cellbridge.config import validate_config
from cellbridge.evaluate import evaluate_run, sample_rows

N_CELLS = 3000  # per domain; about half held out
N_TYPES = 5


def _adata(prefix, x, z, types, split, image=None):
    obs = pd.DataFrame({"cell_type": pd.Categorical(types), "split": split},
                       index=[f"{prefix}_{i:05d}" for i in range(len(types))])
    a = ad.AnnData(X=x.astype(np.float32), obs=obs)
    a.var_names = [f"{prefix}_f{j}" for j in range(a.n_vars)]
    a.obsm["X_cellbridge"] = z
    if image is not None:
        a.obsm["image"] = image.astype(np.float32)
    return a


def _translation(source, x, image=None, var_names=None):
    tr = ad.AnnData(X=x.astype(np.float32), obs=source.obs.copy())
    if var_names is not None:
        tr.var_names = var_names
    tr.obsm["X_cellbridge"] = source.obsm["X_cellbridge"]
    if image is not None:
        tr.obsm["image"] = image.astype(np.float32)
    return tr


@pytest.fixture(scope="module")
def run():
    """Two domains of the same cells, listed in different orders, with a mediocre alignment."""
    rng = np.random.default_rng(0)
    types = rng.integers(0, N_TYPES, N_CELLS)
    truth_z = 3.0 * np.eye(N_TYPES, 8)[types] + rng.normal(size=(N_CELLS, 8))
    split = np.where(rng.random(N_CELLS) < 0.5, "test", "train")
    expr = truth_z @ rng.normal(size=(8, 40)) + rng.normal(size=(N_CELLS, 40))
    morph = truth_z[:, :5] + 0.5 * rng.normal(size=(N_CELLS, 5))
    crops = rng.random((N_CELLS, 8, 8)) * 0.5 + 0.1 * truth_z[:, :1, None]
    perm = rng.permutation(N_CELLS)  # image row i is cell perm[i]
    z_rna = truth_z + 1.5 * rng.normal(size=truth_z.shape)
    z_img = truth_z[perm] + 1.5 * rng.normal(size=truth_z.shape)
    rna = _adata("rna", expr, z_rna, types.astype(str), split)
    img = _adata("img", morph[perm], z_img, types[perm].astype(str), split[perm], image=np.clip(crops[perm], 0, 1))
    truth = pd.DataFrame({
        "cell_id": np.concatenate([np.arange(N_CELLS), perm]).astype(str),
        "domain": ["rna"] * N_CELLS + ["image"] * N_CELLS,
        "obs_name": list(rna.obs_names) + list(img.obs_names),
    })
    noisy = rng.normal(scale=0.5, size=expr.shape)
    translations = {
        # image -> rna: the partner's expression plus noise; rna -> image: partner crops
        ("image", "rna"): _translation(img, expr[perm] + noisy[perm], var_names=rna.var_names),
        ("rna", "image"): _translation(rna, morph + 0.3 * rng.normal(size=morph.shape),
                                       image=np.clip(crops + 0.05 * rng.normal(size=crops.shape), 0, 1),
                                       var_names=img.var_names),
        ("rna", "rna"): _translation(rna, expr + noisy, var_names=rna.var_names),
        ("image", "image"): _translation(img, morph[perm], image=np.clip(crops[perm] + 0.02, 0, 1),
                                         var_names=img.var_names),
    }
    return {"latents": {"rna": rna, "image": img}, "translations": translations,
            "prepared": {"rna": rna, "image": img}, "truth": truth}


def _evaluate(run, **kwargs):
    return evaluate_run(run["latents"], translations=run["translations"], prepared=run["prepared"],
                        truth=run["truth"], label_key="cell_type", latent_dim=4, top_genes=10, **kwargs)


@pytest.fixture(scope="module")
def exact(run):
    return _evaluate(run, max_cells=10**9)


@pytest.fixture(scope="module")
def sampled(run):
    return _evaluate(run, max_cells=500)


def test_sample_rows_keeps_everything_up_to_the_cap_and_is_seeded():
    np.testing.assert_array_equal(sample_rows(7, 7), np.arange(7))
    rows = sample_rows(1000, 100, seed=3, key="rna")
    assert rows.size == 100 and np.all(np.diff(rows) > 0) and rows.max() < 1000
    np.testing.assert_array_equal(rows, sample_rows(1000, 100, seed=3, key="rna"))
    assert not np.array_equal(rows, sample_rows(1000, 100, seed=4, key="rna"))
    assert not np.array_equal(rows, sample_rows(1000, 100, seed=3, key="image"))
    for bad in (0, -5, 2.5, True, None):
        with pytest.raises(ValueError, match="max_cells must be a positive integer"):
            sample_rows(10, bad)


def test_a_cap_that_covers_every_set_changes_no_metric(run, exact):
    # the largest set: the held-out cells of both domains together (silhouettes)
    pooled = sum(v["n_cells"] for v in exact["held_out"].values())
    train = max(int((a.obs["split"] == "train").sum()) for a in run["prepared"].values())
    covering = _evaluate(run, max_cells=max(pooled, train))
    assert covering["metrics"] == exact["metrics"] and covering["trivial"] == exact["trivial"]
    assert not any(k.startswith("n_sampled") for k in exact["metrics"])
    # and they are the metrics of all truly paired held-out cells
    rna, img, truth = run["latents"]["rna"], run["latents"]["image"], run["truth"]
    perm = truth["cell_id"].to_numpy()[N_CELLS:].astype(int)
    at = {int(c): i for i, c in enumerate(perm)}
    pairs = [(i, at[i]) for i in np.flatnonzero(rna.obs["split"] == "test") if img.obs["split"].iloc[at[i]] == "test"]
    z_rna = rna.obsm["X_cellbridge"][[p[0] for p in pairs]]
    z_img = img.obsm["X_cellbridge"][[p[1] for p in pairs]]
    assert exact["metrics"]["n_pairs_image_rna"] == len(pairs)
    assert exact["metrics"]["foscttm_image_rna"] == pytest.approx(M.foscttm(z_img, z_rna), abs=1e-12)


def test_sample_sizes_are_in_the_output(sampled):
    m = sampled["metrics"]
    assert sampled["sampling"] == {"max_cells": 500, "seed": 0}
    for key in ("image_rna", "rna", "image", "image_to_rna", "rna_to_image", "train_rna", "train_image"):
        assert m[f"n_sampled_{key}"] == 500, key
    assert m["n_pairs_image_rna"] > 1000  # the full count stays beside the sample


def test_sampled_metrics_are_close_to_the_exact_ones(exact, sampled):
    e, s = exact["metrics"], sampled["metrics"]
    assert 0.05 < e["foscttm_image_rna"] < 0.4  # a mediocre alignment, not a trivial one
    close = {
        "foscttm_image_rna": 0.02,
        "transfer_accuracy_rna_to_image": 0.05,
        "transfer_accuracy_image_to_rna": 0.05,
        "domain_entropy": 0.1,
        "silhouette_label": 0.05,
        "pearson_gene_image_to_rna": 0.03,
        "pearson_cell_image_to_rna": 0.03,
        "morph_r_rna_to_image": 0.05,
        "ssim_rna_to_image": 0.02,
    }
    for key, tol in close.items():
        assert s[key] == pytest.approx(e[key], abs=tol), key
    for key in ("rmse_image_to_rna", "pixel_mse_rna_to_image", "reconstruction_mse_rna", "pca_mse_rna"):
        assert s[key] == pytest.approx(e[key], rel=0.1), key
    assert sampled["trivial"]["rmse_image_to_rna"] == pytest.approx(exact["trivial"]["rmse_image_to_rna"], rel=0.05)


def test_samples_are_reproducible_and_follow_the_seed(run, sampled):
    again = _evaluate(run, max_cells=500)
    assert again["metrics"] == sampled["metrics"]
    other = _evaluate(run, max_cells=500, sample_seed=1)["metrics"]
    assert other["foscttm_image_rna"] != sampled["metrics"]["foscttm_image_rna"]
    assert other["foscttm_image_rna"] == pytest.approx(sampled["metrics"]["foscttm_image_rna"], abs=0.03)


def test_sampled_pairs_stay_pairs(run):
    """A perfect alignment stays perfect on a sample: each sampled cell keeps its partner."""
    latents = {d: a.copy() for d, a in run["latents"].items()}
    perm = run["truth"]["cell_id"].to_numpy()[N_CELLS:].astype(int)
    latents["image"].obsm["X_cellbridge"] = latents["rna"].obsm["X_cellbridge"][perm]
    m = evaluate_run(latents, truth=run["truth"], max_cells=200)["metrics"]
    assert m["n_sampled_image_rna"] == 200
    assert m["foscttm_image_rna"] == 0.0 and m["partner5_image_rna"] == 1.0


def test_translations_opened_backed_read_only_the_scored_rows(run, sampled, tmp_path):
    paths = {}
    for (s, t), tr in run["translations"].items():
        paths[(s, t)] = tmp_path / f"{s}_to_{t}.h5ad"
        tr.write_h5ad(paths[(s, t)])
    backed = {key: ad.read_h5ad(p, backed="r") for key, p in paths.items()}
    try:
        res = evaluate_run(run["latents"], translations=backed, prepared=run["prepared"], truth=run["truth"],
                           label_key="cell_type", latent_dim=4, top_genes=10, max_cells=500)
    finally:
        for tr in backed.values():
            tr.file.close()
    assert res["metrics"] == sampled["metrics"] and res["trivial"] == sampled["trivial"]


def test_the_stages_take_the_caps_from_the_config(run, tmp_path, monkeypatch):
    truth_path = tmp_path / "truth.tsv"
    run["truth"].to_csv(truth_path, sep="\t", index=False)
    config = validate_config({
        "run": "t", "truth": str(truth_path), "label_key": "cell_type",
        "domains": {"rna": {"modality": "rna", "input": "rna.h5ad"}, "image": {"modality": "image", "input": "f"}},
        "evaluation": {"max_cells": 500, "umap_max_cells": 300},
    })
    files = {}
    for kind, table in (("latent", run["latents"]), ("prepared", run["prepared"])):
        for d, a in table.items():
            files[(kind, d)] = tmp_path / f"{kind}_{d}.h5ad"
            a.write_h5ad(files[(kind, d)])
    translated = {}
    for (s, t), tr in run["translations"].items():
        translated[(s, t)] = tmp_path / f"{s}_to_{t}.h5ad"
        tr.write_h5ad(translated[(s, t)])
    result = stages.evaluate(
        config, "mmd", 0, latents={d: files[("latent", d)] for d in ("rna", "image")}, translated=translated,
        prepared={d: files[("prepared", d)] for d in ("rna", "image")}, output=tmp_path / "m.json",
    )
    # the same numbers as in memory: translations opened backed, the caps from the config
    in_memory = evaluate_run(run["latents"], translations=run["translations"], prepared=run["prepared"],
                             truth=run["truth"], label_key="cell_type", latent_dim=config["model"]["latent_dim"],
                             max_cells=500)
    assert result["metrics"] == in_memory["metrics"] and result["metrics"]["n_sampled_image_rna"] == 500

    seen = {}
    monkeypatch.setattr("cellbridge.plotting.plot_joint_latent", lambda z, **kw: seen.update(kw))
    stages.plot_latents(config, [("mmd", 0, {d: files[("latent", d)] for d in ("rna", "image")}, tmp_path / "u.png")])
    assert seen["max_cells"] == 300


def test_the_latent_shift_figure_is_drawn_on_a_sample_of_a_large_domain(run, monkeypatch):
    class Drawn(Exception):
        pass

    seen = {}

    def latent_shift(model, domain, *, adata, **kwargs):
        seen["n"], seen["names"] = adata.n_obs, list(adata.obs_names)
        raise Drawn  # stop before decoding: the cells handed over are what is tested

    monkeypatch.setattr("cellbridge.generate.latent_shift", latent_shift)
    prepared = run["prepared"]
    first = next(d for d, a in prepared.items() if "cell_type" in a.obs)
    for cap, expected in ((50, 50), (None, prepared[first].n_obs), (10**6, prepared[first].n_obs)):
        with pytest.raises(Drawn):
            stages.plot_shift(None, prepared, path="unused.png", label_key="cell_type", max_cells=cap, seed=3)
        assert seen["n"] == expected
    with pytest.raises(Drawn):
        stages.plot_shift(None, prepared, path="unused.png", label_key="cell_type", max_cells=50, seed=3)
    sample = seen["names"]
    assert sample == list(prepared[first].obs_names[sample_rows(prepared[first].n_obs, 50, seed=3, key="latent_shift")])


@pytest.mark.parametrize("sparse", [False, True])
def test_translation_metrics_of_float32_input_equal_those_of_float64(sparse):
    """Float32 matrices are converted block by block, never copied whole: same numbers."""
    rng = np.random.default_rng(2)
    pred = rng.normal(size=(300, 50)).astype(np.float32)
    true = (pred + rng.normal(size=pred.shape)).astype(np.float32)
    true[true < 0] = 0
    p64, t64 = pred.astype(np.float64), true.astype(np.float64)
    if sparse:  # compared with float64 input of the same kind: dense and sparse sum in other orders
        p32, t32, p64, t64 = sp.csr_matrix(pred), sp.csr_matrix(true), sp.csr_matrix(p64), sp.csr_matrix(t64)
    else:
        p32, t32 = pred, true
    for method in ("pearson", "spearman"):
        np.testing.assert_array_equal(M.per_feature_correlation(p32, t32, method=method),
                                      M.per_feature_correlation(p64, t64, method=method))
        np.testing.assert_array_equal(M.per_cell_correlation(p32, t32, method=method),
                                      M.per_cell_correlation(p64, t64, method=method))
    assert M.rmse(p32, t32) == M.rmse(p64, t64)
    binary = true > 0
    assert M.auroc(pred, binary) == M.auroc(pred.astype(np.float64), binary)
    np.testing.assert_array_equal(M.auroc_per_feature(p32, sp.csr_matrix(binary) if sparse else binary),
                                  M.auroc_per_feature(p64, binary))
    crops32 = np.clip(pred[:, :49].reshape(300, 7, 7), 0, 1)
    crops_true = np.clip(true[:, :49].reshape(300, 7, 7), 0, 1)
    assert M.pixel_mse(crops32, crops_true) == M.pixel_mse(crops32.astype(np.float64), crops_true.astype(np.float64))
    np.testing.assert_array_equal(M.ssim_per_crop(crops32, crops_true),
                                  M.ssim_per_crop(crops32.astype(np.float64), crops_true.astype(np.float64)))


def test_neighbour_and_alignment_metrics_do_not_allocate_quadratic_memory():
    """20,000 cells: an n x n float64 matrix would be 3.2 GB; the metrics stay far below."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(20_000, 16))
    domains = np.repeat(["a", "b"], 10_000)
    labels = rng.integers(0, N_TYPES, 20_000).astype(str)
    tracemalloc.start()
    try:
        M.domain_entropy(z, domains, k=30)
        M.knn_label_transfer(z[:10_000], labels[:10_000], z[10_000:], labels[10_000:], k=5)
        M.foscttm(z[:10_000], z[10_000:])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 300 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_evaluation_reads_a_large_prepared_matrix_by_rows_and_skips_unused_layers(run, tmp_path):
    """With ``training.load_x: disk`` (what ``auto`` does above 2 GiB) the prepared sparse X
    stays in its file and only scored rows are read; a layer neither the model nor a metric
    uses is not read at all. The metrics equal those computed in memory."""
    truth_path = tmp_path / "truth.tsv"
    run["truth"].to_csv(truth_path, sep="\t", index=False)
    config = validate_config({
        "run": "t", "truth": str(truth_path), "label_key": "cell_type",
        "domains": {"rna": {"modality": "rna", "input": "rna.h5ad"}, "image": {"modality": "image", "input": "f"}},
        "evaluation": {"max_cells": 500}, "training": {"load_x": "disk"},
    })
    rna = run["prepared"]["rna"].copy()
    rna.X = sp.csr_matrix(rna.X)
    rna.layers["unused"] = sp.csr_matrix(np.ones(rna.shape, dtype=np.float32))
    prepared = {"rna": tmp_path / "prep_rna.h5ad", "image": tmp_path / "prep_image.h5ad"}
    rna.write_h5ad(prepared["rna"])
    run["prepared"]["image"].write_h5ad(prepared["image"])
    latents = {d: tmp_path / f"lat_{d}.h5ad" for d in ("rna", "image")}
    for d, path in latents.items():
        run["latents"][d].write_h5ad(path)
    translated = {}
    for (s, t), tr in run["translations"].items():
        translated[(s, t)] = tmp_path / f"{s}_to_{t}.h5ad"
        tr.write_h5ad(translated[(s, t)])

    read = stages.read_prepared(config, prepared, for_evaluation=True)
    assert not sp.issparse(read["rna"].X) and hasattr(read["rna"].X, "group")  # still in the file
    assert "unused" not in read["rna"].layers
    result = stages.evaluate(config, "mmd", 0, latents=latents, translated=translated, prepared=prepared,
                             output=tmp_path / "m.json")
    in_memory = evaluate_run(run["latents"], translations=run["translations"], prepared=run["prepared"],
                             truth=run["truth"], label_key="cell_type", latent_dim=config["model"]["latent_dim"],
                             max_cells=500)
    assert result["metrics"] == in_memory["metrics"]
