"""Training defaults of ``neurointerp train`` (no imports: the CLI reads them for ``--help``).

Chosen by measurement on ``synth brain`` cohorts (benchmarks/train_defaults.py writes
benchmarks/results/train_defaults.json; README section ``train`` says what was measured).
"""

DEFAULT_STEPS = 1500  # optimiser steps per model (600 until #21's multi-seed measurement: README "Training budget")
DEFAULT_BATCH_SIZE = 16
DEFAULT_LR = 1e-3  # Adam, peak of the schedule
DEFAULT_WARMUP = 0.05  # linear warm-up over this fraction of the steps, then cosine decay to 0
DEFAULT_ROUNDS = 20  # history rows (and validation checks) per model with --steps
DEFAULT_VALIDATION = 0.2  # validation split without cross-validation
DEFAULT_PATIENCE = None  # early stopping off: selecting checks on a small split picked undertrained models (README)
DEFAULT_SHIFT = 0.0  # augmentation: whole-voxel shifts off (1-voxel shifts kept models at chance on synth brain, see README)
DEFAULT_ROTATION = 1.0  # augmentation: rotations within +-1 degree about each axis (the papers)
LR_SCHEDULES = ("cosine", "constant")


def steps_for(epochs: int | None) -> int | None:
    """The step budget when --steps is not given: :data:`DEFAULT_STEPS`, none with --epochs."""
    return DEFAULT_STEPS if epochs is None else None


def validation_for(folds: int) -> float:
    """The validation fraction when --validation-fraction is not given: :data:`DEFAULT_VALIDATION`
    without cross-validation (--folds 0), none with it."""
    return DEFAULT_VALIDATION if folds == 0 else 0.0
