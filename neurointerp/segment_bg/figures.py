"""Figures of the background-removal pipeline (the paper's Figs. 4, 6, 7) and the metrics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def pipeline_figure(panels: list[tuple[str, np.ndarray, str]], path: str | os.PathLike, ncols: int = 4) -> Path:
    """One 2D slice per panel ``(title, slice, kind)``; kind ``image``, ``labels``, ``mask`` or ``map``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurointerp.io.atomic import atomic_path

    nrows = (len(panels) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, data, kind) in zip(axes.ravel(), panels):
        d = np.asarray(data).T  # first voxel axis left-right, second up
        if kind == "labels":
            ax.imshow(d, origin="lower", cmap="viridis", vmin=0, vmax=3, interpolation="nearest")
        elif kind == "mask":
            ax.imshow(d, origin="lower", cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        elif kind == "map":
            ax.imshow(d, origin="lower", cmap="magma", interpolation="nearest")
        else:
            ax.imshow(d, origin="lower", cmap="gray", interpolation="nearest")
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def dice_figure(summary, path: str | os.PathLike) -> Path:
    """Bars of Dice per class, without vs with background removal (from ``metrics_summary.tsv``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurointerp.io.atomic import atomic_path

    classes = [c for c in ("WM", "GM", "CSF", "brain") if c in set(summary["class"])]
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    x = np.arange(len(classes))
    for k, cond in enumerate(("without", "with")):
        sub = summary[summary["condition"] == cond].set_index("class")
        vals = [float(sub.loc[c, "dice"]) if c in sub.index else np.nan for c in classes]
        ax.bar(x + (k - 0.5) * 0.38, vals, 0.38, label=f"{cond} GBP background removal")
    mask = summary[summary["class"] == "brain_mask"]
    if len(mask):
        ax.axhline(float(mask["dice"].iloc[0]), color="k", ls="--", lw=1, label="positioned mask vs true mask")
    ax.set_xticks(x, classes)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("Dice")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path
