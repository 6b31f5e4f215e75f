"""saliency end to end on a small synth-brain cohort with a quickly trained 3D model."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from neurointerp.attribution.pipeline import run_saliency
from neurointerp.errors import InputError
from neurointerp.io import load_image, read_cohort
from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
from neurointerp.models.classifier import ConvClassifier
from neurointerp.models.inputs import InputSpec
from neurointerp.synth.brain import SPACE, synth_brain
from neurointerp.train.arrays import fit_binary_on_arrays


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sal")
    synth_brain(root / "data", n_subjects=120, voxel_size=6.0, effect_size=3.0, confound_strength=0.0, confound_size=0.0, noise=0.0, template_space=True, seed=3)
    cohort = read_cohort(root / "data" / "cohort.csv")
    frame = cohort.frame.copy()
    frame["image"] = [str(root / "data" / p) for p in frame["template_image"]]
    frame = frame.drop(columns=["template_image"])
    train_rows, test_rows = frame.iloc[:96], frame.iloc[96:]
    train_rows.to_csv(root / "train.csv", index=False)
    test_rows.to_csv(root / "test.csv", index=False)
    vols = [load_image(p) for p in train_rows["image"]]
    spec = InputSpec(vols[0].shape, vols[0].affine, space=SPACE, normalize="zscore")
    x = spec.prepare(np.stack([v.data for v in vols]))
    y = torch.tensor((train_rows["label"] == "patient").to_numpy(np.float32))
    torch.manual_seed(0)
    model = ConvClassifier(spec.model_shape, channels=(4,), kernel_size=3, hidden=())  # small data: a shallow model
    fit_binary_on_arrays(model, x, y, epochs=15, batch_size=8, lr=3e-3, weight_decay=1e-3)
    ckpt = checkpoint_dict(model, spec, "binary", ["control", "patient"], "test3d", {"participant_ids": list(train_rows["participant_id"])}, {})
    save_checkpoint(root / "model.pt", ckpt)
    return root


def test_maps_keep_the_grid_and_score_against_truth(setup):
    root = setup
    truth = root / "data" / "truth" / f"space-{SPACE}_desc-disease_logjacobian.nii.gz"
    out = run_saliency(root / "model.pt", root / "test.csv", root / "out", method=["gradxinput", "integrated-gradients", "occlusion", "region-perturbation"], steps=8, window=4, stride=4, ground_truth=str(truth), allow_unvalidated=True)
    test = read_cohort(root / "test.csv")
    for pid, img in zip(test.participant_ids, test.images):
        src = load_image(img)
        for desc in ("gradxinput", "integratedgradients", "occlusion", "regionperturbation"):
            path = out / f"sub-{pid}" / "anat" / f"sub-{pid}_space-{SPACE}_res-6mm_desc-{desc}_attribution.nii.gz"
            m = load_image(path, allow_empty=True)
            assert m.shape == src.shape and np.array_equal(m.affine, src.affine)
            side = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
            assert side["Checkpoint"]["sha256"] and side["Space"] == SPACE and side["TargetChoice"] == "predicted class"
            assert side["TargetClass"] in ("control", "patient") and side["Inputs"][0]["sha256"]
    summary = pd.read_csv(out / "group" / "scores_summary.tsv", sep="\t")
    assert summary["ncc_mean"].max() > 0.15, summary
    for label in ("all", "control", "patient"):
        assert (out / "group" / f"space-{SPACE}_res-6mm_label-{label}_desc-occlusionMeanabs_attribution.nii.gz").exists()
    assert (out / "group" / "desc-gradxinput_meanabs.png").stat().st_size > 1000
    roi = pd.read_csv(out / "group" / f"space-{SPACE}_desc-occlusion_label-all_atlas-AAL2_roi-table.tsv", sep="\t")
    assert list(roi["rank"][:3]) == [1, 2, 3] and (roi["atlas"] == "AAL2").all()
    assert roi["mean_abs_attribution"].is_monotonic_decreasing and roi["n_voxels"].min() > 0
    assert roi["name"].str.contains("Hippocampus").any()


def test_refuses_training_participants_and_resumes(setup):
    root = setup
    with pytest.raises(InputError, match="96 of the cohort's participants were used to train the model"):
        run_saliency(root / "model.pt", root / "train.csv", root / "o2", allow_unvalidated=True)
    out = run_saliency(root / "model.pt", root / "test.csv", root / "o3", method=["gradient"], allow_unvalidated=True)
    path = next(out.glob("sub-*/anat/*_desc-gradient_attribution.nii.gz"))
    before = path.stat().st_mtime_ns
    run_saliency(root / "model.pt", root / "test.csv", root / "o3", method=["gradient"], allow_unvalidated=True)  # skips finished subjects
    assert path.stat().st_mtime_ns == before
    with pytest.raises(InputError, match=r"holds a `saliency` run with other settings \(--score logit -> probability\)"):
        run_saliency(root / "model.pt", root / "test.csv", root / "o3", method=["gradient"], score="probability", allow_unvalidated=True)
    run_saliency(root / "model.pt", root / "test.csv", root / "o3", method=["gradient"], score="probability", force=True, allow_unvalidated=True)
    assert path.stat().st_mtime_ns != before


def test_array_tasks_share_the_cohort(setup):
    root = setup
    out = run_saliency(root / "model.pt", root / "test.csv", root / "arr", method=["gradient"], array_index=0, array_size=2, allow_unvalidated=True)
    assert len(list(out.glob("sub-*/anat/*.nii.gz"))) == 12 and not (out / "group").exists()
    run_saliency(root / "model.pt", root / "test.csv", root / "arr", method=["gradient"], array_index=1, array_size=2, allow_unvalidated=True)
    assert len(list(out.glob("sub-*/anat/*.nii.gz"))) == 24 and (out / "group").exists()


def test_image_on_another_grid_is_one_line(setup, tmp_path):
    root = setup
    test = pd.read_csv(root / "test.csv")
    img = load_image(test["image"][0])
    import nibabel as nib

    shifted = img.affine.copy()
    shifted[0, 3] += 3.0
    nib.save(nib.Nifti1Image(img.data, shifted), str(tmp_path / "moved.nii.gz"))
    test.loc[0, "image"] = str(tmp_path / "moved.nii.gz")
    test.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(InputError, match=r"c.csv row 2: .*moved.nii.gz: affine differs from the model's grid"):
        run_saliency(root / "model.pt", tmp_path / "c.csv", tmp_path / "o", allow_unvalidated=True)


def test_maps_back_in_native_space_and_on_another_grid(tmp_path):
    """--native takes maps through preprocess's inverse transform; --resample-to onto any grid."""
    from neurointerp.preprocess.pipeline import run_preprocess

    synth_brain(tmp_path / "data", n_subjects=2, voxel_size=6.0, seed=4)
    result = run_preprocess(tmp_path / "data" / "cohort.csv", tmp_path / "prep", shape=16, brain_extraction="none", registration_resolution=6.0, qc=False)
    first = load_image(read_cohort(result.table).images[0])
    spec = InputSpec(first.shape, first.affine, space=SPACE)
    torch.manual_seed(0)
    model = ConvClassifier(spec.model_shape, channels=(4,), kernel_size=3, hidden=()).eval()
    save_checkpoint(tmp_path / "m.pt", checkpoint_dict(model, spec, "binary", ["control", "patient"], "test", {"participant_ids": []}, {}))
    target = tmp_path / "data" / "truth" / f"space-{SPACE}_T1w.nii.gz"
    out = run_saliency(tmp_path / "m.pt", result.table, tmp_path / "sal", method=["gradient"], native=True, resample_to=target, atlas="none", allow_unvalidated=True)
    for pid in read_cohort(result.table).participant_ids:
        native_ref = load_image(tmp_path / "prep" / f"sub-{pid}" / "anat" / f"sub-{pid}_desc-brain_mask.nii.gz")
        nat = load_image(out / f"sub-{pid}" / "anat" / f"sub-{pid}_desc-gradient_attribution.nii.gz", allow_empty=True)
        assert nat.shape == native_ref.shape and np.array_equal(nat.affine, native_ref.affine)
        inside = np.abs(nat.data[native_ref.data > 0]).mean()
        outside = np.abs(nat.data[native_ref.data == 0]).mean()
        assert inside > 3 * outside  # the map lands on the subject's brain
        ref = load_image(target)
        res = load_image(next((out / f"sub-{pid}" / "anat").glob("*_res-6mm_desc-gradient_attribution.nii.gz")), allow_empty=True)
        assert res.shape == ref.shape and np.array_equal(res.affine, ref.affine)
        # BIDS res-: the map on the model's grid keeps the preprocessed image's label, the copy is named after its grid
        from neurointerp.io import res_of, resolution_label

        grid_res = res_of(read_cohort(result.table).images[0])
        assert grid_res == resolution_label(first.affine) != "6mm"
        on_grid = out / f"sub-{pid}" / "anat" / f"sub-{pid}_space-{SPACE}_res-{grid_res}_desc-gradient_attribution.json"
        copy = out / f"sub-{pid}" / "anat" / f"sub-{pid}_space-{SPACE}_res-6mm_desc-gradient_attribution.json"
        assert grid_res in json.loads(on_grid.read_text())["Resolution"]
        assert "6mm" in json.loads(copy.read_text())["Resolution"] and "ResampledTo" in json.loads(copy.read_text())


def test_a_method_parameter_no_requested_method_uses_is_named(setup, capsys):
    """--samples is SmoothGrad's: with integrated gradients alone it would be ignored without a word."""
    root = setup
    run_saliency(root / "model.pt", root / "test.csv", root / "unused", method=["gradient"], samples=50, iterations=20, steps=32, allow_unvalidated=True)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "not used by --method gradient" in ln]
    assert len(lines) == 2, err
    assert any(ln.startswith("warning: --samples 50") and "smoothgrad" in ln for ln in lines), lines
    assert any(ln.startswith("warning: --iterations 20") and "optimised-perturbation" in ln for ln in lines), lines
    assert "--steps" not in err  # left at its default: nothing to say
    run_saliency(root / "model.pt", root / "test.csv", root / "used", method=["smoothgrad"], samples=4, allow_unvalidated=True)
    assert "not used by" not in capsys.readouterr().err
