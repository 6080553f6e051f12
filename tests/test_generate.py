"""Sampling and latent shift decode into every domain."""

import numpy as np
import pytest
import torch

from cellbridge.generate import generate, latent_shift, sample_latent, shift_features

from _synthetic import FAST_TRAIN, fast_model, make_domains

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    m = fast_model(make_domains(120, image_size=16, seed=0), alignment="mmd", label_key="cell_type", seed=0)
    m.train(max_epochs=3, **FAST_TRAIN)
    return m


def test_sampling_around_a_group_and_decoding(model):
    z_all = model.get_latent("rna")
    z = sample_latent(model, 10, around=z_all[:40], seed=1)
    assert z.shape == (10, 4)
    assert np.allclose(z.mean(0), z_all[:40].mean(0), atol=3 * z_all[:40].std(0).max())
    out = generate(model, z)
    assert set(out) == {"rna", "image"}
    assert out["image"].obsm["image"].shape == (10, 16, 16) and out["rna"].n_obs == 10


def test_deterministic_ae_needs_around(model):
    with pytest.raises(ValueError, match="no prior"):
        sample_latent(model, 5)


def test_latent_shift_moves_source_to_target_mean(model):
    before, after, shift = latent_shift(model, "rna", groupby="cell_type", source="type0", target="type1")
    labels = model.adatas["rna"].obs["cell_type"].astype(str)
    z = model.get_latent("rna")
    np.testing.assert_allclose(shift, z[labels == "type1"].mean(0) - z[labels == "type0"].mean(0), rtol=1e-5)
    np.testing.assert_allclose(after["rna"].obsm["X_cellbridge"].mean(0), z[labels == "type1"].mean(0), atol=1e-4)
    feats = shift_features(after)
    assert feats["image"].ndim == 3 and feats["rna"].shape[1] == model.adatas["rna"].n_vars
    with pytest.raises(ValueError, match="not found"):
        latent_shift(model, "rna", groupby="cell_type", source="type0", target="nope")
