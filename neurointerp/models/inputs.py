"""The input grid of a model and the transform from an image on that grid to a model input.

A model is trained on images that share one grid (shape + affine, in a named space). The
:class:`InputSpec` stored in every checkpoint records that grid, the intensity normalisation and,
for a single-hemisphere model, the crop. :meth:`InputSpec.prepare` turns arrays on the full grid
into the model's input batch; :meth:`InputSpec.uncrop` puts a map computed on the model input
(a saliency map) back on the full grid, with the grid's affine.

Single-hemisphere models (papers/confounder-aware-saliency.txt §3.2): the left-right voxel axis
is the one most aligned with world x; the grid is split at its centre, and the left (world x
smaller) or right half is kept. With left-right flip augmentation the model sees one hemisphere
and the mirrored other one. The grid should be centred on the mid-sagittal plane (template grids
are); the flip and the split are about the grid centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from neurointerp.errors import InputError

NORMALISATIONS = ("none", "zscore")
HEMISPHERES = ("both", "left", "right")


def lr_axis(affine: np.ndarray, ndim: int) -> int:
    """The voxel axis most aligned with world x (left-right)."""
    a = np.abs(np.asarray(affine, dtype=float)[0, :ndim])
    return int(np.argmax(a))


@dataclass
class InputSpec:
    """Grid and input transform of a model (stored in its checkpoint)."""

    shape: tuple[int, ...]
    affine: np.ndarray
    space: str = "unknown"
    normalize: str = "none"
    hemisphere: str = "both"
    crop: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.normalize not in NORMALISATIONS:
            raise InputError(f"unknown normalisation '{self.normalize}' (choose {', '.join(NORMALISATIONS)})")
        if self.hemisphere not in HEMISPHERES:
            raise InputError(f"unknown hemisphere '{self.hemisphere}' (choose {', '.join(HEMISPHERES)})")
        if not self.crop:
            self.crop = _hemisphere_crop(self.shape, self.affine, self.hemisphere)
        self.crop = [(int(a), int(b)) for a, b in self.crop]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def lr_axis(self) -> int:
        return lr_axis(self.affine, self.ndim)

    @property
    def model_shape(self) -> tuple[int, ...]:
        """Spatial shape of the model input (the crop of the grid)."""
        return tuple(b - a for a, b in self.crop)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "affine": [[float(v) for v in row] for row in self.affine],
            "space": self.space,
            "normalize": self.normalize,
            "hemisphere": self.hemisphere,
            "crop": [[a, b] for a, b in self.crop],
            "lr_axis": self.lr_axis,
            "model_shape": list(self.model_shape),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        return cls(
            shape=tuple(d["shape"]),
            affine=np.asarray(d["affine"], dtype=np.float64),
            space=str(d.get("space", "unknown")),
            normalize=str(d.get("normalize", "none")),
            hemisphere=str(d.get("hemisphere", "both")),
            crop=[tuple(c) for c in d.get("crop", [])],
        )

    def check_grid(self, shape: Sequence[int], affine: np.ndarray, where: str = "image", atol: float = 1e-3) -> None:
        """Raise :class:`InputError` unless ``shape``/``affine`` equal the model's grid."""
        shape = tuple(int(s) for s in shape)
        if shape != self.shape:
            raise InputError(
                f"{where}: grid {'x'.join(map(str, shape))} differs from the model's grid {'x'.join(map(str, self.shape))}"
            )
        if not np.allclose(np.asarray(affine, float), self.affine, atol=atol):
            raise InputError(f"{where}: affine differs from the model's grid (space {self.space}); resample the image first")

    def load_row(self, cohort, i: int):
        """Load row ``i`` of a cohort table (readable, finite, not all zero, on the model's grid).

        Any :class:`InputError` names the table, the row and the image.
        """
        from neurointerp.io import load_image

        where = f"{cohort.path} row {cohort.rows[i]}"
        try:
            vol = load_image(cohort.images[i], ndim=self.ndim)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from exc
        self.check_grid(vol.shape, vol.affine, where=f"{where}: {vol.path}")
        return vol

    def check_header(self, path, where: str, source: str | None = None) -> None:
        """Header-only (cheap) check that ``path`` is a readable NIfTI on the model's grid.

        ``where`` opens the message (e.g. ``cohort.csv row 3: img.nii.gz``); ``source`` (e.g.
        ``simulator model.pt``) is added in parentheses. A degenerate affine is named as such.
        """
        from neurointerp.io.headers import read_header

        try:
            head = read_header(path)  # orientation, qform/sform, units, dtype, size vs file
        except InputError as exc:
            text = str(exc)
            text = text[len(str(path)) + 2 :] if text.startswith(f"{path}: ") else text
            label = f"{where} ({source})" if source else where
            raise InputError(f"{label}: {text}") from exc
        shape = head.shape
        while len(shape) > self.ndim and shape[-1] == 1:
            shape = shape[:-1]
        label = f"{where} ({source})" if source else where
        self.check_grid(shape, head.affine, where=label)

    def normalise_array(self, data: np.ndarray) -> np.ndarray:
        """Intensity normalisation of arrays ``(..., *shape)`` on the full grid (float32)."""
        data = np.asarray(data, dtype=np.float32)
        if self.normalize == "none":
            return data
        axes = tuple(range(data.ndim - self.ndim, data.ndim))
        return _zscore(data, axes)

    def crop_tensor(self, x):
        """Crop a tensor or array ``(..., *shape)`` to the model input region."""
        index = (Ellipsis,) + tuple(slice(a, b) for a, b in self.crop)
        return x[index]

    def prepare(self, data, device=None):
        """Arrays on the full grid, ``(*shape)`` or ``(N, *shape)``, -> model input ``(N, 1, *model_shape)``."""
        import torch

        arr = np.asarray(data.detach().cpu().numpy() if hasattr(data, "detach") else data, dtype=np.float32)
        if arr.shape == self.shape:
            arr = arr[None]
        if arr.shape[1:] != self.shape:
            raise InputError(f"input of shape {arr.shape} does not hold images on the model's grid {self.shape}")
        arr = self.crop_tensor(self.normalise_array(arr))
        return torch.from_numpy(np.ascontiguousarray(arr)[:, None]).to(device or "cpu")

    def uncrop(self, maps, fill: float = 0.0) -> np.ndarray:
        """Maps on the model input ``(..., *model_shape)`` -> the full grid ``(..., *shape)``."""
        arr = np.asarray(maps.detach().cpu().numpy() if hasattr(maps, "detach") else maps)
        lead = arr.shape[: arr.ndim - self.ndim]
        out = np.full(lead + self.shape, fill, dtype=arr.dtype)
        out[(Ellipsis,) + tuple(slice(a, b) for a, b in self.crop)] = arr
        return out


def _zscore(data: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Per-image z-scores over the non-zero voxels (the brain); zero voxels stay zero.

    An image with no zero voxel (synthetic 2D images, unmasked volumes) is z-scored over all voxels.
    """
    mask = data != 0
    n = mask.sum(axis=axes, keepdims=True)
    full = n == np.prod([data.shape[a] for a in axes])
    mean = np.where(n > 0, (data * mask).sum(axis=axes, keepdims=True) / np.maximum(n, 1), 0.0)
    var = ((data - mean) ** 2 * mask).sum(axis=axes, keepdims=True) / np.maximum(n, 1)
    sd = np.sqrt(var)
    sd = np.where(sd > 0, sd, 1.0)
    z = (data - mean) / sd
    return np.where(mask | full, z, 0.0).astype(np.float32)


def _hemisphere_crop(shape: tuple[int, ...], affine: np.ndarray, hemisphere: str) -> list[tuple[int, int]]:
    crop = [(0, int(s)) for s in shape]
    if hemisphere == "both":
        return crop
    axis = lr_axis(affine, len(shape))
    n = int(shape[axis])
    half = n // 2
    if half < 1:
        raise InputError(f"grid {shape} is too small to split into hemispheres")
    # voxel index increasing along axis moves world x in the direction of the sign
    left_is_low = float(np.asarray(affine)[0, axis]) > 0
    low = (0, half)
    high = (n - half, n)
    crop[axis] = low if (hemisphere == "left") == left_is_low else high
    return crop
