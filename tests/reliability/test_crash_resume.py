"""kill -9 mid-way, then re-run: the job finishes with the results of an uninterrupted run, and a
killed run never leaves a file under a final name that a later step would read as valid.

Crash points are exact (``crashrun.py``): the worst moment of an atomic write (temporary file
complete, not yet renamed), an output written without the sidecar that marks it finished,
train's own fault injection mid-epoch; plus two preprocess array tasks run at the same time
into one folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurointerp.cli.app import main

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "MPLBACKEND": "Agg"}


def crash(args, at: str, env=None, timeout=240):
    """Run ``neurointerp ARGS`` in a subprocess that SIGKILLs itself at ``at`` (see crashrun.py)."""
    cmd = [sys.executable, str(HERE / "crashrun.py"), "--quiet", *map(str, args)]
    proc = subprocess.run(cmd, env={**ENV, "NEUROINTERP_CRASH_AT": at, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == -9, f"not killed at {at}: rc {proc.returncode}\n{proc.stderr[-3000:]}"


def visible(out: Path, pattern: str = "*"):
    return sorted(p for p in out.rglob(pattern) if p.is_file() and not any(part.startswith(".") for part in p.relative_to(out).parts))


def assert_nothing_half_written(out: Path) -> None:
    """Every file under a final (not hidden) name is complete: NIfTIs load, JSON parses,
    checkpoints load, tables parse; map listings ignore the hidden temporary files."""
    from neurointerp.group.inputs import resolve_map_paths
    from neurointerp.models.checkpoint import safe_torch_load

    for p in visible(out):
        name = p.name
        if name.endswith((".nii.gz", ".nii")):
            np.asarray(nib.load(str(p)).dataobj)
        elif name.endswith(".json"):
            json.loads(p.read_text())
        elif name.endswith(".pt"):
            safe_torch_load(p)
        elif name.endswith((".tsv", ".csv")):
            pd.read_csv(p, sep="\t" if name.endswith(".tsv") else ",")
    # a killed image write leaves a hidden ``.<name>.<random>.part``, never a ``*.nii.gz``
    assert not [p for p in out.rglob(".*") if p.is_file() and p.name.endswith((".nii.gz", ".nii"))]
    if visible(out, "*.nii.gz"):
        listed = resolve_map_paths(out)[0]
        assert all(not any(part.startswith(".") for part in p.relative_to(out).parts) for p in listed)


def arrays(out: Path, pattern: str) -> dict:
    return {str(p.relative_to(out)): np.asarray(nib.load(str(p)).dataobj) for p in visible(out, pattern)}


def assert_same_arrays(ref: Path, out: Path, pattern: str, atol: float = 0.0) -> int:
    a, b = arrays(ref, pattern), arrays(out, pattern)
    assert a.keys() == b.keys() and a
    for k in a:
        if atol:
            np.testing.assert_allclose(a[k], b[k], atol=atol, err_msg=k)
        else:
            assert np.array_equal(a[k], b[k]), k
    return len(a)


# ----------------------------------------------------------------------------- saliency


@pytest.mark.parametrize("at", ["atomic:*_attribution.nii.gz:3", "sidecar:*_attribution.nii.gz:5"])
def test_saliency_killed_mid_way_resumes_to_the_same_maps(world, tmp_path, at, request):
    def args(out):
        return ["saliency", world.classifier, world.cohort, out, "--atlas", "none", "--threads", 1, "--batch-size", 2, "--method", "gradient", "--allow-unvalidated"]

    ref = world.root / "saliency-ref"
    if not ref.exists():  # shared by both crash points
        assert main(["--quiet", *map(str, args(ref))]) == 0
    out = tmp_path / "killed"
    crash(args(out), at)
    done = [p for p in visible(out, "*_attribution.nii.gz") if p.with_name(p.name.replace(".nii.gz", ".json")).exists()]
    assert 0 < len(done) < 8
    assert_nothing_half_written(out)
    if at.startswith("atomic"):  # the temporary file of the killed write is there, hidden, not a NIfTI name
        assert [p for p in out.rglob(".*.part")]
    assert main(["--quiet", *map(str, args(out))]) == 0  # no --force: a plain re-run finishes the job
    assert assert_same_arrays(ref, out, "sub-*_attribution.nii.gz") == 8
    assert assert_same_arrays(ref, out, "*_attribution.nii.gz") > 8  # and the group maps
    assert_nothing_half_written(out)


# ----------------------------------------------------------------------------- train


@pytest.mark.parametrize("at", ["atomic:final-state.pt:2", "atomic:model.pt:1", "hook:final:3:1"])
def test_train_killed_resumes_bit_identically(world, tmp_path, at, capsys):
    import torch

    from neurointerp.models.checkpoint import read_checkpoint

    common = ["--folds", 0, "--final", "--epochs", 3, "--batch-size", 4, "--seed", 5, "--threads", 1, "--channels", "2,4", "--hidden", "8",
              "--shift", 1, "--rotation", 0]
    ref = world.root / "train-ref"
    if not ref.exists():
        assert main(["--quiet", "train", str(world.cohort), str(ref), *map(str, common)]) == 0
    out = tmp_path / "killed"
    if at.startswith("hook:"):  # train's own fault injection: SIGKILL in epoch 3 before batch 1 (of 0, 1)
        crash(["train", world.cohort, out, *common], "atomic:never:1", env={"NEUROINTERP_TRAIN_KILL_AT": at[5:]})
    else:
        crash(["train", world.cohort, out, *common], at)
    assert not (out / "model.pt").exists()
    assert_nothing_half_written(out)
    capsys.readouterr()
    assert main(["--quiet", "train", str(world.cohort), str(out), *map(str, common), "--resume"]) == 0, capsys.readouterr().err
    a, b = read_checkpoint(ref / "model.pt"), read_checkpoint(out / "model.pt")
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert [h["train_loss"] for h in a["metrics"]["history"]] == [h["train_loss"] for h in b["metrics"]["history"]]
    assert_nothing_half_written(out)


# ----------------------------------------------------------------------------- preprocess


PP = ["--shape", 16, "--brain-extraction", "none", "--no-n4", "--no-qc", "--threads", 1, "--registration-resolution", 8, "--array-size", 2]


def _native4(world, folder: Path) -> Path:
    frame = pd.read_csv(world.native_cohort).iloc[:4]
    frame["image"] = [str(world.native_cohort.parent / p) for p in frame["image"]]
    folder.mkdir(parents=True, exist_ok=True)
    frame.drop(columns=["template_image"]).to_csv(folder / "cohort.csv", index=False)
    return folder / "cohort.csv"


@pytest.fixture(scope="module")
def preprocess_concurrent(world, tmp_path_factory):
    """Two array tasks started together into one (not yet existing) folder: the reference run."""
    table = _native4(world, tmp_path_factory.mktemp("ppin"))
    out = tmp_path_factory.mktemp("ppref") / "out"
    procs = [
        subprocess.Popen([sys.executable, "-m", "neurointerp", "--quiet", "preprocess", str(table), str(out), *map(str, PP), "--array-index", str(k)],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in (0, 1)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    return table, out


def test_two_array_tasks_share_one_folder(preprocess_concurrent):
    table, out = preprocess_concurrent
    assert_nothing_half_written(out)
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "neurointerp"
    assert json.loads((out / "preprocess.json").read_text())["Command"] == "preprocess"
    rows = pd.read_csv(out / "cohort.csv")
    assert len(rows) == 4 and sorted(rows["participant_id"]) == sorted(pd.read_csv(table)["participant_id"])
    assert len(visible(out, "*_desc-preproc_T1w.json")) == 4
    assert not (out / "failures.tsv").exists()


@pytest.mark.parametrize("at", ["atomic:*_desc-preproc_T1w.nii.gz:2", "sidecar:*_desc-preproc_T1w.nii.gz:2"])
def test_preprocess_array_task_killed_then_resubmitted(world, preprocess_concurrent, tmp_path, at):
    table, ref = preprocess_concurrent
    out = tmp_path / "out"
    assert main(["--quiet", "preprocess", str(table), str(out), *map(str, PP), "--array-index", "1"]) == 0
    crash(["preprocess", table, out, *PP, "--array-index", 0], at)  # task 0 dies in its second subject
    assert_nothing_half_written(out)
    side = visible(out, "*_desc-preproc_T1w.json")
    assert len(side) == 3  # task 1's two subjects and task 0's first
    # a later step reads the cohort table: it lists finished subjects only
    listed = pd.read_csv(out / "cohort.csv")
    assert all((out / p).exists() for p in listed["image"]) and len(listed) <= 3
    assert main(["--quiet", "preprocess", str(table), str(out), *map(str, PP), "--array-index", "0"]) == 0  # resubmit task 0
    assert len(pd.read_csv(out / "cohort.csv")) == 4
    assert assert_same_arrays(ref, out, "*_desc-preproc_T1w.nii.gz", atol=1e-5) == 4
    assert assert_same_arrays(ref, out, "*_space-*_desc-brain_mask.nii.gz") == 4
    assert_nothing_half_written(out)
