"""Typer commands generated from options classes.

:func:`command` turns an options class and a ``run(options)`` function into the function typer
registers: its signature has one ``typer.Argument``/``typer.Option`` per field, with the field's
help, default and spelling; the body builds (and so validates) the options object and calls
``run``. Booleans are flags (``--force``, ``--qc/--no-qc``) and show no ``<bool>`` value.

Every command also takes ``--config FILE``: a TOML file of option values under the options'
names (``method = ["gradient", "smoothgrad"]``, ``threads = 2``; ``noise-level`` and
``noise_level`` both work), or the run record ``OUT/.neurointerp/<command>/run.json`` of an
earlier run, whose ``"options"`` are replayed. Values given on the command line win over the
file's; the file's win over the defaults; an unknown key is one line ``error: FILE: unknown
key ...`` (exit 2). Positional arguments (MODEL, COHORT, OUT) always come from the command line.
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
        # a required --option may come from --config: the options model names it when missing
        return None if not info.spec.positional else ...
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
        kw: dict[str, Any] = dict(help=s.help + (" [required]" if info.required else ""), hidden=s.hidden)
        if info.is_bool:
            kw["metavar"] = ""
        elif s.metavar:
            kw["metavar"] = s.metavar
        elif _as_text(info):
            kw["metavar"] = f"<{info.base.__name__}>"
        value = typer.Option(_default(info), *decls, **kw)
        kind = inspect.Parameter.KEYWORD_ONLY
    return inspect.Parameter(info.name, kind, default=value, annotation=_cli_type(info))


CONFIG = "config"  # the parameter name of --config (no options class has a field of that name)


def read_config(path: str | Path, cls: type[Options]) -> dict[str, Any]:
    """The option values in a ``--config`` file, by field name (see the module docstring).

    A ``.json`` file is a run record (``"command"`` and ``"options"``) or a plain object of
    options; anything else is read as TOML. Positional arguments in a run record are skipped
    (they are given on the command line); an unknown key, a positional in a TOML file or a run
    record of another command raise :class:`InputError` naming the file and the key.
    """
    import json

    from neurointerp.errors import InputError

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{p}: config file not found (--config)" if not p.exists() else f"{p}: is a folder, expected a TOML config file or a run.json (--config)")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot be read as text (--config): {exc}") from None
    record = False
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{p}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InputError(f"{p}: expected a JSON object of options or a run record")
        if isinstance(data.get("options"), dict) and "command" in data:
            if data["command"] != cls.command:
                raise InputError(f"{p}: is the run record of `{data['command']}`, not of `{cls.command}`")
            data, record = data["options"], True
    else:
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{p}: not valid TOML ({exc})") from None
    infos = {i.name: i for i in cls.infos()}
    alias_of = {a.lstrip("-").replace("-", "_"): i.name for i in infos.values() for a in i.spec.aliases}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        name = name if name in infos else alias_of.get(name, "")
        if not name:
            raise InputError(f"{p}: unknown key '{key}' (not an option of `{cls.command}`)")
        info = infos[name]
        if info.spec.positional:
            if record:
                continue
            raise InputError(f"{p}: key '{key}' is the positional argument {info.flag}: give it on the command line")
        if isinstance(value, dict):
            raise InputError(f"{p}: key '{key}' holds a table; expected a value")
        values[name] = tuple(value) if isinstance(value, list) else value
    return values


CONTEXT = "_click_context"  # typer passes the click context to a parameter typed typer.Context


def _from_command_line(ctx: Any, name: str) -> bool:
    """Whether ``name`` was given on the command line (or in the environment), not defaulted."""
    source = ctx.get_parameter_source(name) if ctx is not None else None
    return source is not None and getattr(source, "name", "") not in ("DEFAULT", "DEFAULT_MAP")


def command(cls: type[Options], run: Callable[[Options], Any], doc: str | None = None) -> Callable[..., None]:
    """The typer function of ``cls``: parse, build the options (exit 2 on a bad value), ``run``."""
    infos = cls.infos()
    assert all(i.name != CONFIG for i in infos), f"{cls.__name__}: a field may not be named {CONFIG!r}"

    def callback(**values: Any) -> None:
        config = values.pop(CONFIG, None)
        ctx = values.pop(CONTEXT, None)
        given = {}
        for info in infos:
            v = values.get(info.name)
            if info.repeated and isinstance(v, list) and not v and info.optional:
                v = None
            given[info.name] = v
        if config is not None:
            for name, v in read_config(config, cls).items():
                if not _from_command_line(ctx, name):
                    given[name] = v
        options = cls(**given)
        from neurointerp.runs.context import using_options

        with using_options(options):
            run(options)

    params = [parameter(i) for i in infos]
    params.append(inspect.Parameter(CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))
    params.append(
        inspect.Parameter(
            CONFIG,
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, "--config", metavar="FILE", help="Option values from a TOML file (same names as the options), or an earlier run's OUT/.neurointerp/<command>/run.json to replay; command-line values win."),
            annotation=Optional[str],
        )
    )
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


__all__ = ["command", "flags_of", "parameter", "read_config", "MISSING"]
