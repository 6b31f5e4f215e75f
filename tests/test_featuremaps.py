"""Feature maps, first-layer filters and input optimisation: equal to explicit computations,
recovering planted truth, and written by ``saliency`` as their own output kinds."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurointerp.attribution.featuremaps import channel_region_table, feature_maps, first_layer_filters
from neurointerp.attribution.inputopt import gaussian_blur, input_optimisation, total_variation
from neurointerp.errors import InputError
from neurointerp.evaluate.metrics import ncc
from neurointerp.models.classifier import ConvClassifier
from neurointerp.train.arrays import fit_binary_on_arrays


def bn_model(seed=0):
    torch.manual_seed(seed)
    model = ConvClassifier((12, 10, 14), channels=(4, 6), kernel_size=3, batch_norm=True, hidden=(8,))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(m.weight, 0.5, 1.5)
    return model.eval()


# ---------------------------------------------------------------- feature maps
def test_feature_maps_equal_a_functional_forward_pass():
    model = bn_model()
    x = torch.randn(3, 1, 12, 10, 14)
    s1, s2 = model.encoder.stack1, model.encoder.stack2
    with torch.no_grad():
        a1 = F.relu(F.conv3d(x, s1.conv.weight, s1.conv.bias, padding=1))
        h = F.max_pool3d(F.batch_norm(a1, s1.bn.running_mean, s1.bn.running_var, s1.bn.weight, s1.bn.bias, eps=s1.bn.eps), 2)
        a2 = F.relu(F.conv3d(h, s2.conv.weight, s2.conv.bias, padding=1))  # (3, 6, 6, 5, 7)
    for layer, act in (("encoder.stack1.act", a1), ("encoder.stack2.act", a2)):
        maps, name = feature_maps(model, x, layer)
        ref = F.interpolate(act, size=(12, 10, 14), mode="trilinear", align_corners=False)
        assert name == layer and maps.shape == (3, act.shape[1], 12, 10, 14)
        assert torch.allclose(maps, ref, atol=1e-5)
    maps, name = feature_maps(model, x)  # default: Grad-CAM's layer
    assert name == "encoder.stack2.act"
    with pytest.raises(InputError, match=r"layer 'encoder.flatten' has no spatial output \(shape \(3, 108\)\)"):
        feature_maps(model, x, "encoder.flatten")
    with pytest.raises(InputError, match="no layer 'encoder.stack9'"):
        feature_maps(model, x, "encoder.stack9")


def test_channel_region_table_equals_a_loop_over_regions():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 6, 7, 8))
    labels = rng.integers(0, 5, size=(6, 7, 8))
    labels[labels == 3] = 0  # region 3 absent
    names = {1: "one", 2: "two", 4: "four"}
    table = channel_region_table(maps, labels, names, "toy", channels=[0, 1, 2])
    assert list(table.columns) == ["channel", "rank", "atlas", "index", "name", "n_voxels", "mean_activation", "relative_activation"]
    assert len(table) == 3 * 3
    for c in range(3):
        sub = table[table["channel"] == c]
        assert list(sub["rank"]) == [1, 2, 3] and sub["mean_activation"].is_monotonic_decreasing
        overall = maps[c][labels > 0].mean()
        for lab in (1, 2, 4):
            row = sub[sub["index"] == lab].iloc[0]
            inside = labels == lab
            assert row["name"] == names[lab] and row["n_voxels"] == inside.sum()
            assert row["mean_activation"] == pytest.approx(maps[c][inside].mean())
            assert row["relative_activation"] == pytest.approx(maps[c][inside].mean() / overall)
    # a subset of channels keeps the layer's channel numbers
    sub = channel_region_table(maps[[2]], labels, names, "toy", channels=[2])
    assert sub.equals(table[table["channel"] == 2].reset_index(drop=True))


# ---------------------------------------------------------------- first-layer filters
@pytest.mark.parametrize("kernel", [3, 2])
def test_filter_images_put_each_weight_at_its_offset_in_mm(kernel):
    """A delta at input voxel p gives conv output w[o] - at output voxel q with offset(o) = p - q."""
    torch.manual_seed(kernel)
    model = ConvClassifier((9, 9, 9), channels=(3,), kernel_size=kernel, hidden=()).eval()
    grid = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.5, -72], [0, 0, 0, 1]])  # LAS, anisotropic
    filters, affine, layer = first_layer_filters(model, grid)
    assert layer == "encoder.stack1.conv" and filters.shape == (3, kernel, kernel, kernel)
    assert np.array_equal(filters, model.encoder.stack1.conv.weight.detach().numpy()[:, 0])
    p = np.array([4, 4, 4])
    x = torch.zeros(1, 1, 9, 9, 9)
    x[0, 0, 4, 4, 4] = 1.0
    stack = model.encoder.stack1
    with torch.no_grad():
        out = (stack.conv(stack.pad(x)) if hasattr(stack, "pad") else stack.conv(x))[0] - stack.conv.bias[:, None, None, None]
    checked = 0
    for o in itertools.product(range(kernel), repeat=3):
        offset_mm = affine[:3, :3] @ np.array(o) + affine[:3, 3]
        delta_vox = np.linalg.solve(grid[:3, :3], offset_mm)  # p - q in voxels
        q = p - np.round(delta_vox).astype(int)
        assert np.allclose(delta_vox, np.round(delta_vox))
        assert np.allclose(out[(slice(None), *q)].numpy(), filters[(slice(None), *o)], atol=1e-6)
        checked += 1
    assert checked == kernel**3


# ---------------------------------------------------------------- input optimisation
class _LinearUnit(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 3, padding=1)
        self.config = {"ndim": 3}

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3, 4))[:, :1]


def _mean_activation_gradient(conv, shape, c):
    """d mean_u(conv(x)_c(u)) / dx by an explicit loop over positions and kernel offsets."""
    w = conv.weight.detach().numpy()[c, 0]
    g = np.zeros(shape)
    n = np.prod(shape)
    for u in itertools.product(*[range(s) for s in shape]):
        for o in itertools.product(range(3), repeat=3):
            v = tuple(ui + oi - 1 for ui, oi in zip(u, o))
            if all(0 <= vi < s for vi, s in zip(v, shape)):
                g[v] += w[o] / n
    return g


def test_input_optimisation_reaches_the_closed_form_optimum_of_a_linear_unit():
    torch.manual_seed(0)
    model = _LinearUnit()
    shape = (5, 6, 4)
    x0 = torch.randn(1, *shape)
    mask = np.ones(shape, bool)
    mask[0] = False  # outside the brain: never moves
    l2 = 2.0
    images, record = input_optimisation(model, x0, [0, 2], layer="conv", mask=mask, l2=l2, tv=0, jitter=0, blur_sigma=0, steps=300, lr=0.05)
    for k, c in enumerate((0, 2)):
        g = _mean_activation_gradient(model.conv, shape, c) * mask
        scale = np.sqrt((g**2).sum() / mask.sum())
        optimum = x0[0].numpy() + g / (scale * l2)  # argmin -J/scale + l2/2 |x - x0|^2
        assert np.allclose(images[k, 0], optimum, atol=1e-4)
        assert record["GradientScale"][k] == pytest.approx(scale, rel=1e-5)
        assert record["ObjectiveAtEnd"][k] > record["ObjectiveAtStart"][k]
        assert np.array_equal(images[k, 0][~mask], x0[0].numpy()[~mask])
    assert record["Units"] == [0, 2] and record["Regularisers"]["l2"] == l2


def test_regularisers_smooth_the_result_and_bad_requests_are_refused():
    torch.manual_seed(1)
    model = ConvClassifier((12, 12, 12), channels=(4, 6), hidden=(8,)).eval()
    x0 = torch.randn(1, 12, 12, 12) * 0.1
    common = dict(layer="encoder.stack2.act", l2=0.5, steps=40, lr=0.1, seed=3)
    raw, _ = input_optimisation(model, x0, [1], tv=0, jitter=0, blur_sigma=0, **common)
    smooth, _ = input_optimisation(model, x0, [1], tv=1.0, jitter=0, blur_sigma=0, **common)
    blurred, _ = input_optimisation(model, x0, [1], tv=0, jitter=0, blur_sigma=1.0, blur_every=2, **common)
    tv = lambda a: float(total_variation(torch.from_numpy(a))[0])  # noqa: E731
    assert tv(smooth) < 0.8 * tv(raw) and tv(blurred) < 0.8 * tv(raw)
    again, _ = input_optimisation(model, x0, [1], jitter=2, **{**common, "seed": 3})
    same, _ = input_optimisation(model, x0, [1], jitter=2, **{**common, "seed": 3})
    assert np.array_equal(again, same)  # jitter drawn from the seed
    # blur keeps a constant image constant and the mean of a smooth one
    c = torch.full((1, 1, 8, 8, 8), 2.0)
    assert torch.allclose(gaussian_blur(c, 1.5), c)
    with pytest.raises(InputError, match="channel 6 does not exist: layer 'encoder.stack2.act' has channels 0..5"):
        input_optimisation(model, x0, [6], layer="encoder.stack2.act", steps=1)
    with pytest.raises(InputError, match="steps 0: must be at least 1"):
        input_optimisation(model, x0, [0], layer="encoder.stack2.act", steps=0)
    dead = ConvClassifier((12, 12, 12), channels=(4,), hidden=()).eval()
    with torch.no_grad():
        dead.encoder.stack1.conv.weight[2] = 0.0
        dead.encoder.stack1.conv.bias[2] = -1.0
    with pytest.raises(InputError, match=r"channel\(s\) \[2\] of layer 'encoder.stack1.act' do not respond"):
        input_optimisation(dead, x0, [2], layer="encoder.stack1.act", steps=1)


# ---------------------------------------------------------------- planted truth (synth gaussians)
@pytest.fixture(scope="module")
def gaussians_model():
    from neurointerp.synth.gaussians import make_gaussians

    data = make_gaussians("magnitude", n_per_group=256, seed=0)
    x = torch.from_numpy(data.images[:, None])
    y = torch.from_numpy(data.labels.astype(np.float32))
    torch.manual_seed(0)
    model = ConvClassifier((32, 32), channels=(2, 4, 8), kernel_size=3, hidden=(16,))
    fit_binary_on_arrays(model, x, y, epochs=30, batch_size=64, lr=3e-3)
    with torch.inference_mode():
        assert ((model(x)[:, 0] > 0).float() == y).float().mean().item() > 0.8
    return data, x, model


def test_feature_maps_carry_the_planted_effect_better_than_permuted_labels(gaussians_model):
    """The channel whose class means differ most differs where the effect was planted."""
    data, x, model = gaussians_model
    maps, _ = feature_maps(model, x, "encoder.stack2.act")  # (N, 4, 32, 32)
    maps = maps.numpy()

    def best_channel_ncc(labels):
        diff = maps[labels == 1].mean(0) - maps[labels == 0].mean(0)
        c = int(np.argmax((diff**2).sum(axis=(1, 2))))
        return ncc(np.abs(diff[c]), data.group_truth)

    observed = best_channel_ncc(data.labels)
    rng = np.random.default_rng(0)
    null = [best_channel_ncc(rng.permutation(data.labels)) for _ in range(19)]
    assert observed > 0.8 and observed > max(null), (observed, null)  # permutation p = 1/20


def test_class_score_optimisation_paints_lesions_where_they_were_planted():
    """synth lesions: from the brain-masked mean slice, maximising the lesion class score of a
    trained model adds bright spots where lesions occur (the lesion frequency map); without the
    regularisers the change is adversarial noise, for an untrained model it is unrelated."""
    from neurointerp.synth.lesions import make_lesions

    d = make_lesions(n_per_group=256, size=32, seed=0)
    x = torch.from_numpy(d.images[:, None])
    y = torch.from_numpy(d.labels.astype(np.float32))
    x0 = x.mean(dim=0)
    brain = (d.images != 0).mean(axis=0) >= 0.5
    torch.manual_seed(0)
    model = ConvClassifier((32, 32), channels=(4, 8), hidden=(16,))
    fit_binary_on_arrays(model, x, y, epochs=20, batch_size=32, lr=3e-3)

    def change(m, **kw):
        images, record = input_optimisation(m, x0, [1], mask=brain, task="binary", steps=200, **kw)
        assert record["ObjectiveAtEnd"][0] > record["ObjectiveAtStart"][0]
        return ncc(images[0, 0] - x0[0].numpy(), d.frequency, mask=brain)

    regularised = change(model)  # defaults: l2 1, tv 0.1, jitter 1, blur 0.5 every 4 steps
    plain = change(model, tv=0, jitter=0, blur_sigma=0)
    torch.manual_seed(5)
    untrained = change(ConvClassifier((32, 32), channels=(4, 8), hidden=(16,)).eval())
    assert regularised > 0.45 and regularised > plain + 0.2 and regularised > abs(untrained) + 0.3, (regularised, plain, untrained)


# ---------------------------------------------------------------- saliency writes them
@pytest.mark.slow
def test_saliency_writes_feature_outputs_as_their_own_kinds(tmp_path):
    import json

    import pandas as pd

    from neurointerp.attribution.pipeline import run_saliency
    from neurointerp.io import load_image, read_cohort
    from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
    from neurointerp.models.inputs import InputSpec
    from neurointerp.synth.brain import SPACE, synth_brain

    synth_brain(tmp_path / "data", n_subjects=8, voxel_size=8.0, effect_size=3.0, confound_strength=0.0, noise=0.0, template_space=True, seed=2)
    frame = pd.read_csv(tmp_path / "data" / "cohort.csv")
    frame["image"] = [str(tmp_path / "data" / p) for p in frame["template_image"]]
    frame.drop(columns=["template_image"]).to_csv(tmp_path / "c.csv", index=False)
    cohort = read_cohort(tmp_path / "c.csv")
    vols = [load_image(p) for p in cohort.images]
    spec = InputSpec(vols[0].shape, vols[0].affine, space=SPACE, normalize="zscore")
    torch.manual_seed(0)
    model = ConvClassifier(spec.model_shape, channels=(4, 6), hidden=())
    x = spec.prepare(np.stack([v.data for v in vols]))
    fit_binary_on_arrays(model, x, torch.tensor((frame["label"] == "patient").to_numpy(np.float32)), epochs=2, batch_size=4, lr=1e-3)
    save_checkpoint(tmp_path / "model.pt", checkpoint_dict(model, spec, "binary", ["control", "patient"], "test3d", {"participant_ids": []}, {}))
    opts = dict(channels=[0, 3], opt_steps=5)
    out = run_saliency(tmp_path / "model.pt", tmp_path / "c.csv", tmp_path / "out", method=["gradient", "feature-maps", "first-layer-filters", "input-optimisation"], layer="encoder.stack2.act", **opts, allow_unvalidated=True)
    for pid, vol in zip(cohort.participant_ids, vols):
        anat = out / f"sub-{pid}" / "anat"
        import nibabel as nib

        img = nib.load(str(anat / f"sub-{pid}_space-{SPACE}_res-8mm_desc-encoderstack2act_featuremaps.nii.gz"))
        assert img.shape == (*vol.shape, 2) and np.allclose(img.affine, vol.affine)
        side = json.loads((anat / f"sub-{pid}_space-{SPACE}_res-8mm_desc-encoderstack2act_featuremaps.json").read_text())
        assert side["Layer"] == "encoder.stack2.act" and side["Channels"] == [0, 3] and side["Axis4"] == "channel"
        assert side["Checkpoint"]["sha256"] and side["Inputs"][0]["sha256"]
        # the volumes are the layer's channels 0 and 3, upsampled and uncropped
        ref, _ = feature_maps(model, spec.prepare(vol.data), "encoder.stack2.act")
        assert np.allclose(np.asarray(img.dataobj)[..., 1], ref[0, 3].numpy(), atol=1e-5)
        table = pd.read_csv(anat / f"sub-{pid}_space-{SPACE}_res-8mm_desc-encoderstack2act_atlas-AAL2_featuremaps.tsv", sep="\t")
        assert set(table["channel"]) == {0, 3} and (table["atlas"] == "AAL2").all() and table["n_voxels"].min() > 0  # the layer's numbers
        assert (anat / f"sub-{pid}_space-{SPACE}_res-8mm_desc-gradient_attribution.nii.gz").exists()
        assert not list(anat.glob("*featuremaps*attribution*"))
    filt = nib.load(str(out / "group" / "desc-encoderstack1conv_filters.nii.gz"))
    assert filt.shape == (3, 3, 3, 4) and np.allclose(filt.affine[:3, :3], vols[0].affine[:3, :3], atol=1e-5)
    assert len(pd.read_csv(out / "group" / "desc-encoderstack1conv_filters.tsv", sep="\t")) == 4
    opt = nib.load(str(out / "group" / f"space-{SPACE}_res-8mm_desc-encoderstack2act_optimisedinput.nii.gz"))
    start = load_image(out / "group" / f"space-{SPACE}_res-8mm_desc-start_optimisedinput.nii.gz", allow_empty=True)
    assert opt.shape == (*vols[0].shape, 2) and np.allclose(opt.affine, vols[0].affine)
    rec = json.loads((out / "group" / f"space-{SPACE}_res-8mm_desc-encoderstack2act_optimisedinput.json").read_text())
    assert rec["Units"] == [0, 3] and all(e > s for s, e in zip(rec["ObjectiveAtStart"], rec["ObjectiveAtEnd"]))
    assert np.all(np.asarray(opt.dataobj)[start.data == 0] == 0)  # outside the brain: unchanged (0)
    # the path helpers a per-subject runner uses name exactly the files written
    from neurointerp.attribution.featureoutputs import feature_map_outputs, model_level_outputs

    written = {p for p in (out / "group").iterdir() if "optimisedinput" in p.name or "filters" in p.name}
    assert set(model_level_outputs(out, SPACE, ["first-layer-filters", "input-optimisation"], "encoder.stack2.act", "encoder.stack1.conv", res="8mm")) == written
    for i, pid in enumerate(cohort.participant_ids):
        assert set(feature_map_outputs(out, cohort, i, SPACE, "encoder.stack2.act", "AAL2")) == set((out / f"sub-{pid}" / "anat").glob("*featuremaps*"))
    groups = [p.name for p in (out / "group").glob("*_attribution.nii.gz")]
    assert groups and all("gradient" in g for g in groups)  # no attribution group outputs from feature maps
    assert "*_featuremaps.nii.gz" in (out / ".bidsignore").read_text()
    # resumable: a second run skips everything; other parameters are refused
    fm_path = next(out.glob("sub-*/anat/*_featuremaps.nii.gz"))
    before = fm_path.stat().st_mtime_ns
    run_saliency(tmp_path / "model.pt", tmp_path / "c.csv", tmp_path / "out", method=["gradient", "feature-maps", "first-layer-filters", "input-optimisation"], layer="encoder.stack2.act", **opts, allow_unvalidated=True)
    assert fm_path.stat().st_mtime_ns == before
    with pytest.raises(InputError, match="holds a `saliency` run with other settings"):
        run_saliency(tmp_path / "model.pt", tmp_path / "c.csv", tmp_path / "out", method=["feature-maps"], layer="encoder.stack2.act", channels=[1], allow_unvalidated=True)
    # bad requests are one line, before anything is written
    for kw, message in (
        (dict(layer="encoder.flatten"), "has no spatial output"),
        (dict(layer="encoder.stack2.act", channels=[9]), "channel 9 does not exist"),
        (dict(opt_steps=0), "--opt-steps 0: must be at least 1"),
        (dict(layer="encoder.stack1.act", confounder_mask=tmp_path / "m.npy"), "cannot be made confounder-free"),
    ):
        np.save(tmp_path / "m.npy", np.ones(10))
        with pytest.raises(InputError, match=message):
            run_saliency(tmp_path / "model.pt", tmp_path / "c.csv", tmp_path / "bad", method=["feature-maps", "input-optimisation"], **kw, allow_unvalidated=True)
        assert not (tmp_path / "bad").exists()
    # array tasks: the model-level outputs are written once, by the task that completes the cohort
    run_saliency(tmp_path / "model.pt", tmp_path / "c.csv", tmp_path / "arr", method=["feature-maps", "first-layer-filters"], array_index=1, array_size=2, allow_unvalidated=True)
    assert len(list((tmp_path / "arr").glob("sub-*/anat/*_featuremaps.nii.gz"))) == 4 and not (tmp_path / "arr" / "group").exists()
    run_saliency(tmp_path / "model.pt", tmp_path / "c.csv", tmp_path / "arr", method=["feature-maps", "first-layer-filters"], array_index=0, array_size=2, allow_unvalidated=True)
    assert len(list((tmp_path / "arr").glob("sub-*/anat/*_featuremaps.nii.gz"))) == 8 and (tmp_path / "arr" / "group" / "desc-encoderstack1conv_filters.nii.gz").exists()
