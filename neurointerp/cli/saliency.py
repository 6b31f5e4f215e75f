"""``neurointerp saliency``: attribution maps in the model's (template) space."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from neurointerp.attribution import METHOD_NAMES


def saliency(
    model: Path = typer.Argument(..., help="Checkpoint written by `neurointerp train` (model.pt)."),
    cohort: Path = typer.Argument(..., help="Cohort table of the images to explain (on the model's grid, e.g. preprocessed)."),
    out: Path = typer.Argument(..., help="Output folder (BIDS derivatives)."),
    method: List[str] = typer.Option(["gradient"], help=f"Attribution method, repeatable: {', '.join(METHOD_NAMES)}."),
    target: Optional[str] = typer.Option(None, help="Class to explain (default: each subject's predicted class)."),
    score: str = typer.Option("logit", help="Score explained: logit, or probability (the paper's s in [0, 1])."),
    layer: Optional[str] = typer.Option(None, help="Grad-CAM layer, e.g. encoder.stack3.act (default: the last spatial conv/activation)."),
    baseline: str = typer.Option("zeros", help="Integrated gradients baseline: zeros, min, mean or a number."),
    steps: int = typer.Option(32, help="Integrated gradients: points on the path."),
    samples: int = typer.Option(25, help="SmoothGrad: noisy copies per image."),
    noise_level: float = typer.Option(0.15, help="SmoothGrad: noise sd as a fraction of the image's intensity range."),
    window: int = typer.Option(8, help="Occlusion window (voxels)."),
    stride: int = typer.Option(4, help="Occlusion stride (voxels)."),
    fill: float = typer.Option(0.0, help="Occlusion fill value."),
    epsilon: float = typer.Option(0.01, help="LRP epsilon."),
    confounder_mask: Optional[Path] = typer.Option(None, help="mask.json from `confound-test`: confounder-free maps by partial back-propagation."),
    ground_truth: Optional[str] = typer.Option(None, help="Ground-truth map (NIfTI on the maps' grid) or the name of a cohort column holding one per subject: NCC and mass scores."),
    truth_mask: Optional[Path] = typer.Option(None, help="Binary truth mask for the attribution-mass score (default: |ground truth| >= 10% of its maximum)."),
    atlas: Optional[str] = typer.Option("auto", help="Region tables: a registry atlas (AAL2, HarvardOxford, ...), a label image with --labels, auto (AAL2 in MNI152 space) or none."),
    labels: Optional[Path] = typer.Option(None, help="Label table (TSV/CSV index,name) of a user --atlas image."),
    native: bool = typer.Option(False, "--native", help="Also write each map in native T1w space (inverse transform from preprocess)."),
    resample_to: Optional[Path] = typer.Option(None, help="Also write each map on this NIfTI's grid (e.g. the 1 mm template), trilinear."),
    allow_train: bool = typer.Option(False, "--allow-train", help="Explain participants the model was trained on (refused by default)."),
    allow_unvalidated: bool = typer.Option(False, "--allow-unvalidated", help="Go on with a model that has no held-out evidence of skill (refused by default: its maps would explain noise)."),  # skill gate (issue #21)
    batch_size: int = typer.Option(8, help="Subjects per batch."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads (default: SLURM_CPUS_PER_TASK)."),
    array_index: Optional[int] = typer.Option(None, help="This task's index in a job array (default $SLURM_ARRAY_TASK_ID)."),
    array_size: Optional[int] = typer.Option(None, help="Number of tasks in the job array (default $SLURM_ARRAY_TASK_COUNT)."),
    seed: int = typer.Option(0, help="Random seed (SmoothGrad noise)."),
    force: bool = typer.Option(False, "--force", help="Recompute and overwrite existing maps."),
) -> None:
    """Attribution maps per subject, group means, and scores against ground truth."""
    from neurointerp.attribution.pipeline import run_saliency
    from neurointerp.progress import info

    result = run_saliency(
        model,
        cohort,
        out,
        method=method,
        target=target,
        score=score,
        layer=layer,
        baseline=baseline,
        steps=steps,
        samples=samples,
        noise_level=noise_level,
        window=window,
        stride=stride,
        fill=fill,
        epsilon=epsilon,
        confounder_mask=confounder_mask,
        ground_truth=ground_truth,
        truth_mask=truth_mask,
        atlas=atlas,
        labels=labels,
        native=native,
        resample_to=resample_to,
        allow_train=allow_train,
        allow_unvalidated=allow_unvalidated,
        batch_size=batch_size,
        device=device,
        threads=threads,
        array_index=array_index,
        array_size=array_size,
        seed=seed,
        force=force,
    )
    info(f"wrote {result}")
