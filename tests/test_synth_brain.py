import numpy as np
import pandas as pd
import pytest
from scipy import stats

from neurointerp.atlases import grid_points, working_grid
from neurointerp.io import load_image, read_cohort
from neurointerp.synth.brain import SPACE, age_field, disease_field, draw_subjects, oriented_affine, synth_brain
from neurointerp.synth.deformation import BumpField


def test_bump_field_inverse_and_jacobian_are_exact():
    rng = np.random.default_rng(0)
    field = disease_field(1.3) + age_field(1.0)
    pts = rng.uniform(-60, 60, size=(2000, 3))
    y = field.inverse(pts)
    assert np.abs(y + field.displacement(y, cutoff=np.inf) - pts).max() < 0.05
    # analytic Jacobian matches central finite differences
    h = 1e-4
    jac = field.jacobian(pts[:50])
    num = np.stack(
        [(field.displacement(pts[:50] + h * e, cutoff=np.inf) - field.displacement(pts[:50] - h * e, cutoff=np.inf)) / (2 * h) for e in np.eye(3)],
        axis=2,
    )
    assert np.allclose(jac, np.eye(3) + num, atol=1e-6)
    # a radial bump with amplitude a has log-Jacobian 3*log(1+a) at its centre
    bump = BumpField([(0, 0, 0)], [8.0], [-0.2])
    assert bump.log_jacobian(np.zeros((1, 3)))[0] == pytest.approx(3 * np.log(0.8))


def test_disease_log_jacobian_negative_in_atrophy_zero_far_away():
    shape, aff = working_grid(voxel_size=4.0)
    pts = grid_points(shape, aff)
    logj = disease_field().log_jacobian(pts)
    d_hippo = np.min([np.linalg.norm(pts - c, axis=1) for c in disease_field().centres[:2]], axis=0)
    d_vent = np.min([np.linalg.norm(pts - c, axis=1) for c in disease_field().centres[2:]], axis=0)
    d_any = np.minimum(d_hippo, d_vent)
    assert logj[d_hippo < 3].max() < -0.3  # atrophy at the hippocampi
    assert logj[d_vent < 3].min() > 0.3  # expansion of the ventricles
    assert np.abs(logj[d_any > 45]).max() < 1e-3  # nothing far from the effect
    age = age_field().log_jacobian(pts)
    assert np.abs(age[d_any < 10]).max() < 0.02  # the confounder is spatially distinct


def test_age_correlates_with_diagnosis_at_the_requested_strength():
    rng = np.random.default_rng(5)
    box = (np.array([-70.0, -100, -70]), np.array([70.0, 70, 80]))
    for rho in (0.0, 0.6):
        subs = draw_subjects(2000, rng, 0.5, rho, 70.0, 8.0, 5.0, 5.0, 0.1, box)
        age = np.array([s.age for s in subs])
        pat = np.array([s.label == "patient" for s in subs], float)
        assert stats.pearsonr(age, pat)[0] == pytest.approx(rho, abs=0.05)
        sev = np.array([s.severity for s in subs])
        assert np.all(sev[pat == 0] == 0) and sev[pat == 1].min() >= 0.5 and sev[pat == 1].max() <= 1.5


def test_oriented_affine():
    aff = oriented_affine((10, 12, 14), 2.0, (1.0, 2.0, 3.0), "LPI")
    assert np.allclose(np.diag(aff)[:3], [-2, -2, -2])
    assert np.allclose(aff @ np.r_[(np.array([10, 12, 14]) - 1) / 2, 1], [1, 2, 3, 1])


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("brain") / "cohort"
    synth_brain(out, n_subjects=16, voxel_size=4.0, confound_strength=0.0, effect_size=1.5, template_space=True, seed=11)
    return out


def test_written_cohort_contract(cohort_dir):
    cohort = read_cohort(cohort_dir / "cohort.csv", numeric=["age"])
    assert len(cohort) == 16 and cohort.classes == ["control", "patient"]
    assert set(cohort.frame["sex"]) <= {"F", "M"}
    vol = load_image(cohort.images[0])
    assert vol.affine[0, 0] == -4.0 and vol.affine[1, 1] == 4.0  # LAS scanner grid
    truth = cohort_dir / "truth"
    tpl = load_image(truth / f"space-{SPACE}_T1w.nii.gz")
    shape, aff = working_grid(voxel_size=4.0)
    assert tpl.shape == shape and np.array_equal(tpl.affine, aff.astype(np.float32).astype(float))
    for name in ("disease", "confounder"):
        logj = load_image(truth / f"space-{SPACE}_desc-{name}_logjacobian.nii.gz")
        mask = load_image(truth / f"space-{SPACE}_desc-{name}_mask.nii.gz").data > 0
        assert np.array_equal(logj.affine, tpl.affine)
        assert np.all(np.abs(logj.data[mask]) > 0.05) and mask.sum() > 10
    subjects = pd.read_csv(truth / "subjects.tsv", sep="\t")
    assert list(subjects["participant_id"]) == cohort.participant_ids
    assert {"rot_x_deg", "trans_z_mm", "severity", "age_z"} <= set(subjects.columns)


def test_planted_effect_is_in_the_images(cohort_dir):
    """Patients' ventricles are larger (more dark CSF) in the template-space anatomy."""
    cohort = read_cohort(cohort_dir / "cohort.csv", image_column="template_image")
    truth = cohort_dir / "truth"
    vent = load_image(truth / f"space-{SPACE}_desc-disease_logjacobian.nii.gz").data > 0.2
    vals = np.array([load_image(p).data[vent].mean() for p in cohort.images])
    pat = (cohort.frame["label"] == "patient").to_numpy()
    assert stats.ttest_ind(vals[pat], vals[~pat]).statistic < -3  # darker in patients


def test_deterministic(cohort_dir, tmp_path):
    """Same seed, same images -- also when the subjects are rendered in two worker processes."""
    import json

    synth_brain(tmp_path / "again", n_subjects=16, voxel_size=4.0, confound_strength=0.0, effect_size=1.5, template_space=True, seed=11, n_jobs=2)
    anat = "derivatives/anatomy/{s}/anat/{s}_space-MNI152NLin2009aSym_res-4mm_desc-anatomy_T1w.nii.gz"
    for sub in ("sub-syn001", "sub-syn003", "sub-syn016"):
        for rel in (f"{sub}/anat/{sub}_T1w.nii.gz", anat.format(s=sub)):
            assert np.array_equal(load_image(cohort_dir / rel).data, load_image(tmp_path / "again" / rel).data), rel
    # n_jobs does not change what is written, so it is not a recorded parameter
    params = [json.loads((d / "truth" / "truth.json").read_text())["Parameters"] for d in (cohort_dir, tmp_path / "again")]
    assert params[0] == params[1] and "n_jobs" not in params[1]


def test_scenarios_set_their_values_and_explicit_options_win():
    from neurointerp.errors import InputError
    from neurointerp.synth.brain import SCENARIOS, resolve_scenario

    assert resolve_scenario(None) == (1.0, 0.5, 1.0)  # the defaults are unchanged
    assert resolve_scenario("age-confounded") == (0.5, 0.8, 3.0)
    assert resolve_scenario("unconfounded") == (3.0, 0.0, 3.0)
    assert resolve_scenario("age-confounded", effect_size=1.0) == (1.0, 0.8, 3.0)
    assert resolve_scenario(None, confound_strength=0.0) == (1.0, 0.0, 1.0)
    assert set(SCENARIOS) == {"age-confounded", "unconfounded"}
    with pytest.raises(InputError, match="scenario 'strong': use one of age-confounded, unconfounded"):
        resolve_scenario("strong")


def test_scenario_cohort_equals_the_explicit_options(tmp_path):
    import json

    a = synth_brain(tmp_path / "a", n_subjects=6, voxel_size=10.0, template_space=True, seed=2, scenario="age-confounded")
    b = synth_brain(tmp_path / "b", n_subjects=6, voxel_size=10.0, template_space=True, seed=2, effect_size=0.5, confound_strength=0.8, confound_size=3.0)
    fa, fb = pd.read_csv(a), pd.read_csv(b)
    assert fa[["label", "age", "sex"]].equals(fb[["label", "age", "sex"]])
    img = "derivatives/anatomy/sub-syn003/anat/sub-syn003_space-MNI152NLin2009aSym_res-10mm_desc-anatomy_T1w.nii.gz"
    assert np.array_equal(load_image(tmp_path / "a" / img).data, load_image(tmp_path / "b" / img).data)
    pa = json.loads((tmp_path / "a" / "truth" / "truth.json").read_text())["Parameters"]
    pb = json.loads((tmp_path / "b" / "truth" / "truth.json").read_text())["Parameters"]
    assert pa.pop("scenario") == "age-confounded" and pa == pb
    assert pb["effect_size"] == 0.5 and pb["confound_size"] == 3.0
    # without a scenario the record has the same keys as before (no 'scenario')
    c = synth_brain(tmp_path / "c", n_subjects=2, voxel_size=10.0, seed=2)
    pc = json.loads((c.parent / "truth" / "truth.json").read_text())["Parameters"]
    assert "scenario" not in pc and (pc["effect_size"], pc["confound_strength"], pc["confound_size"]) == (1.0, 0.5, 1.0)


def test_age_confounded_scenario_puts_age_in_the_images_and_the_labels():
    from neurointerp.synth.brain import resolve_scenario

    effect, rho, size = resolve_scenario("age-confounded")
    rng = np.random.default_rng(0)
    box = (np.array([-70.0, -100, -70]), np.array([70.0, 70, 80]))
    subs = draw_subjects(3000, rng, 0.5, rho, 70.0, 8.0, 5.0, 5.0, 0.1, box)
    age = np.array([s.age for s in subs])
    pat = np.array([s.label == "patient" for s in subs], float)
    assert stats.pearsonr(age, pat)[0] == pytest.approx(0.8, abs=0.03)
    # the frontal atrophy at +1 SD of age outweighs the disease's local change at severity 1
    shape, aff = working_grid(voxel_size=4.0)
    pts = grid_points(shape, aff)
    assert np.abs(age_field(size).log_jacobian(pts)).sum() > 3 * np.abs(disease_field(effect).log_jacobian(pts)).sum()
