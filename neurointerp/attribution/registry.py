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
    # scores the method can explain (LRP propagates the logit's relevance: no probability)
    scores: tuple[str, ...] = ("logit", "probability")
    # data beyond the images that the method takes from attribute(): "mask" (brain mask),
    # "regions" (atlas labels), "reference" (a ReferenceSet of other subjects), "model", "task"
    inputs: tuple[str, ...] = ()


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
        Method("lrp-epsilon", lambda f, x, t, model, **kw: lrp.lrp(f, x, t, model, rule="epsilon", **kw), "LRP, epsilon rule", needs_model=True, defaults={"epsilon": 0.01}, scores=("logit",)),
        Method("lrp-alphabeta", lambda f, x, t, model, **kw: lrp.lrp(f, x, t, model, rule="alphabeta", **kw), "LRP, alpha-beta rule", needs_model=True, defaults={"alpha": 2.0, "beta": 1.0}, scores=("logit",)),
        # h-arch (#23 items 4, 6): architecture-specific methods
        Method("cam", _cam, "CAM (Zhou et al.): sum_k w_kc A_k at the global average pooling (signed), (tri)linear upsampling; gap2d/gap3d models", needs_model=True),
        Method("attention", _attention, "attention maps of an attention-gated model (mean over gates unless --layer picks one), (tri)linear upsampling; attention2d/attention3d models", needs_model=True, defaults={"layer": None}, signed=False),
    ]
    methods += _extra_methods()
    return {m.name: m for m in methods}


def _cam(f, x, t, model, **kw):
    from neurointerp.attribution.cam import cam

    return cam(f, x, t, model, **kw)


def _attention(f, x, t, model, **kw):
    from neurointerp.attribution.attention import attention_maps

    return attention_maps(f, x, t, model, **kw)


def _extra_methods() -> list[Method]:
    """Optimised perturbation, swap test, LIME, KernelSHAP, DeepLIFT, GradientSHAP (issue 23)."""
    from neurointerp.attribution import deeplift, distill, gradients, optimised, swap

    return [
        Method(
            "optimised-perturbation",
            optimised.optimised_perturbation,
            "optimised perturbation mask (Fong & Vedaldi 2017): 1 - m of the smallest, smoothest mask whose perturbation lowers the score",
            defaults={"perturbation": "blur", "blur_sigma": 4.0, "fill": 0.0, "lambda1": 0.01, "beta1": 1.0, "lambda2": 0.2, "beta2": 3.0, "iterations": 300, "mask_lr": 0.1, "mask_scale": 4, "jitter": 2, "seed": 0},
            signed=False,
            inputs=("mask",),
        ),
        Method(
            "swap-test",
            swap.swap_test,
            "swap test (Nigri et al. 2020): score drop when a region is replaced by the same region of subjects of another class",
            needs_model=True,
            defaults={"swap_by": "window", "window": 8, "stride": 4, "swap_references": 4, "reference": None},
            inputs=("mask", "regions", "reference", "model", "task"),
        ),
        Method(
            "lime",
            distill.lime,
            "LIME over atlas regions or supervoxels (weighted ridge on binary region masks)",
            defaults={"segments": "atlas", "n_segments": 64, "n_samples": 1000, "kernel_width": 0.25, "ridge": 1.0, "fill": 0.0, "seed": 0},
            inputs=("mask", "regions"),
        ),
        Method(
            "kernel-shap",
            distill.kernel_shap,
            "KernelSHAP over atlas regions or supervoxels (Shapley values; exact when every coalition fits in n_samples)",
            defaults={"segments": "atlas", "n_segments": 64, "n_samples": 1000, "fill": 0.0, "seed": 0},
            inputs=("mask", "regions"),
        ),
        Method("deeplift", deeplift.deeplift, "DeepLIFT, rescale rule (Captum's max-pool rule)", needs_model=True, defaults={"baseline": "zeros"}, inputs=("model", "task", "score")),
        Method(
            "gradient-shap",
            gradients.gradient_shap,
            "GradientSHAP (expected gradients from a baseline distribution)",
            defaults={"baseline": "zeros", "samples": 25, "shap_noise": 0.0, "seed": 0, "reference": None},
            inputs=("reference",),
        ),
    ]


# parameters recorded in the sidecar but not passed to the method (the data comes separately)
_RECORD_ONLY = ("reference",)


def needs_reference(method: str, params: dict[str, Any]) -> bool:
    """Whether ``method`` with ``params`` (None = default) needs reference images."""
    m = get_method(method)
    if "reference" not in m.inputs:
        return False
    if method == "gradient-shap":
        baseline = params.get("baseline")
        return (m.defaults["baseline"] if baseline is None else baseline) == "reference"
    return True


def needs_regions(method: str, params: dict[str, Any]) -> bool:
    """Whether ``method`` with ``params`` (None = default) needs atlas regions on the model's grid."""
    m = get_method(method)
    if method == "region-perturbation":
        return True
    if "regions" not in m.inputs:
        return False
    key = "swap_by" if method == "swap-test" else "segments"
    value = params.get(key)
    return (m.defaults[key] if value is None else value) == "atlas"


def check_score(method: str, score: str, task: str = "binary") -> None:
    """Refuse a score the method cannot explain (before anything is computed or written)."""
    from neurointerp.attribution.core import SCORES

    if score not in SCORES:
        raise InputError(f"unknown score '{score}' (choose {', '.join(SCORES)})")
    if task == "regression" and score != "logit":
        raise InputError("--score probability is for classifiers; a regression model explains its output (use --score logit)")
    m = get_method(method)
    if score not in m.scores:
        raise InputError(f"{method} explains the {' or '.join(m.scores)} only (its relevance is propagated from the output layer); --score {score} is refused -- use --score logit, or a gradient or perturbation method for the {score}")


def parse_params(pairs, method_names) -> dict[str, Any]:
    """``["n_samples=200", "segments=supervoxels"]`` -> typed values (the type of each default).

    A key that none of ``method_names`` has is refused; values of numeric parameters must parse.
    """
    defaults: dict[str, Any] = {}
    for name in method_names:
        for k, v in get_method(name).defaults.items():
            if v is not None:
                defaults.setdefault(k, v)
            else:
                defaults.setdefault(k, None)
    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, text = str(pair).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise InputError(f"--param {pair}: expected KEY=VALUE, e.g. n_samples=200")
        if key not in defaults:
            raise InputError(f"--param {key}: not a parameter of {', '.join(method_names)} (parameters: {', '.join(sorted(defaults)) or 'none'})")
        like = defaults[key]
        try:
            if isinstance(like, bool):
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(text)
                value: Any = text.lower() in ("true", "1", "yes")
            elif isinstance(like, int):
                value = int(text)
            elif isinstance(like, float):
                value = float(text)
            else:
                value = text
        except ValueError:
            raise InputError(f"--param {key}={text}: expected {type(like).__name__}") from None
        out[key] = value
    return out



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
    reference_set=None,
    reference_choice=None,
    **params: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Attribution maps of ``x`` (a ``(N, C, *spatial)`` tensor or array) for ``model``.

    ``target``: class index (or one per sample); None explains the predicted class.
    ``mask``: brain mask (``spatial`` or ``(N, *spatial)``) -- occlusion skips windows outside it.
    ``regions``: integer atlas labels on the input grid, for ``region-perturbation`` and the
    atlas variants of ``swap-test``, ``lime``, ``kernel-shap``.
    ``reference_set``: a :class:`~neurointerp.attribution.reference.ReferenceSet` (images of
    other subjects with their classes) for ``swap-test`` and ``gradient-shap --baseline
    reference``; the ``reference`` *parameter* only records where it came from.
    ``reference_choice``: swap-test partners per sample (indices into ``reference_set``, as in
    ``record["ReferenceIndices"]`` of an earlier call) instead of choosing them with ``model``
    -- ``evaluate`` keeps them fixed while it randomises the model.
    Other keyword arguments are the method's parameters (see :data:`methods`).
    ``record["Score"]`` is the score explained (a method that cannot explain the requested
    score refuses, see :func:`check_score`).

    Returns
    -------
    maps : numpy.ndarray
        ``float32``, shape ``(N, *spatial)``: one map per sample on the input grid, the
        attribution summed over the input channels (signed unless ``record["Signed"]`` is False).
    record : dict
        What was computed, for the maps' JSON sidecars: ``Method``, ``Description``,
        ``Parameters`` (every parameter, defaults filled in), ``Score``, ``Task``, ``Targets``
        (the class explained per sample), ``TargetChoice``, ``Signed``; for swap-test also
        ``References`` and ``ReferenceIndices``.
    """
    import torch

    from neurointerp.attribution.core import resolve_targets, score_function

    m = get_method(method)
    check_score(method, score, task)
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
        if m.inputs:  # the methods that declare what they take (issue 23)
            for key in _RECORD_ONLY:
                kwargs.pop(key, None)
            if "mask" in m.inputs:
                kwargs["mask"] = None if mask is None else np.asarray(mask)
            if "regions" in m.inputs:
                if needs_regions(method, full) and regions is None:
                    raise InputError(f"{method} with {'--swap-by' if method == 'swap-test' else '--segments'} atlas needs an atlas on the model's grid (--atlas)")
                kwargs["regions"] = None if regions is None else np.asarray(regions)
            if "reference" in m.inputs:
                if needs_reference(method, full) and (reference_set is None or len(reference_set) == 0):
                    raise InputError(f"{method} needs reference images ({'another class' if method == 'swap-test' else 'the baseline distribution'}): --reference, or a cohort with labels")
                kwargs["reference"] = reference_set
            if "task" in m.inputs:
                kwargs["task"] = task
            if "score" in m.inputs:
                kwargs["score"] = score
            if method == "swap-test":
                from neurointerp.attribution.swap import choose_references

                kwargs["score"] = score
                if reference_choice is not None:
                    if len(reference_choice) != len(x):
                        raise InputError(f"{len(reference_choice)} reference choices for {len(x)} samples")
                    kwargs["chosen"] = [[int(r) for r in c] for c in reference_choice]
                else:
                    kwargs["chosen"] = choose_references(model, x, targets, reference_set, int(full["swap_references"]), task=task, score=score)
                kwargs["batch_size"] = max(batch_size, 32)
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
    if kwargs.get("chosen") is not None:
        record["References"] = [[reference_set.ids[r] if reference_set.ids else r for r in c] for c in kwargs["chosen"]]
        record["ReferenceIndices"] = kwargs["chosen"]
    return maps, record
