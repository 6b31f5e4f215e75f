"""Synthetic rodent brain MRI for ``segment-bg`` (papers/gbp-background-removal-segmentation.txt §4).

No rodent data can be downloaded, so ``synth rodent`` draws acquisitions that have what the
paper's data has (§4.1-4.3, Figs. 2-4):

* a stack of coronal slices (slices along the third voxel axis) of a brain-like shape: an
  oval, flatter ventrally, with a dorsal midline fissure, whose size changes from slice to
  slice and from animal to animal;
* four tissue classes -- 0 background, 1 white matter (corpus callosum / external capsule
  band and internal capsules), 2 grey matter (the rest of the brain), 3 CSF (lateral
  ventricles, third ventricle, midline fissure) -- with T2-like (b0 SE-EPI) intensities
  CSF > GM > WM, partial-volume blur, a smooth bias field and Rician noise;
* bright artefacts outside the brain (muscle/skin arcs and bright blobs such as eyes or fat,
  as in Fig. 4), never touching the brain;
* a random in-plane translation of each acquisition (the animal is not always at the same
  place in the scanner), recorded in the cohort table.

Per animal the output holds the acquired image (with artefacts), the "sectioned" image
(acquired image times the true brain mask: what the paper trains on), the tissue labels and
the brain mask, all on the same grid with the same affine (voxel size 0.375 x 0.375 x 0.5 mm
as in §4.1 by default).

Layout::

    <out>/cohort.csv, train.csv, test.csv       (80 % / 20 % of the animals, §3.1)
    <out>/sub-<id>/anat/sub-<id>_T2w.nii.gz                (acquired, with artefacts)
    <out>/sub-<id>/anat/sub-<id>_desc-masked_T2w.nii.gz    (sectioned: brain only)
    <out>/sub-<id>/anat/sub-<id>_dseg.nii.gz               (0 bg, 1 WM, 2 GM, 3 CSF)
    <out>/sub-<id>/anat/sub-<id>_desc-brain_mask.nii.gz
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError
from neurointerp.runs.context import runs_as

CLASSES = ("background", "WM", "GM", "CSF")
INTENSITY = {1: 0.45, 2: 0.65, 3: 1.0}  # T2-like b0: CSF brightest, WM darkest
VOXEL_SIZE = (0.375, 0.375, 0.5)


@dataclass
class RodentAnimal:
    """One synthetic acquisition (arrays are ``(nx, ny, nz)``)."""

    image: np.ndarray  # float32, with artefacts
    labels: np.ndarray  # uint8 0..3
    mask: np.ndarray  # uint8 0/1
    artefacts: np.ndarray  # uint8 0/1, voxels where an artefact was drawn
    shift: tuple[float, float]  # in-plane translation in voxels (axis 0, axis 1)
    scale: float


def _smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(a, sigma=(sigma, sigma, 0.0), mode="constant")


def make_animal(
    rng: np.random.Generator,
    shape: tuple[int, int, int] = (64, 64, 16),
    max_shift: float = 6.0,
    artefacts: bool = True,
    noise: float = 0.03,
    bias: float = 0.1,
    scale_sd: float = 0.04,
) -> RodentAnimal:
    """Draw one animal's acquisition. ``max_shift`` is in voxels (uniform in +-max_shift per axis)."""
    nx, ny, nz = shape
    scale = float(np.clip(1.0 + scale_sd * rng.standard_normal(), 0.85, 1.15))
    shift = (float(rng.uniform(-max_shift, max_shift)), float(rng.uniform(-max_shift, max_shift)))
    cx, cy = (nx - 1) / 2.0 + shift[0], (ny - 1) / 2.0 + shift[1]
    x = np.arange(nx, dtype=np.float64)[:, None]
    y = np.arange(ny, dtype=np.float64)[None, :]
    # per-animal shape harmonics (a few percent of the radius)
    harm = rng.normal(0.0, 0.025, size=(3, 2))
    labels = np.zeros(shape, dtype=np.uint8)
    for k in range(nz):
        t = (k + 0.5) / nz  # rostral (0) to caudal (1)
        profile = np.sqrt(max(0.0, 1.0 - 0.75 * (2.0 * t - 1.0) ** 2))  # smaller at both ends
        a = 0.34 * nx * scale * (0.55 + 0.45 * profile)  # half-width (left-right, axis 0)
        b = 0.25 * ny * scale * (0.6 + 0.4 * profile)  # half-height (dorso-ventral, axis 1)
        u, v = (x - cx) / a, (y - cy) / b
        theta = np.arctan2(v, u)
        rho = np.sqrt(u**2 + v**2)
        # superellipse-ish outline, flatter ventrally (v < 0), small per-animal harmonics
        edge = 1.0 + 0.08 * np.cos(2 * theta) * (v < 0) + sum(harm[m, 0] * np.cos((m + 2) * theta) + harm[m, 1] * np.sin((m + 2) * theta) for m in range(3))
        brain = rho <= edge
        r = rho / edge  # 0 at the centre, 1 at the outline
        lab = np.where(brain, 2, 0).astype(np.uint8)
        # white matter: a band following the dorsal outline (corpus callosum + external capsule)
        dorsal = np.sin(theta) > -0.35
        band = brain & dorsal & (r > 0.52) & (r < 0.64)
        # internal capsules: two small ovals, ventro-lateral
        for side in (-1, 1):
            ic = ((u - side * 0.42) / 0.14) ** 2 + ((v + 0.15) / 0.22) ** 2 <= 1.0
            band |= brain & ic
        lab[band] = 1
        # CSF: lateral ventricles (paired small ovals), third ventricle, dorsal midline fissure
        csf = np.zeros_like(brain)
        vsize = 0.6 + 0.4 * profile
        for side in (-1, 1):
            csf |= ((u - side * 0.2) / (0.09 * vsize)) ** 2 + ((v - 0.22) / (0.16 * vsize)) ** 2 <= 1.0
        csf |= (np.abs(u) < 0.035) & (v > -0.45) & (v < 0.05)
        csf |= (np.abs(u) < 0.05) & (r > 0.8) & (v > 0)
        lab[brain & csf] = 3
        labels[:, :, k] = lab
    mask = (labels > 0).astype(np.uint8)
    img = np.zeros(shape, dtype=np.float64)
    for c, val in INTENSITY.items():
        img[labels == c] = val
    img = _smooth(img, 0.6)
    # smooth multiplicative bias field
    gx = (np.arange(nx) / nx - 0.5)[:, None, None]
    gy = (np.arange(ny) / ny - 0.5)[None, :, None]
    cb = rng.normal(0.0, 1.0, size=2)
    img *= 1.0 + bias * (cb[0] * gx + cb[1] * gy)
    art = np.zeros(shape, dtype=bool)
    if artefacts:
        img, art = _draw_artefacts(rng, img, mask, cx, cy, shape)
    # Rician noise (magnitude of a complex signal with Gaussian noise)
    re = img + noise * rng.standard_normal(shape)
    im = noise * rng.standard_normal(shape)
    img = np.sqrt(re**2 + im**2)
    return RodentAnimal(image=img.astype(np.float32), labels=labels, mask=mask, artefacts=art.astype(np.uint8), shift=shift, scale=scale)


def _draw_artefacts(rng, img, mask, cx, cy, shape):
    """Bright structures outside the brain: arcs of muscle/skin and blobs (eyes, fat, coil)."""
    from scipy.ndimage import binary_dilation, distance_transform_edt

    nx, ny, nz = shape
    x = np.arange(nx, dtype=np.float64)[:, None]
    y = np.arange(ny, dtype=np.float64)[None, :]
    keep_out = np.stack([binary_dilation(mask[:, :, k], iterations=2) for k in range(nz)], axis=-1)
    art_img = np.zeros(shape, dtype=np.float64)
    # an arc of muscle/skin 3-6 voxels outside the brain, over part of the outline
    ang0 = rng.uniform(0, 2 * np.pi)
    span = rng.uniform(0.6, 1.4) * np.pi
    thick = rng.uniform(1.5, 3.0)
    level = rng.uniform(0.6, 0.9)
    for k in range(nz):
        if not mask[:, :, k].any():
            continue
        d = distance_transform_edt(~mask[:, :, k].astype(bool))
        theta = np.mod(np.arctan2(y - cy, x - cx) - ang0, 2 * np.pi)
        arc = (d > 3) & (d <= 3 + thick) & (theta < span)
        art_img[:, :, k][arc] = level
    # 2-3 bright blobs outside the brain (brighter than any tissue)
    for _ in range(int(rng.integers(2, 4))):
        for _try in range(20):
            bx, by = rng.uniform(0.05, 0.95) * nx, rng.uniform(0.05, 0.95) * ny
            rx, ry = rng.uniform(0.04, 0.08) * nx, rng.uniform(0.04, 0.08) * ny
            blob = ((x - bx) / rx) ** 2 + ((y - by) / ry) ** 2 <= 1.0
            if not np.any(blob[:, :, None] & keep_out):
                break
        else:
            continue
        z0, z1 = sorted(rng.integers(0, nz + 1, size=2))
        z1 = max(z1, z0 + max(2, nz // 2))
        val = rng.uniform(1.1, 1.6)
        for k in range(z0, min(z1, nz)):
            art_img[:, :, k][blob] = val
    art_img[keep_out] = 0.0
    art = art_img > 0
    art_img = _smooth(art_img, 0.6)
    art_img[keep_out] = 0.0
    return img + art_img, art


def grid_affine(shape: tuple[int, int, int], voxel_size=VOXEL_SIZE) -> np.ndarray:
    """RAS affine with the given voxel size, the grid centred on the origin."""
    aff = np.diag([float(voxel_size[0]), float(voxel_size[1]), float(voxel_size[2]), 1.0])
    aff[:3, 3] = -aff[:3, :3] @ ((np.asarray(shape, dtype=float) - 1) / 2.0)
    return aff


@runs_as("synth rodent")
def synth_rodent(
    out: str | os.PathLike,
    n_animals: int = 10,
    shape: tuple[int, int, int] = (64, 64, 16),
    voxel_size: tuple[float, float, float] = VOXEL_SIZE,
    max_shift: float = 6.0,
    artefacts: bool = True,
    noise: float = 0.03,
    test_fraction: float = 0.2,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write a synthetic rodent cohort and return the path of ``cohort.csv``.

    Parameters
    ----------
    out
        Output folder (created; must be empty unless ``force``).
    n_animals
        Number of animals (one acquisition each).
    shape
        Grid ``(nx, ny, n_slices)``; slices are along the third axis.
    voxel_size
        Voxel size in mm (default 0.375 x 0.375 x 0.5, §4.1).
    max_shift
        Largest in-plane translation in voxels (uniform in +-max_shift along each axis).
    artefacts
        Draw bright artefacts outside the brain (Fig. 4).
    noise
        Rician noise sd (tissue intensities are 0.45 WM, 0.65 GM, 1.0 CSF).
    test_fraction
        Share of the animals in ``test.csv`` (the rest in ``train.csv``; §3.1 uses 20 %).
    seed
        Random seed; the output is identical for the same seed.
    """
    import pandas as pd

    from neurointerp.io import (
        add_bidsignore,
        derivative_path,
        prepare_output_dir,
        provenance,
        save_image,
        write_cohort,
        write_dataset_description,
        write_dseg_tsv,
        write_sidecar,
    )

    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape[:2]) < 16 or shape[2] < 1:
        raise InputError(f"synth rodent: shape {shape}: need nx, ny >= 16 and at least one slice")
    if n_animals < 2:
        raise InputError(f"synth rodent: n-animals {n_animals}: need at least 2 (training and test)")
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"synth rodent: test-fraction {test_fraction}: must be in (0, 1)")
    if max_shift < 0 or max_shift > min(shape[:2]) / 6:
        raise InputError(f"synth rodent: max-shift {max_shift}: must be in [0, {min(shape[:2]) / 6:g}] voxels for a {shape[0]}x{shape[1]} grid")
    out = prepare_output_dir(out, force=force)
    # a BIDS derivative dataset (images with their truth: tissue labels, brain masks); the tables are not BIDS
    write_dataset_description(out, "neurointerp synth rodent", "2D-slice rodent T2w phantoms with tissue labels and brain masks", force=force)
    add_bidsignore(out, ["cohort.*", "train.*", "test.*"])
    write_dseg_tsv(out, dict(enumerate(CLASSES)), force=force)  # the labels of every sub-*_dseg.nii.gz
    affine = grid_affine(shape, voxel_size)
    rng = np.random.default_rng(seed)
    params = dict(n_animals=n_animals, shape=list(shape), voxel_size=list(voxel_size), max_shift=max_shift, artefacts=artefacts, noise=noise, test_fraction=test_fraction)
    rows = []
    width = max(2, len(str(n_animals)))
    for i in range(n_animals):
        pid = f"rat{i + 1:0{width}d}"
        a = make_animal(rng, shape=shape, max_shift=max_shift, artefacts=artefacts, noise=noise)
        paths = {
            "image": derivative_path(out, pid, "T2w"),
            "masked": derivative_path(out, pid, "T2w", desc="masked"),
            "labels": derivative_path(out, pid, "dseg"),
            "mask": derivative_path(out, pid, "mask", desc="brain"),
        }
        save_image(a.image, affine, paths["image"], force=force)
        save_image(a.image * a.mask, affine, paths["masked"], force=force)
        save_image(a.labels, affine, paths["labels"], force=force, dtype=np.uint8)
        save_image(a.mask, affine, paths["mask"], force=force, dtype=np.uint8)
        rec = provenance("synth rodent", params, seed=seed, Animal=pid, ShiftVoxels=list(a.shift), Scale=a.scale, Classes={str(k): v for k, v in enumerate(CLASSES)})
        write_sidecar(paths["image"], rec, force=force, root=out, skull_stripped=False)
        write_sidecar(paths["masked"], {"Description": "the T2w image with everything outside the brain mask set to zero"}, force=force, root=out,
                      sources=[paths["image"], paths["mask"]], skull_stripped=True)
        rows.append({"participant_id": pid, **{k: str(v) for k, v in paths.items()}, "shift_x": round(a.shift[0], 4), "shift_y": round(a.shift[1], 4), "scale": round(a.scale, 4)})
    frame = pd.DataFrame(rows)
    n_test = max(1, int(round(test_fraction * n_animals)))
    cols = ["image", "masked", "labels", "mask"]
    table = write_cohort(out / "cohort.csv", frame, image_columns=cols, force=force)
    write_cohort(out / "train.csv", frame.iloc[: n_animals - n_test], image_columns=cols, force=force)
    write_cohort(out / "test.csv", frame.iloc[n_animals - n_test :], image_columns=cols, force=force)
    return table
