"""The translate stage in chunks: the same files as one piece, in memory that grows with the chunk."""

import tracemalloc

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from _synthetic import fast_model, make_domains

from cellbridge import InputError, stages
from cellbridge._io import read_h5ad, write_h5ad
from cellbridge.config import validate_config
from cellbridge.evaluate import take_rows
from cellbridge.model import CrossModalModel

torch.set_num_threads(1)
N_CELLS = 250
CHUNK = 100  # three pieces, the last one short


def _prepared(folder, adatas):
    """Prepared files of ``adatas`` (a sparse RNA X, as the RNA preprocessing writes it)."""
    paths = {}
    for name, adata in adatas.items():
        if name == "rna":
            adata.X = sp.csr_matrix(adata.X)
        paths[name] = write_h5ad(adata, folder / f"{name}.h5ad")
    return paths


def _config(paths, truth=None, **translation):
    return validate_config({
        "run": "t",
        "label_key": "cell_type",
        "truth": None if truth is None else str(truth),
        "domains": {
            "rna": {"modality": "rna", "input": str(paths["rna"])},
            "atac": {"modality": "atac", "input": str(paths["atac"])},
            "image": {"modality": "image", "input": str(paths["image"])},
        },
        "translation": translation,
    })


def _saved_model(adatas, folder):
    """A small untrained model (translation does not depend on training), saved in ``folder``."""
    model = fast_model(adatas, alignment="mmd", seed=0)
    model.save(folder)
    return folder


def _outputs(folder, domains):
    return {(s, t): folder / f"{s}_to_{t}.h5ad" for s in domains for t in domains}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Three paired domains of 250 cells (30 % held out), their truth table, a saved model."""
    folder = tmp_path_factory.mktemp("small")
    adatas = make_domains(N_CELLS, modalities=("rna", "atac", "image"), image_size=16, test_fraction=0.3, seed=0)
    # a category no cell has: the one-piece file keeps it, and so must every piece
    adatas["rna"].obs["cell_type"] = adatas["rna"].obs["cell_type"].cat.add_categories(["unseen"])
    paths = _prepared(folder, adatas)
    truth = folder / "truth.tsv"
    pd.DataFrame([
        {"cell_id": f"c{i}", "domain": d, "obs_name": f"{d}_{i}"} for d in adatas for i in range(N_CELLS)
    ]).to_csv(truth, sep="\t", index=False)
    return {"paths": paths, "truth": truth, "model": _saved_model(adatas, folder / "model")}


def _translate(small, folder, *, galleries=False, **translation):
    """Run the stage into ``folder`` (with the galleries of image targets when asked); return the paths."""
    config = _config(small["paths"], small["truth"], **translation)
    outputs = _outputs(folder, config["domains"])
    pairs = stages.image_pairs(config) if galleries else []
    galleries = {pair: folder / f"{pair[0]}_to_{pair[1]}.png" for pair in pairs}
    stages.translate(
        config, "mmd", 0, model_path=small["model"], prepared=small["paths"], outputs=outputs, galleries=galleries
    )
    return outputs, galleries


def _assert_same_translation(a: ad.AnnData, b: ad.AnnData) -> None:
    np.testing.assert_array_equal(a.X, b.X)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    assert set(a.obsm) == set(b.obsm) and set(a.layers) == set(b.layers)
    for key in a.obsm:
        np.testing.assert_array_equal(a.obsm[key], b.obsm[key])
    for key in a.layers:
        np.testing.assert_array_equal(a.layers[key], b.layers[key])
    ua, ub = (dict(x.uns["cellbridge"]) for x in (a, b))
    ta, tb = ua.pop("translation"), ub.pop("translation")
    ta.pop("time"), tb.pop("time")  # when each was made
    assert ta == tb
    np.testing.assert_equal(ua, ub)


def test_chunked_translation_equals_the_one_piece_translation(small, tmp_path):
    """Three pieces (100, 100, 50 cells) give the files one translate() call of all cells gives."""
    outputs, galleries = _translate(small, tmp_path / "chunked", galleries=True, chunk_cells=CHUNK)
    config = _config(small["paths"], small["truth"])
    # today's single piece: every domain in memory, one translate() per pair, written whole
    whole = stages.read_prepared(config, small["paths"])
    model = CrossModalModel.load(small["model"], whole)
    for (s, t), path in outputs.items():
        reference = write_h5ad(model.translate(s, t), tmp_path / "whole" / path.name)
        chunked, expected = ad.read_h5ad(path), ad.read_h5ad(reference)
        assert chunked.n_obs == N_CELLS
        _assert_same_translation(chunked, expected)
    clipped = ad.read_h5ad(outputs[("image", "rna")]).uns["cellbridge"]
    assert clipped["n_clipped"] == clipped["translation"]["n_clipped"] > 0  # summed over the pieces
    assert set(galleries) == {("rna", "image"), ("atac", "image")}
    assert all(png.stat().st_size > 0 for png in galleries.values())
    assert not [p for p in tmp_path.rglob(".*")], "temporary files were left behind"


def test_morphology_off_keeps_the_crops_and_measures_no_features(small, tmp_path):
    on, _ = _translate(small, tmp_path / "on", chunk_cells=CHUNK)
    off, _ = _translate(small, tmp_path / "off", chunk_cells=CHUNK, morphology=False)
    for source in ("rna", "image"):
        with_feats, crops_only = ad.read_h5ad(on[(source, "image")]), ad.read_h5ad(off[(source, "image")])
        assert with_feats.n_vars > 0 and crops_only.shape == (N_CELLS, 0)
        np.testing.assert_array_equal(crops_only.obsm["image"], with_feats.obsm["image"])
        pd.testing.assert_frame_equal(crops_only.obs, with_feats.obs)
    np.testing.assert_array_equal(ad.read_h5ad(off[("image", "rna")]).X, ad.read_h5ad(on[("image", "rna")]).X)
    # off changes what is written (a rerun); the default leaves the digest as it was
    config = _config(small["paths"])
    before = stages.stage_settings(config, "translate")
    assert "morphology" not in before
    config["translation"]["morphology"] = False
    assert stages.stage_settings(config, "translate") != before


def test_translations_read_in_backed_mode(small, tmp_path):
    """Evaluation opens translations backed and reads a few rows: they equal the rows read whole."""
    outputs, _ = _translate(small, tmp_path, chunk_cells=CHUNK, morphology=False)
    rows = np.array([240, 3, 101, 99, 100])  # across the pieces, in any order
    for pair in (("image", "rna"), ("rna", "image"), ("rna", "atac")):
        whole = ad.read_h5ad(outputs[pair])
        backed = read_h5ad(outputs[pair], "translation", backed=True)
        try:
            assert backed.shape == whole.shape
            np.testing.assert_array_equal(take_rows(backed.X, rows), whole.X[rows])
        finally:
            backed.file.close()
    with h5py.File(outputs[("image", "rna")], "r") as f:
        assert f["X"].chunks[1] == f["X"].shape[1]  # whole rows per HDF5 chunk: a row is one read


def test_a_failed_translation_leaves_no_file(small, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = CrossModalModel.translate

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # the second piece of the first source
            raise RuntimeError("interrupted")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CrossModalModel, "translate", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        _translate(small, tmp_path, chunk_cells=CHUNK)
    assert not list(tmp_path.rglob("*.h5ad")) and not list(tmp_path.rglob(".*"))


def test_memory_grows_with_the_chunk_not_the_cells(tmp_path):
    """60,000 RNA cells into crops in pieces of 2,000: the peak is a small part of the output."""
    rna = make_domains(60_000, modalities=("rna",), seed=1)["rna"]
    image = make_domains(200, modalities=("image",), image_size=16, seed=2)["image"]
    paths = _prepared(tmp_path, {"rna": rna, "image": image})
    folder = _saved_model({"rna": rna[:500].copy(), "image": image}, tmp_path / "model")
    del rna, image
    config = validate_config({
        "run": "t",
        "domains": {"rna": {"modality": "rna", "input": str(paths["rna"])},
                    "image": {"modality": "image", "input": str(paths["image"])}},
    })
    # read and registered as the stage does; traced from here: the translation itself
    sources = stages.translation._read_translation_sources(config, paths)
    model = CrossModalModel.load(folder, sources)
    dest = tmp_path / "rna_to_image.h5ad"
    tracemalloc.start()
    try:
        stages.translate_in_chunks(model, "rna", sources["rna"], {"image": dest}, chunk_cells=2000, morphology=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with h5py.File(dest, "r") as f:
        datasets = [f["X"], *f["obsm"].values(), *f["layers"].values()]
        output_bytes = sum(d.size * d.dtype.itemsize for d in datasets)
    assert output_bytes > 60e6  # the crops (and latents), as one translate() call would hold them
    assert peak < output_bytes / 4, f"peak {peak / 1e6:.0f} MB for {output_bytes / 1e6:.0f} MB of translation"


@pytest.mark.parametrize("chunk", [0, 50, -1000, 1.5, "many"])
def test_a_bad_chunk_size_is_rejected(small, chunk):
    with pytest.raises(InputError, match="chunk_cells"):
        _config(small["paths"], chunk_cells=chunk)
