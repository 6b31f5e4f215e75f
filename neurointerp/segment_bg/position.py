"""Mask positioning by 2D cross-correlation (§4.3, "Image correlation", Fig. 7).

The shape mask (a brain mask from another animal) is first multiplied by the gradient image
that the model gives for that animal, which makes the template sparse: it keeps the contours
the network looks at and little else. The cross-correlation of the enhanced gradient image of
the new acquisition with this template peaks at the translation that aligns the shapes; the
mask is moved by that translation.

Correlations are linear (zero-padded FFT, no wrap-around). Shifts are in voxels along the two
slice axes; a positive shift moves the template towards higher indices.
"""

from __future__ import annotations

import numpy as np

from neurointerp.errors import InputError


def _slice(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise InputError(f"{name}: expected a 2D slice, got an array of shape {a.shape}")
    return a


def cross_correlation(image, template) -> np.ndarray:
    """Linear cross-correlation ``c[d] = sum_p image[p + d] * template[p]`` by FFT.

    ``image`` and ``template`` are 2D slices of the same shape ``(H, W)``. The result has shape
    ``(2H - 1, 2W - 1)``; index ``(H - 1 + dy, W - 1 + dx)`` holds shift ``(dy, dx)``.
    """
    a = _slice(image, "cross-correlation image")
    t = _slice(template, "cross-correlation template")
    if a.shape != t.shape:
        raise InputError(f"cross-correlation: image {a.shape} and template {t.shape} differ in shape")
    h, w = a.shape
    ph, pw = 2 * h, 2 * w  # >= 2H - 1: no circular overlap
    fa = np.fft.rfft2(a, s=(ph, pw))
    ft = np.fft.rfft2(t, s=(ph, pw))
    c = np.fft.irfft2(fa * np.conj(ft), s=(ph, pw))
    # c[k] holds shift k for k < H and shift k - 2H for k > H (modulo the padded size)
    rows = np.r_[ph - (h - 1) : ph, 0:h]
    cols = np.r_[pw - (w - 1) : pw, 0:w]
    return c[np.ix_(rows, cols)]


def best_shift(correlation, max_shift: int | None = None) -> tuple[int, int]:
    """The shift ``(dy, dx)`` of the correlation maximum, searched within ``|d| <= max_shift``."""
    c = _slice(correlation, "correlation")
    h, w = (c.shape[0] + 1) // 2, (c.shape[1] + 1) // 2
    if max_shift is not None:
        m = int(max_shift)
        if m < 0:
            raise InputError(f"max shift {max_shift}: must be non-negative")
        window = np.full(c.shape, -np.inf)
        r0, r1 = max(0, h - 1 - m), min(c.shape[0], h + m)
        c0, c1 = max(0, w - 1 - m), min(c.shape[1], w + m)
        window[r0:r1, c0:c1] = c[r0:r1, c0:c1]
        c = window
    i, j = np.unravel_index(int(np.argmax(c)), c.shape)
    return int(i - (h - 1)), int(j - (w - 1))


def shift_image(image, shift: tuple[int, int], fill: float = 0.0) -> np.ndarray:
    """Translate a 2D slice by whole voxels ``(dy, dx)``; voxels moved in from outside get ``fill`` (no wrap-around)."""
    a = np.asarray(image)
    if a.ndim != 2:
        raise InputError(f"shift: expected a 2D slice, got an array of shape {a.shape}")
    dy, dx = (int(s) for s in shift)
    out = np.full_like(a, fill)
    h, w = a.shape
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src = a[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def shape_template(mask, gradient_image) -> np.ndarray:
    """The template of Fig. 7(a): the shape mask multiplied by the (enhanced) gradient image."""
    m = _slice(mask, "shape mask")
    g = _slice(gradient_image, "gradient image")
    if m.shape != g.shape:
        raise InputError(f"shape template: mask {m.shape} and gradient image {g.shape} differ in shape")
    return (m > 0) * g


def position_mask(enhanced, template, mask, max_shift: int | None = None):
    """Position ``mask`` on a slice: returns ``(positioned_mask, (dy, dx), correlation)``."""
    corr = cross_correlation(enhanced, template)
    shift = best_shift(corr, max_shift)
    return shift_image((np.asarray(mask) > 0).astype(np.uint8), shift), shift, corr
