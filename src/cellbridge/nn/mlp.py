"""Fully connected encoders and decoders for vector domains (RNA, ATAC, protein, features)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NORMS = ("batch", "layer", "none")


def check_norm(norm: str) -> str:
    """Return ``norm`` if it names a supported normalisation, else raise ``ValueError``."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def norm_1d(norm: str, width: int) -> nn.Module:
    """Normalisation layer for a ``(batch, width)`` activation."""
    check_norm(norm)
    if norm == "batch":
        return nn.BatchNorm1d(width)
    if norm == "layer":
        return nn.LayerNorm(width)
    return nn.Identity()


class MLP(nn.Sequential):
    """Stack of ``Linear -> norm -> activation -> dropout`` blocks.

    Parameters
    ----------
    in_dim
        Input width.
    hidden_dims
        Width of every hidden block; an empty sequence gives an identity map
        (so ``out_dim`` of the stack is ``in_dim``).
    dropout
        Dropout probability after every block.
    norm
        ``"batch"``, ``"layer"`` or ``"none"``.
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], *, dropout: float = 0.0, norm: str = "layer"):
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden_dims:
            layers += [nn.Linear(width, int(h)), norm_1d(norm, int(h)), nn.LeakyReLU(0.2)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        super().__init__(*layers)
        self.out_dim = width


class GaussianHead(nn.Module):
    """Map features to a latent mean and, for a variational encoder, a log-variance.

    A deterministic head returns ``(mean, None)``.
    """

    def __init__(self, in_dim: int, latent_dim: int, *, variational: bool):
        super().__init__()
        self.mean = nn.Linear(in_dim, latent_dim)
        self.logvar = nn.Linear(in_dim, latent_dim) if variational else None

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        mean = self.mean(h)
        if self.logvar is None:
            return mean, None
        # clamped so that an early large activation cannot overflow exp() in the KL term
        return mean, self.logvar(h).clamp(-10.0, 10.0)


class VectorEncoder(nn.Module):
    """Encode a feature vector into the shared latent space.

    Parameters
    ----------
    n_features
        Number of input features.
    latent_dim
        Size of the shared latent space.
    hidden_dims
        Hidden widths, input side first.
    dropout, norm
        See :class:`MLP`.
    variational
        If true, also return a log-variance (VAE encoder).
    input_dropout
        Dropout applied to the input features (a denoising autoencoder), which
        keeps the encoder from relying on a handful of genes.
    """

    def __init__(
        self,
        n_features: int,
        latent_dim: int,
        *,
        hidden_dims: Sequence[int] = (256, 128),
        dropout: float = 0.1,
        norm: str = "layer",
        variational: bool = False,
        input_dropout: float = 0.0,
    ):
        super().__init__()
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout > 0 else nn.Identity()
        self.body = MLP(n_features, hidden_dims, dropout=dropout, norm=norm)
        self.head = GaussianHead(self.body.out_dim, latent_dim, variational=variational)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(mean, logvar)``; ``logvar`` is ``None`` for a deterministic encoder."""
        return self.head(self.body(self.input_dropout(x)))


class VectorDecoder(nn.Module):
    """Decode a latent vector into the parameters of a feature-wise likelihood.

    The final linear layer has ``n_features * n_params`` outputs, returned as a
    ``(batch, n_features)`` tensor when ``n_params == 1``; the likelihood module
    turns these raw outputs into means, proportions or logits.
    """

    def __init__(
        self,
        latent_dim: int,
        n_features: int,
        *,
        hidden_dims: Sequence[int] = (128, 256),
        dropout: float = 0.1,
        norm: str = "layer",
    ):
        super().__init__()
        self.body = MLP(latent_dim, hidden_dims, dropout=dropout, norm=norm)
        self.out = nn.Linear(self.body.out_dim, n_features)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(z))
