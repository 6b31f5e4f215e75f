"""group-map end to end: synthetic log-Jacobian cohorts with a planted disease pattern, the
t-map against nilearn's SecondLevelModel, outputs/affines/sidecars, bad input, the CLI."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurointerp.cli.app import main
from neurointerp.group import group_map
from neurointerp.group.synthetic import synth_logjacobian_maps


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logj")
    return synth_logjacobian_maps(folder, n_subjects=30, voxel_size=8.0, noise=0.03, seed=0)


@pytest.fixture(scope="module")
def result(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("gm")
    summary = group_map(str(cohort["table"]), out, design="label,age,sex", atlas="AAL2", n_perm=200, seed=3, figures=True)
    return out, json.loads(summary.read_text())


def _load(out, name):
    img = nib.load(str(out / "group" / name))
    return np.asarray(img.dataobj, dtype=np.float64), img.affine


STEM = "space-MNI152NLin2009aSym_desc-patientVScontrol{}_statmap.nii.gz"


def test_significant_cluster_overlaps_planted_disease(cohort, result):
    out, summary = result
    q, aff = _load(out, STEM.format("Q"))
    np.testing.assert_allclose(aff, cohort["affine"], atol=1e-5)
    assert q.shape == cohort["shape"]
    sig = q <= 0.05
    truth = cohort["disease_mask"]
    from scipy import ndimage

    near = ndimage.binary_dilation(truth, iterations=1)
    assert sig.sum() >= 20
    precision = (sig & near).sum() / sig.sum()
    recall = (sig & truth).sum() / truth.sum()
    assert precision > 0.75 and recall > 0.5, (precision, recall)
    # permutation FWE: stricter than FDR, still inside the planted pattern
    pfwe, _ = _load(out, STEM.format("Pfwe"))
    fwe = pfwe <= 0.05
    assert 0 < fwe.sum() <= sig.sum() and (fwe & near).sum() / fwe.sum() > 0.9
    g = summary["glm"]
    assert g["n_fdr_significant"] == int(sig.sum()) and g["n_perm"] == 200 and g["df"] == 30 - 4
    # hippocampal atrophy: negative t at the planted left hippocampus
    t, _ = _load(out, STEM.format("T"))
    ijk = np.rint(np.linalg.solve(aff, [-26, -22, -14, 1])[:3]).astype(int)
    assert t[tuple(ijk)] < -4


def test_outputs_descriptive_maps_sidecars_and_region_table(cohort, result):
    out, summary = result
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    tab = pd.read_csv(cohort["table"], sep="\t")
    maps = np.stack([nib.load(str(cohort["table"].parent / m)).get_fdata() for m in tab["map"]])
    pat = (tab["label"] == "patient").to_numpy()
    mean, aff = _load(out, "space-MNI152NLin2009aSym_desc-patientMean_statmap.nii.gz")
    np.testing.assert_allclose(mean, maps[pat].mean(0), atol=1e-6)
    sd, _ = _load(out, "space-MNI152NLin2009aSym_desc-controlSd_statmap.nii.gz")
    np.testing.assert_allclose(sd, maps[~pat].std(0, ddof=1), atol=1e-6)
    mabs, _ = _load(out, "space-MNI152NLin2009aSym_desc-controlMeanabs_statmap.nii.gz")
    np.testing.assert_allclose(mabs, np.abs(maps[~pat]).mean(0), atol=1e-6)
    cnt, _ = _load(out, "space-MNI152NLin2009aSym_desc-patientCount_statmap.nii.gz")
    np.testing.assert_array_equal(cnt, (maps[pat] != 0).sum(0))
    side = json.loads((out / "group" / STEM.format("T").replace(".nii.gz", ".json")).read_text())
    assert side["GeneratedBy"]["Command"] == "group-map" and side["Seed"] == 3
    assert len(side["Inputs"]) == 30 and all(len(i["sha256"]) == 64 for i in side["Inputs"])
    assert side["Contrast"]["name"] == "patientVScontrol"
    for png in [o for o in summary["outputs"] if o.endswith(".png")]:
        assert (out / png).stat().st_size > 1000
    assert any("glass" in o for o in summary["outputs"])
    rt = pd.read_csv(out / summary["regions"]["table"], sep="\t")
    assert {"name", "mean_control", "median_patient", "effect_size_d", "t", "q_fdr", "rank", "rank_patient"} <= set(rt.columns)
    assert list(rt["rank"]) == sorted(rt["rank"])
    top = " ".join(rt["name"].head(6))
    assert "Hippocampus" in top or "ParaHippocampal" in top, top


def test_t_map_equals_nilearn_second_level_model(cohort, tmp_path):
    from nilearn.glm.second_level import SecondLevelModel

    out = tmp_path / "o"
    group_map(str(cohort["table"]), out, design="label,age", figures=False)
    t, aff = _load(out, STEM.format("T"))
    mask_img = nib.load(str(out / "group" / "space-MNI152NLin2009aSym_desc-analysis_mask.nii.gz"))
    tab = pd.read_csv(cohort["table"], sep="\t")
    dm = pd.DataFrame({"intercept": 1.0, "patient": (tab["label"] == "patient").astype(float), "age": tab["age"] - tab["age"].mean()})
    imgs = [str(cohort["table"].parent / m) for m in tab["map"]]
    slm = SecondLevelModel(mask_img=mask_img, smoothing_fwhm=None, n_jobs=1).fit(imgs, design_matrix=dm)
    t_ref = slm.compute_contrast("patient", output_type="stat").get_fdata()
    m = np.asarray(mask_img.dataobj) > 0
    np.testing.assert_allclose(t[m], t_ref[m], atol=1e-6, rtol=1e-6)
    z_ref = slm.compute_contrast("patient", output_type="z_score").get_fdata()
    z, _ = _load(out, STEM.format("Z"))
    ok = m & (np.abs(z_ref) < 7)  # nilearn clips tail probabilities
    np.testing.assert_allclose(z[ok], z_ref[ok], atol=1e-5)


def test_folder_input_with_covariates_table_and_user_atlas_and_mirror(cohort, tmp_path):
    from neurointerp.io import save_image

    tab = pd.read_csv(cohort["table"], sep="\t")
    covs = tmp_path / "participants.tsv"
    tab.assign(participant_id="sub-" + tab["participant_id"].astype(str).str.zfill(4)).drop(columns=["map"]).to_csv(covs, sep="\t", index=False)
    # a two-region user atlas: left and right halves of the grid (world x < 0 / x > 0)
    shape, aff = cohort["shape"], cohort["affine"]
    x = (aff[:3, :3] @ np.indices(shape).reshape(3, -1) + aff[:3, 3:4])[0].reshape(shape)
    lab = np.where(x < 0, 1, 2).astype(np.int16) * cohort["brain_mask"]
    atlas = save_image(lab, aff, tmp_path / "halves.nii.gz", dtype=np.int16)
    (tmp_path / "halves.tsv").write_text("index\tname\n1\tleft\n2\tright\n")
    out = tmp_path / "o"
    summary = json.loads(group_map(str(cohort["table"].parent), out, covariates=covs, design="~ label + age", atlas=str(atlas), labels=tmp_path / "halves.tsv", mirror=True, figures=False).read_text())
    assert summary["n_maps"] == 30 and summary["groups"] == {"control": 15, "patient": 15}
    rt = pd.read_csv(out / summary["regions"]["table"], sep="\t")
    assert set(rt["name"]) == {"left", "right"}
    # the planted pattern is symmetric: both halves have similar effects
    assert abs(rt["effect_size_d"].iloc[0] - rt["effect_size_d"].iloc[1]) < 0.5 * abs(rt["effect_size_d"]).max()


def test_mirror_map_fills_the_empty_hemisphere():
    from neurointerp.group.display import mirror_map

    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    aff[:3, 3] = [-30.0, -20, -20]  # x = -30 ... 30: symmetric about 0
    data = np.zeros((16, 11, 11), dtype=np.float32)
    data[2, 5, 5] = 3.0  # x = -22
    m = mirror_map(data, aff)
    assert m[2, 5, 5] == 3.0 and m[13, 5, 5] == pytest.approx(3.0)  # x = +22
    assert np.count_nonzero(m) == 2


def test_cli_runs_and_names_match_library(cohort, tmp_path):
    import inspect

    from neurointerp.cli import group_map as cli

    cli_only = ("config", "_click_context")  # --config and the click context are the CLI's own
    assert [p for p in inspect.signature(cli.group_map).parameters if p not in cli_only] == [p for p in inspect.signature(group_map).parameters if p != "options"]
    rc = main(["--quiet", "group-map", str(cohort["table"]), str(tmp_path / "o"), "--design", "label,age", "--no-figures", "--contrast", "control-patient"])
    assert rc == 0
    assert (tmp_path / "o" / "group" / "space-MNI152NLin2009aSym_desc-controlVSpatientT_statmap.nii.gz").exists()
    rc = main(["--quiet", "group-map", str(cohort["table"]), str(tmp_path / "o"), "--no-figures"])
    assert rc == 2  # not empty without --force


def _one_line_error(capsys, args):
    rc = main(["--quiet", *args])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_inputs_one_line_exit_2(cohort, tmp_path, capsys):
    import shutil

    from neurointerp.io import save_image

    src = cohort["table"].parent
    folder = tmp_path / "maps"
    folder.mkdir()
    tab = pd.read_csv(cohort["table"], sep="\t", dtype={"participant_id": str}).head(6)
    for m in tab["map"]:
        shutil.copy(src / m, folder / m)
    tab.to_csv(folder / "maps.tsv", sep="\t", index=False)
    # a map on another grid (shifted origin)
    img = nib.load(str(folder / tab["map"][3]))
    aff = img.affine.copy()
    aff[0, 3] += 4.0
    save_image(np.asarray(img.dataobj), aff, folder / tab["map"][3], force=True)
    msg = _one_line_error(capsys, ["group-map", str(folder / "maps.tsv"), str(tmp_path / "o1")])
    assert str(folder / tab["map"][3]) in msg and "affine differs" in msg
    data = np.asarray(img.dataobj)
    save_image(data[:-1], img.affine, folder / tab["map"][3], force=True)
    msg = _one_line_error(capsys, ["group-map", str(folder / "maps.tsv"), str(tmp_path / "o2")])
    assert str(folder / tab["map"][3]) in msg and "grid" in msg
    # a map with NaNs
    bad = data.copy()
    bad[5, 5, 5] = np.nan
    save_image(bad, img.affine, folder / tab["map"][3], force=True)
    msg = _one_line_error(capsys, ["group-map", str(folder / "maps.tsv"), str(tmp_path / "o3")])
    assert tab["map"][3] in msg and "NaN" in msg
    save_image(data, img.affine, folder / tab["map"][3], force=True)
    # a covariate missing for one subject
    tab.loc[2, "age"] = np.nan
    tab.to_csv(folder / "maps.tsv", sep="\t", index=False)
    msg = _one_line_error(capsys, ["group-map", str(folder / "maps.tsv"), str(tmp_path / "o4"), "--design", "label,age"])
    assert "maps.tsv row 4" in msg and "age is missing" in msg and "participant '0002'" in msg
    # a subject without a row in the covariates table
    covs = tmp_path / "covs.csv"
    tab.drop(index=5).drop(columns=["map"]).to_csv(covs, index=False)
    msg = _one_line_error(capsys, ["group-map", str(folder), str(tmp_path / "o5"), "--covariates", str(covs)])
    assert tab["map"][5] in msg and "no row in" in msg
    msg = _one_line_error(capsys, ["group-map", str(folder / "maps.tsv"), str(tmp_path / "o6"), "--design", "label,bmi"])
    assert "bmi" in msg
    msg = _one_line_error(capsys, ["group-map", str(folder / "maps.tsv"), str(tmp_path / "o7"), "--design", "label,sex", "--atlas", "NoSuchAtlas"])
    assert "unknown atlas 'NoSuchAtlas'" in msg


def test_regional_grey_matter_volumetry_with_atropos(tmp_path):
    """Fig. 7 check: Atropos GM volumes per AAL2 region of template-space synth-brain images,
    GLM with age and sex; the table's t equals statsmodels OLS on the written volumes."""
    pytest.importorskip("ants")
    import statsmodels.api as sm

    from neurointerp.group.volumetry import segment_grey_matter
    from neurointerp.progress import set_quiet
    from neurointerp.synth.brain import synth_brain

    set_quiet(True)
    table = synth_brain(tmp_path / "c", n_subjects=12, voxel_size=8.0, template_space=True, noise=0.0, bias=0.0, seed=1)
    tab = pd.read_csv(table, dtype={"participant_id": str})
    tab["map"] = tab["template_image"]
    tab.to_csv(tmp_path / "c" / "maps.csv", index=False)
    summary = json.loads(group_map(str(tmp_path / "c" / "maps.csv"), tmp_path / "o", design="label,age,sex", atlas="AAL2", volumes="template_image", figures=True, top=3).read_text())
    vol = summary["volumetry"]
    per_subject = pd.read_csv(tmp_path / "o" / vol["volumes"], sep="\t", dtype={"participant_id": str})
    vt = pd.read_csv(tmp_path / "o" / vol["table"], sep="\t")
    assert list(per_subject["participant_id"]) == list(tab["participant_id"])
    assert (per_subject["total_gm_mm3"] > 3e5).all() and (per_subject["total_gm_mm3"] < 1.2e6).all()
    assert {"Hippocampus_L", "Hippocampus_R"} <= set(vt["name"])
    assert {"mean_gm_mm3_control", "mean_gm_mm3_patient", "t", "p", "q_fdr", "rank"} <= set(vt.columns)
    X = np.column_stack([np.ones(12), (tab["label"] == "patient").astype(float), tab["age"] - tab["age"].mean(), (tab["sex"] == sorted(tab["sex"].unique())[-1]).astype(float)])
    row = vt.iloc[0]
    fit = sm.OLS(per_subject[row["name"]].to_numpy(), X).fit()
    assert row["t"] == pytest.approx(fit.tvalues[1], rel=1e-6)
    assert (tmp_path / "o" / vol["boxplots"]).stat().st_size > 5000
    img = tmp_path / "c" / tab["template_image"][0]
    gm1, gm2 = segment_grey_matter(img), segment_grey_matter(img)
    assert gm1.shape == nib.load(str(img)).shape and 0 <= gm1.min() and gm1.max() <= 1 + 1e-6
    np.testing.assert_allclose(gm1, gm2, atol=1e-6)  # repeatable
