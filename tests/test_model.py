"""CrossModalModel API: input validation, translation, save/load, feature matching."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from _synthetic import FAST_TRAIN, fast_model, make_domains

from cellbridge._io import InputError
from cellbridge.model import CrossModalModel

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def domains():
    return make_domains(120, image_size=16, seed=0)


@pytest.fixture(scope="module")
def trained(domains):
    model = fast_model(domains, alignment="mmd", label_key="cell_type", domain_kwargs={"rna": {"likelihood": "nb"}})
    model.train(max_epochs=2, **FAST_TRAIN)
    return model


def _copy(domains):
    return {k: v.copy() for k, v in domains.items()}


def test_missing_image_crops_named(domains):
    doms = _copy(domains)
    del doms["image"].obsm["image"]
    with pytest.raises(InputError, match=r"domain 'image'.*obsm\[\"image\"\] is missing"):
        fast_model(doms)


def test_nan_in_x_named(domains):
    doms = _copy(domains)
    doms["rna"].X[3, 2] = np.nan
    with pytest.raises(InputError, match=r"domain 'rna'.*X contains NaN"):
        fast_model(doms)


def test_missing_modality_and_counts_named(domains):
    doms = _copy(domains)
    del doms["rna"].uns["cellbridge"]
    with pytest.raises(InputError, match=r"domain 'rna'.*modality"):
        fast_model(doms)
    doms = _copy(domains)
    del doms["rna"].layers["counts"]
    with pytest.raises(InputError, match=r"domain 'rna'.*layers\[\"counts\"\] is missing"):
        fast_model(doms, domain_kwargs={"rna": {"likelihood": "nb"}})


def test_bad_crop_size_and_options_named(domains):
    doms = _copy(domains)
    doms["image"].obsm["image"] = np.zeros((doms["image"].n_obs, 24, 24), dtype=np.float32)
    with pytest.raises(InputError, match=r"domain 'image'.*power-of-two"):
        fast_model(doms)
    with pytest.raises(InputError, match=r"domain 'image'.*does not suit"):
        fast_model(domains, domain_kwargs={"image": {"likelihood": "nb"}})
    with pytest.raises(InputError, match="unknown domain"):
        fast_model(domains, domain_kwargs={"protein": {}})
    with pytest.raises(InputError, match="label_key 'celltype'"):
        fast_model(domains, label_key="celltype")


def test_sparse_input_accepted(domains):
    doms = _copy(domains)
    doms["rna"].X = sp.csr_matrix(doms["rna"].X)
    dense, sparse = fast_model(domains), fast_model(doms)
    np.testing.assert_allclose(dense.get_latent("rna"), sparse.get_latent("rna"), rtol=1e-5, atol=1e-6)


def test_unknown_domain_names_known(trained):
    with pytest.raises(KeyError, match=r"'protein'.*\['rna', 'image'\]"):
        trained.translate("image", "protein")
    with pytest.raises(KeyError, match=r"'atac'.*\['rna', 'image'\]"):
        trained.get_latent("atac")


def test_latent_key_added(trained, domains):
    adata = domains["image"].copy()
    z = trained.get_latent("image", adata, key_added="X_cellbridge")
    assert z.shape == (120, 4)
    np.testing.assert_array_equal(adata.obsm["X_cellbridge"], z)


def test_translate_image_to_rna(trained, domains):
    out = trained.translate("image", "rna")
    assert out.shape == (120, 60)
    assert list(out.obs_names) == list(domains["image"].obs_names)
    assert list(out.var_names) == list(domains["rna"].var_names)
    assert out.obsm["X_cellbridge"].shape == (120, 4)
    assert out.X.dtype == np.float32 and np.isfinite(out.X).all() and (out.X >= 0).all()
    counts = out.layers["expected_counts"]
    cfg = trained.config["domains"]["rna"]
    np.testing.assert_allclose(counts.sum(1), cfg["default_library"], rtol=1e-4)
    # X-space prediction is log1p(proportion * scale), the same transform as the prepared X
    np.testing.assert_allclose(out.X, np.log1p(counts / cfg["default_library"] * cfg["x_scale"]), rtol=1e-4, atol=1e-5)
    assert out.uns["cellbridge"]["modality"] == "rna" and out.uns["cellbridge"]["translation"]["source"] == "image"
    assert out.uns["cellbridge"]["n_clipped"] == 0  # NB predictions are log1p of non-negative values
    # X of log1p(CP10k) data restricted to all genes: the scale is the target sum
    assert cfg["x_scale"] == pytest.approx(1e4, rel=1e-3)


def test_translation_provenance_and_obs_semantics(trained, domains, tmp_path):
    trained.save(tmp_path / "m")
    out = CrossModalModel.load(tmp_path / "m", adatas=domains).translate("image", "rna")
    info = out.uns["cellbridge"]["translation"]
    assert {k: info[k] for k in ("source", "target", "method", "seed", "model_path")} == {
        "source": "image", "target": "rna", "method": "mmd", "seed": 0, "model_path": str(tmp_path / "m"),
    }
    assert info["version"] and pd.Timestamp(info["time"]).tzinfo is not None
    # rows are the image cells, values live in RNA's space: obs["domain"] agrees with uns
    assert (out.obs["domain"] == "rna").all() and out.uns["cellbridge"]["domain"] == "rna"
    assert (out.obs["source_domain"] == "image").all()
    assert list(out.obs_names) == list(domains["image"].obs_names)
    # the provenance survives a round trip through .h5ad
    import anndata as ad

    out.write_h5ad(tmp_path / "t.h5ad")
    back = ad.read_h5ad(tmp_path / "t.h5ad").uns["cellbridge"]["translation"]
    assert back["method"] == "mmd" and int(back["seed"]) == 0 and back["target"] == "rna"


def test_gaussian_expression_predictions_are_clipped_at_zero(domains):
    # an untrained Gaussian decoder undershoots freely: its log-normalised predictions go below 0
    model = fast_model(domains, alignment="none")
    raw = model.module.autoencoders["rna"].predict(torch.as_tensor(model.get_latent("image")))["x"]
    n_negative = int((raw < 0).sum())
    assert n_negative > 0
    out = model.translate("image", "rna")
    assert (out.X >= 0).all()
    assert out.uns["cellbridge"]["x_clipped_at"] == 0.0 and out.uns["cellbridge"]["n_clipped"] == n_negative
    assert out.uns["cellbridge"]["translation"]["n_clipped"] == n_negative
    assert out.uns["cellbridge"]["translation"]["model_path"] == "not saved"
    # where X is not non-negative by contract (image morphology features), nothing is clipped
    assert "x_clipped_at" not in model.translate("rna", "image").uns["cellbridge"]


def test_translate_rna_to_image(trained):
    out = trained.translate("rna", "image", library_size=1000)
    assert out.obsm["image"].shape == (120, 16, 16)
    assert 0 <= out.obsm["image"].min() and out.obsm["image"].max() <= 1
    # X = morphology measured on the predicted crops, same features as the preprocessing
    from cellbridge.preprocess.morphology import crop_features

    expected = crop_features(out.obsm["image"], index=out.obs_names)
    assert list(out.var_names) == list(expected.columns)
    np.testing.assert_allclose(out.X, expected.to_numpy(np.float32), rtol=1e-5)
    assert np.isfinite(out.X).all() and out.X.std(axis=0).max() > 0


def test_decode_latent_points(trained):
    z = np.zeros((3, trained.config["latent_dim"]), dtype=np.float32)
    rna = trained.decode("rna", z)
    assert rna.shape == (3, trained.adatas["rna"].n_vars) and list(rna.obs_names) == ["latent_0", "latent_1", "latent_2"]
    with pytest.raises(ValueError, match="shape"):
        trained.decode("rna", z[:, :2])


def test_save_load_round_trip(trained, domains, tmp_path):
    trained.save(tmp_path / "m")
    state = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["config"]["domains"]["rna"]["features"] == list(domains["rna"].var_names)
    assert meta["config"]["domains"]["rna"]["params"] == {"target_sum": 10000.0}
    assert "cellbridge_version" in meta
    loaded = CrossModalModel.load(tmp_path / "m", adatas=domains)
    for dom in ("rna", "image"):
        np.testing.assert_array_equal(loaded.get_latent(dom), trained.get_latent(dom))
    np.testing.assert_array_equal(loaded.translate("image", "rna").X, trained.translate("image", "rna").X)
    assert loaded.history is not None and len(loaded.history) == 2
    # without registered data, cells can still be passed explicitly
    bare = CrossModalModel.load(tmp_path / "m")
    np.testing.assert_array_equal(bare.get_latent("image", domains["image"]), trained.get_latent("image"))
    with pytest.raises(InputError, match="pass adata="):
        bare.get_latent("rna")


def test_features_matched_by_name(trained, domains, tmp_path):
    trained.save(tmp_path / "m")
    rna = domains["rna"]
    shuffled = rna[:, rna.var_names[::-1]].copy()
    loaded = CrossModalModel.load(tmp_path / "m", adatas={"rna": shuffled})
    np.testing.assert_allclose(loaded.get_latent("rna"), trained.get_latent("rna"), rtol=1e-5, atol=1e-6)
    renamed = rna[:, 2:].copy()
    renamed.var_names = ["gene0", "geneX"] + list(renamed.var_names[2:])
    with pytest.raises(InputError, match=r"domain 'rna'.*missing: gene1, gene2.*unknown to the model: geneX"):
        CrossModalModel.load(tmp_path / "m", adatas={"rna": renamed})
    small = domains["image"].copy()
    small.obsm["image"] = np.zeros((small.n_obs, 32, 32), dtype=np.float32)
    with pytest.raises(InputError, match="32 px but the model was built for 16 px"):
        CrossModalModel.load(tmp_path / "m", adatas={"image": small})


def test_load_refuses_non_model_folder(tmp_path):
    with pytest.raises(InputError, match="model.pt"):
        CrossModalModel.load(tmp_path)


def test_anchors(domains):
    n = 40
    table = pd.DataFrame({"rna": [f"rna_{i}" for i in range(n)], "image": [f"image_{i}" for i in range(n)]})
    model = fast_model(domains, alignment="none", anchors=table, anchor_fraction=0.5)
    assert len(model.anchors) == 1 and len(model.anchors[0].index_a) == 20
    history = model.train(max_epochs=2, **FAST_TRAIN)
    assert "anchor_loss" in history and np.isfinite(history["anchor_loss"]).all()
    bad = table.copy()
    bad.loc[0, "image"] = "image_nope"
    with pytest.raises(InputError, match=r"not found in domain 'image'.*image_nope"):
        fast_model(domains, anchors=bad)


def test_repr(trained):
    assert "rna: rna/nb (120 cells)" in repr(trained) and "trained" in repr(trained)
