"""Enhancement of the guided-backprop gradient image (§4.3, "Image enhancement", Fig. 5).

The magnitude of the gradient image is assumed log-normal. A linear expansion followed by a
logarithmic compression makes its histogram Gaussian, a z-normalisation gives it mean 0 and
sd 1, and the threshold function of eq. (1)

    f(z) = exp(-((z - 2) / 0.5)^2)

replaces a step function: values near z = 2 (the edges the network looks at) map to 1, very
high values (often artefacts) and low values (background) fade towards 0, and intermediate
values are left for the shape-based positioning step to decide.

Each step is a small pure function on one 2D slice; :func:`enhance` chains them and can return
every intermediate image.
"""

from __future__ import annotations

import numpy as np

from neurointerp.errors import InputError

TOP = 255.0  # linear expansion to 0..255 (8-bit grey levels), before log compression
CENTRE = 2.0  # maximum of eq. (1)
WIDTH = 0.5  # denominator of the exponent in eq. (1)


def _slice(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise InputError(f"{name}: expected a 2D slice, got an array of shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name}: slice holds NaN or Inf")
    return a


def magnitude(gradient) -> np.ndarray:
    """``|g|``: the magnitude of the gradient image."""
    return np.abs(_slice(gradient, "gradient image"))


def linear_expansion(x, top: float = TOP) -> np.ndarray:
    """Stretch ``x`` linearly onto ``[0, top]``: ``top * (x - min) / (max - min)`` (a constant slice gives zeros)."""
    a = _slice(x, "linear expansion")
    lo, hi = float(a.min()), float(a.max())
    if hi - lo <= 0:
        return np.zeros_like(a)
    return top * (a - lo) / (hi - lo)


def log_compression(x) -> np.ndarray:
    """``log(1 + x)`` of a non-negative slice (maps 0 to 0)."""
    a = _slice(x, "log compression")
    if a.min() < 0:
        raise InputError(f"log compression: values must be non-negative (min {a.min():g}); expand the magnitude first")
    return np.log1p(a)


def z_normalise(x) -> np.ndarray:
    """``z = (x - mean) / sd`` over the slice (population sd; a constant slice gives zeros)."""
    a = _slice(x, "z-normalisation")
    sd = float(a.std())
    if sd <= 0:
        return np.zeros_like(a)
    return (a - float(a.mean())) / sd


def threshold(z, centre: float = CENTRE, width: float = WIDTH) -> np.ndarray:
    """Eq. (1): ``exp(-((z - centre) / width)^2)``; 1 at ``z = centre``, ``exp(-1)`` at ``centre +- width``."""
    a = _slice(z, "threshold")
    return np.exp(-(((a - centre) / width) ** 2))


def enhance(gradient, top: float = TOP, centre: float = CENTRE, width: float = WIDTH, steps: bool = False):
    """Magnitude -> linear expansion -> log compression -> z-normalisation -> eq. (1).

    Returns the enhanced slice in ``[0, 1]``, or with ``steps=True`` a dict of every image
    (``magnitude``, ``expanded``, ``compressed``, ``zscore``, ``enhanced``).
    """
    out = {"magnitude": magnitude(gradient)}
    out["expanded"] = linear_expansion(out["magnitude"], top=top)
    out["compressed"] = log_compression(out["expanded"])
    out["zscore"] = z_normalise(out["compressed"])
    out["enhanced"] = threshold(out["zscore"], centre=centre, width=width)
    return out if steps else out["enhanced"]
