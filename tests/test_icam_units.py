"""ICAM building blocks: rejection sampling, the loss terms of Eq. 5, 2D/3D networks, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


class _SumClassifier(torch.nn.Module):
    """``classify(z) = sum(z) + bias``: class 1 iff the sum of the latent exceeds ``-bias``."""

    def __init__(self, bias=0.0):
        super().__init__()
        self.bias = bias

    def classify(self, z):
        return z.reshape(z.shape[0], -1).sum(1, keepdim=True) + self.bias


def test_rejection_sampling_returns_vectors_of_the_wanted_class():
    from neurointerp.simulate.icam.sampling import rejection_sample

    target = torch.tensor([0, 1, 1, 0, 1] * 20)
    gen = torch.Generator().manual_seed(0)
    z, ok, draws = rejection_sample(_SumClassifier(), target, (4, 4), max_draws=100, generator=gen)
    assert z.shape == (100, 4, 4) and bool(ok.all())
    assert torch.equal((z.reshape(100, -1).sum(1) > 0).long(), target)
    # half the prior mass is on each side: about 2 draws per accepted vector
    assert 1.5 < float(draws.float().mean()) < 2.6
    # accepted vectors are prior draws conditioned on the class, not pushed past the boundary
    assert abs(float(z[target == 1].reshape(-1, 16).sum(1).mean()) - math.sqrt(16) * math.sqrt(2 / math.pi)) < 0.6
    # same generator seed -> same draws
    z2, _, _ = rejection_sample(_SumClassifier(), target, (4, 4), max_draws=100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, z2)


def test_rejection_sampling_gives_up_and_test_time_sampling_raises():
    from neurointerp.simulate.icam.sampling import RejectionError, rejection_sample, sample_class

    z, ok, draws = rejection_sample(_SumClassifier(bias=-1e6), torch.tensor([1, 0]), (2, 2), max_draws=50)
    assert ok.tolist() == [False, True] and int(draws[0]) == 50
    with pytest.raises(RejectionError, match="no attribute vector of class 1 in 50 draws"):
        sample_class(_SumClassifier(bias=-1e6), torch.tensor([1, 0]), (2, 2), max_draws=50)


def test_loss_terms_against_hand_computation():
    from neurointerp.simulate.icam import losses as L

    logit = torch.tensor([[0.3], [-1.2]])
    d = torch.sigmoid(logit)
    # Eq. 1, encoder side: -(log D + log(1 - D)) / 2
    assert torch.allclose(L.content_adversarial(logit), (-(d.log() + (1 - d).log()) / 2).mean())
    assert torch.allclose(L.bce(logit, torch.tensor([1.0, 0.0])), -(d[0].log() + (1 - d[1]).log()).sum() / 2)
    mu, lv = torch.zeros(3, 2, 2), torch.zeros(3, 2, 2)
    assert float(L.kl_normal(mu, lv)) == 0.0
    mu[0, 0, 0], lv[1, 1, 1] = 2.0, math.log(4.0)
    # KL per sample: 0.5 (mu^2 + var - 1 - log var) summed over the latent; mean over 3 samples
    expected = (0.5 * 4.0 + 0.5 * (4.0 - 1.0 - math.log(4.0))) / 3
    assert abs(float(L.kl_normal(mu, lv)) - expected) < 1e-6
    assert set(L.LAMBDAS) >= {"content_adv", "domain_adv", "domain_bce", "attr_bce", "kl", "fa_map", "latent", "rec"}


@pytest.mark.parametrize("shape,latent", [((32, 32), (8, 8)), ((16, 16, 16), (2, 2, 2)), ((32, 24), (8, 6))])
def test_networks_2d_3d_with_a_spatial_attribute_latent(shape, latent):
    from neurointerp.simulate.icam.networks import ICAM, AttributeClassifier

    torch.manual_seed(0)
    m = ICAM(shape, channels=4).eval()
    assert m.latent_shape == latent  # a 2D / 3D latent, not a 1D vector
    x = torch.randn(2, 1, *shape)
    c = m.enc_c(x)
    mu, lv = m.enc_a(x)
    assert c.shape == (2, 16) + tuple(s // 4 for s in shape)
    assert mu.shape == lv.shape == (2,) + latent
    assert m.gen(c, mu).shape == x.shape
    rf, cls = m.dis(x)
    assert cls.shape == (2, 1) and rf.shape[:2] == (2, 1) and m.dis_c(c).shape == (2, 1)
    assert torch.allclose(AttributeClassifier(m.enc_a)(x), m.attribute_logit(x))
    # content noise only in training mode
    assert torch.equal(m.enc_c(x), c)
    with pytest.raises(ValueError, match="multiple of 4"):
        ICAM((30, 32))


def test_fit_refuses_one_class_and_checkpoint_round_trip(tmp_path):
    from neurointerp.errors import InputError
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.icam.checkpoint import icam_dict, load_icam, save_icam
    from neurointerp.simulate.icam.train import fit_icam

    x = torch.randn(8, 1, 16, 16)
    with pytest.raises(InputError, match="both classes"):
        fit_icam(x, np.zeros(8), epochs=1)
    with pytest.raises(InputError, match="unknown ICAM loss weight"):
        fit_icam(x, np.arange(8) % 2, epochs=1, lambdas={"nope": 1.0})
    m, hist = fit_icam(x, np.arange(8) % 2, epochs=1, batch_size=4, channels=4, seed=0)
    assert len(hist) == 1 and np.isfinite(hist[0]["loss_g"])
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-15, -15, 0]
    spec = InputSpec((16, 16), aff, space="synthetic", normalize="zscore")
    path = save_icam(tmp_path / "icam.pt", icam_dict(m, spec, ["hc", "pt"], {"seed": 0}, {"history": hist}))
    raw = torch.load(str(path), weights_only=True)  # plain containers and tensors only
    assert raw["format"] == "neurointerp-icam" and raw["tool_version"] and raw["input"]["shape"] == [16, 16]
    loaded = load_icam(path)
    assert loaded.classes == ["hc", "pt"] and np.allclose(loaded.spec.affine, aff) and loaded.spec.normalize == "zscore"
    with torch.no_grad():
        assert torch.allclose(loaded.model.attribute_logit(x), m.attribute_logit(x))
    torch.save({"format": "neurointerp-classifier", "format_version": 1}, str(tmp_path / "clf.pt"))
    with pytest.raises(InputError, match="not a neurointerp ICAM checkpoint .*'neurointerp-classifier'"):
        load_icam(tmp_path / "clf.pt")


def test_3d_training_and_single_image_translation():
    from neurointerp.simulate.icam.apply import translate
    from neurointerp.simulate.icam.train import fit_icam

    x = torch.randn(4, 1, 16, 16, 16)
    m, hist = fit_icam(x, np.array([0, 1, 0, 1]), epochs=1, batch_size=4, channels=2, seed=0)
    assert m.latent_shape == (2, 2, 2) and np.isfinite(hist[0]["loss_g"])
    r = translate(m, x[:2], n_samples=3, seeds=[5, 6], keep_samples=True)
    assert r["mean"].shape == r["variance"].shape == (2, 16, 16, 16) and r["samples"].shape == (2, 3, 16, 16, 16)
    assert np.allclose(r["mean"], (r["samples"] - x[:2, 0].numpy()[:, None]).mean(1), atol=1e-5)
    assert np.allclose(r["variance"], (r["samples"] - x[:2, 0].numpy()[:, None]).var(1), atol=1e-4)
    assert (r["target"] == 1 - r["predicted"]).all()
    # per-image seeds: the same image gets the same draws whatever batch it is in
    r1 = translate(m, x[1:2], n_samples=3, seeds=[6])
    assert np.allclose(r1["mean"][0], r["mean"][1], atol=1e-5)
