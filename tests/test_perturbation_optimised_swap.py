"""Optimised perturbation and the swap test against hand values and explicit loops."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from neurointerp.attribution import attribute
from neurointerp.attribution.reference import ReferenceSet
from neurointerp.attribution.swap import choose_references
from neurointerp.errors import InputError
from neurointerp.models.classifier import ConvClassifier


def test_optimised_perturbation_solves_a_linear_model_by_hand():
    """s(x_m) = sum_v w_v m_v x_v + b with a constant 0 perturbation, no TV, no coarse grid, no
    jitter: the loss is separable, and a voxel is deleted (map 1) exactly when its
    contribution w_v x_v exceeds lambda1 * |s(x) - s(0)| / V."""
    torch.manual_seed(0)
    shape = (6, 6, 6)
    v = int(np.prod(shape))
    lin = nn.Linear(v, 1)
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = torch.randn(2, 1, *shape)
    lam = 2.0
    maps, rec = attribute(model, x, "optimised-perturbation", target=1, perturbation="constant", fill=0.0, lambda1=lam, lambda2=0.0, mask_scale=1, jitter=0, iterations=150)
    w = lin.weight.detach()[0].reshape(shape)
    for i in range(2):
        contrib = (w * x[i, 0]).numpy()
        scale = abs(float(contrib.sum()))  # s(x) - s(0): the bias cancels
        threshold = lam * scale / v
        clear = np.abs(contrib - threshold) > 0.02 * np.abs(contrib).max()
        assert clear.mean() > 0.7
        assert np.array_equal(maps[i][clear] > 0.5, (contrib > threshold)[clear])
        assert np.all((maps[i][clear] < 0.02) | (maps[i][clear] > 0.98))
    assert rec["Signed"] is False and rec["Parameters"]["perturbation"] == "constant"


def test_optimised_perturbation_stays_in_the_brain_and_in_range():
    torch.manual_seed(1)
    model = ConvClassifier((12, 12, 12), channels=(4, 6), kernel_size=3, hidden=(8,)).eval()
    x = torch.randn(2, 1, 12, 12, 12)
    brain = np.zeros((12, 12, 12), bool)
    brain[2:10, 3:9, 2:11] = True
    maps, _ = attribute(model, x, "optimised-perturbation", mask=brain, iterations=30)
    assert np.all(maps[:, ~brain] == 0) and maps.min() >= 0 and maps.max() <= 1 and maps.max() > 0.05
    with pytest.raises(InputError, match="unknown perturbation"):
        attribute(model, x, "optimised-perturbation", perturbation="noise", iterations=1)


def test_blur_is_a_gaussian_filter():
    from scipy import ndimage

    from neurointerp.attribution.optimised import gaussian_blur

    x = torch.randn(2, 1, 10, 12, 9)
    ref = np.stack([ndimage.gaussian_filter(x[i, 0].numpy(), 1.5, mode="nearest", truncate=3.0) for i in range(2)])
    assert np.allclose(gaussian_blur(x, 1.5)[:, 0].numpy(), ref, atol=1e-6)


def two_class_reference(model, shape=(12, 12, 12)):
    """Images the model predicts as 0 and as 1 (gradient ascent turns some into 1), labelled."""
    start = torch.from_numpy(np.random.default_rng(9).normal(size=(10, 1, *shape)).astype(np.float32))
    with torch.inference_mode():
        direction = -1.0 if bool((model(start)[:, 0] > 0).all()) else 1.0  # towards the rarer class
    pool = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([pool], lr=0.1)
    for _ in range(40):
        opt.zero_grad()
        (-direction * model(pool)[:, 0].sum()).backward()
        opt.step()
    pool = torch.cat([start, pool.detach()])
    with torch.inference_mode():
        predicted = (model(pool)[:, 0] > 0).long().clone()
    assert 0 < predicted.sum() < len(predicted)
    labels = predicted.clone()
    labels[0] = 1 - labels[0]  # one mislabelled subject: never a swap partner
    return ReferenceSet(pool, labels, [f"r{i}" for i in range(len(pool))]), predicted


def test_reference_choice_follows_label_and_prediction():
    torch.manual_seed(2)
    model = ConvClassifier((12, 12, 12), channels=(4, 6), kernel_size=3, hidden=(8,)).eval()
    ref, predicted = two_class_reference(model)
    x = ref.images[[1, 12]].clone()  # two of the reference subjects explained themselves
    targets = torch.tensor([1, 0])
    chosen = choose_references(model, x, targets, ref, 3)
    with torch.inference_mode():
        z = model(ref.images)[:, 0]
    for i, t in enumerate(targets.tolist()):
        ok = [r for r in range(len(ref)) if ref.labels[r] != t and predicted[r] != t and not torch.equal(ref.images[r], x[i])]
        s_t = z if t == 1 else -z
        expected = sorted(ok, key=lambda r: float(s_t[r]))[:3]
        assert chosen[i] == expected and 0 not in chosen[i]


def test_swap_test_equals_an_explicit_loop():
    torch.manual_seed(3)
    model = ConvClassifier((12, 12, 12), channels=(4, 6), kernel_size=3, hidden=(8,)).eval()
    ref, _ = two_class_reference(model)
    x = torch.randn(2, 1, 12, 12, 12)
    window, stride, k = 5, 3, 2
    maps, rec = attribute(model, x, "swap-test", target=1, reference_set=ref, window=window, stride=stride, swap_references=k)
    chosen = rec["ReferenceIndices"]
    assert rec["References"] == [[f"r{r}" for r in c] for c in chosen]
    starts = [0, 3, 6, 7]
    for i in range(2):
        base = model(x[i : i + 1])[0, 0].item()
        total = np.zeros((12, 12, 12))
        for r in chosen[i]:
            acc, cnt = np.zeros((12, 12, 12)), np.zeros((12, 12, 12))
            for a, b, c in itertools.product(starts, starts, starts):
                sl = (slice(a, a + window), slice(b, b + window), slice(c, c + window))
                xs = x[i : i + 1].clone()
                xs[(0, 0, *sl)] = ref.images[(r, 0, *sl)]
                acc[sl] += base - model(xs)[0, 0].item()
                cnt[sl] += 1
            total += acc / cnt
        assert np.allclose(maps[i], total / k, atol=1e-5)
    # by atlas region
    regions = np.zeros((12, 12, 12), int)
    regions[:6] = 1
    regions[6:, :6] = 2
    amaps, arec = attribute(model, x, "swap-test", target=1, reference_set=ref, swap_by="atlas", regions=regions, swap_references=k)
    for i in range(2):
        base = model(x[i : i + 1])[0, 0].item()
        for lab in (1, 2):
            sel = torch.from_numpy(regions == lab)
            drops = []
            for r in arec["ReferenceIndices"][i]:
                xs = x[i : i + 1].clone()
                xs[0, 0][sel] = ref.images[r, 0][sel]
                drops.append(base - model(xs)[0, 0].item())
            assert np.allclose(amaps[i][regions == lab], np.mean(drops), atol=1e-5)
        assert np.all(amaps[i][regions == 0] == 0)


def test_swap_test_refuses_without_partners():
    torch.manual_seed(4)
    model = ConvClassifier((12, 12, 12), channels=(4,), kernel_size=3, hidden=()).eval()
    x = torch.randn(1, 1, 12, 12, 12)
    same = ReferenceSet(torch.randn(3, 1, 12, 12, 12), torch.ones(3, dtype=torch.long), ["a", "b", "c"])
    with pytest.raises(InputError, match="nothing to swap in"):
        attribute(model, x, "swap-test", target=1, reference_set=same)
    with pytest.raises(InputError, match="needs reference images"):
        attribute(model, x, "swap-test", target=1)
