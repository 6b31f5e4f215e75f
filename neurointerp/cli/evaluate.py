"""``neurointerp evaluate``: attribution-quality metrics and sanity checks."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from neurointerp.attribution.names import METHOD_NAMES


def evaluate(
    model: Path = typer.Argument(..., help="Checkpoint written by `neurointerp train`."),
    cohort: Path = typer.Argument(..., help="Cohort table of held-out images on the model's grid."),
    out: Path = typer.Argument(..., help="Output folder: metrics.tsv, deletion_curves.tsv, randomisation.tsv, evaluate.png, metrics.json."),
    method: List[str] = typer.Option(["gradient"], help=f"Method to evaluate, repeatable: {', '.join(METHOD_NAMES)}."),
    ground_truth: Optional[str] = typer.Option(None, help="Ground-truth map (NIfTI on the model's grid) or a cohort column with one per subject."),
    truth_mask: Optional[Path] = typer.Option(None, help="Binary truth mask (default: |ground truth| >= 10% of its maximum)."),
    extra_model: List[Path] = typer.Option([], help="Checkpoints of the same model retrained (other seeds/folds), repeatable: retraining robustness."),
    n_subjects: int = typer.Option(8, help="Subjects evaluated (the first rows of the cohort)."),
    samples: int = typer.Option(32, help="Infidelity: perturbations per subject."),
    noise_level: float = typer.Option(0.1, help="Infidelity: noise sd as a fraction of the brain's intensity sd."),
    epsilon: float = typer.Option(0.05, help="Max-sensitivity: radius as a fraction of the brain's intensity sd."),
    sensitivity_samples: int = typer.Option(8, help="Max-sensitivity: samples in the ball."),
    target: Optional[str] = typer.Option(None, help="Class to explain (default: predicted class)."),
    score: str = typer.Option("logit", help="Score explained: logit or probability."),
    # issue 23 (h-attr): what the newer methods need
    param: List[str] = typer.Option([], help="Method parameter KEY=VALUE as saliency takes it (e.g. n_samples=200, iterations=100, segments=supervoxels), repeatable."),
    atlas: Optional[str] = typer.Option("auto", help="Regions of region-perturbation and of swap-test/lime/kernel-shap by atlas: a registry atlas, a label image with --labels, auto (AAL2 in MNI152 space) or none."),
    labels: Optional[Path] = typer.Option(None, help="Label table (TSV/CSV index,name) of a user --atlas image."),
    reference: Optional[Path] = typer.Option(None, help="Cohort table (with labels) of the subjects the swap test swaps in (default: the evaluated cohort)."),
    allow_train: bool = typer.Option(False, "--allow-train", help="Evaluate on participants the model was trained on."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads (default: SLURM_CPUS_PER_TASK)."),
    seed: int = typer.Option(0, help="Seed of every random perturbation and re-initialisation."),
    force: bool = typer.Option(False, "--force", help="Overwrite an earlier evaluation."),
) -> None:
    """Fidelity, sensitivity, continuity, randomisation and retraining checks per method."""
    from neurointerp.attribution.registry import get_method, parse_params
    from neurointerp.evaluate.run import run_evaluate
    from neurointerp.progress import info

    for m in method:
        get_method(m)

    path = run_evaluate(
        model,
        cohort,
        out,
        method=method,
        ground_truth=ground_truth,
        truth_mask=truth_mask,
        extra_model=extra_model,
        n_subjects=n_subjects,
        samples=samples,
        noise_level=noise_level,
        epsilon=epsilon,
        sensitivity_samples=sensitivity_samples,
        target=target,
        score=score,
        params=parse_params(param, method),
        atlas=atlas,
        labels=labels,
        reference=reference,
        allow_train=allow_train,
        device=device,
        threads=threads,
        seed=seed,
        force=force,
    )
    info(f"wrote {path}")
