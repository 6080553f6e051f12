"""Torch modules of cellbridge: encoders, decoders, likelihoods and the per-domain autoencoder."""

from .autoencoder import CrossModalModule, DomainAutoencoder, LossOutput, architecture_options
from .conv import ConvDecoder, ConvEncoder, n_stages_for
from .likelihoods import (
    LIKELIHOODS_BY_MODALITY,
    Bernoulli,
    Gaussian,
    ImageBCE,
    ImageMSE,
    Likelihood,
    NegativeBinomial,
    VectorMSE,
    gaussian_kl,
    make_likelihood,
    reparameterise,
    resolve_likelihood,
)
from .mlp import MLP, VectorDecoder, VectorEncoder

__all__ = [
    "LIKELIHOODS_BY_MODALITY",
    "MLP",
    "Bernoulli",
    "ConvDecoder",
    "ConvEncoder",
    "CrossModalModule",
    "DomainAutoencoder",
    "Gaussian",
    "ImageBCE",
    "ImageMSE",
    "Likelihood",
    "LossOutput",
    "NegativeBinomial",
    "VectorMSE",
    "VectorDecoder",
    "VectorEncoder",
    "architecture_options",
    "gaussian_kl",
    "make_likelihood",
    "n_stages_for",
    "reparameterise",
    "resolve_likelihood",
]
