"""``simulate train/apply --method icam`` end to end on disk, SLURM shares, resume, bad input,
and the simulator usage of the same commands left intact."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from neurointerp.cli.app import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from neurointerp.synth.lesions import synth_lesions

    root = tmp_path_factory.mktemp("icamcli")
    table = synth_lesions(root / "data", n_per_group=10, size=32, voxel_size=2.0, seed=2)
    code = main(["simulate", "train", str(table), str(root / "model"), "--method", "icam", "--epochs", "2", "--batch-size", "8",
                 "--channels", "4", "--space", "synthetic", "--lambda-kl", "0.02", "--threads", "1", "--device", "cpu"])
    assert code == 0
    return root, table, root / "model" / "icam.pt"


def test_train_writes_a_self_describing_checkpoint(trained):
    from neurointerp.simulate.icam.checkpoint import load_icam

    root, table, ckpt = trained
    icam = load_icam(ckpt)
    img = nib.load(str(root / "data" / "sub-l01" / "anat" / "sub-l01_desc-phantom_lesions.nii.gz"))
    assert icam.spec.shape == (32, 32) and np.allclose(icam.spec.affine, img.affine) and icam.spec.space == "synthetic"
    assert icam.classes == ["0", "1"] and icam.model.latent_shape == (8, 8)
    training = icam.meta["training"]
    assert training["lambdas"]["kl"] == 0.02 and training["lambdas"]["rec"] == 100.0  # override + authors' default
    assert len(training["participant_ids"]) == 20 and training["n_per_class"] == [10, 10]
    assert len(pd.read_csv(root / "model" / "history.tsv", sep="\t")) == 2
    assert json.loads((root / "model" / "icam.json").read_text())["Classes"] == ["0", "1"]


def test_apply_in_array_shares_maps_affines_and_resume(trained, tmp_path):
    root, table, ckpt = trained
    out = tmp_path / "apply"
    for k in (0, 1):  # no classifier argument; two SLURM array shares
        assert main(["simulate", "apply", str(table), str(ckpt), str(out), "--method", "icam", "--n-samples", "5",
                     "--array-index", str(k), "--array-size", "2", "--threads", "1", "--device", "cpu"]) == 0
        # the task that completes the cohort writes predictions.tsv
        assert (out / "predictions.tsv").exists() == (k == 1)
    both = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert len(both) == 20 and np.allclose(both["p_0"] + both["p_1"], 1.0)
    assert (both["target"] != both["predicted"]).all()  # always translated into the opposite class
    anat = out / "sub-l12" / "anat"
    raw = nib.load(str(root / "data" / "sub-l12" / "anat" / "sub-l12_desc-phantom_lesions.nii.gz"))
    mean = nib.load(str(anat / "sub-l12_space-synthetic_desc-icammean_attribution.nii.gz"))
    var = nib.load(str(anat / "sub-l12_space-synthetic_desc-icamvariance_attribution.nii.gz"))
    trans = nib.load(str(anat / "sub-l12_space-synthetic_desc-icamtranslated_T1w.nii.gz"))
    for img in (mean, var, trans):
        assert img.shape == raw.shape and np.allclose(img.affine, raw.affine)
    # M = translated - input, on the model's (z-scored over the brain) intensities
    from neurointerp.models.inputs import InputSpec

    x = InputSpec((32, 32), raw.affine, normalize="zscore").normalise_array(raw.get_fdata()[:, :, 0])
    assert np.allclose(mean.get_fdata()[:, :, 0], trans.get_fdata()[:, :, 0] - x, atol=1e-4)
    assert (var.get_fdata() >= 0).all() and var.get_fdata().max() > 0  # draws differ
    side = json.loads((anat / "sub-l12_space-synthetic_desc-icammean_attribution.json").read_text())
    assert side["NSamples"] == 5 and side["Parameters"]["n_samples"] == 5 and len(side["CheckpointSha256"]) == 64
    assert side["Prediction"]["target"] != side["Prediction"]["predicted"]
    assert {i["path"].split("/")[-1] for i in side["Inputs"]} >= {"sub-l12_desc-phantom_lesions.nii.gz", "icam.pt"}
    # a resubmitted share skips complete subjects (the maps are not rewritten)
    before = (anat / "sub-l12_space-synthetic_desc-icammean_attribution.nii.gz").stat().st_mtime_ns
    assert main(["simulate", "apply", str(table), str(ckpt), str(out), "--method", "icam", "--n-samples", "5",
                 "--array-index", "1", "--array-size", "2", "--threads", "1"]) == 0
    assert (anat / "sub-l12_space-synthetic_desc-icammean_attribution.nii.gz").stat().st_mtime_ns == before
    # each subject's draws depend on its row and the seed only: one process gives the same maps
    out1 = tmp_path / "apply1"
    assert main(["simulate", "apply", str(table), str(ckpt), str(out1), "--method", "icam", "--n-samples", "5", "--threads", "1"]) == 0
    one = nib.load(str(out1 / "sub-l12" / "anat" / "sub-l12_space-synthetic_desc-icamvariance_attribution.nii.gz")).get_fdata()
    assert np.allclose(one, var.get_fdata(), atol=1e-6)
    # --save-samples writes every translated image (4D), --direction label uses the cohort's labels
    out2 = tmp_path / "apply2"
    assert main(["simulate", "apply", str(table), str(ckpt), str(out2), "--method", "icam", "--n-samples", "3", "--save-samples",
                 "--direction", "label", "--threads", "1"]) == 0
    samples = nib.load(str(out2 / "sub-l12" / "anat" / "sub-l12_space-synthetic_desc-icamsamples_T1w.nii.gz"))
    assert samples.shape == (32, 32, 1, 3) and np.allclose(samples.affine, raw.affine)
    pred = pd.read_csv(out2 / "predictions.tsv", sep="\t")
    assert (pred["target"].astype(str) != pred["label"].astype(str)).all()


def test_bad_input_and_simulator_usage(trained, tmp_path, capsys):
    from neurointerp.synth.lesions import synth_lesions

    root, table, ckpt = trained
    # a checkpoint of another grid: one line, exit 2, nothing computed
    other = synth_lesions(tmp_path / "other", n_per_group=2, size=24, seed=0)
    assert main(["simulate", "apply", str(other), str(ckpt), str(tmp_path / "o"), "--method", "icam"]) == 2
    err = capsys.readouterr().err
    assert "grid 24x24 differs from the model's grid 32x32" in err and "row 2" in err
    # same shape, another affine
    big = synth_lesions(tmp_path / "vox", n_per_group=2, size=32, voxel_size=1.0, seed=0)
    assert main(["simulate", "apply", str(big), str(ckpt), str(tmp_path / "o2"), "--method", "icam"]) == 2
    assert "affine differs" in capsys.readouterr().err
    # a one-class training cohort
    frame = pd.read_csv(table)
    frame[frame["label"] == 1].assign(image=lambda f: [str(root / "data" / p) for p in f["image"]]).to_csv(tmp_path / "one.csv", index=False)
    assert main(["simulate", "train", str(tmp_path / "one.csv"), str(tmp_path / "m"), "--method", "icam", "--epochs", "1"]) == 2
    assert "only 1 class" in capsys.readouterr().err
    # the simulator usage keeps its argument list; mixing them up is a one-line usage error
    assert main(["simulate", "apply", str(table), str(ckpt), str(tmp_path / "o3")]) == 2
    assert "--method icam takes COHORT ICAM OUT" in capsys.readouterr().err
    assert main(["simulate", "apply", str(table), str(ckpt), str(ckpt), str(tmp_path / "o4")]) == 2
    assert "is an ICAM checkpoint; use --method icam" in capsys.readouterr().err
    assert main(["simulate", "train", str(table), str(tmp_path / "m2")]) == 2
    assert "--method icam takes COHORT OUT" in capsys.readouterr().err
    assert main(["simulate", "train", str(table), str(ckpt), str(tmp_path / "m3"), "--latent-shape", "4,4"]) == 2
    assert "--latent-shape applies to --method icam only" in capsys.readouterr().err
    assert main(["simulate", "apply", str(table), str(ckpt), str(tmp_path / "o5"), "--method", "icam", "--n-samples", "0"]) == 2
