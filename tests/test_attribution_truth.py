"""The issue-23 methods recover the planted effect of the magnitude Gaussians (synth gaussians,
papers/simulator-networks-jacobian.txt §4.1) better than chance.

Patients are explained for the patient class: their evidence is the larger magnitude of the
off-diagonal Gaussians B and C (the ground truth), half of the image. Chance is a map with its
voxels shuffled: NCC about 0 and mass in B+C about 0.5; every method must beat the 99th
percentile of 200 shuffles on NCC and put at least 60% of its mass in B+C.
"""

import numpy as np
import pytest
import torch

from neurointerp.attribution import attribute
from neurointerp.attribution.reference import ReferenceSet
from neurointerp.evaluate.metrics import mass_in_mask, ncc
from neurointerp.models.classifier import ConvClassifier
from neurointerp.synth.gaussians import BLOCK, _BLOCK_ORIGIN, block_masks, make_gaussians
from neurointerp.train.arrays import fit_binary_on_arrays


@pytest.fixture(scope="module")
def trained():
    data = make_gaussians("magnitude", n_per_group=256, seed=0)
    x = torch.from_numpy(data.images[:, None])
    y = torch.from_numpy(data.labels.astype(np.float32))
    torch.manual_seed(0)
    model = ConvClassifier((32, 32), channels=(2, 4, 8), kernel_size=3, hidden=(16,))
    fit_binary_on_arrays(model, x, y, epochs=30, batch_size=64, lr=3e-3)
    test = make_gaussians("magnitude", n_per_group=16, seed=1)
    with torch.inference_mode():
        acc = ((model(torch.from_numpy(test.images[:, None]))[:, 0] > 0).long().numpy() == test.labels).mean()
    assert acc > 0.85
    patients = torch.from_numpy(test.images[test.labels == 1][:, None])
    idx = np.random.default_rng(0).permutation(len(x))[:64]  # reference subjects from the training set
    reference = ReferenceSet(x[idx], torch.from_numpy(data.labels[idx].astype(np.int64)), [str(i) for i in idx])
    blocks = np.zeros((32, 32), int)  # the "atlas": the four blocks
    for k in range(4):
        r0, c0 = _BLOCK_ORIGIN[k].astype(int)
        blocks[r0 : r0 + BLOCK, c0 : c0 + BLOCK] = k + 1
    return model, patients, reference, blocks, np.abs(test.group_truth)


CASES = [
    ("optimised-perturbation", {"iterations": 100}),
    ("optimised-perturbation", {"iterations": 100, "perturbation": "constant", "mask_scale": 2, "jitter": 1}),
    ("swap-test", {"window": 8, "stride": 4}),
    ("swap-test", {"swap_by": "atlas"}),
    ("lime", {"n_samples": 200}),
    ("lime", {"segments": "supervoxels", "n_segments": 16, "n_samples": 200}),
    ("kernel-shap", {"n_samples": 200}),
    ("kernel-shap", {"segments": "supervoxels", "n_segments": 16, "n_samples": 200}),
    ("deeplift", {}),
    ("gradient-shap", {}),
    ("gradient-shap", {"baseline": "reference"}),
]


@pytest.mark.parametrize("method,params", CASES, ids=[f"{m}-{'-'.join(f'{k}={v}' for k, v in p.items())}" for m, p in CASES])
def test_new_methods_find_the_planted_effect(trained, method, params):
    model, patients, reference, blocks, truth = trained
    maps, rec = attribute(model, patients, method, target=1, regions=blocks, reference_set=reference, **params)
    assert rec["Targets"] == [1] * len(patients)
    mean_abs = np.abs(maps).mean(axis=0)
    score = ncc(mean_abs, truth)
    rng = np.random.default_rng(0)
    chance = [ncc(rng.permutation(mean_abs.ravel()).reshape(mean_abs.shape), truth) for _ in range(200)]
    assert score > np.quantile(chance, 0.99) and score > 0.2, (score, np.quantile(chance, 0.99))
    assert mass_in_mask(mean_abs, block_masks()["offdiagonal"]) > 0.6
