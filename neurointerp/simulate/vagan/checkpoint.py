"""VA-GAN checkpoints: one self-describing file, read through
:func:`neurointerp.models.checkpoint.read_tagged_checkpoint` (``torch.load(weights_only=True)``).

``format`` (``neurointerp-vagan``), ``format_version``, ``tool_version``
``architecture``  ``{"name": "vagan", "params": VAGAN.config}`` (grid, widths, U-Net levels)
``state_dict``    weights of the map generator (``gen.*``) and critic (``critic.*``)
``input``         :class:`~neurointerp.models.inputs.InputSpec` (grid shape, affine, space, normalisation)
``classes``       the two class names in sorted order; ``source``: index of the class the map
                  translates *from* (its images get ``x + M(x)``, which should look like the other)
``training``      loss weights, epochs, lr, critic steps, seed, participant ids
``metrics``       per-epoch history
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurointerp._version import __version__

FORMAT = "neurointerp-vagan"
FORMAT_VERSION = 1


@dataclass
class LoadedVAGAN:
    model: Any  # VAGAN, eval mode
    spec: Any  # InputSpec
    classes: list[str]
    source: int
    meta: dict[str, Any]
    path: Path | None = None

    @property
    def source_class(self) -> str:
        return self.classes[self.source]

    @property
    def target_class(self) -> str:
        return self.classes[1 - self.source]


def vagan_dict(model, spec, classes, source: int, training: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    from neurointerp.models.checkpoint import _plain

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "architecture": {"name": "vagan", "params": _plain(model.config)},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "input": spec.to_dict(),
        "classes": [str(c) for c in classes],
        "source": int(source),
        "training": _plain(training),
        "metrics": _plain(metrics),
    }


def save_vagan(path: str | os.PathLike, contents: dict[str, Any]) -> Path:
    from neurointerp.models.checkpoint import save_checkpoint

    return save_checkpoint(path, contents)


def load_vagan(path: str | os.PathLike, device: str = "cpu") -> LoadedVAGAN:
    """Load a VA-GAN checkpoint safely (``weights_only=True``), eval mode, on ``device``."""
    from neurointerp.errors import InputError
    from neurointerp.models.checkpoint import build_model, read_tagged_checkpoint
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.vagan.networks import VAGAN
    from neurointerp.train.device import for_inference

    path = Path(path)
    obj = read_tagged_checkpoint(path, FORMAT, FORMAT_VERSION, "VA-GAN", "vagan.pt", ("classes", "input", "source"))
    classes = [str(c) for c in obj["classes"]]
    if len(classes) != 2 or obj["source"] not in (0, 1):
        raise InputError(f"{path}: VA-GAN checkpoint has classes {classes} and source {obj['source']!r}; expected two classes and source 0 or 1")
    model = build_model(VAGAN, obj, path, "VA-GAN")
    for_inference(model, device)
    meta = {k: v for k, v in obj.items() if k != "state_dict"}
    return LoadedVAGAN(model=model, spec=InputSpec.from_dict(obj["input"]), classes=classes, source=int(obj["source"]), meta=meta, path=path)
