import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from neurointerp.attribution import attribute
from neurointerp.evaluate.fidelity import continuity, deletion_auc, deletion_curve, infidelity, max_sensitivity
from neurointerp.evaluate.run import run_evaluate
from neurointerp.evaluate.sanity import cascading_randomisation, retraining_robustness
from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
from neurointerp.models.classifier import ConvClassifier
from neurointerp.models.inputs import InputSpec
from neurointerp.synth.gaussians import make_gaussians, synth_gaussians
from neurointerp.train.arrays import fit_binary_on_arrays


def test_infidelity_of_the_true_weights_of_a_linear_model_is_zero():
    torch.manual_seed(0)
    w = torch.randn(1, 1, 8, 8)
    f = lambda z: (z * w).flatten(1).sum(1) + 0.3  # noqa: E731
    x = torch.randn(3, 1, 8, 8)
    mask = torch.ones_like(x, dtype=torch.bool)
    exact = infidelity(f, x, w.expand_as(x), mask, samples=16)
    assert np.all(exact < 1e-10)
    wrong = infidelity(f, x, torch.randn_like(x), mask, samples=16)
    assert np.all(wrong > 0.5)
    assert np.allclose(infidelity(f, x, 3.0 * w.expand_as(x), mask, samples=16), 0, atol=1e-10)  # scale-free
    # deleting the most attributed voxels first lowers the score faster than a random order
    frac, good = deletion_curve(f, x, (w * x).detach(), mask)
    _, rand = deletion_curve(f, x, torch.randn_like(x), mask)
    assert np.all(deletion_auc(frac, good) < deletion_auc(frac, rand))
    assert np.allclose(good[:, 0], f(x).numpy())


def test_sensitivity_and_continuity_on_known_cases():
    x = torch.randn(4, 1, 6, 6)
    mask = torch.ones_like(x, dtype=torch.bool)
    assert np.allclose(max_sensitivity(lambda z: torch.ones_like(z), x, mask), 0.0)  # constant explainer
    assert np.all(max_sensitivity(lambda z: z, x, mask, epsilon=0.1) > 0)
    assert continuity(x, x) == pytest.approx(max(((x[i] - x[j]).abs().sum() / (x[i] - x[j]).norm()).item() for i in range(4) for j in range(i + 1, 4)))


@pytest.fixture(scope="module")
def trained2d():
    data = make_gaussians("magnitude", n_per_group=128, seed=0)
    x = torch.from_numpy(data.images[:, None])
    y = torch.from_numpy(data.labels.astype(np.float32))
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = ConvClassifier((32, 32), channels=(8, 16, 32), kernel_size=3, hidden=(16,))
        models.append(fit_binary_on_arrays(model, x, y, epochs=15, batch_size=32, lr=3e-3))
    return models, x


def test_randomisation_flags_guided_backprop_not_gradient(trained2d):
    models, x = trained2d
    xs = x[::16][:8]
    mask = np.ones((len(xs), 32, 32), bool)

    def explain(method):
        return lambda model, z: attribute(model, z, method, target=1)[0]

    layers, corr_g, flag_g, step = cascading_randomisation(explain("gradient"), models[0], xs, mask, seed=0)
    _, corr_gb, flag_gb, _ = cascading_randomisation(explain("guided-backprop"), models[0], xs, mask, seed=0)
    assert layers[: step + 1] == ["predictor.out", "predictor.fc1"]
    assert flag_gb and not flag_g, (corr_g, corr_gb)
    assert corr_gb[step] > corr_g[step] + 0.2
    # the original model's parameters are untouched
    again, _ = attribute(models[0], xs, "gradient", target=1)
    assert np.allclose(again, attribute(models[0], xs, "gradient", target=1)[0])
    rob = retraining_robustness([explain("gradient")(m, xs) for m in models], mask)
    assert -1 <= rob["retrain_correlation"] <= 1 and 0 <= rob["retrain_top_dice"] <= 1


def test_evaluate_command_is_deterministic(trained2d, tmp_path):
    models, _ = trained2d
    spec = InputSpec((32, 32), np.eye(4), space="synthetic")
    for k, m in enumerate(models):
        save_checkpoint(tmp_path / f"m{k}.pt", checkpoint_dict(m, spec, "binary", ["0", "1"], "simnet2d", {"participant_ids": []}, {}))
    synth_gaussians(tmp_path / "test", variant="magnitude", n_per_group=3, seed=9)
    kwargs = dict(method=["gradient", "gradxinput"], ground_truth="truth", n_subjects=4, samples=8, sensitivity_samples=3, extra_model=[tmp_path / "m1.pt"])
    run_evaluate(tmp_path / "m0.pt", tmp_path / "test" / "cohort.csv", tmp_path / "e1", **kwargs, allow_unvalidated=True)
    run_evaluate(tmp_path / "m0.pt", tmp_path / "test" / "cohort.csv", tmp_path / "e2", **kwargs, allow_unvalidated=True)
    a = pd.read_csv(tmp_path / "e1" / "metrics.tsv", sep="\t")
    b = pd.read_csv(tmp_path / "e2" / "metrics.tsv", sep="\t")
    pd.testing.assert_frame_equal(a, b)
    assert {"infidelity", "deletion_auc", "max_sensitivity", "continuity", "randomised_top_spearman", "randomised_all_spearman", "randomisation_flag", "retrain_correlation", "ncc_truth", "mass_in_truth"} <= set(a.columns)
    assert (tmp_path / "e1" / "evaluate.png").stat().st_size > 1000
    curves = pd.read_csv(tmp_path / "e1" / "deletion_curves.tsv", sep="\t")
    assert len(curves) == 2 * 11
