"""Typer commands generated from options classes.

:func:`command` turns an options class and a ``run(options)`` function into the function typer
registers: its signature has one ``typer.Argument``/``typer.Option`` per field, with the field's
help, default and spelling; the body builds (and so validates) the options object and calls
``run``. Booleans are flags (``--force``, ``--qc/--no-qc``) and show no ``<bool>`` value.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from neurointerp.options.core import MISSING, OptionInfo, Options


def _as_text(info: OptionInfo) -> bool:
    """Numbers are parsed by the options model, not by click: a bad value is one line naming the
    option (``--steps abc: expected a whole number``), not click's usage box."""
    return info.spec.cli_type is None and info.base in (int, float) and not info.spec.positional


def _cli_type(info: OptionInfo) -> Any:
    base = str if _as_text(info) else (info.spec.cli_type or info.base)
    if info.repeated and info.spec.cli_type is None:
        return List[base]  # type: ignore[valid-type]
    if info.optional or info.default is None:
        return Optional[base]
    return base


def _default(info: OptionInfo) -> Any:
    if info.required:
        return ...
    d = info.default
    if isinstance(d, tuple):
        if info.spec.cli_type is str:  # e.g. channels "16,32,64"
            return ",".join(map(str, d)) if d else None
        return [str(v) for v in d] if _as_text(info) else list(d)
    if isinstance(d, Path):
        return str(d)
    if _as_text(info) and d is not None:
        return repr(d) if isinstance(d, float) else str(d)
    return d


def parameter(info: OptionInfo) -> inspect.Parameter:
    s = info.spec
    if s.positional:
        default = ... if info.required else _default(info)
        value = typer.Argument(default, help=s.help, metavar=s.metavar or info.name.upper(), show_default=not info.required and info.default is not None)
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    else:
        main = info.flag
        decls = [f"{main}/{s.negative}" if (info.is_bool and s.negative) else main, *s.aliases]
        kw: dict[str, Any] = dict(help=s.help, hidden=s.hidden)
        if info.is_bool:
            kw["metavar"] = ""
        elif s.metavar:
            kw["metavar"] = s.metavar
        elif _as_text(info):
            kw["metavar"] = f"<{info.base.__name__}>"
        value = typer.Option(_default(info), *decls, **kw)
        kind = inspect.Parameter.KEYWORD_ONLY
    return inspect.Parameter(info.name, kind, default=value, annotation=_cli_type(info))


def command(cls: type[Options], run: Callable[[Options], Any], doc: str | None = None) -> Callable[..., None]:
    """The typer function of ``cls``: parse, build the options (exit 2 on a bad value), ``run``."""
    infos = cls.infos()

    def callback(**values: Any) -> None:
        given = {}
        for info in infos:
            v = values.get(info.name)
            if info.repeated and isinstance(v, list) and not v and info.optional:
                v = None
            given[info.name] = v
        options = cls(**given)
        from neurointerp.runs.context import using_options

        with using_options(options):
            run(options)

    params = [parameter(i) for i in infos]
    callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    callback.__annotations__ = {p.name: p.annotation for p in params}
    callback.__doc__ = doc or (cls.__doc__ or "").strip()
    callback.__name__ = cls.command.replace(" ", "_").replace("-", "_")
    return callback


def flags_of(cls: type[Options]) -> dict[str, list[str]]:
    """Every command-line spelling of each field (for the conformance tests)."""
    out = {}
    for info in cls.infos():
        if info.spec.positional:
            out[info.name] = [info.flag]
        else:
            names = [info.flag, *info.spec.aliases]
            if info.is_bool and info.spec.negative:
                names.append(info.spec.negative)
            out[info.name] = names
    return out


__all__ = ["command", "flags_of", "parameter", "MISSING"]
