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
