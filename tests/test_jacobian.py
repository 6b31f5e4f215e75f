"""``jacobian``: determinants agree with ANTs and with analytic values; table runs, group means, bad input."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurointerp.cli.app import main
from neurointerp.errors import InputError
from neurointerp.simulate.jacobian import jacobian_determinant, jacobian_maps
from neurointerp.simulate.warp import save_field


def _field(shape, amp=1.2):
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(float)
    return np.stack([amp * np.sin(g[0] / 4 + k) * np.cos(g[1] / 5) * np.sin(g[2] / 6 + k) for k in range(3)])


@pytest.mark.parametrize("diag", [(-2.0, 2.5, 3.0), (1.0, 1.0, 1.0)])
def test_agrees_with_ants_create_jacobian_determinant_image(tmp_path, diag):
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    ants = pytest.importorskip("ants")
    shape = (18, 20, 16)
    u = _field(shape)
    affine = np.diag(list(diag) + [1.0])
    affine[:3, 3] = [30, -20, -10]
    save_field(u, affine, tmp_path / "f.nii.gz")
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), affine), str(tmp_path / "d.nii.gz"))
    dom = ants.image_read(str(tmp_path / "d.nii.gz"))
    ref = ants.create_jacobian_determinant_image(dom, str(tmp_path / "f.nii.gz")).numpy()
    ref_log = ants.create_jacobian_determinant_image(dom, str(tmp_path / "f.nii.gz"), do_log=True).numpy()
    assert np.abs(jacobian_determinant(u) - ref).max() < 1e-4
    assert np.abs(jacobian_determinant(u, log=True) - ref_log).max() < 1e-4
    # the CLI reads the file back (world LPS mm -> voxels) and writes the same maps on the field's grid
    code = main(["jacobian", str(tmp_path / "f.nii.gz"), str(tmp_path / "out")])
    assert code == 0
    img = nib.load(str(tmp_path / "out" / "f_jacobian.nii.gz"))
    assert np.allclose(img.affine, affine) and img.shape == shape
    assert np.abs(img.get_fdata() - ref).max() < 1e-4
    assert np.abs(nib.load(str(tmp_path / "out" / "f_logjacobian.nii.gz")).get_fdata() - ref_log).max() < 1e-4


def test_analytic_scaling_and_folding():
    shape = (10, 12, 9)
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(float)
    u = np.stack([(s - 1.0) * g[i] for i, s in enumerate((1.1, 0.9, 1.2))])
    inner = (slice(2, -2),) * 3  # replicated borders (as ANTs) bias the outer two voxels
    assert np.allclose(jacobian_determinant(u)[inner], 1.1 * 0.9 * 1.2)
    assert np.allclose(jacobian_determinant(u, log=True)[inner], np.log(1.1 * 0.9 * 1.2))
    assert np.allclose(jacobian_determinant(u[:2, :, :, 0])[inner[:2]], 1.1 * 0.9)  # 2D
    folded = np.stack([-2.0 * g[0], 0 * g[1], 0 * g[2]])  # x -> -x: det -1
    assert np.allclose(jacobian_determinant(folded)[inner], 0.0)
    assert np.allclose(jacobian_determinant(folded, log=True)[inner], np.log(0.001))
    assert np.allclose(jacobian_determinant(folded, clamp=False)[inner], -1.0)


def test_table_group_mean_and_inverse(tmp_path):
    shape = (8, 9, 7)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(float)
    rows = []
    for k, s in enumerate((1.1, 1.3)):
        u = np.stack([(s - 1.0) * g[0], 0 * g[1], 0 * g[2]])
        save_field(u, affine, tmp_path / f"sub-{k}_space-tpl_desc-inject_xfm.nii.gz")
        rows.append({"participant_id": f"s{k}", "direction": "inject", "field": f"sub-{k}_space-tpl_desc-inject_xfm.nii.gz"})
    pd.DataFrame(rows).to_csv(tmp_path / "fields.tsv", sep="\t", index=False)
    out = jacobian_maps(tmp_path / "fields.tsv", tmp_path / "out", inverse=True)
    mean = nib.load(str(out / "group" / "space-tpl_desc-injectmean_logjacobian.nii.gz"))
    assert np.allclose(mean.get_fdata()[2:-2], -(np.log(1.1) + np.log(1.3)) / 2, atol=1e-5)
    assert np.allclose(mean.affine, affine)
    table = pd.read_csv(out / "jacobian.tsv", sep="\t")
    assert list(table["participant_id"]) == ["s0", "s1"] and (table["folded_voxels"] == 0).all()
    assert (out / "sub-s1" / "anat" / "sub-s1_space-tpl_desc-inject_logjacobian.nii.gz").exists()
    with pytest.raises(InputError, match="--register needs --template"):
        jacobian_maps(tmp_path / "fields.tsv", tmp_path / "out2", register=True)


def test_bad_fields_exit_2_with_one_line(tmp_path, capsys):
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), np.eye(4)), str(tmp_path / "scalar.nii.gz"))
    assert main(["jacobian", str(tmp_path / "scalar.nii.gz"), str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scalar.nii.gz" in err[0] and "not a displacement field" in err[0]
    # a field whose grid differs from the subject's image
    save_field(np.zeros((3, 5, 6, 7)), np.eye(4), tmp_path / "f.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((5, 6, 8), np.float32), np.eye(4)), str(tmp_path / "img.nii.gz"))
    pd.DataFrame([{"participant_id": "a", "field": "f.nii.gz", "image": "img.nii.gz"}]).to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    assert main(["jacobian", str(tmp_path / "t.tsv"), str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "f.nii.gz" in err[0] and "5x6x8" in err[0]


def test_register_to_template_keeps_aligned_maps(tmp_path):
    """--register: SyN alignment of already-aligned subjects leaves the group map nearly unchanged."""
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    pytest.importorskip("ants")
    from neurointerp.synth.brain import SPACE, synth_brain

    synth_brain(tmp_path / "data", n_subjects=2, voxel_size=8.0, noise=0.0, template_space=True, seed=0)
    frame = pd.read_csv(tmp_path / "data" / "cohort.csv")
    tpl = tmp_path / "data" / "truth" / f"space-{SPACE}_T1w.nii.gz"
    ref = nib.load(str(tpl))
    u = _field(ref.shape, amp=0.8)
    rows = []
    for k, pid in enumerate(frame["participant_id"]):
        path = tmp_path / f"sub-{pid}_space-{SPACE}_desc-inject_xfm.nii.gz"
        save_field(u * (1 + 0.2 * k), ref.affine, path)
        rows.append({"participant_id": pid, "direction": "inject", "field": path.name, "image": str(tmp_path / "data" / frame["template_image"][k])})
    pd.DataFrame(rows).to_csv(tmp_path / "fields.tsv", sep="\t", index=False)
    plain = jacobian_maps(tmp_path / "fields.tsv", tmp_path / "plain")
    reg = jacobian_maps(tmp_path / "fields.tsv", tmp_path / "reg", template=tpl, register=True)
    name = f"group/space-{SPACE}_desc-injectmean_logjacobian.nii.gz"  # the template's space entity
    a = nib.load(str(plain / f"group/space-{SPACE}_desc-injectmean_logjacobian.nii.gz")).get_fdata()
    b = nib.load(str(reg / name))
    assert b.shape == ref.shape and np.allclose(b.affine, ref.affine)
    mask = nib.load(str(tmp_path / "data" / "truth" / f"space-{SPACE}_desc-brain_mask.nii.gz")).get_fdata() > 0
    assert np.corrcoef(a[mask], b.get_fdata()[mask])[0, 1] > 0.8


def test_fields_table_rows_are_validated_and_named(tmp_path, capsys):
    """Ids follow the cohort rules (row named, nothing written); sessions and directions keep maps apart."""
    shape, affine = (6, 7, 5), np.diag([2.0, 2.0, 2.0, 1.0])
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(float)
    for k, s in enumerate((1.1, 1.2, 1.3)):
        save_field(np.stack([(s - 1.0) * g[0], 0 * g[1], 0 * g[2]]), affine, tmp_path / f"f{k}.nii.gz")
    good = [
        {"participant_id": "sub-a", "session_id": "ses-1", "direction": "inject", "field": "f0.nii.gz"},
        {"participant_id": "a", "session_id": "2", "direction": "inject", "field": "f1.nii.gz"},
        {"participant_id": "a", "session_id": "2", "direction": "remove", "field": "f2.nii.gz"},
    ]

    def run(rows, name):
        pd.DataFrame(rows).to_csv(tmp_path / f"{name}.tsv", sep="\t", index=False)
        code = main(["--quiet", "jacobian", str(tmp_path / f"{name}.tsv"), str(tmp_path / name)])
        return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]

    for name, change, want in [
        ("dup", {"session_id": "1"}, "dup.tsv row 3: duplicate participant_id 'a' with session_id '1' and direction 'inject' (first at row 2)"),
        ("dotdot", {"participant_id": "../x"}, "dotdot.tsv row 3: participant_id '../x' must be letters and digits only"),
        ("noid", {"participant_id": ""}, "noid.tsv row 3: participant_id is empty"),
        ("nofield", {"field": ""}, "nofield.tsv row 3: field is empty"),
        ("baddir", {"direction": "in/out"}, "baddir.tsv row 3: direction 'in/out' must be letters and digits only"),
    ]:
        code, err = run([good[0], {**good[1], **change}, good[2]], name)
        assert code == 2 and len(err) == 1 and want in err[0], err
        assert not (tmp_path / name).exists()  # refused before the output folder is made

    code, err = run(good, "ok")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "ok" / "jacobian.tsv", sep="\t", dtype=str)
    assert list(zip(table["participant_id"], table["session_id"], table["direction"])) == [("a", "1", "inject"), ("a", "2", "inject"), ("a", "2", "remove")]
    for ses, d, s in (("1", "inject", 1.1), ("2", "inject", 1.2), ("2", "remove", 1.3)):
        path = tmp_path / "ok" / "sub-a" / f"ses-{ses}" / "anat" / f"sub-a_ses-{ses}_desc-{d}_logjacobian.nii.gz"
        assert np.allclose(nib.load(str(path)).get_fdata()[2:-2], np.log(s), atol=1e-5)

    # a NaN field in row 3: exit 2 naming the table row and the file
    u = np.zeros((3, *shape))
    u[0, 1, 1, 1] = np.nan
    save_field(u, affine, tmp_path / "nan.nii.gz")
    code, err = run([good[0], {**good[1], "field": "nan.nii.gz"}], "nan")
    assert code == 2 and len(err) == 1 and "nan.tsv row 3: " in err[0] and "nan.nii.gz: 1 voxel has NaN or Inf" in err[0], err
