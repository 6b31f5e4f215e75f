"""segment-bg end to end on a small synth rodent cohort: train, apply with/without GBP background
removal, metrics, translations, re-runs, SLURM array shares, bad input."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurointerp.cli.app import main
from neurointerp.errors import InputError

SHAPE = (40, 40, 6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch

    from neurointerp.segment_bg import run_train
    from neurointerp.synth.rodent import synth_rodent

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("segbg")
    synth_rodent(root / "data", n_animals=8, shape=SHAPE, max_shift=4, seed=1)
    model = run_train(root / "data" / "train.csv", root / "model", epochs=12, optimizer="adam", lr=2e-3, base=8, threads=1, seed=0)
    return root, model


@pytest.fixture(scope="module")
def applied(trained):
    from neurointerp.segment_bg import run_apply

    root, model = trained
    out = run_apply(model, root / "data" / "cohort.csv", root / "apply", threads=1)
    return root, model, out


def test_checkpoint_holds_model_reference_and_history(trained):
    from neurointerp.segment_bg.checkpoint import load_segmenter

    root, model = trained
    seg = load_segmenter(model)
    train_ids = pd.read_csv(root / "data" / "train.csv")["participant_id"].tolist()
    assert seg.reference["participant_id"] in train_ids
    assert seg.reference["template"].shape == (SHAPE[2],) + SHAPE[:2]
    # the template is the reference mask times the enhanced gradient image: zero outside, in [0, 1]
    assert np.all(seg.reference["template"][seg.reference["mask"] == 0] == 0)
    assert 0 < seg.reference["template"].max() <= 1
    assert len(pd.read_csv(root / "model" / "history.tsv", sep="\t")) == 12
    side = json.loads((root / "model" / "model.json").read_text())
    assert side["Parameters"]["lr"] == 2e-3 and side["Seed"] == 0


def test_background_removal_improves_dice_and_positions_the_mask(applied):
    root, model, out = applied
    summary = pd.read_csv(out / "metrics_summary.tsv", sep="\t").set_index(["condition", "class"])
    assert summary.loc[("with", "brain_mask"), "n_animals"] == 8
    for cls in ("brain", "GM", "WM"):
        assert summary.loc[("with", cls), "dice"] > summary.loc[("without", cls), "dice"] + 0.1, cls
    assert summary.loc[("with", "brain_mask"), "dice"] > 0.85
    assert summary.loc[("without", "brain"), "sensitivity"] > 0.95  # artefacts are *added*, not brain lost


def test_outputs_keep_the_affine_and_metrics_match_the_files(applied):
    root, model, out = applied
    cohort = pd.read_csv(root / "data" / "cohort.csv")
    row = cohort.iloc[-1]
    pid = row["participant_id"]
    src = nib.load(str(root / "data" / row["image"]))
    anat = out / f"sub-{pid}" / "anat"
    final = nib.load(str(anat / f"sub-{pid}_desc-bgremoved_dseg.nii.gz"))
    first = nib.load(str(anat / f"sub-{pid}_desc-firstpass_dseg.nii.gz"))
    mask = nib.load(str(anat / f"sub-{pid}_desc-brain_mask.nii.gz"))
    for img in (final, first, mask):
        np.testing.assert_allclose(img.affine, src.affine, atol=1e-6)
        assert img.shape == src.shape
    lab = np.asarray(final.dataobj)
    assert set(np.unique(lab)) <= {0, 1, 2, 3}
    truth = np.asarray(nib.load(str(root / "data" / row["labels"])).dataobj)
    dice_brain = 2 * np.sum((lab > 0) & (truth > 0)) / (np.sum(lab > 0) + np.sum(truth > 0))
    per = pd.read_csv(out / "metrics.tsv", sep="\t")
    got = per[(per.participant_id == pid) & (per.condition == "with") & (per["class"] == "brain")]["dice"].item()
    assert got == pytest.approx(dice_brain)
    # the background outside the positioned mask is removed: nothing segmented there
    assert not np.any(lab[np.asarray(mask.dataobj) == 0] > 0)
    side = json.loads((anat / f"sub-{pid}_desc-bgremoved_dseg.json").read_text())
    assert side["BackgroundRemoval"] is True and len(side["ShiftsVoxels"]) == SHAPE[2]


def test_translating_the_input_translates_the_mask(trained):
    from neurointerp.io import load_image
    from neurointerp.segment_bg.checkpoint import load_segmenter
    from neurointerp.segment_bg.core import remove_background, to_slices
    from neurointerp.segment_bg.position import shift_image

    root, model = trained
    seg = load_segmenter(model)
    pid = pd.read_csv(root / "data" / "test.csv")["participant_id"].iloc[0]
    slices = to_slices(load_image(root / "data" / f"sub-{pid}" / "anat" / f"sub-{pid}_T2w.nii.gz").data)
    ref = seg.reference
    base = remove_background(seg.model, slices, ref["template"], ref["mask"])["shifts"]
    for d in ((3, -2), (-2, 2)):
        moved = np.stack([shift_image(s, d) for s in slices])
        diff = remove_background(seg.model, moved, ref["template"], ref["mask"])["shifts"] - base
        np.testing.assert_array_equal(np.median(diff, axis=0), d)
        assert np.abs(diff - np.array(d)).max() <= 1
        vol = remove_background(seg.model, moved, ref["template"], ref["mask"], positioning="volume")["shifts"]
        vol0 = remove_background(seg.model, slices, ref["template"], ref["mask"], positioning="volume")["shifts"]
        assert np.abs((vol - vol0)[0] - np.array(d)).max() <= 1 and np.all(vol == vol[0])


def test_rerun_skips_and_changed_parameters_are_refused(applied):
    root, model, out = applied
    final = next(out.glob("sub-*/anat/*_desc-bgremoved_dseg.nii.gz"))
    before = final.stat().st_mtime_ns
    assert main(["--quiet", "segment-bg", "apply", str(model), str(root / "data" / "cohort.csv"), str(out), "--threads", "1"]) == 0
    assert final.stat().st_mtime_ns == before
    assert main(["--quiet", "segment-bg", "apply", str(model), str(root / "data" / "cohort.csv"), str(out), "--positioning", "volume", "--threads", "1"]) == 2


def test_array_shares_and_intermediates(trained, tmp_path):
    root, model = trained
    args = ["--quiet", "segment-bg", "apply", str(model), str(root / "data" / "test.csv"), str(tmp_path / "arr"), "--threads", "1", "--array-size", "2", "--save-intermediates"]
    test_ids = pd.read_csv(root / "data" / "test.csv")["participant_id"].tolist()
    assert len(test_ids) == 2
    assert main(args + ["--array-index", "1"]) == 0
    done = sorted(p.name for p in (tmp_path / "arr").glob("sub-*"))
    assert done == [f"sub-{test_ids[1]}"]
    assert main(args + ["--array-index", "0"]) == 0
    per = pd.read_csv(tmp_path / "arr" / "metrics.tsv", sep="\t")
    assert sorted(per.participant_id.unique()) == sorted(test_ids)
    anat = tmp_path / "arr" / f"sub-{test_ids[0]}" / "anat"
    enhanced = nib.load(str(anat / f"sub-{test_ids[0]}_desc-enhanced_gbp.nii.gz")).get_fdata()
    assert enhanced.min() >= 0 and enhanced.max() <= 1 and enhanced.max() > 0.9
    masked = nib.load(str(anat / f"sub-{test_ids[0]}_desc-masked_input.nii.gz")).get_fdata()
    mask = nib.load(str(anat / f"sub-{test_ids[0]}_desc-brain_mask.nii.gz")).get_fdata()
    assert np.all(masked[mask == 0] == 0)
    for step in ("gradient", "magnitude", "expanded", "compressed", "zscore", "xcorr"):
        assert (anat / f"sub-{test_ids[0]}_desc-{step}_gbp.nii.gz").exists()


def test_bad_inputs_are_refused_before_anything_is_written(trained, tmp_path, capsys):
    root, model = trained
    cohort = pd.read_csv(root / "data" / "test.csv")
    data = root / "data"
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((40, 40), np.float32), np.eye(4)), str(flat))  # 2D where a volume is expected
    bad_lab = tmp_path / "badlab.nii.gz"
    lab = np.asarray(nib.load(str(data / cohort["labels"][0])).dataobj).astype(np.float32)
    lab[0, 0, 0] = 9
    nib.save(nib.Nifti1Image(lab, nib.load(str(data / cohort["labels"][0])).affine), str(bad_lab))
    four = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((40, 40, 6, 2), np.float32), np.eye(4)), str(four))  # a series where one volume is expected
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((24, 24, 6), np.float32), np.eye(4)), str(small))
    rows = pd.DataFrame(
        {
            "participant_id": ["flat", "badlab", "four", "small", "good"],
            "image": [str(flat), str(data / cohort["image"][0]), str(four), str(small), str(data / cohort["image"][1])],
            "labels": [str(data / cohort["labels"][0]), str(bad_lab), str(data / cohort["labels"][0]), str(data / cohort["labels"][0]), str(data / cohort["labels"][1])],
        }
    )
    rows.to_csv(tmp_path / "bad.csv", index=False)
    code = main(["--quiet", "segment-bg", "apply", str(model), str(tmp_path / "bad.csv"), str(tmp_path / "out"), "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    # bad input is refused before anything is written, in one line listing every bad row
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    line = err[0]
    assert "bad.csv row 2:" in line and "flat.nii.gz" in line and "not 3D" in line
    assert "row 3:" in line and "badlab.nii.gz" in line and "unknown classes 9" in line
    assert "row 4:" in line and "4D image" in line
    assert "row 5:" in line and "24x24" in line and "and 3 more problems" in line
    assert not (tmp_path / "out").exists()
    # without the bad rows the same command runs: the good animal is segmented
    rows.iloc[4:].to_csv(tmp_path / "good.csv", index=False)
    assert main(["--quiet", "segment-bg", "apply", str(model), str(tmp_path / "good.csv"), str(tmp_path / "out"), "--threads", "1"]) == 0
    assert (tmp_path / "out" / "sub-good" / "anat" / "sub-good_desc-bgremoved_dseg.nii.gz").exists()
    assert not (tmp_path / "out" / "failures.tsv").exists()


def test_train_refuses_unknown_label_classes_and_2d_labels(tmp_path):
    from neurointerp.segment_bg import run_train

    aff = np.diag([0.375, 0.375, 0.5, 1.0])
    img = np.ones((16, 16, 2), np.float32)
    lab = np.zeros((16, 16, 2), np.float32)
    lab[4:12, 4:12] = 2
    lab[5, 5, 0] = 6
    nib.save(nib.Nifti1Image(img, aff), str(tmp_path / "img.nii.gz"))
    nib.save(nib.Nifti1Image(lab, aff), str(tmp_path / "lab.nii.gz"))
    nib.save(nib.Nifti1Image(lab[:, :, 0], aff), str(tmp_path / "lab2d.nii.gz"))
    pd.DataFrame({"participant_id": ["a"], "image": ["img.nii.gz"], "labels": ["lab.nii.gz"]}).to_csv(tmp_path / "c.csv", index=False)
    pd.DataFrame({"participant_id": ["a"], "image": ["img.nii.gz"], "labels": ["lab2d.nii.gz"]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(InputError, match="lab.nii.gz: label volume has unknown classes 6"):
        run_train(tmp_path / "c.csv", tmp_path / "m", mask_column="none", epochs=1)
    with pytest.raises(InputError, match="not 3D"):
        run_train(tmp_path / "d.csv", tmp_path / "m2", mask_column="none", epochs=1)
    with pytest.raises(InputError, match="no 'mask' column"):
        run_train(tmp_path / "c.csv", tmp_path / "m3", epochs=1)
    assert main(["--quiet", "segment-bg", "train", str(tmp_path / "c.csv"), str(tmp_path / "m4"), "--mask-column", "none"]) == 2


def test_cli_train_and_apply_a_single_volume(tmp_path):
    from neurointerp.synth.rodent import synth_rodent

    synth_rodent(tmp_path / "d", n_animals=3, shape=(16, 16, 2), max_shift=1, seed=0)
    assert main(["--quiet", "segment-bg", "train", str(tmp_path / "d" / "cohort.csv"), str(tmp_path / "m"), "--epochs", "1", "--base", "4", "--depth", "2", "--threads", "1"]) == 0
    img = next((tmp_path / "d").glob("sub-rat03/anat/*_T2w.nii.gz"))
    assert main(["--quiet", "segment-bg", "apply", str(tmp_path / "m" / "model.pt"), str(img), str(tmp_path / "o"), "--threads", "1", "--device", "cpu"]) == 0
    seg = nib.load(str(tmp_path / "o" / "sub-rat03" / "anat" / "sub-rat03_desc-bgremoved_dseg.nii.gz"))
    np.testing.assert_allclose(seg.affine, nib.load(str(img)).affine, atol=1e-6)
    assert not (tmp_path / "o" / "metrics.tsv").exists()  # no truth given
