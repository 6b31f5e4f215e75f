"""VA-GAN on synthetic lesions: the map M(x) of a lesion image (lesion -> healthy, the paper's one
direction) lies on the subject's own lesions -- better than chance, i.e. better than the same
maps scored against other lesion subjects' masks (which keeps the population's lesion sites)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.mark.slow
def test_vagan_map_recovers_the_planted_lesions_better_than_chance():
    from neurointerp.simulate.vagan.experiment import lesion_experiment_vagan

    # 64 + 64 training images, 30 epochs (120 generator steps, 5 critic steps each; 25 in the
    # first 10), the authors' loss weights (L1 100, gradient penalty 10)
    r = lesion_experiment_vagan(n_per_group=64, n_test_per_group=24, epochs=30, warmup=10, critic_iters_long=25, channels=8, seed=0)
    ncc = r["ncc"]["vagan"]["ncc_minus"]
    chance = r["ncc_minus_chance"]
    assert ncc["n"] == 24 and r["ncc"]["vagan"]["ncc_plus"]["n"] == 0  # one direction only: NCC(+) N/A
    assert ncc["mean"] > 0.1 and ncc["mean"] > chance["mean"] + 0.05, (ncc, chance)
    assert r["critic_gain"] > 0  # x + M(x) scores higher (more "healthy") than x under the critic
