"""Input optimisation (activation maximisation; interpretability review §2.2.2, Olah et al. 2017).

An image is optimised, from a realistic start, to maximise either the mean activation of one
channel of a layer (one image per channel) or, without a layer, the score of a class (the
class model visualisation of Simonyan et al. 2014; one image per class). Unregularised, the
result is adversarial noise; the usual regularisers are applied to the change ``d = x - x0``
from the start image (applied to ``x`` itself, TV and blur would erase the anatomy of a
realistic start):

* **L2**, ``(l2 / 2) sum_u d_u^2``;
* **total variation**, ``tv sum_axes sum_u |d_u - d_{u+e}|`` (pairs of brain voxels only);
* **jitter** (Mordvintsev et al.): the image is rolled by a random shift of up to ``jitter``
  voxels per axis before every forward pass;
* **blur** (Yosinski et al. 2015): every ``blur_every`` steps the change is smoothed with a
  Gaussian of ``blur_sigma`` voxels.

The start ``x0`` is the brain-masked mean image of the cohort; voxels outside the brain mask
keep their start value (0). The objective ``J`` is divided by the root mean square over the
brain of its gradient at ``x0``, so every term's gradient is of order one per voxel and the
weights mean the same for every model and layer: for a linear objective the optimum is
``x0 + grad J / (scale * l2)``, an RMS change of ``1 / l2`` intensity units (tested). Adam with
a cosine-decayed learning rate takes ``steps`` steps.

This shows what a unit responds to, not where the evidence of a subject lies; images are
typically unrealistic (review §2.2.2) and must be read as such.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neurointerp.attribution.layers import _Stop, get_layer, require_spatial
from neurointerp.errors import InputError

DEFAULTS = dict(steps=200, lr=0.05, l2=1.0, tv=0.1, jitter=1, blur_sigma=0.5, blur_every=4)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(N, C, *spatial)`` (replicated edges), sigma in voxels."""
    if sigma <= 0:
        return x
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    nd = x.ndim - 2
    n, c = x.shape[:2]
    out = x.reshape(n * c, 1, *x.shape[2:])
    conv = F.conv3d if nd == 3 else F.conv2d
    for axis in range(nd):
        shape = [1, 1] + [1] * nd
        shape[2 + axis] = len(k)
        pad = [0, 0] * nd
        pad[2 * (nd - 1 - axis)] = radius
        pad[2 * (nd - 1 - axis) + 1] = radius
        out = conv(F.pad(out, pad, mode="replicate"), k.reshape(shape))
    return out.reshape(x.shape)


def total_variation(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample anisotropic TV ``sum_axes sum |forward difference|`` (pairs inside ``mask``)."""
    nd = x.ndim - 2
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for axis in range(2, 2 + nd):
        n = x.shape[axis]
        d = (x.narrow(axis, 1, n - 1) - x.narrow(axis, 0, n - 1)).abs()
        if mask is not None:
            d = d * (mask.narrow(axis, 1, n - 1) * mask.narrow(axis, 0, n - 1))
        total = total + d.flatten(1).sum(1)
    return total


def _objective(model: nn.Module, x: torch.Tensor, layer: str | None, units: torch.Tensor, task: str) -> torch.Tensor:
    """Per-sample objective: mean activation of channel ``units[k]`` of ``layer``, or the score of class ``units[k]``."""
    from neurointerp.attribution.core import target_scores

    if layer is None:
        return target_scores(model(x), units, task=task, score="logit")
    mod = get_layer(model, layer)
    store: dict[str, torch.Tensor] = {}

    def hook(m, i, o):
        store["a"] = o
        raise _Stop

    handle = mod.register_forward_hook(hook)
    try:
        try:
            model(x)
        except _Stop:
            pass
    finally:
        handle.remove()
    if "a" not in store:
        raise InputError(f"layer '{layer}' is not run by the model's forward pass")
    a = store["a"]
    require_spatial(a, x, layer)
    if int(units.max()) >= a.shape[1]:
        raise InputError(f"channel {int(units.max())} does not exist: layer '{layer}' has channels 0..{a.shape[1] - 1}")
    picked = a.gather(1, units.view(-1, *([1] * (a.ndim - 1))).expand(-1, 1, *a.shape[2:]))
    return picked.flatten(1).mean(1)


def input_optimisation(
    model: nn.Module,
    start,
    units: Sequence[int],
    layer: str | None = None,
    mask=None,
    task: str = "binary",
    steps: int = DEFAULTS["steps"],
    lr: float = DEFAULTS["lr"],
    l2: float = DEFAULTS["l2"],
    tv: float = DEFAULTS["tv"],
    jitter: int = DEFAULTS["jitter"],
    blur_sigma: float = DEFAULTS["blur_sigma"],
    blur_every: int = DEFAULTS["blur_every"],
    seed: int = 0,
    batch_size: int = 16,
) -> tuple[np.ndarray, dict]:
    """Optimised images ``(K, C_in, *spatial)`` (numpy, the model's input grid) and a record.

    ``start``: the start image ``(C_in, *spatial)`` or ``(1, C_in, *spatial)``; ``units``: the
    channels of ``layer`` to maximise (one image each), or with ``layer=None`` the classes whose
    score (logit; ``-logit`` for class 0 of a binary model) is maximised; ``mask``: brain mask on
    the spatial grid (default: the non-zero voxels of ``start``).
    """
    _check(steps, lr, l2, tv, jitter, blur_sigma, blur_every)
    device = next(model.parameters()).device
    x0 = torch.as_tensor(np.asarray(start) if not isinstance(start, torch.Tensor) else start, dtype=torch.float32).to(device)
    nd_model = getattr(model, "config", {}).get("ndim")
    if nd_model is not None and x0.ndim == nd_model + 1:
        x0 = x0[None]
    if x0.ndim not in (4, 5) or x0.shape[0] != 1 or (nd_model is not None and x0.ndim != nd_model + 2):
        raise InputError(f"input optimisation: the start image must be (C, *spatial) or (1, C, *spatial) on the model's grid (got {tuple(x0.shape)})")
    spatial = tuple(x0.shape[2:])
    nd = len(spatial)
    if mask is None:
        m = (x0 != 0).any(dim=1, keepdim=True)
    else:
        m = torch.as_tensor(np.asarray(mask), dtype=torch.bool, device=device)
        if tuple(m.shape) != spatial:
            raise InputError(f"brain mask grid {tuple(m.shape)} differs from the start image's {spatial}")
        m = m[None, None]
    if not bool(m.any()):
        raise InputError("input optimisation: the brain mask is empty")
    mf = m.to(torch.float32)
    units_all = [int(u) for u in units]
    if not units_all:
        raise InputError("input optimisation: no channel or class to maximise")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    was_training = model.training
    model.eval()
    images, start_vals, end_vals, scales = [], [], [], []
    try:
        for b0 in range(0, len(units_all), max(1, int(batch_size))):
            u = torch.tensor(units_all[b0 : b0 + batch_size], dtype=torch.long, device=device)
            k = len(u)
            base = x0.expand(k, *x0.shape[1:]).clone()
            # scale: RMS over the brain of the objective's gradient at the start image
            xs = base.clone().requires_grad_(True)
            with torch.enable_grad():
                j0 = _objective(model, xs, layer, u, task)
                (g0,) = torch.autograd.grad(j0.sum(), xs)
            rms = torch.sqrt(((g0 * mf) ** 2).flatten(1).sum(1) / (mf.sum() * x0.shape[1]))
            if bool((rms == 0).any()):
                dead = [units_all[b0 + i] for i in torch.nonzero(rms == 0).flatten().tolist()]
                what = f"channel(s) {dead} of layer '{layer}'" if layer else f"class(es) {dead}"
                raise InputError(f"input optimisation: {what} do not respond to the input at the start image (zero gradient; a dead unit)")
            scale = rms.view(-1, *([1] * (nd + 1)))
            x = base.clone().requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr)
            for t in range(int(steps)):
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * t / max(1, int(steps))))
                shifts = [int(v) for v in torch.randint(-jitter, jitter + 1, (nd,), generator=gen)] if jitter > 0 else [0] * nd
                with torch.enable_grad():
                    xin = torch.roll(x, shifts=shifts, dims=tuple(range(2, 2 + nd))) if any(shifts) else x
                    j = _objective(model, xin, layer, u, task)
                    loss = -(j / scale.flatten()).sum()
                    if l2 > 0:
                        loss = loss + 0.5 * l2 * (((x - base) * mf) ** 2).flatten(1).sum(1).sum()
                    if tv > 0:
                        loss = loss + tv * total_variation(x - base, mf).sum()
                    opt.zero_grad()
                    loss.backward()
                x.grad.mul_(mf)  # only brain voxels move
                opt.step()
                with torch.no_grad():
                    if blur_sigma > 0 and blur_every > 0 and (t + 1) % blur_every == 0:
                        x.copy_(base + gaussian_blur(x - base, blur_sigma) * mf)
                    else:
                        x.copy_(x * mf + base * (1 - mf))
            with torch.inference_mode():
                j1 = _objective(model, x.detach(), layer, u, task)
            images.append(x.detach().cpu().numpy())
            start_vals += j0.detach().cpu().tolist()
            end_vals += j1.cpu().tolist()
            scales += rms.detach().cpu().tolist()
    finally:
        model.train(was_training)
    record = {
        "Objective": f"mean activation of each channel of layer '{layer}'" if layer else "score (logit) of each class",
        "Layer": layer,
        "Units": units_all,
        "ObjectiveAtStart": start_vals,
        "ObjectiveAtEnd": end_vals,
        "GradientScale": scales,
        "Regularisers": {"l2": l2, "tv": tv, "jitter": jitter, "blur_sigma": blur_sigma, "blur_every": blur_every},
        "Optimiser": {"name": "adam", "lr": lr, "schedule": "cosine", "steps": int(steps)},
        "Seed": int(seed),
    }
    return np.concatenate(images), record


def _check(steps, lr, l2, tv, jitter, blur_sigma, blur_every) -> None:
    if int(steps) < 1:
        raise InputError(f"input optimisation steps {steps}: must be at least 1")
    if not (lr > 0 and math.isfinite(lr)):
        raise InputError(f"input optimisation lr {lr}: must be a positive number")
    for name, v in (("l2", l2), ("tv", tv), ("blur sigma", blur_sigma)):
        if not (v >= 0 and math.isfinite(v)):
            raise InputError(f"input optimisation {name} {v}: must be >= 0")
    if int(jitter) < 0 or int(blur_every) < 0:
        raise InputError("input optimisation jitter and blur interval must be >= 0")
