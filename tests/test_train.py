"""End-to-end tests of ``neurointerp train`` on synthetic cohorts (CPU, one thread)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from neurointerp.cli.app import main
from neurointerp.io import save_image
from neurointerp.models.checkpoint import load_checkpoint, read_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_cli(args, capsys=None):
    code = main(["--quiet", "train", *[str(a) for a in args]])
    err = capsys.readouterr().err if capsys is not None else ""
    return code, err


@pytest.fixture(scope="module")
def gaussians(tmp_path_factory):
    from neurointerp.synth.gaussians import synth_gaussians

    return synth_gaussians(tmp_path_factory.mktemp("gauss") / "data", variant="magnitude", n_per_group=512, seed=0)


@pytest.fixture(scope="module")
def small_gaussians(tmp_path_factory):
    from neurointerp.synth.gaussians import synth_gaussians

    return synth_gaussians(tmp_path_factory.mktemp("gsmall") / "data", variant="magnitude", n_per_group=32, seed=1)


# ---------------------------------------------------------------- accuracy
@pytest.mark.slow
def test_2d_classifier_reaches_paper_accuracy(gaussians, tmp_path, capsys):
    out = tmp_path / "run"
    # fold 1 of 5 = 80% training / 20% held out, as in simulator-networks §4.1
    code, err = run_cli([gaussians, out, "--folds", 5, "--fold", 1, "--epochs", 20, "--threads", 1], capsys)
    assert code == 0, err
    summary = pd.read_csv(out / "cv_summary.tsv", sep="\t")
    fold1 = summary[summary["fold"] == "fold-1"].iloc[0]
    assert fold1["n_test"] == 205
    assert fold1["accuracy"] >= 0.85 and fold1["balanced_accuracy"] >= 0.85  # paper: 87.5%
    assert fold1["auc"] >= 0.9

    ck = load_checkpoint(out / "fold-1" / "model.pt")
    assert ck.meta["architecture"]["name"] == "simnet2d" and ck.model.n_features == 128
    assert ck.task == "binary" and ck.classes == ["0", "1"] and ck.shape == (32, 32)
    held = set(ck.meta["training"]["heldout_participant_ids"])
    assert len(ck.participant_ids) == 819 and not held & set(ck.participant_ids)
    # the checkpoint alone reproduces the held-out predictions
    from neurointerp.io import load_image

    pred = pd.read_csv(out / "fold-1" / "predictions.tsv", sep="\t", dtype={"participant_id": str})
    cohort = pd.read_csv(gaussians)
    cohort = cohort.set_index("participant_id").loc[pred["participant_id"][:16]]
    images = np.stack([load_image(gaussians.parent / p, ndim=2).data for p in cohort["image"]])
    assert np.allclose(ck.predict(images), pred["p_1"][:16], atol=1e-5)
    assert ck.features(images).shape == (16, 128)

    metrics = pd.read_csv(out / "metrics.tsv", sep="\t")
    assert list(metrics["epoch"]) == list(range(1, 21))
    assert {"train_loss", "heldout_loss", "heldout_balanced_accuracy", "heldout_auc"} <= set(metrics.columns)
    assert (out / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import json

    side = json.loads((out / "model.json").read_text())
    assert side["GeneratedBy"]["Command"] == "train" and side["Parameters"]["seed"] == 0
    assert len(side["Inputs"]) == 1025 and side["Models"][0]["unit"] == "fold-1"


@pytest.mark.slow
def test_3d_classifier_beats_chance(tmp_path, capsys):
    from neurointerp.synth.brain import synth_brain

    table = synth_brain(tmp_path / "brain", n_subjects=40, voxel_size=6.0, effect_size=3.0, template_space=True, seed=1)
    frame = pd.read_csv(table)
    frame["image"] = frame["template_image"]  # the unposed anatomy on the template grid
    tpl = tmp_path / "brain" / "template_cohort.csv"
    frame.drop(columns=["template_image"]).to_csv(tpl, index=False)
    out = tmp_path / "run3d"
    # whole-voxel shifts at 6 mm wipe out the small planted effect for 30 training subjects: no augmentation
    args = [tpl, out, "--folds", 4, "--epochs", 16, "--batch-size", 8, "--balance", 48, "--normalize", "zscore",
            "--channels", "8,16,32,8", "--shift", 0, "--rotation", 0, "--threads", 1]
    code, err = run_cli(args, capsys)
    assert code == 0, err
    summary = pd.read_csv(out / "cv_summary.tsv", sep="\t").set_index("fold")
    assert summary.loc["mean", "auc"] >= 0.8
    assert summary.loc["pooled", "auc"] >= 0.6
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert len(pred) == 40 and pred.groupby("participant_id")["fold"].nunique().max() == 1
    ck = load_checkpoint(out / "fold-1" / "model.pt")
    assert ck.space == "MNI152NLin2009aSym" and ck.classes == ["control", "patient"]
    assert ck.shape == (27, 33, 28) and ck.spec.normalize == "zscore"
    assert ck.model.features(torch.zeros(1, 1, *ck.shape)).shape == (1, ck.model.n_features)


# ---------------------------------------------------------------- resume
def test_resume_after_kill_gives_identical_weights(small_gaussians, tmp_path, capsys):
    common = ["--folds", 0, "--final", "--epochs", 4, "--batch-size", 16, "--seed", 7, "--threads", 1, "--flip", "--balance", 40]
    ref = tmp_path / "uninterrupted"
    code, err = run_cli([small_gaussians, ref, *common], capsys)
    assert code == 0, err

    out = tmp_path / "interrupted"
    env = {**ENV, "NEUROINTERP_TRAIN_KILL_AT": "final:3:2"}  # SIGKILL in epoch 3, before batch 2
    proc = subprocess.run([sys.executable, "-m", "neurointerp", "-q", "train", str(small_gaussians), str(out), *map(str, common)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert (out / "final-state.pt").exists() and not (out / "model.pt").exists()

    code, err = run_cli([small_gaussians, out, *common], capsys)  # no --resume: refused, one line
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1

    code, err = run_cli([small_gaussians, out, *common, "--resume"], capsys)
    assert code == 0, err
    a = read_checkpoint(ref / "model.pt")
    b = read_checkpoint(out / "model.pt")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert [h["train_loss"] for h in a["metrics"]["history"]] == [h["train_loss"] for h in b["metrics"]["history"]]
    assert not (out / "final-state.pt").exists()

    # a finished run is skipped when run again with the same settings
    assert main(["train", *map(str, [small_gaussians, ref, *common])]) == 0
    assert "skipped" in capsys.readouterr().err


# ---------------------------------------------------------------- DDP
@pytest.mark.slow
def test_ddp_two_processes_match_single_process(small_gaussians, tmp_path):
    common = ["--folds", 0, "--final", "--epochs", 2, "--batch-size", 16, "--shift", 0, "--rotation", 0, "--threads", 1]
    single = tmp_path / "single"
    assert main(["-q", "train", str(small_gaussians), str(single), *map(str, common)]) == 0
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "neurointerp", "-q", "train", str(small_gaussians), str(ddp), *map(str, common)]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = read_checkpoint(single / "model.pt")["state_dict"]
    b = read_checkpoint(ddp / "model.pt")["state_dict"]
    for k in a:  # gradients averaged over two half batches == gradient of the whole batch
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    side = (ddp / "model.json").read_text()
    assert '"world_size": 2' in side


# ---------------------------------------------------------------- bad input
def _tiny_cohort(folder, n=8, shape=(12, 12, 12), labels=None, affine=None, odd=None, label_column="label"):
    rng = np.random.default_rng(0)
    rows = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        aff = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
        shp = shape
        if odd is not None and i == odd[0]:
            shp, aff = odd[1] or shape, odd[2] if odd[2] is not None else aff
        path = save_image(rng.random(shp).astype(np.float32) + 0.1, aff, folder / f"s{i}.nii.gz")
        row = {"participant_id": f"s{i}", "image": path.name}
        if label_column:
            row[label_column] = (labels or ["a", "b"])[i % len(labels or ["a", "b"])]
        rows.append(row)
    table = folder / "cohort.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("one_class", "only 1 class"),
        ("shape", "has grid 12x12x10 but row 2 's0.nii.gz' has 12x12x12"),
        ("affine", "has another affine than row 2"),
        ("no_label", "missing column 'label'"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, capsys, kind, expected):
    if kind == "one_class":
        table = _tiny_cohort(tmp_path / "c", labels=["a"])
    elif kind == "shape":
        table = _tiny_cohort(tmp_path / "c", odd=(3, (12, 12, 10), None))
    elif kind == "affine":
        table = _tiny_cohort(tmp_path / "c", odd=(5, None, np.diag([2.0, 2.0, 2.5, 1.0])))
    else:
        table = _tiny_cohort(tmp_path / "c", label_column=None)
    code, err = run_cli([table, tmp_path / "out", "--folds", 2, "--epochs", 1, "--threads", 1], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    if kind in ("shape", "affine"):
        assert ("s3.nii.gz" if kind == "shape" else "s5.nii.gz") in lines[0] and "row" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_an_input_error(tmp_path, capsys):
    table = _tiny_cohort(tmp_path / "c")
    code, err = run_cli([table, tmp_path / "out", "--device", "cuda", "--epochs", 1], capsys)
    assert code == 2 and "no CUDA device" in err


def test_models_loaded_for_explaining_on_cuda_compute_in_full_float32():
    """On an H200 with PyTorch's default (TF32 convolutions) the maps of one model differed from
    the CPU's by up to 25 % of their maximum; with TF32 off, DeepLIFT, Grad-CAM and LRP agreed to
    <= 7e-4. Every loader of a saved model goes through ``for_inference``, which turns TF32 off on
    CUDA and leaves the CPU alone (the flags themselves need no GPU)."""
    from neurointerp.train.device import exact_float32, for_inference

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        model = for_inference(torch.nn.Linear(2, 1).train(), "cpu")
        assert not model.training and torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        exact_float32(torch.device("cuda", 0))
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_every_saved_model_loader_goes_through_for_inference():
    """The loaders of the classifier, the simulators (warp, ICAM, VA-GAN) and the segmenter."""
    import inspect

    from neurointerp.models import checkpoint as classifier
    from neurointerp.segment_bg import checkpoint as segmenter
    from neurointerp.simulate import checkpoint as simulator
    from neurointerp.simulate.icam import checkpoint as icam
    from neurointerp.simulate.vagan import checkpoint as vagan

    for module in (classifier, segmenter, simulator, icam, vagan):
        source = inspect.getsource(module)
        assert "for_inference(model, device)" in source and ".to(resolve_device" not in source, module.__name__


def test_a_folder_trained_under_an_earlier_default_budget_is_not_reused_under_a_new_one(tmp_path, monkeypatch, capsys):
    """The default budget changed (600 -> 1500 steps, #21): a folder trained with the old default
    must not count as trained -- nor be resumed -- with the new one. The settings record the
    budget as it runs, so the old folder is refused (naming steps), and reused with its budget given."""
    import neurointerp.train.defaults as defaults  # the one place of the default budget (steps_for)

    table = _tiny_cohort(tmp_path / "c")
    small = ["--folds", 0, "--final", "--channels", "2,2", "--hidden", "4", "--threads", 1]
    monkeypatch.setattr(defaults, "DEFAULT_STEPS", 4)
    code, err = run_cli([table, tmp_path / "out", *small], capsys)
    assert code == 0, err
    before = (tmp_path / "out" / "model.pt").read_bytes()
    monkeypatch.setattr(defaults, "DEFAULT_STEPS", 6)
    code, err = run_cli([table, tmp_path / "out", *small], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "other settings" in lines[0] and "--steps 4 -> 6" in lines[0], err
    assert (tmp_path / "out" / "model.pt").read_bytes() == before
    code, err = run_cli([table, tmp_path / "out", *small, "--steps", 4], capsys)
    assert code == 0 and (tmp_path / "out" / "model.pt").read_bytes() == before  # same settings: skipped


def test_train_help_is_fast():
    proc = subprocess.run([sys.executable, "-m", "neurointerp", "train", "--help"], capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 0 and "--resume" in proc.stdout and "--fold" in proc.stdout
    # the CLI module itself must not import torch
    code = "import sys, neurointerp.cli.app; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV).stdout.strip() == "False"


# ---------------------------------------------------------------- other tasks and options
def test_multiclass_regression_and_single_hemisphere(tmp_path, capsys):
    table = _tiny_cohort(tmp_path / "c", n=12, shape=(16, 16, 16), labels=["a", "b", "c"])
    frame = pd.read_csv(table)
    frame["age"] = np.linspace(60, 80, len(frame))
    frame.to_csv(table, index=False)
    small = ["--channels", "4,4", "--hidden", "8", "--epochs", 1, "--threads", 1, "--batch-size", 4]

    code, err = run_cli([table, tmp_path / "multi", "--folds", 2, "--balance", 6, *small], capsys)
    assert code == 0, err
    ck = load_checkpoint(tmp_path / "multi" / "fold-1" / "model.pt")
    assert ck.task == "multiclass" and ck.classes == ["a", "b", "c"] and ck.model.n_outputs == 3
    pred = pd.read_csv(tmp_path / "multi" / "predictions.tsv", sep="\t")
    assert np.allclose(pred[["p_a", "p_b", "p_c"]].sum(axis=1), 1.0, atol=1e-5) and len(pred) == 12

    code, err = run_cli([table, tmp_path / "reg", "--folds", 3, "--task", "regression", "--label-column", "age", *small], capsys)
    assert code == 0, err
    ck = load_checkpoint(tmp_path / "reg" / "fold-2" / "model.pt")
    assert ck.task == "regression" and ck.target["sd"] > 0 and ck.classes == []
    summary = pd.read_csv(tmp_path / "reg" / "cv_summary.tsv", sep="\t")
    assert {"mae", "rmse", "r"} <= set(summary.columns)

    code, err = run_cli([table, tmp_path / "hemi", "--folds", 0, "--final", "--hemisphere", "left", "--flip", "--no-preload", *small], capsys)
    assert code == 0, err
    ck = load_checkpoint(tmp_path / "hemi" / "model.pt")
    # affine diag(2, 2, 2): voxel axis 0 runs towards world +x (right), so the left half is 0..8
    assert ck.spec.hemisphere == "left" and ck.spec.crop[0] == (0, 8) and ck.spec.model_shape == (8, 16, 16)
    assert ck.model.input_shape == (8, 16, 16)
    assert ck.predict(np.ones((2, 16, 16, 16), np.float32)).shape == (2, 3)  # three classes
