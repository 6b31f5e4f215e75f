"""Batched, seeded data augmentation on the device: left-right flip, small rotations and shifts.

papers/confounder-aware-saliency.txt §3.2: random shifts within one voxel, rotations within one
degree about every axis, optional left-right flipping. Shifts and rotations are one resampling
(``affine_grid`` + ``grid_sample``, linear interpolation, border values outside the grid) per
batch, so augmentation costs one interpolation per sample, not a Python loop over voxels.
Random numbers come from a CPU ``torch.Generator`` passed in by the caller, so a run is
repeatable for a seed, on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Augmentation:
    """Augmentation settings: ``shift`` (whole voxels), ``rotation`` (degrees), ``flip`` (left-right)."""

    shift: float = 1.0
    rotation: float = 1.0
    flip: bool = False
    lr_axis: int = 0

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.rotation > 0 or self.flip

    def to_dict(self) -> dict:
        return {"shift": float(self.shift), "rotation": float(self.rotation), "flip": bool(self.flip)}


def _rotation_matrix(angles: torch.Tensor, ndim: int) -> torch.Tensor:
    """``(N, ndim, ndim)`` rotation matrices from angles in radians (1 per sample in 2D, 3 in 3D)."""
    n = angles.shape[0]
    if ndim == 2:
        c, s = torch.cos(angles[:, 0]), torch.sin(angles[:, 0])
        return torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1)
    out = torch.eye(3, dtype=angles.dtype).repeat(n, 1, 1)
    for k, (i, j) in enumerate(((1, 2), (0, 2), (0, 1))):  # about axis 0, 1, 2
        c, s = torch.cos(angles[:, k]), torch.sin(angles[:, k])
        r = torch.eye(3, dtype=angles.dtype).repeat(n, 1, 1)
        r[:, i, i] = c
        r[:, i, j] = -s
        r[:, j, i] = s
        r[:, j, j] = c
        out = r @ out
    return out


def random_theta(n: int, shape: tuple[int, ...], shift: float, rotation: float, generator: torch.Generator) -> torch.Tensor:
    """``(N, ndim, ndim + 1)`` matrices for ``affine_grid``: a random rotation (uniform within
    ``rotation`` degrees about each axis) and a random whole-voxel shift (``-s..s`` voxels along each
    axis, ``s = floor(shift)``), in voxel units about the grid centre."""
    ndim = len(shape)
    n_angles = 1 if ndim == 2 else 3
    angles = (torch.rand(n, n_angles, generator=generator, dtype=torch.float64) * 2 - 1) * math.radians(rotation)
    # whole-voxel shifts: a fractional shift interpolates, i.e. blurs, and would make training
    # images smoother than the images the model is applied to
    whole = int(math.floor(shift + 1e-9))
    t = torch.randint(-whole, whole + 1, (n, ndim), generator=generator).to(torch.float64)
    r = _rotation_matrix(angles, ndim)
    size = torch.tensor(shape, dtype=torch.float64)
    d = torch.diag(2.0 / size)
    d_inv = torch.diag(size / 2.0)
    a = d @ r @ d_inv  # normalised coordinates, array axis order
    b = (t * (2.0 / size))  # (N, ndim)
    # affine_grid orders coordinates (x, y, z) = (last axis, ..., first axis)
    a = a.flip(1).flip(2)
    b = b.flip(1)
    return torch.cat([a, b[:, :, None]], dim=2).float()


def augment_batch(x: torch.Tensor, aug: Augmentation, generator: torch.Generator, crop=None) -> torch.Tensor:
    """Augment a batch ``(N, C, *shape)`` on the full grid; ``crop`` (a function) is applied after
    the flip and before the rotation/shift (single-hemisphere models)."""
    n = x.shape[0]
    if aug.flip:
        mask = torch.rand(n, generator=generator) < 0.5
        if bool(mask.any()):
            x = x.clone()
            idx = mask.nonzero()[:, 0].to(x.device)
            x[idx] = x[idx].flip(2 + aug.lr_axis)
    if crop is not None:
        x = crop(x)
    if aug.shift > 0 or aug.rotation > 0:
        shape = tuple(x.shape[2:])
        theta = random_theta(n, shape, aug.shift, aug.rotation, generator).to(x.device)
        size = (n, x.shape[1], *shape)
        grid = torch.nn.functional.affine_grid(theta, size, align_corners=False)
        x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    elif crop is not None:
        x = x.contiguous()
    return x
