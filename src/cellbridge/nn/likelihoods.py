"""Reconstruction likelihoods: how a decoder output is compared with the data.

Every likelihood turns the raw decoder output into

* a per-cell loss (:meth:`Likelihood.loss`): the negative log-likelihood averaged
  over features (or pixels), so that domains with 50 or 5,000 features contribute
  losses of similar size and one alignment weight suits every domain pair;
* predictions (:meth:`Likelihood.predict`): ``"x"`` in the space of the prepared
  ``X`` (what translations return), plus ``"expected_counts"`` (count models),
  ``"probability"`` (binary models) or ``"image"`` (crops).

Which data tensor a likelihood is compared with is given by
:attr:`Likelihood.target`: ``"x"`` (prepared ``X``), ``"counts"`` (``layers["counts"]``
with the cell's library size), ``"binary"`` (``layers["binary"]`` or ``X > 0``) or
``"image"`` (``obsm["image"]``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..modalities import REGISTRY, get_modality

#: likelihoods each modality may use; the first entry is what ``"auto"`` picks (the
#: registry's, :attr:`cellbridge.modalities.Modality.likelihoods`, where the choice is explained)
LIKELIHOODS_BY_MODALITY: dict[str, tuple[str, ...]] = {name: m.likelihoods for name, m in REGISTRY.items()}


def resolve_likelihood(name: str, modality: str) -> str:
    """Resolve ``"auto"`` and check that ``name`` suits ``modality``."""
    options = get_modality(modality).likelihoods
    if name == "auto":
        return options[0]
    if name not in options:
        raise ValueError(f"likelihood {name!r} does not suit modality {modality!r}; choose from {options} or 'auto'")
    return name


class Likelihood(nn.Module):
    """Base class; subclasses set :attr:`target` and implement ``loss``/``predict``."""

    name: ClassVar[str]
    target: ClassVar[str]

    def loss(self, out: torch.Tensor, data: torch.Tensor, *, library: torch.Tensor | None = None) -> torch.Tensor:
        """Negative log-likelihood per cell, averaged over features. Shape ``(batch,)``."""
        raise NotImplementedError

    def predict(self, out: torch.Tensor, *, library: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Predictions from decoder output; always contains ``"x"`` (or ``"image"`` for crops)."""
        raise NotImplementedError


class Gaussian(Likelihood):
    """Gaussian on prepared values (``X``).

    With ``learn_scale=False`` the loss is the mean squared error divided by
    ``variance``, the data's mean per-feature variance, i.e. the fraction of
    variance left unexplained (1 for predicting every cell as the average cell),
    which puts domains with different value ranges on the same footing. With
    ``learn_scale=True`` each feature has a learned standard deviation and the
    loss is the Gaussian negative log-likelihood without its constant, so noisy
    features are down-weighted.
    """

    name = "gaussian"
    target = "x"

    def __init__(self, n_features: int, *, learn_scale: bool = False, variance: float = 1.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(n_features)) if learn_scale else None
        self.variance = float(variance)

    def loss(self, out, data, *, library=None):
        sq = (data - out) ** 2
        if self.log_scale is None:
            return sq.mean(1) / self.variance
        return (0.5 * sq * torch.exp(-2 * self.log_scale) + self.log_scale).mean(1)

    def predict(self, out, *, library=None):
        return {"x": out}


def nb_log_prob(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """Element-wise negative binomial log-probability (mean/inverse-dispersion form).

    Parameters
    ----------
    x
        Observed counts.
    log_mu
        Log of the mean.
    log_theta
        Log of the inverse dispersion (broadcast over cells).
    """
    theta = log_theta.exp()
    log_theta_mu = torch.logaddexp(log_theta, log_mu)  # log(theta + mu), stable for tiny mu
    return (
        theta * (log_theta - log_theta_mu)
        + x * (log_mu - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )


class NegativeBinomial(Likelihood):
    """scVI-style negative binomial on raw counts.

    The decoder gives gene proportions (softmax); the NB mean is proportions times
    the cell's library size (counts summed over the modelled genes), and every
    gene has a learned inverse dispersion. Predictions in ``X``'s space are
    ``log1p(proportions * x_scale)``, where ``x_scale`` is the factor that turns a
    cell's proportions over the modelled genes into the normalised values from
    which ``X = log1p(...)`` was made: ``target_sum`` times the fraction of the
    cell's counts that fall in these genes (estimated from the training data,
    see :func:`cellbridge.data.estimate_x_scale`).

    Parameters
    ----------
    n_features
        Number of genes.
    x_scale
        Factor mapping proportions to normalised expression (see above).
    default_library
        Library size used for expected counts when none is given (the median
        library of the training cells).
    """

    name = "nb"
    target = "counts"

    def __init__(self, n_features: int, *, x_scale: float = 1e4, default_library: float = 1e4):
        super().__init__()
        # theta = e^2 ~ 7.4 at start: moderate over-dispersion, typical of UMI data
        self.log_theta = nn.Parameter(torch.full((n_features,), 2.0))
        self.x_scale = float(x_scale)
        self.default_library = float(default_library)

    def loss(self, out, data, *, library=None):
        if library is None:
            raise ValueError("the negative binomial likelihood needs the cells' library sizes")
        log_mu = F.log_softmax(out, dim=1) + torch.log(library.clamp_min(1.0)).unsqueeze(1)
        return -nb_log_prob(data, log_mu, self.log_theta).mean(1)

    def predict(self, out, *, library=None):
        rho = F.softmax(out, dim=1)
        if library is None:
            library = torch.full((out.shape[0],), self.default_library, device=out.device, dtype=out.dtype)
        return {"x": torch.log1p(rho * self.x_scale), "expected_counts": rho * library.unsqueeze(1)}


class Bernoulli(Likelihood):
    """Bernoulli on binarised accessibility (``layers["binary"]`` or ``X > 0``).

    Predictions in ``X``'s space are the accessibility probabilities (also
    returned as ``"probability"``); a TF-IDF of the probabilities depends on the
    preprocessing and is left to the caller.
    """

    name = "bernoulli"
    target = "binary"

    def __init__(self, n_features: int):
        super().__init__()

    def loss(self, out, data, *, library=None):
        return F.binary_cross_entropy_with_logits(out, data, reduction="none").mean(1)

    def predict(self, out, *, library=None):
        p = torch.sigmoid(out)
        return {"x": p, "probability": p}


class ImageMSE(Likelihood):
    """Mean squared error between sigmoid pixel predictions and the crops.

    Divided by ``variance`` (the crops' mean per-pixel variance) like
    :class:`Gaussian`, so a near-empty background does not make the image loss
    negligible next to the other domains'.
    """

    name = "mse"
    target = "image"

    def __init__(self, image_size: int, *, variance: float = 1.0):
        super().__init__()
        self.variance = float(variance)

    def loss(self, out, data, *, library=None):
        return ((torch.sigmoid(out) - data) ** 2).flatten(1).mean(1) / self.variance

    def predict(self, out, *, library=None):
        return {"image": torch.sigmoid(out)}


class VectorMSE(Gaussian):
    """Mean squared error on prepared values (``X``), divided by the data's variance.

    The ``"mse"`` likelihood of vector domains (``features``): the loss of
    :class:`Gaussian` without a learned scale, whatever ``learn_scale`` says, for
    users who want every feature weighed by its plain squared error.
    """

    name = "mse"
    target = "x"

    def __init__(self, n_features: int, *, variance: float = 1.0):
        super().__init__(n_features, learn_scale=False, variance=variance)


class ImageBCE(ImageMSE):
    """Binary cross-entropy with intensities in [0, 1] as soft targets (sharper crops than MSE)."""

    name = "bce"

    def loss(self, out, data, *, library=None):
        return F.binary_cross_entropy_with_logits(out, data.clamp(0.0, 1.0), reduction="none").flatten(1).mean(1)


def make_likelihood(
    name: str,
    *,
    n_features: int = 0,
    image_size: int = 0,
    learn_scale: bool = False,
    x_scale: float = 1e4,
    default_library: float = 1e4,
    variance: float = 1.0,
) -> Likelihood:
    """Build the likelihood called ``name`` (already resolved from ``"auto"``).

    ``"mse"`` is :class:`ImageMSE` when ``image_size`` is given (image domains) and
    :class:`VectorMSE` otherwise.
    """
    cls = likelihood_class(name, image=image_size > 0)
    if cls is Gaussian:
        return Gaussian(n_features, learn_scale=learn_scale, variance=variance)
    if cls is NegativeBinomial:
        return NegativeBinomial(n_features, x_scale=x_scale, default_library=default_library)
    if cls is ImageMSE:
        return ImageMSE(image_size, variance=variance)
    if cls is VectorMSE:
        return VectorMSE(n_features, variance=variance)
    return cls(image_size if cls is ImageBCE else n_features)


def likelihood_class(name: str, *, image: bool) -> type[Likelihood]:
    """The class of the likelihood called ``name`` (resolved) for an image or a vector domain."""
    classes: dict[str, type[Likelihood]] = {
        "gaussian": Gaussian,
        "nb": NegativeBinomial,
        "bernoulli": Bernoulli,
        "mse": ImageMSE if image else VectorMSE,
        "bce": ImageBCE,
    }
    if name not in classes:
        raise ValueError(f"unknown likelihood {name!r}")
    return classes[name]


def likelihood_target(name: str, modality: str) -> str:
    """What the likelihood ``name`` (or ``"auto"``) of a ``modality`` domain reads (:attr:`Likelihood.target`)."""
    return likelihood_class(resolve_likelihood(name, modality), image=modality == "image").target


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL divergence of ``N(mean, exp(logvar))`` from ``N(0, I)`` per cell, averaged over latent dims."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean(1)


def reparameterise(mean: torch.Tensor, logvar: torch.Tensor | None, *, sample: bool) -> torch.Tensor:
    """Draw ``z = mean + sigma * eps`` when ``sample`` (training a VAE); otherwise return the mean."""
    if logvar is None or not sample:
        return mean
    return mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)


