"""Options of ``neurointerp saliency``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from neurointerp.attribution.names import METHOD_NAMES
from neurointerp.errors import InputError
from neurointerp.options import common as c
from neurointerp.options.core import Options, arg, flag, opt

SCORES = ("logit", "probability")


def parse_baseline(text: str, name: str = "--baseline") -> str:
    """``zeros``, ``min``, ``mean`` or a finite number (kept as text)."""
    value = str(text).strip()
    if value in ("zeros", "min", "mean"):
        return value
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{name} {text}: choose zeros, min, mean or a number") from None
    if not math.isfinite(number):
        raise InputError(f"{name} {text}: the baseline must be a finite number")
    return value


@dataclass(frozen=True)
class SaliencyOptions(Options):
    """Attribution maps per subject, group means, and scores against ground truth."""

    command: ClassVar[str] = "saliency"

    model: Path = c.input_file("Checkpoint written by `neurointerp train` (model.pt).")
    cohort: Path = c.input_file("Cohort table of the images to explain (on the model's grid, e.g. preprocessed).", affects=False)
    out: Path = c.output_folder("Output folder (BIDS derivatives).")
    method: tuple[str, ...] = opt(("gradient",), f"Attribution method, repeatable: {', '.join(METHOD_NAMES)}.", choices=METHOD_NAMES)
    target: Optional[str] = opt(None, "Class to explain (default: each subject's predicted class).")
    score: str = opt("logit", "Score explained: logit, or probability (the paper's s in [0, 1]).", choices=SCORES)
    layer: Optional[str] = opt(None, "Grad-CAM layer, e.g. encoder.stack3.act (default: the last spatial conv/activation).")
    baseline: str = opt("zeros", "Integrated gradients baseline: zeros, min, mean or a number.", parse=parse_baseline)
    steps: int = opt(32, "Integrated gradients: points on the path.", minimum=1)
    samples: int = opt(25, "SmoothGrad: noisy copies per image.", minimum=1)
    noise_level: float = opt(0.15, "SmoothGrad: noise sd as a fraction of the image's intensity range.", minimum=0)
    window: int = opt(8, "Occlusion window (voxels).", minimum=1)
    stride: int = opt(4, "Occlusion stride (voxels).", minimum=1)
    fill: float = opt(0.0, "Occlusion fill value.")
    epsilon: float = opt(0.01, "LRP epsilon.", above=0)
    confounder_mask: Optional[Path] = opt(None, "mask.json from `confound-test`: confounder-free maps by partial back-propagation.", exists=True)
    ground_truth: Optional[str] = opt(None, "Ground-truth map (NIfTI on the maps' grid) or the name of a cohort column holding one per subject: NCC and mass scores.")
    truth_mask: Optional[Path] = opt(None, "Binary truth mask for the attribution-mass score (default: |ground truth| >= 10% of its maximum).", exists=True)
    atlas: Optional[str] = opt("auto", "Region tables: a registry atlas (AAL2, HarvardOxford, ...), a label image with --labels, auto (AAL2 in MNI152 space) or none.")
    labels: Optional[Path] = opt(None, "Label table (TSV/CSV index,name) of a user --atlas image.", exists=True)
    native: bool = flag(False, "Also write each map in native T1w space (inverse transform from preprocess).")
    resample_to: Optional[Path] = opt(None, "Also write each map on this NIfTI's grid (e.g. the 1 mm template), trilinear.", exists=True)
    allow_train: bool = flag(False, "Explain participants the model was trained on (refused by default).")
    batch_size: int = c.batch_size(8, "Subjects per batch.")
    device: str = c.device()
    threads: Optional[int] = c.threads()
    array_index: Optional[int] = c.array_index()
    array_size: Optional[int] = c.array_size()
    seed: int = c.seed("Random seed (SmoothGrad noise).")
    force: bool = c.force(per_subject=True)

    def check(self) -> None:
        if not self.method:
            raise InputError("give at least one --method")
