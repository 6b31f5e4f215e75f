"""VA-GAN building blocks: WGAN-GP losses against hand values and an explicit computation of the
gradient penalty, networks, training bookkeeping, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def test_losses_against_hand_values():
    from neurointerp.simulate.vagan import losses as L

    d_real = torch.tensor([1.0, 3.0])  # E = 2
    d_fake = torch.tensor([-1.0, 0.0, 4.0])  # E = 1
    assert float(L.critic_loss(d_real, d_fake)) == pytest.approx(1.0 - 2.0)  # E[D(fake)] - E[D(real)]
    assert float(L.generator_loss(d_fake)) == pytest.approx(-1.0)
    m = torch.tensor([[[[0.5, -1.5], [0.0, 2.0]]]])
    assert float(L.map_l1(m)) == pytest.approx((0.5 + 1.5 + 0.0 + 2.0) / 4)
    assert L.LAMBDAS == {"map": 100.0, "gp": 10.0}  # the authors' l1_map_weight and gradient-penalty scale


class _Linear(torch.nn.Module):
    """``D(x) = <w, x> + b``: its gradient is ``w`` everywhere, so the penalty is ``(|w| - 1)^2``."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).reshape(x.shape[0], -1).sum(1) + 0.3


def test_gradient_penalty_of_a_linear_critic_is_hand_computable():
    from neurointerp.simulate.vagan.losses import gradient_penalty

    w = torch.zeros(1, 1, 4, 4)
    w[0, 0, 1, 2], w[0, 0, 3, 0] = 3.0, 4.0  # |w| = 5 over *all* voxels (not one axis)
    critic = _Linear(w)
    real, fake = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    gp = gradient_penalty(critic, real, fake)
    assert float(gp.detach()) == pytest.approx((5.0 - 1.0) ** 2, rel=1e-6)
    # the penalty trains the critic: d/dw (|w| - 1)^2 = 2 (|w| - 1) w / |w|
    gp.backward()
    assert torch.allclose(critic.w.grad, 2 * (5.0 - 1.0) * w / 5.0, atol=1e-5)


def test_gradient_penalty_equals_an_explicit_per_sample_computation():
    from neurointerp.simulate.vagan.losses import gradient_penalty
    from neurointerp.simulate.vagan.networks import Critic

    torch.manual_seed(0)
    critic = Critic(2, channels=4, levels=2).double()
    real, fake = torch.randn(4, 1, 16, 16, dtype=torch.float64), torch.randn(4, 1, 16, 16, dtype=torch.float64)
    eps = torch.tensor([0.0, 0.25, 0.6, 1.0], dtype=torch.float64)
    gp = float(gradient_penalty(critic, real, fake, eps=eps).detach())
    # explicit: one sample at a time, gradient by central finite differences (no autograd at all)
    h = 1e-6
    terms = []
    for i in range(4):
        xh = (eps[i] * real[i] + (1 - eps[i]) * fake[i])[None].clone()
        g = torch.zeros_like(xh).reshape(-1)
        flat = xh.reshape(-1)
        with torch.no_grad():
            for j in range(flat.numel()):
                up, dn = flat.clone(), flat.clone()
                up[j] += h
                dn[j] -= h
                g[j] = (critic(up.reshape(xh.shape)) - critic(dn.reshape(xh.shape)))[0] / (2 * h)
        terms.append((float(g.norm()) - 1.0) ** 2)
    assert gp == pytest.approx(float(np.mean(terms)), rel=1e-5)


@pytest.mark.parametrize("shape", [(32, 32), (16, 16, 16), (32, 24)])
def test_networks_2d_3d(shape):
    from neurointerp.simulate.vagan.networks import VAGAN

    torch.manual_seed(0)
    m = VAGAN(shape, channels=4, levels=2 if len(shape) == 3 else 3).eval()
    x = torch.randn(2, 1, *shape)
    mp, y = m(x)
    assert mp.shape == x.shape and torch.allclose(y, x + mp)
    assert m.critic(x).shape == (2,)
    assert not any(isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) for mod in m.critic.modules())  # per-sample gradient penalty
    with pytest.raises(ValueError, match="multiple of 8"):
        VAGAN((36, 32))


def test_fit_history_and_checkpoint_round_trip(tmp_path):
    from neurointerp.errors import InputError
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.icam.checkpoint import icam_dict, save_icam
    from neurointerp.simulate.icam.networks import ICAM
    from neurointerp.simulate.vagan.apply import vagan_maps
    from neurointerp.simulate.vagan.checkpoint import load_vagan, save_vagan, vagan_dict
    from neurointerp.simulate.vagan.train import fit_vagan

    x = torch.randn(12, 1, 16, 16)
    labels = np.array([0, 1] * 6)
    with pytest.raises(InputError, match="both classes"):
        fit_vagan(x, np.zeros(12), epochs=1)
    with pytest.raises(InputError, match="unknown VA-GAN loss weight"):
        fit_vagan(x, labels, epochs=1, lambdas={"nope": 1.0})
    m, hist = fit_vagan(x, labels, epochs=2, batch_size=4, channels=2, levels=2, critic_iters=2, critic_iters_long=3, warmup=1, seed=0)
    # 6 source images, batch 4: 2 generator steps per epoch; critic steps 3 (warm-up) + 2 + 2 + 2
    assert [h["generator_steps"] for h in hist] == [2, 4]
    assert all(np.isfinite(v) for h in hist for v in h.values())
    m2, _ = fit_vagan(x, labels, epochs=2, batch_size=4, channels=2, levels=2, critic_iters=2, critic_iters_long=3, warmup=1, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))  # same seed, same model
    spec = InputSpec((16, 16), np.diag([2.0, 2.0, 2.0, 1.0]), space="synthetic", normalize="zscore")
    path = save_vagan(tmp_path / "vagan.pt", vagan_dict(m, spec, ["hc", "pt"], 1, {"seed": 0}, {"history": hist}))
    raw = torch.load(str(path), weights_only=True)
    assert raw["format"] == "neurointerp-vagan" and raw["source"] == 1 and raw["architecture"]["params"]["levels"] == 2
    loaded = load_vagan(path)
    assert loaded.source_class == "pt" and loaded.target_class == "hc" and np.allclose(loaded.spec.affine, spec.affine)
    a, b = vagan_maps(m, x), vagan_maps(loaded.model, x)
    assert np.array_equal(a["map"], b["map"]) and np.allclose(a["translated"], x[:, 0].numpy() + a["map"], atol=1e-6)
    # an ICAM checkpoint is refused with its format named
    save_icam(tmp_path / "icam.pt", icam_dict(ICAM((16, 16), channels=2), spec, ["hc", "pt"], {}, {}))
    with pytest.raises(InputError, match="not a neurointerp VA-GAN checkpoint .*'neurointerp-icam'"):
        load_vagan(tmp_path / "icam.pt")
