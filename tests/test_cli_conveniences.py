"""CLI conveniences (#22 item 5) and the Python API (item 6): --config, --json, --log-file,
shell completion, boolean flags, DataFrame cohorts, attribute()'s documented return and the
package docstring."""

from __future__ import annotations

import gzip
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neurointerp.cli.app import main

os.environ.setdefault("OMP_NUM_THREADS", "1")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "neurointerp", *map(str, args)], capture_output=True, text=True)


def run_record(out: Path, command: str) -> dict:
    return json.loads((out / ".neurointerp" / command / "run.json").read_text())


# ------------------------------------------------------------------------------ --config


def test_config_file_gives_the_same_run_as_the_command_line(tmp_path):
    cfg = tmp_path / "gauss.toml"
    cfg.write_text('n-per-group = 2\nseed = 7\nvariant = "magnitude"\nnoise = 0.0\n')  # either spelling: n-per-group, n_per_group
    assert main(["-q", "synth", "gaussians", str(tmp_path / "a"), "--config", str(cfg)]) == 0
    assert main(["-q", "synth", "gaussians", str(tmp_path / "b"), "--n-per-group", "2", "--seed", "7", "--variant", "magnitude", "--noise", "0"]) == 0
    a, b = run_record(tmp_path / "a", "synth-gaussians"), run_record(tmp_path / "b", "synth-gaussians")
    assert a["fingerprint"] == b["fingerprint"]
    assert a["options"]["n_per_group"] == 2 and a["options"]["variant"] == "magnitude"
    # the command line wins over the file
    assert main(["-q", "synth", "gaussians", str(tmp_path / "c"), "--config", str(cfg), "--seed", "9"]) == 0
    c = run_record(tmp_path / "c", "synth-gaussians")
    assert c["options"]["seed"] == 9 and c["options"]["n_per_group"] == 2 and c["fingerprint"] != a["fingerprint"]


def test_a_run_record_replays_as_a_config(tmp_path):
    assert main(["-q", "synth", "gaussians", str(tmp_path / "a"), "--n-per-group", "2", "--seed", "5", "--variant", "magnitude"]) == 0
    record = tmp_path / "a" / ".neurointerp" / "synth-gaussians" / "run.json"
    assert main(["-q", "synth", "gaussians", str(tmp_path / "b"), "--config", str(record)]) == 0
    assert run_record(tmp_path / "b", "synth-gaussians")["fingerprint"] == run_record(tmp_path / "a", "synth-gaussians")["fingerprint"]
    # the same images: the replay is the same run
    for f in sorted((tmp_path / "a").rglob("*.nii.gz")):
        g = tmp_path / "b" / f.relative_to(tmp_path / "a")
        assert gzip.decompress(f.read_bytes()) == gzip.decompress(g.read_bytes())
    # a record of another command is refused
    res = cli("synth", "brain", tmp_path / "c", "--config", record)
    assert res.returncode == 2 and "run record of `synth gaussians`" in res.stderr and not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    "text,expected",
    [
        ("bogus = 1\n", "unknown key 'bogus'"),
        ("n_per_group = [\n", "not valid TOML"),
        ('out = "x"\n', "key 'out' is the positional argument OUT"),
        ("n_per_group = 0\n", "--n-per-group 0: must be at least 1"),
        ('seed = "abc"\n', "--seed abc: expected a whole number"),
    ],
)
def test_bad_config_is_one_line_exit_2_nothing_written(tmp_path, text, expected):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    res = cli("synth", "gaussians", tmp_path / "out", "--config", cfg)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], res.stderr
    if "key" in expected or "TOML" in expected:
        assert str(cfg) in lines[0]
    assert not (tmp_path / "out").exists()


def test_missing_config_file_is_exit_2(tmp_path):
    res = cli("synth", "gaussians", tmp_path / "out", "--config", tmp_path / "nope.toml")
    assert res.returncode == 2 and "nope.toml: config file not found" in res.stderr and not (tmp_path / "out").exists()


def test_a_required_option_may_come_from_the_config(tmp_path):
    """confound-test's --confounder is required: from the file it counts as given, and when it is
    in neither place the one-line error names it."""
    from neurointerp.options import options_class
    from neurointerp.options.cli import read_config

    cfg = tmp_path / "c.toml"
    cfg.write_text('confounder = ["age", "sex"]\n')
    assert read_config(cfg, options_class("confound-test")) == {"confounder": ("age", "sex")}
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("participant_id,image\n01,a.nii.gz\n")
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")
    res = cli("confound-test", model, cohort, tmp_path / "out")
    assert res.returncode == 2 and "--confounder: a value is required" in res.stderr


# ----------------------------------------------------------- --json, --log-file, completion


def test_json_summary_lists_the_files_written(tmp_path, capsys):
    capsys.readouterr()
    code = main(["--json", "synth", "gaussians", str(tmp_path / "g"), "--n-per-group", "2"])
    out = capsys.readouterr().out
    summary = json.loads(out)  # stdout holds the summary only
    assert code == 0 and summary["exit_code"] == 0 and summary["command"] == "synth gaussians"
    assert Path(summary["out"]) == (tmp_path / "g").absolute()
    assert "cohort.csv" in summary["written"] and len(summary["written"]) >= 9
    for rel in summary["written"]:
        assert (tmp_path / "g" / rel).is_file(), rel
    on_disk = {str(p.relative_to(tmp_path / "g")) for p in (tmp_path / "g").rglob("*") if p.is_file() and ".neurointerp" not in p.parts}
    assert set(summary["written"]) == on_disk


def test_json_summary_of_a_bad_input(tmp_path, capsys):
    capsys.readouterr()
    code = main(["--json", "synth", "gaussians", str(tmp_path / "g"), "--n-per-group", "0"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 2 and summary["exit_code"] == 2 and summary["written"] == [] and "--n-per-group 0" in summary["error"]


def test_log_file_and_bad_log_file(tmp_path):
    log = tmp_path / "run.log"
    res = cli("--quiet", "--log-file", log, "synth", "gaussians", tmp_path / "g", "--n-per-group", "2")
    assert res.returncode == 0 and res.stderr == ""  # --quiet: nothing on the terminal ...
    text = log.read_text()
    assert "command: neurointerp --quiet --log-file" in text and f"wrote {tmp_path / 'g'}" in text  # ... all in the log
    res = cli("--log-file", log, "synth", "gaussians", tmp_path / "g", "--n-per-group", "0")
    assert res.returncode == 2
    assert re.search(r"^\S+ error: --n-per-group 0: must be at least 1$", log.read_text(), re.M)
    res = cli("--log-file", tmp_path / "no" / "such" / "x.log", "synth", "gaussians", tmp_path / "h")
    assert res.returncode == 2 and "x.log: cannot be written (--log-file)" in res.stderr and not (tmp_path / "h").exists()


def test_shell_completion_is_offered():
    # the shell is named: typer's detection of the parent shell (shellingham) fails under a
    # process without one (a batch job, a detached test run)
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    res = subprocess.run([sys.executable, "-m", "neurointerp", "--show-completion", "bash"], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "complete" in res.stdout and "neurointerp" in res.stdout.lower()
    assert "--install-completion" in cli("--help").stdout


def test_every_boolean_option_of_every_command_is_shown_as_a_flag():
    from neurointerp.options import OPTIONS

    for command in OPTIONS:
        res = cli(*command.split(), "--help")
        assert res.returncode == 0, command
        for line in res.stdout.splitlines():
            if "<bool>" in line:  # typer's own --help/--install-completion may say <bool>; ours never
                assert re.search(r"--help|--install-completion|--show-completion", line), (command, line)
    top = cli("--help").stdout
    for flag in ("--debug", "--quiet", "--json"):
        assert not re.search(rf"{flag}\s+\S*\s*<bool>", top), top


# ------------------------------------------------- per-subject commands: counts and failures


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 template-space synth brains (8 mm) and an untrained 3D classifier on their grid."""
    import torch

    from neurointerp.io import load_image, read_cohort
    from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
    from neurointerp.models.classifier import ConvClassifier
    from neurointerp.models.inputs import InputSpec
    from neurointerp.synth.brain import SPACE, synth_brain

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("conv")
    synth_brain(root / "data", n_subjects=6, voxel_size=8.0, effect_size=3.0, confound_strength=0.0, noise=0.0, template_space=True, seed=3)
    frame = read_cohort(root / "data" / "cohort.csv").frame.copy()
    frame["image"] = [str(root / "data" / p) for p in frame["template_image"]]
    frame = frame.drop(columns=["template_image"])
    frame.to_csv(root / "cohort.csv", index=False)
    vol = load_image(frame["image"].iloc[0])
    spec = InputSpec(vol.shape, vol.affine, space=SPACE, normalize="zscore")
    torch.manual_seed(0)
    model = ConvClassifier(spec.model_shape, channels=(2,), hidden=())
    save_checkpoint(root / "model.pt", checkpoint_dict(model, spec, "binary", ["control", "patient"], "tiny3d", {}, {}))
    return root


def test_json_counts_failures_and_log_of_a_per_subject_run(tiny, tmp_path, monkeypatch, capsys):
    """One subject fails at run time (as a GPU running out of memory would): the summary counts
    it, lists it and the files that exist; the log holds the warning and the error lines."""
    import neurointerp.attribution.registry as registry

    real, calls = registry.attribute, []

    def attribute(model, x, method, **kw):
        calls.append(method)
        if len(calls) == 2:  # the second subject (--batch-size 1)
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(model, x, method, **kw)

    monkeypatch.setattr(registry, "attribute", attribute)
    frame = pd.read_csv(tiny / "cohort.csv")
    out, log = tmp_path / "sal", tmp_path / "sal.log"
    base = ["--json", "--log-file", str(log), "saliency", str(tiny / "model.pt"), str(tiny / "cohort.csv"), str(out),
            "--atlas", "none", "--allow-unvalidated", "--threads", "1", "--batch-size", "1"]
    capsys.readouterr()
    code = main(base)
    summary = json.loads(capsys.readouterr().out)
    assert code == 1 and summary["exit_code"] == 1
    assert summary["done"] == len(frame) - 1 and summary["failed"] == 1 and summary["skipped"] == 0 and not summary["complete"]
    failure = summary["failures"][0]
    assert failure["participant_id"] == "syn002" and "CUDA out of memory" in failure["message"] and failure["error_type"] == "runtime"
    assert "failures.tsv" in summary["written"]
    maps = [w for w in summary["written"] if w.endswith("desc-gradient_attribution.nii.gz")]
    assert len(maps) == len(frame) - 1
    for rel in summary["written"]:
        assert (out / rel).is_file(), rel
    text = log.read_text()
    assert re.search(r"^\S+ warning: .*no held-out evidence", text, re.M)  # the skill gate's warning
    assert re.search(r"^\S+ error: .*syn002.*CUDA out of memory", text, re.M)  # the subject's failure
    assert re.search(r"^\S+ error: saliency: 1 of 6 subjects failed", text, re.M)
    # the next run skips the done subjects and redoes the failed one
    monkeypatch.setattr(registry, "attribute", real)
    assert main(base) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["skipped"] == len(frame) - 1 and again["done"] == 1 and again["failed"] == 0 and again["complete"]
    assert any(w.startswith("group/") for w in again["written"])  # the group outputs, written once all are done


def test_config_with_a_repeated_option_matches_the_command_line(tiny, tmp_path):
    cfg = tmp_path / "sal.toml"
    cfg.write_text('method = ["gradient", "smoothgrad"]\nsamples = 2\nthreads = 1\natlas = "none"\nallow-unvalidated = true\n')
    common = [str(tiny / "model.pt"), str(tiny / "cohort.csv")]
    assert main(["-q", "saliency", *common, str(tmp_path / "a"), "--config", str(cfg)]) == 0
    assert main(["-q", "saliency", *common, str(tmp_path / "b"), "--method", "gradient", "--method", "smoothgrad", "--samples", "2", "--threads", "1", "--atlas", "none", "--allow-unvalidated"]) == 0
    a, b = run_record(tmp_path / "a", "saliency"), run_record(tmp_path / "b", "saliency")
    assert a["fingerprint"] == b["fingerprint"] and a["options"]["method"] == ["gradient", "smoothgrad"]
    # the run record replays (allow-unvalidated does not change the outputs, so it is given again)
    record = tmp_path / "a" / ".neurointerp" / "saliency" / "run.json"
    assert main(["-q", "saliency", *common, str(tmp_path / "c"), "--config", str(record), "--allow-unvalidated"]) == 0
    assert run_record(tmp_path / "c", "saliency")["fingerprint"] == a["fingerprint"]


# ------------------------------------------------------------------------------- Python


def test_a_dataframe_cohort_gives_the_same_maps_as_the_csv(tiny, tmp_path, monkeypatch):
    from neurointerp.attribution.pipeline import run_saliency
    from neurointerp.io import load_image, read_cohort

    frame = pd.read_csv(tiny / "cohort.csv")
    # relative image paths in a DataFrame resolve from the current directory
    monkeypatch.chdir(tiny)
    frame["image"] = [os.path.relpath(p, tiny) for p in frame["image"]]
    assert not Path(frame["image"][0]).is_absolute()
    from_csv = read_cohort(tiny / "cohort.csv", require_label=False)
    from_df = read_cohort(frame, require_label=False)
    assert list(from_df.frame["image"]) == list(from_csv.frame["image"])
    a = run_saliency(tiny / "model.pt", tiny / "cohort.csv", tmp_path / "csv", atlas="none", allow_unvalidated=True, threads=1)
    b = run_saliency(tiny / "model.pt", frame, tmp_path / "df", atlas="none", allow_unvalidated=True, threads=1)
    maps_a = sorted(p.relative_to(a) for p in Path(a).rglob("*_desc-gradient*.nii.gz"))
    maps_b = sorted(p.relative_to(b) for p in Path(b).rglob("*_desc-gradient*.nii.gz"))
    assert maps_a and maps_a == maps_b
    for rel in maps_a:
        np.testing.assert_array_equal(load_image(Path(a) / rel).data, load_image(Path(b) / rel).data)


def test_a_dataframe_enters_the_run_fingerprint_by_its_content(tiny, tmp_path):
    from neurointerp.options.train import TrainOptions
    from neurointerp.runs.fingerprint import run_fingerprint

    frame = pd.read_csv(tiny / "cohort.csv")

    def fingerprint(table):
        o = TrainOptions(cohort=table, out=tmp_path / "out")
        assert o.cohort.is_file()  # the table, written as a file named by its content
        return run_fingerprint(o.command, o.affecting(), {"cohort": o.cohort})[0]

    same = fingerprint(frame.copy())
    assert fingerprint(frame) == same
    edited = frame.copy()
    edited.loc[0, "label"] = "patient" if edited.loc[0, "label"] == "control" else "control"
    assert fingerprint(edited) != same


def test_attribute_documents_and_types_its_return():
    from neurointerp.attribution.registry import attribute

    sig = inspect.signature(attribute)
    assert sig.return_annotation is not inspect.Signature.empty
    assert "tuple" in str(sig.return_annotation).lower()
    doc = attribute.__doc__
    assert "Returns" in doc and "record" in doc


def test_package_docstring_names_only_modules_that_exist():
    import neurointerp

    named = re.findall(r":mod:`~?(neurointerp[\w.]*)`", neurointerp.__doc__)
    assert len(named) >= 10
    for module in named:
        importlib.import_module(module)
    # the functions named beside a module are in it: ":mod:`neurointerp.group.api` (``group_map``)"
    pairs = re.findall(r":mod:`(neurointerp[\w.]*)` \(``(\w+)``(?:, ``(\w+)``)?", neurointerp.__doc__)
    assert len(pairs) >= 10
    for module, *functions in pairs:
        for name in filter(None, functions):
            assert callable(getattr(importlib.import_module(module), name)), (module, name)


def test_a_dataframe_reaches_the_functions_that_take_their_arguments_one_by_one(tiny, tmp_path):
    """run_evaluate (like train_simulator, run_confound_test, ...) takes its arguments one by one,
    not an options object: a DataFrame cohort gives the same metrics as the CSV."""
    from neurointerp.evaluate.run import run_evaluate

    frame = pd.read_csv(tiny / "cohort.csv")
    kw = dict(method=["gradient"], n_subjects=3, samples=2, sensitivity_samples=2, atlas="none", allow_unvalidated=True, threads=1)
    a = run_evaluate(tiny / "model.pt", tiny / "cohort.csv", tmp_path / "csv", **kw)
    b = run_evaluate(tiny / "model.pt", frame, tmp_path / "df", **kw)
    pd.testing.assert_frame_equal(pd.read_csv(a, sep="\t"), pd.read_csv(b, sep="\t"))
