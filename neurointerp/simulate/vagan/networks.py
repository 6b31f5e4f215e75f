"""VA-GAN's networks, 2D and 3D (Baumgartner et al. 2018; the authors' ``unet_16_2D_bn`` map
generator and ``C3D_fcn_16_2D`` critic, scaled by ``channels``).

* :class:`MapGenerator` ``M``: a U-Net (two 3x3 convolutions with batch normalisation and ReLU per
  level, ``levels`` max-poolings, transposed-convolution up-sampling, skip connections) whose
  last 1x1 convolution outputs the additive map, linear (no activation).
* :class:`Critic` ``D``: a fully convolutional critic (3x3 convolutions + leaky ReLU, max-pooling,
  a 1x1 convolution to one channel, global average pooling) *without* normalisation layers (the
  gradient penalty is per sample; batch normalisation would couple the samples).

Every side of the grid must be a multiple of ``2**levels`` (8 by default).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def _conv(nd):
    return nn.Conv2d if nd == 2 else nn.Conv3d


def _bn(nd, ch):
    return (nn.BatchNorm2d if nd == 2 else nn.BatchNorm3d)(ch)


def _pool(nd):
    return (nn.MaxPool2d if nd == 2 else nn.MaxPool3d)(2)


def _double(nd, cin, cout):
    conv = _conv(nd)
    return nn.Sequential(conv(cin, cout, 3, padding=1), _bn(nd, cout), nn.ReLU(), conv(cout, cout, 3, padding=1), _bn(nd, cout), nn.ReLU())


class MapGenerator(nn.Module):
    """``M``: ``(N, 1, *S)`` -> additive map ``(N, 1, *S)`` (a U-Net, see the module doc)."""

    def __init__(self, nd: int, channels: int = 16, levels: int = 3):
        super().__init__()
        conv = _conv(nd)
        convT = nn.ConvTranspose2d if nd == 2 else nn.ConvTranspose3d
        widths = [channels * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList([_double(nd, 1 if i == 0 else widths[i - 1], widths[i]) for i in range(levels)])
        self.pool = _pool(nd)
        self.bottom = _double(nd, widths[levels - 1], widths[levels])
        self.up = nn.ModuleList([convT(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(levels))])
        self.dec = nn.ModuleList([_double(nd, 2 * widths[i], widths[i]) for i in reversed(range(levels))])
        self.out = conv(widths[0], 1, 1)

    def forward(self, x):
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottom(h)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            h = dec(torch.cat([up(h), skip], 1))
        return self.out(h)


class Critic(nn.Module):
    """``D``: ``(N, 1, *S)`` -> critic score ``(N,)`` (see the module doc)."""

    def __init__(self, nd: int, channels: int = 16, levels: int = 3):
        super().__init__()
        conv = _conv(nd)
        layers: list[nn.Module] = []
        c = 1
        for i in range(levels + 1):
            w = channels * 2**i
            layers += [conv(c, w, 3, padding=1), nn.LeakyReLU(0.2)]
            if i:
                layers += [conv(w, w, 3, padding=1), nn.LeakyReLU(0.2)]
            if i < levels:
                layers.append(_pool(nd))
            c = w
        layers.append(conv(c, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        h = self.net(x)
        return h.mean(dim=tuple(range(1, h.ndim)))


class VAGAN(nn.Module):
    """Map generator and critic with their configuration (what a checkpoint stores)."""

    def __init__(self, shape: Sequence[int], channels: int = 16, critic_channels: int | None = None, levels: int = 3):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        nd = len(self.shape)
        if nd not in (2, 3):
            raise ValueError(f"VA-GAN works on 2D or 3D grids, not {self.shape}")
        step = 2 ** int(levels)
        if any(s % step or s < 2 * step for s in self.shape):
            raise ValueError(f"grid {self.shape}: every side must be a multiple of {step} and at least {2 * step} (--levels {levels})")
        critic_channels = channels if critic_channels is None else critic_channels
        self.config = {"shape": list(self.shape), "channels": int(channels), "critic_channels": int(critic_channels), "levels": int(levels)}
        self.gen = MapGenerator(nd, channels, levels)
        self.critic = Critic(nd, critic_channels, levels)

    @classmethod
    def from_config(cls, config: dict) -> "VAGAN":
        return cls(config["shape"], config["channels"], config.get("critic_channels"), config.get("levels", 3))

    def forward(self, x):
        """``(map, translated = x + map)``."""
        m = self.gen(x)
        return m, x + m
