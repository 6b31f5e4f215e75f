"""CAM (gap2d/gap3d) and attention-gated models (attention2d/attention3d): architectures,
equalities with independent computations, refusals, and the train -> saliency path."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurointerp.attribution import attribute
from neurointerp.attribution.core import score_function
from neurointerp.attribution.gradcam import gradcam
from neurointerp.errors import InputError
from neurointerp.models.classifier import ARCHITECTURES, ConvClassifier, build_classifier
from neurointerp.train.arrays import fit_binary_on_arrays


def gap3d(seed=0, n_outputs=1, shape=(12, 12, 12), batch_norm=False):
    torch.manual_seed(seed)
    model = ConvClassifier(shape, n_outputs=n_outputs, channels=(4, 6), head="gap", hidden=(), batch_norm=batch_norm)
    for m in model.modules():  # non-zero biases: CAM ignores the FC bias, Grad-CAM never sees it
        if getattr(m, "bias", None) is not None:
            torch.nn.init.uniform_(m.bias, -0.1, 0.1)
        if isinstance(m, torch.nn.BatchNorm3d):  # non-trivial running statistics
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def attention3d(seed=0, shape=(12, 12, 12), gates=(1, 2)):
    torch.manual_seed(seed)
    model = ConvClassifier(shape, channels=(4, 6, 8), head="attention", attention=gates, gate_channels=5, hidden=())
    for m in model.modules():
        if getattr(m, "bias", None) is not None:
            torch.nn.init.uniform_(m.bias, -0.3, 0.3)
    return model.eval()


def volumes(n=3, shape=(12, 12, 12), seed=1):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 1, *shape)).astype(np.float32))


# ---------------------------------------------------------------- architectures
@pytest.mark.parametrize("name, shape, n_features", [("gap2d", (32, 32), 32), ("gap3d", (32, 32, 32), 64), ("attention2d", (32, 32), 48), ("attention3d", (32, 32, 32), 96)])
def test_new_architectures_keep_the_encoder_predictor_boundary(name, shape, n_features):
    torch.manual_seed(0)
    model = build_classifier(name, shape, n_outputs=2)
    x = torch.randn(2, 1, *shape)
    assert model.n_features == n_features and model.features(x).shape == (2, n_features)
    assert torch.allclose(model(x), model.predictor(model.encoder(x)))
    clone = ConvClassifier.from_config(model.config)  # what load_checkpoint does
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.eval()(x), model.eval()(x))
    assert [type(m) for m in model.predictor.modules()][1:] == [torch.nn.Linear]  # one linear layer
    # the last stack has no max-pool (the pooling is global): CAM / attention keep a finer grid
    last = model.get_submodule(f"encoder.stack{len(ARCHITECTURES[name]['channels'])}")
    assert not hasattr(last, "pool")
    acts = [m for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.Sigmoid))]
    assert len({id(a) for a in acts}) == len(acts)  # separate modules, never reused


def test_bad_head_parameters_are_one_line_errors():
    with pytest.raises(InputError, match="hidden layers must be empty"):
        ConvClassifier((16, 16, 16), channels=(4, 8), head="gap", hidden=(8,))
    with pytest.raises(InputError, match=r"attention gates on stacks \[3\]: each must be one of 1..2"):
        ConvClassifier((16, 16, 16), channels=(4, 8), head="attention", attention=(3,), hidden=())
    with pytest.raises(InputError, match="needs at least one gated stack"):
        ConvClassifier((16, 16, 16), channels=(4, 8), head="attention", hidden=())
    with pytest.raises(InputError, match="unknown head 'pool'"):
        ConvClassifier((16, 16, 16), channels=(4, 8), head="pool")
    with pytest.raises(InputError, match="need head 'attention'"):
        ConvClassifier((16, 16, 16), channels=(4, 8), attention=(1,))


def test_old_checkpoints_without_a_head_load_as_flatten():
    model = build_classifier("simnet2d", (32, 32), n_outputs=1)
    config = {k: v for k, v in model.config.items() if k not in ("head", "attention", "gate_channels")}
    clone = ConvClassifier.from_config(config)
    clone.load_state_dict(model.state_dict())
    assert clone.head == "flatten"


# ---------------------------------------------------------------- CAM
@pytest.mark.parametrize("batch_norm", [False, True])
def test_cam_is_zhou_formula_and_equals_gradcam_times_grid_size(batch_norm):
    model = gap3d(seed=3, batch_norm=batch_norm)
    layer = "encoder.stack2.bn" if batch_norm else "encoder.stack2.act"  # what feeds the pooling
    x = volumes(3, seed=4)
    f = score_function(model)
    for target in (0, 1):
        maps, record = attribute(model, x, "cam", target=target)
        assert record["Signed"] and record["Targets"] == [target] * 3
        # Zhou et al.: sum_k w_kc A_k with A the input of the global pooling, w the FC weights
        acts = {}
        h = model.encoder.gap.register_forward_hook(lambda m, i, o: acts.update(a=i[0]))
        with torch.inference_mode():
            model(x)
        h.remove()
        w = model.predictor.out.weight[0] * (1 if target == 1 else -1)  # binary: class 0 explains -logit
        ref = torch.einsum("c,ncxyz->nxyz", w, acts["a"]).detach()
        ref_up = F.interpolate(ref[:, None], size=(12, 12, 12), mode="trilinear", align_corners=False)[:, 0]
        assert np.allclose(maps, ref_up.numpy(), atol=1e-5)
        # Grad-CAM at the layer feeding the pooling: weights w / |U|, so CAM = |U| x Grad-CAM
        t = torch.full((3,), target)
        n_positions = int(np.prod(acts["a"].shape[2:]))  # 6 x 6 x 6
        assert n_positions == 216
        plain = gradcam(f, x, t, model, layer=layer, relu=False)[:, 0].numpy()
        assert np.allclose(maps, n_positions * plain, atol=1e-5)
        # and ReLU(CAM) on the layer grid = |U| x Grad-CAM (its ReLU comes before the upsampling)
        from neurointerp.attribution.cam import class_activation

        gc, rec = attribute(model, x, "gradcam", target=target)
        assert rec["Parameters"]["layer"] == layer  # Grad-CAM's default is CAM's layer
        relu_up = F.interpolate(torch.relu(class_activation(f, x, t, model)), size=(12, 12, 12), mode="trilinear", align_corners=False)
        assert np.allclose(relu_up[:, 0].numpy(), n_positions * gc, atol=1e-5)
        assert np.any(maps < 0) and np.any(maps > 0)  # signed, as in the paper


def test_cam_of_a_multiclass_model_uses_each_target_row():
    model = gap3d(seed=5, n_outputs=3)
    x = volumes(2, seed=6)
    acts = {}
    h = model.encoder.gap.register_forward_hook(lambda m, i, o: acts.update(a=i[0]))
    with torch.inference_mode():
        model(x)
    h.remove()
    for target in range(3):
        maps, _ = attribute(model, x, "cam", target=target)
        ref = torch.einsum("c,ncxyz->nxyz", model.predictor.out.weight[target], acts["a"]).detach()
        ref = F.interpolate(ref[:, None], size=(12, 12, 12), mode="trilinear", align_corners=False)[:, 0]
        assert np.allclose(maps, ref.numpy(), atol=1e-5)


def test_cam_refuses_models_without_gap_and_nonlinear_scores():
    x = volumes(1)
    flat = ConvClassifier((12, 12, 12), channels=(4, 6), hidden=(8,)).eval()
    with pytest.raises(InputError, match=r"^cam needs a network that ends in global average pooling .* head 'flatten' -- use gradcam$"):
        attribute(flat, x, "cam")
    with pytest.raises(InputError, match="head 'attention'"):
        attribute(attention3d(), x, "cam")
    with pytest.raises(InputError, match=r"explains a class logit.*--score probability"):
        attribute(gap3d(), x, "cam", score="probability")


def test_cam_in_a_confounder_gate_keeps_the_unconfounded_channels():
    from neurointerp.confound.gate import feature_gate

    model = gap3d(seed=7)
    x = volumes(2, seed=8)
    keep = np.array([1, 0, 1, 1, 0, 1], dtype=np.uint8)  # one entry per channel of the pooled features
    with feature_gate(model, keep):
        gated, _ = attribute(model, x, "cam", target=1)
    acts = {}
    h = model.encoder.gap.register_forward_hook(lambda m, i, o: acts.update(a=i[0]))
    with torch.inference_mode():
        model(x)
    h.remove()
    w = model.predictor.out.weight[0] * torch.from_numpy(keep.astype(np.float32))
    ref = F.interpolate(torch.einsum("c,ncxyz->nxyz", w, acts["a"])[:, None], size=(12, 12, 12), mode="trilinear", align_corners=False)[:, 0]
    assert np.allclose(gated, ref.detach().numpy(), atol=1e-5)


# ---------------------------------------------------------------- attention
def _gate_by_hand(model, x, k):
    """The gate's formula from its weights with functional ops: a = sigmoid(psi(relu(W_l l + W_g g)))."""
    enc = model.encoder
    outs, h = {}, x
    for i in range(1, enc.n_stacks + 1):
        h = enc.get_submodule(f"stack{i}")(h)
        outs[i] = h
    g = h.mean(dim=(2, 3, 4), keepdim=True)
    gate = enc.get_submodule(f"gate{k}")
    z = F.conv3d(outs[k], gate.local.weight) + F.conv3d(g, gate.gating.weight, gate.gating.bias)
    a = torch.sigmoid(F.conv3d(torch.relu(z), gate.psi.weight, gate.psi.bias))
    d = (a * outs[k]).sum(dim=(2, 3, 4)) / a.sum(dim=(2, 3, 4))
    return a, d


def test_attention_maps_are_the_gate_coefficients_and_drive_the_prediction():
    model = attention3d(seed=2)
    x = volumes(3, seed=5)
    with torch.inference_mode():
        a1, d1 = _gate_by_hand(model, x, 1)
        a2, d2 = _gate_by_hand(model, x, 2)
        # the predictor sees exactly the attended descriptors
        assert torch.allclose(model.features(x), torch.cat([d1, d2], dim=1), atol=1e-5)
        assert torch.allclose(model(x), model.predictor.out(torch.cat([d1, d2], dim=1)), atol=1e-5)
    # the map is a / mean(a) over the gate's grid (the descriptor's weight relative to average pooling)
    up = lambda a: F.interpolate(a / a.mean(dim=(2, 3, 4), keepdim=True), size=(12, 12, 12), mode="trilinear", align_corners=False)[:, 0].numpy()  # noqa: E731
    one, rec = attribute(model, x, "attention", layer="encoder.gate1")
    assert np.allclose(one, up(a1), atol=1e-6) and not rec["Signed"]
    two, _ = attribute(model, x, "attention", layer="gate2")
    assert np.allclose(two, up(a2), atol=1e-6)
    both, rec = attribute(model, x, "attention")
    assert np.allclose(both, (up(a1) + up(a2)) / 2, atol=1e-6) and rec["Parameters"]["layer"] is None
    assert both.min() >= 0 and np.allclose(attribute(model, x, "attention", layer="gate1")[0].mean(axis=(1, 2, 3)), 1.0, atol=1e-4)  # 12 = 2 x 6: trilinear keeps the mean
    # the maps do not depend on the explained class
    other, _ = attribute(model, x, "attention", target=0)
    assert np.array_equal(other, both)


def test_attention_refusals_and_other_methods_on_attention_models():
    x = volumes(2)
    with pytest.raises(InputError, match=r"^attention needs a model with attention gates .* -- use gradcam$"):
        attribute(gap3d(), x, "attention")
    model = attention3d()
    with pytest.raises(InputError, match=r"'encoder.stack1.act' is not an attention gate of this model \(gates: encoder.gate1, encoder.gate2\)"):
        attribute(model, x, "attention", layer="encoder.stack1.act")
    # Grad-CAM's default layer is the last stack, not a gate's 1x1 convolution
    _, rec = attribute(model, x, "gradcam")
    assert rec["Parameters"]["layer"] == "encoder.stack3.act"
    with pytest.raises(InputError, match="LRP needs a plain chain"):
        attribute(model, x, "lrp-epsilon")
    from neurointerp.confound.gate import GRADIENT_METHODS

    assert "attention" not in GRADIENT_METHODS and "cam" in GRADIENT_METHODS
    for method in ("gradient", "guided-backprop", "integrated-gradients"):
        maps, _ = attribute(model, x, method, **({"steps": 4} if method == "integrated-gradients" else {}))
        assert np.all(np.isfinite(maps)) and np.any(maps != 0)


# ---------------------------------------------------------------- planted truth (synth lesions)
@pytest.fixture(scope="module")
def lesions():
    """Healthy vs lesion 2D slices: each patient's lesions are a known mask (CAM's weakly
    supervised localisation task). Train on one cohort, explain the lesion subjects of another."""
    from neurointerp.synth.lesions import make_lesions

    train = make_lesions(n_per_group=192, size=32, seed=0)
    test = make_lesions(n_per_group=24, size=32, seed=1)
    x = torch.from_numpy(train.images[:, None])
    y = torch.from_numpy(train.labels.astype(np.float32))
    models = {}
    for name, kw in (("gap2d", dict(head="gap")), ("attention2d", dict(head="attention", attention=(2, 3), gate_channels=8))):
        torch.manual_seed(0)
        model = ConvClassifier((32, 32), channels=(8, 16, 32), hidden=(), **kw)
        fit_binary_on_arrays(model, x, y, epochs=15, batch_size=32, lr=3e-3)
        with torch.inference_mode():
            acc = ((model(torch.from_numpy(test.images[:, None]))[:, 0] > 0).numpy() == test.labels).mean()
        assert acc > 0.9, (name, acc)
        torch.manual_seed(1)
        models[name] = (model, ConvClassifier((32, 32), channels=(8, 16, 32), hidden=(), **kw).eval())
    return test, models


def _mean_ncc(maps, masks):
    from neurointerp.evaluate.metrics import ncc

    return float(np.nanmean([ncc(m, t) for m, t in zip(maps, masks)]))


@pytest.mark.parametrize("name, method", [("gap2d", "cam"), ("attention2d", "attention")])
def test_cam_and_attention_find_the_planted_lesions(lesions, name, method):
    test, models = lesions
    trained, untrained = models[name]
    idx = np.flatnonzero(test.labels == 1)
    x = torch.from_numpy(test.images[idx][:, None])
    maps, _ = attribute(trained, x, method, target=1)
    chance, _ = attribute(untrained, x, method, target=1)
    observed, baseline = _mean_ncc(maps, test.masks[idx]), _mean_ncc(chance, test.masks[idx])
    assert observed > 0.15 and observed > baseline + 0.1, (observed, baseline)  # measured: cam 0.24 vs 0.06, attention 0.19 vs -0.04


# ---------------------------------------------------------------- train -> saliency
@pytest.mark.slow
def test_train_and_saliency_with_the_new_architectures(tmp_path):
    """`train --architecture gap3d/attention3d` (unchanged training loop), then `saliency --method
    cam/attention` writes maps on the model's grid; the wrong method is refused before any file."""
    from neurointerp.attribution.pipeline import run_saliency
    from neurointerp.io import load_image
    from neurointerp.models.checkpoint import load_checkpoint
    from neurointerp.synth.brain import SPACE, synth_brain
    from neurointerp.train.loop import train

    synth_brain(tmp_path / "data", n_subjects=12, voxel_size=8.0, effect_size=3.0, confound_strength=0.0, noise=0.0, template_space=True, seed=1)
    import pandas as pd

    frame = pd.read_csv(tmp_path / "data" / "cohort.csv")
    frame["image"] = [str(tmp_path / "data" / p) for p in frame["template_image"]]
    frame = frame.drop(columns=["template_image"])
    frame.iloc[:8].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[8:].to_csv(tmp_path / "test.csv", index=False)
    for arch, method in (("gap3d", "cam"), ("attention3d", "attention")):
        res = train(tmp_path / "train.csv", tmp_path / arch, architecture=arch, channels=(4, 8, 8), epochs=1, batch_size=4, folds=0, final=True, normalize="zscore", shift=0, rotation=0)
        clf = load_checkpoint(res.final_model)
        assert clf.model.head == arch[:-2] and clf.meta["architecture"]["name"] == arch
        out = run_saliency(res.final_model, tmp_path / "test.csv", tmp_path / f"sal-{arch}", method=[method], atlas="none", allow_unvalidated=True)
        for pid, img in zip(frame["participant_id"][8:], frame["image"][8:]):
            path = out / f"sub-{pid}" / "anat" / f"sub-{pid}_space-{SPACE}_res-8mm_desc-{method}_attribution.nii.gz"
            m, src = load_image(path, allow_empty=True), load_image(img)
            assert m.shape == src.shape and np.array_equal(m.affine, src.affine)
            assert np.any(m.data != 0)
        other = "attention" if method == "cam" else "cam"
        with pytest.raises(InputError, match=f"^{other} needs"):
            run_saliency(res.final_model, tmp_path / "test.csv", tmp_path / f"no-{arch}", method=[other], atlas="none", allow_unvalidated=True)
        assert not (tmp_path / f"no-{arch}").exists()


def test_train_overrides_that_break_a_head_fail_before_training():
    from neurointerp.models.classifier import architecture_params

    with pytest.raises(InputError, match="'gap3d' ends in global average pooling and one linear layer"):
        architecture_params("gap3d", ndim=3, hidden=(16,))
    with pytest.raises(InputError, match=r"'attention3d' gates conv stacks \[2, 3\], but --channels gives 2 stacks"):
        architecture_params("attention3d", ndim=3, channels=(8, 16))
    assert architecture_params("attention3d", ndim=3, channels=(4, 8, 8))["attention"] == (2, 3)
