"""Training data: a validated cohort, its images on one grid as float32 tensors, encoded targets.

All images must share one grid (shape and affine, within 1e-3 mm); the first image that differs
is named in one line. The cohort is held in memory as one float32 tensor when it fits in half
of the available memory (it is read once, not per epoch), otherwise images are read per batch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from neurointerp.errors import InputError
from neurointerp.io.cohort import Cohort, read_cohort
from neurointerp.models.inputs import InputSpec

TASKS = ("auto", "binary", "multiclass", "regression")
_SPACE_RE = re.compile(r"_space-([A-Za-z0-9]+)")


@dataclass
class Grid:
    shape: tuple[int, ...]
    affine: np.ndarray
    ndim: int


def _header_grid(path: Path, ndim: int | None) -> tuple[tuple[int, ...], np.ndarray, int]:
    from neurointerp.io.headers import read_header

    # the header rules of every command (sform/qform, scaling, intent, size): a bad header is
    # this image's fault, not a mismatch with the other rows
    img = read_header(path)
    shape = [int(s) for s in img.shape]
    while len(shape) > 3 and shape[-1] == 1:
        shape.pop()
    if ndim is None:
        ndim = 2 if (len(shape) == 3 and shape[2] == 1) or len(shape) == 2 else 3
    while len(shape) > ndim and shape[-1] == 1:
        shape.pop()
    return tuple(shape), np.asarray(img.affine, dtype=np.float64), ndim


def check_grid(cohort: Cohort, ndim: int | None = None, atol: float = 1e-3) -> Grid:
    """Check that every image of ``cohort`` has the grid of the first one (headers only)."""
    paths = cohort.images
    if not paths:
        raise InputError(f"{cohort.path}: no images")
    shape0, affine0, nd = _header_grid(paths[0], ndim)
    if len(shape0) != nd:
        raise InputError(f"{cohort.path} row {cohort.rows[0]}: image '{paths[0]}' has shape {shape0}, not a {nd}D image")
    for i, p in enumerate(paths[1:], start=1):
        shape, affine, _ = _header_grid(p, nd)
        where = f"{cohort.path} row {cohort.rows[i]}: image '{p.name}'"
        first = f"row {cohort.rows[0]} '{paths[0].name}'"
        if shape != shape0:
            raise InputError(
                f"{where} has grid {'x'.join(map(str, shape))} but {first} has {'x'.join(map(str, shape0))}; "
                "all images must share one grid (resample them, e.g. with neurointerp preprocess)"
            )
        if not np.allclose(affine, affine0, atol=atol):
            dev = float(np.max(np.abs(affine - affine0)))
            raise InputError(
                f"{where} has another affine than {first} (differs by up to {dev:.3g} mm); "
                "all images must share one grid (resample them, e.g. with neurointerp preprocess)"
            )
    return Grid(shape=shape0, affine=affine0, ndim=nd)


def guess_space(paths: Sequence[Path]) -> str:
    """The BIDS ``space-`` entity shared by all image names, else ``unknown``."""
    spaces = {(_SPACE_RE.search(Path(p).name) or [None, None])[1] for p in paths}
    if len(spaces) == 1:
        (only,) = spaces
        if only:
            return only
    return "unknown"


class ImageStore:
    """Images of a cohort, all in memory (one float32 tensor) or read on demand."""

    def __init__(self, paths: Sequence[Path], spec: InputSpec, preload: bool | None = None, description: str = "loading images"):
        import torch

        self.paths = [Path(p) for p in paths]
        self.spec = spec
        nbytes = len(self.paths) * int(np.prod(spec.shape)) * 4
        if preload is None:
            preload = nbytes < 0.5 * available_memory()
        self.preloaded = bool(preload)
        self.nbytes = nbytes
        self._data = None
        if self.preloaded:
            from neurointerp.progress import track

            data = torch.empty((len(self.paths), 1, *spec.shape), dtype=torch.float32)
            for i in track(range(len(self.paths)), description=description, total=len(self.paths)):
                data[i, 0] = torch.from_numpy(self._read(i))
            self._data = data

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, i: int) -> np.ndarray:
        from neurointerp.io.nifti import load_image

        vol = load_image(self.paths[i], ndim=self.spec.ndim)
        return self.spec.normalise_array(vol.data)

    def get(self, indices: Sequence[int]):
        """``(len(indices), 1, *shape)`` float32 tensor of the full-grid images (on the store's device)."""
        import torch

        idx = [int(i) for i in indices]
        if self._data is not None:
            return self._data[torch.as_tensor(idx, dtype=torch.long, device=self._data.device)]
        return torch.from_numpy(np.stack([self._read(i) for i in idx])[:, None])

    def to(self, device) -> "ImageStore":
        """Move a preloaded cohort to ``device`` (a GPU: no host-to-device copy per batch)."""
        if self._data is not None:
            self._data = self._data.to(device)
        return self

    @property
    def tensor(self):
        """The whole cohort as one tensor (loads it if not preloaded)."""
        if self._data is None:
            return self.get(range(len(self)))
        return self._data


def available_memory() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


@dataclass
class TrainData:
    """A cohort ready for training: images, encoded targets, participants, the grid."""

    cohort: Cohort
    store: ImageStore
    spec: InputSpec
    task: str
    classes: list[str]  # class names in output order ([] for regression)
    targets: np.ndarray  # class index (int64) or target value (float64)

    def __post_init__(self):
        self.groups: list[str] = self.cohort.participant_ids  # participant id of every row

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "multiclass" else 1

    def __len__(self) -> int:
        return len(self.targets)


def read_training_cohort(
    cohort: str | os.PathLike,
    task: str = "auto",
    label_column: str = "label",
    image_column: str = "image",
) -> Cohort:
    """Validate the cohort table for training (label present; two classes unless regression)."""
    if task not in TASKS:
        raise InputError(f"--task {task}: choose {', '.join(TASKS)}")
    if task == "regression":
        return read_cohort(cohort, require_label=True, numeric=[label_column], image_column=image_column, label_column=label_column, min_classes=0)
    return read_cohort(cohort, require_label=True, image_column=image_column, label_column=label_column, min_classes=2)


def encode_targets(cohort: Cohort, task: str = "auto", positive_class: str | None = None) -> tuple[str, list[str], np.ndarray]:
    """``(task, classes, targets)``: resolve ``auto``; class indices follow ``classes``."""
    col = cohort.label_column
    if task == "regression":
        return "regression", [], cohort.frame[col].astype(float).to_numpy()
    labels = cohort.frame[col].astype(str).to_numpy()
    classes = cohort.classes
    if task == "auto":
        task = "binary" if len(classes) == 2 else "multiclass"
    if task == "binary" and len(classes) != 2:
        raise InputError(
            f"{cohort.path}: --task binary needs exactly 2 classes in column '{col}', found {len(classes)} "
            f"({', '.join(classes[:6])}{', ...' if len(classes) > 6 else ''})"
        )
    if positive_class is not None:
        if task != "binary":
            raise InputError("--positive-class applies to binary classification only")
        if str(positive_class) not in classes:
            raise InputError(f"--positive-class {positive_class}: not a class of column '{col}' ({', '.join(classes)})")
        classes = [c for c in classes if c != str(positive_class)] + [str(positive_class)]
    index = {c: i for i, c in enumerate(classes)}
    return task, classes, np.array([index[v] for v in labels], dtype=np.int64)


def load_training_data(
    cohort: str | os.PathLike | Cohort,
    task: str = "auto",
    label_column: str = "label",
    image_column: str = "image",
    positive_class: str | None = None,
    normalize: str = "none",
    hemisphere: str = "both",
    space: str | None = None,
    ndim: int | None = None,
    preload: bool | None = None,
) -> TrainData:
    """Validate a cohort, check the grid and load its images (see :class:`TrainData`)."""
    if not isinstance(cohort, Cohort):
        cohort = read_training_cohort(cohort, task=task, label_column=label_column, image_column=image_column)
    task, classes, targets = encode_targets(cohort, task=task, positive_class=positive_class)
    grid = check_grid(cohort, ndim=ndim)
    spec = InputSpec(
        shape=grid.shape,
        affine=grid.affine,
        space=space or guess_space(cohort.images),
        normalize=normalize,
        hemisphere=hemisphere,
    )
    store = ImageStore(cohort.images, spec, preload=preload)
    return TrainData(cohort=cohort, store=store, spec=spec, task=task, classes=classes, targets=targets)
