"""Gradient-based attributions, batched over subjects (and over steps/samples).

* ``gradient``: d score / d input (signed; ``absolute=True`` gives |d s / d I_v|, the saliency of
  papers/confounder-aware-saliency.txt §2).
* ``gradxinput``: gradient times input.
* ``integrated_gradients``: (x - x0) * mean of gradients along the straight path from the
  baseline x0 to x (Riemann midpoint rule, ``steps`` points); baseline ``zeros``, ``min``
  (image minimum), ``mean`` (image mean) or a number, and it is recorded in the sidecar.
* ``smoothgrad``: mean gradient over ``samples`` noisy copies, noise sd = ``noise_level`` x the
  image's intensity range (max - min), not an absolute value (Captum's NoiseTunnel trap).
* ``gradient_shap`` (GradientSHAP, Lundberg & Lee 2017; Captum's ``GradientShap``): expected
  gradients -- the mean over ``samples`` draws of ``grad(b + a (x' - b)) * (x' - b)`` with a
  baseline ``b`` drawn from the baseline set, ``a ~ U(0, 1)`` and ``x' = x`` plus Gaussian noise of
  sd ``shap_noise`` x the image's intensity range (0: none, Captum's default). Baselines: a
  single named one as for integrated gradients, or ``reference``: the reference subjects'
  images (:mod:`neurointerp.attribution.reference`), the SHAP "background" distribution.
  Its sum over voxels estimates ``s(x) - E_b[s(b)]``.
"""

from __future__ import annotations

import torch

from neurointerp.attribution.core import chunks, input_gradient
from neurointerp.errors import InputError


def gradient(f, x, targets, absolute: bool = False, batch_size: int = 16):
    out = torch.empty_like(x)
    for sl in chunks(len(x), batch_size):
        out[sl] = input_gradient(f, x[sl], targets[sl])
    return out.abs() if absolute else out


def gradxinput(f, x, targets, batch_size: int = 16):
    return gradient(f, x, targets, batch_size=batch_size) * x


def make_baseline(x: torch.Tensor, baseline) -> torch.Tensor:
    """Baseline images for ``x`` from a name or a number."""
    if isinstance(baseline, str):
        dims = tuple(range(1, x.ndim))
        if baseline == "zeros":
            return torch.zeros_like(x)
        if baseline == "min":
            return x.amin(dim=dims, keepdim=True).expand_as(x).clone()
        if baseline == "mean":
            return x.mean(dim=dims, keepdim=True).expand_as(x).clone()
        try:
            baseline = float(baseline)
        except ValueError:
            raise InputError(f"unknown baseline '{baseline}' (zeros, min, mean or a number)") from None
    return torch.full_like(x, float(baseline))


def integrated_gradients(f, x, targets, baseline="zeros", steps: int = 32, batch_size: int = 16):
    if steps < 1:
        raise InputError("integrated gradients needs at least 1 step")
    x0 = make_baseline(x, baseline)
    alphas = ((torch.arange(steps, dtype=x.dtype) + 0.5) / steps).to(x.device)  # midpoint rule
    out = torch.zeros_like(x)
    for i in range(len(x)):
        delta = (x[i] - x0[i]).unsqueeze(0)
        acc = torch.zeros_like(x[i])
        for sl in chunks(steps, batch_size):
            a = alphas[sl].reshape(-1, *([1] * (x.ndim - 1)))
            path = x0[i].unsqueeze(0) + a * delta  # (k, C, *spatial)
            t = targets[i].expand(path.shape[0])
            acc += input_gradient(f, path, t).sum(dim=0)
        out[i] = delta[0] * acc / steps
    return out


def smoothgrad(f, x, targets, samples: int = 25, noise_level: float = 0.15, absolute: bool = False, seed: int = 0, batch_size: int = 16):
    if samples < 1:
        raise InputError("smoothgrad needs at least 1 sample")
    if noise_level < 0:
        raise InputError("smoothgrad noise level must be >= 0")
    gen = torch.Generator().manual_seed(int(seed))
    dims = tuple(range(1, x.ndim))
    span = (x.amax(dim=dims) - x.amin(dim=dims)).clamp_min(1e-12)
    out = torch.zeros_like(x)
    for i in range(len(x)):
        sd = float(noise_level * span[i])
        acc = torch.zeros_like(x[i])
        for sl in chunks(samples, batch_size):
            k = sl.stop - sl.start
            noisy = x[i].unsqueeze(0) + sd * torch.randn((k, *x.shape[1:]), generator=gen, dtype=x.dtype).to(x.device)
            g = input_gradient(f, noisy, targets[i].expand(k))
            acc += (g.abs() if absolute else g).sum(dim=0)
        out[i] = acc / samples
    return out


def gradient_shap(f, x, targets, baseline="zeros", samples: int = 25, shap_noise: float = 0.0, seed: int = 0, reference=None, batch_size: int = 16):
    if samples < 1:
        raise InputError("gradient-shap needs at least 1 sample")
    if shap_noise < 0:
        raise InputError("gradient-shap noise (--shap-noise) must be >= 0")
    if isinstance(baseline, str) and baseline == "reference":
        if reference is None or len(reference) == 0:
            raise InputError("gradient-shap --baseline reference needs reference images (--reference, or the cohort)")
        pool = reference.images.to(x.device, x.dtype)
        if tuple(pool.shape[1:]) != tuple(x.shape[1:]):
            raise InputError(f"reference images {tuple(pool.shape[1:])} differ from the images {tuple(x.shape[1:])}")
    else:
        pool = None
        x0 = make_baseline(x, baseline)
    gen = torch.Generator().manual_seed(int(seed))
    dims = tuple(range(1, x.ndim))
    span = (x.amax(dim=dims) - x.amin(dim=dims)).clamp_min(1e-12)
    out = torch.zeros_like(x)
    for i in range(len(x)):
        sd = float(shap_noise * span[i])
        acc = torch.zeros_like(x[i])
        for sl in chunks(samples, batch_size):
            k = sl.stop - sl.start
            noisy = x[i].unsqueeze(0).expand(k, *x.shape[1:])
            if sd > 0:
                noisy = noisy + sd * torch.randn((k, *x.shape[1:]), generator=gen, dtype=x.dtype).to(x.device)
            if pool is None:
                base = x0[i].unsqueeze(0).expand(k, *x.shape[1:])
            else:
                base = pool[torch.randint(len(pool), (k,), generator=gen).to(x.device)]
            a = torch.rand((k,), generator=gen, dtype=x.dtype).to(x.device).reshape(-1, *([1] * (x.ndim - 1)))
            delta = noisy - base
            g = input_gradient(f, base + a * delta, targets[i].expand(k))
            acc += (g * delta).sum(dim=0)
        out[i] = acc / samples
    return out
