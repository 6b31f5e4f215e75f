"""Brain extraction, offline: deepbet, template-mask propagation, or none (already stripped).

* ``deepbet`` -- the deepbet CNN (MIT licence; its weights ship inside its wheel, nothing is
  downloaded). About 8-10 s per 1 mm whole-head image on two CPU cores.
* ``template`` -- fallback without extra packages: a coarse affine of the whole head to the
  (skull-stripped) template, whose brain mask, dilated by ``dilate_mm``, is taken back to the
  native image and intersected with the head. Cruder than deepbet (an affine cannot follow
  every gyrus) but robust; the registration that follows refines the alignment.
* ``none`` -- the input is already skull-stripped: the mask is the foreground (above the mean
  intensity after light smoothing, largest component, holes filled).
* ``auto`` -- ``deepbet`` when it is installed, else ``template``.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from neurointerp.errors import InputError, NeurointerpError

METHODS = ("auto", "deepbet", "template", "none")


def deepbet_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepbet") is not None


def resolve_method(method: str) -> str:
    """The method that ``method`` means on this installation (``auto`` resolved)."""
    method = str(method).lower()
    if method not in METHODS:
        raise InputError(f"brain extraction '{method}': choose one of {', '.join(METHODS)}")
    if method == "auto":
        return "deepbet" if deepbet_available() else "template"
    if method == "deepbet" and not deepbet_available():
        raise InputError("brain extraction 'deepbet' needs the deepbet package (pip install deepbet); or use --brain-extraction template")
    return method


@lru_cache(maxsize=1)
def _deepbet_model():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from deepbet import BrainExtraction

    return BrainExtraction(no_gpu=True)


def deepbet_mask(data: np.ndarray, affine: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Brain mask from deepbet (runs on the RAS view of the array, CPU)."""
    import torch

    from neurointerp.preprocess.intensity import canonical_view

    ras, back = canonical_view(data, affine)
    model = _deepbet_model()
    with torch.inference_mode():
        prob = model.run_model(ras.astype(np.float32).copy())
    mask = prob > threshold
    if not mask.any():
        raise NeurointerpError("deepbet found no brain in the image")
    mask = model.postprocess(mask, 0)
    return back(mask.astype(bool))


def foreground_mask(data: np.ndarray) -> np.ndarray:
    """Mask of an already skull-stripped image: the partial-volume midpoint between background and tissue.

    Tissue is what lies above the Otsu threshold of the whole image; the mask keeps voxels above
    half the median tissue intensity (the 50% partial-volume level of a tissue/background edge),
    then the largest connected component with its holes (ventricles) filled.
    """
    from scipy import ndimage

    from neurointerp.preprocess.qc import _otsu

    values = data[data > 0]
    if values.size == 0:
        raise NeurointerpError("no foreground found in the image")
    tissue = values[values > _otsu(values)]
    thr = 0.5 * float(np.median(tissue)) if tissue.size else float(values.mean())
    mask = data > thr
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    mask = ndimage.binary_fill_holes(mask)
    if not mask.any():
        raise NeurointerpError("no foreground found in the image")
    return mask


def template_mask(data: np.ndarray, affine: np.ndarray, template, workdir: str | os.PathLike, resolution: float = 4.0, dilate_mm: float = 3.0):
    """Template-mask propagation; returns ``(mask, coarse_affine_transform_file)``."""
    from scipy import ndimage

    from neurointerp.preprocess.antsio import import_ants, to_ants
    from neurointerp.preprocess.intensity import head_mask
    from neurointerp.preprocess.registration import quick_affine
    from neurointerp.preprocess.template import fixed_image

    ants = import_ants()
    head = head_mask(data, smooth_vox=1.0)
    tx = quick_affine(data * head, affine, fixed_image(template, resolution), resolution, os.path.join(str(workdir), "bet_"))
    t_vox = float(np.mean(np.sqrt((template.affine[:3, :3] ** 2).sum(axis=0))))
    tmask = ndimage.binary_dilation(template.mask, iterations=max(1, int(round(dilate_mm / t_vox))))
    native = ants.apply_transforms(
        to_ants(data, affine),
        to_ants(tmask.astype(np.float32), template.affine),
        [tx],
        whichtoinvert=[True],
        interpolator="linear",
    )
    mask = (native.numpy() > 0.5) & head
    if not mask.any():
        raise NeurointerpError("template-mask propagation found no brain in the image")
    return ndimage.binary_fill_holes(mask), tx


def extract_brain(method: str, data: np.ndarray, affine: np.ndarray, template=None, workdir=None):
    """Run ``method`` (already resolved); returns ``(mask, initial_transform_or_None)``."""
    if method == "deepbet":
        return deepbet_mask(data, affine), None
    if method == "template":
        return template_mask(data, affine, template, workdir)
    if method == "none":
        return foreground_mask(data), None
    raise InputError(f"brain extraction '{method}': choose one of {', '.join(METHODS)}")
