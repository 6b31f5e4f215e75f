"""``neurointerp saliency``: attribution maps in the model's (template) space."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from neurointerp.attribution import METHOD_NAMES
from neurointerp.attribution.names import FEATURE_OUTPUTS  # h-arch (#23 item 5)


def saliency(
    model: Path = typer.Argument(..., help="Checkpoint written by `neurointerp train` (model.pt)."),
    cohort: Path = typer.Argument(..., help="Cohort table of the images to explain (on the model's grid, e.g. preprocessed)."),
    out: Path = typer.Argument(..., help="Output folder (BIDS derivatives)."),
    method: List[str] = typer.Option(["gradient"], help=f"Attribution method, repeatable: {', '.join(METHOD_NAMES)}; or another output kind: {', '.join(FEATURE_OUTPUTS)}."),
    target: Optional[str] = typer.Option(None, help="Class to explain (default: each subject's predicted class)."),
    score: str = typer.Option("logit", help="Score explained: logit, or probability (the paper's s in [0, 1])."),
    layer: Optional[str] = typer.Option(None, help="Grad-CAM / feature-maps / input-optimisation layer, e.g. encoder.stack3.act (default: the last spatial conv/activation; input-optimisation without it: the class scores); attention: one gate, e.g. encoder.gate2 (default: all, averaged)."),
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
    batch_size: int = typer.Option(8, help="Subjects per batch."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads (default: SLURM_CPUS_PER_TASK)."),
    array_index: Optional[int] = typer.Option(None, help="This task's index in a job array (default $SLURM_ARRAY_TASK_ID)."),
    array_size: Optional[int] = typer.Option(None, help="Number of tasks in the job array (default $SLURM_ARRAY_TASK_COUNT)."),
    seed: int = typer.Option(0, help="Random seed (SmoothGrad noise)."),
    force: bool = typer.Option(False, "--force", help="Recompute and overwrite existing maps."),
    # h-arch (#23 item 5): feature-map output kinds
    channels: Optional[str] = typer.Option(None, help="feature-maps / input-optimisation: channels of --layer, e.g. 0,3,5 (default: all)."),
    opt_steps: int = typer.Option(200, help="input-optimisation: Adam steps (cosine-decayed learning rate)."),
    opt_lr: float = typer.Option(0.05, help="input-optimisation: initial learning rate (intensity units per step)."),
    opt_l2: float = typer.Option(1.0, help="input-optimisation: L2 weight toward the start image (RMS change about 1/this for a linear unit)."),
    opt_tv: float = typer.Option(0.1, help="input-optimisation: total-variation weight."),
    opt_jitter: int = typer.Option(1, help="input-optimisation: random shift of up to this many voxels per axis before every step (0: off)."),
    opt_blur: float = typer.Option(0.5, help="input-optimisation: Gaussian blur sigma (voxels) applied every 4 steps (0: off)."),
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
        batch_size=batch_size,
        device=device,
        threads=threads,
        array_index=array_index,
        array_size=array_size,
        seed=seed,
        force=force,
        feature_options=_feature_options(channels, opt_steps, opt_lr, opt_l2, opt_tv, opt_jitter, opt_blur),
    )
    info(f"wrote {result}")


def _feature_options(channels, steps, lr, l2, tv, jitter, blur) -> dict:  # h-arch (#23 item 5)
    from neurointerp.attribution.featureoutputs import parse_channels

    return dict(channels=parse_channels(channels), steps=steps, lr=lr, l2=l2, tv=tv, jitter=jitter, blur_sigma=blur)
