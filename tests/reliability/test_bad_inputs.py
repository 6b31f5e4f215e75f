"""Every bad input x every command: one line ``error: ...`` naming the culprit, exit code 2, and the
output folder untouched (pre-existing outputs byte-identical, no partial or temporary file).

The product of ``corpus.BAD_INPUTS`` and ``corpus.COMMANDS``; commands run in-process with
``--force`` so that they get past the non-empty-folder check and must refuse the input itself.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import pytest

from corpus import BAD_INPUTS, COMMANDS, KNOWN_BUGS, _frame, cases, snapshot

from neurointerp.cli.app import main

CASES = cases()


def _feed(world, bad, cmd, d: Path) -> tuple[dict, str]:
    """Inputs of ``cmd`` with the bad one in its slot, and the culprit's file name."""
    inputs = {"table": cmd.table(world), "classifier": world.classifier, "simulator": world.simulator}
    if bad.slot == "image":
        frame, sep = _frame(cmd.table(world))
        src = Path(frame[cmd.image_column].iloc[0])
        img = bad.make(src, d)
        if cmd.image_as_argument:
            inputs["image"] = img
        else:  # the first subject's image (row 2) is the bad one
            frame.loc[0, cmd.image_column] = str(img)
            table = d / ("cohort" + cmd.table(world).suffix)
            frame.to_csv(table, sep=sep, index=False)
            inputs["table"] = table
        return inputs, img.name
    if bad.slot == "table":
        inputs["table"] = bad.make(world, d, cmd)
        return inputs, inputs["table"].name
    inputs[bad.slot] = bad.make(world, d)
    return inputs, inputs[bad.slot].name


def _earlier_outputs(world, out: Path) -> None:
    """Outputs of an earlier run that a failed run must leave byte-identical."""
    (out / "earlier" / "anat").mkdir(parents=True)
    shutil.copy(world.field, out / "earlier" / "anat" / "sub-earlier_xfm.nii.gz")
    (out / "earlier" / "notes.tsv").write_text("participant_id\tnote\nearlier\tkeep me\n")


def _param(bad, cmd):
    reason = KNOWN_BUGS.get((cmd.name, bad.id))
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(bad, cmd, id=f"{cmd.name}-{bad.id}", marks=marks)


@pytest.mark.parametrize("bad, cmd", [_param(b, c) for b, c in CASES])
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(world, bad, cmd, tmp_path, capsys):
    d = tmp_path / "inputs"
    d.mkdir()
    inputs, culprit = _feed(world, bad, cmd, d)
    out = tmp_path / "out"
    _earlier_outputs(world, out)
    before = snapshot(out)

    code = main(["--quiet", *cmd.build(world, inputs, out)])
    err = capsys.readouterr().err

    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning: ")]  # warnings print even with --quiet
    assert code == 2, err
    assert "Traceback" not in err
    assert lines and all(ln.startswith("error: ") for ln in lines), err
    # one line; a batch command adds one summary line pointing at failures.tsv
    assert len(lines) == 1 or (cmd.summary_line and len(lines) == 2 and "failures.tsv" in lines[1]), err
    message = lines[0]
    if bad.names_file:
        assert culprit in message, message
    for want in bad.expect:
        options = want if isinstance(want, tuple) else (want,)
        options = [o.format(image_column=cmd.image_column) for o in options]
        assert any(o in message for o in options), f"expected one of {options} in: {message}"

    after = snapshot(out)
    for name, digest in before.items():
        assert after.get(name) == digest, f"{name} changed or vanished"
    new = sorted(set(after) - set(before))
    unexpected = [n for n in new if not any(fnmatch.fnmatch(n, pat) for pat in cmd.bookkeeping)]
    assert not unexpected, f"a failed run left {unexpected}"
    # nothing escaped the output folder (ids like 'x/../../../escaped' would land next to it)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "out"]
    assert not (tmp_path.parent / "escaped").exists() and not (tmp_path / "escaped").exists()
    if bad.pwned:
        assert not (d.parent / bad.pwned).exists(), "unpickling ran code"


def test_corpus_covers_every_command_and_slot():
    """The framework's own check: every command is tried with every bad input of its slots."""
    for cmd in COMMANDS:
        tried = {b.id for b, c in CASES if c is cmd}
        for bad in BAD_INPUTS:
            if bad.slot in cmd.slots and (bad.only is None or bad.only(cmd)):
                assert bad.id in tried
    assert len(CASES) >= 150


@pytest.mark.parametrize("name", ["segment-bg-train", "segment-bg-apply", "icam-train", "icam-apply", "vagan-train", "vagan-apply"])
def test_good_inputs_of_the_newest_commands_run(world, name, tmp_path, capsys):
    """The same argv with the good inputs succeeds, so the refusals above are about the bad input."""
    cmd = next(c for c in COMMANDS if c.name == name)
    out = tmp_path / "out"
    code = main(["--quiet", *cmd.build(world, {"table": cmd.table(world)}, out)])
    assert code == 0, capsys.readouterr().err
    written = snapshot(out)
    assert any(n.endswith(("model.pt", "icam.pt", "vagan.pt", "_dseg.nii.gz", "_attribution.nii.gz")) for n in written), sorted(written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
