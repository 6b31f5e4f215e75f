"""Options of ``neurointerp evaluate``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from neurointerp.attribution.names import METHOD_NAMES
from neurointerp.options import common as c
from neurointerp.options.core import Options, flag, opt


@dataclass(frozen=True)
class EvaluateOptions(Options):
    """Fidelity, sensitivity, continuity, randomisation and retraining checks per method."""

    command: ClassVar[str] = "evaluate"

    model: Path = c.input_file("Checkpoint written by `neurointerp train`.")
    cohort: Path = c.input_file("Cohort table of held-out images on the model's grid.", affects=False)
    out: Path = c.output_folder("Output folder: metrics.tsv, deletion_curves.tsv, randomisation.tsv, evaluate.png, metrics.json.")
    method: tuple[str, ...] = opt(("gradient",), f"Method to evaluate, repeatable: {', '.join(METHOD_NAMES)}.", choices=METHOD_NAMES)
    ground_truth: Optional[str] = opt(None, "Ground-truth map (NIfTI on the model's grid) or a cohort column with one per subject.")
    truth_mask: Optional[Path] = opt(None, "Binary truth mask (default: |ground truth| >= 10% of its maximum).", exists=True)
    extra_model: tuple[Path, ...] = opt((), "Checkpoints of the same model retrained (other seeds/folds), repeatable: retraining robustness.", exists=True)
    n_subjects: int = opt(8, "Subjects evaluated (the first rows of the cohort).", minimum=2)
    samples: int = opt(32, "Infidelity: perturbations per subject.", minimum=1)
    noise_level: float = opt(0.1, "Infidelity: noise sd as a fraction of the brain's intensity sd.", above=0)
    epsilon: float = opt(0.05, "Max-sensitivity: radius as a fraction of the brain's intensity sd.", above=0)
    sensitivity_samples: int = opt(8, "Max-sensitivity: samples in the ball.", minimum=1)
    target: Optional[str] = opt(None, "Class to explain (default: predicted class).")
    score: str = opt("logit", "Score explained: logit or probability.", choices=("logit", "probability"))
    param: tuple[str, ...] = opt((), "Method parameter KEY=VALUE as saliency takes it (e.g. n_samples=200, iterations=100, segments=supervoxels), repeatable.")
    atlas: Optional[str] = opt("auto", "Regions of region-perturbation and of swap-test/lime/kernel-shap by atlas: a registry atlas, a label image with --labels, auto (AAL2 in MNI152 space) or none.")
    labels: Optional[Path] = opt(None, "Label table (TSV/CSV index,name) of a user --atlas image.", exists=True)
    reference: Optional[Path] = opt(None, "Cohort table (with labels) of the subjects the swap test swaps in (default: the evaluated cohort).", exists=True)
    allow_train: bool = flag(False, "Evaluate on participants the model was trained on.")
    allow_unvalidated: bool = c.allow_unvalidated()
    device: str = c.device()
    threads: Optional[int] = c.threads()
    seed: int = c.seed("Seed of every random perturbation and re-initialisation.")
    force: bool = c.force()
