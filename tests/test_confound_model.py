"""Model-level confound tests (issue #25): the statistics against statsmodels and slow explicit loops."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests

from neurointerp.confound.glm import build_design
from neurointerp.confound.model_tests import (
    auc,
    choose_subjects,
    fit_logistic,
    holm,
    partial_correlation,
    permutations,
    run_model_tests,
    score_beyond_confounders,
)


def cohort(n=160, seed=0, age_in_score=0.0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(float)
    age = 70 + 8 * (0.6 * (2 * y - 1) + 0.8 * rng.standard_normal(n))
    sex = rng.choice(["F", "M"], n)
    site = rng.choice(["a", "b", "c"], n)
    score = 1.2 * (2 * y - 1) + age_in_score * (age - 70) / 8 + rng.standard_normal(n)
    return y, score, pd.DataFrame({"age": age, "sex": sex, "site": site})


def test_logistic_lr_test_matches_statsmodels_and_a_direct_optimisation():
    y, s, conf = cohort()
    design = build_design(s, conf, ["age", "sex", "site"])
    z = design.matrix[:, 2:]
    res = score_beyond_confounders(y, s, z, "binary")
    x0 = sm.add_constant(z)
    x1 = np.column_stack([x0, s])
    m0, m1 = sm.Logit(y, x0).fit(disp=0), sm.Logit(y, x1).fit(disp=0)
    assert res["loglik_confounders"] == pytest.approx(m0.llf, abs=1e-8)
    assert res["loglik_confounders_score"] == pytest.approx(m1.llf, abs=1e-8)
    lr = 2 * (m1.llf - m0.llf)
    assert res["lr"] == pytest.approx(lr, rel=1e-7)
    assert res["p"] == pytest.approx(stats.chi2.sf(lr, 1), rel=1e-6)
    assert res["beta_score"] == pytest.approx(m1.params[-1], rel=1e-6)
    # the same maximum from a general-purpose optimiser on the explicit log-likelihood
    nll = lambda b: -np.sum(y * (x1 @ b) - np.logaddexp(0, x1 @ b))  # noqa: E731
    opt = optimize.minimize(nll, np.zeros(x1.shape[1]), method="BFGS", options={"gtol": 1e-8})
    assert -opt.fun == pytest.approx(res["loglik_confounders_score"], abs=1e-5)
    assert res["auc_score"] == pytest.approx(np.mean([(a > b) + 0.5 * (a == b) for a in s[y == 1] for b in s[y == 0]]))
    assert res["p"] < 1e-6  # the score does carry the label beyond age


def test_gaussian_lr_test_matches_statsmodels():
    rng = np.random.default_rng(3)
    n = 90
    age = rng.normal(size=n)
    target = 2 * age + rng.normal(size=n)
    pred = target + rng.normal(size=n, scale=2)
    res = score_beyond_confounders(target, pred, age[:, None], "regression")
    x0 = sm.add_constant(age[:, None])
    m0 = sm.OLS(target, x0).fit()
    m1 = sm.OLS(target, np.column_stack([x0, pred])).fit()
    lr, p, df = m1.compare_lr_test(m0)
    assert res["lr"] == pytest.approx(lr, rel=1e-9) and res["p"] == pytest.approx(p, rel=1e-7) and df == 1
    assert res["loglik_confounders_score"] == pytest.approx(m1.llf, rel=1e-10)


def test_complete_separation_is_flagged_and_uses_the_limit():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(20), np.ones(20)]
    s = np.r_[rng.uniform(-3, -0.5, 20), rng.uniform(0.5, 3, 20)]
    z = rng.normal(size=(40, 1))
    res = score_beyond_confounders(y, s, z, "binary")
    assert res["separated"]
    assert res["loglik_confounders_score"] > -1e-6  # the supremum of a separable likelihood is 0
    ll0 = sm.Logit(y, sm.add_constant(z)).fit(disp=0).llf
    assert res["lr"] == pytest.approx(-2 * ll0, abs=1e-5)
    fit = fit_logistic(np.column_stack([np.ones(40), z]), y)
    assert fit.converged and not fit.separated

    # when the confounders alone separate the classes, nothing can be tested beyond them: said so
    age = np.r_[rng.uniform(50, 60, 20), rng.uniform(70, 80, 20)]
    design = build_design(s, pd.DataFrame({"age": age}), ["age"])
    res = run_model_tests(s, y, "binary", ["c", "p"], design, ["age"], choose_subjects([str(i) for i in range(40)], ["x"]), n_perm=99)
    assert res.beyond["confounders_separate"] and not res.beyond["significant"]
    assert res.conclusions[0].startswith("Whether the model's score carries information about the diagnosis beyond age cannot be tested on these subjects: age alone separates the classes completely")


def slow_partial(score, cols, cov, perms):
    """Freedman-Lane by explicit OLS refits: y* = fitted0 + e0[perm]; partial R2 = 1 - RSS1/RSS0."""
    n = len(score)
    x0 = np.column_stack([np.ones(n), cov]) if cov.size else np.ones((n, 1))
    x1 = np.column_stack([x0, cols])
    b0 = np.linalg.lstsq(x0, score, rcond=None)[0]
    fitted, e0 = x0 @ b0, score - x0 @ b0

    def r2(y):
        rss0 = np.sum((y - x0 @ np.linalg.lstsq(x0, y, rcond=None)[0]) ** 2)
        rss1 = np.sum((y - x1 @ np.linalg.lstsq(x1, y, rcond=None)[0]) ** 2)
        return (rss0 - rss1) / rss0

    obs = r2(score)
    null = np.array([r2(fitted + e0[p]) for p in perms])
    return obs, (1 + np.sum(null >= obs * (1 - 1e-10))) / (1 + len(perms))


@pytest.mark.parametrize("kind", ["numeric", "categorical3"])
def test_partial_correlation_matches_statsmodels_and_a_slow_permutation_loop(kind):
    y, s, conf = cohort(n=120, seed=4, age_in_score=0.5)
    design = build_design(s, conf, ["age", "sex", "site"])
    x = design.matrix
    cls = y == 1
    cols = {"numeric": design.terms["age"], "categorical3": design.terms["site"]}[kind]
    other = [c for c in range(2, x.shape[1]) if c not in cols]
    perms = permutations(int(cls.sum()), 499, np.random.default_rng(0))
    res = partial_correlation(s[cls], x[cls][:, cols], x[cls][:, other], perms=perms)
    ols = sm.OLS(s[cls], np.column_stack([np.ones(cls.sum()), x[cls][:, other], x[cls][:, cols]])).fit()
    k = len(cols)
    if kind == "numeric":
        # the partial correlation is the correlation of the two residual vectors, and its t-test
        # is the OLS t-test of the coefficient
        zres = sm.OLS(x[cls][:, cols[0]], sm.add_constant(x[cls][:, other])).fit().resid
        sres = sm.OLS(s[cls], sm.add_constant(x[cls][:, other])).fit().resid
        assert res["r"] == pytest.approx(stats.pearsonr(sres, zres)[0], abs=1e-10)
        assert res["p"] == pytest.approx(ols.pvalues[-1], rel=1e-8)
        assert res["r"] > 0.3
    else:
        ftest = ols.f_test(np.eye(ols.params.size)[-k:])
        assert res["p"] == pytest.approx(float(ftest.pvalue), rel=1e-8)
        assert np.isnan(res["r"])
    obs, p_slow = slow_partial(s[cls], x[cls][:, cols], x[cls][:, other], perms)
    assert res["stat"] == pytest.approx(obs, rel=1e-9)
    assert res["p_perm"] == pytest.approx(p_slow, abs=1e-12)


def test_permutation_p_is_uniform_under_the_null():
    rng = np.random.default_rng(7)
    ps = []
    for _ in range(300):
        n = 25
        cov = rng.normal(size=(n, 1))
        age = 0.7 * cov[:, 0] + rng.normal(size=n)
        s = 0.8 * cov[:, 0] + rng.normal(size=n)  # depends on the other confounder only
        ps.append(partial_correlation(s, age, cov, n_perm=199, rng=rng)["p_perm"])
    ps = np.array(ps)
    assert 0.02 <= np.mean(ps < 0.05) <= 0.09
    assert 0.4 <= np.mean(ps < 0.5) <= 0.6


def test_holm_matches_statsmodels():
    p = np.array([0.01, 0.04, 0.03, 0.2, np.nan, 0.001])
    ok = np.isfinite(p)
    assert np.allclose(holm(p)[ok], multipletests(p[ok], method="holm")[1])
    assert np.isnan(holm(p)[4])


def test_auc_equals_mann_whitney():
    rng = np.random.default_rng(2)
    s, pos = rng.normal(size=50).round(1), rng.random(50) < 0.4
    u = stats.mannwhitneyu(s[pos], s[~pos]).statistic
    assert auc(s, pos) == pytest.approx(u / (pos.sum() * (~pos).sum()))


def test_choose_subjects():
    ids = ["a", "b", "c", "d"]
    held = choose_subjects(ids, ["a", "b"])
    assert held.kind == "heldout" and held.rows.tolist() == [2, 3] and "other 2 given participants trained" in held.note
    train = choose_subjects(ids, ids + ["e"])
    assert train.kind == "training" and train.rows.tolist() == [0, 1, 2, 3] and "TRAIN" in train.note
    assert choose_subjects(ids, []).kind == "unknown"
    again = choose_subjects(["a", "b", "c", "c"], ["a"])
    assert again.rows.tolist() == [1, 2, 3] and again.note.endswith("1 rows are further sessions of a participant and are treated as independent subjects")


@pytest.mark.parametrize("age_in_score", [0.0, 0.8])
def test_run_model_tests_words_the_findings(age_in_score):
    y, s, conf = cohort(n=200, seed=5, age_in_score=age_in_score)
    design = build_design(s, conf, ["age", "sex"])
    res = run_model_tests(s, y, "binary", ["control", "patient"], design, ["age", "sex"], choose_subjects([f"p{i}" for i in range(200)], ["x"]), n_perm=999, seed=0)
    age = {w["stratum"]: w for w in res.within if w["confounder"] == "age"}
    sex = [w for w in res.within if w["confounder"] == "sex"]
    assert set(age) == {"control", "patient"} and len(sex) == 2
    assert not any(w["significant"] for w in sex)
    assert res.beyond["significant"]
    text = "\n".join(res.conclusions)
    assert "carries information about the diagnosis beyond age + sex" in text
    if age_in_score:
        assert all(w["significant"] and w["r"] > 0.4 for w in age.values())
        assert "The model's score depends on age within class 'patient' (r=" in text and "the model uses age." in text
        assert "higher age score more like 'patient'" in text
    else:
        assert not any(w["significant"] for w in age.values())
        assert "No detectable dependence of the score on age within class 'patient'" in text
        assert "depends on" not in text
    table = res.table()
    assert len(table) == 5 and table["p_holm"].iloc[1:].notna().all()


def test_training_subjects_and_small_classes_are_said():
    y, s, conf = cohort(n=40, seed=6)
    design = build_design(s, conf, ["age"])
    ids = [f"p{i}" for i in range(40)]
    res = run_model_tests(s, y, "binary", ["c", "p"], design, ["age"], choose_subjects(ids, ids), n_perm=99)
    assert any(line.startswith("Caution: all 40 given subjects were used to TRAIN the model") for line in res.conclusions)
    few = np.r_[np.zeros(38), np.ones(2)]
    res = run_model_tests(s, few, "binary", ["c", "p"], design, ["age"], choose_subjects(ids, ["x"]), n_perm=99)
    assert res.beyond is None and any("too few subjects (p (2)" in line for line in res.conclusions)
    assert np.isnan([w for w in res.within if w["stratum"] == "p"][0]["stat"])



def test_regression_model_tests_control_for_the_target():
    rng = np.random.default_rng(8)
    n = 150
    age = rng.normal(70, 8, n)
    target = 0.6 * (age - 70) / 8 + rng.normal(size=n)  # e.g. a severity score that goes with age
    frame = pd.DataFrame({"age": age})
    for leak, flagged in ((0.0, False), (0.7, True)):
        pred = target + leak * (age - 70) / 8 + 0.5 * rng.normal(size=n)
        design = build_design(pred, frame, ["age"])
        res = run_model_tests(pred, target, "regression", [], design, ["age"], choose_subjects([str(i) for i in range(n)], ["x"]), n_perm=999)
        (w,) = res.within
        assert w["stratum"] == "all (given the target)" and w["significant"] is flagged
        # the partial correlation given the target equals statsmodels' OLS t-test of age
        ols = sm.OLS(pred, sm.add_constant(np.column_stack([target, age]))).fit()
        assert w["p"] == pytest.approx(ols.pvalues[-1], rel=1e-8)
        assert res.beyond["significant"]  # the prediction carries the target beyond age
        assert ("depends on age given the target" in "\n".join(res.conclusions)) is flagged
