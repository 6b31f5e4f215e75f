"""``neurointerp segment-bg``: tissue segmentation with guided-backprop background removal
(papers/gbp-background-removal-segmentation.txt)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Rodent tissue segmentation (2D U-Net) with guided-backprop-driven background removal.", no_args_is_help=True)


@app.command("train")
def train(
    cohort: Path = typer.Argument(..., help="Cohort table: participant_id, image, tissue labels (0 bg, 1 WM, 2 GM, 3 CSF) and brain mask columns."),
    out: Path = typer.Argument(..., help="Output folder (model.pt, model.json, history.tsv)."),
    image_column: str = typer.Option("image", help="Column with the image paths (3D NIfTI)."),
    label_column: str = typer.Option("labels", help="Column with the tissue label volumes."),
    mask_column: str = typer.Option("mask", help="Column with the brain masks; images are multiplied by them before training (the paper's sectioned images). 'none': train on the images as they are."),
    axis: int = typer.Option(2, help="Voxel axis along which volumes are cut into 2D slices."),
    base: int = typer.Option(16, help="U-Net channels of the first level (doubled per level)."),
    depth: int = typer.Option(3, help="U-Net pooling steps."),
    epochs: int = typer.Option(30, help="Training epochs."),
    batch_size: int = typer.Option(5, help="Slices per step (paper: 5)."),
    lr: float = typer.Option(3e-4, help="Learning rate (paper: 3e-4)."),
    decay: float = typer.Option(1.5e-6, help="Learning-rate decay per step, lr/(1 + decay*t) (paper: 1.5e-6)."),
    momentum: float = typer.Option(0.9, help="SGD momentum (paper: 0.9)."),
    optimizer: str = typer.Option("sgd", help="sgd (paper) or adam."),
    val_fraction: float = typer.Option(0.2, help="Share of the animals held out for validation (paper: 20 %)."),
    gbp_score: str = typer.Option("logit", help="Output explained by guided backprop for the shape template: summed tissue logits or probabilities."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads (default: SLURM_CPUS_PER_TASK, else torch's default)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder, overwriting files."),
) -> None:
    """Train the 2D U-Net (softmax over 4 classes, Dice loss, SGD defaults of §3.1) on sectioned slices."""
    from neurointerp.progress import info
    from neurointerp.segment_bg.train import run_train

    path = run_train(
        cohort, out, image_column=image_column, label_column=label_column, mask_column=mask_column, axis=axis, base=base, depth=depth,
        epochs=epochs, batch_size=batch_size, lr=lr, decay=decay, momentum=momentum, optimizer=optimizer, val_fraction=val_fraction,
        gbp_score=gbp_score, seed=seed, device=device, threads=threads, force=force,
    )
    info(f"wrote {path}")


@app.command("apply")
def apply(
    model: Path = typer.Argument(..., help="Segmenter checkpoint (segment-bg train)."),
    cohort: Path = typer.Argument(..., help="Cohort table (participant_id, image[, labels, mask] for metrics) or one NIfTI volume."),
    out: Path = typer.Argument(..., help="Output folder (BIDS derivatives, metrics.tsv, metrics_summary.tsv, failures.tsv)."),
    image_column: str = typer.Option("image", help="Column with the image paths."),
    label_column: str = typer.Option("labels", help="Column with true tissue labels for the metrics (ignored when absent)."),
    mask_column: str = typer.Option("mask", help="Column with true brain masks for the metrics (ignored when absent)."),
    positioning: str = typer.Option("slice", help="slice: one mask shift per slice (paper, 2D); volume: one shift per volume from the summed correlations."),
    max_shift: Optional[int] = typer.Option(None, help="Largest mask shift searched, in voxels (default: a quarter of the slice size)."),
    gbp_score: Optional[str] = typer.Option(None, help="logit or probability (default: as in training)."),
    clip_to_mask: bool = typer.Option(True, "--clip-to-mask/--no-clip-to-mask", help="Label voxels outside the positioned mask as background in the second pass (else keep the network's labels of the zeroed input)."),
    save_intermediates: bool = typer.Option(False, "--save-intermediates", help="Also save the gradient image, each enhancement step, the correlation maps and the masked input."),
    batch_size: int = typer.Option(16, help="Slices per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads (default: SLURM_CPUS_PER_TASK, else torch's default)."),
    array_index: Optional[int] = typer.Option(None, help="SLURM array task index (default: $SLURM_ARRAY_TASK_ID)."),
    array_size: Optional[int] = typer.Option(None, help="SLURM array size (default: $SLURM_ARRAY_TASK_COUNT)."),
    force: bool = typer.Option(False, "--force", help="Recompute and overwrite existing outputs."),
) -> None:
    """Segment slice by slice, find the brain by guided backprop + cross-correlation, remove the background, segment again."""
    from neurointerp.progress import info
    from neurointerp.segment_bg.apply import run_apply

    path = run_apply(
        model, cohort, out, image_column=image_column, label_column=label_column, mask_column=mask_column, positioning=positioning,
        max_shift=max_shift, gbp_score=gbp_score, clip_to_mask=clip_to_mask, save_intermediates=save_intermediates, batch_size=batch_size, device=device,
        threads=threads, array_index=array_index, array_size=array_size, force=force,
    )
    info(f"wrote {path}")
