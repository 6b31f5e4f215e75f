"""Reading a model's intermediate layers: capture a module's output (stopping the forward pass
there when nothing later is needed) and bring a layer-grid map to the input grid.

The upsampling is Grad-CAM's (:mod:`neurointerp.attribution.gradcam`): (tri)linear with
``align_corners=False`` from the layer's grid to the input's, so CAM, Grad-CAM, attention maps
and feature maps of one layer land on the same voxels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neurointerp.errors import InputError


class _Stop(Exception):
    """Raised by a capturing hook to end the forward pass at the captured layer."""


def get_layer(model: nn.Module, layer: str) -> nn.Module:
    """``model.get_submodule(layer)`` with a one-line error naming some layers."""
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        raise InputError(f"no layer '{layer}' in the model (layers: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''})") from None


def completion_order(model: nn.Module, x: torch.Tensor, keep=None) -> list[str]:
    """Names of the modules in the order their forward passes finish (a dry pass on ``x[:1]``; a
    module called twice appears twice); ``keep(module, output)`` filters them (e.g. spatial outputs only)."""
    order: list[str] = []

    def hook(mod, inputs, output, name):
        if keep is None or keep(mod, output):
            order.append(name)

    handles = [mod.register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name)) for name, mod in model.named_modules() if name]
    try:
        with torch.inference_mode():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return order


def capture(model: nn.Module, layer: str, x: torch.Tensor, stop: bool = True) -> torch.Tensor:
    """Output of module ``layer`` for the batch ``x`` (no gradient). With ``stop`` the forward
    pass ends at that module (later layers are not computed)."""
    mod = get_layer(model, layer)
    store: dict[str, torch.Tensor] = {}

    def hook(m, i, o):
        store["a"] = o
        if stop:
            raise _Stop

    handle = mod.register_forward_hook(hook)
    try:
        with torch.inference_mode():
            try:
                model(x)
            except _Stop:
                pass
    finally:
        handle.remove()
    if "a" not in store:
        raise InputError(f"layer '{layer}' is not run by the model's forward pass")
    return store["a"]


def require_spatial(act: torch.Tensor, x: torch.Tensor, layer: str) -> None:
    if not isinstance(act, torch.Tensor) or act.ndim != x.ndim:
        shape = tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__
        raise InputError(f"layer '{layer}' has no spatial output (shape {shape}); choose a conv-stack layer such as encoder.stack1.act")


def to_input_grid(maps: torch.Tensor, size) -> torch.Tensor:
    """``(N, C, *layer_grid)`` -> ``(N, C, *size)``, (tri)linear, ``align_corners=False`` (as Grad-CAM)."""
    mode = "trilinear" if maps.ndim == 5 else "bilinear"
    return F.interpolate(maps, size=tuple(size), mode=mode, align_corners=False)
