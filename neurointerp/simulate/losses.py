"""The objective of papers/simulator-networks-jacobian.txt §3: E = E_logit + E_cycle + E_phi.

* :func:`logit_shift_loss` -- eq. (1): ``max(P(X) - P(X_hat), -delta)`` for injection (controls)
  and ``max(P(Y_hat) - P(Y), -delta)`` for removal (patients): every subject's logit must move
  by at least ``delta`` in the task's direction; beyond that it is not pushed further.
* :func:`cycle_loss` -- eq. (2): ``||G2(G1(X)) - X||^2`` and ``||G1(G2(Y)) - Y||^2``, the squared
  L2 norm averaged over voxels and subjects.
* :func:`smoothness_loss` -- eq. (5), the *diffusion* regulariser ``lambda_phi * sum ||grad phi||^2``
  (squared forward differences, L2 -- not L1 as in the authors' code), averaged over voxels as in
  VoxelMorph (the paper's [15]) so that ``lambda_phi`` does not depend on the grid size. The
  paper's lambda_phi = 0.02 multiplies a sum over its 64^3 grid (about 5000 in this convention);
  ``simulate train`` defaults to 10 (see ``benchmarks/simulate.py``).
"""

from __future__ import annotations

import torch


def logit_shift_loss(raw: torch.Tensor, simulated: torch.Tensor, task: torch.Tensor, delta: float) -> torch.Tensor:
    """Eq. (1): mean over subjects of ``max(-(sign * (simulated - raw)), -delta)``.

    ``task`` 0 (inject): the logit should rise; 1 (remove): it should fall.
    """
    sign = 1.0 - 2.0 * task.to(raw.dtype).reshape(raw.shape)  # +1 inject, -1 remove
    return torch.clamp(-sign * (simulated - raw), min=-float(delta)).mean()


def cycle_loss(cycled: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Eq. (2): mean squared difference between the cycle-back and the raw images."""
    return ((cycled - x) ** 2).mean()


def smoothness_loss(field: torch.Tensor) -> torch.Tensor:
    """Eq. (5) without lambda: mean over voxels of ``||grad phi||^2`` (forward differences)."""
    ndim = field.dim() - 2
    total = field.new_zeros(())
    for axis in range(2, 2 + ndim):
        d = torch.diff(field, dim=axis)
        total = total + (d**2).mean() * field.shape[1]
    return total
