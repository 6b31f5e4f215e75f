"""ICAM checkpoints: one self-describing file, loaded with ``torch.load(weights_only=True)``.

Contents (plain containers and tensors only):

``format`` (``neurointerp-icam``), ``format_version``, ``tool_version``
``architecture``  ``{"name": "icam", "params": ICAM.config}`` (grid, attribute latent shape, channels;
                  multi-class: ``task``, ``n_classes``; regression: ``task``, ``target_mean``, ``target_sd``)
``state_dict``    weights of all five networks (``enc_c.*``, ``enc_a.*``, ``gen.*``, ``dis_c.*``, ``dis.*``)
``input``         :class:`~neurointerp.models.inputs.InputSpec` (grid shape, affine, space, normalisation)
``task``          ``binary`` | ``multiclass`` | ``regression`` (absent in version 1 files: binary)
``classes``       class names, class 0 first (binary: the attribute classifier's logit is that of
                  class 1; multi-class: logits in this order; regression: empty)
``training``      loss weights, epochs, lr, seed, participant ids
``metrics``       per-epoch history
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurointerp._version import __version__

FORMAT = "neurointerp-icam"
#: version 1: binary (what every file before the multi-class/regression extensions is; binary
#: checkpoints are still written as version 1, readable by older versions); 2: multi-class or regression
FORMAT_VERSION = 2


@dataclass
class LoadedICAM:
    model: Any  # ICAM, eval mode
    spec: Any  # InputSpec
    classes: list[str]
    meta: dict[str, Any]
    path: Path | None = None

    @property
    def task(self) -> str:
        return self.model.task


def icam_dict(model, spec, classes, training: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    from neurointerp.models.checkpoint import _plain

    task = getattr(model, "task", "binary")
    extra = {} if task == "binary" else {"task": task}
    return {
        "format": FORMAT,
        "format_version": 1 if task == "binary" else FORMAT_VERSION,
        "tool_version": __version__,
        "architecture": {"name": "icam", "params": _plain(model.config)},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "input": spec.to_dict(),
        "classes": [str(c) for c in classes],
        "training": _plain(training),
        "metrics": _plain(metrics),
        **extra,
    }


def save_icam(path: str | os.PathLike, contents: dict[str, Any]) -> Path:
    from neurointerp.models.checkpoint import save_checkpoint

    return save_checkpoint(path, contents)


def checkpoint_format(path: str | os.PathLike) -> str | None:
    """The ``format`` tag of a neurointerp checkpoint file, or None if unreadable/untagged."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        return None
    return obj.get("format") if isinstance(obj, dict) else None


def load_icam(path: str | os.PathLike, device: str = "cpu") -> LoadedICAM:
    """Load an ICAM checkpoint safely (``weights_only=True``), eval mode, on ``device``."""
    from neurointerp.models.checkpoint import build_model, read_tagged_checkpoint
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.icam.networks import ICAM
    from neurointerp.train.device import for_inference

    path = Path(path)
    obj = read_tagged_checkpoint(path, FORMAT, FORMAT_VERSION, "ICAM", "icam.pt", ("classes", "input"))
    model = build_model(ICAM, obj, path, "ICAM")
    task = obj.get("task", "binary")
    if task != model.task:
        from neurointerp.errors import InputError

        raise InputError(f"{path}: ICAM checkpoint says task {task!r} but its architecture is {model.task!r}")
    for_inference(model, device)
    meta = {k: v for k, v in obj.items() if k != "state_dict"}
    return LoadedICAM(model=model, spec=InputSpec.from_dict(obj["input"]), classes=[str(c) for c in obj["classes"]], meta=meta, path=path)
