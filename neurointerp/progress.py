"""Progress bars for long loops (rich), silenced by ``--quiet`` or when stderr is not a terminal."""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    return _QUIET


def track(iterable: Iterable[T], description: str = "", total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr (only on an interactive terminal, never with --quiet)."""
    if _QUIET or not sys.stderr.isatty():
        yield from iterable
        return
    from rich.console import Console
    from rich.progress import track as rich_track

    yield from rich_track(iterable, description=description, total=total, console=Console(stderr=True), transient=True)


def info(message: str) -> None:
    """A one-line status message on stderr (silenced by --quiet)."""
    if not _QUIET:
        print(message, file=sys.stderr)


def warn(message: str) -> None:
    """A one-line ``warning: ...`` on stderr, printed even with --quiet: a warning says a result
    may not mean what it seems (an unvalidated model, training participants explained), and a
    user who silenced the progress messages must still see it."""
    print(f"warning: {message}", file=sys.stderr)
