"""The simulator network: a U-Net with skip connections built from conditional convolutions
(papers/simulator-networks-jacobian.txt §3.2-3.3, Fig. 2, §4.1-4.2).

Encoder: ``len(channels)`` stacks of [CondConv, BatchNorm, LeakyReLU, max-pool]; the
bottleneck features are flattened and passed through a fully connected layer of ``fc`` units
(ReLU) and back; the decoder mirrors the encoder with up-sampling in place of pooling and skip
connections from the encoder; a final CondConv gives the output:

* ``mode="image"`` (§4.1): an image; the simulated image is ``X + output`` (the network
  predicts the image through a residual skip, so the identity is easy to represent).
* ``mode="warp"`` (§3.3, §4.2): a displacement field ``phi`` (``ndim`` channels, voxel units,
  channel ``i`` = displacement along voxel axis ``i``), applied to ``X`` by the spatial
  transformer of :mod:`neurointerp.simulate.warp` (linear interpolation).

``population_field=True`` (warp mode; not in the paper) adds to the network's output one learned
displacement field per task on the model grid, shared by all subjects: ``phi = U-Net(X, t) +
B_t``. For images in a common template space -- what the classifier of ``train`` sees -- ``B_t``
holds the population's mean disease deformation and the U-Net the subject-specific rest. Why:
with the U-Net alone, training settles on broad, near-global fields (shifts and sub-voxel
resampling blur that move the logit of any classifier that is not shift invariant, at little
smoothness cost) instead of the classifier's localised pattern; see ``benchmarks/simulate.py``.
``B_t`` starts at zero, so the simulator still starts at the identity.

``interpolation="cubic"`` (warp mode; not in the paper) resamples with cubic B-splines instead of
linearly, so a sub-voxel displacement no longer blurs the image and the simulator cannot move the
logit by blur (see README for what it changes on the benchmark).

The task label ``t`` (0: inject the disease pattern, G1; 1: remove it, G2) enters every
CondConv's routing. ``condconv=False`` gives the paper's ablation: two separate U-Nets of
conventional convolutions, one per task, in one module.

Images whose grid is not a multiple of ``2**len(channels)`` are zero-padded at the end of each
axis inside the network and cropped back.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from neurointerp.simulate.condconv import CondConv, PlainConv
from neurointerp.simulate.warp import INTERPOLATIONS, warp

MODES = ("image", "warp")


def default_params(ndim: int) -> dict[str, Any]:
    """The paper's simulator sizes: 2D (§4.1) channels 1,2,4,8 + fc 64; 3D (§4.2) 16,32,64,16,16 + fc 512."""
    if ndim == 2:
        return {"channels": [1, 2, 4, 8], "fc": 64}
    return {"channels": [16, 32, 64, 16, 16], "fc": 512}


class _Block(nn.Module):
    def __init__(self, ndim, cin, cout, conv_cls, kernel_size, experts):
        super().__init__()
        self.conv = conv_cls(ndim, cin, cout, kernel_size=kernel_size, experts=experts)
        self.norm = (nn.BatchNorm2d if ndim == 2 else nn.BatchNorm3d)(cout)

    def forward(self, x, t):
        return F.leaky_relu(self.norm(self.conv(x, t)), 0.2)


class UNet(nn.Module):
    """One U-Net, ``forward(x, t) -> output`` of ``out_channels`` on the input grid."""

    def __init__(
        self,
        shape: Sequence[int],
        out_channels: int,
        channels: Sequence[int] = (1, 2, 4, 8),
        fc: int = 64,
        kernel_size: int = 3,
        experts: int = 3,
        condconv: bool = True,
    ):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.ndim = len(self.shape)
        conv_cls = CondConv if condconv else PlainConv
        depth = len(channels)
        f = 2**depth
        self.padded = tuple(int(math.ceil(s / f) * f) for s in self.shape)
        self.bottom = tuple(s // f for s in self.padded)
        self.enc = nn.ModuleList()
        cin = 1
        for c in channels:
            self.enc.append(_Block(self.ndim, cin, c, conv_cls, kernel_size, experts))
            cin = c
        n_flat = channels[-1] * math.prod(self.bottom)
        self.fc_in = nn.Linear(n_flat, fc)
        self.fc_out = nn.Linear(fc, n_flat)
        self.dec = nn.ModuleList()
        up = channels[-1]
        for c in reversed(channels):
            self.dec.append(_Block(self.ndim, up + c, c, conv_cls, kernel_size, experts))
            up = c
        self.head = conv_cls(self.ndim, channels[0], out_channels, kernel_size=kernel_size, experts=experts)
        self._pool = F.max_pool2d if self.ndim == 2 else F.max_pool3d

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        pad = []
        for s, p in zip(reversed(self.shape), reversed(self.padded)):
            pad += [0, p - s]
        if any(pad):
            x = F.pad(x, pad)
        skips = []
        for block in self.enc:
            x = block(x, t)
            skips.append(x)
            x = self._pool(x, 2)
        n = x.shape[0]
        x = F.relu(self.fc_in(x.reshape(n, -1)))
        x = F.relu(self.fc_out(x)).reshape(n, -1, *self.bottom)
        for block, skip in zip(self.dec, reversed(skips)):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skip], dim=1), t)
        y = self.head(x, t)
        return y[(Ellipsis,) + tuple(slice(0, s) for s in self.shape)]


class Simulator(nn.Module):
    """The joint simulator G(X, t): ``forward(x, task) -> (simulated, field_or_None)``.

    ``x``: ``(N, 1, *shape)`` model inputs; ``task``: ``(N,)`` with 0 (inject, G1) or 1 (remove, G2).
    ``field``: ``(N, ndim, *shape)`` displacement in voxels (``mode="warp"``), else ``None``.
    """

    def __init__(
        self,
        shape: Sequence[int],
        mode: str = "warp",
        channels: Sequence[int] | None = None,
        fc: int | None = None,
        kernel_size: int = 3,
        experts: int = 3,
        condconv: bool = True,
        field_scale: float = 1.0,
        population_field: bool = False,
        interpolation: str = "linear",
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if population_field and mode != "warp":
            raise ValueError("population_field needs mode='warp'")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}")
        shape = tuple(int(s) for s in shape)
        d = default_params(len(shape))
        channels = [int(c) for c in (channels or d["channels"])]
        fc = int(fc or d["fc"])
        self.config = {
            "shape": list(shape),
            "mode": mode,
            "channels": channels,
            "fc": fc,
            "kernel_size": int(kernel_size),
            "experts": int(experts),
            "condconv": bool(condconv),
            "field_scale": float(field_scale),
            "population_field": bool(population_field),
            "interpolation": interpolation,
        }
        self.mode = mode
        self.ndim = len(shape)
        out = self.ndim if mode == "warp" else 1
        kw = dict(channels=channels, fc=fc, kernel_size=kernel_size, experts=experts, condconv=condconv)
        n_nets = 1 if condconv else 2
        self.nets = nn.ModuleList([UNet(shape, out, **kw) for _ in range(n_nets)])
        for net in self.nets:  # start near the identity: small output layer
            head = net.head
            w = head.weight if isinstance(head, CondConv) else head.conv.weight
            nn.init.normal_(w, 0.0, 1e-3)
            b = head.bias if isinstance(head, CondConv) else head.conv.bias
            nn.init.zeros_(b)
        # B_t of the docstring: one field per task (0 inject, 1 remove), in voxels
        self.population = nn.Parameter(torch.zeros(2, self.ndim, *shape)) if population_field else None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Simulator":
        return cls(**config)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.config["shape"])

    def output(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        task = task.to(x.device).reshape(-1).float()
        if len(self.nets) == 1:
            return self.nets[0](x, task)
        out = None
        for k, net in enumerate(self.nets):  # conventional ablation: G1 and G2 are separate nets
            idx = (task == k).nonzero(as_tuple=True)[0]
            if len(idx) == 0:
                continue
            y = net(x[idx], task[idx])
            if out is None:
                out = x.new_zeros((x.shape[0],) + tuple(y.shape[1:]))
            out = out.index_copy(0, idx, y)
        return out

    def forward(self, x: torch.Tensor, task: torch.Tensor):
        y = self.output(x, task)
        if self.mode == "image":
            return x + y, None
        field = y * self.config["field_scale"]
        if self.population is not None:
            field = field + self.population[task.to(x.device).reshape(-1).long()]
        return warp(x, field, interpolation=self.config["interpolation"]), field
