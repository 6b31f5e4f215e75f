"""Class activation maps (CAM; Zhou et al. 2016; interpretability review §2.3.1, eq. 5).

CAM applies to networks made of conv stacks, a global average pooling (GAP) of the last
stack's channels ``A_k`` and one fully connected layer, the ``gap2d`` / ``gap3d``
architectures. The class score is then ``s_c = sum_k w_kc mean_u A_k(u) + b_c`` and the map is

    CAM_c = sum_k w_kc A_k            (signed: no ReLU, as in the paper)

upsampled (tri)linearly to the input grid as Grad-CAM is. ``w_kc`` is read as the gradient of
the explained score with respect to the pooled features, which *is* the FC weight row of the
target class (``-w`` for the negative class of a binary model, whose score is ``-logit``), and
is checked to be one: the score must be linear in the pooled features (``--score logit``), else
CAM refuses. Inside a confounder gate (``--confounder-mask``) the weights of the confounded
channels are zero -- the CAM of the unconfounded channels.

Since ``ds/dA_k(u) = w_kc / |U|`` everywhere, Grad-CAM at the layer feeding the GAP has weights
``w_kc / |U|``: ``CAM = |U| x Grad-CAM-without-ReLU`` and ``ReLU(CAM) = |U| x Grad-CAM``
(``|U|`` = positions of the last stack's grid), tested.
"""

from __future__ import annotations

import torch
from torch import nn

from neurointerp.attribution.core import chunks
from neurointerp.attribution.layers import to_input_grid
from neurointerp.errors import InputError

REFUSAL = "cam needs a network that ends in global average pooling and one linear layer (Zhou et al.; train --architecture gap3d or gap2d); this model {why} -- use gradcam"
NOT_LINEAR = "cam explains a class logit, linear in the pooled features (Zhou et al.); the explained score is not (--score probability?) -- use --score logit, or gradcam"


def cam_parts(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """The GAP module and the single linear layer of a CAM-ready model, or a one-line refusal."""
    head = getattr(model, "head", None)
    encoder = getattr(model, "encoder", None)
    predictor = getattr(model, "predictor", None)
    if head != "gap" or encoder is None or predictor is None:
        raise InputError(REFUSAL.format(why=f"has head '{head}'" if head else "is not a neurointerp classifier"))
    gap = getattr(encoder, "gap", None)
    leaves = [m for m in predictor.modules() if len(list(m.children())) == 0]
    if not isinstance(gap, (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)) or set(_as_tuple(gap.output_size)) != {1}:
        raise InputError(REFUSAL.format(why="has no global average pooling"))
    if len(leaves) != 1 or not isinstance(leaves[0], nn.Linear):
        raise InputError(REFUSAL.format(why=f"has {len(leaves)} layers after the pooling"))
    return gap, leaves[0]


def _as_tuple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _check_weights(w: torch.Tensor, weight: torch.Tensor) -> None:
    """Each row of ``w`` (N, C) must be +-a row of ``weight`` (K, C) where it is non-zero."""
    live = (w != 0).to(w.dtype)  # a confounder gate zeroes whole features
    cands = torch.cat([weight, -weight])  # (2K, C)
    diff = (w[:, None, :] - cands[None] * live[:, None, :]).abs().amax(dim=2)  # (N, 2K)
    tol = 1e-4 * weight.abs().max().clamp_min(1e-12) + 1e-7
    if not bool((diff.min(dim=1).values <= tol).all()):
        raise InputError(NOT_LINEAR)


def cam(f, x: torch.Tensor, targets: torch.Tensor, model: nn.Module, batch_size: int = 16) -> torch.Tensor:
    """CAM maps ``(N, 1, *spatial)`` on the input grid (signed)."""
    maps = class_activation(f, x, targets, model, batch_size=batch_size)
    return torch.cat([to_input_grid(maps[sl], x.shape[2:]) for sl in chunks(len(x), batch_size)])


def class_activation(f, x: torch.Tensor, targets: torch.Tensor, model: nn.Module, batch_size: int = 16) -> torch.Tensor:
    """CAM on the last stack's grid, ``(N, 1, *layer_grid)`` (before upsampling)."""
    gap, linear = cam_parts(model)
    out = []
    for sl in chunks(len(x), batch_size):
        store: dict[str, torch.Tensor] = {}
        handle = gap.register_forward_hook(lambda m, i, o: store.update(a=i[0], g=o))
        try:
            xb = x[sl].detach().clone().requires_grad_(True)
            with torch.enable_grad():
                s = f(xb, targets[sl])
                (w,) = torch.autograd.grad(s.sum(), store["g"])
        finally:
            handle.remove()
        w = w.flatten(1).detach()  # (n, C): the target's FC weights
        _check_weights(w, linear.weight.detach())
        a = store["a"].detach()
        out.append(torch.einsum("nc,nc...->n...", w, a)[:, None])
    return torch.cat(out)
