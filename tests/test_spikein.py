"""synth spike-in: the region field (exact Jacobian, compact support), carrying it to native images, the outputs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from neurointerp.errors import InputError
from neurointerp.synth.sourcefield import Component, SourceField, region_sources
from neurointerp.synth.spikein import NativeTransform, Region, build_field, check_diffeomorphic, draw_design, spike_array

SPACE = "MNI152NLin2009aSym"


def _capsule_field(amp=-0.3, sigma=3.0, support=20.0):
    g = np.mgrid[-30:31, -30:31, -30:31].reshape(3, -1).T.astype(float)
    x = np.clip(g[:, 0], -15, 15)
    region = g[((g[:, 0] - x) ** 2 + g[:, 1] ** 2 + g[:, 2] ** 2) < 36]
    c, m = region_sources(region, 1.0, 1.25 * sigma)
    return SourceField([Component(c, amp * m)], sigma, 0.4 * support, support, 1.0), region


def test_field_jacobian_is_exact_and_the_support_compact():
    fld, region = _capsule_field()
    rng = np.random.default_rng(0)
    pts = np.r_[rng.uniform(-50, 50, (1500, 3)), fld.components[0].centres[:20] + rng.normal(0, 1e-3, (20, 3))]
    h = 1e-5
    num = np.stack([(fld.displacement(pts + h * e) - fld.displacement(pts - h * e)) / (2 * h) for e in np.eye(3)], axis=2)
    assert np.abs(fld.gradient(pts) - num).max() < 1e-8
    # exactly zero where the smooth distance to the region exceeds the support, and in_support covers every moving point
    v = fld.displacement(pts)
    moving = np.abs(v).max(axis=1) > 0
    assert np.all(fld.in_support(pts)[moving])
    dist = np.min(np.linalg.norm(pts[:, None] - fld.components[0].centres[None], axis=2), axis=1)
    end = fld._end(fld.components[0])  # 20 mm - tau log K
    assert moving[dist > 20.0].sum() == 0 and moving[dist < end].all() and 13 < end < 16
    # where w = 1 (inside and near the region) div v is the Gaussian-blurred region times A
    comp = fld.components[0]
    near = region[::5]
    density = sum(m * np.exp(-((near - c) ** 2).sum(axis=1) / (2 * 9.0)) for c, m in zip(comp.centres, comp.masses)) / (2 * np.pi * 9.0) ** 1.5
    assert np.allclose(fld.divergence(near), density, rtol=1e-5, atol=1e-7)
    assert density.min() < -0.25 and density.max() > -0.3  # ~A = -0.3, blurred at the edges
    # the total volume is conserved (the taper gives back what the region loses)
    grid = np.mgrid[-60:60:1.0, -45:45:1.0, -45:45:1.0].reshape(3, -1).T
    sup = grid[fld.in_support(grid)]
    jac = np.exp(fld.log_jacobian(sup))
    assert abs((jac - 1).sum()) < 0.01 * 0.3 * len(region)


def test_field_inverse_and_diffeomorphism_bound():
    fld, _ = _capsule_field(amp=-0.5)
    assert fld.max_gradient_norm() < 0.9
    pts = np.random.default_rng(1).uniform(-30, 30, (3000, 3))
    y = fld.inverse(pts)
    assert np.abs(y + fld.displacement(y) - pts).max() < 1e-4
    with pytest.raises(ValueError):
        fld.scaled(40.0).inverse(pts)  # far beyond a contraction: the iteration does not converge


def _ball_region(name="ball", centre=(0.0, 0.0, 0.0), radius=10.0, role="disease"):
    g = np.mgrid[-radius:radius + 1, -radius:radius + 1, -radius:radius + 1].reshape(3, -1).T.astype(float)
    pts = g[(g**2).sum(axis=1) <= radius**2] + np.asarray(centre)
    return Region(name, role, "test", pts, 1.0, np.asarray(centre, float))


def test_build_field_reaches_the_effect_at_each_centre():
    regions = [_ball_region("a", (-30, 0, 0)), _ball_region("b", (-12, 0, 0), 8.0)]  # overlapping supports
    fld, rec = build_field(regions, -0.35, 3.0, 20.0)
    assert np.allclose(fld.log_jacobian(np.array([[-30.0, 0, 0], [-12.0, 0, 0]])), -0.35, atol=1e-8)
    assert all(r["region_volume_change"] < -0.15 for r in rec)
    regions[1].effect = 0.25  # a region's own effect (--region NAME=EFFECT): atrophy next to expansion
    fld, rec = build_field(regions, -0.35, 3.0, 20.0)
    assert np.allclose(fld.log_jacobian(np.array([[-30.0, 0, 0], [-12.0, 0, 0]])), [-0.35, 0.25], atol=1e-8)
    assert rec[0]["region_volume_change"] < -0.15 and rec[1]["region_volume_change"] > 0.1
    empty = SourceField([], 3.0, 8.0, 20.0, 1.0)
    assert check_diffeomorphic(fld, empty, 1.5, 0.0) < 0.9
    with pytest.raises(InputError, match="no room for the taper"):
        build_field([_ball_region("tiny", radius=2.0)], -1.4, 0.5, 5.0)
    steep, _ = build_field([_ball_region("tiny", radius=2.0)], -1.4, 0.5, 10.0)
    with pytest.raises(InputError, match="fold"):
        check_diffeomorphic(steep, SourceField([], 0.5, 4.0, 10.0, 1.0), 3.0, 0.0)


def _smooth_image(shape, affine):
    """An analytic smooth intensity f(world) and its samples on a grid."""

    def f(p):
        return 100 + 40 * np.sin(p[:, 0] / 7.0) * np.cos(p[:, 1] / 9.0) + 30 * np.sin(p[:, 2] / 6.0 + 0.3)

    idx = np.indices(shape).reshape(3, -1).T
    return f, f(idx @ affine[:3, :3].T + affine[:3, 3]).reshape(shape)


def test_spike_array_carries_the_template_field_to_an_oblique_native_grid():
    from neurointerp.synth.deformation import rotation_matrix

    affine = np.eye(4)
    affine[:3, :3] = rotation_matrix([10, -5, 20]) @ np.diag([1.5, 1.5, 2.0])
    affine[:3, 3] = [-40, -35, -30]
    shape = (56, 52, 40)
    f, data = _smooth_image(shape, affine)
    n2t = np.eye(4)  # native -> template: a rotation and shift
    n2t[:3, :3] = rotation_matrix([0, 8, -6])
    n2t[:3, 3] = [3, -2, 4]
    tf = NativeTransform.from_matrix(n2t)
    fld, _ = build_field([_ball_region(centre=(2, 4, 6), radius=9.0)], -0.4, 3.0, 15.0)
    new, logj, st = spike_array(data.astype(np.float64), affine, fld, tf)
    world = np.indices(shape).reshape(3, -1).T @ affine[:3, :3].T + affine[:3, 3]
    y = world @ n2t[:3, :3].T + n2t[:3, 3]
    sup = fld.in_support(y)
    assert st["resampled_voxels"] == sup.sum() > 1000
    # bit-identical where the template position is outside the support
    assert np.array_equal(new.reshape(-1)[~sup], data.reshape(-1)[~sup])
    # inside: I'(x) = I(A psi^-1 A^-1 x), checked against the analytic image (cubic-spline error only)
    z = fld.inverse(y[sup])
    back = (z - n2t[:3, 3]) @ np.linalg.inv(n2t[:3, :3]).T
    expected = f(back)
    assert np.abs(new.reshape(-1)[sup] - expected).max() < 2.0  # of an intensity range of ~140
    assert np.corrcoef(new.reshape(-1)[sup] - data.reshape(-1)[sup], expected - data.reshape(-1)[sup])[0, 1] > 0.99
    # the planted native log-Jacobian equals the numerical Jacobian of the native map x -> A psi A^-1 x
    phi = lambda x: ((fld.displacement(x @ n2t[:3, :3].T + n2t[:3, 3]) + x @ n2t[:3, :3].T + n2t[:3, 3]) - n2t[:3, 3]) @ np.linalg.inv(n2t[:3, :3]).T
    pick = np.flatnonzero(sup)[::97]
    h = 1e-4
    num = np.stack([(phi(world[pick] + h * e) - phi(world[pick] - h * e)) / (2 * h) for e in np.eye(3)], axis=2)
    assert np.allclose(logj.reshape(-1)[pick], np.log(np.linalg.det(num)), atol=1e-5)
    assert np.all(logj.reshape(-1)[~sup] == 0)


def test_draw_design_correlation_and_severity():
    ids = [f"p{i}" for i in range(3000)]
    d = draw_design(ids, np.random.default_rng(0), 0.4, (0.5, 1.5), 0.6)
    lab = np.array([d[i]["label"] == "patient" for i in ids], float)
    cov = np.array([d[i]["covariate"] for i in ids])
    sev = np.array([d[i]["severity"] for i in ids])
    assert lab.mean() == pytest.approx(0.4)
    assert stats.pearsonr(cov, lab)[0] == pytest.approx(0.6, abs=0.04)
    assert np.all(sev[lab == 0] == 0) and sev[lab == 1].min() >= 0.5 and sev[lab == 1].max() <= 1.5
    with pytest.raises(InputError, match="single class"):
        draw_design(ids[:3], np.random.default_rng(0), 0.1, (0.5, 1.5), 0.0)


# ------------------------------------------------------------------ whole command, images in template space


@pytest.fixture(scope="module")
def template_cohort(tmp_path_factory):
    """Three int16 'scans' in template space (4 mm) with scaling and a ball mask (template space)."""
    from neurointerp.atlases import resample_template, working_grid

    root = tmp_path_factory.mktemp("spk")
    shape, aff = working_grid(voxel_size=4.0)
    tpl, _ = resample_template(shape, aff)
    rng = np.random.default_rng(0)
    rows = []
    for k in range(1, 5):
        data = np.clip(np.rint((tpl * 800 + rng.normal(0, 10, shape) + 50 - 10) / 2.0), 0, 32767).astype(np.int16)
        img = nib.Nifti1Image(data, aff)
        img.header.set_slope_inter(2.0, 10.0)
        img.set_qform(aff, code=1)
        path = root / f"in{k}.nii.gz"
        nib.save(img, str(path))
        rows.append({"participant_id": f"s{k}", "image": path.name, "label": "HC", "age": 60 + k})
    pd.DataFrame(rows).to_csv(root / "cohort.csv", index=False)
    ball = np.zeros(shape, np.float32)
    pts = np.indices(shape).reshape(3, -1).T @ aff[:3, :3].T + aff[:3, 3]
    ball.reshape(-1)[np.linalg.norm(pts - np.array([30.0, 10.0, 30.0]), axis=1) < 12] = 1
    nib.save(nib.Nifti1Image(ball, aff), str(root / "ball.nii.gz"))
    return root


def test_spike_in_identity_registration_outputs(template_cohort, tmp_path):
    from neurointerp.cli.app import main

    root = template_cohort
    out = tmp_path / "spk"
    code = main([
        "synth", "spike-in", str(root / "cohort.csv"), str(out), "--atlas", "AAL2", "--region", "Hippocampus L", "--region", "4102",
        "--effect", "-0.4", "--confounder-mask", str(root / "ball.nii.gz"), "--confounder-strength", "0.5",
        "--registration", "identity", "--shape", "40", "--seed", "3",
    ])
    assert code == 0
    cohort = pd.read_csv(out / "cohort.csv")
    assert list(cohort.columns) == ["participant_id", "image", "label", "confounder", "source_label", "age"]
    assert sorted(cohort["label"].unique()) == ["control", "patient"] and (cohort["source_label"] == "HC").all()
    truth = out / "truth"
    for name in ("T1w", "desc-brain_mask", "desc-disease_logjacobian", "desc-disease_mask", "desc-confounder_logjacobian", "desc-confounder_mask", "desc-regions_dseg"):
        img = nib.load(str(truth / f"space-{SPACE}_{name}.nii.gz"))
        assert img.shape == (40, 40, 40)
    regions = pd.read_csv(truth / "regions.tsv", sep="\t")
    assert list(regions["name"]) == ["Hippocampus_L", "Hippocampus_R", "ball"]
    assert np.allclose(regions["logjacobian_at_centre"], [-0.4, -0.4, -0.2], atol=1e-6)
    # the truth lines up with the atlas regions on the truth grid
    lj = nib.load(str(truth / f"space-{SPACE}_desc-disease_logjacobian.nii.gz")).get_fdata()
    dseg = nib.load(str(truth / f"space-{SPACE}_desc-regions_dseg.nii.gz")).get_fdata()
    assert lj[np.isin(dseg, [1, 2])].mean() < -0.2 and np.abs(lj[dseg == 3]).max() < 0.01
    core = lj < -0.2
    assert np.isin(dseg[core], [1, 2]).mean() > 0.6
    subjects = pd.read_csv(truth / "subjects.tsv", sep="\t")
    for rec, row in zip(subjects.to_dict("records"), cohort.to_dict("records")):
        src = nib.load(rec["source_image"])
        new = nib.load(str(out / row["image"]))
        a, b = np.asarray(src.dataobj.get_unscaled()), np.asarray(new.dataobj.get_unscaled())
        assert b.dtype == a.dtype == np.int16
        assert np.array_equal(new.affine, src.affine) and (new.dataobj.slope, new.dataobj.inter) == (src.dataobj.slope, src.dataobj.inter) == (2.0, 10.0)
        assert int(new.header["qform_code"]) == int(src.header["qform_code"]) and int(new.header["sform_code"]) == int(src.header["sform_code"])
        planted = nib.load(str(out / row["image"]).replace("_desc-spikein_T1w", "_desc-planted_logjacobian")).get_fdata()
        assert np.array_equal(a[planted == 0], b[planted == 0])  # bit-identical outside the deformed region
        assert rec["changed_voxels"] == int((a != b).sum())
        if rec["label"] == "patient":
            assert rec["changed_voxels"] > 50 and planted.min() < -0.2
        side = json.loads((out / row["image"].replace(".nii.gz", ".json")).read_text())
        assert side["Subject"]["label"] == rec["label"]


def test_spike_in_refuses_bad_input_before_writing(template_cohort, tmp_path):
    from neurointerp.synth.spikein import spike_in_cohort

    root = template_cohort
    common = dict(registration="identity", shape=32)
    cases = [
        (dict(atlas="AAL2", regions=["Hipocampus_L"]), "did you mean"),
        (dict(atlas="AAL2", regions=["Hippocampus_L=big"]), "must be a number"),
        (dict(atlas="AAL2", regions=["Hippocampus_L=3"]), "between -1.5 and 1.5"),
        (dict(atlas="AAL2", regions=["Hippocampus_L"], effect=2.0), "--effect"),
        (dict(atlas="AAL2", regions=["Hippocampus_L"], patient_fraction=1.0), "patient-fraction"),
        (dict(atlas="AAL2", regions=["Hippocampus_L"], registration="warp"), "--registration"),
        (dict(), "disease regions"),
        (dict(atlas="AAL2", regions=["Hippocampus_L"], confounder_mask=root / "ball.nii.gz", confounder_column="age"), "already has a column"),
        (dict(mask=root / "ball.nii.gz", effect=-1.4, smoothness=2.0, support=20.0, severity_min=3.0, severity_max=3.0), "fold"),
        (dict(mask=root / "ball.nii.gz", smoothness=1.0, support=10.0), "no room for the taper"),
        (dict(mask=root / "ball.nii.gz", smoothness=2.0, support=4.0), "--support must"),
    ]
    for kwargs, message in cases:
        out = tmp_path / "never"
        with pytest.raises(InputError, match=message):
            spike_in_cohort(root / "cohort.csv", out, **{**common, **kwargs})
        assert not out.exists()
    bad = tmp_path / "dup.csv"
    pd.DataFrame([{"participant_id": "a", "image": str(root / "in1.nii.gz")}, {"participant_id": "a", "image": str(root / "in2.nii.gz")}]).to_csv(bad, index=False)
    with pytest.raises(InputError, match="duplicate"):
        spike_in_cohort(bad, tmp_path / "never", atlas="AAL2", regions=["Hippocampus_L"], **common)
    with pytest.raises(InputError, match="not a preprocess output"):
        spike_in_cohort(root / "cohort.csv", tmp_path / "never", atlas="AAL2", regions=["Hippocampus_L"], preprocessed=tmp_path)
    assert not (tmp_path / "never").exists()


def test_sessions_share_the_participant_design(template_cohort, tmp_path):
    from neurointerp.synth.spikein import SpikeInput, spike_in

    root = template_cohort
    inputs = [SpikeInput("a", "1", root / "in1.nii.gz"), SpikeInput("a", "2", root / "in2.nii.gz"), ("b", "1", root / "in3.nii.gz"), ("c", None, root / "in4.nii.gz")]
    table = spike_in(inputs, tmp_path / "ses", atlas="AAL2", regions=["Hippocampus_L"], registration="identity", shape=24, patient_fraction=0.34, seed=1)
    cohort = pd.read_csv(table, dtype={"session_id": str}, keep_default_na=False)
    assert list(cohort["participant_id"]) == ["a", "a", "b", "c"] and list(cohort["session_id"]) == ["1", "2", "1", ""]
    assert cohort["label"].iloc[0] == cohort["label"].iloc[1]
    assert (tmp_path / "ses" / "sub-a" / "ses-2" / "anat" / "sub-a_ses-2_desc-spikein_T1w.nii.gz").exists()
    subjects = pd.read_csv(tmp_path / "ses" / "truth" / "subjects.tsv", sep="\t")
    assert subjects["severity"].iloc[0] == subjects["severity"].iloc[1]


def test_image_variants_are_distinct_posed_copies(tmp_path):
    from neurointerp.synth.variants import image_variants

    shape = (40, 44, 36)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = -np.array(shape) + 1
    g = np.indices(shape).astype(float)
    head = (((g[0] - 20) / 15) ** 2 + ((g[1] - 22) / 18) ** 2 + ((g[2] - 18) / 14) ** 2) < 1
    data = np.where(head, 300 + 100 * np.sin(g[0] / 3.0) * np.cos(g[1] / 4.0), 0).astype(np.int16)
    nib.save(nib.Nifti1Image(data, aff), str(tmp_path / "head.nii.gz"))
    table = image_variants(tmp_path / "head.nii.gz", tmp_path / "v", n=3, seed=0)
    frame = pd.read_csv(table)
    imgs = [nib.load(str(tmp_path / "v" / p)) for p in frame["image"]]
    arrays = [np.asarray(i.dataobj) for i in imgs]
    assert all(a.dtype == np.int16 and a.shape == shape for a in arrays)
    assert all(np.allclose(i.affine, aff) for i in imgs)
    # each variant is a moved copy: different from the source and from the others, same amount of "head"
    for k, a in enumerate(arrays):
        assert np.corrcoef(a.ravel(), data.ravel())[0, 1] < 0.98
        assert abs((a > 150).sum() / (data > 150).sum() - 1) < 0.1
        for b in arrays[k + 1 :]:
            assert not np.array_equal(a, b)


def test_spike_in_takes_a_bids_dataset(template_cohort, tmp_path):
    """A raw BIDS dataset as the cohort: its T1w images, participants.tsv and sessions tables."""
    import shutil

    from neurointerp.synth.spikein import spike_in_cohort

    root = template_cohort
    bids = tmp_path / "bids"
    (bids).mkdir()
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.9.0"}))
    for k, (pid, ses) in enumerate([("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]):
        anat = bids / f"sub-{pid}" / f"ses-{ses}" / "anat"
        anat.mkdir(parents=True)
        shutil.copy(root / f"in{k + 1}.nii.gz", anat / f"sub-{pid}_ses-{ses}_T1w.nii.gz")
    pd.DataFrame({"participant_id": ["sub-a", "sub-b"], "sex": ["F", "M"]}).to_csv(bids / "participants.tsv", sep="\t", index=False)
    for pid in ("a", "b"):
        pd.DataFrame({"session_id": ["ses-1", "ses-2"], "age": [61, 63]}).to_csv(bids / f"sub-{pid}" / f"sub-{pid}_sessions.tsv", sep="\t", index=False)
    table = spike_in_cohort(bids, tmp_path / "spk", atlas="AAL2", regions=["Hippocampus_L"], registration="identity", shape=24, patient_fraction=0.5, seed=1)
    cohort = pd.read_csv(table, dtype={"session_id": str})
    assert list(zip(cohort["participant_id"], cohort["session_id"])) == [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]
    assert list(cohort["sex"]) == ["F", "F", "M", "M"] and list(cohort["age"]) == [61, 63, 61, 63]
    assert cohort["label"].iloc[0] == cohort["label"].iloc[1] and cohort["label"].iloc[2] == cohort["label"].iloc[3]
