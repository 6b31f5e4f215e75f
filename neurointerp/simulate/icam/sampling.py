"""Rejection sampling of the attribute latent space (papers/icam-vae-gan-attribution.txt §3.2, Fig. 4).

Vectors are drawn from the prior N(0, I) on the attribute latent grid and kept only when the
attribute encoder's classification layer assigns them the wanted class. During training this
feeds the generator attribute vectors of the expected class; at test time it translates a
*single* image into the opposite class (no paired image of the other class is needed), and
repeated draws give the mean and variance FA maps.
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
        ``(N,)`` wanted class per vector (0 or 1; class 1 means logit > 0).
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
            logits = enc_a.classify(cand.reshape((len(todo) * k,) + shape)).reshape(len(todo), k)
            ok = (logits > 0).long() == target[todo, None]
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
