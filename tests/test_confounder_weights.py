"""train --balance-confounders: overlap-weighted, class-balanced sampling, and when train weights by default (issue #21)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from neurointerp.cli.app import main
from neurointerp.train.baseline import confounder_table
from neurointerp.train.confounder_weights import FEW_EFFECTIVE, MIN_EFFECTIVE, balance_check, choose_balancing, propensity_weights
from neurointerp.train.loop import sample_stream


def _confounded(n=400, strength=1.5, seed=0):
    """Age shifted by ``strength`` SD between the classes, with overlap."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    age = rng.normal(0, 1, n) + strength * y
    frame = pd.DataFrame({"age": 60 + 8 * age, "sex": rng.choice(["F", "M"], n)})
    return frame, y


def test_weights_are_overlap_weights_of_an_independent_logit():
    import statsmodels.api as sm

    frame, y = _confounded()
    table = confounder_table(frame, ["age"], list(range(len(frame))), "cohort")
    fit = np.arange(len(frame))
    w, record = propensity_weights(table, fit, y)
    p1 = sm.Logit(y, sm.add_constant(frame["age"].to_numpy())).fit(disp=0).predict()
    # overlap weights: 1 - p(own class | age); statsmodels' maximum-likelihood propensities
    assert np.allclose(w, np.where(y == 1, 1 - p1, p1), atol=1e-5)
    assert set(record["effective_participants"]) == {0, 1} and all(50 < e < 200 for e in record["effective_participants"].values())
    # the defining property: weighted means of the confounder equal in both classes
    age = frame["age"].to_numpy()
    assert np.average(age[y == 1], weights=w[y == 1]) == pytest.approx(np.average(age[y == 0], weights=w[y == 0]), abs=1e-3)


def test_three_classes_get_generalised_overlap_weights():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1, 2], 150)
    frame = pd.DataFrame({"age": 60 + 8 * (rng.normal(0, 1, len(y)) + 0.8 * y)})
    table = confounder_table(frame, ["age"], list(range(len(frame))), "cohort")
    w, _ = propensity_weights(table, np.arange(len(y)), y)
    means = [np.average(frame["age"][y == c], weights=w[y == c]) for c in range(3)]
    raw = [frame["age"][y == c].mean() for c in range(3)]
    # (exact for two classes; for more, the multinomial fit balances them to within a few percent)
    assert max(raw) - min(raw) > 8 and max(means) - min(means) < 0.1 * (max(raw) - min(raw)), (raw, means)


def test_weighted_stream_balances_the_confounder_between_classes():
    frame, y = _confounded(strength=1.2)
    table = confounder_table(frame, ["age", "sex"], list(range(len(frame))), "cohort")
    fit = np.arange(40, len(frame))  # the weights belong to these rows, in this order
    w, _ = propensity_weights(table, fit, y)
    check = balance_check(table, fit, y, w)
    assert check["age"]["before"] > 0.8 and abs(check["age"]["after"]) < 0.15, check
    g = torch.Generator().manual_seed(0)
    stream = sample_stream(fit, y, 2, True, 16 * 500, g, weights=w)
    assert all((y[b] == 1).sum() == 8 for b in stream.reshape(500, 16))  # still half and half per batch
    assert set(stream) <= set(fit)
    age = frame["age"].to_numpy()
    drawn = [age[stream[y[stream] == c]] for c in (0, 1)]
    raw = [age[fit][y[fit] == c] for c in (0, 1)]
    sd = age[fit].std()
    assert (raw[1].mean() - raw[0].mean()) / sd > 0.8
    assert abs(drawn[1].mean() - drawn[0].mean()) / sd < 0.2  # the network sees no age difference
    # without weights: the drawn samples keep the difference
    plain = sample_stream(fit, y, 2, True, 16 * 500, torch.Generator().manual_seed(0))
    assert (age[plain[y[plain] == 1]].mean() - age[plain[y[plain] == 0]].mean()) / sd > 0.8
    again = sample_stream(fit, y, 2, True, 16 * 500, torch.Generator().manual_seed(0), weights=w)
    assert np.array_equal(stream, again)


def test_separated_classes_are_reported_not_hidden():
    frame, y = _confounded(strength=6.0)  # almost no overlap: few participants to balance with
    table = confounder_table(frame, ["age"], list(range(len(frame))), "cohort")
    w, record = propensity_weights(table, np.arange(len(frame)), y)
    assert min(record["effective_participants"].values()) < MIN_EFFECTIVE  # train warns about this
    assert all(e >= 1 for e in record["effective_participants"].values())


def test_default_weights_only_when_every_model_keeps_enough_participants():
    """The default (requested None): weighted draws when every model's training rows keep at least
    MIN_EFFECTIVE effective participants per class, one decision for all of them; an explicit
    choice is obeyed without a message."""
    frame, y = _confounded(n=200, strength=1.0)
    table = confounder_table(frame, ["age"], list(range(len(frame))), "cohort")
    classes = ["control", "patient"]
    folds = {f"fold-{k}": np.flatnonzero(np.arange(len(y)) % 5 != k - 1) for k in range(1, 6)}
    plan = choose_balancing(table, folds, y, classes, None)
    fewest = min(min(propensity_weights(table, idx, y)[1]["effective_participants"].values()) for idx in folds.values())
    assert fewest >= MIN_EFFECTIVE and plan.weighted and not plan.is_warning and f"at least {fewest:.1f} effective participants" in plan.reason
    assert plan.message == f"--confounder age: {plan.reason}" and not plan.warnings(classes)
    # each model's weights are fitted once, here: the same as fitting them on that model's rows
    assert set(plan.fits) == set(folds)
    for name, idx in folds.items():
        np.testing.assert_allclose(plan.fits[name][0], propensity_weights(table, idx, y)[0])
        assert plan.fits[name][1]["standardised_difference"]["age"]["after"] < 0.25
    # one model with too few overlapping participants turns it off for the whole run, and says where
    small = {**folds, "final": np.r_[np.flatnonzero(y == 0)[:9], np.flatnonzero(y == 1)[:9]]}
    plan = choose_balancing(table, small, y, classes, None)
    assert not plan.weighted and "in final (fewer than 10)" in plan.reason and "effective participants of class" in plan.reason
    assert plan.is_warning and "differ by" in plan.reason  # the ages differ between the classes: a warning, not a note
    # classes that do not differ in age: an information line, not a warning, even when too few
    same = frame.assign(age=60 + 8 * np.random.default_rng(5).normal(0, 1, len(frame)))
    t_same = confounder_table(same, ["age"], list(range(len(same))), "cohort")
    tiny = {"final": np.r_[np.flatnonzero(y == 0)[:6], np.flatnonzero(y == 1)[:6]]}
    plan = choose_balancing(t_same, tiny, y, classes, None)
    assert not plan.weighted and not plan.is_warning and "differ by" not in plan.reason
    # explicit choices are obeyed without a message; --balance-confounders warns per model it cannot serve
    forced = choose_balancing(table, small, y, classes, True)
    assert forced.weighted and forced.message is None and set(forced.fits) == set(small)
    lines = forced.warnings(classes)
    assert len(lines) == 1 and lines[0].startswith("final: --balance-confounders leaves about") and "effective participants of class" in lines[0]
    assert forced.warnings(classes, {"fold-1"}) == []
    for plan in (choose_balancing(table, small, y, classes, False), choose_balancing(None, folds, y, classes, None)):
        assert not plan.weighted and plan.message is None and not plan.fits
    # what the checkpoint records of the choice
    assert forced.choice() == {"chosen_by": "--balance-confounders"}
    assert choose_balancing(table, small, y, classes, False).choice() == {"chosen_by": "--no-balance-confounders"}
    assert choose_balancing(None, folds, y, classes, None).choice() is None
    auto = choose_balancing(table, folds, y, classes, None)
    assert auto.choice() == {"chosen_by": f"default: weighted when, in every model, the weights keep at least {MIN_EFFECTIVE} effective "
                                          "participants per class and bring each confounder within 0.25 SD between the classes",
                             "note": auto.message, "reason": auto.reason}


def test_weighted_but_few_effective_participants_is_a_warning_with_what_would_help():
    """Between MIN_EFFECTIVE and FEW_EFFECTIVE effective participants per class the default weights
    (and says so), and warns that such a model has few to learn from, with how many times as many
    participants a cohort like this one would need; from FEW_EFFECTIVE on, no warning."""
    classes = ["control", "patient"]
    frame, y = _confounded(n=60, strength=1.0)
    table = confounder_table(frame, ["age"], list(range(len(frame))), "cohort")
    for requested in (None, True):
        plan = choose_balancing(table, {"final": np.arange(len(y))}, y, classes, requested)
        eff = plan.fits["final"][1]["effective_participants"]
        assert plan.weighted and MIN_EFFECTIVE <= min(eff.values()) < FEW_EFFECTIVE, eff
        lines = plan.warnings(classes)
        assert len(lines) == 1 and lines[0].startswith("final: the confounder weights leave about "), lines
        assert all(f"{e:.1f} effective participants of class {classes[c]}" in lines[0] for c, e in eff.items()), lines
        assert f"(fewer than {FEW_EFFECTIVE})" in lines[0] and "few to learn from" in lines[0]
        # the effective number grows in proportion to the participants: 20 / fewest times as many
        assert lines[0].endswith(f"would need about {FEW_EFFECTIVE / round(min(eff.values()), 1):.1f} times as many participants")
        assert plan.warnings(classes, {"fold-1"}) == []
    # a cohort drawn the same way, with that many times as many participants, keeps enough: no warning
    factor = FEW_EFFECTIVE / min(eff.values())
    n_big = 2 * int(np.ceil(len(y) * factor * 1.2 / 2))
    big, yb = _confounded(n=n_big, strength=1.0, seed=1)
    plan = choose_balancing(confounder_table(big, ["age"], list(range(len(big))), "cohort"), {"final": np.arange(n_big)}, yb, classes, None)
    assert plan.weighted and min(plan.fits["final"][1]["effective_participants"].values()) >= FEW_EFFECTIVE and plan.warnings(classes) == []


def _gaussians_with_confounders(tmp_path):
    """A synth gaussians cohort (40 per class) with a confounder the classes share ('overlap', 0.5 SD
    apart) and one they do not ('apart', 30 SD apart); returns the table's path (c.csv)."""
    from neurointerp.synth.gaussians import synth_gaussians

    table = synth_gaussians(tmp_path / "data", variant="magnitude", n_per_group=40, seed=1)
    frame = pd.read_csv(table, dtype={"participant_id": str})
    rng = np.random.default_rng(0)
    is1 = (frame["label"] == sorted(frame["label"].unique())[1]).to_numpy()
    frame["overlap"] = 60 + 8 * (rng.normal(0, 1, len(frame)) + 0.5 * is1)
    frame["apart"] = np.where(is1, 80.0, 50.0) + rng.normal(0, 1, len(frame))
    frame.to_csv(table.parent / "c.csv", index=False)
    return table.parent / "c.csv"


def test_train_weights_by_default_as_it_would_when_asked(tmp_path, capsys):
    """train --confounder X with no choice: weighted draws when the classes overlap in X -- the same
    training as --balance-confounders (same settings hash: the folder is reused, nothing retrained);
    unweighted, with one warning line saying why, when they hardly overlap;
    --no-balance-confounders: unweighted, recorded."""
    from neurointerp.models.checkpoint import read_checkpoint

    table = _gaussians_with_confounders(tmp_path)
    common = ["--folds", "0", "--final", "--steps", "10", "--threads", "1"]
    assert main(["train", str(table), str(tmp_path / "auto"), "--confounder", "overlap", *common]) == 0
    err = capsys.readouterr().err
    assert "training draws weighted so that overlap no longer predicts the class" in err, err
    assert not [ln for ln in err.splitlines() if ln.startswith("warning") and ("training draws" in ln or "--balance-confounders" in ln)], err
    tr = read_checkpoint(tmp_path / "auto" / "model.pt")["training"]
    assert tr["hyperparameters"]["balance_confounders"] is True and tr["hyperparameters"]["sampling"] == "class-balanced, confounder-weighted"
    assert tr["confounder_weighting"]["weighted"] and tr["confounder_weighting"]["chosen_by"].startswith("default")
    assert main(["train", str(table), str(tmp_path / "auto"), "--confounder", "overlap", "--balance-confounders", *common]) == 0
    assert "already trained with these settings" in capsys.readouterr().err

    assert main(["train", str(table), str(tmp_path / "off"), "--confounder", "overlap", "--no-balance-confounders", *common]) == 0
    assert "training draws" not in capsys.readouterr().err
    tr = read_checkpoint(tmp_path / "off" / "model.pt")["training"]
    assert tr["hyperparameters"]["sampling"] == "class-balanced" and tr["confounder_weighting"] == {"weighted": False, "chosen_by": "--no-balance-confounders"}

    assert main(["train", str(table), str(tmp_path / "apart"), "--confounder", "apart", *common]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "training draws" in ln]
    # 30 SD apart: the weights keep many effective participants, but cannot bring the classes together
    assert len(lines) == 1 and lines[0].startswith("warning: --confounder apart: training draws not weighted") and "hardly overlap" in lines[0], lines
    tr = read_checkpoint(tmp_path / "apart" / "model.pt")["training"]
    assert tr["hyperparameters"]["balance_confounders"] is False and tr["confounder_weighting"]["note"] in lines[0]


def test_train_records_the_weighting_and_warns_when_it_cannot_balance(tmp_path, capsys):
    from neurointerp.models.checkpoint import read_checkpoint

    table = _gaussians_with_confounders(tmp_path)
    common = ["--folds", "0", "--final", "--steps", "10", "--threads", "1", "--balance-confounders"]
    code = main(["train", str(table), str(tmp_path / "m1"), "--confounder", "overlap", *common])
    err = capsys.readouterr().err
    assert code == 0 and "could not balance" not in err, err
    ck = read_checkpoint(tmp_path / "m1" / "model.pt")
    rec = ck["training"]["confounder_weighting"]
    assert rec["confounders"] == ["overlap"] and rec["standardised_difference"]["overlap"]["after"] < 0.25
    assert ck["training"]["hyperparameters"]["sampling"] == "class-balanced, confounder-weighted"
    code = main(["train", str(table), str(tmp_path / "m2"), "--confounder", "apart", *common])
    warn = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: final: --balance-confounders")]
    assert code == 0 and warn and all("effective participants" in w or "could not balance apart" in w for w in warn), warn


@pytest.mark.parametrize("extra, message", [
    (["--balance-confounders"], "--balance-confounders needs the columns to balance: --confounder NAME"),
    (["--balance-confounders", "--confounder", "age", "--task", "regression"], "--balance-confounders applies to classification only"),
])
def test_cli_refuses_balance_without_confounders(tmp_path, capsys, extra, message):
    table = tmp_path / "c.csv"
    table.write_text("participant_id,image,label,age\n")
    code = main(["train", str(table), str(tmp_path / "out"), "--folds", "0", "--final", *extra])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning: ")]
    assert code == 2 and len(err) == 1 and message in err[0] and not (tmp_path / "out").exists()


def test_train_methods_paragraph_says_the_budget_and_the_weighting(tmp_path):
    """The report's methods text of a default-budget run with --balance-confounders (it used to say
    "None epochs" when --steps was left at its default)."""
    from neurointerp.report.run_report import RunView
    from neurointerp.report.sections import _train_methods
    from neurointerp.train.defaults import DEFAULT_STEPS

    options = {"steps": None, "epochs": None, "batch_size": 16, "lr": 0.001, "lr_schedule": "cosine", "warmup": 0.05, "confounders": ["age"], "balance_confounders": True,
               "sampling": "class-balanced, confounder-weighted", "validation_fraction": 0.2, "seed": 0}
    text, refs = _train_methods(RunView(tmp_path, "train", {"options": options}, []))
    assert f"{DEFAULT_STEPS} optimiser steps" in text and "None" not in text
    assert "overlap weights" in text and "1 - p(own class | age)" in text and "li2018" in refs
    text, refs = _train_methods(RunView(tmp_path, "train", {"options": {**options, "balance_confounders": False}}, []))
    assert "overlap weights" not in text and "li2018" not in refs and "baseline on age alone" in text
