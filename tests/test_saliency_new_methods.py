"""saliency and evaluate end to end with the issue-23 methods (a 2D Gaussian cohort, a quickly
trained model): references drawn from the cohort and recorded, parameters resolved in the
sidecars, resumable runs, and every method evaluated."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from neurointerp.attribution.pipeline import run_saliency
from neurointerp.errors import InputError
from neurointerp.evaluate.run import run_evaluate
from neurointerp.io import read_cohort
from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
from neurointerp.models.classifier import ConvClassifier
from neurointerp.models.inputs import InputSpec
from neurointerp.synth.gaussians import make_gaussians, synth_gaussians
from neurointerp.train.arrays import fit_binary_on_arrays

NEW = ["optimised-perturbation", "swap-test", "lime", "kernel-shap", "deeplift", "gradient-shap"]
SMALL = dict(iterations=20, n_samples=40, segments="supervoxels", n_segments=8, window=8, stride=8, swap_references=2, samples=4)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("new")
    data = make_gaussians("magnitude", n_per_group=128, seed=0)
    torch.manual_seed(0)
    model = ConvClassifier((32, 32), channels=(4, 8), kernel_size=3, hidden=(8,))
    fit_binary_on_arrays(model, torch.from_numpy(data.images[:, None]), torch.from_numpy(data.labels.astype(np.float32)), epochs=15, batch_size=32, lr=3e-3)
    spec = InputSpec((32, 32), np.eye(4), space="synthetic")
    save_checkpoint(root / "model.pt", checkpoint_dict(model, spec, "binary", ["0", "1"], "simnet2d", {"participant_ids": []}, {}))
    synth_gaussians(root / "test", variant="magnitude", n_per_group=4, seed=9)
    return root


@pytest.mark.slow
def test_saliency_writes_the_new_methods_and_resumes(setup):
    root = setup
    cohort = root / "test" / "cohort.csv"
    out = run_saliency(root / "model.pt", cohort, root / "sal", method=NEW, atlas="none", seed=3, **SMALL, allow_unvalidated=True)
    table = read_cohort(cohort)
    pid = table.participant_ids[0]
    side = {}
    for m in NEW:
        desc = m.replace("-", "")
        path = out / f"sub-{pid}" / "anat" / f"sub-{pid}_space-synthetic_desc-{desc}_attribution.json"
        side[m] = json.loads(path.read_text())
        assert side[m]["Score"] == "logit"
    assert side["lime"]["Parameters"]["n_samples"] == 40 and side["lime"]["Parameters"]["ridge"] == 1.0  # default, resolved
    assert side["optimised-perturbation"]["Parameters"]["lambda1"] == 0.01 and side["optimised-perturbation"]["Parameters"]["seed"] == 3
    ref = side["swap-test"]["References"]
    assert len(ref["participants"]) == 2 and pid not in ref["participants"] and ref["table"] == str(cohort)
    labels = dict(zip(table.participant_ids, table.frame["label"].astype(str)))
    target = side["swap-test"]["TargetClass"]
    assert all(labels[p] != target for p in ref["participants"])  # partners of the other class
    stamp = {m: (out / f"sub-{pid}" / "anat" / f"sub-{pid}_space-synthetic_desc-{m.replace('-', '')}_attribution.nii.gz").stat().st_mtime_ns for m in NEW}
    run_saliency(root / "model.pt", cohort, root / "sal", method=NEW, atlas="none", seed=3, **SMALL, allow_unvalidated=True)  # complete: skipped
    for m in NEW:
        assert (out / f"sub-{pid}" / "anat" / f"sub-{pid}_space-synthetic_desc-{m.replace('-', '')}_attribution.nii.gz").stat().st_mtime_ns == stamp[m]
    with pytest.raises(InputError, match="needs an atlas"):
        run_saliency(root / "model.pt", cohort, root / "sal2", method=["kernel-shap"], atlas="none", allow_unvalidated=True)
    assert not (root / "sal2").exists()


@pytest.mark.slow
def test_evaluate_runs_every_new_method(setup):
    root = setup
    params = {k: v for k, v in SMALL.items()}
    path = run_evaluate(root / "model.pt", root / "test" / "cohort.csv", root / "eval", method=NEW, ground_truth="truth", n_subjects=4, samples=8, sensitivity_samples=2, params=params, atlas="none", allow_unvalidated=True)
    metrics = pd.read_csv(path, sep="\t")
    assert list(metrics["method"]) == NEW
    assert metrics[["infidelity", "deletion_auc", "ncc_truth"]].notna().all().all()
    assert metrics["randomisation_flag"].isin([True, False]).all()
    with pytest.raises(InputError, match="--param nonsense"):
        run_evaluate(root / "model.pt", root / "test" / "cohort.csv", root / "eval2", method=NEW, params={"nonsense": 1}, allow_unvalidated=True)
