"""Parsers of option values shared by the subcommands."""

from __future__ import annotations

from typing import Optional

from neurointerp.errors import InputError


def int_list(text: Optional[str], option: str) -> Optional[list[int]]:
    """``"16,32,64"`` -> ``[16, 32, 64]``; None or blank -> None; one-line error otherwise."""
    if text is None or not text.strip():
        return None
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError(f"{option} {text}: expected comma-separated whole numbers, e.g. 16,32,64") from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"{option} {text}: numbers must be at least 1")
    return values
