"""Segmenter checkpoints: one self-describing file, loaded with ``torch.load(weights_only=True)``.

Contents (plain containers and tensors only): ``format`` (``neurointerp-segment-bg``),
``format_version``, ``tool_version``, ``architecture`` (``unet2d`` and its config),
``state_dict``, ``classes`` (background, WM, GM, CSF), ``input`` (grid shape, affine, slice
axis, normalisation: none), ``reference`` (participant id, sectioned image, brain mask and
shape template of the reference animal, as ``(n_slices, H, W)`` tensors), ``training``
(hyper-parameters, seed, training/validation ids, best epoch) and ``history``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurointerp._version import __version__

FORMAT = "neurointerp-segment-bg"
FORMAT_VERSION = 1
CLASSES = ("background", "WM", "GM", "CSF")


@dataclass
class LoadedSegmenter:
    model: Any  # UNet2D in eval mode
    axis: int
    grid_shape: tuple[int, ...]
    affine: np.ndarray
    reference: dict[str, Any]  # participant_id, image, mask, template (numpy, (n, H, W))
    meta: dict[str, Any]
    path: Path | None = None

    @property
    def gbp_score(self) -> str:
        return str(self.meta.get("training", {}).get("gbp_score", "logit"))


def save_segmenter(path, model, grid_shape, affine, axis: int, reference: dict, training: dict, history: list, force: bool = False) -> Path:
    import torch

    from neurointerp.io.atomic import check_writable
    from neurointerp.models.checkpoint import _plain, save_checkpoint

    check_writable(path, force=force)
    contents = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "architecture": {"name": "unet2d", "params": _plain(model.config)},
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "classes": list(CLASSES),
        "input": {"shape": [int(s) for s in grid_shape], "affine": np.asarray(affine, float).tolist(), "axis": int(axis), "normalize": "none"},
        "reference": {
            "participant_id": str(reference["participant_id"]),
            "image": torch.from_numpy(np.ascontiguousarray(reference["image"], dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(reference["mask"], dtype=np.uint8)),
            "template": torch.from_numpy(np.ascontiguousarray(reference["template"], dtype=np.float32)),
        },
        "training": _plain(training),
        "history": _plain(history),
    }
    return save_checkpoint(path, contents)


def load_segmenter(path: str | os.PathLike, device: str = "cpu") -> LoadedSegmenter:
    """Load a segmenter checkpoint safely, eval mode, on ``device``."""
    from neurointerp.models.checkpoint import build_model, read_tagged_checkpoint
    from neurointerp.segment_bg.unet import UNet2D
    from neurointerp.train.device import for_inference

    path = Path(path)
    obj = read_tagged_checkpoint(path, FORMAT, FORMAT_VERSION, "segment-bg", "model.pt")
    model = build_model(UNet2D, obj, path, "segmenter")
    for_inference(model, device)
    ref = obj["reference"]
    reference = {"participant_id": ref["participant_id"], **{k: ref[k].numpy() for k in ("image", "mask", "template")}}
    meta = {k: v for k, v in obj.items() if k not in ("state_dict", "reference")}
    inp = obj["input"]
    return LoadedSegmenter(model=model, axis=int(inp["axis"]), grid_shape=tuple(inp["shape"]), affine=np.asarray(inp["affine"]), reference=reference, meta=meta, path=path)
