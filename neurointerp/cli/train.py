"""``neurointerp train``: CNN classifiers with subject-level cross-validation and self-describing checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from neurointerp.cli._options import int_list as _ints


def train(
    cohort: Path = typer.Argument(..., help="Cohort table (CSV/TSV: participant_id, image, label, ...); all images on one grid."),
    out: Path = typer.Argument(..., help="Output folder (fold-<k>/model.pt, model.pt, metrics.tsv, cv_summary.tsv, training_curve.png, model.json)."),
    task: str = typer.Option("auto", help="auto (binary for 2 classes, else multiclass), binary, multiclass, regression."),
    architecture: str = typer.Option("auto", help="simnet2d, simnet3d (simulator-networks §4), cas2d, cas3d (confounder-aware-saliency §3), gap2d, gap3d (CAM-ready: global average pooling + one linear layer), attention2d, attention3d (attention-gated); auto: simnet2d/simnet3d by image dimension."),
    channels: Optional[str] = typer.Option(None, help="Override: channels of the conv stacks, e.g. 16,32,64,16."),
    kernel_size: Optional[int] = typer.Option(None, help="Override: convolution kernel size."),
    hidden: Optional[str] = typer.Option(None, help="Override: hidden fully connected layer sizes, e.g. 64,32."),
    activation: Optional[str] = typer.Option(None, help="Override: activation of the hidden layers (relu, tanh, elu, leakyrelu)."),
    batch_norm: Optional[bool] = typer.Option(None, "--batch-norm/--no-batch-norm", help="Override: batch normalisation in the conv stacks."),
    l2: Optional[float] = typer.Option(None, help="Override: L2 penalty weight on the fully connected layers."),
    epochs: int = typer.Option(30, help="Training epochs per model."),
    batch_size: int = typer.Option(32, help="Global batch size (split across torchrun processes)."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    folds: int = typer.Option(5, help="Subject-level stratified folds (0: no cross-validation; needs --final)."),
    fold: Optional[List[int]] = typer.Option(None, help="Train only these folds (repeatable; e.g. one per SLURM array task: --fold $SLURM_ARRAY_TASK_ID)."),
    final: bool = typer.Option(False, "--final", help="Also train a model on all data (OUT/model.pt)."),
    shift: float = typer.Option(1.0, help="Augmentation: random shifts within +-this many voxels (0: off)."),
    rotation: float = typer.Option(1.0, help="Augmentation: random rotations within +-this many degrees about each axis (0: off)."),
    flip: bool = typer.Option(False, "--flip", help="Augmentation: random left-right flips."),
    balance: int = typer.Option(0, help="Draw this many samples per class in every epoch (the papers: 1024; 0: each sample once)."),
    hemisphere: str = typer.Option("both", help="both, or left/right: a single-hemisphere model (use with --flip)."),
    normalize: str = typer.Option("none", help="Intensity normalisation per image: none, zscore (over non-zero voxels)."),
    label_column: str = typer.Option("label", help="Column with the class label or regression target."),
    image_column: str = typer.Option("image", help="Column with the image paths."),
    positive_class: Optional[str] = typer.Option(None, help="Binary: the class whose logit the model outputs (default: the second in sorted order)."),
    space: Optional[str] = typer.Option(None, help="Name of the images' space (default: the space- entity of the file names)."),
    seed: int = typer.Option(0, help="Random seed (folds, initial weights, sample order, augmentation)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads (default: SLURM_CPUS_PER_TASK, else torch's default)."),
    checkpoint_every: int = typer.Option(1, help="Save the training state every this many epochs."),
    preload: Optional[bool] = typer.Option(None, "--preload/--no-preload", help="Hold all images in memory (default: when they fit in half the free memory)."),
    resume: bool = typer.Option(False, "--resume", help="Continue interrupted folds from their last saved epoch."),
    force: bool = typer.Option(False, "--force", help="Start over in a folder holding another run, overwriting its files."),
) -> None:
    """Train a 2D/3D CNN with subject-level stratified k-fold CV and/or on all data.

    Multi-process (DDP): torchrun --nproc-per-node N -m neurointerp train ...
    """
    from neurointerp.progress import info
    from neurointerp.train.loop import train as run

    result = run(
        cohort,
        out,
        task=task,
        architecture=architecture,
        channels=_ints(channels, "--channels"),
        kernel_size=kernel_size,
        hidden=_ints(hidden, "--hidden"),
        activation=activation,
        batch_norm=batch_norm,
        l2=l2,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        folds=folds,
        fold=fold,
        final=final,
        shift=shift,
        rotation=rotation,
        flip=flip,
        balance=balance,
        hemisphere=hemisphere,
        normalize=normalize,
        label_column=label_column,
        image_column=image_column,
        positive_class=positive_class,
        space=space,
        seed=seed,
        device=device,
        threads=threads,
        checkpoint_every=checkpoint_every,
        preload=preload,
        resume=resume,
        force=force,
    )
    if result.summary is not None:
        row = result.summary[result.summary["fold"] == "mean"]
        if len(row):
            cols = [c for c in ("balanced_accuracy", "auc", "r", "mae") if c in row.columns]
            info("cross-validation mean: " + ", ".join(f"{c} {float(row[c].iloc[0]):.3f}" for c in cols))
    info(f"wrote {result.out}")
