"""LIME and KernelSHAP over regions: against Captum (same model, same segmentation) and the
Shapley formula (review eq. 17) computed by an explicit loop."""

import itertools
import math

import numpy as np
import pytest
import torch

from neurointerp.attribution import attribute
from neurointerp.attribution.core import score_function
from neurointerp.attribution.distill import lime_samples, lime_weights, supervoxels
from neurointerp.errors import InputError
from neurointerp.models.classifier import ConvClassifier

captum_attr = pytest.importorskip("captum.attr")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return ConvClassifier((8, 8, 8), channels=(3, 4), kernel_size=3, hidden=(6,)).eval()


def block_regions(n_per_axis=(2, 2, 2), shape=(8, 8, 8)):
    """Atlas of boxes covering the whole grid, labels 1..M."""
    lab = np.zeros(shape, int)
    edges = [np.linspace(0, s, k + 1).astype(int) for s, k in zip(shape, n_per_axis)]
    for n, (i, j, k) in enumerate(itertools.product(*[range(k) for k in n_per_axis]), start=1):
        lab[edges[0][i] : edges[0][i + 1], edges[1][j] : edges[1][j + 1], edges[2][k] : edges[2][k + 1]] = n
    return lab


def explicit_shapley(f, x, regions, fill=0.0):
    """Eq. 17: phi_i = sum_S |S|!(M-|S|-1)!/M! [f(S + i) - f(S)], every coalition S enumerated."""
    labels = np.unique(regions[regions > 0])
    m = len(labels)
    value = {}
    for code in range(2**m):
        keep = [(code >> j) & 1 for j in range(m)]
        xs = x.clone()
        for j, lab in enumerate(labels):
            if not keep[j]:
                xs[0, 0][torch.from_numpy(regions == lab)] = fill
        with torch.inference_mode():
            value[code] = float(f(xs, torch.ones(1, dtype=torch.long))[0])
    phi = np.zeros(m)
    for i in range(m):
        for code in range(2**m):
            if (code >> i) & 1:
                continue
            s = bin(code).count("1")
            phi[i] += math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) * (value[code | (1 << i)] - value[code])
    return labels, phi


def test_kernel_shap_enumerating_every_coalition_is_the_shapley_value():
    model = tiny_model()
    x = torch.randn(2, 1, 8, 8, 8)
    regions = block_regions((2, 2, 2))  # 8 regions: 254 proper coalitions
    maps, rec = attribute(model, x, "kernel-shap", target=1, regions=regions, n_samples=254, fill=-0.5)
    f = score_function(model)
    for i in range(2):
        labels, phi = explicit_shapley(f, x[i : i + 1], regions, fill=-0.5)
        for lab, v in zip(labels, phi):
            assert np.allclose(maps[i][regions == lab], v, atol=1e-5)
    assert rec["Parameters"]["segments"] == "atlas"


def test_kernel_shap_sampled_statistically_matches_captum_and_keeps_local_accuracy():
    """12 regions, 300 of the 4094 coalitions: both estimates scatter around the exact
    Shapley values; ours is no further from them than Captum's, and its sum is exact."""
    model = tiny_model(1)
    x = torch.randn(1, 1, 8, 8, 8)
    regions = block_regions((3, 2, 2))
    f = score_function(model)
    labels, exact = explicit_shapley(f, x, regions)
    ours, theirs = [], []
    ks = captum_attr.KernelShap(model)
    for seed in range(6):
        maps, _ = attribute(model, x, "kernel-shap", target=1, regions=regions, n_samples=300, seed=seed)
        ours.append([maps[0][regions == lab][0] for lab in labels])
        torch.manual_seed(seed)
        c = ks.attribute(x, baselines=0.0, target=0, feature_mask=torch.from_numpy(regions - 1)[None, None], n_samples=300, perturbations_per_eval=64)
        theirs.append([float(c[0, 0][torch.from_numpy(regions == lab)][0]) for lab in labels])
    ours, theirs = np.array(ours), np.array(theirs)
    with torch.inference_mode():
        delta = float(f(x, torch.ones(1, dtype=torch.long))[0] - f(torch.zeros_like(x), torch.ones(1, dtype=torch.long))[0])
    assert np.allclose(ours.sum(1), delta, atol=1e-5)  # local accuracy holds exactly
    err_ours = np.sqrt(((ours - exact) ** 2).mean())
    err_theirs = np.sqrt(((theirs - exact) ** 2).mean())
    assert err_ours < 1.5 * err_theirs + 1e-3
    assert np.corrcoef(ours.mean(0), exact)[0, 1] > 0.95 and np.corrcoef(theirs.mean(0), exact)[0, 1] > 0.95
    se = np.sqrt(ours.var(0, ddof=1) / len(ours) + theirs.var(0, ddof=1) / len(theirs))
    assert np.all(np.abs(ours.mean(0) - theirs.mean(0)) < 4 * se + 1e-6)


def test_lime_equals_captum_lime_on_the_same_samples():
    """Same model, segmentation, samples, kernel and ridge: the same coefficients."""
    from captum._utils.models.linear_model import SkLearnRidge

    model = tiny_model(2)
    x = torch.randn(1, 1, 8, 8, 8)
    regions = block_regions((2, 2, 2))
    n, width, alpha, fill = 60, 0.25, 1.0, -0.3
    maps, rec = attribute(model, x, "lime", target=1, regions=regions, n_samples=n, kernel_width=width, ridge=alpha, fill=fill, seed=5)
    z = lime_samples(8, n, np.random.default_rng(5))  # the samples our run drew
    rows = iter(torch.from_numpy(z.astype(np.int64))[:, None])

    def perturb(original, **kwargs):
        return next(rows)

    def similarity(original, perturbed, interpretable, **kwargs):
        return float(lime_weights(interpretable.numpy(), width)[0])

    lime = captum_attr.Lime(model, interpretable_model=SkLearnRidge(alpha=alpha), similarity_func=similarity, perturb_func=perturb)
    ref = lime.attribute(x, baselines=fill, target=0, feature_mask=torch.from_numpy(regions - 1)[None, None], n_samples=n, perturbations_per_eval=16)
    assert np.allclose(maps[0], ref[0, 0].numpy(), atol=1e-4)
    assert rec["Parameters"]["kernel_width"] == width and rec["Parameters"]["ridge"] == alpha


def test_supervoxels_cover_the_brain_and_need_no_atlas():
    rng = np.random.default_rng(0)
    img = np.zeros((16, 16, 16), np.float32)
    img[2:14, 3:13, 2:14] = 1 + 0.1 * rng.normal(size=(12, 10, 12))
    lab = supervoxels(img, img != 0, 8)
    assert lab[img == 0].max() == 0 and lab[img != 0].min() >= 1
    assert 4 <= lab.max() <= 16 and set(np.unique(lab[lab > 0])) == set(range(1, lab.max() + 1))
    model = ConvClassifier((16, 16, 16), channels=(2,), kernel_size=3, hidden=()).eval()
    maps, _ = attribute(model, torch.from_numpy(img)[None, None], "lime", segments="supervoxels", n_segments=8, n_samples=30)
    assert np.all(maps[0][img == 0] == 0) and np.any(maps[0] != 0)
    with pytest.raises(InputError, match="needs an atlas"):
        attribute(model, torch.from_numpy(img)[None, None], "kernel-shap")
