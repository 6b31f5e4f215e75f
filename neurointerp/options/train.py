"""Options of ``neurointerp train``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from neurointerp.errors import InputError
from neurointerp.options import common as c
from neurointerp.options.core import Options, flag, opt
from neurointerp.train import defaults as _d

TASKS = ("auto", "binary", "multiclass", "regression")


@dataclass(frozen=True)
class TrainOptions(Options):
    """Train a 2D/3D CNN with subject-level stratified k-fold CV and/or on all data.

    Every checkpoint records its held-out evidence (balanced accuracy, AUC with a 95% CI or R², and a test against chance); train warns in one line when a model does not beat chance or the --confounder baseline, and saliency, confound-test, simulate and evaluate refuse a model without evidence of skill unless --allow-unvalidated.

    Multi-process (DDP): torchrun --nproc-per-node N -m neurointerp train ...
    """

    command: ClassVar[str] = "train"

    cohort: Path = c.input_file("Cohort table (CSV/TSV: participant_id, image, label, ...); all images on one grid.")
    out: Path = c.output_folder("Output folder (fold-<k>/model.pt, model.pt, metrics.tsv, cv_summary.tsv, training_curve.png, model.json).")
    task: str = opt("auto", "auto (binary for 2 classes, else multiclass), binary, multiclass, regression.", choices=TASKS)
    architecture: str = opt("auto", "simnet2d, simnet3d (simulator-networks §4), cas2d, cas3d (confounder-aware-saliency §3), gap2d, gap3d (CAM-ready: global average pooling + one linear layer), attention2d, attention3d (attention-gated); auto: simnet2d/simnet3d by image dimension.")
    channels: Optional[tuple[int, ...]] = opt(None, "Override: channels of the conv stacks, e.g. 16,32,64,16.", parse=c.int_list, cli_type=str)
    kernel_size: Optional[int] = opt(None, "Override: convolution kernel size.", minimum=1)
    hidden: Optional[tuple[int, ...]] = opt(None, "Override: hidden fully connected layer sizes, e.g. 64,32.", parse=c.int_list, cli_type=str)
    activation: Optional[str] = opt(None, "Override: activation of the hidden layers (relu, tanh, elu, leakyrelu).", choices=("relu", "tanh", "elu", "leakyrelu"))
    batch_norm: Optional[bool] = flag(None, "Override: batch normalisation in the conv stacks.", "--no-batch-norm")
    l2: Optional[float] = opt(None, "Override: L2 penalty weight on the fully connected layers.", minimum=0)
    steps: Optional[int] = opt(None, f"Optimiser steps per model (default {_d.DEFAULT_STEPS}; chosen by measurement, see README).", minimum=1,
                                fallback=lambda o: _d.steps_for(o.epochs))
    epochs: Optional[int] = opt(None, "Instead of --steps: passes over the training images (or over --balance samples per class).", minimum=1)
    batch_size: int = c.batch_size(_d.DEFAULT_BATCH_SIZE, "Global batch size, class-balanced (split across torchrun processes).", affects=True)
    lr: float = opt(_d.DEFAULT_LR, "Adam learning rate (peak of the schedule).", above=0)
    lr_schedule: str = opt("cosine", "cosine (decay to 0 over the steps) or constant; both after the warm-up.", choices=_d.LR_SCHEDULES)
    warmup: float = opt(_d.DEFAULT_WARMUP, "Linear learning-rate warm-up over this fraction of the steps.", minimum=0, below=1)
    validation_fraction: Optional[float] = opt(None, f"Subject-level stratified validation split of each model's training participants, for early stopping and the best checkpoint (default {_d.DEFAULT_VALIDATION} with --folds 0, none with cross-validation).", minimum=0, maximum=0.5,
                                              fallback=lambda o: _d.validation_for(o.folds))
    patience: Optional[int] = opt(None, "Early stopping (default off): stop after this many validation checks without a better validation AUC (balanced accuracy; loss for regression), not before half of the steps, and keep the best check's weights.", minimum=1)
    eval_every: Optional[int] = opt(None, f"Steps between history rows / validation checks (default: {_d.DEFAULT_ROUNDS} checks per model; one per epoch with --epochs).", minimum=1)
    folds: int = opt(5, "Subject-level stratified folds (0: no cross-validation; needs --final).", minimum=0)
    fold: Optional[tuple[int, ...]] = opt(None, "Train only these folds (repeatable; e.g. one per SLURM array task: --fold $SLURM_ARRAY_TASK_ID).", minimum=1, affects=False)
    final: bool = flag(False, "Also train a model on all data (OUT/model.pt).")
    shift: float = opt(_d.DEFAULT_SHIFT, "Augmentation: random whole-voxel shifts within +-this many voxels (0: off; the papers: 1 at 64^3 -- on synth brain it kept models at chance, see README).", minimum=0)
    rotation: float = opt(_d.DEFAULT_ROTATION, "Augmentation: random rotations within +-this many degrees about each axis (0: off; the papers: 1).", minimum=0)
    flip: bool = flag(False, "Augmentation: random left-right flips.")
    balance: int = opt(0, "With --epochs: an epoch is this many samples per class (the papers: 1024; 0: each training image once).", minimum=0)
    hemisphere: str = opt("both", "both, or left/right: a single-hemisphere model (use with --flip).", choices=("both", "left", "right"))
    normalize: str = opt("none", "Intensity normalisation per image: none, zscore (over non-zero voxels).", choices=("none", "zscore"))
    label_column: str = c.column("label", "Column with the class label or regression target.")
    image_column: str = c.column("image", "Column with the image paths.")
    positive_class: Optional[str] = opt(None, "Binary: the class whose logit the model outputs (default: the second in sorted order).")
    confounder: tuple[str, ...] = opt((), "Covariate column (repeatable, e.g. --confounder age --confounder sex): also fit a confounder-only baseline on the same held-out protocol and warn when the model does not beat it; classification: training draws are balanced for it when the classes overlap enough (see --balance-confounders).")
    balance_confounders: Optional[bool] = flag(None, "Draw each class's training samples in proportion to overlap weights of a logistic model of the class on the --confounder columns (Li et al. 2018): their weighted means are then equal in every class, so the network gains nothing by reading them. Default with --confounder: on when, in every model, the weights keep at least 10 effective participants per class and bring each confounder within 0.25 SD between the classes (train says which it chose). Records the effective participants per class and the balance reached.", "--no-balance-confounders")
    space: Optional[str] = opt(None, "Name of the images' space (default: the space- entity of the file names).")
    seed: int = c.seed("Random seed (folds, initial weights, sample order, augmentation).")
    device: str = c.device()
    threads: Optional[int] = c.threads("Torch CPU threads (default: SLURM_CPUS_PER_TASK, else torch's default).")
    checkpoint_every: int = opt(1, "Save the training state every this many epochs.", minimum=1, affects=False)
    preload: Optional[bool] = flag(None, "Hold all images in memory (default: when they fit in half the free memory).", "--no-preload", affects=False)
    resume: bool = flag(False, "Continue interrupted folds from their last saved epoch.", affects=False)
    force: bool = c.force()

    def check(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise InputError("give --steps or --epochs, not both")
        if self.patience is not None and self.validation_fraction == 0:
            raise InputError("--patience needs a validation split (--validation-fraction, default 0.2 with --folds 0)")
        if self.folds == 1:
            raise InputError(f"--folds {self.folds}: use 0 (no cross-validation, with --final) or at least 2")
        if self.folds == 0 and not self.final:
            raise InputError("--folds 0 trains nothing without --final")
        if self.fold and self.folds == 0:
            raise InputError("--fold needs --folds >= 2")
        if self.fold and max(self.fold) > self.folds:
            raise InputError(f"--fold {max(self.fold)}: folds are numbered 1..{self.folds}")
        if self.task == "regression" and self.balance:
            raise InputError("--balance applies to classification only")
        if self.balance_confounders and not self.confounder:
            raise InputError("--balance-confounders needs the columns to balance: --confounder NAME")
        if self.balance_confounders and self.task == "regression":
            raise InputError("--balance-confounders applies to classification only")
