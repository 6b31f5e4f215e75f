"""The options model: every option of every command held once, in the CLI and the Nipype interface.

Checked for every command of :data:`neurointerp.options.OPTIONS`: the CLI has exactly the
options' spellings (and nothing else); the Nipype interface has one input per option (and
nothing else); ``--help`` imports nothing heavy; bad values are refused with exit 2 naming the
option before anything is written; Python callers keep their keyword arguments.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from neurointerp.options import OPTIONS, all_options, options_class
from neurointerp.options.cli import flags_of

COMMANDS = sorted(OPTIONS)


def _click_command(command: str):
    import typer

    from neurointerp.cli.app import app

    cmd = typer.main.get_command(app)
    for part in command.split():
        cmd = cmd.commands[part]
    return cmd


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_on_the_command_line_and_nothing_else(command):
    cls = options_class(command)
    click_cmd = _click_command(command)
    params = {p.name: p for p in click_cmd.params if p.name not in ("help", "config")}  # --config FILE: every command's
    assert set(params) == {i.name for i in cls.infos()}, command
    assert "--config" in next(p for p in click_cmd.params if p.name == "config").opts
    for name, spellings in flags_of(cls).items():
        p = params[name]
        if cls.info(name).spec.positional:
            assert p.param_type_name == "argument"
        else:
            assert set(spellings) <= set(p.opts) | set(p.secondary_opts), (command, name, spellings, p.opts)
            if cls.info(name).is_bool:
                assert p.is_flag, (command, name)  # booleans are flags: --force, never --force true


NIPYPE = {
    "synth gaussians": "SynthGaussians",
    "synth brain": "SynthBrain",
    "synth lesions": "SynthLesions",
    "synth rodent": "SynthRodent",
    "synth spike-in": "SynthSpikeIn",
    "preprocess": "Preprocess",
    "train": "Train",
    "saliency": "Saliency",
    "confound-test": "ConfoundTest",
    "simulate train": "SimulateTrain",
    "simulate apply": "SimulateApply",
    "jacobian": "Jacobian",
    "group-map": "GroupMap",
    "evaluate": "Evaluate",
    "segment-bg train": "SegmentBgTrain",
    "segment-bg apply": "SegmentBgApply",
    "demo": "Demo",
}
NIPYPE_BASE = {"args", "environ", "force"}
POSITIONAL = {  # variadic positionals become named inputs
    "simulate train": {"paths": {"cohort", "classifier", "out_dir"}},
    "simulate apply": {"paths": {"cohort", "simulator", "classifier", "out_dir"}},
    "group-map": {"maps": {"maps", "in_files"}},
}


def test_every_command_has_a_nipype_interface():
    assert set(NIPYPE) == set(OPTIONS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_in_the_nipype_interface_and_nothing_else(command):
    pytest.importorskip("nipype")
    import neurointerp.interfaces as interfaces

    cls = options_class(command)
    iface = getattr(interfaces, NIPYPE[command])
    traits = set(iface.input_spec.class_editable_traits()) - NIPYPE_BASE
    expected = set()
    for info in cls.infos():
        if info.name == "force":
            continue
        special = POSITIONAL.get(command, {}).get(info.name)
        expected |= special if special else {info.spec.nipype or info.name}
    assert traits == expected, (command, sorted(traits ^ expected))
    assert iface._cmd == f"neurointerp {command}"


def test_help_of_every_command_imports_nothing_heavy():
    code = (
        "import sys, io, contextlib\n"
        "from neurointerp.cli.app import main\n"
        f"commands = {COMMANDS!r}\n"
        "for c in commands:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        assert main([*c.split(), '--help']) == 0, c\n"
        "heavy = [m for m in ('torch', 'numpy', 'nibabel', 'pandas', 'scipy', 'ants', 'nilearn', 'matplotlib') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", proc.stdout


def _bad_value(info):
    s = info.spec
    if info.is_bool or s.positional:
        return None
    if s.choices is not None:
        return "7" if info.base is int else "no-such-choice"
    if info.base is float:
        return "nan"
    if info.base is int:
        if s.minimum is not None:
            return str(int(s.minimum) - 1)
        return "abc"
    return None


CASES = [(c, i.name) for c in COMMANDS for i in options_class(c).infos() if _bad_value(i) is not None]


@pytest.mark.parametrize("command,name", CASES, ids=[f"{c}:{n}" for c, n in CASES])
def test_bad_option_values_exit_2_naming_the_option_before_anything_is_written(command, name, tmp_path, capsys):
    """NaN, out-of-range numbers and unknown choices: exit 2, one line naming the option, OUT not created."""
    from neurointerp.cli.app import main

    cls = options_class(command)
    info = cls.info(name)
    dummy = tmp_path / "in.csv"
    dummy.write_text("participant_id,image\n")
    args = []
    for i in cls.infos():
        if i.spec.positional:
            if i.spec.output:
                args.append(str(tmp_path / "out"))
            elif i.spec.variadic:
                args += [str(dummy), str(dummy), str(dummy), str(tmp_path / "out")] if command == "simulate apply" else [str(dummy), str(dummy), str(tmp_path / "out")]
            else:
                args.append(str(dummy))
        elif i.required:
            args += [i.flag, "age"]
    code = main(["--quiet", *command.split(), *args, info.flag, _bad_value(info)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, (command, name, err)
    assert len(err) == 1 and info.flag in err[0], err
    assert not (tmp_path / "out").exists()


def test_python_callers_keep_their_arguments_and_get_the_same_checks(tmp_path):
    from neurointerp.attribution.pipeline import run_saliency
    from neurointerp.errors import InputError
    from neurointerp.group.api import group_map

    sig = __import__("inspect").signature(run_saliency)
    assert list(sig.parameters)[:3] == ["model", "cohort", "out"] and sig.parameters["steps"].default == 32
    assert "steps" in run_saliency.__doc__ and "Integrated gradients" in run_saliency.__doc__
    with pytest.raises(InputError, match=r"--steps 0: must be at least 1"):
        run_saliency("README.md", "README.md", tmp_path / "o", steps=0)
    with pytest.raises(InputError, match=r"--baseline nan: the baseline must be a finite number"):
        run_saliency("README.md", "README.md", tmp_path / "o", baseline="nan")
    with pytest.raises(TypeError, match="unexpected option 'stepz'"):
        run_saliency("README.md", "README.md", tmp_path / "o", stepz=3)
    with pytest.raises(InputError, match=r"--alpha 1: must be less than 1"):
        group_map("x", tmp_path / "g", alpha=1.0)
    assert not (tmp_path / "o").exists() and not (tmp_path / "g").exists()


def test_group_map_threads_is_the_one_name_and_n_threads_still_works(tmp_path):
    from neurointerp.options.group_map import GroupMapOptions

    a = GroupMapOptions.build("m", tmp_path, n_threads=3)
    b = GroupMapOptions.build("m", tmp_path, threads=3)
    assert a == b and a.threads == 3
    assert "--n-threads" in GroupMapOptions.info("threads").spec.aliases


def test_only_output_affecting_options_enter_the_fingerprint():
    for command, cls in all_options().items():
        names = {i.name for i in cls.infos() if i.spec.affects}
        for never in ("threads", "device", "array_index", "array_size", "force", "n_jobs"):
            assert never not in names, (command, never)


def test_options_record_replays(tmp_path):
    """The options a run recorded rebuild the same options object."""
    from neurointerp.options.saliency import SaliencyOptions

    o = SaliencyOptions.build("README.md", "README.md", tmp_path / "o", method=["gradient", "occlusion"], steps=5, baseline="0.5")
    again = SaliencyOptions.build(**json.loads(json.dumps(o.as_dict())))
    assert again == o and again.method == ("gradient", "occlusion") and not math.isnan(float(again.baseline))


def test_every_nipype_interface_pickles():
    """MultiProc sends interfaces to worker processes: the generated input specs must pickle."""
    import pickle

    pytest.importorskip("nipype")
    import neurointerp.interfaces as interfaces

    for name in NIPYPE.values():
        iface = getattr(interfaces, name)()
        again = pickle.loads(pickle.dumps(iface))
        assert type(again.inputs).__name__ == type(iface.inputs).__name__
