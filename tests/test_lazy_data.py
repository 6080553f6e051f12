"""Lazy (on-disk) X and selective layers: the same batches and training as in memory, less memory."""

import tracemalloc

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from _synthetic import FAST_TRAIN, fast_model, make_domains

from cellbridge import stages
from cellbridge._io import OnDiskCSR, on_disk, read_h5ad
from cellbridge.data import DomainData
from cellbridge.training import COST_COLUMNS

torch.set_num_threads(1)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The synthetic RNA (sparse X, counts) and ATAC domains written as prepared .h5ad files."""
    folder = tmp_path_factory.mktemp("prepared")
    adatas = make_domains(120, modalities=("rna", "atac", "image"), image_size=16, seed=0)
    adatas["rna"].X = sp.csr_matrix(adatas["rna"].X)
    paths = {}
    for name, adata in adatas.items():
        paths[name] = folder / f"{name}.h5ad"
        adata.write_h5ad(paths[name])
    return adatas, paths


def test_on_disk_rows_equal_in_memory_rows_in_any_order(files):
    adatas, paths = files
    lazy = read_h5ad(paths["rna"], "rna", layers=(), lazy_x=True)
    assert on_disk(lazy.X) and "counts" not in lazy.layers
    rows = OnDiskCSR(lazy.X)
    dense = adatas["rna"].X.toarray()
    order = np.random.default_rng(0).permutation(dense.shape[1])
    for idx in (np.array([5, 3, 3, 119, 0]), np.arange(10, 20), np.random.default_rng(1).choice(120, 40)):
        np.testing.assert_array_equal(rows[idx].toarray(), dense[idx])
        np.testing.assert_array_equal(rows.with_columns(order)[idx].toarray(), dense[idx][:, order])
    np.testing.assert_array_equal(rows[7:9].toarray(), dense[7:9])
    np.testing.assert_array_equal(rows.binarized()[idx].toarray(), (dense[idx] > 0).astype(np.float32))


@pytest.mark.parametrize(("name", "target"), [("rna", "x"), ("rna", "counts"), ("atac", "binary")])
def test_lazy_domain_gives_identical_batches(files, name, target):
    adatas, paths = files
    layers = () if target == "x" else (target,)
    lazy = read_h5ad(paths[name], name, layers=layers, lazy_x=True)
    features = list(adatas[name].var_names[::-1])  # a model trained with another feature order
    eager = DomainData.from_anndata(adatas[name], name, likelihood_target=target, features=features)
    on_file = DomainData.from_anndata(lazy, name, likelihood_target=target, features=features)
    assert isinstance(on_file.inputs, OnDiskCSR)
    if on_file.library is not None:
        np.testing.assert_array_equal(on_file.library, eager.library)
    for idx in (np.array([3, 1, 2]), np.random.default_rng(2).permutation(120)[:64]):
        a, b = eager.batch(idx, CPU), on_file.batch(idx, CPU)
        assert a.keys() == b.keys()
        for key in a:
            assert b[key].dtype == a[key].dtype, key
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)


def test_training_on_disk_reproduces_training_in_memory(files):
    adatas, paths = files
    pair = {"rna": adatas["rna"], "image": adatas["image"]}
    lazy = {"rna": read_h5ad(paths["rna"], "rna", layers=(), lazy_x=True), "image": adatas["image"]}
    histories = []
    for data in (pair, lazy):
        model = fast_model(data, alignment="mmd", seed=3)
        histories.append(model.train(max_epochs=2, **FAST_TRAIN).drop(columns=list(COST_COLUMNS)))
    pd.testing.assert_frame_equal(histories[0], histories[1])


def test_training_reads_only_the_layers_its_likelihood_uses(files, monkeypatch):
    _, paths = files
    config = {
        "domains": {"rna": {"modality": "rna", "model": {"likelihood": "auto"}},
                    "atac": {"modality": "atac", "model": {"likelihood": "auto"}}},
        "training": {"load_x": "disk"},
    }
    adatas = stages.read_prepared(config, {"rna": paths["rna"], "atac": paths["atac"]}, for_training=True)
    assert stages.training_layers(config, "rna") == ()
    assert list(adatas["rna"].layers) == [] and on_disk(adatas["rna"].X)
    assert list(adatas["atac"].layers) == ["binary"]
    config["domains"]["rna"]["model"]["likelihood"] = "nb"
    config["training"]["load_x"] = "auto"  # small files stay in memory
    adatas = stages.read_prepared(config, {"rna": paths["rna"]}, for_training=True)
    assert list(adatas["rna"].layers) == ["counts"] and sp.issparse(adatas["rna"].X)


def test_files_training_reads_from_disk_are_written_uncompressed(files, tmp_path, monkeypatch, caplog):
    import h5py

    from cellbridge._io import write_h5ad

    adatas, paths = files
    rna = adatas["rna"]
    assert stages.preparation._prepared_compression(rna) == "gzip"  # small: compressed, held in memory
    monkeypatch.setattr(stages.preparation, "LAZY_X_BYTES", stages.preparation._sparse_bytes(rna.X) - 1)
    assert stages.preparation._prepared_compression(rna) is None  # large: rows are read one by one
    write_h5ad(rna, tmp_path / "plain.h5ad", compression=stages.preparation._prepared_compression(rna))
    write_h5ad(rna, tmp_path / "gzip.h5ad")
    with h5py.File(tmp_path / "plain.h5ad") as f:
        assert f["X/data"].compression is None
    config = {"domains": {"rna": {"modality": "rna", "model": {}}}, "training": {"load_x": "auto"}}
    with caplog.at_level("WARNING", logger="cellbridge"):
        stages.read_prepared(config, {"rna": tmp_path / "plain.h5ad"}, for_training=True)
        assert "stored compressed" not in caplog.text
        lazy = stages.read_prepared(config, {"rna": tmp_path / "gzip.h5ad"}, for_training=True)
    assert on_disk(lazy["rna"].X)
    assert "gzip.h5ad: X is stored compressed" in caplog.text


def test_lazy_domain_memory_does_not_hold_the_matrix(tmp_path):
    """100,000 cells x 500 features (20 MB of CSR): read lazily, registering the domain and
    drawing batches saves (nearly) all of the matrix against reading it into memory; what
    both share is obs/var (cell names)."""
    n, p = 100_000, 500
    x = sp.random(n, p, density=0.05, format="csr", dtype=np.float32, random_state=0)
    adata = ad.AnnData(X=x, obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
                       var=pd.DataFrame(index=[f"g{j}" for j in range(p)]))
    adata.uns["cellbridge"] = {"modality": "features"}
    adata.write_h5ad(tmp_path / "big.h5ad")
    matrix_mb = (x.data.nbytes + x.indices.nbytes + x.indptr.nbytes) / 2**20
    del adata, x

    def peak_mb(lazy: bool) -> float:
        tracemalloc.start()
        loaded = read_h5ad(tmp_path / "big.h5ad", "big", layers=(), lazy_x=lazy)
        data = DomainData.from_anndata(loaded, "big", likelihood_target="x")
        for start in range(0, 2048, 256):
            data.batch(np.arange(start, n, 997)[:256], CPU)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        return peak

    lazy, eager = peak_mb(True), peak_mb(False)
    assert eager - lazy > 0.8 * matrix_mb, (lazy, eager, matrix_mb)


def test_geometry_of_an_on_disk_matrix_matches_in_memory(files):
    from cellbridge.geometry import representation

    adatas, paths = files
    lazy = read_h5ad(paths["rna"], "rna", layers=(), lazy_x=True)
    eager = representation(adatas["rna"].X, modality="rna", n_components=5, seed=0)
    on_file = representation(lazy.X, modality="rna", n_components=5, seed=0)
    np.testing.assert_allclose(np.abs(on_file), np.abs(eager), rtol=1e-4, atol=1e-4)
