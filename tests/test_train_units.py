"""Unit tests of the training building blocks: models, augmentation, splits, metrics, checkpoints."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from neurointerp.errors import InputError
from neurointerp.models.checkpoint import checkpoint_dict, load_checkpoint, read_checkpoint, save_checkpoint
from neurointerp.models.classifier import ARCHITECTURES, ConvClassifier, build_classifier
from neurointerp.models.inputs import InputSpec
from neurointerp.train.augment import Augmentation, augment_batch, random_theta
from neurointerp.train.metrics import balanced_accuracy, binary_auc, classification_metrics
from neurointerp.train.splits import stratified_group_kfold


# ---------------------------------------------------------------- models
@pytest.mark.parametrize(
    "name, shape, n_features",
    [
        ("simnet2d", (32, 32), 128),  # simulator-networks §4.1: 128 features
        ("cas2d", (32, 32), 32),  # confounder-aware-saliency §3.1: 32 features
        ("cas3d", (64, 64, 64), 4096),  # confounder-aware-saliency §3.2: 4096 features
        ("simnet3d", (24, 28, 20), 16 * 1 * 1 * 1),
    ],
)
def test_architectures_feature_boundary(name, shape, n_features):
    torch.manual_seed(0)
    model = build_classifier(name, shape, n_outputs=1)
    assert model.n_features == n_features
    assert int(np.prod(model.feature_shape)) == n_features
    x = torch.randn(2, 1, *shape)
    f = model.features(x)
    assert f.shape == (2, n_features)
    # the forward pass is exactly predictor(encoder(x)): the boundary can be gated by name
    assert torch.allclose(model(x), model.predictor(model.encoder(x)))
    assert model(x).shape == (2, 1)
    names = dict(model.named_modules())
    assert "encoder" in names and "predictor" in names and "predictor.out" in names
    # non-linearities are separate modules (hook-based attribution needs them)
    acts = [m for m in model.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.Tanh))]
    assert len(acts) == len(ARCHITECTURES[name]["channels"]) + len(ARCHITECTURES[name]["hidden"])
    assert len({id(a) for a in acts}) == len(acts)


def test_model_config_roundtrip_and_l2():
    model = build_classifier("cas2d", (32, 32), n_outputs=3, hidden=(8,))
    clone = ConvClassifier.from_config(model.config)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(3, 1, 32, 32)
    assert torch.equal(model(x), clone(x))
    expected = sum(float((m.weight.detach() ** 2).sum()) for m in model.predictor if isinstance(m, torch.nn.Linear))
    assert model.l2_penalty().item() == pytest.approx(expected, rel=1e-5)


def test_too_small_grid_is_an_input_error():
    with pytest.raises(InputError, match="too small"):
        build_classifier("simnet3d", (8, 8, 8), n_outputs=1)


# ---------------------------------------------------------------- augmentation
def test_theta_whole_voxel_shift_is_exact():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 1, 9, 10, 11)
    theta = random_theta(6, (9, 10, 11), shift=1.0, rotation=0.0, generator=g)
    grid = torch.nn.functional.affine_grid(theta, x.shape, align_corners=False)
    y = torch.nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="border")
    sizes = torch.tensor([11, 10, 9], dtype=torch.float32)  # theta is in (x, y, z) = reversed axes
    for i in range(6):
        shifts = (theta[i, :, 3] * sizes / 2).round().int().tolist()[::-1]  # voxels along axes 0, 1, 2
        assert all(s in (-1, 0, 1) for s in shifts)
        core = tuple(slice(1, -1) for _ in range(3))
        expected = torch.roll(x[i, 0], shifts=[-s for s in shifts], dims=(0, 1, 2))
        assert torch.allclose(y[i, 0][core], expected[core], atol=1e-5)


def test_augment_rotation_small_flip_and_seeded():
    x = torch.rand(4, 1, 16, 16, 16)
    aug = Augmentation(shift=1.0, rotation=1.0, flip=True, lr_axis=0)
    a = augment_batch(x, aug, torch.Generator().manual_seed(1))
    b = augment_batch(x, aug, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)  # same generator state, same augmentation
    assert a.shape == x.shape
    # flip only: each sample is either unchanged or mirrored along the left-right axis
    f = augment_batch(x, Augmentation(shift=0, rotation=0, flip=True, lr_axis=2), torch.Generator().manual_seed(0))
    for i in range(4):
        assert torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(3))
    # rotation only (1 degree): the image barely changes
    r = augment_batch(x, Augmentation(shift=0, rotation=1.0), torch.Generator().manual_seed(0))
    assert float((r - x)[:, :, 3:-3, 3:-3, 3:-3].abs().mean()) < 0.1


def test_hemisphere_crop_follows_the_affine():
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])  # LAS: voxel x increases towards the left
    left = InputSpec(shape=(10, 8, 6), affine=affine, hemisphere="left")
    right = InputSpec(shape=(10, 8, 6), affine=affine, hemisphere="right")
    assert left.lr_axis == 0 and left.crop[0] == (5, 10) and right.crop[0] == (0, 5)
    assert left.model_shape == (5, 8, 6)
    data = np.random.default_rng(0).random((2, 10, 8, 6)).astype(np.float32)
    x = left.prepare(data)
    assert x.shape == (2, 1, 5, 8, 6)
    back = left.uncrop(x[:, 0])
    assert np.array_equal(back[:, 5:], data[:, 5:]) and not back[:, :5].any()


# ---------------------------------------------------------------- splits and metrics
def test_stratified_group_kfold_keeps_participants_together():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"p{i}" for i in range(30)], rng.integers(1, 4, size=30))
    labels_of = {f"p{i}": ("a" if i < 12 else "b") for i in range(30)}
    strata = [labels_of[g] for g in groups]
    folds = stratified_group_kfold(groups, strata, n_folds=5, seed=1)
    for g in set(groups):
        assert len(set(folds[groups == g])) == 1
    for k in range(5):
        parts = {labels_of[g] for g in set(groups[folds == k])}
        assert parts == {"a", "b"}
    assert np.array_equal(folds, stratified_group_kfold(groups, strata, n_folds=5, seed=1))
    with pytest.raises(InputError, match="fewer than the folds"):
        stratified_group_kfold(groups[:3], strata[:3], n_folds=5)


def test_metrics_against_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) * 0.6 + 0.3 * y, 2)  # ties on purpose
    assert binary_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s))
    pred = (s >= 0.5).astype(int)
    assert balanced_accuracy(y, pred) == pytest.approx(sk.balanced_accuracy_score(y, pred))
    y3 = rng.integers(0, 3, 150)
    p3 = rng.dirichlet([1, 1, 1], 150)
    p3[np.arange(150), y3] += 0.3
    p3 /= p3.sum(1, keepdims=True)
    m = classification_metrics(y3, p3, "multiclass")
    assert m["auc"] == pytest.approx(sk.roc_auc_score(y3, p3, multi_class="ovr", average="macro"))
    assert np.isnan(binary_auc(np.zeros(5), np.arange(5)))


# ---------------------------------------------------------------- checkpoints
def _small_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_classifier("simnet2d", (32, 32), 1)
    spec = InputSpec(shape=(32, 32), affine=np.diag([1.0, 1.0, 1.0, 1.0]), space="synthetic")
    contents = checkpoint_dict(
        model, spec, "binary", ["0", "1"], "simnet2d",
        training={"participant_ids": ["g1", "g2"], "config_hash": "x"}, metrics={"heldout": {"auc": 0.9}},
    )
    return model, save_checkpoint(tmp_path / "model.pt", contents)


def test_checkpoint_roundtrip(tmp_path):
    model, path = _small_checkpoint(tmp_path)
    loaded = load_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k])
    assert loaded.task == "binary" and loaded.classes == ["0", "1"] and loaded.positive_class == "1"
    assert loaded.shape == (32, 32) and loaded.space == "synthetic"
    assert np.array_equal(loaded.affine, np.eye(4))
    assert loaded.participant_ids == ["g1", "g2"]
    assert loaded.meta["architecture"]["name"] == "simnet2d"
    assert loaded.meta["metrics"]["heldout"]["auc"] == 0.9
    x = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    assert loaded.features(x).shape == (3, 128)
    p = loaded.predict(x)
    assert p.shape == (3,) and np.all((p > 0) & (p < 1))


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['NI_TEST_PWNED']}",))


def test_malicious_checkpoint_is_refused(tmp_path, monkeypatch):
    pwned = tmp_path / "pwned"
    monkeypatch.setenv("NI_TEST_PWNED", str(pwned))
    # a zip-format torch file whose pickle runs os.system on load
    bad = tmp_path / "evil.pt"
    torch.save({"format": "neurointerp-classifier", "payload": _Exploit()}, str(bad))
    # and a plain (legacy) pickle
    legacy = tmp_path / "evil.pkl"
    legacy.write_bytes(pickle.dumps({"format": "neurointerp-classifier", "payload": _Exploit()}, protocol=2))
    for path in (bad, legacy):
        with pytest.raises(InputError, match="refused to load"):
            load_checkpoint(path)
        assert not pwned.exists()
    # a safe file that is not a checkpoint is refused too
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, str(other))
    with pytest.raises(InputError, match="not a neurointerp classifier checkpoint"):
        read_checkpoint(other)


def test_srun_tasks_join_one_process_group_or_are_refused(monkeypatch):
    """srun -n 2 without torchrun: the tasks take their rank from SLURM, or are told what is missing."""
    from neurointerp.errors import InputError
    from neurointerp.train.distributed import env_world

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID"):
        monkeypatch.delenv(var, raising=False)
    assert env_world() == (0, 1, 0)
    monkeypatch.setenv("SLURM_NTASKS", "4")  # the batch script of `sbatch -n 4` itself: not a step
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert env_world() == (0, 1, 0)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    with pytest.raises(InputError, match="MASTER_ADDR"):
        env_world()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29511")
    assert env_world() == (1, 2, 1)
    import os

    assert os.environ["RANK"] == "1" and os.environ["WORLD_SIZE"] == "2"
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # set by env_world, not by monkeypatch: undo by hand
        os.environ.pop(var)
    monkeypatch.setenv("WORLD_SIZE", "3")  # torchrun's variables win
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert env_world() == (2, 3, 0)
