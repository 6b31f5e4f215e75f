"""Unit tests of the simulator pieces: CondConv, U-Net, spatial transformer, losses, checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

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


def test_load_field_rejects_non_finite_values_and_degenerate_grids(tmp_path):
    """NaN/Inf vectors and a singular or zero-voxel-size affine are refused, naming the file."""
    import nibabel as nib

    u = 0.1 * np.ones((3, 5, 6, 7))
    for name, value in (("nan.nii.gz", np.nan), ("inf.nii.gz", -np.inf)):
        bad = u.copy()
        bad[1, 2, 3, 4] = value
        save_field(bad, np.eye(4), tmp_path / name)
        with pytest.raises(InputError, match=rf"{name}: 1 voxel has NaN or Inf displacements"):
            load_field(tmp_path / name, 3)
    save_field(u, np.eye(4), tmp_path / "good.nii.gz")
    img = nib.load(str(tmp_path / "good.nii.gz"))
    data = np.asarray(img.dataobj)
    singular = np.eye(4)
    singular[:3, 1] = singular[:3, 0]  # two voxel axes along one world direction
    vector = nib.Nifti1Image(data, singular)
    vector.header.set_intent("vector")  # a field must say so (a stack of three images is not one)
    nib.save(vector, str(tmp_path / "singular.nii.gz"))
    with pytest.raises(InputError, match=r"singular\.nii\.gz: affine is singular"):
        load_field(tmp_path / "singular.nii.gz", 3)
    flat = np.eye(4)
    flat[2, 2] = 0.0  # the third axis has no extent (sform only: a qform cannot store it)
    hdr = nib.Nifti1Header()
    hdr.set_sform(flat, code=2)
    hdr["qform_code"] = 0
    hdr.set_intent("vector")
    nib.save(nib.Nifti1Image(data, None, header=hdr), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(InputError, match=r"flat\.nii\.gz: affine has a zero voxel size"):
        load_field(tmp_path / "flat.nii.gz", 3)
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.nii\.gz: file is empty"):
        load_field(tmp_path / "empty.nii.gz", 3)
    back, _ = load_field(tmp_path / "good.nii.gz", 3)  # the good field still reads
    assert np.allclose(back, u, atol=1e-6)


def _tiny_apply_inputs(tmp_path, n=4):
    """An untrained warp simulator with its classifier and a cohort of ``n`` images (12x10x8, 2 mm)."""
    import nibabel as nib
    import pandas as pd

    from neurointerp.io import sha256
    from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
    from neurointerp.models.classifier import ConvClassifier
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.checkpoint import save_simulator, simulator_dict

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    spec = InputSpec((12, 10, 8), affine, space="test", normalize="zscore")
    torch.manual_seed(0)
    clf = save_checkpoint(tmp_path / "clf.pt", checkpoint_dict(ConvClassifier(spec.model_shape, channels=(2,), hidden=()), spec, "binary", ["control", "patient"], "simnet3d", {}, {}))
    sim = Simulator(spec.model_shape, mode="warp", channels=[2, 4], fc=8).eval()
    simulator = save_simulator(tmp_path / "sim.pt", simulator_dict(sim, spec, {"sha256": sha256(clf)}, {"delta": 1.0}, {}))
    rng = np.random.default_rng(0)
    rows = []
    for k in range(n):
        path = tmp_path / f"img{k}.nii.gz"
        nib.save(nib.Nifti1Image((1.0 + rng.random((12, 10, 8))).astype(np.float32), affine), str(path))
        rows.append({"participant_id": f"s{k}", "image": path.name, "label": ("control", "patient")[k % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "cohort.csv", index=False)
    return tmp_path / "cohort.csv", Path(simulator), Path(clf)


def test_apply_refuses_a_bad_image_before_writing_and_keeps_failures_tsv_for_runtime_failures(tmp_path, capsys, monkeypatch):
    import nibabel as nib
    import pandas as pd

    import neurointerp.simulate.apply as apply_mod
    from neurointerp.cli.app import main

    cohort, simulator, clf = _tiny_apply_inputs(tmp_path)
    argv = ["--quiet", "simulate", "apply", str(cohort), str(simulator), str(clf), "--allow-unvalidated"]
    # a NaN voxel in the last row's image: exit 2, one line naming the table row and the file, nothing written
    img = nib.load(str(tmp_path / "img3.nii.gz"))
    data = np.asarray(img.dataobj).copy()
    data[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), str(tmp_path / "nan.nii.gz"))
    frame = pd.read_csv(cohort)
    frame.loc[3, "image"] = "nan.nii.gz"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    assert main([*argv[:3], str(tmp_path / "bad.csv"), *argv[4:], str(tmp_path / "o1"), "--threads", "1"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("warning: ")]  # the --allow-unvalidated warning
    assert len(err) == 1 and "bad.csv row 5" in err[0] and "nan.nii.gz" in err[0] and "NaN" in err[0], err
    assert not (tmp_path / "o1").exists()

    # a genuine runtime failure (a write fails for one subject) stays a per-subject failure: exit 1,
    # failures.tsv names it, the other subjects finish; a rerun completes only the missing one
    real_save = apply_mod._save

    def flaky_save(arr, vol, path, ndim):
        if "sub-s1_" in Path(path).name:
            raise OSError(f"{path}: disk full")
        return real_save(arr, vol, path, ndim)

    monkeypatch.setattr(apply_mod, "_save", flaky_save)
    out = tmp_path / "o2"
    assert main([*argv, str(out), "--threads", "1"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("warning: ")]  # the --allow-unvalidated warning
    # one line per failed subject (naming its table row), then the summary pointing at failures.tsv
    assert len(err) == 2 and "cohort.csv row 3" in err[0] and "disk full" in err[0], err
    assert "1 of 4 simulations failed" in err[1] and "failures.tsv" in err[1], err
    failures = pd.read_csv(out / "failures.tsv", sep="\t")
    assert list(failures["participant_id"]) == ["s1"] and "disk full" in failures["message"][0]
    assert not (out / "logits.tsv").exists()  # the run's tables are written once the cohort is complete
    kept = {p: p.read_bytes() for p in out.rglob("sub-s0_*")}
    monkeypatch.setattr(apply_mod, "_save", real_save)
    assert main([*argv, str(out), "--threads", "1"]) == 0
    assert sorted(pd.read_csv(out / "logits.tsv", sep="\t")["participant_id"]) == ["s0", "s1", "s2", "s3"]
    assert all(p.read_bytes() == raw for p, raw in kept.items())  # finished subjects were not redone
    assert (out / "sub-s1" / "anat" / "sub-s1_space-test_desc-remove_T1w.nii.gz").exists()


def test_apply_array_merge_keeps_ids_as_text(tmp_path):
    """The last array task joins the parts; ids like '01' stay '01' (they name the subjects' files)."""
    import pandas as pd

    from neurointerp.simulate.apply import apply_simulator

    cohort, simulator, clf = _tiny_apply_inputs(tmp_path)
    frame = pd.read_csv(cohort)
    frame["participant_id"] = ["01", "02", "003", "04"]
    frame.to_csv(cohort, index=False)
    for k in range(2):
        apply_simulator(cohort, simulator, clf, tmp_path / "out", threads=1, array_index=k, array_size=2, allow_unvalidated=True)
    ids = ["003", "01", "02", "04"]
    for name in ("logits.tsv", "fields.tsv"):
        merged = pd.read_csv(tmp_path / "out" / name, sep="\t", dtype=str)
        assert sorted(merged["participant_id"]) == ids, name
    fields = pd.read_csv(tmp_path / "out" / "fields.tsv", sep="\t", dtype=str)
    # paths in the table resolve from the table's folder, not from the working directory
    assert all((tmp_path / "out" / f).exists() and not Path(f).is_absolute() and f"sub-{p}_" in Path(f).name for p, f in zip(fields["participant_id"], fields["field"]))


def test_population_field_is_added_per_task_and_kept_in_the_checkpoint(tmp_path):
    """phi = U-Net(X, t) + B_t: B starts at zero (identity start), B_0 acts on inject rows only,
    and a saved simulator reproduces it."""
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.checkpoint import load_simulator, save_simulator, simulator_dict

    torch.manual_seed(0)
    sim = Simulator((8, 6, 7), mode="warp", channels=[2, 4], fc=8, population_field=True).eval()
    assert sim.population.shape == (2, 3, 8, 6, 7) and float(sim.population.abs().max()) == 0.0
    x = torch.rand(2, 1, 8, 6, 7)
    t = torch.tensor([0.0, 1.0])
    with torch.no_grad():
        base_out, base_field = sim(x, t)
        sim.population[0, 2] = 1.0  # inject: one voxel along the last axis
        out, field = sim(x, t)
    assert torch.allclose(field[0] - base_field[0], torch.stack([torch.zeros(8, 6, 7)] * 2 + [torch.ones(8, 6, 7)]))
    assert torch.allclose(field[1], base_field[1]) and torch.allclose(out[1], base_out[1])
    assert torch.allclose(out[0], warp(x[:1], field[:1])[0])
    spec = InputSpec((8, 6, 7), np.eye(4), space="test")
    save_simulator(tmp_path / "s.pt", simulator_dict(sim, spec, {"sha256": "abc"}, {}, {}))
    loaded = load_simulator(tmp_path / "s.pt")
    assert loaded.model.config["population_field"] is True
    with torch.no_grad():
        assert torch.allclose(loaded.model(x, t)[0], out)
    with pytest.raises(ValueError, match="warp"):
        Simulator((8, 8), mode="image", channels=[2], fc=4, population_field=True)


def test_checkpoint_without_population_field_key_loads_as_the_plain_unet(tmp_path):
    """Simulators saved before the population field existed have no config key: they load unchanged."""
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.checkpoint import load_simulator, save_simulator, simulator_dict

    sim = Simulator((8, 6, 7), mode="warp", channels=[2, 4], fc=8).eval()
    ck = simulator_dict(sim, InputSpec((8, 6, 7), np.eye(4), space="test"), {"sha256": "abc"}, {}, {})
    ck["architecture"]["params"].pop("population_field")
    ck["architecture"]["params"].pop("interpolation")
    save_simulator(tmp_path / "old.pt", ck)
    loaded = load_simulator(tmp_path / "old.pt")
    assert loaded.model.population is None and loaded.model.config["interpolation"] == "linear"


@pytest.mark.parametrize("shape", [(20, 22, 18), (17, 15)])
def test_cubic_warp_is_scipys_cubic_spline_and_keeps_detail(shape):
    """warp(..., interpolation="cubic") equals scipy.ndimage.map_coordinates(order=3,
    mode="grid-constant") (the interpolating B-spline of the zero-extended image), reproduces the
    image at zero displacement, is differentiable in the field, and a half-voxel shift there and
    back loses far less than with linear interpolation."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    x = ndimage.gaussian_filter(rng.normal(size=shape), 1.0)
    xt = torch.tensor(x[None, None])
    u = torch.tensor(rng.normal(0, 0.7, (1, len(shape)) + shape), requires_grad=True)
    y = warp(xt, u, interpolation="cubic")
    ref = ndimage.map_coordinates(x, np.indices(shape) + u.detach()[0].numpy(), order=3, mode="grid-constant")
    assert np.abs(y.detach()[0, 0].numpy() - ref).max() < 1e-4 * np.abs(x).max()
    y.sum().backward()
    assert torch.isfinite(u.grad).all() and float(u.grad.abs().sum()) > 0
    assert float((warp(xt, torch.zeros_like(u), interpolation="cubic") - xt).abs().max()) < 1e-4 * np.abs(x).max()
    half = torch.full_like(u, 0.5).detach()
    inner = (0, 0) + (slice(3, -3),) * len(shape)
    loss = {m: float((warp(warp(xt, half, interpolation=m), -half, interpolation=m) - xt)[inner].norm() / xt[inner].norm()) for m in ("linear", "cubic")}
    assert loss["cubic"] < 0.1 < 0.25 < loss["linear"]
    with pytest.raises(ValueError, match="interpolation"):
        warp(xt, u, interpolation="spline")
    with pytest.raises(ValueError, match="zeros"):
        warp(xt, u, padding_mode="border", interpolation="cubic")


def test_cubic_warp_matches_ants_bspline_on_the_written_field(tmp_path):
    """A field written by save_field, applied by ANTs with interpolator="bSpline", gives the cubic
    simulator's image (away from the border, where ANTs extends the image differently)."""
    import nibabel as nib
    from scipy import ndimage

    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    ants = pytest.importorskip("ants")
    rng = np.random.default_rng(0)
    shape = (20, 22, 18)
    x = ndimage.gaussian_filter(rng.normal(size=shape), 1.5).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-20, -22, -18]
    u = ndimage.gaussian_filter(rng.normal(0, 3, (3,) + shape), (0, 3, 3, 3))
    nib.save(nib.Nifti1Image(x, affine), str(tmp_path / "x.nii.gz"))
    save_field(u, affine, tmp_path / "u.nii.gz")
    a = ants.image_read(str(tmp_path / "x.nii.gz"))
    ref = ants.apply_transforms(a, a, [str(tmp_path / "u.nii.gz")], interpolator="bSpline").numpy()
    ours = warp(torch.tensor(x[None, None]).double(), torch.tensor(u[None]), interpolation="cubic")[0, 0].numpy()
    inner = (slice(4, -4),) * 3
    assert np.abs(ref - ours)[inner].max() < 1e-3 * np.abs(x).max()
