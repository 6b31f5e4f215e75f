"""Cycle-consistent simulator networks and Jacobian maps (papers/simulator-networks-jacobian.txt §3-4).

* :mod:`~neurointerp.simulate.condconv` -- conditional convolution (mixture of K expert kernels,
  routed by ``sigmoid([GlobalAvgPool(f), t] R_k)``), batched over samples.
* :mod:`~neurointerp.simulate.unet` -- the simulator U-Net (2D/3D; CondConv or conventional).
* :mod:`~neurointerp.simulate.warp` -- spatial transformer and the displacement-field convention.
* :mod:`~neurointerp.simulate.losses` -- logit-shift, cycle-consistency and diffusion losses.
* :mod:`~neurointerp.simulate.train` -- :func:`train_simulator` (``neurointerp simulate train``).
* :mod:`~neurointerp.simulate.apply` -- :func:`apply_simulator` (``neurointerp simulate apply``).
* :mod:`~neurointerp.simulate.jacobian` -- :func:`jacobian_determinant`, :func:`jacobian_maps`
  (``neurointerp jacobian``).

Nothing here imports torch at package import time.
"""

from __future__ import annotations

__all__ = ["train_simulator", "fit_simulator", "apply_simulator", "simulate_arrays", "jacobian_determinant", "jacobian_maps", "load_simulator"]


def __getattr__(name):  # lazy: keep `import neurointerp.simulate` free of torch
    if name in ("train_simulator", "fit_simulator"):
        from neurointerp.simulate import train

        return getattr(train, name)
    if name in ("apply_simulator", "simulate_arrays"):
        from neurointerp.simulate import apply

        return getattr(apply, name)
    if name == "load_simulator":
        from neurointerp.simulate import checkpoint

        return checkpoint.load_simulator
    if name in ("jacobian_determinant", "jacobian_maps"):
        from neurointerp.simulate import jacobian

        return getattr(jacobian, name)
    raise AttributeError(name)
