"""Unit tests of the simulator pieces: CondConv, U-Net, spatial transformer, losses, checkpoints."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from neurointerp.errors import InputError
from neurointerp.simulate.condconv import CondConv
from neurointerp.simulate.losses import cycle_loss, logit_shift_loss, smoothness_loss
from neurointerp.simulate.unet import Simulator
from neurointerp.simulate.warp import load_field, save_field, warp

torch.set_num_threads(1)


@pytest.mark.parametrize("ndim", [2, 3])
def test_condconv_batched_equals_per_sample_mixture(ndim):
    torch.manual_seed(0)
    conv = CondConv(ndim, 3, 5, kernel_size=3, experts=3)
    x = torch.randn(4, 3, *([7] * ndim))
    t = torch.tensor([0.0, 1.0, 0.0, 1.0])
    y = conv(x, t)
    alpha = conv.routing_weights(x, t)
    assert alpha.shape == (4, 3) and bool(((alpha > 0) & (alpha < 1)).all())
    f = torch.nn.functional.conv2d if ndim == 2 else torch.nn.functional.conv3d
    for n in range(4):
        w = sum(alpha[n, k] * conv.weight[k] for k in range(3))
        b = sum(alpha[n, k] * conv.bias[k] for k in range(3))
        ref = f(x[n : n + 1], w, b, padding=1)
        assert torch.allclose(y[n : n + 1], ref, atol=1e-5)
    # the task label changes the routing, hence the output
    assert not torch.allclose(conv(x, torch.zeros(4)), conv(x, torch.ones(4)))


def test_routing_uses_pooled_features_and_task():
    conv = CondConv(2, 2, 2, experts=3)
    with torch.no_grad():
        conv.routing.weight.zero_()
        conv.routing.bias.zero_()
        conv.routing.weight[:, 2] = 1.0  # task column
    x = torch.randn(2, 2, 5, 5)
    a = conv.routing_weights(x, torch.tensor([0.0, 1.0]))
    assert torch.allclose(a[0], torch.full((3,), 0.5)) and torch.allclose(a[1], torch.sigmoid(torch.ones(3)))


@pytest.mark.parametrize("shape,mode,condconv", [((32, 32), "image", True), ((12, 14, 10), "warp", True), ((30, 26), "warp", False)])
def test_simulator_shapes_and_identity_start(shape, mode, condconv):
    torch.manual_seed(0)
    sim = Simulator(shape, mode=mode, channels=[2, 4, 8], fc=16, condconv=condconv).eval()
    x = torch.rand(3, 1, *shape)
    with torch.no_grad():
        out, field = sim(x, torch.tensor([0, 1, 0]))
    assert out.shape == x.shape
    if mode == "warp":
        assert field.shape == (3, len(shape), *shape)
    else:
        assert field is None
    # initialised close to the identity
    assert float((out - x).abs().max()) < 0.05
    assert len(sim.nets) == (1 if condconv else 2)


def test_conventional_pair_routes_tasks_to_separate_nets():
    torch.manual_seed(0)
    sim = Simulator((16, 16), mode="image", channels=[2, 4], fc=8, condconv=False).eval()
    with torch.no_grad():
        sim.nets[1].head.conv.bias.fill_(1.0)
    x = torch.zeros(2, 1, 16, 16)
    with torch.no_grad():
        out, _ = sim(x, torch.tensor([0, 1]))
    assert float(out[0].abs().max()) < 0.05 and float(out[1].mean()) > 0.9


def test_warp_identity_and_integer_shift():
    img = torch.arange(60.0).reshape(1, 1, 3, 4, 5)
    field = torch.zeros(1, 3, 3, 4, 5)
    assert torch.allclose(warp(img, field), img)
    field[:, 2] = 1.0  # X_hat(v) = X(v + e_k)
    out = warp(img, field)
    assert torch.allclose(out[..., :4], img[..., 1:])
    assert torch.allclose(out[..., 4], torch.zeros(1, 1, 3, 4))
    field[:, 2] = 0.5
    assert torch.allclose(warp(img, field)[..., :4], img[..., :4] + 0.5)


def test_losses():
    raw = torch.tensor([0.0, 0.0, 1.0, 1.0])
    sim = torch.tensor([10.0, 2.0, -9.0, 0.0])
    task = torch.tensor([0.0, 0.0, 1.0, 1.0])
    # inject: max(raw - sim, -5): -5, -2; remove: max(sim - raw, -5): -5, -1
    assert float(logit_shift_loss(raw, sim, task, 5.0)) == pytest.approx((-5 - 2 - 5 - 1) / 4)
    x = torch.rand(2, 1, 4, 4)
    assert float(cycle_loss(x + 0.5, x)) == pytest.approx(0.25)
    f = torch.zeros(1, 2, 5, 6)
    assert float(smoothness_loss(f + 3.0)) == 0.0
    f[:, 0] = torch.arange(6.0)  # d phi_0 / d axis1 = 1 everywhere, 2 components
    assert float(smoothness_loss(f)) == pytest.approx(1.0)


def _ants():
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    return pytest.importorskip("ants")


def _smooth_field(shape, amp=1.2):
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(float)
    return np.stack([amp * np.sin(g[0] / 4 + k) * np.cos(g[1] / 5) * np.sin(g[2] / 6 + k) for k in range(3)]), g


def test_field_file_is_an_ants_displacement_field(tmp_path):
    """ants.apply_transforms with our NIfTI field reproduces our spatial transformer."""
    import nibabel as nib

    ants = _ants()
    shape = (18, 20, 16)
    u, g = _smooth_field(shape)
    affine = np.array([[-2.0, 0, 0, 30], [0, 2.5, 0, -20], [0, 0, 3, -10], [0, 0, 0, 1]])
    img = np.exp(-((g - np.array(shape)[:, None, None, None] / 2) ** 2).sum(0) / 30).astype(np.float32)
    save_field(u, affine, tmp_path / "f.nii.gz")
    hdr = nib.load(str(tmp_path / "f.nii.gz")).header
    assert hdr.get_data_shape() == shape + (1, 3) and int(hdr["intent_code"]) == 1007
    nib.save(nib.Nifti1Image(img, affine), str(tmp_path / "img.nii.gz"))
    a = ants.image_read(str(tmp_path / "img.nii.gz"))
    ref = ants.apply_transforms(a, a, [str(tmp_path / "f.nii.gz")], interpolator="linear").numpy()
    ours = warp(torch.from_numpy(img)[None, None], torch.from_numpy(u).float()[None])[0, 0].numpy()
    loc = g + u  # compare where the sample point is inside the grid (boundary handling differs)
    inside = np.all([(loc[i] >= 0) & (loc[i] <= shape[i] - 1) for i in range(3)], axis=0)
    assert inside.mean() > 0.8
    assert np.abs(ref - ours)[inside].max() < 1e-4
    back, aff = load_field(tmp_path / "f.nii.gz", 3, shape=shape, affine=affine)
    assert np.allclose(back, u, atol=1e-5) and np.allclose(aff, affine)


def test_load_field_rejects_wrong_shapes(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), np.eye(4)), str(tmp_path / "scalar.nii.gz"))
    with pytest.raises(InputError, match="not a displacement field"):
        load_field(tmp_path / "scalar.nii.gz", 3)
    save_field(np.zeros((3, 5, 6, 7)), np.eye(4), tmp_path / "f.nii.gz")
    with pytest.raises(InputError, match="differs from the image grid 5x6x8"):
        load_field(tmp_path / "f.nii.gz", 3, shape=(5, 6, 8))
    # a 2D field is written with a singleton third axis and read back as 2D
    save_field(np.ones((2, 8, 9)), np.eye(4), tmp_path / "f2.nii.gz")
    u, _ = load_field(tmp_path / "f2.nii.gz", 2, shape=(8, 9))
    assert u.shape == (2, 8, 9) and np.allclose(u, 1.0)


def test_simulator_checkpoint_roundtrip(tmp_path):
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.checkpoint import load_simulator, save_simulator, simulator_dict

    torch.manual_seed(0)
    sim = Simulator((12, 10, 8), mode="warp", channels=[2, 4], fc=8).eval()
    spec = InputSpec((12, 10, 8), np.diag([2.0, 2.0, 2.0, 1.0]), space="test")
    save_simulator(tmp_path / "s.pt", simulator_dict(sim, spec, {"sha256": "abc"}, {"delta": 3.0}, {}))
    loaded = load_simulator(tmp_path / "s.pt")
    x = torch.rand(2, 1, 12, 10, 8)
    t = torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.allclose(loaded.model(x, t)[0], sim(x, t)[0])
    assert loaded.spec.shape == (12, 10, 8) and loaded.classifier_sha256 == "abc" and loaded.mode == "warp"
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="not a neurointerp simulator"):
        load_simulator(tmp_path / "bad.pt")
