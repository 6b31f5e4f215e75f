"""Progress bars for long loops (rich), silenced by ``--quiet`` or when stderr is not a terminal."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_QUIET = False
_LOG_FILE = None  # --log-file: every status message, warning and error is also appended there


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    return _QUIET


def set_log_file(path) -> None:
    """Append status messages, warnings and errors to ``path`` (``None``: stop). The file is
    opened per line, so lines of concurrent array tasks writing one log do not tear."""
    global _LOG_FILE
    _LOG_FILE = None if path is None else str(path)


def log_file():
    return _LOG_FILE


def log(line: str) -> None:
    """Append ``line`` to the --log-file (if any), with a UTC time stamp; never fails the run."""
    if _LOG_FILE is None:
        return
    import datetime
    import os

    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        fd = os.open(_LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, f"{stamp} {line}\n".encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        pass


def track(iterable: Iterable[T], description: str = "", total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr (only on an interactive terminal, never with --quiet)."""
    if _QUIET or not sys.stderr.isatty():
        yield from iterable
        return
    from rich.console import Console
    from rich.progress import track as rich_track

    yield from rich_track(iterable, description=description, total=total, console=Console(stderr=True), transient=True)


def info(message: str) -> None:
    """A one-line status message on stderr (silenced by --quiet; always in the --log-file)."""
    log(message)
    if not _QUIET:
        print(message, file=sys.stderr)


def warn(message: str) -> None:
    """A one-line ``warning: ...`` on stderr, printed even with --quiet: a warning says a result
    may not mean what it seems (an unvalidated model, training participants explained), and a
    user who silenced the progress messages must still see it."""
    log(f"warning: {message}")
    print(f"warning: {message}", file=sys.stderr)


def error(message: str) -> None:
    """A one-line ``error: ...`` on stderr (and in the --log-file)."""
    log(f"error: {message}")
    print(f"error: {message}", file=sys.stderr)
