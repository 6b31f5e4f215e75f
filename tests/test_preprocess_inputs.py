"""preprocess on bad inputs: one clear line per subject, failures.tsv, the others finish; CLI; file templates."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurointerp.cli.app import main


@pytest.fixture(scope="module")
def mixed_cohort(tmp_path_factory):
    """One good synthetic subject and five broken files, in that order."""
    from neurointerp.synth.brain import synth_brain

    root = tmp_path_factory.mktemp("bad")
    synth_brain(root / "syn", n_subjects=2, voxel_size=4.0, seed=7)
    good = root / "syn" / "sub-syn001" / "anat" / "sub-syn001_T1w.nii.gz"
    bad = root / "bad"
    bad.mkdir()
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    (bad / "text.nii").write_text("this is not a NIfTI file\n" * 20)
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 3), np.float32), aff), bad / "fourd.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), aff), bad / "empty.nii.gz")
    nan = np.ones((8, 8, 8), np.float32)
    nan[2, 3, 4] = np.nan
    nib.save(nib.Nifti1Image(nan, aff), bad / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((40, 40, 40)).astype(np.float32), aff), bad / "whole.nii.gz")
    raw = (bad / "whole.nii.gz").read_bytes()
    (bad / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    rows = [
        ("good", good),
        ("text", bad / "text.nii"),
        ("fourd", bad / "fourd.nii.gz"),
        ("empty", bad / "empty.nii.gz"),
        ("nan", bad / "nan.nii.gz"),
        ("trunc", bad / "truncated.nii.gz"),
    ]
    table = root / "cohort.tsv"
    pd.DataFrame({"participant_id": [r[0] for r in rows], "image": [str(r[1]) for r in rows], "label": ["a", "b"] * 3}).to_csv(table, sep="\t", index=False)
    return root, table


def test_bad_inputs_one_line_each_and_the_good_one_finishes(mixed_cohort, capsys):
    from neurointerp.preprocess import PreprocessFailures, run_preprocess

    root, table = mixed_cohort
    out = root / "out"
    # array task 1 of 2 takes rows 1, 3, 5: all broken (two worker processes)
    import os

    import torch

    torch.set_num_threads(2)
    env = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")}
    with pytest.raises(PreprocessFailures) as err:
        run_preprocess(table, out, brain_extraction="none", threads=1, n_jobs=2, array_index=1, array_size=2)
    assert err.value.exit_code == 2 and not err.value.result.done
    # the caller's thread settings are back (a demo or notebook trains on all its threads afterwards)
    assert torch.get_num_threads() == 2 and {v: os.environ.get(v) for v in env} == env
    assert len(pd.read_csv(out / "failures.tsv", sep="\t")) == 3
    capsys.readouterr()

    # task 0 through the CLI: the good subject, 'fourd' and 'nan'
    code = main(["preprocess", str(table), str(out), "--brain-extraction", "none", "--threads", "2", "--array-index", "0", "--array-size", "2"])
    assert code == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 3  # two subjects + the summary
    assert any("sub-fourd" in line and "fourd.nii.gz" in line and "4D" in line for line in err_lines)
    assert any("sub-nan" in line and "nan.nii.gz" in line and "NaN" in line for line in err_lines)
    assert "2 of 3 subjects failed" in err_lines[-1]

    failures = pd.read_csv(out / "failures.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert sorted(failures["participant_id"]) == ["empty", "fourd", "nan", "text", "trunc"]
    msg = dict(zip(failures["participant_id"], failures["message"]))
    assert "text.nii" in msg["text"] and "not a readable NIfTI" in msg["text"]
    assert "empty.nii.gz" in msg["empty"] and "empty" in msg["empty"]
    assert "truncated.nii.gz" in msg["trunc"] and "corrupt" in msg["trunc"]
    assert set(failures["error_type"]) == {"input"}
    assert all("\n" not in m for m in failures["message"])
    done = pd.read_csv(out / "cohort.tsv", sep="\t")
    assert list(done["participant_id"]) == ["good"]
    assert (out / done["image"][0]).exists()
    # nothing half-written for the broken subjects
    assert not (out / "sub-fourd").exists() and not list(out.rglob("*.tmp*"))


def test_missing_file_in_table_is_refused_before_any_work(tmp_path, capsys):
    table = tmp_path / "c.csv"
    table.write_text("participant_id,image\n01,nowhere.nii.gz\n02,also.nii.gz\n")
    code = main(["preprocess", str(table), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "row 2" in err[0] and "nowhere.nii.gz" in err[0]
    assert not (tmp_path / "out").exists()


def test_single_nifti_with_a_template_file(mixed_cohort, tmp_path, capsys):
    """One NIfTI in, a skull-stripped template file, a 32^3 grid, no N4."""
    from neurointerp.atlases import grid_from_mask
    from neurointerp.io import resolution_label

    root, _ = mixed_cohort
    image = root / "syn" / "sub-syn002" / "anat" / "sub-syn002_T1w.nii.gz"
    tpl = root / "syn" / "truth" / "space-MNI152NLin2009aSym_T1w.nii.gz"
    out = tmp_path / "single"
    code = main(["preprocess", str(image), str(out), "--template", str(tpl), "--space", "synthTpl", "--shape", "32", "--brain-extraction", "none", "--no-n4", "--no-qc", "--threads", "2"])
    assert code == 0, capsys.readouterr().err
    tpl_img = nib.load(str(tpl))
    shape, affine = grid_from_mask(np.asarray(tpl_img.dataobj) > 0, tpl_img.affine, shape=(32, 32, 32))
    res = resolution_label(affine)  # the 32^3 grid is not the template file's own: BIDS res-
    result = nib.load(str(out / "sub-syn002" / "anat" / f"sub-syn002_space-synthTpl_res-{res}_desc-preproc_T1w.nii.gz"))
    assert result.shape == shape == (32, 32, 32)
    np.testing.assert_allclose(result.affine, affine, atol=1e-4)
    table = pd.read_csv(out / "cohort.csv")
    assert list(table["participant_id"]) == ["syn002"]
    assert not (out / "sub-syn002" / "figures").exists()
    # a space that is not a standard template names its reference: the template file
    sidecar = json.loads((out / "sub-syn002" / "anat" / f"sub-syn002_space-synthTpl_res-{res}_desc-preproc_T1w.json").read_text())
    assert sidecar["SpatialReference"] == tpl.absolute().as_uri()


def test_bad_options(tmp_path, capsys):
    image = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), image)
    assert main(["preprocess", str(image), str(tmp_path / "o"), "--registration", "warp"]) == 2
    assert main(["preprocess", str(image), str(tmp_path / "o"), "--template", "nowhere.nii.gz"]) == 2
    assert main(["preprocess", str(image), str(tmp_path / "o"), "--shape", "2,2"]) == 2
    assert main(["preprocess", str(tmp_path / "table.xlsx"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
    assert not (tmp_path / "o").exists()


def _record_pid(item):
    """A worker task for the test below: append this process's id to the item's file."""
    import os

    with open(item.payload, "a") as f:
        f.write(f"{os.getpid()}\n")


def test_worker_processes_are_reused_for_small_images_only(mixed_cohort, tmp_path):
    from neurointerp.preprocess.pipeline import WORKER_VOXELS, tasks_per_worker
    from neurointerp.runs.subjects import Item, _parallel

    root, _ = mixed_cohort
    small = root / "syn" / "sub-syn001" / "anat" / "sub-syn001_T1w.nii.gz"
    n = int(np.prod(nib.load(str(small)).shape))
    assert tasks_per_worker([small]) == WORKER_VOXELS // n > 10
    head = tmp_path / "head.nii"  # a 1 mm whole head gets a fresh process, as does a file that cannot be read
    nib.save(nib.Nifti1Image(np.zeros((197, 233, 189), np.uint8), np.eye(4)), head)
    assert tasks_per_worker([small, head]) == 1
    assert tasks_per_worker([small, root / "bad" / "text.nii"]) == 1

    pids = tmp_path / "pids.txt"
    items = [Item(key=f"k{i}", inputs=[], outputs=[], payload=str(pids)) for i in range(6)]
    assert [exc for _, exc in _parallel(_record_pid, items, 2, None, tasks_per_worker=3)] == [None] * 6
    assert len(set(pids.read_text().split())) <= 2 + 1  # two workers (plus at most one replacement), not six
    pids.unlink()
    assert [exc for _, exc in _parallel(_record_pid, items, 2, None, tasks_per_worker=1)] == [None] * 6
    assert len(set(pids.read_text().split())) == 6
