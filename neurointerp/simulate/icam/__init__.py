"""ICAM: classification with feature attribution through disentangled latent spaces
(papers/icam-vae-gan-attribution.txt §3-4), ``neurointerp simulate train/apply --method icam``.

* :mod:`~neurointerp.simulate.icam.networks` -- content/attribute encoders, generator, content and
  domain discriminators (2D/3D, spatial attribute latent with a classification layer); tasks
  ``binary``, ``multiclass`` (K logits) and ``regression`` (the paper's §5 extensions).
* :mod:`~neurointerp.simulate.icam.losses` -- the terms and default weights of Eq. 5.
* :mod:`~neurointerp.simulate.icam.sampling` -- rejection sampling of the attribute space (arg max
  for K classes) and exact conditional sampling for a regression target value.
* :mod:`~neurointerp.simulate.icam.train` -- :func:`fit_icam`, :func:`train_icam`.
* :mod:`~neurointerp.simulate.icam.apply` -- :func:`translate`, :func:`apply_icam` (single image, no
  paired image of the other class: mean/variance FA maps over rejection-sampled draws).
* :mod:`~neurointerp.simulate.icam.checkpoint` -- :func:`load_icam` (``weights_only=True``).
* :mod:`~neurointerp.simulate.icam.experiment` -- :func:`evaluate_icam`, :func:`lesion_experiment`,
  :func:`demo_step` (Table-4-style comparison on synthetic lesions), :func:`lesion_experiment_tasks`
  (multi-class and regression variants).

Nothing here imports torch at package import time.
"""

from __future__ import annotations

__all__ = ["fit_icam", "train_icam", "translate", "apply_icam", "load_icam", "evaluate_icam", "lesion_experiment", "demo_step", "lesion_experiment_tasks"]

_WHERE = {
    "fit_icam": "train",
    "train_icam": "train",
    "translate": "apply",
    "apply_icam": "apply",
    "load_icam": "checkpoint",
    "evaluate_icam": "experiment",
    "lesion_experiment": "experiment",
    "demo_step": "experiment",
    "lesion_experiment_tasks": "experiment",
}


def __getattr__(name):  # lazy: keep `import neurointerp.simulate.icam` free of torch
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"neurointerp.simulate.icam.{_WHERE[name]}"), name)
    raise AttributeError(name)
