"""Issue 20 item 5: multi-class default targets on CPU, and what LRP explains."""

import json

import numpy as np
import pytest
import torch

from neurointerp.attribution import METHOD_NAMES, attribute
from neurointerp.attribution.reference import ReferenceSet
from neurointerp.errors import InputError
from neurointerp.models.classifier import ConvClassifier

PARAMS = {
    "occlusion": {"window": 4, "stride": 4},
    "integrated-gradients": {"steps": 4},
    "smoothgrad": {"samples": 3},
    "optimised-perturbation": {"iterations": 3},
    "swap-test": {"window": 6, "stride": 6, "swap_references": 1},
    "lime": {"n_samples": 16},
    "kernel-shap": {"n_samples": 16},
    "gradient-shap": {"samples": 3},
}


def three_class_model(method=None):
    """A 3-class model of the architecture ``method`` needs (CAM: pooled head; attention: gates)."""
    torch.manual_seed(0)
    if method == "cam":
        return ConvClassifier((12, 12, 12), n_outputs=3, channels=(4, 6), kernel_size=3, head="gap", hidden=()).eval()
    if method == "attention":
        return ConvClassifier((12, 12, 12), n_outputs=3, channels=(4, 6, 8), kernel_size=3, head="attention", attention=(1, 2), gate_channels=5, hidden=()).eval()
    return ConvClassifier((12, 12, 12), n_outputs=3, channels=(4, 6), kernel_size=3, hidden=(8,)).eval()


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_multiclass_default_target_on_cpu(method):
    """Every method explains a 3-class model's predicted class on CPU (the predicted classes
    were inference tensors: 'Inference tensors cannot be saved for backward')."""
    model = three_class_model(method)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 1, 12, 12, 12)).astype(np.float32))
    regions = np.repeat(np.arange(1, 5), 3)[:, None, None] * np.ones((12, 12, 12), int)
    pool = torch.from_numpy(np.random.default_rng(2).normal(size=(30, 1, 12, 12, 12)).astype(np.float32) * 3)
    with torch.inference_mode():
        predicted = model(x).argmax(1).tolist()
        pool_pred = model(pool).argmax(1).clone()
    reference = ReferenceSet(pool, pool_pred, [f"r{i}" for i in range(len(pool))])
    maps, record = attribute(model, x, method, regions=regions, reference_set=reference, **PARAMS.get(method, {}))
    assert record["Targets"] == predicted and record["TargetChoice"] == "predicted class"
    assert maps.shape == (2, 12, 12, 12) and np.all(np.isfinite(maps)) and np.any(maps != 0)
    if method in ("gradient", "lrp-epsilon", "deeplift", "gradcam"):  # the same as naming the class
        given, _ = attribute(model, x, method, target=predicted, regions=regions, reference_set=reference, **PARAMS.get(method, {}))
        assert np.allclose(maps, given, atol=1e-6)
    if method == "gradient":  # against an explicit gradient of the predicted logit
        xr = x.clone().requires_grad_(True)
        out = model(xr)
        (g,) = torch.autograd.grad(out[torch.arange(2), torch.tensor(predicted)].sum(), xr)
        assert np.allclose(maps, g[:, 0].numpy(), atol=1e-6)


@pytest.mark.parametrize("method", ["lrp-epsilon", "lrp-alphabeta"])
def test_lrp_refuses_probability_and_records_the_logit(method):
    model = three_class_model()
    x = torch.randn(2, 1, 12, 12, 12)
    with pytest.raises(InputError, match="--score probability is refused"):
        attribute(model, x, method, score="probability")
    _, record = attribute(model, x, method)
    assert record["Score"] == "logit"


def test_probability_is_refused_for_regression_and_deeplift_softmax():
    torch.manual_seed(0)
    reg = ConvClassifier((12, 12, 12), n_outputs=1, channels=(4,), kernel_size=3, hidden=()).eval()
    x = torch.randn(2, 1, 12, 12, 12)
    with pytest.raises(InputError, match="regression model explains its output"):
        attribute(reg, x, "gradient", task="regression", score="probability")
    with pytest.raises(InputError, match="softmax has no rescale rule"):
        attribute(three_class_model(), x, "deeplift", score="probability")


def test_gradient_methods_explain_the_probability_when_asked():
    """--score probability changes the map (gradient of softmax, not of the logit)."""
    model = three_class_model()
    x = torch.randn(2, 1, 12, 12, 12)
    p_maps, rec = attribute(model, x, "gradient", score="probability")
    l_maps, _ = attribute(model, x, "gradient", score="logit")
    assert rec["Score"] == "probability" and not np.allclose(p_maps, l_maps)
    xr = x.clone().requires_grad_(True)
    p = torch.softmax(model(xr), 1)
    (g,) = torch.autograd.grad(p[torch.arange(2), torch.tensor(rec["Targets"])].sum(), xr)
    assert np.allclose(p_maps, g[:, 0].numpy(), atol=1e-7)


def test_saliency_refuses_lrp_probability_before_writing(tmp_path):
    """The sidecar can never say 'probability' for a logit map: the run is refused up front."""
    from neurointerp.attribution.pipeline import run_saliency
    from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
    from neurointerp.models.inputs import InputSpec
    from neurointerp.io import save_image

    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    spec = InputSpec((12, 12, 12), affine, space="test", normalize="none")
    model = three_class_model()
    save_checkpoint(tmp_path / "model.pt", checkpoint_dict(model, spec, "multiclass", ["a", "b", "c"], "test3d", {"participant_ids": []}, {}))
    rows = []
    for i in range(2):
        save_image(np.random.default_rng(i).normal(size=(12, 12, 12)).astype(np.float32), affine, tmp_path / f"s{i}.nii.gz")
        rows.append(f"s{i},s{i}.nii.gz,a")
    (tmp_path / "cohort.csv").write_text("participant_id,image,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    with pytest.raises(InputError, match="lrp-epsilon explains the logit only"):
        run_saliency(tmp_path / "model.pt", tmp_path / "cohort.csv", out, method=["gradient", "lrp-epsilon"], score="probability", atlas="none", allow_unvalidated=True)
    assert not out.exists()
    # multi-class default target through the whole command, and the sidecar says what was explained
    run_saliency(tmp_path / "model.pt", tmp_path / "cohort.csv", out, method=["gradient", "lrp-epsilon"], score="logit", atlas="none", allow_unvalidated=True)
    for desc in ("gradient", "lrpepsilon"):
        side = json.loads((out / "sub-s0" / "anat" / f"sub-s0_space-test_desc-{desc}_attribution.json").read_text())
        assert side["Score"] == "logit" and side["TargetChoice"] == "predicted class"


def test_confounder_gate_is_refused_for_methods_it_cannot_change():
    """A gate that blocks every feature zeroes the maps of the methods saliency lets through
    --confounder-mask, and leaves the new non-gradient methods unchanged (so they are refused:
    their 'confounder-free' map would silently be the full one)."""
    from neurointerp.confound.gate import GRADIENT_METHODS, feature_gate

    torch.manual_seed(0)
    model = ConvClassifier((12, 12, 12), channels=(4, 6), kernel_size=3, hidden=(8,)).eval()
    x = torch.randn(2, 1, 12, 12, 12)
    regions = np.repeat(np.arange(1, 5), 3)[:, None, None] * np.ones((12, 12, 12), int)
    n_features = model.encoder(x[:1]).shape[1]
    assert "gradient-shap" in GRADIENT_METHODS
    for method in ("deeplift", "lime", "kernel-shap", "gradient-shap"):
        full, _ = attribute(model, x, method, target=1, regions=regions, **PARAMS.get(method, {}))
        with feature_gate(model, np.zeros(n_features)):
            gated, _ = attribute(model, x, method, target=1, regions=regions, **PARAMS.get(method, {}))
        if method in GRADIENT_METHODS:
            assert np.all(gated == 0) and np.any(full != 0)
        else:
            assert np.allclose(gated, full)
    for method in ("optimised-perturbation", "swap-test", "lime", "kernel-shap", "deeplift"):
        assert method not in GRADIENT_METHODS
