"""Running per-group moments of maps (count, mean, mean |x|, sd, non-zero count), batch-merged.

Chan et al.'s parallel update merges a batch's mean and sum of squared deviations into the
running ones, so the result equals a two-pass computation to rounding and memory is a few
vectors per group, whatever the number of maps.
"""

from __future__ import annotations

import numpy as np


class RunningMoments:
    """Moments of the maps of one group, updated batch by batch (float64)."""

    def __init__(self, n_voxels: int):
        self.n = 0
        self.mean = np.zeros(int(n_voxels))
        self.m2 = np.zeros(int(n_voxels))
        self.mean_abs = np.zeros(int(n_voxels))
        self.nonzero = np.zeros(int(n_voxels), dtype=np.int64)

    def update(self, Y: np.ndarray) -> None:
        Y = np.asarray(Y, dtype=np.float64)  # no copy when the caller passes float64
        if Y.ndim == 1:
            Y = Y[None]
        k = Y.shape[0]
        if k == 0:
            return
        b_mean = Y.mean(axis=0)
        dev = Y - b_mean
        b_m2 = np.einsum("ij,ij->j", dev, dev)
        b_abs = np.abs(Y).mean(axis=0)
        n = self.n + k
        delta = b_mean - self.mean
        self.mean += delta * (k / n)
        self.m2 += b_m2 + delta**2 * (self.n * k / n)
        self.mean_abs += (b_abs - self.mean_abs) * (k / n)
        self.nonzero += np.count_nonzero(Y, axis=0)
        self.n = n

    @property
    def sd(self) -> np.ndarray:
        """Sample standard deviation (ddof 1; 0 with fewer than two maps)."""
        if self.n < 2:
            return np.zeros_like(self.mean)
        return np.sqrt(np.maximum(self.m2, 0.0) / (self.n - 1))

    @property
    def var(self) -> np.ndarray:
        return self.sd**2
