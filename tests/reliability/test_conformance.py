"""One conformance suite for every per-subject command (as scikit-learn's ``check_estimator``).

Each command of ``PER_SUBJECT`` is fed a small cohort copied into the test's folder and checked
against the same run rules (README, "Runs and output folders"):

* a resubmission redoes only the missing subjects; a changed input image redoes that subject;
* a changed output-affecting option or checkpoint is refused (exit 2, naming it) and ``--force``
  redoes the run; nothing is kept stale;
* one subject's failure does not stop the others (``failures.tsv``), and a re-run finishes;
* array tasks: the group outputs are written once, by the task that completes the cohort;
* another command's folder is refused; ``--force`` writes beside it without touching its files
  or the run's inputs; two incompatible runs started together: one refuses;
* kill -9 mid-run leaves nothing half-written and a re-run gives the uninterrupted result;
* files honour the umask; group-map of a finished folder reads one map per subject.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from corpus import snapshot
from injection import inject_failure
from neurointerp.cli.app import main

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "MPLBACKEND": "Agg"}
PATH_COLUMNS = ("image", "labels", "mask", "masked", "field", "template_image")


@dataclass
class PerSubject:
    name: str  # the command's record name (OUT/.neurointerp/<slug>)
    table: Callable  # world -> its good input table
    n: int  # rows of the table used
    argv: Callable  # (table, checkpoint or None, out) -> argv without 'neurointerp'
    main_glob: str  # one per-subject output per item
    group: str  # a group output written when the cohort is complete
    change: tuple  # an output-affecting option that differs from the defaults
    checkpoint: Callable | None = None  # world -> the checkpoint it reads
    partial: bool = False  # the group output is rebuilt from the finished subjects as they finish
    items: int | None = None  # items per run (default n)
    deterministic_atol: float = 0.0
    group_map: str | None = None  # why group-map refuses the finished folder (None: one map per subject)


def _s(*a):
    return [str(x) for x in a]


PP = ("--shape", 16, "--brain-extraction", "none", "--no-n4", "--no-qc", "--threads", 1, "--registration-resolution", 8)

PER_SUBJECT = [
    PerSubject("preprocess", lambda w: w.native_cohort, 3, lambda t, c, o: _s("preprocess", t, o, *PP),
               "sub-*/anat/*_desc-preproc_T1w.nii.gz", "cohort.csv", ("--seed", "3"), partial=True, deterministic_atol=1e-4),
    PerSubject("saliency", lambda w: w.cohort, 4, lambda t, c, o: _s("saliency", c, t, o, "--atlas", "none", "--threads", 1, "--batch-size", 2, "--allow-unvalidated"),
               "sub-*/anat/*_attribution.nii.gz", "group/*_attribution.nii.gz", ("--score", "probability"), checkpoint=lambda w: w.classifier),
    PerSubject("simulate-apply", lambda w: w.cohort, 4, lambda t, c, o: _s("simulate", "apply", t, c, WORLD.classifier, o, "--threads", 1, "--batch-size", 2, "--allow-unvalidated"),
               "sub-*/anat/*_difference.nii.gz", "logits.tsv", ("--direction", "both"), checkpoint=lambda w: w.simulator,
               group_map="kinds of per-subject maps"),  # inject and remove differences: one kind at a time
    PerSubject("icam-apply", lambda w: w.lesions_cohort, 4, lambda t, c, o: _s("simulate", "apply", t, c, o, "--method", "icam", "--n-samples", 2, "--threads", 1),
               "sub-*/anat/*_desc-icammean_attribution.nii.gz", "predictions.tsv", ("--n-samples", "3"), checkpoint=lambda w: w.icam,
               group_map="is not 3D"),  # 2D phantoms
    PerSubject("vagan-apply", lambda w: w.lesions_cohort, 4, lambda t, c, o: _s("simulate", "apply", t, c, o, "--method", "vagan", "--threads", 1),
               "sub-*/anat/*_desc-vaganmap_attribution.nii.gz", "maps.tsv", ("--label-column", "mask"), checkpoint=lambda w: w.vagan,
               group_map="is not 3D"),  # 2D phantoms
    PerSubject("jacobian", lambda w: w.fields_table, 4, lambda t, c, o: _s("jacobian", t, o),
               "sub-*/anat/*_logjacobian.nii.gz", "jacobian.tsv", ("--inverse",)),
    PerSubject("segment-bg-apply", lambda w: w.rodent_cohort, 3, lambda t, c, o: _s("segment-bg", "apply", c, t, o, "--threads", 1),
               "sub-*/anat/*_desc-bgremoved_dseg.nii.gz", "metrics.tsv", ("--positioning", "volume"), checkpoint=lambda w: w.segmenter, partial=True),
]
IDS = [c.name for c in PER_SUBJECT]
WORLD = None  # set by the fixture (simulate apply needs the classifier next to the simulator)


@pytest.fixture
def case(world, tmp_path, request):
    """A fresh copy of the command's inputs (table, images, checkpoint) in ``tmp_path/in``."""
    global WORLD
    WORLD = world
    cmd: PerSubject = request.param
    src = Path(cmd.table(world))
    sep = "\t" if src.suffix == ".tsv" else ","
    frame = pd.read_csv(src, sep=sep, dtype=str, keep_default_na=False).iloc[: cmd.n].copy()
    dest = tmp_path / "in"
    dest.mkdir()
    for col in PATH_COLUMNS:
        if col not in frame.columns:
            continue
        copies = []
        for k, value in enumerate(frame[col]):
            if not value:
                copies.append(value)
                continue
            p = Path(value) if os.path.isabs(value) else src.parent / value
            name = f"{k}_{col}_{p.name}"
            shutil.copy(p, dest / name)
            copies.append(name)
        frame[col] = copies
    if "template_image" in frame.columns:
        frame = frame.drop(columns=["template_image"])
    table = dest / ("cohort" + src.suffix)
    frame.to_csv(table, sep=sep, index=False)
    ckpt = None
    if cmd.checkpoint is not None:
        ckpt = dest / Path(cmd.checkpoint(world)).name
        shutil.copy(cmd.checkpoint(world), ckpt)
    return cmd, table, ckpt, tmp_path


def run(cmd: PerSubject, table, ckpt, out, *extra, capsys=None) -> int:
    return main(["--quiet", *cmd.argv(table, ckpt, out), *map(str, extra)])


def mains(out: Path, cmd: PerSubject) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.glob(cmd.main_glob))}


def record(out: Path, name: str) -> dict:
    slug = name.replace("icam-apply", "simulate-apply").replace("vagan-apply", "simulate-apply")
    return json.loads((out / ".neurointerp" / slug / "run.json").read_text())


def params(*names):
    return pytest.mark.parametrize("case", [c for c in PER_SUBJECT if c.name in names] if names else PER_SUBJECT, ids=lambda c: c.name, indirect=True)


@params()
def test_resubmit_redoes_only_the_missing_subject(case, capsys):
    cmd, table, ckpt, tmp = case
    out = tmp / "out"
    assert run(cmd, table, ckpt, out) == 0, capsys.readouterr().err
    before = mains(out, cmd)
    assert len(before) == (cmd.items or cmd.n) and list(out.glob(cmd.group))
    victim = sorted(before)[1]
    (out / victim).unlink()
    assert run(cmd, table, ckpt, out) == 0, capsys.readouterr().err
    after = mains(out, cmd)
    assert after.keys() == before.keys()
    redone = [k for k in after if after[k] != before[k]]
    assert redone == [victim]


@params()
def test_changed_input_image_redoes_that_subject(case, capsys):
    cmd, table, ckpt, tmp = case
    out = tmp / "out"
    assert run(cmd, table, ckpt, out) == 0, capsys.readouterr().err
    before = mains(out, cmd)
    frame = pd.read_csv(table, sep="\t" if table.suffix == ".tsv" else ",", dtype=str)
    col = "field" if "field" in frame.columns else "image"
    path = table.parent / frame[col][1]
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    nib.save(nib.Nifti1Image(data * 1.01, img.affine, img.header), str(path))
    assert run(cmd, table, ckpt, out) == 0, capsys.readouterr().err
    after = mains(out, cmd)
    redone = sorted(k for k in after if after[k] != before[k])
    pid = frame["participant_id"][1]
    assert len(redone) == 1 and f"sub-{pid.removeprefix('sub-')}" in redone[0], redone


@params()
def test_changed_option_or_checkpoint_is_refused_and_force_redoes(case, capsys):
    cmd, table, ckpt, tmp = case
    out = tmp / "out"
    assert run(cmd, table, ckpt, out) == 0
    snap = snapshot(out)
    capsys.readouterr()
    assert run(cmd, table, ckpt, out, *cmd.change) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("warning: ")]
    assert len(err) == 1 and "other settings" in err[0] and cmd.change[0] in err[0] and "--force" in err[0], err
    assert snapshot(out) == snap
    if ckpt is not None:
        import torch

        obj = torch.load(str(ckpt), weights_only=True)
        obj["note"] = "retrained"
        torch.save(obj, str(ckpt))
        assert run(cmd, table, ckpt, out) == 2
        err = capsys.readouterr().err
        assert "changed" in err and "--force" in err, err
        assert snapshot(out) == snap
    fp = record(out, cmd.name)["fingerprint"]
    before = mains(out, cmd)
    assert run(cmd, table, ckpt, out, *cmd.change, "--force") == 0, capsys.readouterr().err
    after = mains(out, cmd)
    assert record(out, cmd.name)["fingerprint"] != fp
    assert all(after.get(k) != v for k, v in before.items())  # nothing stale is kept
    assert list(out.glob(cmd.group))


#: per command: options of the first run, an option left unset there given at its default
#: (the fallback it declares), and another value of it (tests/test_option_fallbacks.py)
EXPLICIT_DEFAULTS = {
    "saliency": (("--method", "optimised-perturbation", "--mask-scale", "2"), ("--iterations", "300"), ("--iterations", "299")),
    "icam-apply": ((), ("--max-draws", "1000", "--seed", "0"), ("--max-draws", "999")),
}


@params(*EXPLICIT_DEFAULTS)
def test_the_default_given_explicitly_resumes_and_another_value_is_refused(case, capsys):
    """An option left unset is recorded with the value it takes: giving that value is the same run."""
    cmd, table, ckpt, tmp = case
    base, explicit, other = EXPLICIT_DEFAULTS[cmd.name]
    out = tmp / "out"
    assert run(cmd, table, ckpt, out, *base) == 0, capsys.readouterr().err
    fp, before = record(out, cmd.name)["fingerprint"], mains(out, cmd)
    assert len(before) == (cmd.items or cmd.n)
    assert run(cmd, table, ckpt, out, *base, *explicit) == 0, capsys.readouterr().err
    assert record(out, cmd.name)["fingerprint"] == fp and mains(out, cmd) == before  # resumed: nothing redone
    if other is not None:
        capsys.readouterr()
        assert run(cmd, table, ckpt, out, *base, *other) == 2
        err = capsys.readouterr().err
        assert f"{other[0]} {explicit[explicit.index(other[0]) + 1]} -> {other[1]}" in err, err
        assert mains(out, cmd) == before


@params()
def test_one_failure_does_not_stop_the_others(case, capsys, monkeypatch):
    import neurointerp.runs.subjects as subjects

    cmd, table, ckpt, tmp = case
    out = tmp / "out"
    frame = pd.read_csv(table, sep="\t" if table.suffix == ".tsv" else ",", dtype=str)
    pid = frame["participant_id"][0].removeprefix("sub-")
    original = inject_failure(monkeypatch, pid)  # the first row's items fail while they are processed
    assert run(cmd, table, ckpt, out) == 1
    err = capsys.readouterr().err
    assert "injected failure" in err and "failures.tsv" in err
    fails = pd.read_csv(out / "failures.tsv", sep="\t", dtype=str)
    assert len(fails) >= 1 and set(fails["participant_id"]) == {pid} and set(fails["error_type"]) == {"runtime"}
    done = mains(out, cmd)
    assert len(done) == (cmd.items or cmd.n) - len(fails)
    assert bool(list(out.glob(cmd.group))) == cmd.partial  # no group outputs from an incomplete cohort
    monkeypatch.setattr(subjects, "_process", original)
    assert run(cmd, table, ckpt, out) == 0
    assert not (out / "failures.tsv").exists() and len(mains(out, cmd)) == (cmd.items or cmd.n)
    assert list(out.glob(cmd.group))


@params()
def test_array_tasks_write_the_group_outputs_once(case, capsys):
    cmd, table, ckpt, tmp = case
    out = tmp / "out"
    assert run(cmd, table, ckpt, out, "--array-index", 0, "--array-size", 2) == 0
    final = out / ".neurointerp" / record(out, cmd.name)["command"].replace(" ", "-") / "final.json"
    assert bool(list(out.glob(cmd.group))) == cmd.partial
    assert record(out, cmd.name)["state"] == "running"
    assert run(cmd, table, ckpt, out, "--array-index", 1, "--array-size", 2) == 0
    assert list(out.glob(cmd.group)) and json.loads(final.read_text())["complete"]
    assert record(out, cmd.name)["state"] == "complete"
    stamp = final.stat().st_mtime_ns
    groups = {p: p.stat().st_mtime_ns for p in out.glob(cmd.group)}
    assert run(cmd, table, ckpt, out, "--array-index", 1, "--array-size", 2) == 0  # a resubmitted last task
    assert final.stat().st_mtime_ns == stamp and {p: p.stat().st_mtime_ns for p in out.glob(cmd.group)} == groups


@params()
def test_another_commands_folder_is_refused_and_force_never_touches_its_files(case, capsys):
    cmd, table, ckpt, tmp = case
    out = tmp / "out"
    assert main(["--quiet", "synth", "gaussians", str(out), "--n-per-group", "2"]) == 0
    snap = snapshot(out)
    inputs = snapshot(table.parent)
    capsys.readouterr()
    assert run(cmd, table, ckpt, out) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("warning: ")]
    assert len(err) == 1 and "synth gaussians" in err[0] and "--force" in err[0], err
    assert snapshot(out) == snap
    code = run(cmd, table, ckpt, out, "--force")
    if cmd.name == "preprocess":  # it would write OUT/cohort.csv, which synth gaussians wrote
        assert code == 2 and "belongs to another command's run" in capsys.readouterr().err
        assert snapshot(out) == snap
        return
    assert code == 0, capsys.readouterr().err

    def theirs(snapshot_):  # the other command's files (the shared folder metadata may gain lines)
        return {k: v for k, v in snapshot_.items() if k in snap and not k.startswith((".neurointerp", ".bidsignore", "dataset_description"))}

    assert theirs(snapshot(out)) == theirs(snap)
    assert snapshot(table.parent) == inputs
    # a later --force redo of this command leaves the other command's files alone
    assert run(cmd, table, ckpt, out, *cmd.change, "--force") == 0
    assert theirs(snapshot(out)) == theirs(snap)


@params()
def test_inputs_inside_the_output_folder_are_never_overwritten(case, capsys):
    cmd, table, ckpt, tmp = case
    out = table.parent  # the inputs' own folder
    inputs = snapshot(out)
    code = run(cmd, table, ckpt, out, "--force")
    err = capsys.readouterr().err
    if cmd.name == "preprocess":  # it writes OUT/cohort.csv, which is its input here
        assert code == 2 and "is an input of this run" in err, err
    else:
        assert code == 0, err
    assert {k: v for k, v in snapshot(out).items() if k in inputs} == inputs


@params()
def test_killed_run_resumes_to_the_uninterrupted_result(case, capsys):
    cmd, table, ckpt, tmp = case
    ref, out = tmp / "ref", tmp / "out"
    assert run(cmd, table, ckpt, ref) == 0
    glob = Path(cmd.main_glob).name
    proc = subprocess.run([sys.executable, str(HERE / "crashrun.py"), "--quiet", *cmd.argv(table, ckpt, out)],
                          env={**ENV, "NEUROINTERP_CRASH_AT": f"atomic:{glob}:2"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    for p in out.rglob("*"):  # nothing under a final name is half-written
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(out).parts) and p.name.endswith(".nii.gz"):
            np.asarray(nib.load(str(p)).dataobj)
    assert not list(out.glob(cmd.group)) or cmd.partial
    assert run(cmd, table, ckpt, out) == 0, capsys.readouterr().err
    a = {k: np.asarray(nib.load(str(ref / k)).dataobj) for k in mains(ref, cmd)}
    b = {k: np.asarray(nib.load(str(out / k)).dataobj) for k in mains(out, cmd)}
    assert a.keys() == b.keys() and a
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=cmd.deterministic_atol, err_msg=k)
    assert list(out.glob(cmd.group))


@params("saliency", "jacobian", "preprocess")
def test_two_incompatible_runs_started_together_one_refuses(case):
    cmd, table, ckpt, tmp = case
    out = tmp / "out"
    procs = [
        subprocess.Popen([sys.executable, "-m", "neurointerp", "--quiet", *cmd.argv(table, ckpt, out), *map(str, extra)],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for extra in ((), cmd.change)
    ]
    results = [(p, *p.communicate(timeout=600)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 2], [(p.returncode, e[-500:]) for p, _, e in results]
    refused = next(e for p, _, e in results if p.returncode == 2)
    assert "other settings" in refused


@params()
def test_outputs_honour_the_umask(case):
    cmd, table, ckpt, tmp = case
    out = tmp / "out"
    proc = subprocess.run([sys.executable, "-m", "neurointerp", "--quiet", *cmd.argv(table, ckpt, out)], env=ENV, capture_output=True,
                          text=True, timeout=600, preexec_fn=lambda: os.umask(0o002))
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = [p for p in out.rglob("*") if p.is_file() and p.name != ".lock"]
    modes = {oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert modes == {oct(0o664)}, {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files if stat.S_IMODE(p.stat().st_mode) != 0o664}


@params()
def test_group_map_of_a_finished_folder_reads_one_map_per_subject(case, capsys):
    cmd, table, ckpt, tmp = case
    out = tmp / "out"
    assert run(cmd, table, ckpt, out) == 0
    capsys.readouterr()
    code = main(["--quiet", "group-map", str(out), str(tmp / "g"), "--design", "none", "--no-figures"])
    err = capsys.readouterr().err
    if cmd.group_map is not None:
        assert code == 2 and cmd.group_map in err, err
        return
    assert code == 0, err
    summary = json.loads((tmp / "g" / "group" / "group_map.json").read_text())
    assert summary["n_maps"] == (cmd.items or cmd.n)
