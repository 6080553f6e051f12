"""The bring-your-own ``features`` modality, and refusal of non-count input by RNA/ATAC/protein."""

from __future__ import annotations

import copy
import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from _synthetic import FAST_TRAIN, fast_model, latent_states, make_rna

from cellbridge import InputError, stages
from cellbridge.config import load_schema, validate_config
from cellbridge.contract import MODALITIES
from cellbridge.modalities import REGISTRY, get_modality
from cellbridge.model import CrossModalModel
from cellbridge.nn.likelihoods import LIKELIHOODS_BY_MODALITY, Gaussian, VectorMSE
from cellbridge.preprocess.counts import require_counts
from cellbridge.preprocess.features import prepare_features
from cellbridge.plotting import plot_qc


def feature_matrix(n_cells: int = 60, n_features: int = 8, *, seed: int = 0) -> np.ndarray:
    """Real values on very different scales, negative ones included (like PCA coordinates)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_cells, n_features)) * np.geomspace(10.0, 0.1, n_features) + np.arange(n_features)


def features_adata(X: np.ndarray, *, split: bool = True) -> ad.AnnData:
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(X.shape[0])])
    obs["cell_type"] = [f"t{i % 3}" for i in range(X.shape[0])]
    if split:
        obs["split"] = ["test" if i % 5 == 0 else "train" for i in range(X.shape[0])]
    return ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=[f"PC{j + 1}" for j in range(X.shape[1])]))


# ----------------------------------------------------------------------------- preparer
def test_standardised_features_keep_the_values_and_follow_the_contract(tmp_path):
    X = feature_matrix()
    X[:, 3] = 2.5  # a constant feature carries nothing and cannot be scaled
    out = prepare_features(features_adata(X), domain="pca", source="pcs.csv", standardize=True)

    kept = np.delete(X, 3, axis=1)
    assert list(out.var_names) == [f"PC{j + 1}" for j in range(8) if j != 3]
    assert isinstance(out.X, np.ndarray) and out.X.dtype == np.float32
    np.testing.assert_allclose(out.X.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(out.X.std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(out.layers["unscaled"], kept, rtol=1e-6)
    np.testing.assert_allclose(out.var["mean"], kept.mean(0))
    np.testing.assert_allclose(out.var["std"], kept.std(0))
    restored = out.X * out.var["std"].to_numpy() + out.var["mean"].to_numpy()
    np.testing.assert_allclose(restored, kept, rtol=1e-4, atol=1e-4)
    assert (out.X < 0).any()  # real values: nothing forces them non-negative

    # the contract every prepared domain follows
    assert out.n_obs == 60 and out.obs_names.is_unique
    assert (out.obs["domain"] == "pca").all() and out.obs["cell_type"].dtype == "category"
    assert out.obs["split"].tolist() == features_adata(X).obs["split"].tolist()
    info = out.uns["cellbridge"]
    assert info["modality"] == "features" and info["domain"] == "pca" and info["source"] == "pcs.csv"
    assert info["params"]["standardize"] is True and info["params"]["constant_features_dropped"] == 1
    assert info["qc"]["kept"].all()
    assert plot_qc(out, tmp_path / "qc.png").stat().st_size > 0
    out.write_h5ad(tmp_path / "pca.h5ad")  # every parameter can be written
    assert ad.read_h5ad(tmp_path / "pca.h5ad").uns["cellbridge"]["modality"] == "features"


def test_by_default_x_holds_the_values_as_read():
    # the default: PCA / LSI coordinates keep their scale (their variances are the information)
    X = feature_matrix(seed=1)
    out = prepare_features(features_adata(X))
    np.testing.assert_allclose(out.X, X, rtol=1e-6)
    assert "unscaled" not in out.layers and out.uns["cellbridge"]["params"]["standardize"] is False

    # sparse input (e.g. TF-IDF) stays sparse when not standardised
    rng = np.random.default_rng(2)
    methylation = rng.uniform(size=(40, 6)) * (rng.uniform(size=(40, 6)) < 0.5)
    sparse = prepare_features(ad.AnnData(sp.csr_matrix(methylation)), standardize=False)
    assert sp.issparse(sparse.X)
    np.testing.assert_allclose(sparse.X.toarray(), methylation, rtol=1e-6)
    dense = prepare_features(ad.AnnData(sp.csr_matrix(methylation)), standardize=True)
    np.testing.assert_allclose(dense.layers["unscaled"].toarray(), methylation, rtol=1e-6)
    np.testing.assert_allclose(dense.X.std(axis=0), 1, atol=1e-4)


def test_features_in_very_different_units_warn_when_left_as_given(caplog):
    rng = np.random.default_rng(3)
    # a nucleus area in pixels next to two ratios: SDs 2,000 times apart
    X = np.c_[rng.normal(1500, 400, 50), rng.uniform(0.2, 0.9, (50, 2))]
    adata = ad.AnnData(X, var=pd.DataFrame(index=["area", "eccentricity", "solidity"]))
    with caplog.at_level(logging.WARNING, logger="cellbridge"):
        prepare_features(adata, source="morphology.csv")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "morphology.csv" in warned[0] and "'area'" in warned[0]
    assert "standardize: true" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cellbridge"):
        prepare_features(adata, source="morphology.csv", standardize=True)
        pcs = rng.normal(size=(50, 30)) * np.geomspace(30.0, 2.0, 30)  # principal components: SDs 15 times apart
        prepare_features(features_adata(pcs), source="pcs.csv")
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_features_refuse_nan_constant_and_duplicate_input():
    X = feature_matrix()
    X[4, 2] = np.nan
    with pytest.raises(InputError, match="NaN") as err:
        prepare_features(features_adata(X), source="met.tsv")
    assert "met.tsv" in str(err.value) and "cell4" in str(err.value)
    with pytest.raises(InputError, match="constant") as err:
        prepare_features(features_adata(np.ones((10, 3))), source="flat.csv")
    assert "flat.csv" in str(err.value)


# ----------------------------------------------------------------------------- workflow stage
def _write_table(X: np.ndarray, path, *, transpose: bool = False) -> None:
    cells = [f"cell{i}" for i in range(X.shape[0])]
    table = pd.DataFrame(X, index=cells, columns=[f"topic{j}" for j in range(X.shape[1])])
    (table.T if transpose else table).to_csv(path, sep="\t")


def test_features_domain_is_prepared_from_a_transposed_table_without_truth(tmp_path):
    X = np.random.default_rng(4).dirichlet(np.ones(5), size=50)  # topic proportions
    _write_table(X, tmp_path / "topics.tsv", transpose=True)
    pd.DataFrame({"cell_type": [f"t{i % 2}" for i in range(50)]}, index=[f"cell{i}" for i in range(50)]).to_csv(
        tmp_path / "labels.tsv", sep="\t"
    )
    config = validate_config({
        "run": "byo",
        "domains": {
            "topics": {"modality": "features", "input": str(tmp_path / "topics.tsv"), "transpose": True,
                       "labels": str(tmp_path / "labels.tsv")},
            "pcs": {"modality": "features", "input": str(tmp_path / "pcs.csv")},
        },
        "preprocess": {"features": {"standardize": False}},
    })
    # no 'truth' key: none, and nothing reads a truth file
    assert config["truth"] is None and stages.truth_path(config) is None
    out_dir = tmp_path / "out"
    out = stages.prepare_domain(config, "topics", output=out_dir / "topics.h5ad", plot=out_dir / "topics.png")
    back = ad.read_h5ad(out_dir / "topics.h5ad")
    assert back.n_obs == 50 and list(back.var_names) == [f"topic{j}" for j in range(5)]
    np.testing.assert_allclose(back.X, X, rtol=1e-6)
    assert back.uns["cellbridge"]["modality"] == "features"
    assert back.uns["cellbridge"]["source"] == str(tmp_path / "topics.tsv")
    assert back.obs["cell_type"].tolist() == out.obs["cell_type"].tolist() == [f"t{i % 2}" for i in range(50)]
    assert (out_dir / "topics.png").stat().st_size > 0


def test_an_unknown_modality_is_an_error_not_the_protein_path(tmp_path):
    with pytest.raises(ValueError, match="unknown modality 'methylation'; known: rna, atac, protein, image, features"):
        get_modality("methylation")
    _write_table(np.random.default_rng(5).poisson(5, size=(30, 4)).astype(float), tmp_path / "adt.tsv")
    config = validate_config({
        "run": "t",
        "domains": {
            "adt": {"modality": "protein", "input": str(tmp_path / "adt.tsv")},
            "pcs": {"modality": "features", "input": str(tmp_path / "pcs.csv")},
        },
    })
    config["domains"]["adt"]["modality"] = "methylation"  # past the schema, as from Python
    with pytest.raises(InputError, match="no preprocessing for modality 'methylation'"):
        stages.prepare_domain(config, "adt", output=tmp_path / "adt.h5ad")
    assert not (tmp_path / "adt.h5ad").exists()


# ----------------------------------------------------------------------------- non-count input
def _not_counts(kind: str) -> np.ndarray:
    rng = np.random.default_rng(6)
    if kind == "topics":  # fractional
        return rng.dirichlet(np.ones(20), size=80)
    if kind == "dense_integers":  # whole numbers, but non-zero almost everywhere
        return rng.integers(1, 50, size=(80, 20)).astype(float)
    if kind == "binary":  # 0/1 methylation states
        return (rng.uniform(size=(80, 20)) < 0.4).astype(float)
    if kind == "scaled":  # centred data
        return rng.normal(size=(80, 20))
    raise ValueError(kind)


@pytest.mark.parametrize(
    ("modality", "kind", "problem"),
    [
        ("atac", "topics", "non-integer"),
        ("atac", "dense_integers", "non-zero"),
        ("atac", "scaled", "negative"),
        ("protein", "binary", "only 0 and 1"),
        ("protein", "topics", "non-integer"),
        ("protein", "scaled", "negative"),
        ("rna", "scaled", "negative"),
    ],
)
def test_non_count_input_is_refused_naming_the_file_and_features(tmp_path, modality, kind, problem):
    src = tmp_path / f"{kind}.tsv"
    _write_table(_not_counts(kind), src)
    config = validate_config({
        "run": "t",
        "domains": {
            "x": {"modality": modality, "input": str(src)},
            "y": {"modality": "features", "input": str(src)},
        },
        "preprocess": {modality: {"min_cells_after_qc": 1}},
    })
    with pytest.raises(InputError, match=problem) as err:
        stages.prepare_domain(config, "x", output=tmp_path / "x.h5ad")
    message = str(err.value)
    assert str(src) in message and "modality: features" in message
    assert "\n" not in message
    assert not (tmp_path / "x.h5ad").exists()
    # the same file is a valid features domain
    assert stages.prepare_domain(config, "y", output=tmp_path / "y.h5ad").uns["cellbridge"]["modality"] == "features"


@pytest.mark.parametrize("modality", ["rna", "atac", "protein"])
def test_integer_counts_stored_as_floats_are_counts(modality):
    rng = np.random.default_rng(7)
    counts = rng.poisson(rng.gamma(1.0, 3.0, size=(1, 40)) * np.where(rng.uniform(size=(60, 40)) < 0.4, 1, 0))
    counts[:, 0] += 2  # every cell has counts
    for X in (counts.astype(np.float32), sp.csr_matrix(counts.astype(np.float64)), counts):
        assert require_counts(ad.AnnData(X), "counts.h5ad", modality=modality).shape == (60, 40)


def test_require_counts_is_for_count_modalities_only():
    with pytest.raises(ValueError, match="features"):
        require_counts(ad.AnnData(np.ones((2, 2))), "x", modality="features")


# ----------------------------------------------------------------------------- model and schema
def test_schema_modalities_equal_the_likelihood_table():
    schema = load_schema()
    enum = schema["$defs"]["domain"]["properties"]["modality"]["enum"]
    assert len(enum) == len(set(enum))
    assert set(enum) == set(LIKELIHOODS_BY_MODALITY)
    assert set(enum) == set(MODALITIES)
    # every modality has its preprocessing section, filled with defaults
    assert set(schema["properties"]["preprocess"]["properties"]) == set(enum)
    config = validate_config({"domains": {"a": {"modality": "features", "input": "a.csv"},
                                          "b": {"modality": "features", "input": "b.csv"}}})
    assert config["preprocess"]["features"] == {"standardize": False}
    assert config["truth"] is None


def test_a_features_domain_trains_with_crossmodalmodel(tmp_path):
    types, state = latent_states(160, seed=0)
    rna = make_rna(types, state, seed=1)
    rng = np.random.default_rng(8)
    raw = np.tanh(state @ rng.normal(size=(3, 12))) * np.geomspace(5, 0.2, 12) + rng.normal(0, 0.05, (160, 12))
    feats = features_adata(raw, split=False)
    feats.obs["cell_type"] = [f"type{t}" for t in types]
    pcs = prepare_features(feats, domain="pcs")

    model = fast_model({"rna": rna, "pcs": pcs}, alignment="mmd", seed=0,
                       domain_kwargs={"pcs": {"hidden_dims": [32]}})
    assert model.config["domains"]["pcs"]["likelihood"] == "gaussian"
    assert isinstance(model.module.autoencoders["pcs"].likelihood, Gaussian)
    model.train(max_epochs=3, **FAST_TRAIN)
    assert np.isfinite(model.history.filter(like="pcs").to_numpy(dtype=float)).all()
    out = model.translate("rna", "pcs")
    assert out.shape == (160, 12) and list(out.var_names) == list(pcs.var_names)
    assert np.isfinite(out.X).all()
    assert model.get_latent("pcs", pcs).shape == (160, 4)

    mse = fast_model({"rna": rna, "pcs": pcs}, alignment="none", seed=0, domain_kwargs={"pcs": {"likelihood": "mse"}})
    assert type(mse.module.autoencoders["pcs"].likelihood) is VectorMSE
    mse.train(max_epochs=2, **FAST_TRAIN)
    assert mse.translate("pcs", "pcs").shape == (160, 12)
    mse.save(tmp_path / "model")
    loaded = CrossModalModel.load(tmp_path / "model", {"rna": rna, "pcs": pcs})
    assert type(loaded.module.autoencoders["pcs"].likelihood) is VectorMSE
    np.testing.assert_allclose(loaded.get_latent("pcs", pcs), mse.get_latent("pcs", pcs), atol=1e-5)
    with pytest.raises(InputError, match="bernoulli"):
        fast_model({"rna": rna, "pcs": pcs}, domain_kwargs={"pcs": {"likelihood": "bernoulli"}})


def test_a_config_without_truth_is_valid_with_simulated_domains():
    config = validate_config(copy.deepcopy({
        "domains": {"rna": {"modality": "rna", "input": "simulated"},
                    "image": {"modality": "image", "input": "simulated"}},
    }))
    assert config["truth"] is None
    assert stages.truth_path(config) is None


def test_every_registered_modality_prepares_and_is_known_to_the_schema_and_the_model():
    # the registry is the one list: each entry's preparer exists and takes what prepare_domain
    # passes, each has its likelihoods, the schema names exactly these modalities, and the QC figure
    # of every vector modality draws from the entry alone
    import inspect

    schema = load_schema()
    assert tuple(REGISTRY) == MODALITIES
    assert list(schema["$defs"]["domain"]["properties"]["modality"]["enum"]) == list(REGISTRY)
    for name, entry in REGISTRY.items():
        prepare = entry.prepare_function()
        assert prepare.__name__ == f"prepare_{name}"
        assert LIKELIHOODS_BY_MODALITY[name] == entry.likelihoods and entry.likelihoods
        if not entry.image:
            keywords = set(inspect.signature(prepare).parameters)
            assert {"domain", "label_key", "labels", "source"} <= keywords, name
            assert entry.qc_panels, name
    assert [m for m, e in REGISTRY.items() if e.image] == ["image"]


def test_plot_qc_refuses_a_modality_it_does_not_know(tmp_path):
    X = np.random.default_rng(0).normal(size=(20, 3))
    out = prepare_features(ad.AnnData(X), domain="pcs", source="pcs.csv")
    out.uns["cellbridge"]["modality"] = "methylation"
    with pytest.raises(ValueError, match="unknown modality 'methylation'"):
        plot_qc(out, tmp_path / "qc.png")
    assert not (tmp_path / "qc.png").exists()
