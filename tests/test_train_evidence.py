"""Held-out evidence, confounder baselines, the skill gate and the training schedule (units, fast)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from neurointerp.errors import InputError
from neurointerp.train import evidence as ev_mod
from neurointerp.train.baseline import baseline_scores, confounder_table, fit_logistic, predict_logistic
from neurointerp.train.evidence import heldout_evidence, per_participant
from neurointerp.train.loop import lr_factor, read_predictions, sample_stream
from neurointerp.train.splits import stratified_group_split


def _binary(n=60, shift=1.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n // 2), np.ones(n // 2)].astype(int)
    s = 1 / (1 + np.exp(-(rng.standard_normal(n) + shift * (2 * y - 1))))
    return y, s


# ---------------------------------------------------------------- figures and tests against chance
def test_binary_evidence_matches_sklearn_and_scipy():
    from scipy.stats import mannwhitneyu
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    y, s = _binary()
    ids = [f"p{i}" for i in range(len(y))]
    ev = heldout_evidence(y, s, "binary", ids, source="held-out fold", description="test", seed=0)
    assert ev["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert ev["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, (s >= 0.5).astype(int)), abs=1e-12)
    assert ev["p_value"] == pytest.approx(mannwhitneyu(s[y == 1], s[y == 0], alternative="greater").pvalue, rel=1e-12)
    lo, hi = ev["ci"]
    assert lo < ev["auc"] < hi and hi - lo < 0.4
    assert ev["beats_chance"] and ev["n_participants"] == 60 and ev["primary"] == "auc"
    # the bootstrap CI of the AUC agrees with DeLong's normal approximation (slow explicit placements)
    pos, neg = s[y == 1], s[y == 0]
    v10 = np.array([np.mean((p > neg) + 0.5 * (p == neg)) for p in pos])
    v01 = np.array([np.mean((pos > q) + 0.5 * (pos == q)) for q in neg])
    se = math.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))
    assert lo == pytest.approx(ev["auc"] - 1.96 * se, abs=0.03) and hi == pytest.approx(min(1, ev["auc"] + 1.96 * se), abs=0.03)


def test_no_skill_is_not_evidence():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(30), np.ones(30)].astype(int)
    ev = heldout_evidence(y, rng.random(60), "binary", [str(i) for i in range(60)], source="x", description="x")
    assert not ev["beats_chance"] and ev["p_value"] > 0.05 and ev["ci"][0] < 0.5 < ev["ci"][1]
    # one class only: no evidence, no crash
    one = heldout_evidence(np.zeros(5, int), rng.random(5), "binary", list("abcde"), source="x", description="x")
    assert not one["beats_chance"] and one["p_value"] is None


def test_multiclass_and_regression_evidence():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 20)
    good = np.eye(3)[y] * 2 + rng.random((60, 3))
    good /= good.sum(1, keepdims=True)
    ev = heldout_evidence(y, good, "multiclass", [str(i) for i in range(60)], source="x", description="x")
    assert ev["balanced_accuracy"] == 1.0 and ev["p_value"] == pytest.approx(1 / (ev_mod.N_PERM + 1)) and ev["beats_chance"]
    bad = rng.dirichlet(np.ones(3), 60)
    assert not heldout_evidence(y, bad, "multiclass", [str(i) for i in range(60)], source="x", description="x")["beats_chance"]

    t = rng.normal(70, 8, 80)
    pred = 0.6 * (t - 70) + 70 + rng.normal(0, 4, 80)
    ev = heldout_evidence(t, pred, "regression", [str(i) for i in range(80)], source="x", description="x")
    assert ev["r2"] == pytest.approx(r2_score(t, pred), abs=1e-12) and ev["r"] == pytest.approx(np.corrcoef(t, pred)[0, 1])
    assert ev["primary"] == "r2" and ev["beats_chance"] and ev["p_value"] < 0.01
    null = heldout_evidence(t, rng.normal(70, 8, 80), "regression", [str(i) for i in range(80)], source="x", description="x")
    assert not null["beats_chance"]


def test_sessions_of_one_participant_count_once():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.3, 0.2, 0.9, 0.7, 0.8])
    ids, yp, sp = per_participant(["a", "a", "b", "c", "c", "d"], y, s, "binary")
    assert ids == ["a", "b", "c", "d"] and list(yp) == [0, 0, 1, 1] and np.allclose(sp, [0.2, 0.2, 0.8, 0.8])
    ev = heldout_evidence(y, s, "binary", ["a", "a", "b", "c", "c", "d"], source="x", description="x")
    assert ev["n_participants"] == 4 and ev["n_images"] == 6


# ---------------------------------------------------------------- confounder baselines
def test_logistic_baselines_equal_statsmodels_maximum_likelihood():
    import statsmodels.api as sm

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2))
    y = (x @ [1.0, -0.5] + rng.logistic(size=200) > 0).astype(int)
    w = fit_logistic(x, y, 2, penalty=0.0)
    ref = sm.Logit(y, sm.add_constant(x)).fit(disp=0)
    assert np.allclose(w[:, 0], ref.params, atol=1e-5)
    assert np.allclose(predict_logistic(w, x), ref.predict(sm.add_constant(x)), atol=1e-6)

    y3 = np.digitize(x @ [1.0, 0.7] + rng.logistic(size=200), [-1, 1])
    w3 = fit_logistic(x, y3, 3, penalty=0.0)
    ref3 = sm.MNLogit(y3, sm.add_constant(x)).fit(disp=0, method="newton", maxiter=100)
    assert np.allclose(predict_logistic(w3, x), ref3.predict(sm.add_constant(x)), atol=1e-4)


def test_confounder_table_and_held_out_baseline():
    import statsmodels.api as sm

    rng = np.random.default_rng(2)
    n = 120
    frame = pd.DataFrame({"age": rng.normal(70, 8, n), "sex": rng.choice(["F", "M"], n)})
    y = (frame["age"].to_numpy() - 70 + rng.normal(0, 6, n) > 0).astype(int)
    table = confounder_table(frame, ["age", "sex"], list(range(2, n + 2)), "c.csv")
    assert table.columns == ["age", "sex[M]"] and table.kinds == {"age": "numeric", "sex": "categorical"}
    tr, te = np.arange(80), np.arange(80, n)
    x = np.c_[frame["age"], frame["sex"] == "M"].astype(float)
    ref = sm.Logit(y[tr], sm.add_constant(x[tr])).fit(disp=0).predict(sm.add_constant(x[te]))
    assert np.allclose(baseline_scores(table, tr, te, y, "binary", 2, penalty=0.0), ref, atol=1e-5)
    assert np.allclose(baseline_scores(table, tr, te, y, "binary", 2), ref, atol=0.02)  # the default small ridge: close
    # regression: ordinary least squares
    t = frame["age"].to_numpy() * 0.5 + rng.normal(0, 1, n)
    r = baseline_scores(table, tr, te, t, "regression", 0)
    assert np.allclose(r, sm.OLS(t[tr], sm.add_constant(x[tr])).fit().predict(sm.add_constant(x[te])), atol=1e-8)
    # bad input: one line naming the row
    bad = frame.copy()
    bad.loc[5, "age"] = np.nan
    with pytest.raises(InputError, match=r"c.csv row 7: confounder 'age' is missing"):
        confounder_table(bad, ["age"], list(range(2, n + 2)), "c.csv")
    with pytest.raises(InputError, match="confounder column 'site' not found"):
        confounder_table(frame, ["site"], list(range(2, n + 2)), "c.csv")


def test_gain_over_a_predictive_baseline():
    rng = np.random.default_rng(4)
    n = 200
    age = rng.standard_normal(n)
    y = (age + rng.standard_normal(n) > 0).astype(int)
    ids = [str(i) for i in range(n)]
    base = 1 / (1 + np.exp(-age))
    # a model that only knows age (plus noise) does not beat its age baseline: "confounded"
    same = 1 / (1 + np.exp(-(age + 0.3 * rng.standard_normal(n))))
    ev = heldout_evidence(y, same, "binary", ids, source="x", description="x", baseline_scores=base, confounders=["age"])
    b = ev["baseline"]
    assert b["predictive"] and not b["beats_baseline"] and b["confounded"] and b["gain_ci"][0] < 0
    # a model that sees the label much better does
    better = 1 / (1 + np.exp(-(4 * (2 * y - 1) + rng.standard_normal(n))))
    ev = heldout_evidence(y, better, "binary", ids, source="x", description="x", baseline_scores=base, confounders=["age"])
    assert ev["baseline"]["beats_baseline"] and not ev["baseline"]["confounded"] and ev["baseline"]["gain"] > 0.1
    # a baseline at chance is not "predictive": no warning whatever the model does
    ev = heldout_evidence(y, same, "binary", ids, source="x", description="x", baseline_scores=rng.random(n), confounders=["age"])
    assert not ev["baseline"]["predictive"] and not ev["baseline"]["confounded"]


# ---------------------------------------------------------------- the skill gate
def _loaded(tmp_path, evidence):
    from neurointerp.models.checkpoint import checkpoint_dict, load_checkpoint, save_checkpoint
    from neurointerp.models.classifier import ConvClassifier
    from neurointerp.models.inputs import InputSpec

    spec = InputSpec((8, 8), np.eye(4))
    model = ConvClassifier((8, 8), channels=(2,), hidden=())
    path = save_checkpoint(tmp_path / "m.pt", checkpoint_dict(model, spec, "binary", ["a", "b"], "simnet2d", {}, {"evidence": evidence}))
    return load_checkpoint(path)


def test_skill_gate(tmp_path, capsys):
    from neurointerp.models.skill import require_skill, skill_record

    y, s = _binary()
    good = heldout_evidence(y, s, "binary", [str(i) for i in range(60)], source="cross-validation", description="d")
    rec = require_skill(_loaded(tmp_path, good))
    assert rec["HeldOutSkill"]["validated"] and rec["HeldOutSkill"]["auc"] == good["auc"]

    rng = np.random.default_rng(3)
    bad = heldout_evidence(y, rng.random(60), "binary", [str(i) for i in range(60)], source="cross-validation", description="d")
    clf = _loaded(tmp_path, bad)
    with pytest.raises(InputError) as err:
        require_skill(clf, command="saliency")
    msg = str(err.value)
    assert "held-out AUC" in msg and f"{bad['auc']:.2f}" in msg and "--allow-unvalidated" in msg and "\n" not in msg
    rec = require_skill(clf, allow_unvalidated=True, command="saliency")
    assert not rec["HeldOutSkill"]["validated"] and rec["HeldOutSkill"]["allowed_unvalidated"]
    assert "warning:" in capsys.readouterr().err

    # an old checkpoint (no evidence) still loads, and is "unvalidated"
    old = _loaded(tmp_path, None)
    assert skill_record(old) == {"HeldOutSkill": {"validated": False, "evidence": None, "allowed_unvalidated": False}}
    with pytest.raises(InputError, match="no held-out evidence"):
        require_skill(old)


# ---------------------------------------------------------------- sampling, schedule, splits, ids
def test_balanced_stream_and_schedule():
    targets = np.array([0] * 30 + [1] * 10)
    fit = np.arange(40)
    g = torch.Generator().manual_seed(0)
    stream = sample_stream(fit, targets, 2, True, 16 * 50, g)
    batches = stream.reshape(50, 16)
    assert all((targets[b] == 1).sum() == 8 for b in batches)  # every batch half and half
    counts = np.bincount(stream, minlength=40)
    assert counts[30:].min() == counts[30:].max() == 40 and counts[:30].max() - counts[:30].min() <= 1
    again = sample_stream(fit, targets, 2, True, 16 * 50, torch.Generator().manual_seed(0))
    assert np.array_equal(stream, again)
    plain = sample_stream(fit, targets, 2, False, 80, torch.Generator().manual_seed(0))
    assert sorted(plain[:40]) == list(range(40))  # whole permutations

    f = [lr_factor(s, 100, "cosine", 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.5, abs=0.02) and f[-1] < 0.001 and all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(99, 100, "constant", 0.0) == 1.0


def test_validation_split_keeps_participants_and_strata():
    groups = [f"p{i // 2}" for i in range(100)]  # two sessions each
    strata = [int(i // 2 < 30) for i in range(100)]  # 30 participants of class 1, 20 of class 0
    mask = stratified_group_split(groups, strata, 0.2, seed=1)
    chosen = {g for g, m in zip(groups, mask) if m}
    assert all(mask[i] == (groups[i] in chosen) for i in range(100))
    assert sum(1 for g in chosen if int(g[1:]) < 30) == 6 and sum(1 for g in chosen if int(g[1:]) >= 30) == 4


def test_predictions_keep_ids_as_text(tmp_path):
    path = tmp_path / "p.tsv"
    pd.DataFrame({"participant_id": ["007", "010"], "session_id": ["01", "02"], "label": ["1", "0"], "p_1": [0.2, 0.9]}).to_csv(path, sep="\t", index=False)
    p = read_predictions(path)
    assert list(p["participant_id"]) == ["007", "010"] and list(p["session_id"]) == ["01", "02"] and list(p["label"]) == ["1", "0"]


def test_too_few_held_out_participants_are_named_in_the_refusal(tmp_path):
    """3 + 3 validation participants: even a perfect AUC has exact p = 1/C(6,3) = 0.05, so the gate
    refuses; the message says that more held-out participants are needed, not another model."""
    from neurointerp.models.skill import require_skill
    from neurointerp.train.evidence import too_few_hint

    y = np.array([0, 0, 0, 1, 1, 1])
    perfect = heldout_evidence(y, np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), "binary", [str(i) for i in range(6)], source="validation split", description="d")
    assert perfect["auc"] == 1.0 and not perfect["beats_chance"]
    with pytest.raises(InputError, match=r"with 3 \+ 3 held-out participants no result can reach p < 0.05: train with cross-validation"):
        require_skill(_loaded(tmp_path, perfect), command="saliency")
    y8 = np.array([0, 0, 0, 0, 1, 1, 1, 1])  # 1/C(8,4) = 0.014: a result could show skill
    ev8 = heldout_evidence(y8, np.linspace(0, 1, 8), "binary", [str(i) for i in range(8)], source="validation split", description="d")
    assert too_few_hint(ev8) == "" and ev8["beats_chance"]
