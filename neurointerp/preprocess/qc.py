"""Quality control: template edges over the registered image, and agreement numbers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def qc_metrics(image: np.ndarray, mask: np.ndarray, template_t1: np.ndarray, template_mask: np.ndarray) -> dict:
    """Dice of the brain masks and NCC of intensities inside the template brain."""
    inter = float(np.logical_and(mask, template_mask).sum())
    dice = 2.0 * inter / max(1.0, float(mask.sum() + template_mask.sum()))
    a = image[template_mask].astype(np.float64)
    b = template_t1[template_mask].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    ncc = float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())) if a.size > 1 and (a * a).sum() > 0 and (b * b).sum() > 0 else 0.0
    return {"dice_brain_mask": round(dice, 4), "ncc_template": round(ncc, 4)}


def qc_figure(
    image: np.ndarray,
    template_t1: np.ndarray,
    template_mask: np.ndarray,
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """PNG: three orthogonal slices of the registered image (RAS grid) with template edges.

    Red: the template's brain outline; yellow: its grey/white-matter boundary (an iso-line at
    the Otsu level of the template inside its brain).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurointerp.io.atomic import atomic_path

    inside = template_t1[template_mask]
    level = _otsu(inside) if inside.size else 0.5
    centre = [int(v) for v in np.round(np.argwhere(template_mask).mean(axis=0))] if template_mask.any() else [s // 2 for s in image.shape]
    i, j, k = centre
    cuts = [
        ("sagittal", image[i].T, template_t1[i].T, template_mask[i].T),
        ("coronal", image[:, j].T, template_t1[:, j].T, template_mask[:, j].T),
        ("axial", image[:, :, k].T, template_t1[:, :, k].T, template_mask[:, :, k].T),
    ]
    vals = image[template_mask] if template_mask.any() else image.ravel()
    lo, hi = np.percentile(vals, [1, 99.5]) if vals.size else (0.0, 1.0)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    for ax, (name, img, tpl, msk) in zip(axes, cuts):
        ax.imshow(img, cmap="gray", origin="lower", vmin=lo, vmax=hi, interpolation="nearest")
        if msk.any():
            ax.contour(msk.astype(float), levels=[0.5], colors="red", linewidths=0.8)
            ax.contour(np.where(msk, tpl, 0.0), levels=[level], colors="yellow", linewidths=0.6)
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w = np.cumsum(hist)
    w2 = w[-1] - w
    m = np.cumsum(hist * centres)
    mu1 = m / np.maximum(w, 1)
    mu2 = (m[-1] - m) / np.maximum(w2, 1)
    between = w * w2 * (mu1 - mu2) ** 2
    return float(centres[int(np.argmax(between))])
