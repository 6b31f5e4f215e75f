"""Grad-CAM and guided Grad-CAM, 2D and 3D, done right.

``cam = ReLU(sum_c w_c A_c)`` with ``w_c`` the gradient of the score with respect to the
layer's activations ``A_c`` averaged over *all* spatial axes (ClinicaDL averaged over two axes
only and applied no ReLU), upsampled to the input grid with (tri)linear interpolation
(``align_corners=False``; Captum's ``LayerAttribution.interpolate`` defaults to nearest).
The layer is any module name (``--layer encoder.stack3.act``); by default the last
convolution or activation module whose output is still spatial.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neurointerp.attribution.core import chunks
from neurointerp.attribution.guided import guided_backprop
from neurointerp.attribution.layers import get_layer
from neurointerp.errors import InputError

_SPATIAL_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.GELU, nn.SiLU)


def default_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Name of the last conv/activation module whose output is spatial (a dry forward pass), or
    the model's own ``default_cam_layer`` where it names one (the attention head runs its gates'
    1x1 convolutions after the last conv stack)."""
    preferred = getattr(model, "default_cam_layer", None)
    if isinstance(preferred, str) and preferred:
        return preferred
    from neurointerp.attribution.layers import completion_order

    order = completion_order(model, x, keep=lambda m, o: isinstance(m, _SPATIAL_TYPES) and o.ndim == x.ndim)
    if not order:
        raise InputError("no convolution or activation module with a spatial output: pass --layer")
    return order[-1]


def gradcam(f, x, targets, model: nn.Module, layer: str | None = None, relu: bool = True, batch_size: int = 16):
    """Grad-CAM maps on the input grid, ``(N, 1, *spatial)``."""
    layer = layer or default_layer(model, x)
    mod = get_layer(model, layer)
    out = torch.empty_like(x[:, :1])
    for sl in chunks(len(x), batch_size):
        store = {}
        handle = mod.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
        try:
            xb = x[sl].detach().clone().requires_grad_(True)
            with torch.enable_grad():
                s = f(xb, targets[sl])
                act = store["a"]
                if act.ndim != x.ndim:
                    raise InputError(f"layer '{layer}' has no spatial output (shape {tuple(act.shape)})")
                (grad,) = torch.autograd.grad(s.sum(), act)
        finally:
            handle.remove()
        spatial = tuple(range(2, act.ndim))
        weights = grad.mean(dim=spatial, keepdim=True)  # average over every spatial axis
        cam = (weights * act.detach()).sum(dim=1, keepdim=True)
        if relu:
            cam = F.relu(cam)
        mode = "trilinear" if x.ndim == 5 else "bilinear"
        out[sl] = F.interpolate(cam, size=x.shape[2:], mode=mode, align_corners=False)
    return out


def guided_gradcam(f, x, targets, model: nn.Module, layer: str | None = None, batch_size: int = 16):
    cam = gradcam(f, x, targets, model, layer=layer, batch_size=batch_size)
    return guided_backprop(f, x, targets, model, batch_size=batch_size) * cam
