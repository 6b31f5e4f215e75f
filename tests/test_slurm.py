"""The example sbatch scripts on a real single-node SLURM cluster (slurmctld + slurmd on localhost).

One cluster for the module: a ``preprocess`` array over a small ``synth brain`` cohort with a
dependent ``group-map`` job; then one subject's outputs are deleted and the array resubmitted
(only that subject is redone), followed by a dependent ``saliency`` array; and a DDP training
job (``srun`` + ``torchrun``).
Every job runs one of the scripts in ``examples/slurm/`` unchanged, parametrised only by
sbatch options, script arguments and environment variables.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from slurm_cluster import LocalSlurm, unavailable_reason

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "examples" / "slurm"
# small and fast: 4 subjects at 6 mm, a 16^3 working grid, no brain extraction
PREPROCESS_OPTIONS = ["--shape", "16", "--brain-extraction", "none", "--registration-resolution", "6", "--no-qc"]
SPACE = "MNI152NLin2009aSym"

pytestmark = pytest.mark.slow


def _res() -> str:
    """The BIDS res- label of PREPROCESS_OPTIONS' 16^3 grid (preprocess names its outputs with it, group-map keeps it)."""
    from neurointerp.atlases import working_grid
    from neurointerp.io import resolution_label

    return resolution_label(working_grid(shape=(16, 16, 16))[1])


def _preprocessed(deriv: Path, pid: str) -> Path:
    return deriv / f"sub-{pid}" / "anat" / f"sub-{pid}_space-{SPACE}_res-{_res()}_desc-preproc_T1w.nii.gz"


def _log(work: Path, name: str) -> str:
    return (work / "logs" / name).read_text()


def _ok(records: dict) -> None:
    for job, tasks in records.items():
        states = [(t.get("ArrayTaskId", "-"), t.get("JobState"), t.get("ExitCode")) for t in tasks]
        assert all(s[1] == "COMPLETED" for s in states), f"job {job}: {states}"


def test_skip_reasons_are_clear(monkeypatch):
    """Where SLURM cannot run, the integration tests skip saying why (binaries, root)."""
    import slurm_cluster

    monkeypatch.setattr(slurm_cluster, "_which", lambda name: None if name in ("slurmd", "munged") else f"/usr/bin/{name}")
    assert unavailable_reason() == "SLURM/munge binaries not found: munged, slurmd (Debian: apt-get install slurm-wlm munge)"
    monkeypatch.setattr(slurm_cluster, "_which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 1000)
    assert "needs root" in unavailable_reason()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"SLURM integration test skipped: {reason}")
    t0 = time.monotonic()
    with LocalSlurm(tmp_path_factory.mktemp("slurm"), cpus=2) as slurm:
        slurm.startup_s = time.monotonic() - t0
        yield slurm


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from neurointerp.synth.brain import synth_brain

    root = tmp_path_factory.mktemp("slurmwork")
    synth_brain(root / "data", n_subjects=4, voxel_size=6.0, seed=11)
    (root / "logs").mkdir()
    return root


def _job_env() -> dict:
    """The jobs run this interpreter's neurointerp (sbatch exports the environment by default)."""
    return {
        "NEUROINTERP": f"{sys.executable} -m neurointerp",
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "MPLBACKEND": "Agg",
    }


def test_preprocess_array_then_dependent_group_map(cluster, work):
    """Two array tasks share four subjects; group-map starts only after both succeeded."""
    t0 = time.monotonic()
    env = _job_env()
    array = cluster.sbatch(["--array=0-1", "--cpus-per-task=1", "--mem=1G", str(SCRIPTS / "preprocess.sbatch"), "data/cohort.csv", "deriv", *PREPROCESS_OPTIONS], cwd=work, env=env)
    group = cluster.sbatch(
        ["--dependency=afterok:" + array, "--cpus-per-task=1", "--mem=1G", str(SCRIPTS / "group_map.sbatch"), f"deriv/sub-*/anat/*_space-{SPACE}_res-*_desc-preproc_T1w.nii.gz", "group", "--covariates", "deriv/cohort.csv", "--no-figures"],
        cwd=work,
        env=env,
    )
    records = cluster.wait([array, group], timeout=240)
    _ok(records)
    print(f"\nSLURM: cluster up in {cluster.startup_s:.1f} s; preprocess array (2 tasks, 4 subjects) + group-map in {time.monotonic() - t0:.1f} s")

    # the dependency held: group-map started after every array task had ended
    ends = [pd.Timestamp(t["EndTime"]) for t in records[array]]
    assert len(ends) == 2 and pd.Timestamp(records[group][0]["StartTime"]) >= max(ends)

    # logs named %x-%A-%a; task k of 2 took rows k and k+2, with the threads of --cpus-per-task
    data = pd.read_csv(work / "data" / "cohort.csv")
    for k in range(2):
        log = _log(work, f"ni-preprocess-{array}-{k}.out")
        assert f"task {k} of 2" in log and "1 thread(s)" in log
        assert "preprocess: 2 subject(s), 1 job(s) x 1 thread(s)" in log and "2 done, 0 skipped" in log
    assert (work / "logs" / f"ni-group-map-{group}.out").exists()

    # every subject preprocessed on one grid; the output cohort lists all four
    deriv = work / "deriv"
    table = pd.read_csv(deriv / "cohort.csv")
    assert sorted(table["participant_id"]) == sorted(data["participant_id"])
    imgs = {pid: nib.load(str(_preprocessed(deriv, pid))) for pid in data["participant_id"]}
    affine = next(iter(imgs.values())).affine
    assert all(img.shape == (16, 16, 16) and np.allclose(img.affine, affine) for img in imgs.values())

    # the group map: patient mean equals the hand-computed mean, in the images' space
    mean = nib.load(str(work / "group" / "group" / f"space-{SPACE}_res-{_res()}_desc-patientMean_statmap.nii.gz"))
    assert np.allclose(mean.affine, affine) and mean.shape == (16, 16, 16)
    patients = [pid for pid, lab in zip(data["participant_id"], data["label"]) if lab == "patient"]
    assert patients
    expected = np.mean([imgs[p].get_fdata() for p in patients], axis=0)
    brain = nib.load(str(work / "group" / "group" / f"space-{SPACE}_res-{_res()}_desc-analysis_mask.nii.gz")).get_fdata() > 0
    assert brain.sum() > 100 and np.allclose(mean.get_fdata()[brain], expected[brain], atol=1e-4)
    assert (work / "group" / "group" / f"space-{SPACE}_res-{_res()}_desc-patientVScontrolT_statmap.nii.gz").exists()


def test_resubmitted_array_redoes_only_missing_subject_then_saliency(cluster, work):
    """Delete one subject; the same array redoes only it; a dependent saliency array shares the cohort."""
    import torch

    from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
    from neurointerp.models.classifier import ConvClassifier
    from neurointerp.models.inputs import InputSpec

    deriv = work / "deriv"
    if not (deriv / "cohort.csv").exists():
        pytest.skip("needs the outputs of test_preprocess_array_then_dependent_group_map")
    data = pd.read_csv(work / "data" / "cohort.csv")
    pids = list(data["participant_id"])
    redo = pids[2]  # row 2: array task 0 of 2
    before = {p: _preprocessed(deriv, p).stat().st_mtime_ns for p in pids if p != redo}
    shutil.rmtree(deriv / f"sub-{redo}")

    # a small (untrained) classifier on the preprocess grid, for the saliency array
    first = nib.load(str(_preprocessed(deriv, pids[0])))
    spec = InputSpec(first.shape, first.affine, space=SPACE)
    torch.manual_seed(0)
    model = ConvClassifier(spec.model_shape, channels=(4,), kernel_size=3, hidden=()).eval()
    save_checkpoint(work / "model.pt", checkpoint_dict(model, spec, "binary", ["control", "patient"], "slurm-test", {"participant_ids": []}, {}))

    t0 = time.monotonic()
    env = _job_env()
    array = cluster.sbatch(["--array=0-1", "--cpus-per-task=1", "--mem=1G", str(SCRIPTS / "preprocess.sbatch"), "data/cohort.csv", "deriv", *PREPROCESS_OPTIONS], cwd=work, env=env)
    sal = cluster.sbatch(["--array=0-1", "--dependency=afterok:" + array, "--cpus-per-task=1", "--mem=1G", str(SCRIPTS / "saliency.sbatch"), "model.pt", "deriv/cohort.csv", "sal", "--atlas", "none", "--allow-unvalidated"], cwd=work, env=env)
    records = cluster.wait([array, sal], timeout=240)
    _ok(records)
    print(f"\nSLURM: resubmitted preprocess array (1 subject redone) + dependent saliency array in {time.monotonic() - t0:.1f} s")

    # only the deleted subject was processed again
    assert "1 done, 1 skipped" in _log(work, f"ni-preprocess-{array}-0.out")
    assert "0 done, 2 skipped" in _log(work, f"ni-preprocess-{array}-1.out")
    assert _preprocessed(deriv, redo).exists()
    assert {p: _preprocessed(deriv, p).stat().st_mtime_ns for p in before} == before

    # saliency shared the cohort too: a map per subject on the model's grid, group means by the last task
    maps = sorted((work / "sal").glob("sub-*/anat/*_attribution.nii.gz"))
    assert len(maps) == 4
    assert all(np.allclose(nib.load(str(m)).affine, first.affine) for m in maps)
    for k in range(2):
        assert f"task {k} of 2" in _log(work, f"ni-saliency-{sal}-{k}.out")
    # the group mean (written by whichever task completed the cohort) is the mean of the four maps
    mean = nib.load(str(work / "sal" / "group" / f"space-{SPACE}_res-{_res()}_label-all_desc-gradientMean_attribution.nii.gz"))
    expected = np.mean([nib.load(str(m)).get_fdata() for m in maps], axis=0)
    assert np.allclose(mean.affine, first.affine) and np.abs(expected).max() > 0
    assert np.allclose(mean.get_fdata(), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_ddp_training_job_srun_torchrun(cluster, tmp_path):
    """train_ddp.sbatch: srun starts torchrun, which runs two processes in one DDP group.

    (That two DDP processes give the weights of one process is tests/test_train.py's check.)"""
    from neurointerp.models.checkpoint import read_checkpoint
    from neurointerp.synth.gaussians import synth_gaussians

    table = synth_gaussians(tmp_path / "data", variant="magnitude", n_per_group=32, seed=1)
    common = ["--folds", "0", "--final", "--epochs", "2", "--batch-size", "16", "--shift", "0", "--rotation", "0"]
    (tmp_path / "logs").mkdir()
    env = {**_job_env(), "TORCHRUN": f"{sys.executable} -m torch.distributed.run", "NPROC_PER_NODE": "2"}
    t0 = time.monotonic()
    job = cluster.sbatch(["--cpus-per-task=2", "--mem=2G", str(SCRIPTS / "train_ddp.sbatch"), str(table), "ddp", *common], cwd=tmp_path, env=env)
    records = cluster.wait([job], timeout=240)
    log = _log(tmp_path, f"ni-train-{job}.out")
    assert records[job][0]["JobState"] == "COMPLETED", log[-3000:]
    print(f"\nSLURM: srun + torchrun DDP training job (2 processes) in {time.monotonic() - t0:.1f} s")
    assert "1 node(s) x 2 process(es), 1 thread(s) each" in log
    assert '"world_size": 2' in (tmp_path / "ddp" / "model.json").read_text()
    ckpt = read_checkpoint(tmp_path / "ddp" / "model.pt")
    assert ckpt["state_dict"] and not any(k.startswith("module.") for k in ckpt["state_dict"])  # saved unwrapped, by rank 0
    assert not list((tmp_path / "ddp").glob("*.tmp*"))
