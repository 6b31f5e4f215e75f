"""Registration to the template at a coarse grid, and resampling onto the working grid.

The target grid is ~3 mm (64^3 over the brain), so the affine is estimated between the
template and the brain both resampled (anti-aliased) to ``resolution`` mm (default 3): a
three-level Mattes-MI affine (12, 6, 3 mm) from a centre-of-mass start. At 1 mm the same
registration costs about as much as SyN (FIELD-NOTES); at 3 mm it takes seconds and its
accuracy at the 64^3 target is the same (see ``benchmarks/preprocess.py``).

Transforms are written as ANTs composite files (``.h5``, LPS physical space, as ANTs always
uses): ``forward`` maps template-space points to native points, i.e. it resamples a native
image into template space; ``inverse`` takes template-space maps back to the native image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError
from neurointerp.preprocess.antsio import empty_grid, import_ants, resample_to, smooth_for, to_ants, voxel_sizes

REGISTRATIONS = ("affine", "rigid", "syn")

_LINEAR = dict(
    aff_metric="mattes",
    aff_sampling=32,
    aff_random_sampling_rate=0.25,
    aff_iterations=(500, 250, 100),
    aff_shrink_factors=(4, 2, 1),
    aff_smoothing_sigmas=(2, 1, 0),
)


def register(
    moving: np.ndarray,
    moving_affine: np.ndarray,
    fixed,
    kind: str,
    resolution: float,
    outprefix: str | os.PathLike,
    initial_transform: str | None = None,
) -> tuple[str, str]:
    """Register a native brain image to the ``fixed`` template (ANTs image); return (forward, inverse) files."""
    ants = import_ants()
    if kind not in REGISTRATIONS:
        raise InputError(f"registration '{kind}': choose one of {', '.join(REGISTRATIONS)}")
    mov = resample_to(to_ants(moving, moving_affine), float(resolution))
    kinds = {"affine": "Affine", "rigid": "Rigid", "syn": "SyN"}
    extra = {"reg_iterations": (40, 20, 0), "flow_sigma": 3, "total_sigma": 0} if kind == "syn" else {}
    result = ants.registration(
        fixed,
        mov,
        type_of_transform=kinds[kind],
        initial_transform=[initial_transform] if initial_transform else None,
        outprefix=str(outprefix),
        write_composite_transform=True,
        **_LINEAR,
        **extra,
    )
    fwd, inv = result["fwdtransforms"], result["invtransforms"]
    fwd = fwd[0] if isinstance(fwd, (list, tuple)) else fwd
    inv = inv[0] if isinstance(inv, (list, tuple)) else inv
    return str(fwd), str(inv)


def quick_affine(moving: np.ndarray, moving_affine: np.ndarray, fixed, resolution: float, outprefix) -> str:
    """A coarse affine (``.mat``) used to start brain extraction by template-mask propagation."""
    ants = import_ants()
    mov = resample_to(to_ants(moving, moving_affine), float(resolution))
    result = ants.registration(
        fixed,
        mov,
        type_of_transform="Affine",
        outprefix=str(outprefix),
        aff_metric="mattes",
        aff_sampling=32,
        aff_random_sampling_rate=0.25,
        aff_iterations=(500, 250),
        aff_shrink_factors=(2, 1),
        aff_smoothing_sigmas=(1, 0),
    )
    return str(result["fwdtransforms"][0])


def to_grid(data: np.ndarray, affine: np.ndarray, transform: str, shape, grid_affine: np.ndarray, interpolation: str = "linear") -> np.ndarray:
    """Resample a native array into template space on ``(shape, grid_affine)`` (anti-aliased)."""
    ants = import_ants()
    target_vox = float(np.max(voxel_sizes(grid_affine)))
    moving = smooth_for(to_ants(data, affine), target_vox)
    out = ants.apply_transforms(empty_grid(shape, grid_affine), moving, [transform], interpolator=interpolation, defaultvalue=0)
    return np.asarray(out.numpy(), dtype=np.float32)


def to_native(data: np.ndarray, grid_affine: np.ndarray, inverse: str, shape, affine: np.ndarray, interpolation: str = "linear") -> np.ndarray:
    """Take a template-space map back to a native grid with the inverse transform."""
    ants = import_ants()
    out = ants.apply_transforms(empty_grid(shape, affine), to_ants(data, grid_affine), [inverse], interpolator=interpolation, defaultvalue=0)
    return np.asarray(out.numpy(), dtype=np.float32)


def map_points(points_ras: np.ndarray, transform: str) -> np.ndarray:
    """Apply an ANTs transform file to RAS world points ``(n, 3)`` (ANTs point convention).

    ANTs maps points in the opposite direction to images: the ``inverse`` file (template ->
    native for images) sends native points to template space, and ``forward`` sends template
    points to native space.
    """
    import pandas as pd

    ants = import_ants()
    pts = np.asarray(points_ras, dtype=np.float64)
    lps = pts * np.array([-1.0, -1.0, 1.0])
    frame = pd.DataFrame(lps, columns=["x", "y", "z"])
    out = ants.apply_transforms_to_points(3, frame, [str(transform)])
    return out[["x", "y", "z"]].to_numpy() * np.array([-1.0, -1.0, 1.0])


def transform_names(root: Path, participant_id: str, session: str | None, space: str) -> tuple[Path, Path]:
    """BIDS-style names (as fMRIPrep): ``..._from-T1w_to-<space>_mode-image_xfm.h5`` and its inverse."""
    from neurointerp.io import derivative_path

    folder = derivative_path(root, participant_id, "T1w", session=session).parent
    stem = f"sub-{participant_id}" + (f"_ses-{session}" if session else "")
    return folder / f"{stem}_from-T1w_to-{space}_mode-image_xfm.h5", folder / f"{stem}_from-{space}_to-T1w_mode-image_xfm.h5"
