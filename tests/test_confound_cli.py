"""confound-test and confounder-free saliency, end to end on the width Gaussians."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from neurointerp.attribution.pipeline import run_saliency
from neurointerp.cli.app import main
from neurointerp.confound.run import run_confound_test
from neurointerp.errors import InputError
from neurointerp.io import load_image
from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
from neurointerp.models.classifier import ConvClassifier
from neurointerp.models.inputs import InputSpec
from neurointerp.synth.gaussians import block_masks, synth_gaussians
from neurointerp.train.arrays import fit_binary_on_arrays


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("conf")
    synth_gaussians(root / "train", variant="width", n_per_group=128, seed=0)
    synth_gaussians(root / "test", variant="width", n_per_group=8, seed=1)
    test = pd.read_csv(root / "test" / "cohort.csv")
    test["participant_id"] = ["t" + p for p in test["participant_id"]]  # other people than the training set
    test.to_csv(root / "test" / "cohort.csv", index=False)
    frame = pd.read_csv(root / "train" / "cohort.csv")
    x = torch.from_numpy(np.stack([load_image(root / "train" / p, ndim=2).data for p in frame["image"]])[:, None])
    y = torch.tensor(frame["label"].to_numpy(np.float32))
    torch.manual_seed(0)
    model = ConvClassifier((32, 32), channels=(8, 8, 2), kernel_size=2, hidden=(16,), activation="tanh")
    fit_binary_on_arrays(model, x, y, epochs=40, batch_size=32, lr=3e-3)
    spec = InputSpec((32, 32), np.eye(4), space="synthetic")
    ckpt = checkpoint_dict(model.eval(), spec, "binary", ["0", "1"], "cas2d", {"participant_ids": list(frame["participant_id"])}, {})
    save_checkpoint(root / "model.pt", ckpt)
    return root


def test_confound_test_then_confounder_free_saliency(setup):
    root = setup
    rc = main(["--quiet", "confound-test", str(root / "model.pt"), str(root / "train" / "cohort.csv"), str(root / "ct"), "--confounder", "sigma_B", "--confounder", "sigma_C", "--allow-unvalidated"])
    assert rc == 0
    mask = json.loads((root / "ct" / "mask.json").read_text())
    table = pd.read_csv(root / "ct" / "confound_glm.tsv", sep="\t")
    assert len(mask["mask"]) == 32 == len(table)
    assert {"t_sigma_B", "p_sigma_C", "beta_score", "confounded"} <= set(table.columns)
    assert 0 < sum(1 - np.array(mask["mask"])) < 32
    summary = json.loads((root / "ct" / "summary.json").read_text())
    assert summary["NConfounded"] == int(table["confounded"].sum())

    out = run_saliency(root / "model.pt", root / "test" / "cohort.csv", root / "sal", method=["saliency"], confounder_mask=root / "ct" / "mask.json", allow_unvalidated=True)
    full = run_saliency(root / "model.pt", root / "test" / "cohort.csv", root / "sal_full", method=["saliency"], allow_unvalidated=True)
    ad = block_masks()["diagonal"]
    cfree = np.mean([load_image(p, ndim=2, allow_empty=True).data for p in sorted(out.glob("sub-*/anat/*desc-saliencycfree_attribution.nii.gz"))], axis=0)
    plain = np.mean([load_image(p, ndim=2, allow_empty=True).data for p in sorted(full.glob("sub-*/anat/*desc-saliency_attribution.nii.gz"))], axis=0)
    diff = sorted(out.glob("sub-*/anat/*desc-saliencycdiff_attribution.nii.gz"))
    assert len(diff) == 16
    share = lambda m: np.abs(m)[ad].sum() / np.abs(m).sum()  # noqa: E731
    assert share(cfree) > share(plain) + 0.1  # the confounded blocks B, C lose their saliency
    side = json.loads(sorted(out.glob("sub-*/anat/*desc-saliencycfree_attribution.json"))[0].read_text())
    assert side["ConfounderMask"]["features"] == 32


def test_bad_confounders(setup, tmp_path):
    root = setup
    frame = pd.read_csv(root / "train" / "cohort.csv")
    frame["image"] = [str(root / "train" / p) for p in frame["image"]]
    frame.loc[[3, 5], "sigma_B"] = np.nan
    frame.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(InputError, match=r"2 missing confounder values \(row 5: sigma_B; row 7: sigma_B\)"):
        run_confound_test(root / "model.pt", tmp_path / "c.csv", tmp_path / "o", confounder=["sigma_B"], allow_unvalidated=True)
    path = run_confound_test(root / "model.pt", tmp_path / "c.csv", tmp_path / "o", confounder=["sigma_B"], drop_missing=True, allow_unvalidated=True)
    assert json.loads((path.parent / "summary.json").read_text())["NSubjects"] == len(frame) - 2
    with pytest.raises(InputError, match="confounder column 'pds' not found"):
        run_confound_test(root / "model.pt", tmp_path / "c.csv", tmp_path / "o2", confounder=["pds"], allow_unvalidated=True)
    frame["site"] = "A"
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(InputError, match="confounder 'site' has a single level"):
        run_confound_test(root / "model.pt", tmp_path / "d.csv", tmp_path / "o3", confounder=["site"], allow_unvalidated=True)
    assert main(["confound-test", str(root / "model.pt"), str(tmp_path / "d.csv"), str(tmp_path / "o4"), "--confounder", "site", "--allow-unvalidated"]) == 2


def test_model_level_tests_on_training_and_heldout_subjects(setup, tmp_path):
    root = setup
    # the training cohort: the tests run, and say loudly that these subjects trained the model
    path = run_confound_test(root / "model.pt", root / "train" / "cohort.csv", tmp_path / "tr", confounder=["sigma_B", "sigma_C"], permutations=199, allow_unvalidated=True)
    tests = json.loads((path.parent / "summary.json").read_text())["ModelTests"]
    assert tests["Subjects"]["kind"] == "training" and tests["Subjects"]["n"] == 256
    assert tests["Score"] == "logit of P(1)"
    assert any(line.startswith("Caution: all 256 given subjects were used to TRAIN the model") for line in tests["Conclusions"])
    # the paper's confounders drive the score within each group (sigma_B, sigma_C are wider in group 1)
    assert all(w["significant"] and w["r"] > 0 for w in tests["WithinClass"])
    table = pd.read_csv(path.parent / "model_tests.tsv", sep="\t")
    assert len(table) == 5 and table.loc[0, "test"] == "score beyond confounders (LR)"
    html = (path.parent / "report.html").read_text()
    assert "Is the model right for the wrong reason?" in html and "depends on sigma_B within class &#x27;0&#x27;" in html
    # training and held-out participants together: the tests use the held-out ones only
    train = pd.read_csv(root / "train" / "cohort.csv")
    train["image"] = [str(root / "train" / p) for p in train["image"]]
    test = pd.read_csv(root / "test" / "cohort.csv")
    test["image"] = [str(root / "test" / p) for p in test["image"]]
    pd.concat([train, test]).to_csv(tmp_path / "both.csv", index=False)
    path = run_confound_test(root / "model.pt", tmp_path / "both.csv", tmp_path / "both", confounder=["sigma_B"], permutations=199, allow_unvalidated=True)
    summary = json.loads((path.parent / "summary.json").read_text())
    tests = summary["ModelTests"]
    assert summary["NSubjects"] == 272  # the GLM keeps every subject, as before
    assert tests["Subjects"]["kind"] == "heldout" and tests["Subjects"]["n"] == 16
    assert "the other 256 given participants trained the model" in tests["Subjects"]["note"]
    assert tests["BeyondConfounders"]["n"] == 16 and [w["n"] for w in tests["WithinClass"]] == [8, 8]


def test_model_level_tests_inputs(setup, tmp_path):
    root = setup
    frame = pd.read_csv(root / "train" / "cohort.csv")
    frame["image"] = [str(root / "train" / p) for p in frame["image"]]
    frame.loc[4, "label"] = 7
    frame.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(InputError, match=r"c.csv row 6: label '7' is not a class of the model \(0, 1\)"):
        run_confound_test(root / "model.pt", tmp_path / "c.csv", tmp_path / "o", confounder=["sigma_B"], allow_unvalidated=True)
    assert not (tmp_path / "o").exists()  # refused before anything was written
    path = run_confound_test(root / "model.pt", tmp_path / "c.csv", tmp_path / "o", confounder=["sigma_B"], model_tests=False, allow_unvalidated=True)
    assert "ModelTests" not in json.loads((path.parent / "summary.json").read_text())
    assert not (path.parent / "model_tests.tsv").exists()
    frame.drop(columns=["label"]).to_csv(tmp_path / "nolabel.csv", index=False)
    path = run_confound_test(root / "model.pt", tmp_path / "nolabel.csv", tmp_path / "n", confounder=["sigma_B"], allow_unvalidated=True)
    assert "no 'label' column" in json.loads((path.parent / "summary.json").read_text())["ModelTests"]["NotRun"]
    with pytest.raises(InputError, match="--permutations 10"):
        run_confound_test(root / "model.pt", tmp_path / "nolabel.csv", tmp_path / "p", confounder=["sigma_B"], permutations=10, allow_unvalidated=True)
    assert main(["--quiet", "confound-test", str(root / "model.pt"), str(tmp_path / "nolabel.csv"), str(tmp_path / "q"), "--confounder", "sigma_B", "--permutations", "10", "--allow-unvalidated"]) == 2


def test_group_difference_maps(setup, tmp_path):
    """The group mean of the per-subject cdiff maps, and its whole-grid confounder share."""
    root = setup
    mask = run_confound_test(root / "model.pt", root / "train" / "cohort.csv", tmp_path / "ct", confounder=["sigma_B", "sigma_C"], model_tests=False, allow_unvalidated=True)
    out = run_saliency(root / "model.pt", root / "test" / "cohort.csv", tmp_path / "sal", method=["saliency"], confounder_mask=mask, allow_unvalidated=True)
    diff = np.stack([load_image(p, ndim=2, allow_empty=True).data for p in sorted(out.glob("sub-*/anat/*desc-saliencycdiff_attribution.nii.gz"))])
    free = np.stack([load_image(p, ndim=2, allow_empty=True).data for p in sorted(out.glob("sub-*/anat/*desc-saliencycfree_attribution.nii.gz"))])
    group = out / "group"
    mean = load_image(group / "space-synthetic_label-all_desc-saliencycdiffMean_attribution.nii.gz", ndim=2, allow_empty=True).data
    mean_abs = load_image(group / "space-synthetic_label-all_desc-saliencycdiffMeanabs_attribution.nii.gz", ndim=2, allow_empty=True).data
    assert np.allclose(mean, diff.mean(0), atol=1e-6) and np.allclose(mean_abs, np.abs(diff).mean(0), atol=1e-6)
    side = json.loads((group / "space-synthetic_label-all_desc-saliencycdiffMeanabs_attribution.json").read_text())
    a, b = np.abs(diff).mean(0).sum(), np.abs(free).mean(0).sum()
    assert side["ConfounderShare"] == pytest.approx(a / (a + b), rel=1e-5) and side["NMaps"] == 16
    assert (group / "space-synthetic_label-1_desc-saliencycdiffMeanabs_attribution.nii.gz").exists()


def test_confounder_region_table_equals_an_explicit_loop():
    from neurointerp.attribution.group import confounder_region_table

    rng = np.random.default_rng(0)
    labels = rng.choice([0, 3, 5, 9], size=(6, 7, 5))
    diff = rng.normal(size=labels.shape)
    free_abs = np.abs(rng.normal(size=labels.shape))
    table = confounder_region_table(np.abs(diff), diff, free_abs, labels, {3: "A", 5: "B", 9: "C"})
    assert sorted(table["name"]) == ["A", "B", "C"]
    for row in table.itertuples():
        sel = labels == row.index
        assert row.n_voxels == sel.sum()
        assert row.mean_abs_attribution == pytest.approx(np.abs(diff[sel]).mean())
        assert row.mean_attribution == pytest.approx(diff[sel].mean())
        assert row.mean_abs_confounder_free == pytest.approx(free_abs[sel].mean())
        assert row.confounder_share == pytest.approx(np.abs(diff[sel]).sum() / (np.abs(diff[sel]).sum() + free_abs[sel].sum()))
    assert list(table["rank"]) == [1, 2, 3] and table["mean_abs_attribution"].is_monotonic_decreasing


def test_gradcam_and_cam_read_after_the_gate_are_refused(setup, tmp_path, capsys):
    """A gate at an early layer cannot change Grad-CAM read at a later layer, nor CAM at the pooling:
    refused in one line naming both layers (it wrote the full map under a confounder-free name)."""
    root = setup
    early = tmp_path / "early.json"
    early.write_text(json.dumps({"mask": [1] * 8, "layer": "encoder.stack1"}))
    torch.manual_seed(0)
    gap = ConvClassifier((32, 32), channels=(4, 6), head="gap", hidden=())  # CAM needs global average pooling
    save_checkpoint(tmp_path / "gap.pt", checkpoint_dict(gap.eval(), InputSpec((32, 32), np.eye(4), space="synthetic"), "binary", ["0", "1"], "gap2d", {"participant_ids": []}, {}))
    for model, method, expect in ((root / "model.pt", "gradcam", "Grad-CAM reads layer 'encoder.stack3"), (tmp_path / "gap.pt", "cam", "CAM reads layer 'encoder.gap'")):
        with pytest.raises(InputError, match="gates layer 'encoder.stack1'") as err:
            run_saliency(model, root / "test" / "cohort.csv", tmp_path / method, method=[method], confounder_mask=early, allow_unvalidated=True)
        assert expect in str(err.value) and "would equal the full map" in str(err.value)
        assert not (tmp_path / method).exists()
    code = main(["--quiet", "saliency", str(root / "model.pt"), str(root / "test" / "cohort.csv"), str(tmp_path / "cli"), "--method", "gradcam",
                 "--confounder-mask", str(early), "--allow-unvalidated"])
    err_lines = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("warning: ")]
    assert code == 2 and len(err_lines) == 1 and "--layer" in err_lines[0]
    # read before the gate, Grad-CAM is changed by it: allowed
    late = tmp_path / "late.json"
    late.write_text(json.dumps({"mask": [1, 0] * 16, "layer": "encoder"}))
    full = run_saliency(root / "model.pt", root / "test" / "cohort.csv", tmp_path / "full", method=["gradcam"], layer="encoder.stack1", allow_unvalidated=True)
    free = run_saliency(root / "model.pt", root / "test" / "cohort.csv", tmp_path / "free", method=["gradcam"], layer="encoder.stack1", confounder_mask=late, allow_unvalidated=True)
    a = np.stack([load_image(p, ndim=2, allow_empty=True).data for p in sorted(full.glob("sub-*/anat/*desc-gradcam_attribution.nii.gz"))])
    b = np.stack([load_image(p, ndim=2, allow_empty=True).data for p in sorted(free.glob("sub-*/anat/*desc-gradcamcfree_attribution.nii.gz"))])
    assert a.shape == b.shape and not np.allclose(a, b)


def test_a_mask_of_another_model_is_refused_once_before_any_subject(setup, tmp_path, capsys):
    """A mask whose length does not match its layer (another model's) stops the run in one line
    naming the file, before any subject (it used to fail every subject with the same error)."""
    root = setup
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"mask": [1, 0] * 20, "layer": "encoder"}))  # the encoder has 32 features
    code = main(["--quiet", "saliency", str(root / "model.pt"), str(root / "test" / "cohort.csv"), str(tmp_path / "sal"), "--method", "gradient",
                 "--confounder-mask", str(other), "--allow-unvalidated"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("warning: ")]
    assert code == 2 and len(err) == 1 and str(other) in err[0] and "40 features" in err[0] and "has 32" in err[0], err
    assert not (tmp_path / "sal").exists()
