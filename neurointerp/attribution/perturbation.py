"""Perturbation attributions: sliding-window occlusion and atlas-region perturbation.

Both are batched: many occluded copies of one image go through the model in one forward pass
(``torch.inference_mode``), and windows lying entirely outside the brain mask are skipped.

* ``occlusion``: a window of ``window`` voxels moved by ``stride`` is set to ``fill``; the map at
  a voxel is the mean drop of the score, ``s(x) - s(x_occluded)``, over the windows that cover it
  (the last window along each axis is aligned with the edge, so every voxel is covered).
* ``region_perturbation``: each atlas region in turn is set to ``fill``; the whole region gets
  the score drop.

``fill`` is a number, or a tensor shaped like ``x``: then the window (region) of sample ``i``
takes the content of ``fill[i]`` at the same place -- the swap test
(:mod:`neurointerp.attribution.swap`) puts there the same region of another subject.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch

from neurointerp.attribution.core import chunks
from neurointerp.errors import InputError


def _per_axis(value, nd: int, name: str) -> tuple[int, ...]:
    vals = (int(value),) * nd if np.isscalar(value) else tuple(int(v) for v in value)
    if len(vals) != nd or min(vals) < 1:
        raise InputError(f"occlusion {name} must be {nd} positive integers (got {value})")
    return vals


def window_starts(size: int, window: int, stride: int) -> list[int]:
    if window >= size:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def _fill_for(fill, x, i: int):
    """The replacement of sample ``i``: a float, or ``(1, C, *spatial)`` content."""
    if isinstance(fill, torch.Tensor):
        if fill.shape != x.shape:
            raise InputError(f"replacement images {tuple(fill.shape)} differ from the images {tuple(x.shape)}")
        return fill[i : i + 1].to(x.device, x.dtype)
    return float(fill)


def occlusion(f, x, targets, window: int | Sequence[int] = 8, stride: int | Sequence[int] = 4, fill: float | torch.Tensor = 0.0, mask=None, batch_size: int = 32, model=None, task: str = "binary", score: str = "logit", incremental: bool = True):
    """Occlusion maps ``(N, C, *spatial)`` (every channel gets the same value).

    With ``model`` a conv/pool classifier (see :mod:`neurointerp.attribution.incremental`) each
    occluded copy is run incrementally -- only the region the window changes is recomputed --
    with the same result as a full forward pass; otherwise ``f`` runs on full copies.
    """
    from neurointerp.attribution.core import target_scores
    from neurointerp.attribution.incremental import occluded_features, plan

    ops = plan(model) if (model is not None and incremental and x.shape[1] == 1) else None
    spatial = tuple(x.shape[2:])
    nd = len(spatial)
    win = _per_axis(window, nd, "window")
    st = _per_axis(stride, nd, "stride")
    starts = [window_starts(s, w, t) for s, w, t in zip(spatial, win, st)]
    boxes = [tuple(slice(a, a + w) for a, w in zip(corner, win)) for corner in itertools.product(*starts)]
    out = torch.zeros_like(x)
    for i in range(len(x)):
        keep = boxes
        if mask is not None:
            m = torch.as_tensor(np.asarray(mask[i] if np.ndim(mask) == nd + 1 else mask), dtype=torch.bool)
            keep = [b for b in boxes if bool(m[b].any())]
        attr = torch.zeros(spatial, dtype=x.dtype, device=x.device)
        count = torch.zeros(spatial, dtype=x.dtype, device=x.device)
        t = targets[i : i + 1]
        fill_i = _fill_for(fill, x, i)
        with torch.inference_mode():
            s0 = f(x[i : i + 1], t)[0]
            for sl in chunks(len(keep), batch_size):
                group = keep[sl]
                if ops is not None:
                    feats = occluded_features(model, ops, x[i : i + 1], [[b.start for b in box] for box in group], win, fill_i)
                    drop = s0 - target_scores(model.predictor(feats), t.expand(len(group)), task=task, score=score)
                else:
                    batch = x[i].unsqueeze(0).repeat(len(group), *([1] * (x.ndim - 1)))
                    for j, box in enumerate(group):
                        batch[(j, slice(None), *box)] = fill_i if isinstance(fill_i, float) else fill_i[(0, slice(None), *box)]
                    drop = s0 - f(batch, t.expand(len(group)))
                for j, box in enumerate(group):
                    attr[box] += drop[j]
                    count[box] += 1
        out[i] = torch.where(count > 0, attr / count.clamp_min(1), torch.zeros_like(attr)).unsqueeze(0).expand_as(x[i])
    return out


def region_perturbation(f, x, targets, atlas, fill: float | torch.Tensor = 0.0, batch_size: int = 32):
    """Per-region score drops: maps ``(N, C, *spatial)`` and a ``(N, n_regions)`` array with the labels."""
    atlas = np.asarray(atlas)
    if atlas.shape != tuple(x.shape[2:]):
        raise InputError(f"atlas grid {atlas.shape} differs from the image grid {tuple(x.shape[2:])}")
    labels = [int(v) for v in np.unique(atlas) if v != 0]
    if not labels:
        raise InputError("atlas has no regions (all zero)")
    masks = [torch.as_tensor(atlas == lab, device=x.device) for lab in labels]
    out = torch.zeros_like(x)
    drops = np.zeros((len(x), len(labels)))
    for i in range(len(x)):
        t = targets[i : i + 1]
        fill_i = _fill_for(fill, x, i)
        with torch.inference_mode():
            s0 = f(x[i : i + 1], t)[0]
            for sl in chunks(len(labels), batch_size):
                idx = list(range(len(labels)))[sl]
                batch = x[i].unsqueeze(0).repeat(len(idx), *([1] * (x.ndim - 1)))
                for j, k in enumerate(idx):
                    batch[j][:, masks[k]] = fill_i if isinstance(fill_i, float) else fill_i[0][:, masks[k]]
                drop = (s0 - f(batch, t.expand(len(idx)))).cpu().numpy()
                for j, k in enumerate(idx):
                    drops[i, k] = drop[j]
                    out[i][:, masks[k]] = float(drop[j])
    return out, drops, labels
