"""Training defaults of ``neurointerp train`` (no imports: the CLI reads them for ``--help``).

Chosen by measurement on ``synth brain`` cohorts (benchmarks/train_defaults.py writes
benchmarks/results/train_defaults.json; README section ``train`` says what was measured).
"""

DEFAULT_STEPS = 600  # optimiser steps per model
DEFAULT_BATCH_SIZE = 16
DEFAULT_LR = 1e-3  # Adam, peak of the schedule
DEFAULT_WARMUP = 0.05  # linear warm-up over this fraction of the steps, then cosine decay to 0
DEFAULT_ROUNDS = 20  # history rows (and validation checks) per model with --steps
DEFAULT_VALIDATION = 0.2  # validation split without cross-validation
DEFAULT_PATIENCE = 5  # validation checks without improvement before stopping
DEFAULT_SHIFT = 0.0  # augmentation: whole-voxel shifts (a 1-voxel shift kept models at chance, see README)
DEFAULT_ROTATION = 0.0  # augmentation: rotations in degrees
LR_SCHEDULES = ("cosine", "constant")
