"""VA-GAN: visual feature attribution with a Wasserstein GAN (Baumgartner et al., CVPR 2018; the
baseline of papers/icam-vae-gan-attribution.txt §2.2, Table 3), ``neurointerp simulate train/apply
--method vagan``.

A map generator ``M`` (a U-Net) adds a map to an image of the *source* class so that
``y = x + M(x)`` looks like an image of the other class to a critic ``D``, trained as a WGAN with
gradient penalty; an L1 penalty keeps the map small. The attribution is ``M(x)`` itself. It is
trained in one class direction (source -> other class, as the paper's AD -> MCI), cannot classify,
and gives one deterministic map per image (no latent space to sample) -- the limits the ICAM paper
contrasts ICAM with.

* :mod:`~neurointerp.simulate.vagan.networks` -- :class:`MapGenerator`, :class:`Critic`, :class:`VAGAN`.
* :mod:`~neurointerp.simulate.vagan.losses` -- WGAN critic/generator losses, gradient penalty, map L1.
* :mod:`~neurointerp.simulate.vagan.train` -- :func:`fit_vagan`, :func:`train_vagan`.
* :mod:`~neurointerp.simulate.vagan.apply` -- :func:`vagan_maps`, :func:`apply_vagan`.
* :mod:`~neurointerp.simulate.vagan.checkpoint` -- :func:`load_vagan` (``weights_only=True``).
* :mod:`~neurointerp.simulate.vagan.experiment` -- :func:`evaluate_vagan` (NCC with lesion masks).

Nothing here imports torch at package import time.
"""

from __future__ import annotations

__all__ = ["fit_vagan", "train_vagan", "vagan_maps", "apply_vagan", "load_vagan", "evaluate_vagan"]

_WHERE = {
    "fit_vagan": "train",
    "train_vagan": "train",
    "vagan_maps": "apply",
    "apply_vagan": "apply",
    "load_vagan": "checkpoint",
    "evaluate_vagan": "experiment",
}


def __getattr__(name):  # lazy: keep `import neurointerp.simulate.vagan` free of torch
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"neurointerp.simulate.vagan.{_WHERE[name]}"), name)
    raise AttributeError(name)
