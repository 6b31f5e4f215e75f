"""Options that many commands share, declared once (same name, help and bounds everywhere)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from neurointerp.errors import InputError
from neurointerp.options.core import arg, flag, opt

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def parse_device(text: str, name: str = "--device") -> str:
    value = str(text).strip().lower()
    if not _DEVICE_RE.match(value):
        raise InputError(f"{name} {text}: choose auto, cpu, cuda or cuda:N")
    return value


def int_list(text: str | None, option: str = "option") -> tuple[int, ...] | None:
    """``"16,32,64"`` -> ``(16, 32, 64)``; blank -> None; one-line error otherwise."""
    if text is None or not str(text).strip():
        return None
    try:
        values = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError(f"{option} {text}: expected comma-separated whole numbers, e.g. 16,32,64") from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"{option} {text}: numbers must be at least 1")
    return tuple(values)


def output_folder(help: str) -> Any:
    return arg(help, output=True, metavar="OUT", nipype="out_dir")


def input_file(help: str, metavar: str | None = None, nipype: str | None = None, affects: bool = True) -> Any:
    return arg(help, exists=True, metavar=metavar, nipype=nipype, affects=affects)


def threads(help: str = "Torch CPU threads (default: SLURM_CPUS_PER_TASK).") -> Any:
    return opt(None, help, minimum=1, affects=False, nipype="num_threads")


def device() -> Any:
    return opt("auto", "auto, cpu or cuda.", parse=parse_device, affects=False, nipype="use_gpu")


def array_index(help: str = "This task's index in a job array (default $SLURM_ARRAY_TASK_ID).") -> Any:
    return opt(None, help, minimum=0, affects=False)


def array_size(help: str = "Number of tasks in the job array (default $SLURM_ARRAY_TASK_COUNT).") -> Any:
    return opt(None, help, minimum=1, affects=False)


FORCE_SUBJECTS = ("Start over: redo this task's subjects, replace an earlier run with other settings, or write beside "
                  "another command's outputs (never touches inputs or another command's files).")
FORCE_RUN = ("Replace an earlier run with other settings, or write beside another command's outputs "
             "(never touches inputs or another command's files).")


def force(help: str | None = None, per_subject: bool = False) -> Any:
    return flag(False, help or (FORCE_SUBJECTS if per_subject else FORCE_RUN), affects=False)


def allow_unvalidated(help: str = "Go on with a model that has no held-out evidence of skill (refused by default: its maps would explain noise).") -> Any:
    """The skill gate's way out (issue #21): does not change what is written, so not in the fingerprint."""
    return flag(False, help, affects=False)


def batch_size(default: int, help: str, affects: bool = False) -> Any:
    return opt(default, help, minimum=1, affects=affects)


def default_template(o: Any = None) -> str:
    """The fallback of --template: the registry's default template (neurointerp.atlases.DEFAULT_TEMPLATE)."""
    from neurointerp.atlases import DEFAULT_TEMPLATE

    return DEFAULT_TEMPLATE


def seed(help: str, default: int | None = 0, **kw: Any) -> Any:
    return opt(default, help, minimum=0, **kw)


def column(default: str, help: str) -> Any:
    return opt(default, help)


def path_option(help: str, exists: bool = True, affects: bool = True) -> Any:
    return opt(None, help, exists=exists, affects=affects)


__all__ = [
    "array_index",
    "array_size",
    "batch_size",
    "column",
    "device",
    "force",
    "input_file",
    "int_list",
    "output_folder",
    "parse_device",
    "path_option",
    "seed",
    "threads",
    "Path",
]
