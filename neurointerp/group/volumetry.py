"""Regional grey-matter volumetry (simulator-networks paper §4.3, Fig. 7): ANTs Atropos tissue
segmentation of preprocessed (template-space) T1 images, grey-matter volume per atlas region,
and a GLM of the group difference with the same design (e.g. age and sex as covariates).

Atropos runs per image (k-means initialisation with 3 classes ordered by intensity: CSF, GM,
WM; an MRF prior; a constant random seed so that results repeat), inside the brain mask or
``ants.get_mask``. The GM volume of a
region is the sum of the GM posterior probabilities times the voxel volume (mm^3). Subjects are
processed one at a time; only the ``N x regions`` volume table is kept.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError, NeurointerpError

INIT = "Kmeans[3]"  # with r=0 (constant seed) Atropos is repeatable; its default seeds randomly


@contextlib.contextmanager
def _private_tempdir():
    """ANTsPy's Atropos writes its posteriors to the default temp folder and never removes them:
    point ``tempfile`` at a private folder for the call and delete it afterwards."""
    old = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="neurointerp-atropos-") as tmp:
        tempfile.tempdir = tmp
        try:
            yield tmp
        finally:
            tempfile.tempdir = old


def segment_grey_matter(image: str | os.PathLike, mask: np.ndarray | None = None, mrf: float = 0.2, iterations: int = 5) -> np.ndarray:
    """Grey-matter posterior probability (float32, the image's voxel order) of a T1 image.

    ``mask`` (boolean, the image's grid) restricts the segmentation, default ``ants.get_mask``.
    """
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", os.environ.get("SLURM_CPUS_PER_TASK", "1"))
    import ants

    from neurointerp.io.nifti import load_image

    from neurointerp.preprocess.antsio import to_ants

    vol = load_image(image)  # validates (header rules, NaN, 4D, corrupt) with one line naming the file
    img = to_ants(vol.data, vol.affine)  # the image as we read it (not ITK's own reading of the header)
    if mask is None:
        mimg = ants.get_mask(img)
    else:
        if tuple(mask.shape) != tuple(vol.shape):
            raise InputError(f"{image}: grid {vol.shape} differs from the mask grid {mask.shape}")
        mimg = img.new_image_like(np.asarray(mask, dtype=np.float32))
    dim = img.dimension
    with _private_tempdir():
        try:
            seg = ants.atropos(a=img, x=mimg, i=INIT, m=f"[{mrf},{'x'.join(['1'] * dim)}]", c=f"[{int(iterations)},0]", r=0)  # r=0: constant seed
        except Exception as exc:
            raise NeurointerpError(f"{image}: Atropos segmentation failed ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from exc
        probs = [p.numpy().astype(np.float32) for p in seg["probabilityimages"]]
    if len(probs) != 3:
        raise NeurointerpError(f"{image}: Atropos returned {len(probs)} classes, expected 3")
    return probs[1]  # classes ordered by mean intensity: CSF < GM < WM on T1


def regional_volumes(
    images: list[str | os.PathLike],
    atlas_labels: np.ndarray,
    table,
    affine: np.ndarray,
    mask: np.ndarray | None = None,
    progress: str = "",
) -> tuple["object", np.ndarray]:
    """GM volume (mm^3) per region and subject: ``(frame N x R named by region, total GM)``."""
    import pandas as pd

    from neurointerp.progress import track

    lab = np.asarray(atlas_labels).reshape(-1)
    ids = [int(i) for i in table.index if np.any(lab == i)]
    if not ids:
        raise InputError("atlas: no region overlaps the images' grid")
    lookup = np.zeros(max(int(lab.max()), max(ids)) + 1, dtype=np.int64)
    lookup[ids] = np.arange(1, len(ids) + 1)
    code = lookup[lab]
    voxel_mm3 = float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))
    vols = np.zeros((len(images), len(ids)))
    total = np.zeros(len(images))
    for i, path in enumerate(track(images, description=progress or "atropos", total=len(images))):
        gm = segment_grey_matter(path, mask).reshape(-1).astype(np.float64)
        vols[i] = np.bincount(code, weights=gm, minlength=len(ids) + 1)[1:] * voxel_mm3
        total[i] = gm.sum() * voxel_mm3
    names = [str(table.loc[i]) for i in ids]
    return pd.DataFrame(vols, columns=names), total


def volume_table(volumes, groups, group_order, X: np.ndarray, c: np.ndarray, ids=None):
    """Per region: mean GM volume per group, contrast estimate, t, p, FDR q, rank (by |t|)."""
    import pandas as pd

    from neurointerp.group.fdr import fdr_bh
    from neurointerp.group.glm import ols_arrays, t_to_p
    from neurointerp.group.regions import _rank

    V = volumes.to_numpy(dtype=np.float64)
    res = ols_arrays(X, V, c)
    groups = np.asarray(groups)
    out = pd.DataFrame({"name": list(volumes.columns)})
    if ids is not None:
        out.insert(0, "index", ids)
    for g in group_order:
        out[f"mean_gm_mm3_{g}"] = V[groups == g].mean(axis=0)
    out["estimate_mm3"] = res.effect
    out["t"] = res.t
    out["p"] = t_to_p(res.t, res.df)
    out["q_fdr"] = fdr_bh(out["p"].to_numpy())
    out["rank"] = _rank(np.abs(res.t))
    return out.sort_values("rank", kind="mergesort").reset_index(drop=True)


def boxplots(path: str | os.PathLike, volumes, groups, group_order, regions: list[str], title: str = "") -> Path:
    """PNG with one box plot (per group, points overlaid) for each region in ``regions``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurointerp.io.atomic import atomic_path

    groups = np.asarray(groups)
    k = max(1, len(regions))
    fig, axes = plt.subplots(1, k, figsize=(2.4 * k + 0.6, 3.2), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, name in zip(axes[0], regions):
        data = [volumes[name].to_numpy()[groups == g] for g in group_order]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(group_order) + 1), list(group_order))
        for j, d in enumerate(data, start=1):
            ax.scatter(j + rng.uniform(-0.12, 0.12, len(d)), d, s=8, alpha=0.6)
        ax.set_title(name if len(name) < 26 else name[:24] + "…", fontsize=8)
        ax.set_ylabel("GM volume (mm³)", fontsize=8)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=90, format="png")
    plt.close(fig)
    return path
