"""Group statistics against independent computations: statsmodels OLS / multipletests,
numpy moments, brute-force permutations; streaming memory independent of the number of maps."""

import numpy as np
import pandas as pd
import pytest

from neurointerp.group.fdr import fdr_bh
from neurointerp.group.glm import StreamingGLM, build_design, parse_contrast, t_to_p, t_to_z
from neurointerp.group.inputs import iter_arrays, iter_batches
from neurointerp.group.moments import RunningMoments
from neurointerp.group.permutation import max_stat_fwe, partition_design, permutations


def _frame(n=26, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "participant_id": [f"{i:02d}" for i in range(n)],
            "label": ["control" if i % 2 else "patient" for i in range(n)],
            "age": rng.normal(70, 8, n).round(1).astype(str),
            "sex": rng.choice(["F", "M"], n),
            "site": rng.choice(["a", "b", "c"], n),
        }
    )


def test_streaming_glm_equals_statsmodels_ols_per_voxel():
    import statsmodels.api as sm

    frame = _frame()
    design = build_design(frame, "label,age,sex,site")
    assert design.columns == ["Intercept", "label[patient]", "age", "sex[M]", "site[b]", "site[c]"]
    c, name = parse_contrast(None, design)
    assert name == "patientVScontrol" and c.tolist() == [0, 1, 0, 0, 0, 0]
    rng = np.random.default_rng(1)
    n, v = len(frame), 40
    Y = (rng.normal(size=(n, v)) + 3.0 + 0.8 * design.matrix[:, [1]] * rng.normal(size=v)).astype(np.float32)
    glm = StreamingGLM(design.matrix, v)
    for idx, batch in iter_arrays(list(Y), batch_size=7):  # several uneven batches
        glm.update(idx, batch)
    res = glm.contrast(c)
    age_c, _ = parse_contrast("age", design)
    res_age = glm.contrast(age_c)
    for j in range(v):
        fit = sm.OLS(Y[:, j].astype(np.float64), design.matrix).fit()
        tt = fit.t_test(c)
        assert res.t[j] == pytest.approx(float(tt.tvalue.squeeze()), abs=1e-6, rel=1e-6)
        assert res.effect[j] == pytest.approx(float(tt.effect.squeeze()), abs=1e-6)
        assert res.p_values()[j] == pytest.approx(float(tt.pvalue), rel=1e-6, abs=1e-12)
        assert res_age.t[j] == pytest.approx(float(fit.tvalues[2]), abs=1e-6, rel=1e-6)
    assert res.df == n - 6


def test_formula_design_matches_column_list():
    frame = _frame()
    a = build_design(frame, "label,age,sex")
    b = build_design(frame, "~ label + age + C(sex)")
    rng = np.random.default_rng(2)
    Y = rng.normal(size=(len(frame), 10))
    ta = StreamingGLM(a.matrix, 10)
    ta.update(np.arange(len(frame)), Y)
    tb = StreamingGLM(b.matrix, 10)
    tb.update(np.arange(len(frame)), Y)
    ca, _ = parse_contrast("patient-control", a)
    cb, _ = parse_contrast("patient-control", b)
    np.testing.assert_allclose(ta.contrast(ca).t, tb.contrast(cb).t, rtol=1e-9)
    np.testing.assert_allclose(ta.contrast(-ca).t, tb.contrast(parse_contrast("control-patient", b)[0]).t, rtol=1e-9)


def test_t_to_z_matches_scipy_and_stays_finite_in_the_tails():
    from scipy import stats

    t = np.array([-4.0, -1.0, 0.0, 0.5, 3.0, 60.0])
    z = t_to_z(t, 20)
    np.testing.assert_allclose(z[:5], stats.norm.isf(stats.t.sf(t[:5], 20)), atol=1e-9)
    assert np.isfinite(z[5]) and z[5] > 8
    np.testing.assert_allclose(t_to_p(t, 20), 2 * stats.t.sf(np.abs(t), 20))


def test_fdr_equals_statsmodels_multipletests():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(size=500), rng.uniform(0, 1e-4, 40), [0.01, 0.01, 0.01, 1.0, 0.0]])
    rng.shuffle(p)
    np.testing.assert_allclose(fdr_bh(p), multipletests(p, method="fdr_bh")[1], rtol=1e-12, atol=1e-15)
    q = fdr_bh(np.r_[p, np.nan])
    assert np.isnan(q[-1]) and np.allclose(q[:-1], multipletests(p, method="fdr_bh")[1])


def test_running_moments_equal_numpy():
    rng = np.random.default_rng(4)
    Y = rng.normal(2.0, 3.0, size=(23, 50)) * (rng.uniform(size=(23, 50)) > 0.2)
    m = RunningMoments(50)
    for start in range(0, 23, 5):
        m.update(Y[start : start + 5])
    np.testing.assert_allclose(m.mean, Y.mean(0), atol=1e-12)
    np.testing.assert_allclose(m.sd, Y.std(0, ddof=1), atol=1e-12)
    np.testing.assert_allclose(m.mean_abs, np.abs(Y).mean(0), atol=1e-12)
    np.testing.assert_array_equal(m.nonzero, np.count_nonzero(Y, axis=0))
    assert m.n == 23


def test_partition_keeps_the_contrast_t():
    frame = _frame()
    d = build_design(frame, "label,age")
    c, _ = parse_contrast(None, d)
    x, Z = partition_design(d.matrix, c)
    assert abs(float(x @ Z).__abs__() if Z.ndim == 1 else np.abs(x @ Z).max()) < 1e-9
    rng = np.random.default_rng(5)
    Y = rng.normal(size=(len(frame), 30))
    W = np.column_stack([x, Z])
    glm_a = StreamingGLM(d.matrix, 30)
    glm_a.update(np.arange(len(frame)), Y)
    glm_b = StreamingGLM(W, 30)
    glm_b.update(np.arange(len(frame)), Y)
    e = np.zeros(W.shape[1])
    e[0] = 1
    np.testing.assert_allclose(glm_a.contrast(c).t, glm_b.contrast(e).t, rtol=1e-9)


def test_max_stat_permutation_equals_brute_force_and_is_seeded():
    from scipy import stats

    rng = np.random.default_rng(6)
    n, v = 20, 60
    g = np.r_[np.zeros(10), np.ones(10)]
    Y = rng.normal(size=(n, v))
    Y[g == 1, :5] += 3.0
    Y = Y.astype(np.float32).astype(np.float64)  # maps are streamed as float32
    X = np.column_stack([np.ones(n), g])
    c = np.array([0.0, 1.0])
    mask = np.ones(v, dtype=bool)

    def batches():
        return iter_arrays(list(Y), batch_size=6)

    p_fwe, max_null, t_obs = max_stat_fwe(batches, X, c, mask, n_perm=99, seed=11, memory_mb=0.01)  # forces several passes
    perms = permutations(n, 99, 11)
    brute = np.array([np.abs(stats.ttest_ind(Y[g[pi] == 1], Y[g[pi] == 0]).statistic).max() for pi in perms])
    np.testing.assert_allclose(max_null, brute, rtol=1e-8)
    t_ref = stats.ttest_ind(Y[g == 1], Y[g == 0]).statistic
    np.testing.assert_allclose(t_obs, t_ref, rtol=1e-8)
    expected = (1 + (brute[None, :] >= np.abs(t_ref)[:, None] - 1e-9).sum(1)) / 100
    np.testing.assert_allclose(p_fwe, expected)
    assert (p_fwe[:5] <= 0.05).all() and np.median(p_fwe[5:]) > 0.3
    again, _, _ = max_stat_fwe(batches, X, c, mask, n_perm=99, seed=11)  # one pass: same result
    np.testing.assert_array_equal(again, p_fwe)


def test_streaming_memory_does_not_grow_with_the_number_of_maps():
    """Peak traced memory of a full pass (moments + GLM) for 200 maps vs 20, and the number of
    maps alive at once: bounded by the batch, not by N."""
    import tracemalloc
    import weakref

    from neurointerp.group.api import accumulate

    shape = (16, 16, 16)
    nvox = int(np.prod(shape))
    alive = {"now": 0, "max": 0}

    def loader(i):
        arr = np.random.default_rng(int(i)).normal(size=nvox).astype(np.float32)
        alive["now"] += 1
        alive["max"] = max(alive["max"], alive["now"])
        weakref.finalize(arr, lambda: alive.__setitem__("now", alive["now"] - 1))
        return arr

    def run(n):
        groups = ["a" if i % 2 else "b" for i in range(n)]
        X = np.column_stack([np.ones(n), [g == "a" for g in groups]]).astype(float)
        alive["now"] = alive["max"] = 0
        tracemalloc.start()
        accumulate(iter_batches(list(range(n)), batch_size=8, loader=loader), nvox, groups, ["a", "b"], X)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak, alive["max"]

    peak_small, alive_small = run(20)
    peak_big, alive_big = run(200)
    assert alive_big <= 8 + 1 and alive_small <= 8 + 1  # one batch (plus the one being read)
    assert peak_big < 1.5 * peak_small, (peak_small, peak_big)


def test_read_ahead_threads_bound_the_maps_in_flight():
    import threading

    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def loader(i):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        return np.full(10, float(i), dtype=np.float32)

    seen = []
    for idx, Y in iter_batches(list(range(100)), batch_size=5, loader=loader, n_threads=2):
        np.testing.assert_array_equal(Y[:, 0], idx)
        seen.extend(idx.tolist())
        with lock:
            state["now"] -= len(idx)
    assert seen == list(range(100))
    assert state["max"] <= 3 * 5
