"""Display helpers: mirroring a one-hemisphere map, PNG figures of group maps (nilearn)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def mirror_map(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Show a one-hemisphere map on both sides: empty voxels take the value at ``(-x, y, z)``.

    Mirroring is across the world midsagittal plane ``x = 0`` (template space), by linear
    interpolation; voxels that already hold a value keep it.
    """
    from scipy import ndimage

    from neurointerp.atlases import grid_points

    data = np.asarray(data, dtype=np.float32)
    pts = grid_points(data.shape, affine)
    pts[:, 0] *= -1.0
    vox = np.linalg.solve(np.asarray(affine, dtype=np.float64), np.c_[pts, np.ones(len(pts))].T)[:3]
    mirrored = ndimage.map_coordinates(data, vox, order=1, mode="constant", cval=0.0).reshape(data.shape)
    return np.where(data != 0, data, mirrored).astype(np.float32)


def map_figure(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, title: str, threshold: float | None = None, kind: str = "mosaic") -> Path:
    """Write a PNG of a map: ``mosaic`` (slice mosaic over the template) or ``glass`` (glass brain)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import plotting

    from neurointerp.io.atomic import atomic_path

    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    vmax = float(np.max(np.abs(data))) or 1.0
    path = Path(path)
    with atomic_path(path) as tmp:
        if kind == "glass":
            display = plotting.plot_glass_brain(img, threshold=threshold if threshold else 1e-6, colorbar=True, plot_abs=False, vmax=vmax, title=title, display_mode="lyrz")
        else:
            display = plotting.plot_stat_map(
                img, threshold=threshold if threshold else None, display_mode="mosaic" if min(data.shape) >= 8 else "ortho",
                colorbar=True, vmax=vmax, title=title, draw_cross=False,
            )
        display.savefig(str(tmp), dpi=80)
        display.close()
    plt.close("all")
    return path
