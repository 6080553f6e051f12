"""Convolutional encoder and transposed-convolution decoder for square image crops.

Each down-sampling stage halves the crop side (``Conv2d`` with kernel 4, stride 2),
so a crop of side ``S`` (a power of two) needs ``log2(S) - 2`` stages to reach a
4 x 4 feature map; the decoder mirrors this with ``ConvTranspose2d`` stages. One
code path serves 32, 64 and 128 pixel crops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..contract import MIN_CROP_SIDE, check_crop_side
from .mlp import MLP, GaussianHead, check_norm

#: spatial side of the feature map at the bottom of the encoder
BOTTOM_SIDE = MIN_CROP_SIDE // 2  # the smallest crop is one stride-2 stage above it


def n_stages_for(image_size: int) -> int:
    """Number of stride-2 stages that take a crop of side ``image_size`` down to 4 x 4.

    Raises
    ------
    ValueError
        If ``image_size`` is not a power of two of at least 8.
    """
    return int(math.log2(check_crop_side(image_size) // BOTTOM_SIDE))


def stage_channels(channels: Sequence[int], n_stages: int) -> list[int]:
    """Channel count of each stage; a short list is padded by repeating its last entry."""
    if not channels:
        raise ValueError("conv_channels must name at least one channel count")
    chans = [int(c) for c in channels[:n_stages]]
    return chans + [chans[-1]] * (n_stages - len(chans))


def norm_2d(norm: str, channels: int) -> nn.Module:
    """Normalisation layer for a ``(batch, channels, h, w)`` activation.

    ``"layer"`` is a single-group :class:`~torch.nn.GroupNorm`, i.e. layer norm over
    channels and pixels, which does not depend on the batch composition.
    """
    check_norm(norm)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class ConvEncoder(nn.Module):
    """Encode ``(batch, S, S)`` image crops into the shared latent space.

    Parameters
    ----------
    image_size
        Crop side ``S`` (power of two, >= 8).
    latent_dim
        Size of the shared latent space.
    conv_channels
        Channels per down-sampling stage (padded with the last entry).
    hidden_dims
        Fully connected widths between the flattened 4 x 4 map and the latent.
    dropout, norm
        Dropout after the fully connected blocks; normalisation everywhere.
    variational
        If true, also return a log-variance.
    """

    def __init__(
        self,
        image_size: int,
        latent_dim: int,
        *,
        conv_channels: Sequence[int] = (16, 32, 64, 128, 128),
        hidden_dims: Sequence[int] = (256,),
        dropout: float = 0.1,
        norm: str = "layer",
        variational: bool = False,
    ):
        super().__init__()
        self.image_size = int(image_size)
        chans = stage_channels(conv_channels, n_stages_for(image_size))
        layers: list[nn.Module] = []
        c_in = 1
        for c in chans:
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), norm_2d(norm, c), nn.LeakyReLU(0.2)]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.fc = MLP(c_in * BOTTOM_SIDE**2, hidden_dims, dropout=dropout, norm=norm)
        self.head = GaussianHead(self.fc.out_dim, latent_dim, variational=variational)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(mean, logvar)`` for crops of shape ``(batch, S, S)``."""
        h = self.conv(image.unsqueeze(1)).flatten(1)
        return self.head(self.fc(h))


class ConvDecoder(nn.Module):
    """Decode latent vectors into ``(batch, S, S)`` pixel logits.

    The output is unconstrained; the image likelihood applies the sigmoid, which
    keeps predicted intensities in [0, 1] like the prepared crops.
    """

    def __init__(
        self,
        latent_dim: int,
        image_size: int,
        *,
        conv_channels: Sequence[int] = (16, 32, 64, 128, 128),
        hidden_dims: Sequence[int] = (256,),
        dropout: float = 0.1,
        norm: str = "layer",
    ):
        super().__init__()
        self.image_size = int(image_size)
        chans = stage_channels(conv_channels, n_stages_for(image_size))[::-1]
        self.bottom_channels = chans[0]
        self.fc = MLP(latent_dim, hidden_dims, dropout=dropout, norm=norm)
        self.to_map = nn.Linear(self.fc.out_dim, chans[0] * BOTTOM_SIDE**2)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), norm_2d(norm, c_out), nn.LeakyReLU(0.2)]
        # the last stage goes straight to one channel of pixel logits: a further convolution at
        # full resolution would cost more than all other stages together on a CPU
        layers.append(nn.ConvTranspose2d(chans[-1], 1, 4, stride=2, padding=1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.to_map(self.fc(z)).view(-1, self.bottom_channels, BOTTOM_SIDE, BOTTOM_SIDE)
        return self.deconv(h).squeeze(1)
