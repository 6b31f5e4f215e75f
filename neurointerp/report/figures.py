"""Orthogonal-slice figures of volumes, optionally with a signed overlay (matplotlib, Agg)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np


def _canonical(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorder/flip axes so the array is RAS (for display); no resampling."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.apply_orientation(data, ornt)


def _slices(vol: np.ndarray, at: Sequence[int] | None = None) -> list[np.ndarray]:
    i, j, k = at if at is not None else [s // 2 for s in vol.shape]
    # sagittal (y-z), coronal (x-z), axial (x-y); transposed so superior/anterior is up
    return [vol[i, :, :].T, vol[:, j, :].T, vol[:, :, k].T]


def ortho_figure(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
    path: str | os.PathLike,
    at_world: Sequence[float] | None = None,
    overlay_label: str = "",
) -> Path:
    """Write a PNG with one row per panel ``(title, data, affine, overlay-or-None)``.

    Volumes are shown in RAS order (radiological flips undone) at their centre, or at the voxel
    nearest to ``at_world`` (mm). Overlays are drawn with a symmetric diverging colour map.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurointerp.io.atomic import atomic_path

    fig, axes = plt.subplots(len(panels), 3, figsize=(7.5, 2.6 * len(panels)), squeeze=False)
    for row, (title, data, affine, overlay) in enumerate(panels):
        vol = _canonical(np.asarray(data, dtype=np.float32), affine)
        at = None
        if at_world is not None:
            import nibabel as nib

            ornt = nib.orientations.io_orientation(affine)
            canon_aff = affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
            ijk = np.linalg.solve(canon_aff, np.r_[np.asarray(at_world, float), 1.0])[:3]
            at = [int(np.clip(round(v), 0, s - 1)) for v, s in zip(ijk, vol.shape)]
        lo, hi = np.percentile(vol[vol > 0], [1, 99.5]) if np.any(vol > 0) else (0.0, 1.0)
        ov_sl = None
        if overlay is not None:
            ov = _canonical(np.asarray(overlay, dtype=np.float32), affine)
            vmax = float(np.max(np.abs(ov))) or 1.0
            ov_sl = _slices(ov, at)
        for col, sl in enumerate(_slices(vol, at)):
            ax = axes[row, col]
            ax.imshow(sl, cmap="gray", origin="lower", vmin=lo, vmax=hi, interpolation="nearest")
            if ov_sl is not None:
                o = np.ma.masked_where(np.abs(ov_sl[col]) < 0.05 * vmax, ov_sl[col])
                im = ax.imshow(o, cmap="RdBu_r", origin="lower", vmin=-vmax, vmax=vmax, alpha=0.8, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(title, fontsize=8)
        if ov_sl is not None:
            cb = fig.colorbar(im, ax=axes[row, :].tolist(), shrink=0.8, pad=0.01)
            cb.set_label(overlay_label, fontsize=7)
    for col, name in enumerate(("sagittal", "coronal", "axial")):
        axes[0, col].set_title(name, fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
