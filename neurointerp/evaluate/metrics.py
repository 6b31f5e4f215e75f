"""Scores of an attribution map against planted ground truth.

* :func:`ncc` -- normalised cross-correlation (Pearson correlation over voxels, optionally inside
  a mask), used with ``|map|`` against the ground truth as in
  papers/icam-vae-gan-attribution.txt §4.1 and simulator-networks-jacobian.txt §4.1.
* :func:`mass_in_mask` -- share of the total ``|map|`` that falls inside a truth mask.
"""

from __future__ import annotations

import numpy as np


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised cross-correlation of ``a`` and ``b`` (NaN if either is constant)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        a, b = a[m], b[m]
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def mass_in_mask(attribution: np.ndarray, mask: np.ndarray, within: np.ndarray | None = None) -> float:
    """Share of ``sum |attribution|`` inside ``mask`` (restricted to ``within`` if given)."""
    a = np.abs(np.asarray(attribution, dtype=np.float64))
    m = np.asarray(mask, dtype=bool)
    if within is not None:
        w = np.asarray(within, dtype=bool)
        a, m = a[w], m[w]
    total = a.sum()
    return float(a[m].sum() / total) if total > 0 else float("nan")
