"""DeepLIFT with the rescale rule (Shrikumar et al. 2017), 2D and 3D, batched.

Attributions are ``m * (x - x0)`` where the multipliers ``m`` are back-propagated from the
explained score through the model's layers, relative to a baseline ``x0`` (``zeros``, ``min``,
``mean`` or a number, as for integrated gradients):

* affine layers (Linear, Conv, eval-mode BatchNorm, average pooling, padding, flattening,
  dropout): their transposed linear map (the gradient);
* element-wise non-linearities (ReLU, LeakyReLU, ELU, Tanh, Sigmoid, Softplus, GELU, SiLU): the
  rescale rule ``m_in = m_out * (y - y0) / (x - x0)``, the gradient where ``|x - x0| < 1e-10``;
* max-pooling: Captum's rule -- the output difference is split between the input's and the
  baseline's arg-max positions, then divided by ``x - x0`` -- which keeps completeness.

So ``sum(attributions) = s(x) - s(x0)`` (summation-to-delta) exactly, for every sample. The
model is unrolled into its leaf modules like LRP (:func:`neurointerp.attribution.lrp.leaf_chain`);
a model whose forward pass is not that chain (skip connections, functional non-linearities,
reused modules -- Captum's DeepLift silently treats a functional ReLU as linear and breaks on a
reused module) is refused, as is a module without a rule. The result equals Captum's
``DeepLift`` on the same model (tested).

Score: the logit (binary: ``+-z``; multi-class: the target's logit). ``probability`` on a binary
model applies the rescale rule to the sigmoid as well (so the maps sum to the change of the
probability); on a multi-class model the softmax couples the classes, there is no rescale rule
for it, and the request is refused rather than answered with the logit map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neurointerp.attribution.core import target_scores
from neurointerp.attribution.gradients import make_baseline
from neurointerp.attribution.lrp import leaf_chain
from neurointerp.errors import InputError

EPS = 1e-10
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.GELU, nn.SiLU)
_AFFINE = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.Flatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ZeroPad2d,
)
_MAXPOOL = {nn.MaxPool1d: (F.max_pool1d, F.max_unpool1d), nn.MaxPool2d: (F.max_pool2d, F.max_unpool2d), nn.MaxPool3d: (F.max_pool3d, F.max_unpool3d)}


def _is_affine(mod: nn.Module) -> bool:
    from neurointerp.models.classifier import _PadEnd

    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and mod.training:
        return False
    return isinstance(mod, _AFFINE) or isinstance(mod, _PadEnd)


def _vjp(mod: nn.Module, a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    a = a.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(mod(a), a, grad_outputs=m)
    return g


def _maxpool_step(mod, a, b, m):
    pool, unpool = _MAXPOOL[type(mod)]
    ks, st, pad, dil = mod.kernel_size, mod.stride, mod.padding, mod.dilation
    if any(v != 1 for v in ((dil,) if isinstance(dil, int) else dil)) or (st if isinstance(st, tuple) else (st,)) != (ks if isinstance(ks, tuple) else (ks,)) or mod.ceil_mode:
        raise InputError("DeepLIFT supports max-pooling with stride = kernel size, no dilation, no ceil mode")
    out_a, idx_a = pool(a, ks, st, pad, dil, mod.ceil_mode, True)
    out_b, idx_b = pool(b, ks, st, pad, dil, mod.ceil_mode, True)
    top = torch.max(out_a, out_b)
    size = list(a.shape)
    spread = unpool(m * (top - out_b), idx_a, ks, st, pad, size) + unpool(m * (out_a - top), idx_b, ks, st, pad, size)
    delta = a - b
    return torch.where(delta.abs() < EPS, _vjp(mod, a, m), spread / torch.where(delta.abs() < EPS, torch.ones_like(delta), delta))


def _rescale_step(mod, a, b, ya, yb, m):
    delta = a - b
    grad = _vjp(mod, a, m)
    safe = torch.where(delta.abs() < EPS, torch.ones_like(delta), delta)
    return torch.where(delta.abs() < EPS, grad, m * (ya - yb) / safe)


def deeplift(f_unused, x, targets, model: nn.Module, baseline="zeros", task: str = "binary", score: str = "logit", batch_size: int = 16):
    """DeepLIFT (rescale) maps ``(N, C, *spatial)``."""
    chain = leaf_chain(model)
    for mod in chain:
        if not (isinstance(mod, _ELEMENTWISE) or type(mod) in _MAXPOOL or _is_affine(mod)):
            raise InputError(f"DeepLIFT has no rule for the module {type(mod).__name__} (train-mode batch norm, attention, ...)")
    x0_all = make_baseline(x, baseline)
    out = torch.empty_like(x)
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].detach()
        x0 = x0_all[start : start + batch_size].detach()
        tb = targets[start : start + batch_size].to(x.device)
        acts_a, acts_b = [xb], [x0]
        with torch.no_grad():
            ha, hb = xb, x0
            for mod in chain:
                ha, hb = mod(ha), mod(hb)
                acts_a.append(ha)
                acts_b.append(hb)
            full = model(xb)
        if not torch.allclose(ha, full, rtol=1e-4, atol=1e-5):
            raise InputError("DeepLIFT needs a plain chain of layers; this model's forward pass is not the chain of its modules")
        za, zb = acts_a[-1], acts_b[-1]
        if score == "probability" and za.shape[1] > 1 and task != "regression":
            raise InputError("DeepLIFT explains a multi-class model's logit: the softmax has no rescale rule (use --score logit)")
        with torch.enable_grad():
            leaf = za.detach().requires_grad_(True)
            (sel,) = torch.autograd.grad(target_scores(leaf, tb, task=task).sum(), leaf)  # +-1 or one-hot
        m = sel
        if score == "probability" and task != "regression":  # binary: rescale through the sigmoid
            with torch.no_grad():
                s_a = target_scores(za, tb, task=task, score="logit")
                s_b = target_scores(zb, tb, task=task, score="logit")
                p_a, p_b = torch.sigmoid(s_a), torch.sigmoid(s_b)
                d = s_a - s_b
                slope = torch.where(d.abs() < EPS, p_a * (1 - p_a), (p_a - p_b) / torch.where(d.abs() < EPS, torch.ones_like(d), d))
            m = sel * slope[:, None]
        for mod, a, b, ya, yb in zip(reversed(chain), reversed(acts_a[:-1]), reversed(acts_b[:-1]), reversed(acts_a[1:]), reversed(acts_b[1:])):
            if isinstance(mod, _ELEMENTWISE):
                m = _rescale_step(mod, a, b, ya, yb, m)
            elif type(mod) in _MAXPOOL:
                m = _maxpool_step(mod, a, b, m)
            else:
                m = _vjp(mod, a, m)
        out[start : start + batch_size] = (m * (xb - x0)).detach()
    return out
