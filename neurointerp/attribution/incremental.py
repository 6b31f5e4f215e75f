"""Incremental inference for occlusion: recompute only what a window changes.

Occluding a window changes the first convolution's output only within the window dilated by
the kernel radius, max-pooling halves that region, and so on: in a conv/ReLU/BN/max-pool
encoder the changed region stays small until the last stacks, whose maps are small anyway.
For a batch of windows we carry each window's changed region (same size for all, different
positions), compute every layer on it alone, and insert it into the unoccluded activations
only where the full feature vector is needed (before the predictor). The result equals a
full forward pass of each occluded image (tested against one); the cost of the first, most
expensive layers drops by the ratio of the grid to the window volume.

Supported encoders: ``nn.Sequential`` stacks of odd-kernel, stride-1, dilation-1 ``Conv2d/3d``
with "same" zero padding, element-wise modules (ReLU, Tanh, ELU, LeakyReLU, eval-mode
BatchNorm), ``MaxPool`` with kernel 2 and stride 2, and a final ``Flatten`` -- the classifiers
of ``neurointerp train``. :func:`plan` returns None for anything else and the caller falls back
to full forward passes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_POINTWISE = (nn.ReLU, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.BatchNorm2d, nn.BatchNorm3d, nn.Identity, nn.Dropout, nn.Dropout2d, nn.Dropout3d)


def plan(model: nn.Module):
    """The encoder as a list of ``(kind, module)`` with kind conv | pointwise | pool, or None."""
    encoder = getattr(model, "encoder", None)
    predictor = getattr(model, "predictor", None)
    if encoder is None or predictor is None:
        return None
    leaves = [m for m in encoder.modules() if len(list(m.children())) == 0]
    if not leaves or not isinstance(leaves[-1], nn.Flatten):
        return None
    ops = []
    for m in leaves[:-1]:
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            k = m.kernel_size
            if any(v % 2 == 0 for v in k) or any(s != 1 for s in m.stride) or any(d != 1 for d in m.dilation):
                return None
            if m.padding_mode != "zeros" or tuple(m.padding) != tuple(v // 2 for v in k) or m.groups != 1:
                return None
            ops.append(("conv", m, tuple(v // 2 for v in k)))
        elif isinstance(m, (nn.MaxPool2d, nn.MaxPool3d)):
            ks = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,)
            st = m.stride if isinstance(m.stride, tuple) else (m.stride,)
            if set(ks) != {2} or set(st) != {2} or m.padding not in (0, (0, 0), (0, 0, 0)) or m.ceil_mode or m.dilation not in (1, (1, 1), (1, 1, 1)):
                return None
            ops.append(("pool", m, None))
        elif isinstance(m, _POINTWISE):
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)) and m.training:
                return None
            ops.append(("pointwise", m, None))
        else:
            return None
    return ops


def _extract(base: torch.Tensor, start, size) -> torch.Tensor:
    """``base[0, :, start:start+size]`` per axis, zeros outside ``base`` (``(C, *size)``)."""
    out = torch.zeros((base.shape[1], *size), dtype=base.dtype, device=base.device)
    src, dst = [], []
    for s, n, full in zip(start, size, base.shape[2:]):
        a, b = max(s, 0), min(s + n, full)
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    out[(slice(None), *dst)] = base[(0, slice(None), *src)]
    return out


def _valid(starts: np.ndarray, size, full, device, dtype) -> torch.Tensor:
    """``(B, 1, *size)`` mask of region positions that lie inside the map."""
    nd = len(size)
    masks = []
    for ax in range(nd):
        pos = torch.as_tensor(starts[:, ax], device=device)[:, None] + torch.arange(size[ax], device=device)[None]
        m = (pos >= 0) & (pos < full[ax])
        shape = [len(starts)] + [1] * nd
        shape[1 + ax] = size[ax]
        masks.append(m.reshape(shape))
    out = masks[0]
    for m in masks[1:]:
        out = out & m
    return out.unsqueeze(1).to(dtype)


def occluded_features(model: nn.Module, ops, x1: torch.Tensor, corners, window, fill) -> torch.Tensor:
    """Encoder features ``(B, M)`` of ``x1`` (``(1, C, *spatial)``) occluded at each corner.

    ``fill``: a number, or a ``(1, C, *spatial)`` image whose content replaces each window.
    """
    nd = x1.ndim - 2
    with torch.inference_mode():
        base = [x1]
        h = x1
        for kind, mod, _ in ops:
            h = mod(h)
            base.append(h)
        starts = np.asarray(corners, dtype=np.int64).reshape(-1, nd)
        size = tuple(int(w) for w in window)
        if isinstance(fill, torch.Tensor):
            region = torch.stack([_extract(fill, s, size) for s in starts]).to(x1.dtype)
        else:
            region = torch.full((len(starts), x1.shape[1], *size), float(fill), dtype=x1.dtype, device=x1.device)
        region = region * _valid(starts, size, x1.shape[2:], x1.device, x1.dtype)
        for i, (kind, mod, radius) in enumerate(ops):
            src = base[i]  # the unoccluded input of this op
            full = tuple(src.shape[2:])
            if kind == "pointwise":
                region = mod(region)
            elif kind == "conv":
                halo = np.asarray(radius)
                in_start = starts - 2 * halo
                in_size = tuple(int(n + 4 * r) for n, r in zip(size, radius))
                patches = torch.stack([_extract(src, s, in_size) for s in in_start])
                inner = tuple(slice(int(2 * r), int(2 * r + n)) for r, n in zip(radius, size))
                patches[(slice(None), slice(None), *inner)] = region
                patches = patches * _valid(in_start, in_size, full, x1.device, x1.dtype)
                region = nn.functional.conv2d(patches, mod.weight, mod.bias) if nd == 2 else nn.functional.conv3d(patches, mod.weight, mod.bias)
                starts = starts - halo
                size = tuple(int(n + 2 * r) for n, r in zip(size, radius))
            else:  # max-pool 2
                out_start = np.floor_divide(starts, 2)
                out_size = tuple(int(n // 2 + 1) for n in size)
                in_start = 2 * out_start
                in_size = tuple(2 * n for n in out_size)
                patches = torch.stack([_extract(src, s, in_size) for s in in_start])
                for j in range(len(starts)):
                    off = starts[j] - in_start[j]
                    sl = tuple(slice(int(o), int(o + n)) for o, n in zip(off, size))
                    patches[(j, slice(None), *sl)] = region[j]
                region = mod(patches)
                starts, size = out_start, out_size
            region = region * _valid(starts, size, tuple(base[i + 1].shape[2:]), x1.device, x1.dtype)
        final = base[-1]
        maps = final.repeat(len(starts), *([1] * (final.ndim - 1)))
        for j, s in enumerate(starts):
            src_sl, dst_sl = [], []
            ok = True
            for a, n, fullsize in zip(s, size, final.shape[2:]):
                lo, hi = max(int(a), 0), min(int(a + n), fullsize)
                if hi <= lo:
                    ok = False
                    break
                dst_sl.append(slice(lo, hi))
                src_sl.append(slice(lo - int(a), hi - int(a)))
            if ok:
                maps[(j, slice(None), *dst_sl)] = region[(j, slice(None), *src_sl)]
        return maps.flatten(1)
