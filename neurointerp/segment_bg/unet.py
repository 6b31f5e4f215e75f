"""2D U-Net for tissue segmentation (papers/gbp-background-removal-segmentation.txt §3.1, §4.2).

A contraction path (two 3x3 convolutions + batch norm + ReLU per level, 2x2 max pooling), an
expansion path (2x up-sampling, 3x3 convolution, concatenation with the matching contraction
level, two convolutions) and a 1x1 convolution to one output channel per class. The softmax of
the last layer (§4.2) is applied by :meth:`UNet2D.probabilities` and inside the Dice loss; the
forward pass returns the logits.

Every ReLU is an ``nn.ReLU`` *module* (not in place) so that guided back-propagation
(:mod:`neurointerp.attribution.guided`) can hook each of them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class UNet2D(nn.Module):
    """U-Net over 2D slices.

    Parameters
    ----------
    in_channels
        Input channels (1: one MR contrast).
    n_classes
        Output channels, one per class (4: background, WM, GM, CSF).
    base
        Channels of the first level; each deeper level doubles them.
    depth
        Number of pooling steps; slice sizes are padded to a multiple of ``2**depth``.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 4, base: int = 16, depth: int = 3):
        super().__init__()
        if depth < 1 or base < 1:
            raise ValueError("depth and base must be at least 1")
        self.config: dict[str, Any] = {"in_channels": in_channels, "n_classes": n_classes, "base": base, "depth": depth}
        ch = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(in_channels if i == 0 else ch[i - 1], ch[i]) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.bottom = _block(ch[depth - 1], ch[depth])
        self.up = nn.ModuleList(
            [nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i + 1], ch[i], 3, padding=1), nn.ReLU()) for i in reversed(range(depth))]
        )
        self.merge = nn.ModuleList([_block(2 * ch[i], ch[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(ch[0], n_classes, 1)

    @property
    def multiple(self) -> int:
        return 2 ** self.config["depth"]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "UNet2D":
        return cls(**{k: int(v) for k, v in config.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax over the class channels (the last layer of §4.2)."""
        return torch.softmax(self(x), dim=1)
