"""``simulate train/apply --method vagan`` end to end on disk: checkpoint, maps with the input's
affine, SLURM shares and resume, one-line refusals."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from neurointerp.cli.app import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from neurointerp.synth.lesions import synth_lesions

    root = tmp_path_factory.mktemp("vagancli")
    table = synth_lesions(root / "data", n_per_group=8, size=32, voxel_size=2.0, seed=2)
    code = main(["simulate", "train", str(table), str(root / "model"), "--method", "vagan", "--epochs", "2", "--batch-size", "4",
                 "--channels", "2", "--critic-iters", "1", "--lambda-map", "50", "--space", "synthetic", "--threads", "1", "--device", "cpu"])
    assert code == 0
    return root, table, root / "model" / "vagan.pt"


def test_train_writes_a_self_describing_checkpoint(trained):
    from neurointerp.simulate.vagan.checkpoint import load_vagan

    root, table, ckpt = trained
    vag = load_vagan(ckpt)
    img = nib.load(str(root / "data" / "sub-l01" / "anat" / "sub-l01_desc-phantom_lesions.nii.gz"))
    assert vag.spec.shape == (32, 32) and np.allclose(vag.spec.affine, img.affine) and vag.spec.space == "synthetic"
    assert vag.classes == ["0", "1"] and vag.source_class == "1" and vag.target_class == "0"  # default: lesion -> healthy
    training = vag.meta["training"]
    assert training["lambdas"] == {"map": 50.0, "gp": 10.0} and training["critic_iters"] == 1 and training["n_per_class"] == [8, 8]
    assert len(pd.read_csv(root / "model" / "history.tsv", sep="\t")) == 2
    assert json.loads((root / "model" / "vagan.json").read_text())["TargetClass"] == "0"


def test_apply_maps_affines_shares_and_resume(trained, tmp_path):
    from neurointerp.models.inputs import InputSpec

    root, table, ckpt = trained
    out = tmp_path / "apply"
    for k in (0, 1):
        assert main(["simulate", "apply", str(table), str(ckpt), str(out), "--method", "vagan", "--array-index", str(k), "--array-size", "2", "--threads", "1"]) == 0
        assert (out / "maps.tsv").exists() == (k == 1)  # written by the task that completes the cohort
    both = pd.read_csv(out / "maps.tsv", sep="\t")
    assert len(both) == 16 and list(both.columns) == ["participant_id", "label", "map_l1", "critic_input", "critic_translated"]
    anat = out / "sub-l12" / "anat"
    raw = nib.load(str(root / "data" / "sub-l12" / "anat" / "sub-l12_desc-phantom_lesions.nii.gz"))
    mp = nib.load(str(anat / "sub-l12_space-synthetic_desc-vaganmap_attribution.nii.gz"))
    tr = nib.load(str(anat / "sub-l12_space-synthetic_desc-vagantranslated_T1w.nii.gz"))
    for img in (mp, tr):
        assert img.shape == raw.shape and np.allclose(img.affine, raw.affine)
    x = InputSpec((32, 32), raw.affine, normalize="zscore").normalise_array(raw.get_fdata()[:, :, 0])
    assert np.allclose(tr.get_fdata()[:, :, 0], x + mp.get_fdata()[:, :, 0], atol=1e-4)  # translated = x + M(x)
    row = both[both["participant_id"] == "l12"].iloc[0]
    assert row["map_l1"] == pytest.approx(np.abs(mp.get_fdata()).mean(), rel=1e-4)
    side = json.loads((anat / "sub-l12_space-synthetic_desc-vaganmap_attribution.json").read_text())
    assert side["Translation"].startswith("1 -> 0") and len(side["CheckpointSha256"]) == 64
    before = (anat / "sub-l12_space-synthetic_desc-vaganmap_attribution.nii.gz").stat().st_mtime_ns
    assert main(["simulate", "apply", str(table), str(ckpt), str(out), "--method", "vagan", "--array-index", "1", "--array-size", "2"]) == 0
    assert (anat / "sub-l12_space-synthetic_desc-vaganmap_attribution.nii.gz").stat().st_mtime_ns == before  # resumed, not rewritten


def test_bad_input_is_refused_in_one_line(trained, tmp_path, capsys):
    from neurointerp.synth.lesions import synth_lesions

    root, table, ckpt = trained
    other = synth_lesions(tmp_path / "other", n_per_group=2, size=24, seed=0)
    assert main(["simulate", "apply", str(other), str(ckpt), str(tmp_path / "o"), "--method", "vagan"]) == 2
    assert "grid 24x24 differs from the model's grid 32x32" in capsys.readouterr().err
    assert main(["simulate", "apply", str(table), str(ckpt), str(tmp_path / "o"), "--method", "vagan", "--direction", "label"]) == 2
    assert "does not apply to --method vagan" in capsys.readouterr().err
    assert main(["simulate", "apply", str(table), str(ckpt), str(tmp_path / "o"), "--method", "icam"]) == 2
    err = capsys.readouterr().err
    assert "not a neurointerp ICAM checkpoint" in err and "'neurointerp-vagan'" in err
    assert main(["simulate", "apply", str(table), str(ckpt), str(ckpt), str(tmp_path / "o")]) == 2
    assert "is a VA-GAN checkpoint; use --method vagan" in capsys.readouterr().err
    assert main(["simulate", "train", str(table), str(tmp_path / "m"), "--method", "vagan", "--source-class", "7"]) == 2
    assert "--source-class 7: not a class" in capsys.readouterr().err
    assert main(["simulate", "train", str(table), str(tmp_path / "m"), "--method", "icam", "--lambda-map", "3"]) == 2
    assert "--lambda-map applies to --method vagan only" in capsys.readouterr().err
    assert main(["simulate", "apply", str(table), str(ckpt), str(tmp_path / "o")]) == 2  # no --method: the simulator's usage
    err = capsys.readouterr().err
    assert "--method icam takes COHORT ICAM OUT" in err and "--method vagan takes COHORT VAGAN OUT" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "m").exists()
