"""The large-data simulator (simulate.images: crops): chunked counts, pooled crops, the files it writes."""

from __future__ import annotations

import copy

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellbridge import InputError
from cellbridge.config import validate_config
from cellbridge.preprocess.image import prepare_image
from cellbridge.simulate import nucleus_traits, simulate_states
from cellbridge.simulate.large import nearest_rendered, pooled_crops, rna_counts, simulate_large, stack_rows
from cellbridge.stages import domain_input, settings_digest, stage_settings
from cellbridge.truth import cell_ids_for, read_truth

CROPS_CONFIG = {
    "simulate": {"atac": False, "images": "crops"},
    "domains": {
        "rna": {"modality": "rna", "input": "simulated"},
        "image": {"modality": "image", "input": "simulated"},
    },
}


def test_rna_chunks_stack_to_int32_csr():
    states = simulate_states(60, seed=3)
    chunked, genes = rna_counts(states, n_genes=100, chunk_size=25, seed=1)
    assert chunked.shape == (60, 100) and chunked.dtype == np.int32 and sp.isspmatrix_csr(chunked)
    assert len(genes) == 100 and chunked.sum() > 0
    parts = [sp.csr_matrix(np.arange(12).reshape(3, 4) % 3), sp.csr_matrix(np.eye(2, 4, dtype=int))]
    expected = sp.vstack(parts).toarray()
    assert np.array_equal(stack_rows(parts).toarray(), expected)


def test_nearest_rendered_maps_rendered_cells_to_themselves():
    states = simulate_states(50, seed=0)
    traits = nucleus_traits(states, seed=1)
    idx = nearest_rendered(traits, 20)
    assert np.array_equal(idx[:20], np.arange(20))
    assert idx.min() >= 0 and idx.max() < 20


def test_pooled_crops_reuse_rendered_nuclei_of_similar_cells():
    states = simulate_states(300, seed=0)
    pooled = pooled_crops(states, crop_size=16, pool_size=40, seed=2)
    assert pooled.crops.shape == (300, 16, 16) and pooled.pool.shape == (40, 16, 16)
    assert np.array_equal(pooled.crops[:40], pooled.pool)
    # a reused crop is its source nucleus up to a rotation/flip and 5 % noise, not a copy
    i = 100
    variants = [np.rot90(pooled.pool[pooled.source[i]], k) for k in range(4)]
    variants += [v[:, ::-1] for v in variants]
    errors = [np.abs(pooled.crops[i] - v).mean() for v in variants]
    assert 0 < min(errors) < 0.05 * pooled.crops[i].mean() + 1e-3
    # nuclei follow the cells' states: the source's type matches more often than chance
    types = states["cell_type"].to_numpy()
    assert (types[pooled.source[40:]] == types[40:]).mean() > 0.5


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("large")
    return out, simulate_large(out, n_cells=400, n_genes=120, crop_size=16, crop_pool=60, seed=5)


def test_simulate_large_writes_unpaired_counts_crops_and_truth(written):
    _, paths = written
    rna, crops = ad.read_h5ad(paths["rna"]), ad.read_h5ad(paths["crops"])
    truth = read_truth(paths["truth"])
    assert rna.shape == (400, 120) and rna.X.dtype == np.int32 and sp.issparse(rna.X)
    assert crops.obsm["image"].shape == (400, 16, 16) and crops.obsm["image"].dtype == np.float32
    for a in (rna, crops):
        assert {"cell_type", "split"} <= set(a.obs.columns)
        assert set(a.obs["split"]) == {"train", "test"}
    # truth pairs every profile by obs name; the two files list cells in different orders
    rna_ids, img_ids = cell_ids_for(rna.obs, truth), cell_ids_for(crops.obs, truth)
    assert pd.notna(rna_ids).all() and pd.notna(img_ids).all()
    assert sorted(rna_ids) == sorted(img_ids) and (rna_ids != img_ids).mean() > 0.9
    by_id = pd.Series(crops.obs["cell_type"].to_numpy(), index=img_ids)
    assert (by_id.loc[rna_ids].to_numpy() == rna.obs["cell_type"].to_numpy()).all()
    assert not rna.obs_names.str.contains("c0").any()  # names reveal no cell id


def test_simulate_large_is_reproducible(written, tmp_path):
    first, paths = written
    again = simulate_large(tmp_path, n_cells=400, n_genes=120, crop_size=16, crop_pool=60, seed=5)
    a, b = ad.read_h5ad(paths["rna"]), ad.read_h5ad(again["rna"])
    assert (a.X != b.X).nnz == 0 and a.obs.equals(b.obs)
    assert np.array_equal(ad.read_h5ad(paths["crops"]).obsm["image"], ad.read_h5ad(again["crops"]).obsm["image"])


def test_written_crops_prepare_as_an_image_domain_with_labels(written):
    _, paths = written
    image = prepare_image(paths["crops"], crop_size=16)
    assert image.n_obs == 400 and image.obsm["image"].shape == (400, 16, 16)
    assert image.obs["cell_type"].notna().all() and image.n_vars > 5  # morphology features in X


def test_crops_config_points_the_image_domain_at_the_crops_file():
    cfg = validate_config(copy.deepcopy(CROPS_CONFIG))
    assert domain_input(cfg, "image").name == "crops.h5ad"
    assert domain_input(cfg, "rna").name == "rna.h5ad"
    assert stage_settings(cfg, "simulate")["images"] == "crops"


def test_the_demo_simulation_settings_do_not_change():
    # the crops-only keys are left out for fields, so an existing demo run is not redone
    demo = validate_config({"domains": copy.deepcopy(CROPS_CONFIG["domains"])})
    settings = stage_settings(demo, "simulate")
    assert not {"images", "crop_size", "crop_pool"} & set(settings)
    changed = copy.deepcopy(demo)
    changed["simulate"]["crop_pool"] = 10
    assert settings_digest(stage_settings(changed, "simulate")) == settings_digest(settings)


@pytest.mark.parametrize(
    ("domain", "match"),
    [
        ({"modality": "atac", "input": "simulated"}, "writes no ATAC"),
        ({"modality": "image", "input": "simulated", "annotations": "simulated"}, "drop 'annotations'"),
    ],
)
def test_crops_config_refuses_what_the_large_simulator_cannot_give(domain, match):
    cfg = copy.deepcopy(CROPS_CONFIG)
    cfg["simulate"]["atac"] = True
    cfg["domains"]["extra"] = domain
    with pytest.raises(InputError, match=match):
        validate_config(cfg, source="scale.yaml")
