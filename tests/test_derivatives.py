import json

import pytest

from neurointerp.errors import InputError
from neurointerp.io import add_bidsignore, bids_name, derivative_path, provenance, sha256, sidecar_path, write_dataset_description, write_sidecar


def test_bids_names_follow_entity_order(tmp_path):
    assert bids_name("01", "T1w", desc="preproc", space="MNI152NLin2009aSym") == "sub-01_space-MNI152NLin2009aSym_desc-preproc_T1w.nii.gz"
    p = derivative_path(tmp_path, "01", "attribution", session="2", space="MNI", desc="gradient")
    assert p == tmp_path / "sub-01" / "ses-2" / "anat" / "sub-01_ses-2_space-MNI_desc-gradient_attribution.nii.gz"
    assert sidecar_path(p).name == "sub-01_ses-2_space-MNI_desc-gradient_attribution.json"
    with pytest.raises(InputError):
        bids_name("01", "T1w", desc="a_b")


def test_res_label_names_a_grid_that_is_not_the_templates(tmp_path):
    """BIDS res-: the voxel size of a grid off the template's own; derived files keep their input's label."""
    import numpy as np

    from neurointerp.atlases import load_template, working_grid
    from neurointerp.io import res_of, resolution_label

    _, mask, tpl_affine = load_template()
    assert resolution_label(tpl_affine, mask.shape, reference=(mask.shape, tpl_affine)) is None  # the template's own grid
    cropped = tpl_affine.copy()
    cropped[:3, 3] += 4.0
    assert resolution_label(cropped, (150, 180, 150), reference=(mask.shape, tpl_affine)) == "1mm"  # same voxels, another grid
    shape, affine = working_grid(shape=(64, 64, 64))
    assert resolution_label(affine, shape, reference=(mask.shape, tpl_affine)) == "2p98mm"
    assert resolution_label(np.diag([-1.5, 1.5, 1.5, 1.0])) == "1p5mm"  # a flip is not a size
    assert resolution_label(np.diag([1.0, 1.0, 2.5, 1.0])) == "1x1x2p5mm"
    name = bids_name("01", "T1w", space="MNI152NLin2009aSym", res="2p98mm", desc="preproc")
    assert name == "sub-01_space-MNI152NLin2009aSym_res-2p98mm_desc-preproc_T1w.nii.gz"
    assert res_of(name) == "2p98mm" and res_of("sub-01_space-MNI_desc-x_attribution.nii.gz") is None
    # a file with res- says what the label means (BIDS: Resolution is required with res-)
    (tmp_path / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0", "DatasetType": "derivative"}')
    side = json.loads(write_sidecar(tmp_path / name, {}, root=tmp_path, skull_stripped=True).read_text())
    assert side["Resolution"] == {"2p98mm": "2.98 mm isotropic voxels in MNI152NLin2009aSym (the grid's shape and affine are those of the image header)"}
    assert "Resolution" not in json.loads(write_sidecar(tmp_path / "sub-01_space-MNI_desc-x_attribution.nii.gz", {}).read_text())


def test_dataset_description_and_bidsignore(tmp_path):
    path = write_dataset_description(tmp_path, "x")
    desc = json.loads(path.read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "neurointerp"
    write_dataset_description(tmp_path, "x")  # ours: kept, no error
    other = tmp_path / "other"
    other.mkdir()
    (other / "dataset_description.json").write_text('{"Name": "raw", "GeneratedBy": [{"Name": "fmriprep"}]}')
    with pytest.raises(InputError, match="belongs to another dataset"):
        write_dataset_description(other, "x")
    add_bidsignore(tmp_path, ["*_attribution.nii.gz"])
    add_bidsignore(tmp_path, ["*_attribution.nii.gz", "truth/"])
    assert (tmp_path / ".bidsignore").read_text().splitlines() == ["*_attribution.nii.gz", "truth"]
    # the validator does not honour 'group/': an older file's folder lines are rewritten
    (tmp_path / ".bidsignore").write_text("group/\n*_x.nii.gz\n")
    add_bidsignore(tmp_path, ["group"])
    assert (tmp_path / ".bidsignore").read_text().splitlines() == ["group", "*_x.nii.gz"]


def test_group_statistics_are_folded_into_desc():
    """BIDS has no stat- entity (pybids drops it): the statistic is part of desc."""
    assert bids_name(None, "statmap", space="MNI152NLin2009aSym", desc="patient", stat="meanabs") == "space-MNI152NLin2009aSym_desc-patientMeanabs_statmap.nii.gz"
    assert bids_name(None, "attribution", space="S", desc="gradient", label="all", stat="mean") == "space-S_label-all_desc-gradientMean_attribution.nii.gz"
    assert bids_name(None, "statmap", desc="patient") == "desc-patient_statmap.nii.gz"


def test_provenance_records_inputs_with_sha256(tmp_path):
    import hashlib

    f = tmp_path / "in.nii.gz"
    f.write_bytes(b"abc")
    rec = provenance("saliency", {"method": "gradient", "out": tmp_path}, inputs=[f], seed=3, TargetClass="patient")
    assert rec["Inputs"][0]["sha256"] == hashlib.sha256(b"abc").hexdigest() == sha256(f)
    assert rec["Parameters"]["out"] == str(tmp_path) and rec["Seed"] == 3 and rec["TargetClass"] == "patient"
    side = write_sidecar(tmp_path / "map.nii.gz", rec)
    assert json.loads(side.read_text())["GeneratedBy"]["Command"] == "saliency"
    with pytest.raises(InputError, match="already exists"):
        write_sidecar(tmp_path / "map.nii.gz", rec)
