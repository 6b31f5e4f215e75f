"""VA-GAN's objective (Baumgartner et al. 2018, Eq. 5-6; WGAN-GP of Gulrajani et al. 2017)::

    M* = arg min_M max_{D in 1-Lipschitz}  E_{y ~ p(x|c=other)}[D(y)] - E_{x ~ p(x|c=source)}[D(x + M(x))]
                                           + lambda_map ||M(x)||_1

with the Lipschitz constraint enforced by the gradient penalty
``lambda_gp E[(||grad D(x_hat)||_2 - 1)^2]`` on ``x_hat = e y + (1 - e)(x + M(x))``, ``e ~ U(0, 1)``
per sample. Defaults (the authors' released configuration): ``lambda_map`` 100, ``lambda_gp`` 10.

Sign convention: the critic scores real other-class images *high* (Gulrajani et al.); the
authors' code has the mirror convention (critic minimises ``D(real) - D(fake)``), which is the
same objective with ``D -> -D``. The gradient norm is taken over *all* voxels of each sample
(the authors' TF code sums the squared gradient over axis 1 only, one spatial axis of NHWC
tensors -- a known slip we do not copy).
"""

from __future__ import annotations

import torch

#: default loss weights (the authors' ``l1_map_weight`` and ``scale``)
LAMBDAS = {"map": 100.0, "gp": 10.0}


def critic_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """``E[D(fake)] - E[D(real)]``: minimised by the critic (it maximises the Wasserstein estimate)."""
    return d_fake.mean() - d_real.mean()


def generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """``-E[D(x + M(x))]``: minimised by the map generator."""
    return -d_fake.mean()


def map_l1(m: torch.Tensor) -> torch.Tensor:
    """Mean absolute map value (``||M(x)||_1`` per voxel, averaged over the batch)."""
    return m.abs().mean()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """``E[(||grad_x D(x_hat)||_2 - 1)^2]`` at ``x_hat = eps real + (1 - eps) fake`` (unweighted).

    ``eps``: ``(N,)`` interpolation weights (default ``U(0, 1)`` per sample). The gradient is
    taken with ``create_graph=True`` so the penalty trains the critic.
    """
    n = real.shape[0]
    if eps is None:
        eps = torch.rand(n, device=real.device, dtype=real.dtype)
    e = eps.reshape(n, *([1] * (real.ndim - 1)))
    x_hat = (e * real + (1 - e) * fake.detach()).requires_grad_(True)
    d = critic(x_hat)
    (grad,) = torch.autograd.grad(d.sum(), x_hat, create_graph=True)
    norm = grad.reshape(n, -1).norm(dim=1)
    return ((norm - 1.0) ** 2).mean()
