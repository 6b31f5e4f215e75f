"""The 2D four-Gaussian cohorts of the papers, with their ground truth.

Two variants, each 32x32 images made of four Gaussians, one per 16x16 block
(A top-left, B top-right, C bottom-left, D bottom-right; B and C are the off-diagonal blocks):

Each Gaussian is confined to its block (the papers' code renders one 16x16 kernel per block).

``width`` -- papers/confounder-aware-saliency.txt §3.1
    Gaussians at the block centres with unit peak; every width sigma is drawn from U(2, 6)
    for group 0 and from U(4, 8) for group 1. The widths sigma_B and sigma_C of the
    off-diagonal blocks are the confounders (columns ``sigma_B``, ``sigma_C``); ground truth:
    all four blocks separate the groups, only A and D do so free of the confounders.

``magnitude`` -- papers/simulator-networks-jacobian.txt §4.1
    Gaussian centres jittered inside their blocks; the peak magnitude of the off-diagonal
    Gaussians is drawn from U(1, 5) for group 0 and U(4, 8) for group 1, of the diagonal ones
    from U(1, 6) for everyone; Gaussian noise with sd 0.002. Ground truth: the expected
    magnitude difference (E[U(4,8)] - E[U(1,5)] = 3) times the off-diagonal Gaussians, per
    subject and as the group mean.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError
from neurointerp.options.synth import GAUSSIAN_NOISE
from neurointerp.runs.context import runs_as

SIZE = 32
BLOCK = 16
BLOCKS = ("A", "B", "C", "D")  # A top-left, B top-right, C bottom-left, D bottom-right
OFF_DIAGONAL = (1, 2)
DIAGONAL = (0, 3)
_BLOCK_ORIGIN = np.array([[0, 0], [0, BLOCK], [BLOCK, 0], [BLOCK, BLOCK]], dtype=float)


@dataclass
class GaussianCohort:
    """Arrays of a generated cohort (images are ``(N, 32, 32)`` float32, rows x columns)."""

    images: np.ndarray
    labels: np.ndarray  # 0 / 1
    sigma: np.ndarray  # (N, 4) widths
    magnitude: np.ndarray  # (N, 4) peak values
    centres: np.ndarray  # (N, 4, 2) row, column
    truth: np.ndarray  # (N, 32, 32) per-subject ground-truth pattern
    group_truth: np.ndarray  # (32, 32)
    variant: str


def render(sigma: np.ndarray, magnitude: np.ndarray, centres: np.ndarray, blocks=(0, 1, 2, 3)) -> np.ndarray:
    """Render ``(N, 32, 32)`` images as the sum of the Gaussians of ``blocks``.

    Each Gaussian is drawn inside its own 16x16 block only (as the papers' code renders a
    16x16 kernel per block), so the blocks are independent: a wide Gaussian in block B never
    changes a pixel of block A.
    """
    r = np.arange(SIZE, dtype=np.float64)
    b = list(blocks)
    dr = r[None, None, :] - centres[:, b, 0, None]  # (N, k, 32)
    dc = r[None, None, :] - centres[:, b, 1, None]
    s2 = 2.0 * sigma[:, b] ** 2
    inside_r = (r[None, :] >= _BLOCK_ORIGIN[b, 0, None]) & (r[None, :] < _BLOCK_ORIGIN[b, 0, None] + BLOCK)  # (k, 32)
    inside_c = (r[None, :] >= _BLOCK_ORIGIN[b, 1, None]) & (r[None, :] < _BLOCK_ORIGIN[b, 1, None] + BLOCK)
    gr = np.exp(-(dr**2) / s2[..., None]) * inside_r[None]  # separable Gaussian, cut at its block
    gc = np.exp(-(dc**2) / s2[..., None]) * inside_c[None]
    return np.einsum("nk,nki,nkj->nij", magnitude[:, b], gr, gc)


def make_gaussians(variant: str = "width", n_per_group: int = 512, seed: int = 0, noise: float | None = None) -> GaussianCohort:
    """Generate a four-Gaussian cohort in memory (deterministic for a given seed)."""
    if variant not in ("width", "magnitude"):
        raise InputError(f"unknown variant '{variant}' (choose width or magnitude)")
    if n_per_group < 1:
        raise InputError("n-per-group must be at least 1")
    rng = np.random.default_rng(seed)
    n = 2 * n_per_group
    labels = np.repeat(np.array([0, 1]), n_per_group)
    centre_block = np.broadcast_to(_BLOCK_ORIGIN + (BLOCK - 1) / 2.0, (n, 4, 2)).copy()
    if variant == "width":
        lo = np.where(labels == 0, 2.0, 4.0)[:, None]
        sigma = lo + 4.0 * rng.random((n, 4))
        magnitude = np.ones((n, 4))
        centres = centre_block
        noise = GAUSSIAN_NOISE["width"] if noise is None else noise
    else:
        sigma = np.full((n, 4), 2.0)
        magnitude = np.empty((n, 4))
        magnitude[:, DIAGONAL] = rng.uniform(1.0, 6.0, size=(n, 2))
        lo = np.where(labels == 0, 1.0, 4.0)[:, None]
        magnitude[:, OFF_DIAGONAL] = lo + 4.0 * rng.random((n, 2))
        # jitter the centres inside their blocks, keeping 2 sigma away from the block edge
        margin = 4.0
        centres = _BLOCK_ORIGIN[None] + margin + (BLOCK - 1 - 2 * margin) * rng.random((n, 4, 2))
        noise = GAUSSIAN_NOISE["magnitude"] if noise is None else noise
    images = render(sigma, magnitude, centres)
    if noise > 0:
        images = images + rng.normal(0.0, noise, size=images.shape)
    if variant == "width":
        # discriminative but confounded: B and C; confounder-free: A and D (unit pattern)
        truth = render(sigma, np.ones_like(magnitude), centres, blocks=DIAGONAL)
    else:
        # expected magnitude difference between the groups at each off-diagonal Gaussian
        truth = render(sigma, np.full_like(magnitude, 3.0), centres, blocks=OFF_DIAGONAL)
    return GaussianCohort(
        images=images.astype(np.float32),
        labels=labels,
        sigma=sigma,
        magnitude=magnitude,
        centres=centres,
        truth=truth.astype(np.float32),
        group_truth=truth.mean(axis=0).astype(np.float32),
        variant=variant,
    )


def block_masks() -> dict[str, np.ndarray]:
    """Boolean ``(32, 32)`` masks of the diagonal (A, D) and off-diagonal (B, C) blocks."""
    masks = {}
    for name, blocks in (("diagonal", DIAGONAL), ("offdiagonal", OFF_DIAGONAL)):
        m = np.zeros((SIZE, SIZE), dtype=bool)
        for k in blocks:
            r0, c0 = _BLOCK_ORIGIN[k].astype(int)
            m[r0 : r0 + BLOCK, c0 : c0 + BLOCK] = True
        masks[name] = m
    return masks


@runs_as("synth gaussians")
def synth_gaussians(
    out: str | os.PathLike,
    variant: str = "width",
    n_per_group: int = 512,
    seed: int = 0,
    noise: float | None = None,
    force: bool = False,
) -> Path:
    """Write a four-Gaussian cohort: one NIfTI per image, ``cohort.csv`` and ``truth/``.

    Images are stored as ``32x32x1`` NIfTI with 1 mm pixels (rows along the first axis).
    Returns the path of the cohort table. Same arguments as ``neurointerp synth gaussians``.
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
        write_json,
        write_table,
    )
    from neurointerp.progress import track

    params = dict(variant=variant, n_per_group=n_per_group, seed=seed, noise=noise)
    cohort = make_gaussians(variant=variant, n_per_group=n_per_group, seed=seed, noise=noise)
    out = prepare_output_dir(out, force=force)
    write_dataset_description(out, f"neurointerp synth gaussians ({variant})", "four-Gaussian synthetic cohort", force=force)
    add_bidsignore(out, ["*_gaussians.nii.gz", "*_truth.nii.gz", "truth", "cohort.*"])
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    n = len(cohort.labels)
    width = len(str(n))
    rows, truth_rows = [], []
    for i in track(range(n), description=f"synth gaussians ({variant})", total=n):
        pid = f"g{i + 1:0{width}d}"
        img_path = derivative_path(out, pid, "gaussians", desc=variant)
        save_image(cohort.images[i][:, :, None], affine, img_path, force=force)
        truth_path = derivative_path(out, pid, "truth", desc=variant)
        save_image(cohort.truth[i][:, :, None], affine, truth_path, force=force)
        row = {"participant_id": pid, "image": str(img_path), "label": int(cohort.labels[i]), "truth": str(truth_path)}
        if variant == "width":  # the widths are the covariates (sigma_B, sigma_C: the confounders)
            row.update({f"sigma_{b}": round(float(cohort.sigma[i, k]), 6) for k, b in enumerate(BLOCKS)})
        rows.append(row)
        truth_rows.append(
            {
                "participant_id": pid,
                "label": int(cohort.labels[i]),
                **{f"sigma_{b}": round(float(cohort.sigma[i, k]), 6) for k, b in enumerate(BLOCKS)},
                **{f"magnitude_{b}": round(float(cohort.magnitude[i, k]), 6) for k, b in enumerate(BLOCKS)},
                **{f"centre_{b}_row": round(float(cohort.centres[i, k, 0]), 4) for k, b in enumerate(BLOCKS)},
                **{f"centre_{b}_col": round(float(cohort.centres[i, k, 1]), 4) for k, b in enumerate(BLOCKS)},
            }
        )
    frame = pd.DataFrame(rows)
    truth_dir = out / "truth"
    save_image(cohort.group_truth[:, :, None], affine, truth_dir / f"desc-{variant}_truth.nii.gz", force=force)
    for name, mask in block_masks().items():
        save_image(mask[:, :, None], affine, truth_dir / f"desc-{name}_mask.nii.gz", force=force, dtype=None)
    write_table(truth_dir / "subjects.tsv", pd.DataFrame(truth_rows), force=force)
    table = write_cohort(out / "cohort.csv", frame, image_columns=("image", "truth"), force=force)
    meaning = {
        "width": "truth = unit Gaussians of the confounder-free blocks A and D; sigma_B, sigma_C are the confounders",
        "magnitude": "truth = expected group difference (3 x off-diagonal Gaussians B and C), group 1 minus group 0",
    }[variant]
    write_json(
        truth_dir / "truth.json",
        provenance("synth gaussians", params, seed=seed, GroundTruth=meaning, Blocks="A top-left, B top-right, C bottom-left, D bottom-right (rows x columns)"),
        force=force,
    )
    return table
