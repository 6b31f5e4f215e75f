"""The ``neurointerp`` command: global options, subcommand registry, errors and exit codes.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input. A bad input prints one
line (``error: cohort.csv row 14: image 'x.nii.gz' not found``); the traceback only with
``--debug``. Subcommand modules import nothing heavy at import time, so ``--help`` is instant.
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
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_STATE = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"neurointerp {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logging."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or status messages."),
) -> None:
    """Interpretable deep learning on brain MRI."""
    from neurointerp.progress import set_quiet

    _STATE["debug"] = debug
    set_quiet(quiet)
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


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
    print(f"error: {message}", file=sys.stderr)


def main(argv: Optional[list[str]] = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    from neurointerp.errors import NeurointerpError
    from neurointerp.io.provenance import set_command_line

    args = list(sys.argv[1:] if argv is None else argv)
    set_command_line(["neurointerp", *args])
    debug = "--debug" in args
    from neurointerp.progress import is_quiet, set_quiet

    was_quiet = is_quiet()  # --quiet is for this call only (main() is also called in-process)
    try:
        # standalone mode: typer/click print usage errors themselves and exit 2
        app(args=args, prog_name="neurointerp")
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
        set_quiet(was_quiet)
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
