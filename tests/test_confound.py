import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch
from scipy import stats
from statsmodels.stats.multitest import multipletests

from neurointerp.attribution import attribute
from neurointerp.confound.gate import feature_gate, layer_features
from neurointerp.confound.glm import confound_glm
from neurointerp.errors import InputError
from neurointerp.models.classifier import ConvClassifier
from neurointerp.train.arrays import fit_binary_on_arrays


def synthetic_features(n=80, m=6, seed=0):
    rng = np.random.default_rng(seed)
    score = rng.random(n)
    age = rng.normal(60, 10, n)
    site = rng.choice(["a", "b", "c"], n)
    f = rng.normal(size=(n, m))
    f[:, 0] += 0.08 * age  # confounded by age
    f[:, 1] += 2.0 * (site == "c")  # confounded by site
    f[:, 2] += 3.0 * score  # only the score
    f[:, 5] = 1.5  # a dead unit
    return f, score, pd.DataFrame({"age": age, "site": site})


def test_glm_matches_statsmodels_and_an_independent_computation():
    f, score, conf = synthetic_features()
    table, mask, design = confound_glm(f, score, conf, ["age", "site"])
    x = design.matrix
    for j in range(5):
        res = sm.OLS(f[:, j], x).fit()
        assert np.allclose(table.loc[j, [f"beta_{c}" for c in design.columns]].to_numpy(float), res.params, atol=1e-8)
        assert np.allclose(table.loc[j, "t_age"], res.tvalues[2], atol=1e-8)
        assert np.allclose(table.loc[j, "p_age"], res.pvalues[2], atol=1e-8)
        ftest = res.f_test(np.eye(x.shape[1])[[3, 4]])
        assert table.loc[j, "ptest_site"] == pytest.approx(float(ftest.pvalue), abs=1e-8)
        # numpy least squares + scipy t, independent of both
        beta, *_ = np.linalg.lstsq(x, f[:, j], rcond=None)
        resid = f[:, j] - x @ beta
        df = len(score) - x.shape[1]
        se = np.sqrt(resid @ resid / df * np.diag(np.linalg.inv(x.T @ x)))
        p_score = 2 * stats.t.sf(abs(beta[1] / se[1]), df)
        assert table.loc[j, "p_score"] == pytest.approx(p_score, abs=1e-8)
    assert table["confounded"].tolist()[:3] == [True, True, False]
    assert bool(table.loc[5, "constant"]) and not bool(table.loc[5, "confounded"])
    assert mask.tolist()[:3] == [0, 0, 1] and mask[5] == 1


def test_fdr_matches_statsmodels():
    f, score, conf = synthetic_features(seed=2)
    table, _, _ = confound_glm(f, score, conf, ["age"], fdr=True)
    pv = table["ptest_age"].to_numpy()
    ok = np.isfinite(pv)
    assert np.allclose(table["q_age"].to_numpy()[ok], multipletests(pv[ok], method="fdr_bh")[1])


@pytest.mark.parametrize(
    "frame,names,message",
    [
        (pd.DataFrame({"age": np.full(20, 50.0)}), ["age"], "confounder 'age' is constant"),
        (pd.DataFrame({"sex": ["F"] * 20}), ["sex"], "confounder 'sex' has a single level"),
        (pd.DataFrame({"age": np.arange(20.0), "age2": 2 * np.arange(20.0)}), ["age", "age2"], "collinear"),
        (pd.DataFrame({"age": np.arange(20.0)}), ["pds"], "confounder column 'pds' not found"),
        (pd.DataFrame({"age": np.arange(3.0)}), ["age"], "3 subjects for a GLM with 3 parameters"),
    ],
)
def test_bad_confounders(frame, names, message):
    n = len(frame)
    score = np.random.default_rng(0).random(n)
    with pytest.raises(InputError, match=message):
        confound_glm(np.random.default_rng(1).normal(size=(n, 4)), score, frame, names)


def test_gate_equals_the_papers_refactorisation():
    torch.manual_seed(0)
    model = ConvClassifier((16, 16), channels=(4, 4), kernel_size=3, hidden=(8,), activation="tanh").eval()
    x = torch.randn(3, 1, 16, 16)
    m = model.n_features
    mask = (np.arange(m) % 3 != 0).astype(np.uint8)
    with feature_gate(model, mask):
        gated, _ = attribute(model, x, "gradient", target=1)
    # the paper: L(f) = f * b + (1 - b) * y_i with y_i the image's own features, per image
    b = torch.from_numpy(mask.astype(np.float32))
    ref = []
    for i in range(3):
        xi = x[i : i + 1].clone().requires_grad_(True)
        y = model.encoder(x[i : i + 1]).detach()
        f = model.encoder(xi)
        out = model.predictor(f * b + (1 - b) * y)[0, 0]
        ref.append(torch.autograd.grad(out, xi)[0][0, 0].numpy())
    assert np.allclose(gated, np.stack(ref), atol=1e-6)
    plain, _ = attribute(model, x, "gradient", target=1)
    with feature_gate(model, np.ones(m)):
        same, _ = attribute(model, x, "gradient", target=1)
    assert np.allclose(plain, same)
    with feature_gate(model, np.zeros(m)):
        none, _ = attribute(model, x, "gradient", target=1)
    assert np.all(none == 0)
    with pytest.raises(InputError, match="has 5 entries"):
        with feature_gate(model, np.ones(5)):
            attribute(model, x, "gradient")


@pytest.mark.slow
def test_reproduces_the_papers_synthetic_experiment():
    """§3.1: with sigma_B, sigma_C as confounders, B/C features are flagged, A/D mostly not."""
    from neurointerp.synth.gaussians import make_gaussians

    data = make_gaussians("width", n_per_group=512, seed=0)
    x = torch.from_numpy(data.images[:, None])
    y = torch.from_numpy(data.labels.astype(np.float32))
    torch.manual_seed(0)
    model = ConvClassifier((32, 32), channels=(8, 8, 2), kernel_size=2, hidden=(16,), activation="tanh")
    fit_binary_on_arrays(model, x, y, epochs=25, batch_size=64, lr=2e-3)
    feats, out = layer_features(model, x)
    score = 1 / (1 + np.exp(-out[:, 0]))
    assert ((score > 0.5) == data.labels).mean() > 0.85
    conf = pd.DataFrame({"sigma_B": data.sigma[:, 1], "sigma_C": data.sigma[:, 2]})
    table, mask, _ = confound_glm(feats, score, conf, ["sigma_B", "sigma_C"])
    # which input pixels each feature sees: its receptive field, from gradients over the data
    probe = x[::4].clone().requires_grad_(True)
    f = model.features(probe)
    seen = np.stack([torch.autograd.grad(f[:, j].sum(), probe, retain_graph=True)[0].abs().sum(0)[0].numpy() > 0 for j in range(f.shape[1])])
    sees_bc = seen[:, :16, 16:].any(axis=(1, 2)) | seen[:, 16:, :16].any(axis=(1, 2))
    live = ~table["constant"].to_numpy()
    flagged = table["confounded"].to_numpy()
    bc, pure = live & sees_bc, live & ~sees_bc  # features of blocks B/C vs. purely A/D
    assert bc.sum() >= 10 and pure.sum() >= 4
    assert flagged[bc].all()  # no false negative (the paper: all B/C features flagged)
    assert flagged[pure].mean() <= 0.5  # most A/D features are not
