"""Layer-wise relevance propagation (LRP) for sequential conv nets, 2D and 3D.

The model is unrolled into its leaf modules in execution order (``model.encoder`` then
``model.predictor`` for a :class:`~neurointerp.models.classifier.ConvClassifier`, or any
``nn.Sequential``); the unrolled chain must reproduce ``model(x)`` exactly, else LRP refuses
(a model with skip connections or reused modules is not a chain). Relevance starts as the
target score at the output and flows back layer by layer:

* Linear / Conv layers: the **epsilon rule** ``R_i = x_i * sum_j w_ij R_j / (z_j + eps*sign(z_j))``
  or the **alpha-beta rule** ``R_i = sum_j (alpha * z_ij^+ / z_j^+ - beta * z_ij^- / z_j^-) R_j``
  (contributions ``z_ij = x_i w_ij`` split by sign, so negative inputs such as z-scored
  intensities or tanh outputs are handled; ``alpha - beta = 1``);
* activations (ReLU, Tanh, ...), padding, flattening, dropout: relevance passes unchanged;
* pooling and batch normalisation (an affine map in eval mode): relevance redistributed in
  proportion to the contributions (the epsilon rule with a vanishing epsilon; max-pooling thus
  gives all relevance to the winner).

Conv3d and BatchNorm3d are covered by the same code as their 2D versions -- Captum's LRP has
no rule for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neurointerp.attribution.core import target_scores
from neurointerp.errors import InputError

_PASS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.Flatten, nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.Identity)
_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def leaf_chain(model: nn.Module) -> list[nn.Module]:
    """Leaf modules of ``model`` in forward order (encoder, then predictor, for our classifiers)."""
    parts = [model.encoder, model.predictor] if hasattr(model, "encoder") and hasattr(model, "predictor") else [model]
    leaves: list[nn.Module] = []
    for part in parts:
        for mod in part.modules():
            if len(list(mod.children())) == 0:
                leaves.append(mod)
    return leaves


def _stab(z: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))


def _eps_step(module: nn.Module, x: torch.Tensor, r: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        z = module(x)
        s = (r / _stab(z, eps)).detach()
        (c,) = torch.autograd.grad((z * s).sum(), x)
    return (x * c).detach()


def _forward_with(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    conv = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}[type(module)]
    return conv(x, weight, bias, module.stride, module.padding, module.dilation, module.groups)


def _alphabeta_step(module: nn.Module, x: torch.Tensor, r: torch.Tensor, alpha: float, beta: float, eps: float = 1e-9) -> torch.Tensor:
    w = module.weight
    b = module.bias
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    bp = b.clamp(min=0) if b is not None else None
    bn = b.clamp(max=0) if b is not None else None
    xp = x.detach().clamp(min=0).requires_grad_(True)
    xn = x.detach().clamp(max=0).requires_grad_(True)

    def share(pairs, bias, sign):
        with torch.enable_grad():
            z = sum(_forward_with(module, xi, wi, None) for xi, wi in pairs)
            if bias is not None:
                z = z + _forward_with(module, torch.zeros_like(x[:1]), torch.zeros_like(w), bias)
            s = (r / (z + sign * eps)).detach()
            grads = torch.autograd.grad((z * s).sum(), [xi for xi, _ in pairs])
        return sum(xi.detach() * g for (xi, _), g in zip(pairs, grads))

    pos = share([(xp, wp), (xn, wn)], bp, 1.0)  # positive contributions z_ij > 0
    neg = share([(xp, wn), (xn, wp)], bn, -1.0)  # negative contributions z_ij < 0
    return (alpha * pos - beta * neg).detach()


def lrp(f_unused, x, targets, model: nn.Module, rule: str = "epsilon", epsilon: float = 0.01, alpha: float = 2.0, beta: float = 1.0, task: str = "binary", batch_size: int = 16):
    """LRP relevance maps ``(N, C, *spatial)``; ``rule`` is ``epsilon`` or ``alphabeta``."""
    if rule not in ("epsilon", "alphabeta"):
        raise InputError(f"unknown LRP rule '{rule}' (epsilon or alphabeta)")
    if rule == "alphabeta" and abs(alpha - beta - 1.0) > 1e-9:
        raise InputError(f"LRP alpha-beta needs alpha - beta = 1 (got alpha={alpha}, beta={beta})")
    chain = leaf_chain(model)
    out = torch.empty_like(x)
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].detach()
        acts = [xb]
        with torch.inference_mode():
            h = xb
            try:
                for mod in chain:
                    h = mod(h)
                    acts.append(h)
            except RuntimeError:  # e.g. attention gates: their modules do not chain
                h = None
            full = model(xb)
        if h is None or h.shape != full.shape or not torch.allclose(h, full, rtol=1e-4, atol=1e-5):
            raise InputError("LRP needs a plain chain of layers; this model's forward pass is not the chain of its modules")
        tb = targets[start : start + batch_size].to(x.device)
        acts = [a.clone() for a in acts]  # leave inference mode
        with torch.enable_grad():
            out_leaf = acts[-1].detach().requires_grad_(True)
            s = target_scores(out_leaf, tb, task=task)
            (sel,) = torch.autograd.grad(s.sum(), out_leaf)  # +-1 (binary) or one-hot
        r = (sel * acts[-1]).detach()
        for mod, a in zip(reversed(chain), reversed(acts[:-1])):
            if isinstance(mod, _PASS):
                r = r.reshape(a.shape)
            elif isinstance(mod, _LINEAR) and rule == "alphabeta":
                r = _alphabeta_step(mod, a, r, alpha, beta)
            elif isinstance(mod, _LINEAR):
                r = _eps_step(mod, a, r, epsilon)
            else:  # pooling, batch norm: redistribute in proportion to the contributions
                r = _eps_step(mod, a, r, 1e-9)
        out[start : start + batch_size] = r
    return out
