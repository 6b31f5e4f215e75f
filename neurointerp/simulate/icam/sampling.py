"""Rejection sampling of the attribute latent space (papers/icam-vae-gan-attribution.txt §3.2, Fig. 4).

Vectors are drawn from the prior N(0, I) on the attribute latent grid and kept only when the
attribute encoder's classification layer assigns them the wanted class. During training this
feeds the generator attribute vectors of the expected class; at test time it translates a
*single* image into the opposite class (no paired image of the other class is needed), and
repeated draws give the mean and variance FA maps.

Multi-class (the paper: "This also applies in a multi-class setting"): a vector's class is the arg
max of the K logits. Regression: the attribute layer is linear, ``f(z) = w.z + b``, so the prior
conditioned on ``f(z) = t`` is Gaussian and is sampled exactly (:func:`conditional_sample`:
``z = z0 + w (t - f(z0)) / |w|^2``, ``z0 ~ N(0, I)``) -- the limit of rejection sampling with a
vanishing tolerance around the target value, with one draw per vector.
"""

from __future__ import annotations

import torch

from neurointerp.errors import NeurointerpError


class RejectionError(NeurointerpError):
    """No sampled vector was of the wanted class within the draw budget."""


def rejection_sample(enc_a, target, latent_shape, *, max_draws: int = 1000, chunk: int = 32, generator: torch.Generator | None = None, device=None):
    """Attribute vectors ``(N, *latent_shape)`` whose class under ``enc_a.classify`` is ``target``.

    Parameters
    ----------
    enc_a
        The attribute encoder (its ``classify`` maps ``(N, *latent_shape)`` to logits ``(N, 1)``).
    target
        ``(N,)`` wanted class per vector (binary: 0 or 1, class 1 means logit > 0; multi-class:
        the class index, a vector's class is the arg max of its logits).
    max_draws
        Draws per vector before giving up.
    generator
        Torch random generator (reproducible draws), or a list of one generator per vector (each
        vector's draws then depend on its own generator only, not on the batch it is in).

    Returns
    -------
    z, accepted, draws
        The vectors (rows that were never accepted are left as the last draw), a ``(N,)`` bool
        tensor of acceptance and a ``(N,)`` long tensor of draws used per vector.
    """
    target = torch.as_tensor(target, dtype=torch.long, device=device).reshape(-1)
    n = target.numel()
    shape = tuple(int(s) for s in latent_shape)
    z = torch.empty((n,) + shape, device=device)
    accepted = torch.zeros(n, dtype=torch.bool, device=device)
    draws = torch.zeros(n, dtype=torch.long, device=device)
    tried = 0
    with torch.no_grad():
        while tried < max_draws and not bool(accepted.all()):
            todo = torch.nonzero(~accepted).reshape(-1)
            k = min(chunk, max_draws - tried)
            if isinstance(generator, (list, tuple)):
                cand = torch.stack([torch.randn((k,) + shape, generator=generator[int(i)]) for i in todo]).to(device)
            else:
                cand = torch.randn((len(todo), k) + shape, generator=generator, device="cpu" if generator is not None else device).to(device)
            out = enc_a.classify(cand.reshape((len(todo) * k,) + shape))
            cls = (out[:, 0] > 0).long() if out.shape[1] == 1 else out.argmax(1)
            ok = cls.reshape(len(todo), k) == target[todo, None]
            has = ok.any(1)
            first = torch.where(has, ok.float().argmax(1), torch.full_like(has, k - 1, dtype=torch.long))
            z[todo] = cand[torch.arange(len(todo), device=device), first]
            draws[todo] += torch.where(has, first + 1, torch.full_like(first, k))
            accepted[todo] = has
            tried += k
    return z, accepted, draws


def sample_class(enc_a, target, latent_shape, *, max_draws: int = 1000, generator=None, device=None, where: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Strict rejection sampling for test time: raise :class:`RejectionError` if any vector fails."""
    z, ok, draws = rejection_sample(enc_a, target, latent_shape, max_draws=max_draws, generator=generator, device=device)
    if not bool(ok.all()):
        cls = int(torch.as_tensor(target).reshape(-1)[~ok.cpu()][0])
        raise RejectionError(
            f"{where + ': ' if where else ''}no attribute vector of class {cls} in {max_draws} draws from N(0, I); "
            "the attribute classifier gives that class (almost) no prior mass -- train longer or raise --max-draws"
        )
    return z, draws


def conditional_sample(enc_a, value, latent_shape, *, generator=None, device=None):
    """Regression: attribute vectors ``(N, *latent_shape)`` drawn from N(0, I) conditioned on the
    (linear) attribute layer giving ``value`` ``(N,)`` (standardised units), exactly.

    ``generator``: as in :func:`rejection_sample` (one generator, or one per vector). Returns
    ``z, draws`` (draws: ones, for the same bookkeeping as rejection sampling) and checks
    ``enc_a.classify(z) == value`` to float precision.
    """
    value = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
    n = value.numel()
    shape = tuple(int(s) for s in latent_shape)
    with torch.no_grad():
        if isinstance(generator, (list, tuple)):
            z0 = torch.stack([torch.randn(shape, generator=generator[i]) for i in range(n)]).to(device)
        else:
            z0 = torch.randn((n,) + shape, generator=generator, device="cpu" if generator is not None else device).to(device)
        layer = enc_a.classifier
        w = layer.weight[0].to(z0.dtype)
        b = layer.bias[0].to(z0.dtype)
        flat = z0.reshape(n, -1)
        z = flat + w[None] * ((value - b - flat @ w) / (w @ w).clamp_min(1e-12))[:, None]
    return z.reshape((n,) + shape), torch.ones(n, dtype=torch.long, device=device)


def prior_zscore(enc_a, value) -> torch.Tensor:
    """How far a (standardised) regression target lies in the prior: ``(value - b) / |w|``, the
    z-score of ``value`` under ``f(z)``, ``z ~ N(0, I)``. Large values mean conditioned vectors of
    low prior mass (training conditions on the training targets, so values of the order seen for
    them in training are expected; with a weak KL term they can exceed 3 inside the training range)."""
    with torch.no_grad():
        w = enc_a.classifier.weight[0]
        b = enc_a.classifier.bias[0]
        return (torch.as_tensor(value, dtype=w.dtype) - b) / w.norm().clamp_min(1e-12)
