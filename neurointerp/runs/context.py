"""The run a command is making: its options, and the folder it claimed.

Commands that make their outputs in one go (train, confound-test, evaluate, simulate train,
segment-bg train, synth, demo) claim their output folder through
:func:`neurointerp.io.derivatives.prepare_output_dir`, at the moment they have checked their
inputs and are about to write. It needs to know which command and which options are running:
the CLI sets them (:func:`using_options`), and :func:`runs_as` does the same for Python callers
of the library functions, building (and so validating) the command's options object from the
call's arguments. On success the run is marked complete in the folder's record.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Iterator

_CURRENT: contextvars.ContextVar = contextvars.ContextVar("neurointerp_run", default=None)

# what this process's runs did, for ``--json`` (cleared by the CLI before each command)
RUNS: list = []  # the options of each run started (using_options)
OUTCOMES: list = []  # the RunOutcome of each per-subject run (run_items)


def note_outcome(outcome) -> None:
    OUTCOMES.append(outcome)


class _Run:
    def __init__(self, options) -> None:
        self.options = options
        self.folder = None
        self.stack = contextlib.ExitStack()


def current():
    """The running command's context (``.options``, ``.folder``), or ``None``."""
    return _CURRENT.get()


@contextlib.contextmanager
def using_options(options) -> Iterator[_Run]:
    run = _Run(options)
    RUNS.append(options)
    token = _CURRENT.set(run)
    try:
        with run.stack:
            yield run
            if run.folder is not None and getattr(run, "claimed", {}).get("claimed"):
                run.folder.mark("complete")
    finally:
        _CURRENT.reset(token)


def runs_as(command: str, adapt: Callable[[dict], dict] | None = None) -> Callable[[Callable], Callable]:
    """Run the decorated library function as ``command``: its arguments become the command's
    options object (validated), which then claims the output folder (see the module docstring).
    The function's own signature is unchanged; ``adapt`` maps its arguments to the options'
    names where they differ."""

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any):
            args, kwargs = _tables_as_files(args, kwargs)
            run = current()
            if run is not None and run.options.command == command and run.folder is None:
                return fn(*args, **kwargs)
            from neurointerp.options import options_class

            cls = options_class(command)
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            names = {i.name for i in cls.infos()}
            arguments = adapt(dict(bound.arguments)) if adapt is not None else dict(bound.arguments)
            known = {k: v for k, v in arguments.items() if k in names}
            options = cls(**known)
            with using_options(options):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def _tables_as_files(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """pandas DataFrames among the arguments become the table files the function reads (named by
    their content, see :func:`neurointerp.io.cohort.dataframe_table`)."""
    values = list(args) + list(kwargs.values())
    if not any(type(v).__name__ == "DataFrame" for v in values):
        return args, kwargs
    from neurointerp.io.cohort import dataframe_table, is_dataframe

    def conv(v: Any) -> Any:
        return dataframe_table(v) if is_dataframe(v) else v

    return tuple(conv(a) for a in args), {k: conv(v) for k, v in kwargs.items()}


def claim_current(out: Path, force: bool):
    """Claim ``out`` for the running command (called by ``prepare_output_dir``); ``None`` if none runs.

    The ownership rules are checked now (a refusal writes nothing); the folder's record is written
    at the run's first write, so a command that fails on bad input after this point (they read
    their images afterwards) still leaves the folder as it was.
    """
    run = current()
    if run is None or run.folder is not None:
        return None
    o = run.options
    out_info = next((i for i in o.infos() if i.spec.output), None)
    target = getattr(o, out_info.name) if out_info is not None else getattr(o, "out", None)
    if target is None or Path(target).absolute() != Path(out).absolute():
        return None
    from neurointerp.io.atomic import watch_writes
    from neurointerp.runs.folder import claim_folder, whole_run

    inputs, protect = {}, []
    for info in o.infos():
        value = getattr(o, info.name)
        if not info.spec.exists or value is None:
            continue
        paths = [Path(v) for v in value] if isinstance(value, tuple) else [Path(value)]
        protect += paths
        if info.spec.affects or info.spec.positional:
            files = [p for p in paths if p.is_file()]
            if files:
                inputs[info.name] = files if isinstance(value, tuple) else files[0]
    claim = dict(inputs=inputs, protect=protect, force=force)
    folder = claim_folder(out, o.command, o.affecting(), dry_run=True, **claim)  # refusals now, nothing written
    run.folder = folder
    state = {"claimed": False}

    def first_write(path: Path) -> None:
        if state["claimed"]:
            return
        state["claimed"] = True
        real = whole_run(out, o.command, o.affecting(), checked=True, **claim)
        folder.__dict__.update(real.__dict__)
        run.stack.enter_context(folder.writing())
        folder.note(path)

    run.stack.enter_context(watch_writes(first_write, protect))
    run.claimed = state
    return folder


def simulator_arguments(a: dict) -> dict:
    """``train_simulator(cohort, classifier, out, ...)`` as ``simulate train`` options."""
    return {**a, "paths": (a["cohort"], a["classifier"], a["out"]), "method": "simulator"}


def icam_arguments(a: dict) -> dict:
    """``train_icam(cohort, out, ...)`` as ``simulate train --method icam`` options."""
    lambdas = a.get("lambdas") or {}
    out = {**a, "paths": (a["cohort"], a["out"]), "method": "icam", **{f"lambda_{k}": v for k, v in lambdas.items()}}
    if isinstance(a.get("channels"), int):
        out["channels"] = (a["channels"],)
    for k in ("epochs", "lr", "max_draws", "normalize"):
        out.setdefault(k, a.get(k))
    return out


def vagan_arguments(a: dict) -> dict:
    """``train_vagan(cohort, out, ...)`` as ``simulate train --method vagan`` options."""
    lambdas = a.get("lambdas") or {}
    out = {**a, "paths": (a["cohort"], a["out"]), "method": "vagan", "lambda_map": lambdas.get("map"), "lambda_gp": lambdas.get("gp")}
    if isinstance(a.get("channels"), int):
        out["channels"] = (a["channels"],)
    return out
