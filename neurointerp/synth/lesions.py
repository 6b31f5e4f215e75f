"""2D brain-slice phantoms, healthy vs. with small lesions, with ground-truth lesion masks.

In the spirit of papers/icam-vae-gan-attribution.txt §4.2 (HCP slices with simulated cortical
lesions that appear "in the disease class 1, with different frequencies"):

* every subject is a 2D axial "slice": an elliptical brain (size, elongation, tilt and position
  vary), a darker cortical ring, white matter, two ventricles whose size varies, a smooth
  random texture and white noise -- natural variation that is *not* class related;
* class 0 (``healthy``) has no lesion; class 1 (``lesion``) has 1 to K small blobs in the cortical
  ring. Each of K candidate sites (fixed angles around the ring) carries a lesion with its own
  frequency; a lesion's position is jittered along the ring and its radius varies. Polarity:
  ``bright`` (default), ``dark`` or ``mixed`` (each lesion bright or dark at random);
* ground truth: the binary mask of each subject's lesions (empty for healthy subjects) and the
  population *lesion frequency map* (mean lesion mask of class 1), the expected target of a
  healthy -> lesion translation.

Two variants for ICAM's extensions (the paper's §5: "multi-class classification and regression"):

* :func:`make_lesion_classes` -- multi-class: healthy plus ``n_classes - 1`` lesion classes, each with
  lesions at its *own* group of sites (class 1 at 30/160/280 degrees, class 2 at 100/215/335 for
  3 classes); per-class frequency maps are the expected change of a translation into a class;
* :func:`make_lesion_ages` -- regression ("brain age", §4.4): an age in 45-80 years per subject and
  lesions at every site whose amplitude grows linearly with age; each subject's lesion mask is
  where a change of age changes the image (the truth of a translation to another age).

The natural variation is drawn the same way in all three; the binary cohort of a given seed is
unchanged by the variants.

Images are ``S x S`` (default 32; the paper's 2D HCP slices are larger, e.g. 128) and stored as
``S x S x 1`` NIfTI with ``voxel_size`` mm pixels and the origin at the grid centre.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError
from neurointerp.runs.context import runs_as

POLARITIES = ("bright", "dark", "mixed")
#: candidate lesion sites: angle around the cortical ring (degrees) and frequency in class 1
SITES = ((30.0, 0.6), (100.0, 0.5), (160.0, 0.4), (215.0, 0.5), (280.0, 0.3), (335.0, 0.4))


@dataclass
class LesionCohort:
    """Arrays of a generated cohort: ``images``/``masks`` are ``(N, S, S)`` (float32 / bool)."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray  # 0 healthy, 1 lesion (multi-class: class index; regression: age in years)
    sites: np.ndarray  # (N, K) bool: which candidate sites carry a lesion
    polarity: np.ndarray  # (N, K) +1 bright, -1 dark, 0 none
    frequency: np.ndarray  # (S, S) mean lesion mask of class 1 (multi-class: (C, S, S), one per class)
    affine: np.ndarray


def lesion_affine(size: int, voxel_size: float = 1.0) -> np.ndarray:
    """Affine of the ``size x size x 1`` grid: ``voxel_size`` mm pixels, origin at the grid centre."""
    aff = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    aff[:2, 3] = -voxel_size * (size - 1) / 2.0
    return aff


def _smooth_texture(rng, n: int, size: int, n_waves: int = 6) -> np.ndarray:
    """Smooth random fields ``(n, S, S)`` in about [-1, 1]: sums of low-frequency plane waves."""
    g = np.linspace(0.0, 1.0, size)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    k = rng.uniform(1.0, 4.0, size=(n, n_waves, 1, 1)) * np.pi
    theta = rng.uniform(0, 2 * np.pi, size=(n, n_waves, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, n_waves, 1, 1))
    waves = np.cos(k * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)
    return waves.sum(axis=1) / np.sqrt(n_waves)


def _anatomy(rng, n: int, size: int) -> dict:
    """Brain phantoms without lesions (the natural, class-unrelated variation); see the module doc."""
    s = size / 32.0  # geometry is specified for a 32-pixel grid and scaled
    c = (size - 1) / 2.0
    r = np.arange(size, dtype=np.float64)
    yy, xx = np.meshgrid(r, r, indexing="ij")

    # brain shape: ellipse radii, tilt and centre vary between subjects
    ry = s * 12.5 * (1 + rng.uniform(-0.06, 0.06, n))
    rx = s * 10.5 * (1 + rng.uniform(-0.06, 0.06, n))
    tilt = np.deg2rad(rng.uniform(-8, 8, n))
    cy = c + s * rng.uniform(-1.0, 1.0, n)
    cx = c + s * rng.uniform(-1.0, 1.0, n)
    dy = yy[None] - cy[:, None, None]
    dx = xx[None] - cx[:, None, None]
    u = np.cos(tilt)[:, None, None] * dy + np.sin(tilt)[:, None, None] * dx
    v = -np.sin(tilt)[:, None, None] * dy + np.cos(tilt)[:, None, None] * dx
    rho = np.sqrt((u / ry[:, None, None]) ** 2 + (v / rx[:, None, None]) ** 2)  # 1 on the brain edge
    brain = 1.0 / (1.0 + np.exp((rho - 1.0) / 0.04))
    cortex_w = 0.22 * (1 + rng.uniform(-0.15, 0.15, n))
    wm = 1.0 / (1.0 + np.exp((rho - (1.0 - cortex_w[:, None, None])) / 0.04))
    img = 0.5 * brain + 0.5 * wm
    # ventricles: two dark ellipses whose size varies (natural, class-unrelated variation)
    vsize = s * rng.uniform(0.9, 1.9, n)
    for side in (-1.0, 1.0):
        vu = (u - s * 0.5) / (1.8 * vsize[:, None, None])
        vv = (v - side * s * 3.0) / vsize[:, None, None]
        vent = 1.0 / (1.0 + np.exp((np.sqrt(vu**2 + vv**2) - 1.0) / 0.08))
        img = img - 0.7 * vent * wm
    img = img * (1.0 + 0.08 * _smooth_texture(rng, n, size))
    return {"s": s, "u": u, "v": v, "ry": ry, "rx": rx, "brain": brain, "cortex_w": cortex_w, "img": img}


def _draw_lesions(rng, a: dict, sites: np.ndarray, amplitude: np.ndarray, size: int):
    """Blobs at the candidate ``sites`` ``(N, K)`` of the cortical ring with signed ``amplitude``
    ``(N, K)`` (1: bright at full contrast, -1 dark, 0.3 faint...); position jittered along the
    ring, radius varies. Returns the lesion image ``(N, S, S)`` and masks ``(N, S, S)``."""
    n, k = sites.shape
    angles = np.deg2rad(np.array([ang for ang, _ in SITES]))
    ang = angles[None] + np.deg2rad(rng.uniform(-10, 10, (n, k)))
    depth = 1.0 - 0.5 * a["cortex_w"][:, None]  # middle of the cortical ring, in units of the radius
    rad = a["s"] * rng.uniform(1.3, 2.0, (n, k))
    u, v, ry, rx = a["u"], a["v"], a["ry"], a["rx"]
    masks = np.zeros((n, size, size), dtype=bool)
    lesion = np.zeros((n, size, size))
    for j in range(k):
        on = sites[:, j]
        if not on.any():
            continue
        lu = depth[on, 0] * ry[on] * np.cos(ang[on, j])  # lesion centre in the brain's (u, v) frame
        lv = depth[on, 0] * rx[on] * np.sin(ang[on, j])
        d = np.sqrt((u[on] - lu[:, None, None]) ** 2 + (v[on] - lv[:, None, None]) ** 2)
        prof = 1.0 / (1.0 + np.exp((d - rad[on, j][:, None, None]) / 0.35))
        lesion[on] += amplitude[on, j][:, None, None] * prof
        masks[on] |= d <= rad[on, j][:, None, None]
    return lesion, masks


def _finish(rng, a: dict, lesion, contrast: float, noise: float):
    img = a["img"] + contrast * lesion * a["brain"]
    img = img + rng.normal(0.0, noise, size=img.shape) * (a["brain"] > 0.05)
    return (np.clip(img, 0.0, None) * (a["brain"] > 0.05)).astype(np.float32)


def _check(polarity: str, n: int, size: int, contrast: float, what: str = "--n-per-group") -> None:
    if polarity not in POLARITIES:
        raise InputError(f"--polarity {polarity}: choose {', '.join(POLARITIES)}")
    if n < 1:
        raise InputError(f"{what} {n}: must be at least 1")
    if size < 24:
        raise InputError(f"--size {size}: must be at least 24")
    if not 0 < contrast <= 2.0:
        raise InputError(f"--contrast {contrast}: must be in (0, 2]")


def _polarity(rng, sites, polarity: str) -> np.ndarray:
    if polarity == "bright":
        return np.where(sites, 1, 0)
    if polarity == "dark":
        return np.where(sites, -1, 0)
    return np.where(sites, rng.choice([-1, 1], size=sites.shape), 0)


def make_lesions(
    n_per_group: int = 128,
    size: int = 32,
    polarity: str = "bright",
    contrast: float = 0.7,
    noise: float = 0.03,
    voxel_size: float = 1.0,
    seed: int = 0,
) -> LesionCohort:
    """Generate a healthy/lesion cohort in memory (deterministic for a given seed).

    ``contrast``: lesion amplitude in image units (white matter is about 1, cortex 0.5): a bright
    lesion adds ``contrast`` to the cortex, a dark one subtracts it (clipped at 0).
    """
    _check(polarity, n_per_group, size, contrast)
    rng = np.random.default_rng(seed)
    n = 2 * n_per_group
    labels = np.repeat(np.array([0, 1]), n_per_group)
    a = _anatomy(rng, n, size)

    # lesions in class 1, at the candidate sites of the cortical ring
    k = len(SITES)
    freq = np.array([f for _, f in SITES])
    sites = (rng.random((n, k)) < freq[None]) & (labels[:, None] == 1)
    for i in np.flatnonzero((labels == 1) & ~sites.any(axis=1)):  # every patient has a lesion
        sites[i, rng.choice(k, p=freq / freq.sum())] = True
    pol = _polarity(rng, sites, polarity)
    lesion, masks = _draw_lesions(rng, a, sites, pol.astype(float), size)
    img = _finish(rng, a, lesion, contrast, noise)
    frequency = masks[labels == 1].mean(axis=0) if (labels == 1).any() else np.zeros((size, size))
    return LesionCohort(
        images=img,
        masks=masks,
        labels=labels,
        sites=sites,
        polarity=pol.astype(int),
        frequency=frequency.astype(np.float32),
        affine=lesion_affine(size, voxel_size),
    )


def class_sites(n_classes: int) -> np.ndarray:
    """``(n_classes, K)`` bool: the candidate sites of each class of :func:`make_lesion_classes`.

    Class 0 (healthy) has none; site ``j`` belongs to lesion class ``1 + j % (n_classes - 1)``
    (3 classes: class 1 at sites 1, 3, 5 -- 30, 160, 280 degrees -- and class 2 at sites 2, 4, 6).
    """
    k = len(SITES)
    table = np.zeros((n_classes, k), dtype=bool)
    for j in range(k):
        table[1 + j % (n_classes - 1), j] = True
    return table


def make_lesion_classes(
    n_per_class: int = 64,
    n_classes: int = 3,
    size: int = 32,
    polarity: str = "bright",
    contrast: float = 0.7,
    noise: float = 0.03,
    voxel_size: float = 1.0,
    seed: int = 0,
) -> LesionCohort:
    """Multi-class variant: class 0 healthy, class ``c >= 1`` has 1 to 3 lesions at *its own* sites
    (:func:`class_sites`), each with the site's frequency of :data:`SITES` (at least one lesion).

    ``frequency`` is ``(n_classes, S, S)``: the mean lesion mask of each class (zero for class 0) --
    the expected change of a translation into that class; a translation out of a lesion class
    into class 0 should remove the subject's own lesions (``masks``).
    """
    _check(polarity, n_per_class, size, contrast, "--n-per-group")
    if not 3 <= n_classes <= len(SITES) + 1:
        raise InputError(f"--n-classes {n_classes}: must be between 3 and {len(SITES) + 1} (healthy + one class per group of sites)")
    rng = np.random.default_rng(seed)
    n = n_classes * n_per_class
    labels = np.repeat(np.arange(n_classes), n_per_class)
    a = _anatomy(rng, n, size)
    own = class_sites(n_classes)[labels]  # (N, K) sites a subject's class may carry
    freq = np.array([f for _, f in SITES])
    sites = (rng.random(own.shape) < freq[None]) & own
    for i in np.flatnonzero((labels > 0) & ~sites.any(axis=1)):
        p = freq * own[i]
        sites[i, rng.choice(len(SITES), p=p / p.sum())] = True
    pol = _polarity(rng, sites, polarity)
    lesion, masks = _draw_lesions(rng, a, sites, pol.astype(float), size)
    img = _finish(rng, a, lesion, contrast, noise)
    frequency = np.stack([masks[labels == c].mean(axis=0) for c in range(n_classes)])
    return LesionCohort(images=img, masks=masks, labels=labels, sites=sites, polarity=pol.astype(int), frequency=frequency.astype(np.float32), affine=lesion_affine(size, voxel_size))


#: age range of :func:`make_lesion_ages` (years; the UK Biobank range of the ICAM paper, §4.4)
AGE_RANGE = (45.0, 80.0)


def make_lesion_ages(
    n: int = 256,
    size: int = 32,
    polarity: str = "bright",
    contrast: float = 0.7,
    noise: float = 0.03,
    voxel_size: float = 1.0,
    seed: int = 0,
) -> LesionCohort:
    """Regression ("brain age") variant: every subject has an age uniform in :data:`AGE_RANGE`
    and lesions at all six sites (positions jittered, radii varying) whose amplitude grows
    linearly with age, from 0 at 45 to ``contrast`` at 80 (white-matter-hyperintensity-like load;
    the ventricles, shape and texture vary independently of age).

    ``labels`` holds the ages (float); ``masks`` each subject's lesion masks, i.e. where a change
    of age changes the image: the ground truth of a translation to another age (``d image / d age``
    is ``contrast / 35`` per year times the lesion profile). ``frequency`` is the mean mask.
    """
    _check(polarity, n, size, contrast, "--n")
    rng = np.random.default_rng(seed)
    a = _anatomy(rng, n, size)
    lo, hi = AGE_RANGE
    age = np.round(rng.uniform(lo, hi, n), 1)
    sites = np.ones((n, len(SITES)), dtype=bool)
    pol = _polarity(rng, sites, polarity)
    load = (age - lo) / (hi - lo)
    lesion, masks = _draw_lesions(rng, a, sites, pol * load[:, None], size)
    img = _finish(rng, a, lesion, contrast, noise)
    return LesionCohort(images=img, masks=masks, labels=age, sites=sites, polarity=pol.astype(int), frequency=masks.mean(axis=0).astype(np.float32), affine=lesion_affine(size, voxel_size))


TASKS = ("binary", "multiclass", "regression")


@runs_as("synth lesions")
def synth_lesions(
    out: str | os.PathLike,
    n_per_group: int = 128,
    size: int = 32,
    polarity: str = "bright",
    contrast: float = 0.7,
    noise: float = 0.03,
    voxel_size: float = 1.0,
    seed: int = 0,
    force: bool = False,
    task: str = "binary",
    n_classes: int = 3,
) -> Path:
    """Write a lesion cohort: one NIfTI image and lesion mask per subject, ``cohort.csv``, ``truth/``.

    ``cohort.csv`` columns: ``participant_id``, ``image``, ``label``, ``mask`` (the subject's lesion
    mask; all zero for healthy subjects), ``n_lesions``. ``label``: ``binary`` 0 healthy / 1 lesion
    (``n_per_group`` each); ``multiclass`` the class 0..``n_classes``-1 (:func:`make_lesion_classes`,
    ``n_per_group`` each); ``regression`` the age in years (:func:`make_lesion_ages`, ``2 n_per_group``
    subjects). ``truth/`` holds the lesion frequency map(s), the site table and provenance.
    Returns the cohort table path. Same arguments as ``neurointerp synth lesions``.
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

    if task not in TASKS:
        raise InputError(f"--task {task}: choose {', '.join(TASKS)}")
    params = dict(n_per_group=n_per_group, size=size, polarity=polarity, contrast=contrast, noise=noise, voxel_size=voxel_size, seed=seed)
    if task == "binary":
        coh = make_lesions(**params)
    elif task == "multiclass":
        params = {**params, "task": task, "n_classes": n_classes}
        coh = make_lesion_classes(n_per_class=n_per_group, n_classes=n_classes, size=size, polarity=polarity, contrast=contrast, noise=noise, voxel_size=voxel_size, seed=seed)
    else:
        params = {**params, "task": task}
        coh = make_lesion_ages(n=2 * n_per_group, size=size, polarity=polarity, contrast=contrast, noise=noise, voxel_size=voxel_size, seed=seed)
    out = prepare_output_dir(out, force=force)
    write_dataset_description(out, "neurointerp synth lesions", "2D brain-slice phantoms: healthy vs small lesions, with lesion masks", force=force)
    add_bidsignore(out, ["*_lesions.nii.gz", "*_mask.nii.gz", "truth", "cohort.*"])
    n = len(coh.labels)
    width = len(str(n))
    rows, truth_rows = [], []
    for i in track(range(n), description="synth lesions", total=n):
        pid = f"l{i + 1:0{width}d}"
        img_path = derivative_path(out, pid, "lesions", desc="phantom")
        save_image(coh.images[i][:, :, None], coh.affine, img_path, force=force)
        mask_path = derivative_path(out, pid, "mask", desc="lesion")
        save_image(coh.masks[i][:, :, None], coh.affine, mask_path, force=force, dtype=None)
        label = float(coh.labels[i]) if task == "regression" else int(coh.labels[i])
        rows.append({"participant_id": pid, "image": str(img_path), "label": label, "mask": str(mask_path), "n_lesions": int(coh.sites[i].sum())})
        truth_rows.append({"participant_id": pid, "label": label, **{f"site{j + 1}": int(coh.polarity[i, j]) for j in range(len(SITES))}})
    table = write_cohort(out / "cohort.csv", pd.DataFrame(rows), image_columns=("image", "mask"), force=force)
    truth = out / "truth"
    if task == "multiclass":
        for c in range(n_classes):
            save_image(coh.frequency[c][:, :, None], coh.affine, truth / f"desc-class{c}frequency_lesionmap.nii.gz", force=force)
        truth_text = "per-subject binary lesion masks (mask column); desc-class<c>frequency_lesionmap = mean lesion mask of class c (expected change of a translation into c)"
        classes = {"0": "healthy", **{str(c): f"lesions at sites {', '.join(str(j + 1) for j in np.flatnonzero(class_sites(n_classes)[c]))}" for c in range(1, n_classes)}}
    else:
        save_image(coh.frequency[:, :, None], coh.affine, truth / "desc-frequency_lesionmap.nii.gz", force=force)
        if task == "binary":
            truth_text = ("per-subject binary lesion masks (mask column; all zero for healthy subjects); "
                          "desc-frequency_lesionmap = mean lesion mask of class 1 (expected healthy -> lesion change)")
            classes = {"0": "healthy", "1": "lesion"}
        else:
            truth_text = (f"label = age in years ({AGE_RANGE[0]:g}-{AGE_RANGE[1]:g}); lesions at every site with amplitude contrast * (age - "
                          f"{AGE_RANGE[0]:g}) / {AGE_RANGE[1] - AGE_RANGE[0]:g}; per-subject masks = where a change of age changes the image")
            classes = None
    write_table(truth / "subjects.tsv", pd.DataFrame(truth_rows), force=force)
    write_table(truth / "sites.tsv", pd.DataFrame([{"site": f"site{j + 1}", "angle_deg": a, "frequency": f} for j, (a, f) in enumerate(SITES)]), force=force)
    extra = {"Classes": classes} if classes is not None else {"Target": "age (years)"}
    write_json(
        truth / "truth.json",
        provenance(
            "synth lesions",
            params,
            seed=seed,
            GroundTruth=truth_text,
            Sites="subjects.tsv: per site +1 bright lesion, -1 dark lesion, 0 none",
            **extra,
        ),
        force=force,
    )
    return table
