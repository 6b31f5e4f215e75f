import itertools

import numpy as np
import pytest
import torch
from torch import nn

from neurointerp.attribution import METHOD_NAMES, attribute
from neurointerp.attribution.core import target_scores
from neurointerp.attribution.registry import methods
from neurointerp.errors import InputError
from neurointerp.evaluate.metrics import mass_in_mask, ncc
from neurointerp.models.classifier import ConvClassifier
from neurointerp.train.arrays import fit_binary_on_arrays


def small3d(seed=0, batch_norm=False, bias=True, head="flatten"):
    torch.manual_seed(seed)
    heads = {"flatten": dict(hidden=(8,)), "gap": dict(head="gap", hidden=()), "attention": dict(head="attention", attention=(1, 2), hidden=())}
    model = ConvClassifier((12, 12, 12), channels=(4, 6), kernel_size=3, batch_norm=batch_norm, activation="relu", **heads[head])
    if not bias:
        for m in model.modules():
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    if batch_norm:  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                nn.init.uniform_(m.weight, 0.5, 1.5)
    return model.eval()


def volumes(n=3, shape=(12, 12, 12), seed=1):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 1, *shape)).astype(np.float32))


def reference_of_both_classes(model, n=12, seed=21):
    """Reference images that the binary model predicts as 0 and as 1, labelled so."""
    from neurointerp.attribution.reference import ReferenceSet

    start = volumes(n, seed=seed)
    pool = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([pool], lr=0.1)
    for _ in range(60):  # gradient ascent on the logit turns some images into class 1
        opt.zero_grad()
        (-model(pool)[:, 0].sum()).backward()
        opt.step()
    pool = torch.cat([start, pool.detach()])
    with torch.inference_mode():
        labels = (model(pool)[:, 0] > 0).long().clone()
    assert 0 < labels.sum() < len(labels)
    return ReferenceSet(pool, labels, [f"r{i}" for i in range(len(pool))])


def test_registry_names_match():
    assert tuple(methods()) == METHOD_NAMES


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_runs_on_3d_and_keeps_the_grid(method):
    model = small3d(batch_norm=True, head={"cam": "gap", "attention": "attention"}.get(method, "flatten"))  # architecture-specific methods
    x = volumes()
    params = {
        "occlusion": {"window": 4, "stride": 4},
        "integrated-gradients": {"steps": 4},
        "smoothgrad": {"samples": 3},
        "optimised-perturbation": {"iterations": 5},
        "swap-test": {"window": 4, "stride": 4, "swap_references": 2},
        "lime": {"n_samples": 20},
        "kernel-shap": {"n_samples": 20},
        "gradient-shap": {"samples": 3},
    }.get(method, {})
    regions = np.repeat(np.arange(1, 5), 3)[:, None, None] * np.ones((12, 12, 12), int)
    reference = None
    if method == "swap-test":  # subjects of both predicted classes, labelled as predicted
        from neurointerp.attribution.reference import ReferenceSet

        reference = reference_of_both_classes(model)
    maps, record = attribute(model, x, method, regions=regions, reference_set=reference, **params)
    assert maps.shape == (3, 12, 12, 12) and maps.dtype == np.float32 and np.all(np.isfinite(maps))
    assert np.any(maps != 0)
    assert record["Method"] == method and record["TargetChoice"] == "predicted class"
    with torch.inference_mode():
        predicted = (model(x)[:, 0] > 0).long().tolist()
    assert record["Targets"] == predicted


def test_binary_scores_explain_the_target_class():
    out = torch.tensor([[2.0], [-1.0]])
    assert target_scores(out, torch.tensor([1, 1])).tolist() == [2.0, -1.0]
    assert target_scores(out, torch.tensor([0, 0])).tolist() == [-2.0, 1.0]
    p = target_scores(out, torch.tensor([0, 1]), score="probability")
    assert p[0] == pytest.approx(1 - torch.sigmoid(torch.tensor(2.0)).item())


def test_gradcam_averages_over_all_spatial_axes_against_reference():
    model = small3d(seed=3)
    x = volumes(2, seed=4)
    maps, rec = attribute(model, x, "gradcam", target=1)
    layer = rec["Parameters"]["layer"]
    assert layer == "encoder.stack2.act"
    # reference: explicit activations and gradients, weights = mean over x, y and z
    acts = {}
    h = model.get_submodule(layer).register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    xr = x.clone().requires_grad_(True)
    s = model(xr)[:, 0]
    h.remove()
    a = acts["a"]
    g = torch.autograd.grad(s.sum(), a)[0]
    w = g.mean(dim=(2, 3, 4))
    cam = torch.relu(torch.einsum("nc,ncxyz->nxyz", w, a)).detach()
    ref = torch.nn.functional.interpolate(cam[:, None], size=(12, 12, 12), mode="trilinear", align_corners=False)[:, 0]
    assert np.allclose(maps, ref.numpy(), atol=1e-6)
    # a ClinicaDL-style average over two axes only gives a different map
    w2 = g.mean(dim=(2, 3))  # (n, c, z)
    cam2 = torch.einsum("ncz,ncxyz->nxyz", w2, a).detach()
    assert not np.allclose(cam.numpy(), cam2.numpy(), atol=1e-4)
    assert maps.min() >= 0


def test_occlusion_equals_slow_reference_loop():
    model = small3d(seed=5)
    x = volumes(2, shape=(12, 12, 12), seed=6)
    window, stride, fill = 5, 3, -0.5
    maps, _ = attribute(model, x, "occlusion", target=1, window=window, stride=stride, fill=fill, batch_size=7)
    ref = np.zeros_like(maps)
    for i in range(2):
        base = model(x[i : i + 1])[0, 0].item()
        acc, cnt = np.zeros((12, 12, 12)), np.zeros((12, 12, 12))
        starts = [0, 3, 6, 7]  # range(0, 8, 3) plus the edge-aligned window at 12 - 5
        for a, b, c in itertools.product(starts, starts, starts):
            xo = x[i : i + 1].clone()
            xo[0, 0, a : a + 5, b : b + 5, c : c + 5] = fill
            d = base - model(xo)[0, 0].item()
            acc[a : a + 5, b : b + 5, c : c + 5] += d
            cnt[a : a + 5, b : b + 5, c : c + 5] += 1
        ref[i] = acc / cnt
    assert np.allclose(maps, ref, atol=1e-5)


def test_region_perturbation_gives_each_region_its_score_drop():
    model = small3d(seed=2)
    x = volumes(1, seed=3)
    regions = np.zeros((12, 12, 12), int)
    regions[:6] = 1
    regions[6:, :6] = 2  # the rest is background (0): never occluded, attribution 0
    maps, _ = attribute(model, x, "region-perturbation", target=1, regions=regions, fill=0.0)
    with torch.inference_mode():
        base = model(x)[0, 0].item()
        for lab in (1, 2):
            xo = x.clone()
            xo[0, 0][torch.from_numpy(regions == lab)] = 0.0
            assert np.allclose(maps[0][regions == lab], base - model(xo)[0, 0].item(), atol=1e-6)
    assert np.all(maps[0][regions == 0] == 0)
    with pytest.raises(InputError, match="needs an atlas"):
        attribute(model, x, "region-perturbation")


def test_occlusion_skips_windows_outside_the_mask():
    model = small3d(seed=5)
    x = volumes(1, seed=7)
    mask = np.zeros((12, 12, 12), bool)
    mask[:4, :4, :4] = True
    maps, _ = attribute(model, x, "occlusion", window=4, stride=4, mask=mask)
    assert np.all(maps[0][4:, :, :] == 0) and np.all(maps[0][:, 4:, :] == 0)
    assert np.any(maps[0][:4, :4, :4] != 0)


def test_integrated_gradients_completeness_and_baseline():
    model = small3d(seed=8)
    x = volumes(2, seed=9)
    maps, rec = attribute(model, x, "integrated-gradients", target=1, steps=256)
    with torch.inference_mode():
        diff = (model(x) - model(torch.zeros_like(x)))[:, 0].numpy()
    assert np.allclose(maps.reshape(2, -1).sum(axis=1), diff, rtol=0.02, atol=1e-3)
    assert rec["Parameters"]["baseline"] == "zeros" and rec["Parameters"]["steps"] == 256


def test_smoothgrad_without_noise_is_the_gradient():
    model = small3d(seed=10)
    x = volumes(2, seed=11)
    sg, _ = attribute(model, x, "smoothgrad", samples=2, noise_level=0.0)
    g, _ = attribute(model, x, "gradient")
    assert np.allclose(sg, g, atol=1e-6)


def test_guided_backprop_matches_hand_computation_and_refuses_functional_relu():
    torch.manual_seed(0)
    lin1, lin2 = nn.Linear(5, 4), nn.Linear(4, 1)
    model = nn.Sequential(lin1, nn.ReLU(), lin2).eval()
    x = torch.randn(3, 5)
    # hand computation for a 1D model: gradient masked by forward (pre > 0) and backward (> 0) signals
    from neurointerp.attribution.core import score_function
    from neurointerp.attribution.guided import guided_backprop

    f = score_function(model)
    gb = guided_backprop(f, x, torch.ones(3, dtype=torch.long), model)
    pre = lin1(x).detach()
    back = lin2.weight.detach()[0].expand(3, 4)
    ref = ((back.clamp(min=0)) * (pre > 0)) @ lin1.weight.detach()
    assert torch.allclose(gb, ref, atol=1e-6)

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 4), nn.Linear(4, 1)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    with pytest.raises(InputError, match="functional ReLUs"):
        guided_backprop(f, x, torch.ones(3, dtype=torch.long), Functional())


def test_lrp_epsilon_is_gradient_times_input_for_bias_free_relu_nets():
    model = small3d(seed=12, bias=False)
    x = volumes(2, seed=13)
    lrp_maps, _ = attribute(model, x, "lrp-epsilon", target=1, epsilon=1e-9)
    gxi, _ = attribute(model, x, "gradxinput", target=1)
    assert np.allclose(lrp_maps, gxi, atol=1e-4 * np.abs(gxi).max())
    with torch.inference_mode():
        logit = model(x)[:, 0].numpy()
    assert np.allclose(lrp_maps.reshape(2, -1).sum(1), logit, rtol=1e-3)  # conservation


def test_lrp_alphabeta_conserves_relevance_and_handles_batchnorm():
    model = small3d(seed=14, bias=False)
    x = volumes(2, seed=15)
    maps, rec = attribute(model, x, "lrp-alphabeta", target=1)
    with torch.inference_mode():
        logit = model(x)[:, 0].numpy()
    # conservative up to neurons whose contributions all share one sign (then beta's share is lost)
    assert np.allclose(maps.reshape(2, -1).sum(1), logit, rtol=1e-2)
    assert rec["Parameters"] == {"alpha": 2.0, "beta": 1.0}
    bn_model = small3d(seed=14, batch_norm=True)
    bn_maps, _ = attribute(bn_model, x, "lrp-epsilon")
    assert np.all(np.isfinite(bn_maps)) and np.any(bn_maps != 0)


def test_bad_parameters_are_input_errors():
    model = small3d()
    x = volumes(1)
    with pytest.raises(InputError, match="unknown attribution method 'magic'"):
        attribute(model, x, "magic")
    with pytest.raises(InputError, match="has no parameter window"):
        attribute(model, x, "gradient", window=3)
    with pytest.raises(InputError, match="no layer 'encoder.nope'"):
        attribute(model, x, "gradcam", layer="encoder.nope")
    with pytest.raises(InputError, match="alpha - beta = 1"):
        attribute(model, x, "lrp-alphabeta", alpha=1.0, beta=1.0)


def test_metrics_against_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 7)), rng.normal(size=(6, 7))
    assert ncc(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert ncc(a, 2 * a + 1) == pytest.approx(1.0)
    mask = np.zeros((6, 7), bool)
    mask[:3] = True
    assert mass_in_mask(a, mask) == pytest.approx(np.abs(a[:3]).sum() / np.abs(a).sum())


def test_gradient_mass_falls_in_the_informative_blocks():
    """A 2D classifier trained on the magnitude Gaussians looks at the off-diagonal blocks."""
    from neurointerp.synth.gaussians import block_masks, make_gaussians

    data = make_gaussians("magnitude", n_per_group=256, seed=0)
    x = torch.from_numpy(data.images[:, None])
    y = torch.from_numpy(data.labels.astype(np.float32))
    torch.manual_seed(0)
    model = ConvClassifier((32, 32), channels=(2, 4, 8), kernel_size=3, hidden=(16,))
    fit_binary_on_arrays(model, x, y, epochs=30, batch_size=64, lr=3e-3)
    with torch.inference_mode():
        acc = ((model(x)[:, 0] > 0).float() == y).float().mean().item()
    assert acc > 0.8
    images = data.images[:64]
    mean_image = np.abs(images).mean(axis=0)
    support = mean_image > 0.05 * mean_image.max()  # where the Gaussians are (58% of the image)
    sal, _ = attribute(model, x[:64], "saliency")
    sal = sal.mean(axis=0)
    assert mass_in_mask(sal, support) > support.mean() + 0.1
    assert ncc(sal, data.group_truth) > 0.25
    gxi, _ = attribute(model, x[:64], "gradxinput")
    assert mass_in_mask(np.abs(gxi).mean(axis=0), support) > 0.9


@pytest.mark.parametrize("shape,batch_norm", [((20, 22, 18), True), ((30, 26), False)])
def test_incremental_occlusion_equals_full_forward_passes(shape, batch_norm):
    from neurointerp.attribution.core import score_function
    from neurointerp.attribution.incremental import plan
    from neurointerp.attribution.perturbation import occlusion

    torch.manual_seed(1)
    model = ConvClassifier(shape, channels=(4, 6, 8), kernel_size=3, hidden=(8,), batch_norm=batch_norm).eval()
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    assert plan(model) is not None
    x = torch.randn(2, 1, *shape)
    f = score_function(model)
    t = torch.tensor([1, 0])
    fast = occlusion(f, x, t, window=5, stride=3, fill=-0.7, model=model)
    slow = occlusion(f, x, t, window=5, stride=3, fill=-0.7, model=model, incremental=False)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert plan(ConvClassifier(shape, channels=(4,), kernel_size=2)) is None  # even kernels: full passes
