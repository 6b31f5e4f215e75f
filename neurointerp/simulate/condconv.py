"""Conditional convolution (CondConv, Yang et al. 2019) with the task-aware routing of
papers/simulator-networks-jacobian.txt §3.2, eqs. (3)-(4).

The kernel of every sample is a mixture of ``K`` expert kernels::

    W(f, t) = sum_k alpha_k W_k,    alpha_k = sigmoid([GlobalAvgPool(f), t] . R_k)

where ``f`` is the layer's input and ``t`` the task label (0: inject the disease pattern, G1;
1: remove it, G2). The mixture is computed per sample and applied in one grouped convolution
over the whole batch (no Python loop over samples).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class CondConv(nn.Module):
    """``ndim``-D conditional convolution with ``experts`` kernels, 'same' padding.

    ``forward(x, t)``: ``x`` of shape ``(N, in_channels, *spatial)``, ``t`` of shape ``(N,)``
    or ``(N, task_dim)`` (float). Returns ``(N, out_channels, *spatial)``.
    """

    def __init__(self, ndim: int, in_channels: int, out_channels: int, kernel_size: int = 3, experts: int = 3, task_dim: int = 1, bias: bool = True):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError("ndim must be 2 or 3")
        self.ndim, self.in_channels, self.out_channels = ndim, in_channels, out_channels
        self.kernel_size, self.experts, self.task_dim = kernel_size, experts, task_dim
        ks = (kernel_size,) * ndim
        self.weight = nn.Parameter(torch.empty(experts, out_channels, in_channels, *ks))
        self.bias = nn.Parameter(torch.zeros(experts, out_channels)) if bias else None
        # routing R_k: one linear map from [pooled features, task] to K logits
        self.routing = nn.Linear(in_channels + task_dim, experts)
        fan_in = in_channels * kernel_size**ndim
        for k in range(experts):
            nn.init.kaiming_uniform_(self.weight[k], a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        self._conv = F.conv2d if ndim == 2 else F.conv3d

    def routing_weights(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """alpha ``(N, K)`` for input ``x`` and task ``t``."""
        pooled = x.mean(dim=tuple(range(2, x.dim())))
        t = t.to(x.dtype).reshape(x.shape[0], -1)
        return torch.sigmoid(self.routing(torch.cat([pooled, t], dim=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        alpha = self.routing_weights(x, t)  # (N, K)
        w = torch.einsum("nk,koi...->noi...", alpha, self.weight)  # (N, out, in, *ks)
        w = w.reshape(n * self.out_channels, self.in_channels, *w.shape[3:])
        y = self._conv(x.reshape(1, n * self.in_channels, *x.shape[2:]), w, padding=self.kernel_size // 2, groups=n)
        y = y.reshape(n, self.out_channels, *y.shape[2:])
        if self.bias is not None:
            b = alpha @ self.bias  # (N, out)
            y = y + b.reshape(n, self.out_channels, *([1] * self.ndim))
        return y

    def extra_repr(self) -> str:
        return f"ndim={self.ndim}, {self.in_channels}->{self.out_channels}, kernel_size={self.kernel_size}, experts={self.experts}"


class PlainConv(nn.Module):
    """A conventional convolution with the same ``forward(x, t)`` signature (``t`` ignored)."""

    def __init__(self, ndim: int, in_channels: int, out_channels: int, kernel_size: int = 3, **_):
        super().__init__()
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        self.conv = conv(in_channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)
