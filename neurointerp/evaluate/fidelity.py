"""Fidelity and robustness of attribution maps (interpretability-review §2.7, Yeh et al. 2019).

All functions take a *score function* ``f(x) -> (N,)`` (the score explained, see
:mod:`neurointerp.attribution.core`) and an *explainer* ``explain(x) -> (N, *spatial)`` maps,
and work on batches.

* :func:`infidelity` -- eq. 18 with Gaussian perturbations ``I ~ N(0, sigma^2)`` on the voxels
  of the brain mask (sigma = ``noise_level`` x the image's intensity sd inside the mask):
  ``E[(I . Phi - (f(x) - f(x - I)))^2]``. Reported *normalised* (Phi rescaled by the optimal
  factor ``beta = E[(I.Phi) df] / E[(I.Phi)^2]``, as Yeh et al. recommend and Captum's
  ``normalize=True``) so maps of different scales compare, and divided by ``E[df^2]`` so that
  0 is a perfect and 1 an uninformative explanation.
* :func:`deletion_curve` -- remove the top-k% attributed brain voxels (set to ``fill``) for k in
  0..100% and track the score (``evaluate`` tracks P(target class), as Petsiuk et al.); the area
  under the curve is lower for a more faithful map.
* :func:`max_sensitivity` -- eq. 19: the largest change of the map, relative to its norm, over
  ``samples`` inputs drawn uniformly in the L-infinity ball of radius ``epsilon`` x intensity sd.
* :func:`continuity` -- eq. 20: max over pairs of subjects of ``|Phi1 - Phi2|_1 / |X1 - X2|_2``.
"""

from __future__ import annotations

import numpy as np
import torch


def _brain_sd(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    vals = [x[i][mask[i]].std() if mask[i].any() else x[i].std() for i in range(len(x))]
    return torch.stack(vals).clamp_min(1e-12)


def infidelity(f, x: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor, samples: int = 32, noise_level: float = 0.1, seed: int = 0, batch_size: int = 32) -> np.ndarray:
    """Normalised infidelity per subject (0 = perfect). ``maps`` and ``mask`` are shaped like ``x``."""
    gen = torch.Generator().manual_seed(int(seed))
    out = np.zeros(len(x))
    sd = _brain_sd(x, mask) * noise_level
    with torch.inference_mode():
        f0 = f(x)
        for i in range(len(x)):
            dots, dfs = [], []
            for start in range(0, samples, batch_size):
                k = min(batch_size, samples - start)
                noise = torch.randn((k, *x.shape[1:]), generator=gen, dtype=x.dtype).to(x.device) * sd[i] * mask[i]
                dots.append((noise * maps[i]).flatten(1).sum(1))
                dfs.append(f0[i] - f(x[i].unsqueeze(0) - noise))
            dot = torch.cat(dots).double()
            df = torch.cat(dfs).double()
            denom = (dot * dot).mean()
            beta = (dot * df).mean() / denom if denom > 0 else torch.tensor(0.0, dtype=torch.float64)
            err = ((beta * dot - df) ** 2).mean()
            scale = (df * df).mean()
            out[i] = float(err / scale) if scale > 0 else 0.0
    return out


def deletion_curve(f, x: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor, fractions=None, fill: float = 0.0, signed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``(N, len(fractions))`` after deleting the top fractions of attributed brain voxels."""
    fractions = np.linspace(0.0, 1.0, 11) if fractions is None else np.asarray(fractions, dtype=float)
    curves = np.zeros((len(x), len(fractions)))
    with torch.inference_mode():
        for i in range(len(x)):
            m = mask[i].reshape(-1)
            vals = maps[i].reshape(-1) if signed else maps[i].reshape(-1).abs()
            idx = torch.nonzero(m).flatten()
            order = idx[torch.argsort(vals[idx], descending=True, stable=True)]
            batch = x[i].reshape(1, -1).repeat(len(fractions), 1)
            for j, frac in enumerate(fractions):
                k = int(round(frac * len(order)))
                batch[j, order[:k]] = fill
            curves[i] = f(batch.reshape(len(fractions), *x.shape[1:])).double().cpu().numpy()
    return fractions, curves


def deletion_auc(fractions: np.ndarray, curves: np.ndarray, relative: bool = False) -> np.ndarray:
    """Area under each deletion curve (trapezoids); ``relative`` divides by the unperturbed score's magnitude."""
    rel = curves / np.abs(curves[:, :1]).clip(1e-12) if relative else curves
    return ((rel[:, 1:] + rel[:, :-1]) / 2 * np.diff(fractions)).sum(axis=1)


def max_sensitivity(explain, x: torch.Tensor, mask: torch.Tensor, epsilon: float = 0.05, samples: int = 8, seed: int = 0) -> np.ndarray:
    """Max relative change of the map within an L-inf ball of radius epsilon x intensity sd."""
    gen = torch.Generator().manual_seed(int(seed))
    radius = _brain_sd(x, mask) * epsilon
    base = explain(x)
    out = np.zeros(len(x))
    for i in range(len(x)):
        u = (torch.rand((samples, *x.shape[1:]), generator=gen, dtype=x.dtype).to(x.device) * 2 - 1) * radius[i] * mask[i]
        maps = explain(x[i].unsqueeze(0) + u)
        b = base[i].reshape(-1)
        diff = (maps.reshape(samples, -1) - b).norm(dim=1)
        out[i] = float(diff.max() / b.norm().clamp_min(1e-12))
    return out


def continuity(maps: torch.Tensor, x: torch.Tensor) -> float:
    """Eq. 20 over all pairs of subjects."""
    m = maps.reshape(len(maps), -1).double()
    xs = x.reshape(len(x), -1).double()
    best = 0.0
    for i in range(len(m)):
        num = (m[i + 1 :] - m[i]).abs().sum(dim=1)
        den = (xs[i + 1 :] - xs[i]).norm(dim=1)
        ok = den > 0
        if ok.any():
            best = max(best, float((num[ok] / den[ok]).max()))
    return best
