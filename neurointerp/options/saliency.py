"""Options of ``neurointerp saliency``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from neurointerp.attribution.names import FEATURE_OUTPUTS, METHOD_NAMES
from neurointerp.errors import InputError
from neurointerp.options import common as c
from neurointerp.options.core import Options, arg, flag, opt

SCORES = ("logit", "probability")


def parse_baseline(text: str, name: str = "--baseline") -> str:
    """``zeros``, ``min``, ``mean``, ``reference`` or a finite number (kept as text)."""
    value = str(text).strip()
    if value in ("zeros", "min", "mean", "reference"):
        return value
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{name} {text}: choose zeros, min, mean, reference or a number") from None
    if not math.isfinite(number):
        raise InputError(f"{name} {text}: the baseline must be a finite number")
    return value


def _channels(text: str, name: str = "--channels") -> tuple[int, ...] | None:
    """``0,3,5`` -> channel indices (0 allowed)."""
    if text is None or not str(text).strip():
        return None
    try:
        values = tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        raise InputError(f"{name} {text}: expected comma-separated channel numbers, e.g. 0,3,5") from None
    if not values or min(values) < 0:
        raise InputError(f"{name} {text}: channel numbers start at 0")
    return values


def method_default(name: str):
    """The fallback of a method parameter: its default in the attribution registry (the value the
    method runs with) for the first requested method that takes it; unset otherwise."""

    def fallback(o: "SaliencyOptions"):
        from neurointerp.attribution.registry import get_method

        for m in o.method:
            if m in METHOD_NAMES and name in get_method(m).defaults:
                return get_method(m).defaults[name]
        return None

    fallback.__doc__ = f"the registry default of {name} for the requested methods"
    return fallback


@dataclass(frozen=True)
class SaliencyOptions(Options):
    """Attribution maps per subject, group means, and scores against ground truth."""

    command: ClassVar[str] = "saliency"

    model: Path = c.input_file("Checkpoint written by `neurointerp train` (model.pt).")
    cohort: Path = c.input_file("Cohort table of the images to explain (on the model's grid, e.g. preprocessed).", affects=False)
    out: Path = c.output_folder("Output folder (BIDS derivatives).")
    method: tuple[str, ...] = opt(("gradient",), f"Attribution method, repeatable: {', '.join(METHOD_NAMES)}; or another output kind: {', '.join(FEATURE_OUTPUTS)}.", choices=METHOD_NAMES + FEATURE_OUTPUTS)
    target: Optional[str] = opt(None, "Class to explain (default: each subject's predicted class).")
    score: str = opt("logit", "Score explained: logit, or probability (the paper's s in [0, 1]).", choices=SCORES)
    layer: Optional[str] = opt(None, "Grad-CAM / feature-maps / input-optimisation layer, e.g. encoder.stack3.act (default: the last spatial conv/activation; input-optimisation without it: the class scores); attention: one gate, e.g. encoder.gate2 (default: all, averaged).")
    baseline: str = opt("zeros", "Baseline of integrated gradients, deeplift and gradient-shap: zeros, min, mean or a number; gradient-shap also reference (--reference images).", parse=parse_baseline)
    steps: int = opt(32, "Integrated gradients: points on the path.", minimum=1)
    samples: int = opt(25, "SmoothGrad: noisy copies per image; gradient-shap: samples per image.", minimum=1)
    noise_level: float = opt(0.15, "SmoothGrad: noise sd as a fraction of the image's intensity range.", minimum=0)
    window: int = opt(8, "Occlusion and swap-test window (voxels).", minimum=1)
    stride: int = opt(4, "Occlusion and swap-test stride (voxels).", minimum=1)
    fill: float = opt(0.0, "Value of removed voxels: occlusion, region-perturbation, lime, kernel-shap, optimised-perturbation --perturbation constant.")
    epsilon: float = opt(0.01, "LRP epsilon.", above=0)
    # optimised-perturbation, swap-test, lime, kernel-shap, gradient-shap (unset: the method's default)
    perturbation: Optional[str] = opt(None, "optimised-perturbation: blur or constant (--fill) [default: blur].", choices=("blur", "constant"), fallback=method_default("perturbation"))
    blur_sigma: Optional[float] = opt(None, "optimised-perturbation: Gaussian blur sd in voxels [default: 4].", minimum=0, fallback=method_default("blur_sigma"))
    lambda1: Optional[float] = opt(None, "optimised-perturbation: weight of the deleted area, mean |1-m|^beta1 [default: 0.01].", minimum=0, fallback=method_default("lambda1"))
    beta1: Optional[float] = opt(None, "optimised-perturbation: exponent of the area term [default: 1].", minimum=0, fallback=method_default("beta1"))
    lambda2: Optional[float] = opt(None, "optimised-perturbation: weight of the mask's total variation [default: 0.2].", minimum=0, fallback=method_default("lambda2"))
    beta2: Optional[float] = opt(None, "optimised-perturbation: exponent of the total variation [default: 3].", minimum=0, fallback=method_default("beta2"))
    iterations: Optional[int] = opt(None, "optimised-perturbation: Adam steps [default: 300].", minimum=1, fallback=method_default("iterations"))
    mask_lr: Optional[float] = opt(None, "optimised-perturbation: Adam step size [default: 0.1].", minimum=0, fallback=method_default("mask_lr"))
    mask_scale: Optional[int] = opt(None, "optimised-perturbation: mask grid this many times coarser, upsampled (artefact guard) [default: 4].", minimum=1, fallback=method_default("mask_scale"))
    jitter: Optional[int] = opt(None, "optimised-perturbation: random mask shift per step, voxels (artefact guard) [default: 2].", minimum=0, fallback=method_default("jitter"))
    swap_by: Optional[str] = opt(None, "swap-test regions: window (--window/--stride) or atlas [default: window].", choices=("window", "atlas"), fallback=method_default("swap_by"))
    swap_references: Optional[int] = opt(None, "swap-test: subjects of another class swapped in, per image [default: 4].", minimum=1, fallback=method_default("swap_references"))
    reference: Optional[Path] = opt(None, "Cohort table (with labels, on the model's grid) of the subjects swapped in by swap-test and of gradient-shap's --baseline reference [default: the cohort explained].", exists=True)
    segments: Optional[str] = opt(None, "lime/kernel-shap features: atlas (--atlas regions) or supervoxels [default: atlas].", choices=("atlas", "supervoxels"), fallback=method_default("segments"))
    n_segments: Optional[int] = opt(None, "lime/kernel-shap: number of SLIC supervoxels [default: 64].", minimum=2, fallback=method_default("n_segments"))
    n_samples: Optional[int] = opt(None, "lime/kernel-shap: perturbed images per subject [default: 1000].", minimum=2, fallback=method_default("n_samples"))
    kernel_width: Optional[float] = opt(None, "lime: width of the exponential kernel on the cosine distance [default: 0.25].", minimum=0, fallback=method_default("kernel_width"))
    ridge: Optional[float] = opt(None, "lime: ridge penalty of the local linear model [default: 1].", minimum=0, fallback=method_default("ridge"))
    shap_noise: Optional[float] = opt(None, "gradient-shap: noise sd as a fraction of the image's intensity range [default: 0].", minimum=0, fallback=method_default("shap_noise"))
    confounder_mask: Optional[Path] = opt(None, "mask.json from `confound-test`: confounder-free maps by partial back-propagation.", exists=True)
    ground_truth: Optional[str] = opt(None, "Ground-truth map (NIfTI on the maps' grid) or the name of a cohort column holding one per subject: NCC and mass scores.")
    truth_mask: Optional[Path] = opt(None, "Binary truth mask for the attribution-mass score (default: |ground truth| >= 10% of its maximum).", exists=True)
    atlas: Optional[str] = opt("auto", "Region tables: a registry atlas (AAL2, HarvardOxford, ...), a label image with --labels, auto (AAL2 in MNI152 space) or none.")
    labels: Optional[Path] = opt(None, "Label table (TSV/CSV index,name) of a user --atlas image.", exists=True)
    native: bool = flag(False, "Also write each map in native T1w space (inverse transform from preprocess).")
    resample_to: Optional[Path] = opt(None, "Also write each map on this NIfTI's grid (e.g. the 1 mm template), trilinear.", exists=True)
    allow_train: bool = flag(False, "Explain participants the model was trained on (refused by default).")
    allow_unvalidated: bool = c.allow_unvalidated()
    batch_size: int = c.batch_size(8, "Subjects per batch.")
    device: str = c.device()
    threads: Optional[int] = c.threads()
    array_index: Optional[int] = c.array_index()
    array_size: Optional[int] = c.array_size()
    seed: int = c.seed("Random seed (SmoothGrad and gradient-shap noise, lime/kernel-shap samples, optimised-perturbation jitter, reference draw).")
    force: bool = c.force(per_subject=True)
    # feature-map output kinds (not attribution maps)
    channels: Optional[tuple[int, ...]] = opt(None, "feature-maps / input-optimisation: channels of --layer, e.g. 0,3,5 (default: all).", parse=_channels, cli_type=str)
    opt_steps: int = opt(200, "input-optimisation: Adam steps (cosine-decayed learning rate).", minimum=1)
    opt_lr: float = opt(0.05, "input-optimisation: initial learning rate (intensity units per step).", above=0)
    opt_l2: float = opt(1.0, "input-optimisation: L2 weight toward the start image (RMS change about 1/this for a linear unit).", minimum=0)
    opt_tv: float = opt(0.1, "input-optimisation: total-variation weight.", minimum=0)
    opt_jitter: int = opt(1, "input-optimisation: random shift of up to this many voxels per axis before every step (0: off).", minimum=0)
    opt_blur: float = opt(0.5, "input-optimisation: Gaussian blur sigma (voxels) applied every 4 steps (0: off).", minimum=0)

    def check(self) -> None:
        if not self.method:
            raise InputError("give at least one --method")
