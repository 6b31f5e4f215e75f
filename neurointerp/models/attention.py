"""Attention-gated encoder (interpretability review §2.6.1 / §3.6.1): the attention maps are part
of the model, so they explain its prediction without any post-hoc method.

Each gate (Schlemper et al. 2019, "Attention gated networks", additive attention) scores every
position ``u`` of a conv stack's output ``l`` against a *global* gating signal ``g`` -- the
global average of the last stack's output, as the global feature of Jetley et al. 2018 ("Learn
to pay attention")::

    a_u = sigmoid( psi^T ReLU( W_l l_u + W_g g + b_g ) + b_psi )          (attention map)
    d   = sum_u a_u l_u / sum_u a_u                                      (attended descriptor)

The predictor sees only the attended descriptors ``d`` of the gated stacks (concatenated), never
the global feature itself (Jetley et al.'s design): every bit of evidence the prediction uses
passes through the attention maps. ``W_l``, ``W_g`` and ``psi`` are 1x1(x1) convolutions, the
ReLU and the sigmoid are modules (hook-based attribution methods see them), and the attention
map of gate ``k`` is the output of module ``encoder.gate<k>.attn``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class AttentionGate(nn.Module):
    """Additive attention gate with a global gating signal (see the module docstring)."""

    def __init__(self, ndim: int, local_channels: int, global_channels: int, inter_channels: int):
        super().__init__()
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        self.local = conv(int(local_channels), int(inter_channels), 1, bias=False)  # W_l
        self.gating = conv(int(global_channels), int(inter_channels), 1)  # W_g, b_g (on the pooled g)
        self.act = nn.ReLU()
        self.psi = conv(int(inter_channels), 1, 1)  # psi, b_psi
        self.attn = nn.Sigmoid()

    def forward(self, local: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``local`` ``(N, C, *S)``, ``g`` ``(N, G, 1, ..)`` -> attended descriptor ``(N, C)``."""
        a = self.attn(self.psi(self.act(self.local(local) + self.gating(g))))  # (N, 1, *S)
        weights = a.flatten(2)
        return (local.flatten(2) * weights).sum(-1) / weights.sum(-1).clamp_min(1e-12)


class AttentionEncoder(nn.Module):
    """Conv stacks ``stack1..stackN``, then one :class:`AttentionGate` per gated stack.

    ``forward(x)`` returns the concatenated attended descriptors ``(N, sum of gated channels)``:
    the feature vector at the encoder -> predictor boundary.
    """

    def __init__(self, stacks: "dict[str, nn.Module]", gated: Sequence[int], channels: Sequence[int], ndim: int, inter_channels: int):
        super().__init__()
        for name, stack in stacks.items():
            self.add_module(name, stack)
        self.n_stacks = len(stacks)
        self.gated = [int(k) for k in gated]
        for k in self.gated:
            self.add_module(f"gate{k}", AttentionGate(ndim, channels[k - 1], channels[-1], inter_channels))
        self.gap = nn.AdaptiveAvgPool2d(1) if ndim == 2 else nn.AdaptiveAvgPool3d(1)

    def gate_names(self) -> list[str]:
        return [f"gate{k}" for k in self.gated]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = {}
        h = x
        for i in range(1, self.n_stacks + 1):
            h = getattr(self, f"stack{i}")(h)
            outs[i] = h
        g = self.gap(h)  # (N, C_last, 1, ..): the global gating signal
        return torch.cat([getattr(self, f"gate{k}")(outs[k], g) for k in self.gated], dim=1)
