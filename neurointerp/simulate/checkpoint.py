"""Simulator checkpoints: one self-describing file, loaded with ``torch.load(weights_only=True)``.

Contents (plain containers and tensors only):

``format`` (``neurointerp-simulator``), ``format_version``, ``tool_version``
``architecture``  ``{"name": "condconv-unet" | "unet-pair", "params": Simulator.config}``
``state_dict``    the weights
``input``         the classifier's :class:`~neurointerp.models.inputs.InputSpec` (grid shape, affine,
                  space, normalisation, crop); the simulator works on the classifier's input
``classifier``    ``{"sha256", "path", "classes", "space"}`` of the frozen classifier it was trained against
``tasks``         ``{"0": "inject <positive class>", "1": "remove <positive class>"}``
``training``      losses' weights (delta, lambda_phi, lambda_cycle), epochs, lr, seed, participant ids
``metrics``       per-epoch history
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurointerp._version import __version__

FORMAT = "neurointerp-simulator"
FORMAT_VERSION = 1


@dataclass
class LoadedSimulator:
    model: Any  # Simulator, eval mode
    spec: Any  # InputSpec
    meta: dict[str, Any]
    path: Path | None = None

    @property
    def mode(self) -> str:
        return self.model.mode

    @property
    def classifier_sha256(self) -> str | None:
        return self.meta.get("classifier", {}).get("sha256")


def simulator_dict(model, spec, classifier: dict[str, Any], training: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    from neurointerp.models.checkpoint import _plain

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "architecture": {"name": "condconv-unet" if model.config["condconv"] else "unet-pair", "params": _plain(model.config)},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "input": spec.to_dict(),
        "classifier": _plain(classifier),
        "tasks": {"0": "inject", "1": "remove"},
        "training": _plain(training),
        "metrics": _plain(metrics),
    }


def save_simulator(path: str | os.PathLike, contents: dict[str, Any]) -> Path:
    from neurointerp.models.checkpoint import save_checkpoint

    return save_checkpoint(path, contents)


def load_simulator(path: str | os.PathLike, device: str = "cpu") -> LoadedSimulator:
    """Load a simulator checkpoint safely (``weights_only=True``), eval mode, on ``device``."""
    from neurointerp.models.checkpoint import build_model, read_tagged_checkpoint
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.unet import Simulator
    from neurointerp.train.device import for_inference

    path = Path(path)
    obj = read_tagged_checkpoint(path, FORMAT, FORMAT_VERSION, "simulator", "simulator.pt")
    model = build_model(Simulator, obj, path, "simulator")
    for_inference(model, device)
    meta = {k: v for k, v in obj.items() if k != "state_dict"}
    return LoadedSimulator(model=model, spec=InputSpec.from_dict(obj["input"]), meta=meta, path=path)
