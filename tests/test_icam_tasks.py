"""ICAM beyond binary (the paper's §5 extensions): multi-class and regression attribute heads,
their sampling, losses and checkpoints -- and binary ICAM unchanged (a checkpoint written before
the extensions loads and gives identical results; binary training gives identical weights)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
DATA = Path(__file__).parent / "data"


def _same(a, b, key, exact, atol=2e-5):
    a = np.asarray(a)
    if key.split()[-1].replace("label_", "") in exact:
        assert np.array_equal(a, b), key
    else:
        assert a.shape == b.shape and np.allclose(a, b, rtol=0, atol=atol), (key, float(np.abs(a - b).max()))


def test_binary_checkpoint_from_before_the_extensions_loads_and_gives_identical_results():
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.icam.apply import translate
    from neurointerp.simulate.icam.checkpoint import load_icam
    from neurointerp.simulate.icam.train import fit_icam
    from neurointerp.synth.lesions import make_lesions

    # written by tests/data/make_icam_binary_v1.py with the code of main at 1d51b76
    raw = torch.load(str(DATA / "icam_binary_v1.pt"), weights_only=True)
    assert raw["format_version"] == 1 and "task" not in raw and "task" not in raw["architecture"]["params"]
    icam = load_icam(DATA / "icam_binary_v1.pt")
    assert icam.task == "binary" and icam.model.enc_a.classifier.out_features == 1
    ref = np.load(DATA / "icam_binary_v1_expected.npz")
    x = torch.as_tensor(ref["x"])
    # Discrete outputs and the random draws must be identical; decoder outputs to float32 rounding
    # (the convolution kernels' summation order differs between CPUs, ~1e-6 of values ~1), far below
    # what a change of weights, draws or format would give.
    exact = ("predicted", "target", "draws")
    r = translate(icam.model, x, n_samples=3, seeds=[100, 101, 102, 103], keep_samples=True)
    for key in ("probability", "predicted", "target", "mean", "variance", "translated", "draws", "samples"):
        _same(r[key], ref[key], key, exact)
    r2 = translate(icam.model, x, n_samples=2, target=[0, 0, 1, 1], seed=7)
    for key in ("probability", "predicted", "target", "mean", "variance", "translated", "draws"):
        _same(r2[key], ref["label_" + key], "label_" + key, exact)
    # binary training draws and updates as before: the retrained model computes the frozen file's
    # function. Not its weights bit for bit: a bias right before a normalisation has a zero gradient
    # up to rounding, which Adam scales to step size, differently on each CPU; such a bias does not
    # change the output.
    coh = make_lesions(n_per_group=6, size=24, seed=3)
    spec = InputSpec((24, 24), coh.affine, space="synthetic", normalize="zscore")
    m, hist = fit_icam(spec.prepare(coh.images), coh.labels, epochs=2, batch_size=4, channels=2, seed=0)
    m.eval()
    r3 = translate(m, x, n_samples=3, seeds=[100, 101, 102, 103], keep_samples=True)
    for key in ("probability", "predicted", "mean", "translated", "samples"):
        _same(r3[key], ref[key], "retrained " + key, ("predicted",), atol=1e-4)
    assert np.allclose([h["loss_g"] for h in hist], [h["loss_g"] for h in raw["metrics"]["history"]], rtol=1e-5, atol=0)


class _Linear(torch.nn.Module):
    def __init__(self, w, b):
        super().__init__()
        self.classifier = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.classifier.weight.copy_(w)
            self.classifier.bias.copy_(b)

    def classify(self, z):
        return self.classifier(z.reshape(z.shape[0], -1))


def test_multiclass_rejection_sampling_and_losses():
    from neurointerp.simulate.icam import losses as L
    from neurointerp.simulate.icam.sampling import rejection_sample

    torch.manual_seed(0)
    head = _Linear(torch.randn(4, 9), torch.tensor([0.0, 0.5, -0.5, 0.0]))
    target = torch.tensor([0, 1, 2, 3] * 10)
    z, ok, draws = rejection_sample(head, target, (3, 3), max_draws=200, generator=torch.Generator().manual_seed(1))
    assert bool(ok.all()) and torch.equal(head.classify(z).argmax(1), target)  # the arg max of the K logits
    # hand values: cross-entropy, and the encoder's confusion loss = cross-entropy against uniform 1/K
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    p = torch.softmax(logits, 1)
    assert float(L.head_loss("multiclass", logits, torch.tensor([0, 2]))) == pytest.approx(float(-(p[0, 0].log() + p[1, 2].log()) / 2), rel=1e-6)
    assert float(L.confusion_loss("multiclass", torch.zeros(5, 3))) == pytest.approx(math.log(3), rel=1e-6)  # its minimum
    assert float(L.confusion_loss("multiclass", logits)) == pytest.approx(float(-p.log().mean(1).mean()), rel=1e-6)
    # regression: smooth L1 on the standardised target; confusion pulls towards the mean (0)
    out = torch.tensor([[0.5], [3.0]])
    assert float(L.head_loss("regression", out, torch.tensor([0.0, 1.0]))) == pytest.approx((0.5 * 0.5**2 + (2.0 - 0.5)) / 2)
    assert float(L.confusion_loss("regression", out)) == pytest.approx((0.5 * 0.5**2 + (3.0 - 0.5)) / 2)
    # binary: unchanged BCE terms
    b = torch.tensor([[0.3], [-1.2]])
    assert torch.equal(L.head_loss("binary", b, torch.tensor([1.0, 0.0])), L.bce(b, torch.tensor([1.0, 0.0])))
    assert torch.equal(L.confusion_loss("binary", b), L.content_adversarial(b))


def test_regression_conditional_sampling_is_the_exact_conditional_of_the_prior():
    from neurointerp.simulate.icam.sampling import conditional_sample, prior_zscore

    torch.manual_seed(0)
    w = torch.randn(1, 16)
    head = _Linear(w, torch.tensor([0.7]))
    value = torch.full((4000,), 1.5)
    z, draws = conditional_sample(head, value, (4, 4), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(head.classify(z)[:, 0], value, atol=1e-4) and bool((draws == 1).all())
    # z | w.z + b = t is Gaussian: mean w (t - b) / |w|^2, covariance I - w w^T / |w|^2 (checked empirically)
    flat = z.reshape(len(z), -1).double()
    wd = w[0].double()
    mean = wd * (1.5 - 0.7) / (wd @ wd)
    assert torch.allclose(flat.mean(0), mean, atol=0.06)
    cov = torch.cov(flat.T)
    assert torch.allclose(cov, torch.eye(16, dtype=torch.float64) - torch.outer(wd, wd) / (wd @ wd), atol=0.08)
    assert float(prior_zscore(head, 1.5)) == pytest.approx((1.5 - 0.7) / float(w.norm()), rel=1e-5)


def test_pair_batches_pair_different_classes_and_values():
    from neurointerp.simulate.icam.train import pair_batches

    labels = np.repeat([0, 1, 2], [10, 30, 20])
    batches = pair_batches(labels, 8, np.random.default_rng(0), "multiclass")
    a = np.concatenate([b[0] for b in batches])
    b = np.concatenate([b[1] for b in batches])
    assert len(batches) == 8 and len(a) == 32  # ceil(60 / 8) steps of 4 pairs
    assert (labels[a] != labels[b]).all()
    counts = np.bincount(labels[a], minlength=3)
    assert counts.max() - counts.min() <= 1  # source rows class-balanced whatever the class sizes
    ages = np.array([50.0, 50.0, 60.0, 70.0, 70.0, 80.0])
    for a_, b_ in pair_batches(ages, 4, np.random.default_rng(1), "regression"):
        assert (ages[a_] != ages[b_]).all()


def _multiclass_and_regression_models():
    from neurointerp.simulate.icam.train import fit_icam

    x = torch.randn(12, 1, 16, 16)
    mc, hmc = fit_icam(x, np.array([0, 1, 2] * 4), task="multiclass", epochs=1, batch_size=4, channels=2, seed=0)
    rg, hrg = fit_icam(x, np.linspace(45, 80, 12), task="regression", epochs=1, batch_size=4, channels=2, seed=0)
    return x, mc, hmc, rg, hrg


def test_multiclass_and_regression_models_translate_and_round_trip(tmp_path, capsys):
    from neurointerp.errors import InputError
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.icam.apply import translate
    from neurointerp.simulate.icam.checkpoint import icam_dict, load_icam, save_icam
    from neurointerp.simulate.icam.train import fit_icam

    x, mc, hmc, rg, hrg = _multiclass_and_regression_models()
    assert mc.enc_a.classifier.out_features == mc.dis.cls.out_features == mc.dis_c.fc.out_features == 3
    assert np.isfinite(hmc[0]["loss_g"]) and "accuracy" in hmc[0]
    assert rg.target_sd == pytest.approx(np.linspace(45, 80, 12).std()) and "mae" in hrg[0] and np.isfinite(hrg[0]["loss_g"])
    with pytest.raises(InputError, match="every class"):
        fit_icam(x, np.array([0, 2, 3] * 4), task="multiclass", epochs=1)
    # multi-class: default target = the most likely class other than the predicted one
    r = translate(mc, x, n_samples=2, seed=0)
    second = np.argsort(r["probability"], axis=1)[:, -2]
    assert r["probability"].shape == (12, 3) and np.allclose(r["probability"].sum(1), 1, atol=1e-5)
    assert (r["target"] == second).all() and (r["target"] != r["predicted"]).all()
    r = translate(mc, x, n_samples=2, target=2, source=np.zeros(12, dtype=int), seed=0)
    assert (r["target"] == 2).all() and ((r["reached"] >= 0) & (r["reached"] <= 1)).all()
    r = translate(mc, x, n_samples=2, source=np.zeros(12, dtype=int), seed=0)  # from the label, not the prediction
    assert (r["target"] != 0).all()
    # regression: translate to a value, or by a shift from the predicted (or given source) value
    r = translate(rg, x, n_samples=3, target_shift=10.0, seed=0)
    assert r["probability"] is None and np.allclose(r["target"], r["predicted"] + 10.0)
    assert np.isfinite(r["prior_z"]).all() and (r["draws"] == 1).all()
    r = translate(rg, x, n_samples=2, target_value=70.0, seed=0)
    assert np.allclose(r["target"], 70.0) and "training range" not in capsys.readouterr().err
    translate(rg, x[:3], n_samples=1, target_value=100.0, seed=0)  # beyond the training ages: flagged
    assert "3 of 3 target values lie outside the training range [45, 80] (e.g. 100)" in capsys.readouterr().err
    r = translate(rg, x, n_samples=2, target_shift=-5.0, source=np.full(12, 60.0), seed=0)
    assert np.allclose(r["target"], 55.0)
    with pytest.raises(InputError, match="exactly one of --target-value or --target-shift"):
        translate(rg, x, n_samples=1)
    with pytest.raises(InputError, match="apply to a regression ICAM"):
        translate(mc, x, n_samples=1, target_value=3.0)
    # checkpoints: version 2 with the task; the standardisation travels with the model
    spec = InputSpec((16, 16), np.eye(4), space="synthetic", normalize="zscore")
    for name, model, classes in (("mc", mc, ["a", "b", "c"]), ("rg", rg, [])):
        path = save_icam(tmp_path / f"{name}.pt", icam_dict(model, spec, classes, {}, {}))
        raw = torch.load(str(path), weights_only=True)
        assert raw["format_version"] == 2 and raw["task"] == model.task
        loaded = load_icam(path)
        assert loaded.task == model.task and loaded.classes == classes
        with torch.no_grad():
            assert torch.equal(loaded.model.attribute_logit(x), model.attribute_logit(x))
        assert loaded.model.target_mean == model.target_mean and loaded.model.target_sd == model.target_sd
        assert loaded.model.target_range == model.target_range


def test_cli_multiclass_and_regression_on_disk(tmp_path, capsys):
    import nibabel as nib
    import pandas as pd

    from neurointerp.cli.app import main
    from neurointerp.simulate.icam.checkpoint import load_icam
    from neurointerp.synth.lesions import synth_lesions

    mc = synth_lesions(tmp_path / "mc", n_per_group=4, size=32, task="multiclass", n_classes=3, seed=0)
    assert sorted(pd.read_csv(mc)["label"].unique()) == [0, 1, 2]
    assert (tmp_path / "mc" / "truth" / "desc-class2frequency_lesionmap.nii.gz").exists()
    common = ["--epochs", "1", "--batch-size", "4", "--channels", "2", "--threads", "1", "--device", "cpu", "--space", "synthetic"]
    assert main(["simulate", "train", str(mc), str(tmp_path / "mcm"), "--method", "icam", *common]) == 0  # auto: 3 classes -> multi-class
    icam = load_icam(tmp_path / "mcm" / "icam.pt")
    assert icam.task == "multiclass" and icam.classes == ["0", "1", "2"] and icam.meta["training"]["n_per_class"] == [4, 4, 4]
    out = tmp_path / "mca"
    assert main(["simulate", "apply", str(mc), str(tmp_path / "mcm" / "icam.pt"), str(out), "--method", "icam", "--n-samples", "2", "--target", "0", "--threads", "1"]) == 0
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert list(pred.columns) == ["participant_id", "label", "predicted", "target", "p_0", "p_1", "p_2", "mean_draws", "reached"]
    assert (pred["target"] == 0).all() and np.allclose(pred[["p_0", "p_1", "p_2"]].sum(axis=1), 1, atol=1e-5)
    assert main(["simulate", "apply", str(mc), str(tmp_path / "mcm" / "icam.pt"), str(tmp_path / "x"), "--method", "icam", "--target", "7"]) == 2
    assert "--target 7: not a class of the ICAM model (0, 1, 2)" in capsys.readouterr().err
    assert main(["simulate", "apply", str(mc), str(tmp_path / "mcm" / "icam.pt"), str(tmp_path / "x"), "--method", "icam", "--target-shift", "3"]) == 2
    assert "apply to a regression ICAM" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything was written
    # regression ("brain age"): numeric labels need --task regression; translation to +10 years
    rg = synth_lesions(tmp_path / "rg", n_per_group=4, size=32, task="regression", seed=0)
    ages = pd.read_csv(rg)["label"]
    assert ages.between(45, 80).all() and ages.nunique() > 4
    assert main(["simulate", "train", str(rg), str(tmp_path / "rgm"), "--method", "icam", *common]) == 2
    assert "use --task regression" in capsys.readouterr().err
    assert main(["simulate", "train", str(rg), str(tmp_path / "rgm"), "--method", "icam", "--task", "regression", *common]) == 0
    ckpt = str(tmp_path / "rgm" / "icam.pt")
    assert load_icam(ckpt).meta["training"]["target"]["mean"] == pytest.approx(ages.mean())
    assert main(["simulate", "apply", str(rg), ckpt, str(tmp_path / "y"), "--method", "icam"]) == 2
    assert "give exactly one of --target-value or --target-shift" in capsys.readouterr().err
    out = tmp_path / "rga"
    assert main(["simulate", "apply", str(rg), ckpt, str(out), "--method", "icam", "--n-samples", "2", "--target-shift", "10", "--direction", "label", "--threads", "1"]) == 0
    pred = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert list(pred.columns) == ["participant_id", "label", "predicted", "target", "mean_draws", "reached", "prior_z"]
    assert np.allclose(pred["target"], pred["label"] + 10.0)
    side = out / "sub-l1" / "anat" / "sub-l1_space-synthetic_desc-icammean_attribution.json"
    import json

    meta = json.loads(side.read_text())
    assert meta["Task"] == "regression" and meta["Parameters"]["target_shift"] == 10.0 and "conditioned" in meta["Definition"]
    img = nib.load(str(out / "sub-l1" / "anat" / "sub-l1_space-synthetic_desc-icammean_attribution.nii.gz"))
    assert img.shape == (32, 32, 1)
    assert main(["simulate", "train", str(rg), str(tmp_path / "z"), "--task", "regression"]) == 2
    assert "--task applies to --method icam only" in capsys.readouterr().err


@pytest.mark.slow
def test_multiclass_icam_recovers_the_planted_lesions_of_each_class():
    """3 classes (healthy, lesions at sites 1/3/5, lesions at sites 2/4/6), 48 training images per
    class, 30 epochs: the attribute layer classifies well above 1/3, and translating lesion images
    to healthy yields FA maps on the subject's *own* lesions (NCC with own masks well above the NCC
    with other subjects' masks of the same class)."""
    from neurointerp.simulate.icam.experiment import lesion_experiment_tasks

    r = lesion_experiment_tasks("multiclass", n_per_group=48, n_test_per_group=24, epochs=30, n_samples=8, seed=0)
    assert r["accuracy"] > 0.6, r["accuracy_by_class"]
    th = r["to_healthy"]
    assert th["ncc"]["mean"] > 0.25 and th["ncc"]["mean"] > th["chance_shuffled"]["mean"] + 0.15, th
    assert r["default_target_is_second_most_likely"] == 1.0


@pytest.mark.slow
def test_regression_icam_predicts_age_and_translates_where_age_acts():
    """Brain-age phantoms (lesion load grows with age), 128 training images, 30 epochs: the
    attribute layer regresses age, translating subjects of 67+ years to 45 darkens their own
    lesions (signed NCC < 0; |FA| on the own mask well above shuffled masks) and translating
    subjects of 57 or less to 80 brightens the lesion sites (signed NCC with the mean mask > 0)."""
    from neurointerp.simulate.icam.experiment import lesion_experiment_tasks

    r = lesion_experiment_tasks("regression", n_per_group=64, n_test_per_group=24, epochs=30, n_samples=8, seed=0)
    assert r["r"] > 0.7 and r["mae"] < 0.6 * r["mae_of_mean_prediction"], (r["r"], r["mae"])
    ty = r["to_young"]
    assert ty["signed_ncc"] < -0.2 and ty["ncc"]["mean"] > ty["chance_shuffled"]["mean"] + 0.1, ty
    assert r["to_old"]["signed_ncc_with_mean_mask"] > 0.05, r["to_old"]
    assert r["older"]["reached_change"] > r["younger"]["reached_change"]  # the translations move the predicted age apart
