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
    allow_train: bool = typer.Option(False, "--allow-train", help="Evaluate on participants the model was trained on."),
    allow_unvalidated: bool = typer.Option(False, "--allow-unvalidated", help="Go on with a model that has no held-out evidence of skill (refused by default: its maps would explain noise)."),  # skill gate (issue #21)
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads (default: SLURM_CPUS_PER_TASK)."),
    seed: int = typer.Option(0, help="Seed of every random perturbation and re-initialisation."),
    force: bool = typer.Option(False, "--force", help="Overwrite an earlier evaluation."),
) -> None:
    """Fidelity, sensitivity, continuity, randomisation and retraining checks per method."""
    from neurointerp.evaluate.run import run_evaluate
    from neurointerp.progress import info

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
        allow_train=allow_train,
        allow_unvalidated=allow_unvalidated,
        device=device,
        threads=threads,
        seed=seed,
        force=force,
    )
    info(f"wrote {path}")
