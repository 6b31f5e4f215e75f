"""One registry for every attribution method: names, defaults, and a single entry point.

>>> maps, record = attribute(model, x, "integrated-gradients", steps=64)

``record`` holds the method, every parameter with its default filled in, the targets and the
score -- what goes into the sidecar. Maps are ``(N, *spatial)`` float32 numpy arrays on the
input grid (channels summed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from neurointerp.attribution.names import METHOD_NAMES  # noqa: F401 (re-exported)
from neurointerp.errors import InputError


@dataclass(frozen=True)
class Method:
    name: str
    func: Callable
    description: str
    needs_model: bool = False  # hooks into the model (guided, Grad-CAM, LRP)
    defaults: dict[str, Any] = field(default_factory=dict)
    signed: bool = True  # maps carry a meaningful sign


def _registry() -> dict[str, Method]:
    from neurointerp.attribution import gradcam, gradients, guided, lrp, perturbation

    methods = [
        Method("gradient", gradients.gradient, "d score / d input (signed)", defaults={"absolute": False}),
        Method("saliency", lambda f, x, t, **kw: gradients.gradient(f, x, t, absolute=True, **kw), "|d score / d input| (Simonyan; confounder-aware saliency)", signed=False),
        Method("gradxinput", gradients.gradxinput, "gradient x input"),
        Method("guided-backprop", guided.guided_backprop, "guided back-propagation through nn.ReLU modules", needs_model=True),
        Method("deconvnet", guided.deconvnet, "deconvnet back-propagation through nn.ReLU modules", needs_model=True),
        Method("gradcam", gradcam.gradcam, "Grad-CAM (weights averaged over all spatial axes, ReLU, (tri)linear upsampling)", needs_model=True, defaults={"layer": None}, signed=False),
        Method("guided-gradcam", gradcam.guided_gradcam, "guided backprop x Grad-CAM", needs_model=True, defaults={"layer": None}),
        Method("integrated-gradients", gradients.integrated_gradients, "integrated gradients (midpoint rule)", defaults={"baseline": "zeros", "steps": 32}),
        Method("smoothgrad", gradients.smoothgrad, "SmoothGrad, noise relative to the image's intensity range", defaults={"samples": 25, "noise_level": 0.15, "absolute": False, "seed": 0}),
        Method("occlusion", perturbation.occlusion, "sliding-window occlusion (mean score drop)", defaults={"window": 8, "stride": 4, "fill": 0.0}),
        Method("region-perturbation", lambda f, x, t, regions, fill=0.0, batch_size=32: perturbation.region_perturbation(f, x, t, regions, fill=fill, batch_size=batch_size)[0], "each atlas region occluded in turn (score drop per region)", defaults={"fill": 0.0}),
        Method("lrp-epsilon", lambda f, x, t, model, **kw: lrp.lrp(f, x, t, model, rule="epsilon", **kw), "LRP, epsilon rule", needs_model=True, defaults={"epsilon": 0.01}),
        Method("lrp-alphabeta", lambda f, x, t, model, **kw: lrp.lrp(f, x, t, model, rule="alphabeta", **kw), "LRP, alpha-beta rule", needs_model=True, defaults={"alpha": 2.0, "beta": 1.0}),
        # h-arch (#23 items 4, 6): architecture-specific methods
        Method("cam", _cam, "CAM (Zhou et al.): sum_k w_kc A_k at the global average pooling (signed), (tri)linear upsampling; gap2d/gap3d models", needs_model=True),
        Method("attention", _attention, "attention maps of an attention-gated model (mean over gates unless --layer picks one), (tri)linear upsampling; attention2d/attention3d models", needs_model=True, defaults={"layer": None}, signed=False),
    ]
    return {m.name: m for m in methods}


def _cam(f, x, t, model, **kw):
    from neurointerp.attribution.cam import cam

    return cam(f, x, t, model, **kw)


def _attention(f, x, t, model, **kw):
    from neurointerp.attribution.attention import attention_maps

    return attention_maps(f, x, t, model, **kw)


_CACHE: dict[str, Method] = {}


def methods() -> dict[str, Method]:
    if not _CACHE:
        _CACHE.update(_registry())
    return _CACHE




def get_method(name: str) -> Method:
    reg = methods()
    if name not in reg:
        raise InputError(f"unknown attribution method '{name}' (choose {', '.join(reg)})")
    return reg[name]


def attribute(
    model,
    x,
    method: str,
    target=None,
    task: str = "binary",
    score: str = "logit",
    mask=None,
    regions=None,
    batch_size: int = 16,
    **params: Any,
):
    """Attribution maps of ``x`` (a ``(N, C, *spatial)`` tensor or array) for ``model``.

    ``target``: class index (or one per sample); None explains the predicted class.
    ``mask``: brain mask (``spatial`` or ``(N, *spatial)``) -- occlusion skips windows outside it.
    ``regions``: integer atlas labels on the input grid, for ``region-perturbation``.
    Other keyword arguments are the method's parameters (see :data:`methods`).
    """
    import torch

    from neurointerp.attribution.core import resolve_targets, score_function

    m = get_method(method)
    unknown = set(params) - set(m.defaults) - ({"task"} if m.needs_model else set())
    if unknown:
        raise InputError(f"method '{method}' has no parameter {', '.join(sorted(unknown))} (parameters: {', '.join(m.defaults) or 'none'})")
    full = {**m.defaults, **{k: v for k, v in params.items() if v is not None or k in ("layer",)}}
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    device = next(model.parameters()).device
    x = x.to(device)
    was_training = model.training
    model.eval()
    try:
        targets = resolve_targets(model, x, target, task=task).to(device)
        f = score_function(model, task=task, score=score)
        kwargs = dict(full)
        if method == "occlusion":
            kwargs.update(mask=mask, batch_size=max(batch_size, 32), model=model, task=task, score=score)
        if method == "region-perturbation":
            if regions is None:
                raise InputError("region-perturbation needs an atlas (--atlas)")
            kwargs.update(regions=np.asarray(regions), batch_size=max(batch_size, 32))
        else:
            kwargs["batch_size"] = batch_size
        if m.needs_model:
            kwargs["model"] = model
            if method.startswith("lrp"):
                kwargs["task"] = task
        if method == "gradcam" or method == "guided-gradcam":
            from neurointerp.attribution.gradcam import default_layer

            if kwargs.get("layer") is None:
                kwargs["layer"] = default_layer(model, x)
                full["layer"] = kwargs["layer"]
        maps = m.func(f, x, targets, **kwargs)
    finally:
        model.train(was_training)
    maps = maps.sum(dim=1).detach().cpu().numpy().astype(np.float32)
    record = {
        "Method": method,
        "Description": m.description,
        "Parameters": full,
        "Score": score,
        "Task": task,
        "Targets": [int(t) for t in targets.cpu()],
        "TargetChoice": "predicted class" if target is None else "given",
        "Signed": m.signed,
    }
    return maps, record
