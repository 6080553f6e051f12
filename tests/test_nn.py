"""Encoders, decoders and likelihoods: shapes, and losses that prefer the right answer."""

import math

import numpy as np
import pytest
import torch

from cellbridge.nn import (
    Bernoulli,
    ConvDecoder,
    ConvEncoder,
    DomainAutoencoder,
    Gaussian,
    ImageBCE,
    ImageMSE,
    NegativeBinomial,
    VectorDecoder,
    VectorEncoder,
    gaussian_kl,
    n_stages_for,
    reparameterise,
    resolve_likelihood,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
@pytest.mark.parametrize("variational", [False, True])
def test_vector_encoder_decoder_shapes(norm, variational):
    torch.manual_seed(0)
    enc = VectorEncoder(30, 5, hidden_dims=[16, 8], norm=norm, variational=variational, input_dropout=0.1)
    dec = VectorDecoder(5, 30, hidden_dims=[8, 16], norm=norm)
    mean, logvar = enc(torch.randn(7, 30))
    assert mean.shape == (7, 5)
    assert (logvar is not None) == variational
    if variational:
        assert logvar.shape == (7, 5)
    assert dec(mean).shape == (7, 30)


@pytest.mark.parametrize("size,stages", [(8, 1), (16, 2), (32, 3), (64, 4), (128, 5)])
def test_stage_count_follows_crop_size(size, stages):
    assert n_stages_for(size) == stages


@pytest.mark.parametrize("size", [0, 12, 48, 4])
def test_non_power_of_two_crop_rejected(size):
    with pytest.raises(ValueError, match="power-of-two"):
        n_stages_for(size)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_conv_shapes(size, norm):
    torch.manual_seed(0)
    enc = ConvEncoder(size, 6, conv_channels=[4, 8], hidden_dims=[16], norm=norm, variational=True)
    dec = ConvDecoder(6, size, conv_channels=[4, 8], hidden_dims=[16], norm=norm)
    mean, logvar = enc(torch.rand(3, size, size))
    assert mean.shape == logvar.shape == (3, 6)
    assert dec(mean).shape == (3, size, size)


def test_domain_autoencoder_predictions():
    torch.manual_seed(0)
    rna = DomainAutoencoder(modality="rna", likelihood="nb", latent_dim=4, n_features=12, x_scale=5e3, default_library=800)
    z = torch.randn(5, 4)
    pred = rna.predict(z)
    assert pred["x"].shape == pred["expected_counts"].shape == (5, 12)
    # expected counts sum to the default library; X-space values are log1p(proportion * x_scale)
    torch.testing.assert_close(pred["expected_counts"].sum(1), torch.full((5,), 800.0))
    torch.testing.assert_close(pred["x"], torch.log1p(pred["expected_counts"] / 800 * 5e3))
    img = DomainAutoencoder(modality="image", likelihood="mse", latent_dim=4, image_size=16, architecture={"conv_channels": [4, 8]})
    crops = img.predict(z)["image"]
    assert crops.shape == (5, 16, 16)
    assert float(crops.min()) >= 0 and float(crops.max()) <= 1


def test_unknown_architecture_option_rejected():
    with pytest.raises(ValueError, match="conv_channels"):
        DomainAutoencoder(modality="rna", likelihood="gaussian", latent_dim=4, n_features=3, architecture={"conv_channels": [4]})


def test_resolve_likelihood():
    assert resolve_likelihood("auto", "rna") == "gaussian"
    assert resolve_likelihood("auto", "atac") == "bernoulli"
    assert resolve_likelihood("auto", "image") == "mse"
    assert resolve_likelihood("nb", "rna") == "nb"
    with pytest.raises(ValueError, match="does not suit"):
        resolve_likelihood("bernoulli", "image")
    with pytest.raises(ValueError, match="unknown modality"):
        resolve_likelihood("auto", "spatial")


def test_likelihood_target_is_what_the_built_likelihood_reads():
    from cellbridge.nn.likelihoods import LIKELIHOODS_BY_MODALITY, likelihood_target, make_likelihood

    for modality, names in LIKELIHOODS_BY_MODALITY.items():
        size = {"image_size": 16} if modality == "image" else {"n_features": 5}
        for name in names:
            assert likelihood_target(name, modality) == make_likelihood(name, **size).target, (modality, name)
    assert likelihood_target("mse", "features") == "x"  # the vector MSE reads X, not crops
    assert likelihood_target("auto", "rna") == "x" and likelihood_target("nb", "rna") == "counts"


def _right_vs_wrong(lik, right_out, wrong_out, data, **kw):
    good = lik.loss(right_out, data, **kw)
    bad = lik.loss(wrong_out, data, **kw)
    assert torch.isfinite(good).all() and torch.isfinite(bad).all()
    assert good.shape == (data.shape[0],)
    assert float(good.mean().detach()) < float(bad.mean().detach())


@pytest.mark.parametrize("learn_scale", [False, True])
def test_gaussian_prefers_truth(learn_scale):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 8, generator=gen)
    _right_vs_wrong(Gaussian(8, learn_scale=learn_scale), x, x + 1.0, x)
    # normalised by the data variance: predicting the mean scores about 1
    lik = Gaussian(8, variance=float(x.var(0, unbiased=False).mean()))
    assert float(lik.loss(x.mean(0).expand_as(x), x).mean()) == pytest.approx(1.0, rel=1e-4)


def test_negative_binomial_prefers_truth():
    gen = torch.Generator().manual_seed(0)
    prop = torch.softmax(torch.randn(50, 10, generator=gen) * 2, 1)
    library = torch.full((50,), 500.0)
    counts = torch.poisson(prop * library[:, None], generator=gen)
    lik = NegativeBinomial(10)
    right = torch.log(prop)  # decoder logits whose softmax is the true proportions
    wrong = torch.log(prop.flip(1))
    _right_vs_wrong(lik, right, wrong, counts, library=library)
    with pytest.raises(ValueError, match="library"):
        lik.loss(right, counts)


def test_negative_binomial_log_prob_matches_torch():
    x = torch.tensor([0.0, 3.0, 10.0])
    mu = torch.tensor([0.5, 4.0, 8.0])
    theta = torch.tensor([2.0, 2.0, 2.0])
    from cellbridge.nn.likelihoods import nb_log_prob

    ref = torch.distributions.NegativeBinomial(total_count=theta, probs=mu / (mu + theta)).log_prob(x)
    torch.testing.assert_close(nb_log_prob(x, mu.log(), theta.log()), ref)


def test_bernoulli_prefers_truth():
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(30, 12, generator=gen)
    b = (torch.rand(30, 12, generator=gen) < p).float()
    lik = Bernoulli(12)
    _right_vs_wrong(lik, torch.logit(p.clamp(0.01, 0.99)), torch.logit((1 - p).clamp(0.01, 0.99)), b)
    pred = lik.predict(torch.zeros(2, 12))
    torch.testing.assert_close(pred["x"], torch.full((2, 12), 0.5))


@pytest.mark.parametrize("cls", [ImageMSE, ImageBCE])
def test_image_likelihoods_prefer_truth(cls):
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(6, 16, 16, generator=gen) * 0.9 + 0.05
    lik = cls(16)
    _right_vs_wrong(lik, torch.logit(img), torch.logit(img.flip(2)), img)


def test_kl_and_reparameterisation():
    mean, logvar = torch.zeros(4, 3), torch.zeros(4, 3)
    assert torch.allclose(gaussian_kl(mean, logvar), torch.zeros(4))
    assert float(gaussian_kl(mean + 1, logvar).mean()) == pytest.approx(0.5)
    torch.manual_seed(0)
    assert torch.equal(reparameterise(mean + 2, logvar, sample=False), mean + 2)
    draws = reparameterise(torch.zeros(20000, 1), torch.full((20000, 1), math.log(4.0)), sample=True)
    assert float(draws.std()) == pytest.approx(2.0, rel=0.05)
    assert np.isfinite(draws.numpy()).all()


def _module(aligner: str = "mmd", *, variational: bool = False, labels: int = 0):
    from cellbridge.align import LabelClassifier, get_aligner
    from cellbridge.nn import CrossModalModule

    aes = {
        name: DomainAutoencoder(modality="protein", likelihood="mse", latent_dim=3, n_features=6, variational=variational)
        for name in ("a", "b")
    }
    return CrossModalModule(
        aes,
        get_aligner(aligner, latent_dim=3, n_domains=2, n_labels=labels),
        classifier=LabelClassifier(3, labels) if labels else None,
    )


@pytest.mark.parametrize("variational", [False, True])
def test_module_loss_is_the_weighted_sum_of_its_named_terms(variational):
    torch.manual_seed(0)
    module = _module(variational=variational, labels=2)
    batches = {d: {"x": torch.randn(16, 6), "labels": torch.randint(0, 2, (16,))} for d in module.domains}
    latents, labels, recon, kl = [], [], {}, {}
    for d in module.domains:
        mean, recon[d], kl[d] = module.domain_losses(d, batches[d], sample=False)
        latents.append(mean)
        labels.append(batches[d]["labels"])
    out = module.loss(latents, labels, recon, kl, kl_weight=0.5, align_weight=2.0, label_weight=3.0)
    expected_names = {"recon_a", "recon_b", "align", "label_loss", "label_acc"} | ({"kl_a", "kl_b"} if variational else set())
    assert set(out.terms) == expected_names
    t = out.terms
    expected = t["recon_a"] + t["recon_b"] + 2.0 * t["align"] + 3.0 * t["label_loss"]
    if variational:
        expected = expected + 0.5 * (t["kl_a"] + t["kl_b"])
    torch.testing.assert_close(out.total, expected)
    out.total.backward()  # one graph through every term
    assert all(torch.isfinite(p.grad).all() for p in module.cooperative_parameters() if p.grad is not None)
    # no alignment term asked for: none computed, none in the total
    skipped = module.loss([z.detach() for z in latents], labels, recon, kl, kl_weight=0.5, align_weight=None, label_weight=3.0)
    assert "align" not in skipped.terms
    torch.testing.assert_close(skipped.total.detach(), (expected - 2.0 * t["align"]).detach())


def test_module_loss_sums_in_the_dtype_of_its_reconstruction_terms():
    # validation averages over chunks in float64; the total must not round through float32
    torch.manual_seed(0)
    module = _module("wasserstein")
    latents = [torch.randn(8, 3), torch.randn(8, 3) + 1]
    recon = {"a": torch.tensor(1.0 + 1e-12, dtype=torch.float64), "b": torch.tensor(2.0, dtype=torch.float64)}
    out = module.loss(latents, [None, None], recon, {"a": None, "b": None}, kl_weight=0.0, align_weight=0.1, label_weight=0.0)
    assert out.total.dtype == torch.float64
    assert float(out.total) == 1.0 + 1e-12 + 2.0 + 0.1 * float(out.terms["align"])
