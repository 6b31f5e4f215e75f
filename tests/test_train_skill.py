"""End to end: models that learn, models that do not, and the gate between them (issues #21, #25)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from neurointerp.cli.app import main
from neurointerp.models.checkpoint import load_checkpoint, read_checkpoint


def _run(args, capsys):
    code = main([*map(str, args)])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory):
    """The magnitude Gaussians (a learnable task) with labels shuffled: nothing to learn."""
    from neurointerp.synth.gaussians import synth_gaussians

    table = synth_gaussians(tmp_path_factory.mktemp("shuf") / "data", variant="magnitude", n_per_group=40, seed=2)
    frame = pd.read_csv(table, dtype={"participant_id": str})
    real = frame.copy()
    frame["label"] = np.random.default_rng(0).permutation(frame["label"].to_numpy())
    frame.to_csv(table.parent / "shuffled.csv", index=False)
    real.to_csv(table.parent / "real.csv", index=False)
    return table.parent


def test_shuffled_labels_are_flagged_and_refused(shuffled, tmp_path, capsys):
    common = ["--steps", 150, "--threads", 1, "--seed", 0]
    # without CV: the validation split is the evidence
    code, err = _run(["train", shuffled / "shuffled.csv", tmp_path / "noise", "--folds", 0, "--final", *common], capsys)
    assert code == 0, err
    warn = [line for line in err.splitlines() if line.startswith("warning: final: no evidence that the model beats chance")]
    assert len(warn) == 1 and "AUC" in warn[0] and "--allow-unvalidated" in warn[0], err
    ck = read_checkpoint(tmp_path / "noise" / "model.pt")
    ev = ck["metrics"]["evidence"]
    assert ev["source"] == "validation split" and not ev["beats_chance"] and ev["p_value"] >= 0.05
    assert ck["training"]["validation_participant_ids"] and not set(ck["training"]["validation_participant_ids"]) - set(ck["training"]["participant_ids"])

    # saliency refuses it, one line naming the figure, before writing anything
    test = shuffled / "real.csv"
    code, err = _run(["saliency", tmp_path / "noise" / "model.pt", test, tmp_path / "sal", "--allow-train"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "held-out AUC" in lines[0] and "no evidence that the model beats chance" in lines[0], err
    assert "--allow-unvalidated" in lines[0] and not (tmp_path / "sal").exists()
    for cmd in (["evaluate", tmp_path / "noise" / "model.pt", test, tmp_path / "ev", "--allow-train"],
                ["confound-test", tmp_path / "noise" / "model.pt", test, tmp_path / "ct", "--confounder", "m1"]):
        code, err = _run(cmd, capsys)
        assert code == 2 and "no evidence that the model beats chance" in err and not (tmp_path / cmd[3]).exists()
    # ... unless asked to, and then the maps' sidecars say so
    code, err = _run(["saliency", tmp_path / "noise" / "model.pt", test, tmp_path / "sal", "--allow-train", "--allow-unvalidated", "--threads", 1], capsys)
    assert code == 0 and "warning:" in err, err
    # the validation split was never trained on: explaining it needs no --allow-train, the fitted participants do
    val = set(ck["training"]["validation_participant_ids"])
    assert not val & set(load_checkpoint(tmp_path / "noise" / "model.pt").participant_ids)
    real = pd.read_csv(test, dtype={"participant_id": str})
    real[real["participant_id"].isin(val)].to_csv(shuffled / "noise_val.csv", index=False)
    real[~real["participant_id"].isin(val)].head(3).to_csv(shuffled / "noise_fit.csv", index=False)
    args = ["--allow-unvalidated", "--method", "gradient", "--threads", 1]
    code, err = _run(["saliency", tmp_path / "noise" / "model.pt", shuffled / "noise_val.csv", tmp_path / "sal_val", *args], capsys)
    assert code == 0 and "trained on" not in err, err
    code, err = _run(["saliency", tmp_path / "noise" / "model.pt", shuffled / "noise_fit.csv", tmp_path / "sal_fit", *args], capsys)
    assert code == 2 and "3 of the cohort's participants were used to train the model" in err, err

    # with cross-validation: the pooled held-out predictions are the evidence of the final model
    code, err = _run(["train", shuffled / "shuffled.csv", tmp_path / "cv", "--folds", 3, "--final", *common], capsys)
    assert code == 0, err
    assert "warning: cross-validation: no evidence that the model beats chance" in err
    final = read_checkpoint(tmp_path / "cv" / "model.pt")["metrics"]["evidence"]
    evidence = json.loads((tmp_path / "cv" / "heldout_evidence.json").read_text())
    assert final == evidence["cross-validation"] and final["n_participants"] == 80 and not final["beats_chance"]


def test_real_labels_pass_the_gate(shuffled, tmp_path, capsys):
    code, err = _run(["train", shuffled / "real.csv", tmp_path / "real", "--folds", 3, "--steps", 150, "--threads", 1], capsys)
    assert code == 0, err
    assert "warning" not in err and "held-out skill (cross-validation): AUC" in err
    for k in (1, 2, 3):
        ev = load_checkpoint(tmp_path / "real" / f"fold-{k}" / "model.pt").meta["metrics"]["evidence"]
        assert ev["source"] == "held-out fold" and ev["beats_chance"] and ev["auc"] > 0.8
    pooled = json.loads((tmp_path / "real" / "heldout_evidence.json").read_text())["cross-validation"]
    pred = pd.read_csv(tmp_path / "real" / "predictions.tsv", sep="\t", dtype={"participant_id": str})
    from sklearn.metrics import roc_auc_score

    assert pooled["auc"] == pytest.approx(roc_auc_score(pred["label"].astype(int), pred["p_1"]), abs=1e-9)


def _template_cohort(folder, **kw):
    """A synth brain cohort whose images are the subjects' anatomy on the template grid (no pose)."""
    from neurointerp.synth.brain import synth_brain

    table = synth_brain(folder, template_space=True, **kw)
    frame = pd.read_csv(table, dtype={"participant_id": str})
    frame["image"] = [str(folder / p) for p in frame["template_image"]]
    frame.drop(columns=["template_image"]).to_csv(folder / "template.csv", index=False)
    return folder / "template.csv"


@pytest.mark.slow
def test_confounder_baseline_warns_when_the_model_learned_age(tmp_path, capsys):
    """Issue #25: strong age confound + weak disease -> the model beats chance but not the age-only
    baseline -> one warning line; no confound -> no warning."""
    common = ["--folds", 0, "--final", "--steps", 200, "--confounder", "age", "--threads", 1, "--seed", 0]
    conf = _template_cohort(tmp_path / "conf", n_subjects=80, voxel_size=8.0, effect_size=0.5, confound_strength=0.9, confound_size=3.0, seed=4)
    code, err = _run(["train", conf, tmp_path / "m_conf", *common], capsys)
    assert code == 0, err
    ev = read_checkpoint(tmp_path / "m_conf" / "model.pt")["metrics"]["evidence"]
    b = ev["baseline"]
    assert ev["beats_chance"] and b["predictive"] and b["confounded"] and not b["beats_baseline"], ev
    warn = [line for line in err.splitlines() if "the confounders alone predict the label and the model does not beat them" in line]
    assert len(warn) == 1 and warn[0].startswith("warning: final:") and "age-only baseline AUC" in warn[0], err

    clean = _template_cohort(tmp_path / "clean", n_subjects=80, voxel_size=8.0, effect_size=3.0, confound_strength=0.0, seed=4)
    code, err = _run(["train", clean, tmp_path / "m_clean", *common], capsys)
    assert code == 0, err
    ev = read_checkpoint(tmp_path / "m_clean" / "model.pt")["metrics"]["evidence"]
    assert ev["beats_chance"] and not ev["baseline"]["confounded"] and "warning" not in err, err


@pytest.mark.slow
def test_default_train_beats_chance_on_a_small_brain_cohort(tmp_path, capsys):
    """Issue #21: 60 training subjects, the default effect size and age confound, `train --folds 0
    --final` with every other option at its default: the model beats chance on 40 other subjects.
    (The old defaults -- 30 epochs of batch 32 -- stayed at chance here: benchmarks/train_defaults.py.)"""
    from neurointerp.train.evidence import heldout_evidence

    table = _template_cohort(tmp_path / "data", n_subjects=100, voxel_size=6.0, seed=7)
    frame = pd.read_csv(table, dtype={"participant_id": str})
    frame.iloc[:60].to_csv(tmp_path / "train.csv", index=False)
    test = frame.iloc[60:]
    code, err = _run(["train", tmp_path / "train.csv", tmp_path / "model", "--folds", 0, "--final", "--threads", 2], capsys)
    assert code == 0, err
    clf = load_checkpoint(tmp_path / "model" / "model.pt")
    from neurointerp.io import load_image

    scores = clf.predict(np.stack([load_image(p).data for p in test["image"]]))
    y = (test["label"] == clf.classes[1]).to_numpy().astype(int)
    ev = heldout_evidence(y, scores, "binary", list(test["participant_id"]), source="test", description="40 other subjects")
    assert ev["beats_chance"] and ev["auc"] > 0.65, ev


def test_early_stopping_keeps_the_best_check(shuffled, tmp_path, capsys):
    out = tmp_path / "es"
    code, err = _run(["train", shuffled / "real.csv", out, "--folds", 0, "--final", "--steps", 200, "--eval-every", 10,
                      "--patience", 2, "--threads", 1], capsys)
    assert code == 0, err
    ck = read_checkpoint(out / "model.pt")
    tr, ev = ck["training"], ck["metrics"]["evidence"]
    hist = pd.DataFrame(ck["metrics"]["history"])
    best = hist.loc[hist["val_auc"] == hist["val_auc"].max(), "step"].max()  # ties: the later check
    assert tr["selected"]["step"] == best and tr["selected"]["criterion"] == "AUC"
    assert tr["stopped_early"] == (tr["steps_done"] < 200) and tr["steps_done"] >= 100  # never before half the budget
    assert ev["selected_on_split"] and "optimistic" in ev["description"] and ev["auc"] == pytest.approx(hist.loc[hist["step"] == best, "val_auc"].iloc[0])
    # without a validation split there is nothing to stop on
    code, err = _run(["train", shuffled / "real.csv", tmp_path / "x", "--folds", 2, "--patience", 2], capsys)
    assert code == 2 and "--patience needs a validation split" in err and not (tmp_path / "x").exists()


def test_confounded_warning_does_not_suggest_balancing_a_balanced_model(capsys):
    from neurointerp.train.evidence import heldout_evidence
    from neurointerp.train.loop import _report_evidence

    y = np.array([0] * 15 + [1] * 15)
    scores = np.linspace(0, 1, 30) + np.random.default_rng(0).normal(0, 0.05, 30)
    ev = heldout_evidence(y, scores, "binary", [f"p{i}" for i in range(30)], source="validation split", description="test",
                          baseline_scores=scores, confounders=["age"], seed=0)
    assert ev["beats_chance"] and ev["baseline"]["confounded"]
    _report_evidence({"final": ev})
    plain = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    _report_evidence({"final": ev}, balanced=True)
    balanced = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(plain) == 1 and "may have learned the confounder" in plain[0] and "--balance-confounders trains on draws" in plain[0]
    assert len(balanced) == 1 and "age-only baseline" in balanced[0] and "trained on draws balanced for them" in balanced[0]
    assert "may have learned the confounder" not in balanced[0]
