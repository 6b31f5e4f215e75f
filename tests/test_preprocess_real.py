"""preprocess on real MRI shipped offline: pydeface's whole-head mean T1 (1 mm) and nibabel's anatomical.nii."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from neurointerp.atlases import DEFAULT_TEMPLATE, resample_template, working_grid
from neurointerp.io import resolution_label

RES = resolution_label(working_grid(shape=(64, 64, 64))[1])  # the default grid's BIDS res- label

pytestmark = pytest.mark.slow


def _head() -> Path:
    pydeface = pytest.importorskip("pydeface")
    return Path(pydeface.__file__).parent / "data" / "mean_reg2mean.nii.gz"


def _dice(a, b) -> float:
    return 2.0 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum())


def test_whole_head_default_pipeline_with_deepbet(tmp_path):
    """The default pipeline (deepbet) on a real 1 mm whole head: brain in template space."""
    pytest.importorskip("deepbet")
    from neurointerp.preprocess import run_preprocess

    head = tmp_path / "sub-head_T1w.nii.gz"
    src = nib.load(str(_head()))
    # re-pose by a known rigid transform written in the affine, and store LAS: real work to do
    from neurointerp.synth.deformation import rotation_matrix

    pose = np.eye(4)
    pose[:3, :3] = rotation_matrix([6.0, -5.0, 7.0])
    pose[:3, 3] = [5.0, -7.0, 4.0]
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = src.shape[0] - 1
    data = np.asarray(src.dataobj, dtype=np.float32)[::-1]
    nib.save(nib.Nifti1Image(data, pose @ src.affine @ flip), str(head))
    assert nib.aff2axcodes(nib.load(str(head)).affine)[0] == "L"

    result = run_preprocess(head, tmp_path / "out", threads=2)
    assert result.done == ["sub-head"]
    folder = tmp_path / "out" / "sub-head" / "anat"
    side = json.loads((folder / f"sub-head_space-{DEFAULT_TEMPLATE}_res-{RES}_desc-preproc_T1w.json").read_text())
    assert side["Parameters"]["brain_extraction"] == "deepbet"
    shape, grid_affine = working_grid(shape=(64, 64, 64))
    tpl, tpl_mask = resample_template(shape, grid_affine)
    mask_img = nib.load(str(folder / f"sub-head_space-{DEFAULT_TEMPLATE}_res-{RES}_desc-brain_mask.nii.gz"))
    np.testing.assert_allclose(mask_img.affine, grid_affine, atol=1e-4)
    mask = np.asarray(mask_img.dataobj) > 0
    assert _dice(mask, tpl_mask) >= 0.9
    img = nib.load(str(folder / f"sub-head_space-{DEFAULT_TEMPLATE}_res-{RES}_desc-preproc_T1w.nii.gz")).get_fdata()
    both = mask & tpl_mask
    assert np.corrcoef(img[both], tpl[both])[0, 1] > 0.7
    # the native brain (deepbet) is a plausible brain: 1.1-1.9 litres
    native = nib.load(str(folder / "sub-head_desc-brain_mask.nii.gz"))
    litres = float(np.asarray(native.dataobj).sum()) * abs(np.linalg.det(native.affine[:3, :3])) / 1e6
    assert 1.1 < litres < 1.9


def test_template_mask_fallback_on_a_whole_head(tmp_path):
    """Without deepbet: template-mask propagation strips a real head well enough to register it."""
    from nibabel.processing import resample_to_output

    from neurointerp.preprocess import run_preprocess

    head = tmp_path / "sub-low_T1w.nii.gz"
    low = resample_to_output(nib.load(str(_head())), voxel_sizes=(2.0, 2.0, 2.0), order=1)
    nib.save(nib.Nifti1Image(np.asarray(low.dataobj, dtype=np.float32), low.affine), str(head))
    run_preprocess(head, tmp_path / "out", brain_extraction="template", threads=2, qc=False)
    folder = tmp_path / "out" / "sub-low" / "anat"
    shape, grid_affine = working_grid(shape=(64, 64, 64))
    _, tpl_mask = resample_template(shape, grid_affine)
    mask = np.asarray(nib.load(str(folder / f"sub-low_space-{DEFAULT_TEMPLATE}_res-{RES}_desc-brain_mask.nii.gz")).dataobj) > 0
    assert _dice(mask, tpl_mask) >= 0.85
