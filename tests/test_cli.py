import inspect
import json
import subprocess
import sys

import pytest

from neurointerp.cli.app import app, main

DESIGN_COMMANDS = {"preprocess", "train", "saliency", "confound-test", "simulate", "jacobian", "group-map", "segment-bg", "synth", "demo", "evaluate"}


def run(*args):
    return subprocess.run([sys.executable, "-m", "neurointerp", *args], capture_output=True, text=True)


def registered_commands():
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    return names


def test_help_lists_registered_commands_and_no_stubs():
    res = run("--help")
    assert res.returncode == 0
    names = registered_commands()
    assert {"synth", "demo"} <= names and names <= DESIGN_COMMANDS
    for name in names:
        assert name in res.stdout


def test_help_does_not_import_heavy_packages():
    code = (
        "import sys; from neurointerp.cli.app import main; "
        "rc = main(['--help']); "
        "heavy = [m for m in ('torch', 'ants', 'nilearn', 'pandas', 'scipy', 'matplotlib', 'statsmodels') if m in sys.modules]; "
        "print('HEAVY', heavy)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in res.stdout, res.stdout + res.stderr


def test_version():
    from neurointerp import __version__

    res = run("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"neurointerp {__version__}"


def test_bad_input_is_one_line_exit_2(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    res = run("synth", "gaussians", str(tmp_path / "full"), "--n-per-group", "2")
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {tmp_path / 'full'}: folder is not empty and holds no neurointerp run record (use another folder, or --force to write into it)"]
    assert (tmp_path / "full" / "x").read_text() == "keep"
    res = run("--debug", "synth", "gaussians", str(tmp_path / "full"), "--n-per-group", "2")
    assert res.returncode == 2 and "Traceback" in res.stderr


def test_usage_error_exit_2(tmp_path):
    res = run("synth", "brain", str(tmp_path / "o"), "--n-subjectz", "3")
    assert res.returncode == 2
    res = run("synth", "gaussians", str(tmp_path / "o"), "--variant", "colour")
    assert res.returncode == 2 and "--variant colour: choose width, magnitude" in res.stderr


def test_main_returns_code_and_records_command_line(tmp_path):
    out = tmp_path / "g"
    assert main(["--quiet", "synth", "gaussians", str(out), "--n-per-group", "2", "--seed", "7"]) == 0
    prov = json.loads((out / "truth" / "truth.json").read_text())
    assert prov["CommandLine"][:3] == ["neurointerp", "--quiet", "synth"]
    assert prov["Seed"] == 7 and prov["GeneratedBy"]["Name"] == "neurointerp"


def _cli_params(command):
    return [p for p in inspect.signature(command).parameters if p not in ("config", "_click_context")]  # --config is the CLI's own


@pytest.mark.parametrize(
    "cli_func,lib_path",
    [
        ("neurointerp.cli.synth:gaussians", "neurointerp.synth.gaussians:synth_gaussians"),
        ("neurointerp.cli.synth:brain", "neurointerp.synth.brain:synth_brain"),
        ("neurointerp.cli.demo:demo", "neurointerp.demo:run_demo"),
    ],
)
def test_every_command_is_a_python_function_with_the_same_arguments(cli_func, lib_path):
    import importlib

    def resolve(spec):
        mod, name = spec.split(":")
        return getattr(importlib.import_module(mod), name)

    assert _cli_params(resolve(cli_func)) == _cli_params(resolve(lib_path))
