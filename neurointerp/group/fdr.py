"""Benjamini-Hochberg false discovery rate: q-values (BH-adjusted p-values)."""

from __future__ import annotations

import numpy as np


def fdr_bh(p) -> np.ndarray:
    """BH-adjusted p-values (q), the same as statsmodels ``multipletests(method="fdr_bh")[1]``.

    ``q_(i) = min_{j >= i} min(1, m p_(j) / j)`` over the sorted p-values. NaN p-values are
    ignored (their q is NaN) and do not count in ``m``.
    """
    p = np.asarray(p, dtype=np.float64)
    flat = p.reshape(-1)
    q = np.full(flat.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(flat))
    m = ok.size
    if m == 0:
        return q.reshape(p.shape)
    order = ok[np.argsort(flat[ok], kind="mergesort")]
    ranked = flat[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q[order] = np.minimum(ranked, 1.0)
    return q.reshape(p.shape)


def fdr_threshold(p, alpha: float = 0.05) -> float:
    """Largest p-value declared significant at FDR ``alpha`` (0.0 when none)."""
    q = fdr_bh(p)
    sig = np.asarray(p)[np.isfinite(q) & (q <= alpha)]
    return float(sig.max()) if sig.size else 0.0
