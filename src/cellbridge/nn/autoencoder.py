"""One autoencoder per domain and the module that bundles them with the alignment loss."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .conv import ConvDecoder, ConvEncoder
from .likelihoods import Likelihood, gaussian_kl, make_likelihood, reparameterise
from .mlp import VectorDecoder, VectorEncoder

#: architecture options a domain may set, with their defaults per kind of domain
VECTOR_DEFAULTS: dict[str, Any] = {
    "hidden_dims": [256, 128],
    "dropout": 0.1,
    "norm": "layer",
    "input_dropout": 0.1,
    "learn_scale": False,
}
IMAGE_DEFAULTS: dict[str, Any] = {
    "hidden_dims": [256],
    "dropout": 0.1,
    "norm": "layer",
    "conv_channels": [16, 32, 64, 128, 128],
    "learn_scale": False,
}


def architecture_options(modality: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fill architecture defaults for ``modality`` and reject unknown option names."""
    defaults = IMAGE_DEFAULTS if modality == "image" else VECTOR_DEFAULTS
    opts = dict(defaults)
    unknown = set(options or {}) - set(defaults)
    if unknown:
        raise ValueError(f"unknown architecture option(s) {sorted(unknown)} for a {modality} domain; known: {sorted(defaults)}")
    opts.update(options or {})
    for key in ("hidden_dims", "conv_channels"):
        if key in opts:
            opts[key] = [int(v) for v in opts[key]]
    return opts


class DomainAutoencoder(nn.Module):
    """Encoder, decoder and likelihood of one domain.

    Parameters
    ----------
    modality
        ``"rna"``, ``"atac"``, ``"protein"``, ``"features"`` or ``"image"``.
    likelihood
        Resolved likelihood name (see :mod:`cellbridge.nn.likelihoods`).
    latent_dim
        Size of the shared latent space.
    n_features
        Number of features in ``X`` (vector domains).
    image_size
        Crop side (image domains).
    variational
        VAE (mean and log-variance) instead of a deterministic autoencoder.
    x_scale, default_library
        Constants of count likelihoods (see :class:`~cellbridge.nn.likelihoods.NegativeBinomial`).
    variance
        Data variance that normalises squared-error likelihoods (see :class:`~cellbridge.nn.likelihoods.Gaussian`).
    architecture
        Options from :func:`architecture_options`; the decoder mirrors the encoder widths.
    """

    def __init__(
        self,
        *,
        modality: str,
        likelihood: str,
        latent_dim: int,
        n_features: int = 0,
        image_size: int = 0,
        variational: bool = False,
        x_scale: float = 1e4,
        default_library: float = 1e4,
        variance: float = 1.0,
        architecture: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        arch = architecture_options(modality, architecture)
        self.modality = modality
        self.input_key = "image" if modality == "image" else "x"
        hidden: Sequence[int] = arch["hidden_dims"]
        common = {"dropout": arch["dropout"], "norm": arch["norm"]}
        if modality == "image":
            chans = arch["conv_channels"]
            self.encoder: nn.Module = ConvEncoder(
                image_size, latent_dim, conv_channels=chans, hidden_dims=hidden, variational=variational, **common
            )
            self.decoder: nn.Module = ConvDecoder(
                latent_dim, image_size, conv_channels=chans, hidden_dims=hidden[::-1], **common
            )
        else:
            self.encoder = VectorEncoder(
                n_features,
                latent_dim,
                hidden_dims=hidden,
                variational=variational,
                input_dropout=arch["input_dropout"],
                **common,
            )
            self.decoder = VectorDecoder(latent_dim, n_features, hidden_dims=hidden[::-1], **common)
        self.likelihood: Likelihood = make_likelihood(
            likelihood,
            n_features=n_features,
            # "mse" means pixels for images and X for vector domains: only images pass a size
            image_size=image_size if modality == "image" else 0,
            learn_scale=arch["learn_scale"],
            x_scale=x_scale,
            default_library=default_library,
            variance=variance,
        )

    def encode(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latent ``(mean, logvar)`` of a batch (``logvar`` is ``None`` for a plain AE)."""
        return self.encoder(batch[self.input_key])

    def reconstruction_loss(self, z: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Per-cell negative log-likelihood of the batch's data given latent ``z``."""
        out = self.decoder(z)
        return self.likelihood.loss(out, batch[self.likelihood.target], library=batch.get("library"))

    @torch.no_grad()
    def predict(self, z: torch.Tensor, *, library: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Decoded predictions for latent ``z`` (see :meth:`Likelihood.predict`)."""
        return self.likelihood.predict(self.decoder(z), library=library)


@dataclass
class LossOutput:
    """The model's objective on a set of batches, term by term (scvi-tools' ``LossOutput`` idea).

    Attributes
    ----------
    total
        The weighted sum that is minimised.
    terms
        Every term under the name the training history reports it by: ``recon_<domain>``,
        ``kl_<domain>`` (variational domains), ``align`` (when computed), ``label_loss`` and
        ``label_acc`` (with a label head; the accuracy is reported, never weighted).
    """

    total: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


class CrossModalModule(nn.Module):
    """All per-domain autoencoders, the alignment loss and the optional label head.

    Parameters
    ----------
    autoencoders
        One :class:`DomainAutoencoder` per domain name.
    aligner
        Alignment loss module (see :mod:`cellbridge.align`).
    classifier
        Label head on the latent (:class:`cellbridge.align.LabelClassifier`),
        one head shared by all domains; ``None`` without label supervision.
    """

    def __init__(
        self, autoencoders: Mapping[str, DomainAutoencoder], aligner: nn.Module, *, classifier: nn.Module | None = None
    ):
        super().__init__()
        self.autoencoders = nn.ModuleDict(dict(autoencoders))
        self.aligner = aligner
        self.classifier = classifier

    @property
    def domains(self) -> list[str]:
        return list(self.autoencoders.keys())

    def critic_parameters(self) -> list[nn.Parameter]:
        """Parameters trained against the encoders (the adversarial discriminator)."""
        return list(self.aligner.critic_parameters())

    def cooperative_parameters(self) -> list[nn.Parameter]:
        """Everything the main optimiser updates: autoencoders, likelihood parameters, label head."""
        critic = {id(p) for p in self.critic_parameters()}
        return [p for p in self.parameters() if id(p) not in critic]

    def domain_losses(
        self, name: str, batch: Mapping[str, torch.Tensor], *, sample: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Encode and reconstruct one domain's batch.

        Returns
        -------
        mean
            Latent means (used for alignment and supervision: they are what
            :meth:`get_latent` reports at inference).
        recon
            Mean reconstruction loss over the batch.
        kl
            Mean KL term (``None`` for a deterministic autoencoder).
        """
        ae = self.autoencoders[name]
        mean, logvar = ae.encode(batch)
        z = reparameterise(mean, logvar, sample=sample)
        recon = ae.reconstruction_loss(z, batch).mean()
        kl = gaussian_kl(mean, logvar).mean() if logvar is not None else None
        return mean, recon, kl

    def loss(
        self,
        latents: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor | None],
        recon: Mapping[str, torch.Tensor],
        kl: Mapping[str, torch.Tensor | None],
        *,
        kl_weight: float,
        align_weight: float | None,
        label_weight: float,
        label_smoothing: float = 0.0,
    ) -> LossOutput:
        """The objective from each domain's :meth:`domain_losses` (one place for training and validation).

        Parameters
        ----------
        latents, labels
            Latent means and label codes (``None``: unlabelled domain), in :attr:`domains` order.
        recon, kl
            Per domain its mean reconstruction loss and KL term (``None`` for a plain AE).
        kl_weight, label_weight
            Weights of the KL terms and of the label head's cross-entropy.
        align_weight
            Weight of the alignment term; ``None`` skips computing it (a training step in
            warm-up, where a weight of 0 would cost an OT solve to add zeros).
        label_smoothing
            Passed to the label head (see :meth:`cellbridge.align.LabelClassifier.loss`).

        Every term is accumulated in the dtype of the first reconstruction term, so a caller
        that averages over chunks in float64 (validation) sums in float64.
        """
        first = recon[self.domains[0]]
        total = torch.zeros((), device=first.device, dtype=first.dtype)
        terms: dict[str, torch.Tensor] = {}
        for name in self.domains:
            terms[f"recon_{name}"] = recon[name]
            total = total + recon[name]
            if kl[name] is not None:
                terms[f"kl_{name}"] = kl[name]
                total = total + kl_weight * kl[name]
        if align_weight is not None:
            align = self.aligner(latents, labels)
            terms["align"] = align
            total = total + align_weight * align.to(total.dtype)
        if self.classifier is not None:
            label_loss, label_acc = self.classifier.loss(latents, labels, smoothing=label_smoothing)
            terms["label_loss"], terms["label_acc"] = label_loss, label_acc
            total = total + label_weight * label_loss.to(total.dtype)
        return LossOutput(total, terms)
