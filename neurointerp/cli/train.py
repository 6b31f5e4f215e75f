"""``neurointerp train``: CNN classifiers with subject-level cross-validation and self-describing checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from neurointerp.cli._options import int_list as _ints
from neurointerp.train import defaults as _d


def train(
    cohort: Path = typer.Argument(..., help="Cohort table (CSV/TSV: participant_id, image, label, ...); all images on one grid."),
    out: Path = typer.Argument(..., help="Output folder (fold-<k>/model.pt, model.pt, metrics.tsv, cv_summary.tsv, training_curve.png, model.json)."),
    task: str = typer.Option("auto", help="auto (binary for 2 classes, else multiclass), binary, multiclass, regression."),
    architecture: str = typer.Option("auto", help="simnet2d, simnet3d (simulator-networks §4), cas2d, cas3d (confounder-aware-saliency §3); auto: simnet2d/simnet3d by image dimension."),
    channels: Optional[str] = typer.Option(None, help="Override: channels of the conv stacks, e.g. 16,32,64,16."),
    kernel_size: Optional[int] = typer.Option(None, help="Override: convolution kernel size."),
    hidden: Optional[str] = typer.Option(None, help="Override: hidden fully connected layer sizes, e.g. 64,32."),
    activation: Optional[str] = typer.Option(None, help="Override: activation of the hidden layers (relu, tanh, elu, leakyrelu)."),
    batch_norm: Optional[bool] = typer.Option(None, "--batch-norm/--no-batch-norm", help="Override: batch normalisation in the conv stacks."),
    l2: Optional[float] = typer.Option(None, help="Override: L2 penalty weight on the fully connected layers."),
    steps: Optional[int] = typer.Option(None, help=f"Optimiser steps per model (default {_d.DEFAULT_STEPS}; chosen by measurement, see README)."),
    epochs: Optional[int] = typer.Option(None, help="Instead of --steps: passes over the training images (or over --balance samples per class)."),
    batch_size: int = typer.Option(_d.DEFAULT_BATCH_SIZE, help="Global batch size, class-balanced (split across torchrun processes)."),
    lr: float = typer.Option(_d.DEFAULT_LR, help="Adam learning rate (peak of the schedule)."),
    lr_schedule: str = typer.Option("cosine", help="cosine (decay to 0 over the steps) or constant; both after the warm-up."),
    warmup: float = typer.Option(_d.DEFAULT_WARMUP, help="Linear learning-rate warm-up over this fraction of the steps."),
    validation_fraction: Optional[float] = typer.Option(None, help=f"Subject-level stratified validation split of each model's training participants, for early stopping and the best checkpoint (default {_d.DEFAULT_VALIDATION} with --folds 0, none with cross-validation)."),
    patience: Optional[int] = typer.Option(None, help="Early stopping (default off): stop after this many validation checks without a better validation AUC (balanced accuracy; loss for regression), not before half of the steps, and keep the best check's weights."),
    eval_every: Optional[int] = typer.Option(None, help=f"Steps between history rows / validation checks (default: {_d.DEFAULT_ROUNDS} checks per model; one per epoch with --epochs)."),
    folds: int = typer.Option(5, help="Subject-level stratified folds (0: no cross-validation; needs --final)."),
    fold: Optional[List[int]] = typer.Option(None, help="Train only these folds (repeatable; e.g. one per SLURM array task: --fold $SLURM_ARRAY_TASK_ID)."),
    final: bool = typer.Option(False, "--final", help="Also train a model on all data (OUT/model.pt)."),
    shift: float = typer.Option(_d.DEFAULT_SHIFT, help="Augmentation: random whole-voxel shifts within +-this many voxels (0: off; the papers: 1 at 64^3 -- on synth brain it kept models at chance, see README)."),
    rotation: float = typer.Option(_d.DEFAULT_ROTATION, help="Augmentation: random rotations within +-this many degrees about each axis (0: off; the papers: 1)."),
    flip: bool = typer.Option(False, "--flip", help="Augmentation: random left-right flips."),
    balance: int = typer.Option(0, help="With --epochs: an epoch is this many samples per class (the papers: 1024; 0: each training image once)."),
    hemisphere: str = typer.Option("both", help="both, or left/right: a single-hemisphere model (use with --flip)."),
    normalize: str = typer.Option("none", help="Intensity normalisation per image: none, zscore (over non-zero voxels)."),
    label_column: str = typer.Option("label", help="Column with the class label or regression target."),
    image_column: str = typer.Option("image", help="Column with the image paths."),
    positive_class: Optional[str] = typer.Option(None, help="Binary: the class whose logit the model outputs (default: the second in sorted order)."),
    confounder: Optional[List[str]] = typer.Option(None, help="Covariate column (repeatable, e.g. --confounder age --confounder sex): also fit a confounder-only baseline on the same held-out protocol and warn when the model does not beat it."),
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

    Every checkpoint records its held-out evidence (balanced accuracy, AUC with a 95% CI or R²,
    and a test against chance); train warns in one line when a model does not beat chance or
    the --confounder baseline, and saliency, confound-test, simulate and evaluate refuse a model
    without evidence of skill unless --allow-unvalidated.

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
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        lr_schedule=lr_schedule,
        warmup=warmup,
        validation_fraction=validation_fraction,
        patience=patience,
        eval_every=eval_every,
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
        confounder=confounder or (),
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
            info("cross-validation mean over folds: " + ", ".join(f"{c} {float(row[c].iloc[0]):.3f}" for c in cols))
    info(f"wrote {result.out}")
