"""Feature maps and first-layer weights (interpretability review §2.1, §2.2.1, §3.1, §3.2).

These are not attribution maps -- they say what a layer computes, not how much a voxel counts
for a class -- and are written as their own output kinds (see
:mod:`neurointerp.attribution.featureoutputs`).

* :func:`feature_maps`: the channel activations of a layer for each image, brought to the input
  grid as Grad-CAM maps are ((tri)linear, ``align_corners=False``): ``(N, C, *spatial)``
  (direct interpretation, review §2.2.1; Oh et al.'s displays, §3.2).
* :func:`channel_region_table`: per channel, the mean activation in every atlas region, ranked.
* :func:`first_layer_filters`: the first convolution's kernels as small images on the input's
  voxel grid (weight visualisation, review §2.1 -- meaningful for the first layer only), with
  the affine that places kernel voxel ``o`` at its offset (mm) from the output voxel.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from neurointerp.attribution.layers import capture, require_spatial, to_input_grid
from neurointerp.errors import InputError


def default_feature_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Grad-CAM's default layer: the last conv stack's activation."""
    from neurointerp.attribution.gradcam import default_layer

    return default_layer(model, x)


def layer_activations(model: nn.Module, x: torch.Tensor, layer: str, batch_size: int = 8) -> torch.Tensor:
    """Activations ``(N, C, *layer_grid)`` of module ``layer`` (CPU, float32); the forward pass
    stops at the layer."""
    was_training = model.training
    model.eval()
    try:
        outs = []
        for start in range(0, len(x), max(1, int(batch_size))):
            a = capture(model, layer, x[start : start + batch_size])
            require_spatial(a, x, layer)
            outs.append(a.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outs)


def feature_maps(model: nn.Module, x: torch.Tensor, layer: str | None = None, batch_size: int = 8) -> tuple[torch.Tensor, str]:
    """Channel activations of ``layer`` on the input grid, ``(N, C, *spatial)``, and the layer name
    (default: :func:`default_feature_layer`). For many channels on a large grid upsample per
    subject instead (:func:`layer_activations` + :func:`~neurointerp.attribution.layers.to_input_grid`)."""
    layer = layer or default_feature_layer(model, x)
    acts = layer_activations(model, x, layer, batch_size=batch_size)
    return to_input_grid(acts, x.shape[2:]), layer


def channel_region_table(maps: np.ndarray, labels: np.ndarray, names=None, atlas_name: str | None = None, channels: Sequence[int] | None = None):
    """Mean activation of every channel in every atlas region.

    ``maps`` ``(C, *spatial)`` on the atlas grid, ``labels`` integer regions (0 = none),
    ``channels`` the layer's channel numbers of the C maps (default 0..C-1). Rows are
    sorted by channel, then by ``mean_activation`` (rank 1 = most active region);
    ``relative_activation`` is the region's mean over the mean of the channel in all labelled
    voxels (> 1: the channel is more active there than on average).
    """
    import pandas as pd

    maps = np.asarray(maps, dtype=np.float64)
    idx = np.asarray(labels).astype(np.int64).ravel()
    if maps.shape[1:] != np.asarray(labels).shape:
        raise InputError(f"atlas grid {np.asarray(labels).shape} differs from the feature maps' grid {maps.shape[1:]}")
    keep = idx > 0
    if not keep.any():
        raise InputError("atlas has no regions (all zero)")
    n_regions = int(idx.max()) + 1
    counts = np.bincount(idx[keep], minlength=n_regions)
    present = np.flatnonzero(counts)
    region_names = [str(names.get(i, f"region {i}")) if hasattr(names, "get") else f"region {i}" for i in present]
    numbers = list(range(maps.shape[0])) if channels is None else [int(c) for c in channels]
    if len(numbers) != maps.shape[0]:
        raise InputError(f"{len(numbers)} channel numbers for {maps.shape[0]} maps")
    frames = []
    for c in range(maps.shape[0]):
        v = maps[c].ravel()[keep]
        sums = np.bincount(idx[keep], weights=v, minlength=n_regions)
        mean = sums[present] / counts[present]
        overall = v.mean()
        frame = pd.DataFrame(
            {
                "channel": numbers[c],
                "index": present,
                "name": region_names,
                "n_voxels": counts[present],
                "mean_activation": mean,
                "relative_activation": mean / overall if overall != 0 else np.full(len(present), np.nan),
            }
        )
        frame = frame.sort_values("mean_activation", ascending=False, kind="stable").reset_index(drop=True)
        frame.insert(1, "rank", np.arange(1, len(frame) + 1))
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    if atlas_name is not None:
        table.insert(2, "atlas", atlas_name)
    return table


def first_conv(model: nn.Module) -> tuple[str, nn.Module]:
    """Name and module of the first convolution the model runs on its input."""
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Conv3d)):
            return name, mod
    raise InputError("the model has no convolution: no first-layer filters to show")


def first_layer_filters(model: nn.Module, affine: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """The first convolution's kernels as images: ``(filters, affine, layer)``.

    ``filters`` is ``(C_out * C_in, *kernel)`` (output channel major); ``affine`` (4x4) maps
    kernel voxel ``o`` to its offset in mm from the voxel the filter's output is written to:
    ``conv(x)[p] = bias + sum_o w[o] x[p + o - padding]`` (a cross-correlation), so voxel ``o``
    sits at ``M (o - padding)`` with ``M`` the input grid's 3x3 part of ``affine`` (identity
    zooms when ``affine`` is None). An even kernel with "same" padding at the end (the cas
    architectures) has padding 0: its first voxel is the output voxel.
    """
    layer, conv = first_conv(model)
    w = conv.weight.detach().float().cpu().numpy()
    nd = w.ndim - 2
    filters = w.reshape((-1,) + w.shape[2:])
    pad = np.zeros(3)
    pad[:nd] = _as_tuple(conv.padding, nd)
    m = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = m[:3, :3]
    out[:3, 3] = -m[:3, :3] @ pad
    return filters.astype(np.float32), out, layer


def _as_tuple(v, nd: int) -> tuple[int, ...]:
    if isinstance(v, str):
        raise InputError(f"first convolution uses padding '{v}': offsets unknown")
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * nd


def filter_table(filters: np.ndarray, layer: str):
    """One row per filter: L2 norm, sum of weights (response to a uniform image), centre weight, range."""
    import pandas as pd

    flat = filters.reshape(len(filters), -1)
    centre = tuple(s // 2 for s in filters.shape[1:])
    return pd.DataFrame(
        {
            "layer": layer,
            "filter": np.arange(len(filters)),
            "l2_norm": np.sqrt((flat.astype(np.float64) ** 2).sum(axis=1)),
            "sum": flat.sum(axis=1),
            "centre_weight": filters[(slice(None),) + centre],
            "min": flat.min(axis=1),
            "max": flat.max(axis=1),
        }
    )


def as_volume_last(maps: np.ndarray) -> np.ndarray:
    """``(C, *spatial)`` -> ``(*spatial, C)`` (NIfTI's 4th axis holds the channels)."""
    return np.moveaxis(np.asarray(maps), 0, -1)


def channel_subset(n_channels: int, channels: Sequence[int] | None) -> list[int]:
    """Validated channel indices (all when None)."""
    if channels is None or len(channels) == 0:
        return list(range(n_channels))
    out = [int(c) for c in channels]
    bad = [c for c in out if not 0 <= c < n_channels]
    if bad:
        raise InputError(f"channel {bad[0]} does not exist: the layer has channels 0..{n_channels - 1}")
    return out
