"""Training: loop, subject-level CV splits, augmentation, data loading, DDP.

The entry point is :func:`neurointerp.train.loop.train` (``neurointerp train``).
"""

from __future__ import annotations

__all__ = ["train"]


def __getattr__(name):  # lazy: keep `import neurointerp.train` free of torch
    if name == "train":
        from neurointerp.train.loop import train

        return train
    raise AttributeError(name)
