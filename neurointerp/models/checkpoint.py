"""Self-describing classifier checkpoints, loaded without executing pickled code.

One file (``torch.save`` of plain containers and tensors) holds:

``format``, ``format_version``, ``tool_version``
``architecture``      ``{"name": ..., "params": ConvClassifier.config}``
``state_dict``        the weights (tensors only)
``input``             :class:`~neurointerp.models.inputs.InputSpec` as a dict: grid shape, affine,
                      space, normalisation, hemisphere crop
``task``              ``binary`` | ``multiclass`` | ``regression``
``classes``           class names in output order (binary: ``[negative, positive]``, the logit is
                      that of the positive class); ``label_mapping`` name -> index
``target``            regression only: ``{"mean", "sd"}`` to undo the target standardisation
``training``          participant ids, fold, hyper-parameters, seed, config hash
``metrics``           held-out metrics of the last epoch (folds) and the per-epoch history

:func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``: a file that tries to
run code (or to build any object beyond tensors and plain containers) on unpickling is refused
with an :class:`~neurointerp.errors.InputError`, before anything in it is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurointerp._version import __version__
from neurointerp.errors import InputError
from neurointerp.models.inputs import InputSpec

FORMAT = "neurointerp-classifier"
FORMAT_VERSION = 1
TASKS = ("binary", "multiclass", "regression")


@dataclass
class LoadedClassifier:
    """A loaded checkpoint: the model (eval mode) and everything needed to use it.

    ``model``            :class:`~neurointerp.models.classifier.ConvClassifier`
    ``spec``             :class:`~neurointerp.models.inputs.InputSpec` (grid, space, crop)
    ``task``, ``classes``, ``target`` (regression mean/sd), ``meta`` (the whole checkpoint without weights)
    """

    model: Any
    spec: InputSpec
    task: str
    classes: list[str]
    target: dict[str, float] | None
    meta: dict[str, Any]
    path: Path | None = None

    @property
    def affine(self) -> np.ndarray:
        return self.spec.affine

    @property
    def shape(self) -> tuple[int, ...]:
        return self.spec.shape

    @property
    def space(self) -> str:
        return self.spec.space

    @property
    def participant_ids(self) -> list[str]:
        """The participants whose images the optimiser saw: the training participants without
        the internal validation split (never trained on; with ``--patience`` it chose the
        checkpoint, which makes its figures optimistic but its images no less unseen)."""
        training = self.meta.get("training", {})
        validation = set(training.get("validation_participant_ids") or ())
        return [p for p in training.get("participant_ids", []) if p not in validation]

    @property
    def positive_class(self) -> str | None:
        return self.classes[1] if self.task == "binary" else None

    def prepare(self, data):
        """Arrays on the model's grid ``(*shape)`` / ``(N, *shape)`` -> input batch on the model's device."""
        device = next(self.model.parameters()).device
        return self.spec.prepare(data, device=device)

    def _batched(self, fn, data, batch_size: int):
        import torch

        arr = np.asarray(data.detach().cpu().numpy() if hasattr(data, "detach") else data, dtype=np.float32)
        if arr.shape == self.spec.shape:
            arr = arr[None]
        outs = []
        with torch.inference_mode():
            for i in range(0, len(arr), batch_size):
                outs.append(fn(self.prepare(arr[i : i + batch_size])).float().cpu())
        return torch.cat(outs)

    def features(self, data, batch_size: int = 32):
        """Feature vectors ``(N, M)`` (CPU tensor) at the encoder -> predictor boundary for arrays on the grid."""
        return self._batched(self.model.features, data, batch_size)

    def outputs(self, data, batch_size: int = 32):
        """Raw model outputs ``(N, n_outputs)`` (logits) for arrays on the grid."""
        return self._batched(self.model, data, batch_size)

    def predict(self, data, batch_size: int = 32) -> np.ndarray:
        """Scores for arrays on the grid: P(positive) (binary), class probabilities (multi-class),
        or the predicted value in label units (regression)."""
        return outputs_to_scores(self.outputs(data, batch_size), self.task, self.target)


def outputs_to_scores(out, task: str, target: dict[str, float] | None = None) -> np.ndarray:
    """Model outputs -> scores (see :meth:`LoadedClassifier.predict`)."""
    import torch

    if task == "binary":
        return torch.sigmoid(out[:, 0]).numpy()
    if task == "multiclass":
        return torch.softmax(out, dim=1).numpy()
    mean = float(target["mean"]) if target else 0.0
    sd = float(target["sd"]) if target else 1.0
    return (out[:, 0] * sd + mean).numpy()


def checkpoint_dict(
    model,
    spec: InputSpec,
    task: str,
    classes: list[str],
    architecture: str,
    training: dict[str, Any],
    metrics: dict[str, Any],
    target: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Assemble the checkpoint contents (plain containers and CPU tensors only)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task}")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "architecture": {"name": architecture, "params": _plain(model.config)},
        "state_dict": state,
        "input": spec.to_dict(),
        "task": task,
        "classes": [str(c) for c in classes],
        "label_mapping": {str(c): i for i, c in enumerate(classes)},
        "target": None if target is None else {k: float(v) for k, v in target.items()},
        "training": _plain(training),
        "metrics": _plain(metrics),
    }


def save_checkpoint(path: str | os.PathLike, contents: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (temporary file + rename)."""
    import io

    import torch

    from neurointerp.io.atomic import write_bytes

    # serialise in memory first: a full disk is then a plain write error naming the path
    # (torch.save writing to the file itself reports 'unexpected pos ...' instead)
    buffer = io.BytesIO()
    torch.save(contents, buffer)
    return write_bytes(Path(path), buffer.getvalue(), force=True)


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` with one-line :class:`InputError` messages.

    Nothing in the file is executed: the restricted unpickler builds only tensors and plain
    containers, and refuses any other global (``os.system``, ``builtins.open``...) before it is
    called. Empty files and files that are neither a torch zip archive nor a pickle are named as
    such (they are damaged, not dangerous).
    """
    import pickle

    import torch

    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path}: checkpoint file is empty (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise InputError(f"{path}: not a readable checkpoint (neither a torch zip archive nor a pickle)")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "Unsupported global" in str(exc) or "GLOBAL" in str(exc) or "REDUCE" in str(exc) or "BUILD" in str(exc):
            raise InputError(
                f"{path}: refused to load checkpoint: the file holds objects other than tensors and plain data "
                f"(it could run code when unpickled; {_unsupported(str(exc)) or first[:120]})"
            ) from exc
        raise InputError(f"{path}: not a readable checkpoint (damaged pickle: {first[:120]})") from exc
    except Exception as exc:  # zip/pickle corruption, truncation
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable checkpoint ({text[:160]})") from exc


def _unsupported(text: str) -> str:
    """The refused global from torch's message (``Unsupported global: GLOBAL builtins.open``)."""
    import re

    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    return f"refused global {m.group(1)}" if m else ""


def read_tagged_checkpoint(path: str | os.PathLike, fmt: str, version: int, kind: str, filename: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a neurointerp checkpoint of format tag ``fmt`` safely and check tag, version and keys.

    ``kind`` names it in messages (``classifier``, ``simulator``, ...), ``filename`` is the usual
    file name (``model.pt``). Every checkpoint kind of neurointerp is read through here.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {kind} checkpoint not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a {kind} checkpoint ({filename})")
    obj = safe_torch_load(path)
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        other = obj.get("format") if isinstance(obj, dict) else None
        hint = f" (it is a '{other}' checkpoint)" if isinstance(other, str) and other else ""
        raise InputError(f"{path}: not a neurointerp {kind} checkpoint (no '{fmt}' format tag){hint}")
    found = obj.get("format_version")
    if not isinstance(found, int) or found > version:
        raise InputError(f"{path}: {kind} checkpoint format version {found} is newer than this neurointerp supports ({version})")
    for key in required:
        if key not in obj:
            raise InputError(f"{path}: {kind} checkpoint lacks '{key}'")
    return obj


def build_model(cls, obj: dict[str, Any], path: str | os.PathLike, kind: str):
    """``cls.from_config(architecture params)`` with the checkpoint's weights; one-line error on mismatch."""
    try:
        model = cls.from_config(obj["architecture"]["params"])
        model.load_state_dict(obj["state_dict"])
    except (TypeError, KeyError, RuntimeError, ValueError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: {kind} weights do not match its architecture ({text[:160]})") from exc
    return model


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a classifier checkpoint file safely (``weights_only=True``) and check its format."""
    return read_tagged_checkpoint(path, FORMAT, FORMAT_VERSION, "classifier", "model.pt", ("architecture", "state_dict", "input", "task", "classes"))


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> LoadedClassifier:
    """Load a classifier checkpoint safely; returns a :class:`LoadedClassifier` in eval mode."""
    from neurointerp.models.classifier import ConvClassifier

    path = Path(path)
    obj = read_checkpoint(path)
    model = build_model(ConvClassifier, obj, path, "classifier")
    from neurointerp.train.device import for_inference

    for_inference(model, device)
    meta = {k: v for k, v in obj.items() if k != "state_dict"}
    return LoadedClassifier(
        model=model,
        spec=InputSpec.from_dict(obj["input"]),
        task=str(obj["task"]),
        classes=[str(c) for c in obj["classes"]],
        target=obj.get("target"),
        meta=meta,
        path=path,
    )


def _plain(v: Any) -> Any:
    """Containers of str/int/float/bool/None only (what ``weights_only`` loading accepts)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)
