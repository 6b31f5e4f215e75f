"""The ``neurointerp`` command: global options, subcommand registry, errors and exit codes.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input. A bad input prints one
line (``error: cohort.csv row 14: image 'x.nii.gz' not found``); the traceback only with
``--debug``. Subcommand modules import nothing heavy at import time, so ``--help`` is instant.

Global options: ``--quiet``, ``--debug``, ``--json`` (a machine-readable summary of the run on
stdout: what was written, the counts of subjects done/skipped/failed, the failures, the exit code;
everything else goes to stderr), ``--log-file FILE`` (status messages, warnings and errors also
appended to FILE), and typer's ``--install-completion``/``--show-completion``.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional

import typer

from neurointerp._version import __version__
from neurointerp.cli import confound_test as confound_test_cli
from neurointerp.cli import demo as demo_cli
from neurointerp.cli import evaluate as evaluate_cli
from neurointerp.cli import group_map as group_map_cli
from neurointerp.cli import preprocess as preprocess_cli
from neurointerp.cli import jacobian as jacobian_cli
from neurointerp.cli import saliency as saliency_cli
from neurointerp.cli import segment_bg as segment_bg_cli
from neurointerp.cli import simulate as simulate_cli
from neurointerp.cli import synth as synth_cli
from neurointerp.cli import train as train_cli

app = typer.Typer(
    name="neurointerp",
    help="Interpretable deep learning on brain MRI: NIfTI in, attribution maps and statistics in template space out.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_STATE: dict = {"debug": False, "json": False, "stdout": None, "handler": None}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"neurointerp {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version_callback, is_eager=True, metavar="", help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", metavar="", help="Show tracebacks and debug logging."),
    quiet: bool = typer.Option(False, "--quiet", "-q", metavar="", help="No progress bars or status messages."),
    json_summary: bool = typer.Option(False, "--json", metavar="", help="Print a JSON summary of the run on stdout (files written, subjects done/skipped/failed, failures, exit code); messages stay on stderr."),
    log_file: Optional[str] = typer.Option(None, "--log-file", metavar="FILE", help="Also append status messages, warnings and errors (time-stamped) to FILE."),
) -> None:
    """Interpretable deep learning on brain MRI."""
    from neurointerp.progress import set_log_file, set_quiet

    _STATE["debug"] = debug
    set_quiet(quiet)
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if log_file is not None:
        _open_log(log_file)
        set_log_file(log_file)
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        _STATE["handler"] = handler
        from neurointerp.io.provenance import command_line
        from neurointerp.progress import log

        log("command: " + " ".join(command_line() or []))
    if json_summary:
        _STATE["json"] = True
        _STATE["stdout"] = sys.stdout
        sys.stdout = sys.stderr  # the summary is the only thing on stdout


def _open_log(path: str) -> None:
    """A --log-file that cannot be appended to is bad input (exit 2), before anything runs."""
    import os

    from neurointerp.errors import InputError

    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder (--log-file)")
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise InputError(f"{path}: cannot be written (--log-file): {exc.strerror or exc}") from None


# in pipeline order (the order of --help)
app.add_typer(synth_cli.app, name="synth")
app.command("preprocess")(preprocess_cli.preprocess)
app.command("train")(train_cli.train)
app.command("saliency")(saliency_cli.saliency)
app.command("confound-test")(confound_test_cli.confound_test)
app.add_typer(simulate_cli.app, name="simulate")
app.command("jacobian")(jacobian_cli.jacobian)
app.command("group-map")(group_map_cli.group_map)
app.command("evaluate")(evaluate_cli.evaluate)
app.add_typer(segment_bg_cli.app, name="segment-bg")
app.command("demo")(demo_cli.demo)


def _error(message: str) -> None:
    from neurointerp.progress import error

    _STATE["error"] = message
    error(message)


def _summary(code: int, written: list) -> dict:
    """The ``--json`` summary: the command, its output folder, the files this call wrote that
    exist (relative to the folder), and for per-subject commands the runner's counts and failures."""
    import os
    from pathlib import Path

    from neurointerp.runs.context import OUTCOMES, RUNS

    options = RUNS[0] if RUNS else None
    out = None
    if options is not None:
        info = next((i for i in options.infos() if i.spec.output), None)
        out = getattr(options, info.name) if info is not None else getattr(options, "out", None)
    base = Path(out).absolute() if out is not None else None
    files = []
    for p in dict.fromkeys(Path(w).absolute() for w in written):
        if not p.is_file():
            continue
        if base is not None and (p == base or base in p.parents):
            rel = os.path.relpath(p, base)
            if rel.split(os.sep)[0] == ".neurointerp":  # the run's own records
                continue
            files.append(rel)
        else:
            files.append(str(p))
    summary: dict = {
        "command": options.command if options is not None else None,
        "exit_code": code,
        "out": str(base) if base is not None else None,
        "written": sorted(files),
        "error": _STATE.get("error"),
    }
    if OUTCOMES:
        summary["done"] = sum(len(o.done) for o in OUTCOMES)
        summary["skipped"] = sum(len(o.skipped) for o in OUTCOMES)
        summary["failed"] = sum(len(o.failed) for o in OUTCOMES)
        summary["failures"] = [f for o in OUTCOMES for f in o.failed]
        summary["complete"] = all(o.complete for o in OUTCOMES)
        summary["pending"] = sum(o.pending for o in OUTCOMES)
    return summary


def main(argv: Optional[list[str]] = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    from neurointerp.errors import NeurointerpError
    from neurointerp.io.provenance import set_command_line

    args = list(sys.argv[1:] if argv is None else argv)
    set_command_line(["neurointerp", *args])
    debug = "--debug" in args
    from neurointerp.progress import is_quiet, set_quiet

    was_quiet = is_quiet()  # --quiet is for this call only (main() is also called in-process)
    from contextlib import ExitStack

    from neurointerp.io.atomic import watch_writes
    from neurointerp.runs import context

    del context.RUNS[:], context.OUTCOMES[:]
    _STATE.update(json=False, stdout=None, handler=None, error=None)
    written: list = []
    stack = ExitStack()
    stack.enter_context(watch_writes(written.append))
    try:
        from neurointerp.cli.bidsapp import rewrite

        # standalone mode: typer/click print usage errors themselves and exit 2
        app(args=rewrite(args), prog_name="neurointerp")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except NeurointerpError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        _error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        code = exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        code = 130
    except Exception as exc:  # an unexpected failure: one line, traceback with --debug
        if debug:
            import traceback

            traceback.print_exc()
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _error(f"{type(exc).__name__}: {text} (run with --debug for the traceback)")
        code = 1
    finally:
        stack.close()
        set_quiet(was_quiet)
        from neurointerp.progress import set_log_file

        set_log_file(None)
        if _STATE["handler"] is not None:
            logging.getLogger().removeHandler(_STATE["handler"])
            _STATE["handler"].close()
        if _STATE["stdout"] is not None:
            sys.stdout = _STATE["stdout"]
    if _STATE["json"]:
        import json

        print(json.dumps(_summary(code, written), indent=2, default=str))
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
