"""confound-test and confounder-free saliency, end to end on the width Gaussians."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from neurointerp.attribution.pipeline import run_saliency
from neurointerp.cli.app import main
from neurointerp.confound.run import run_confound_test
from neurointerp.errors import InputError
from neurointerp.io import load_image
from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
from neurointerp.models.classifier import ConvClassifier
from neurointerp.models.inputs import InputSpec
from neurointerp.synth.gaussians import block_masks, synth_gaussians
from neurointerp.train.arrays import fit_binary_on_arrays


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("conf")
    synth_gaussians(root / "train", variant="width", n_per_group=128, seed=0)
    synth_gaussians(root / "test", variant="width", n_per_group=8, seed=1)
    test = pd.read_csv(root / "test" / "cohort.csv")
    test["participant_id"] = ["t" + p for p in test["participant_id"]]  # other people than the training set
    test.to_csv(root / "test" / "cohort.csv", index=False)
    frame = pd.read_csv(root / "train" / "cohort.csv")
    x = torch.from_numpy(np.stack([load_image(root / "train" / p, ndim=2).data for p in frame["image"]])[:, None])
    y = torch.tensor(frame["label"].to_numpy(np.float32))
    torch.manual_seed(0)
    model = ConvClassifier((32, 32), channels=(8, 8, 2), kernel_size=2, hidden=(16,), activation="tanh")
    fit_binary_on_arrays(model, x, y, epochs=40, batch_size=32, lr=3e-3)
    spec = InputSpec((32, 32), np.eye(4), space="synthetic")
    ckpt = checkpoint_dict(model.eval(), spec, "binary", ["0", "1"], "cas2d", {"participant_ids": list(frame["participant_id"])}, {})
    save_checkpoint(root / "model.pt", ckpt)
    return root


def test_confound_test_then_confounder_free_saliency(setup):
    root = setup
    rc = main(["--quiet", "confound-test", str(root / "model.pt"), str(root / "train" / "cohort.csv"), str(root / "ct"), "--confounder", "sigma_B", "--confounder", "sigma_C", "--allow-unvalidated"])
    assert rc == 0
    mask = json.loads((root / "ct" / "mask.json").read_text())
    table = pd.read_csv(root / "ct" / "confound_glm.tsv", sep="\t")
    assert len(mask["mask"]) == 32 == len(table)
    assert {"t_sigma_B", "p_sigma_C", "beta_score", "confounded"} <= set(table.columns)
    assert 0 < sum(1 - np.array(mask["mask"])) < 32
    summary = json.loads((root / "ct" / "summary.json").read_text())
    assert summary["NConfounded"] == int(table["confounded"].sum())

    out = run_saliency(root / "model.pt", root / "test" / "cohort.csv", root / "sal", method=["saliency"], confounder_mask=root / "ct" / "mask.json", allow_unvalidated=True)
    full = run_saliency(root / "model.pt", root / "test" / "cohort.csv", root / "sal_full", method=["saliency"], allow_unvalidated=True)
    ad = block_masks()["diagonal"]
    cfree = np.mean([load_image(p, ndim=2, allow_empty=True).data for p in sorted(out.glob("sub-*/anat/*desc-saliencycfree_attribution.nii.gz"))], axis=0)
    plain = np.mean([load_image(p, ndim=2, allow_empty=True).data for p in sorted(full.glob("sub-*/anat/*desc-saliency_attribution.nii.gz"))], axis=0)
    diff = sorted(out.glob("sub-*/anat/*desc-saliencycdiff_attribution.nii.gz"))
    assert len(diff) == 16
    share = lambda m: np.abs(m)[ad].sum() / np.abs(m).sum()  # noqa: E731
    assert share(cfree) > share(plain) + 0.1  # the confounded blocks B, C lose their saliency
    side = json.loads(sorted(out.glob("sub-*/anat/*desc-saliencycfree_attribution.json"))[0].read_text())
    assert side["ConfounderMask"]["features"] == 32


def test_bad_confounders(setup, tmp_path):
    root = setup
    frame = pd.read_csv(root / "train" / "cohort.csv")
    frame["image"] = [str(root / "train" / p) for p in frame["image"]]
    frame.loc[[3, 5], "sigma_B"] = np.nan
    frame.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(InputError, match=r"2 missing confounder values \(row 5: sigma_B; row 7: sigma_B\)"):
        run_confound_test(root / "model.pt", tmp_path / "c.csv", tmp_path / "o", confounder=["sigma_B"], allow_unvalidated=True)
    path = run_confound_test(root / "model.pt", tmp_path / "c.csv", tmp_path / "o", confounder=["sigma_B"], drop_missing=True, allow_unvalidated=True)
    assert json.loads((path.parent / "summary.json").read_text())["NSubjects"] == len(frame) - 2
    with pytest.raises(InputError, match="confounder column 'pds' not found"):
        run_confound_test(root / "model.pt", tmp_path / "c.csv", tmp_path / "o2", confounder=["pds"], allow_unvalidated=True)
    frame["site"] = "A"
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(InputError, match="confounder 'site' has a single level"):
        run_confound_test(root / "model.pt", tmp_path / "d.csv", tmp_path / "o3", confounder=["site"], allow_unvalidated=True)
    assert main(["confound-test", str(root / "model.pt"), str(tmp_path / "d.csv"), str(tmp_path / "o4"), "--confounder", "site", "--allow-unvalidated"]) == 2
