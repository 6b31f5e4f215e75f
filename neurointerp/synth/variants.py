"""A small cohort from one real image: random smooth deformations and head poses.

Used by the spike-in tests and benchmark to turn the one whole-head T1 that an installed package
ships (pydeface's ``mean_reg2mean.nii.gz``) into several distinct "participants". Variant ``i``
is ``I_i(x) = I(phi_i^-1(R_i^-1 (x - c - t_i) + c))``: a random anatomical deformation
``phi_i`` (translation bumps of :func:`~neurointerp.synth.deformation.random_smooth_field`
inside the head) and a rigid pose (rotation ``R_i`` about the image's centre of mass ``c``,
translation ``t_i``), on the source grid -- optionally coarsened first (anti-aliased) -- stored
in the source's dtype (integers rounded), with optional Rician noise.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def image_variants(
    image: str | os.PathLike,
    out: str | os.PathLike,
    n: int = 4,
    voxel_size: float | None = None,
    max_rotation: float = 6.0,
    max_translation: float = 6.0,
    n_bumps: int = 12,
    amplitude: float = 1.5,
    noise: float = 0.0,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write ``n`` variants ``sub-v<k>/anat/sub-v<k>_T1w.nii.gz`` and ``cohort.csv``; return the table."""
    import nibabel as nib
    import pandas as pd
    from scipy import ndimage

    from neurointerp.atlases import grid_points
    from neurointerp.io import derivative_path, prepare_output_dir, write_cohort
    from neurointerp.synth.deformation import random_smooth_field, rotation_matrix

    img = nib.load(str(image))
    data = np.asarray(img.dataobj, dtype=np.float64).reshape(img.shape[:3])
    affine = np.asarray(img.affine, dtype=np.float64)
    src_dtype = img.get_data_dtype()
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    shape = data.shape
    if voxel_size is not None and voxel_size > zooms.max() * 1.01:
        sigma = np.sqrt(np.maximum(voxel_size**2 - zooms**2, 0.0)) / 2.3548 / zooms
        smooth = ndimage.gaussian_filter(data, sigma)
        shape = tuple(int(np.floor((s - 1) * z / voxel_size)) + 1 for s, z in zip(data.shape, zooms))
        scale = np.diag([voxel_size / z for z in zooms] + [1.0])
        out_affine = affine @ scale
    else:
        smooth, out_affine = data, affine
    coeffs = ndimage.spline_filter(smooth, order=3, mode="mirror")
    inv_src = np.linalg.inv(affine)
    head = smooth > np.percentile(smooth, 75)
    com = np.array(ndimage.center_of_mass(head))
    centre = affine[:3, :3] @ com + affine[:3, 3]
    low, high = centre - 50.0, centre + 50.0
    points = grid_points(shape, out_affine)
    rng = np.random.default_rng(seed)
    out = prepare_output_dir(out, force=force)
    rows = []
    width = max(2, len(str(n)))
    for k in range(1, n + 1):
        field = random_smooth_field(rng, low, high, n_bumps=n_bumps, amplitude=amplitude)
        rot = rotation_matrix(rng.uniform(-max_rotation, max_rotation, size=3))
        trans = rng.uniform(-max_translation, max_translation, size=3)
        anatomy = (points - centre - trans) @ rot + centre  # R^T (x - c - t) + c
        src = field.inverse(anatomy)
        vox = (src @ inv_src[:3, :3].T + inv_src[:3, 3]).T
        values = ndimage.map_coordinates(coeffs, vox, order=3, mode="constant", cval=0.0, prefilter=False)
        values = np.clip(values, data.min(), data.max())
        if noise > 0:
            sd = noise * float(np.percentile(data[data > 0], 95))
            values = np.hypot(values + rng.normal(0.0, sd, values.shape), rng.normal(0.0, sd, values.shape))
        values = values.reshape(shape)
        if np.issubdtype(src_dtype, np.integer):
            info = np.iinfo(src_dtype)
            values = np.clip(np.rint(values), info.min, info.max)
        pid = f"v{k:0{width}d}"
        path = derivative_path(out, pid, "T1w")
        path.parent.mkdir(parents=True, exist_ok=True)
        new = nib.Nifti1Image(values.astype(src_dtype), out_affine)
        new.header.set_xyzt_units("mm", "sec")
        nib.save(new, str(path))
        rows.append({"participant_id": pid, "image": str(path)})
    return write_cohort(out / "cohort.csv", pd.DataFrame(rows), force=force)
