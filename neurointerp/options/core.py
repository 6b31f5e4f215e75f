"""The options model: each option of a command held once, with its default, help and bounds.

A command's options are a frozen dataclass (e.g. :class:`~neurointerp.options.saliency.SaliencyOptions`)
whose fields are declared with :func:`arg` (positional) and :func:`opt` (``--name``)::

    @dataclass(frozen=True)
    class SaliencyOptions(Options):
        command: ClassVar[str] = "saliency"
        steps: int = opt(32, "Integrated gradients: points on the path.", minimum=1)

Everything else is generated from these declarations: the typer CLI (:mod:`neurointerp.options.cli`),
the Python signature of the library function (:func:`takes_options`), the Nipype interfaces
(:mod:`neurointerp.interfaces.generate`), the run fingerprint (the options marked ``affects``) and
the validation. Validation happens when the object is made, before anything is read or written:
a NaN, an out-of-range number or an unknown choice raises :class:`~neurointerp.errors.InputError`
(exit code 2) naming the option (``--steps 0: must be at least 1``).

This module imports nothing heavy (no numpy, no torch): ``--help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from neurointerp.errors import InputError

MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class Spec:
    """How one option is shown, parsed and checked (the ``spec`` metadata of a field)."""

    help: str
    positional: bool = False
    cli: str | None = None  # the option's name on the command line (default --field-name)
    negative: str | None = None  # booleans: "--no-x" makes a --x/--no-x pair; None: a plain flag
    minimum: float | None = None  # inclusive bounds
    maximum: float | None = None
    above: float | None = None  # exclusive bounds
    below: float | None = None
    choices: tuple | None = None
    affects: bool = True  # changes what the command writes (enters the run fingerprint)
    exists: bool = False  # an input path that must exist
    output: bool = False  # the output folder
    parse: Callable[[str], Any] | None = None  # text (CLI or Python) -> value
    cli_type: Any = None  # the type typer parses when it differs from the field's (int lists: str)
    aliases: tuple[str, ...] = ()  # older spellings, still accepted
    metavar: str | None = None
    nipype: str | None = None  # the trait name in the Nipype interface (default: the field name)
    variadic: bool = False  # a positional that takes one or more values
    allow_inf: bool = False
    hidden: bool = False
    # the value the command uses when the option is left unset (None): a constant, or a function of
    # the options object (a method's or a scenario's default). The run fingerprint records it, so a
    # run made under one default is neither resumed nor reused under another, and giving the
    # default explicitly is the same run as leaving it out (:meth:`Options.resolved`)
    fallback: Any = None


def opt(default: Any = None, help: str = "", **kw: Any) -> Any:
    """An option ``--name`` with a default."""
    return field(default=default, metadata={"spec": Spec(help=help, **kw)})


def required(help: str, **kw: Any) -> Any:
    """An option ``--name`` that must be given."""
    return field(metadata={"spec": Spec(help=help, **kw)})


def arg(help: str, default: Any = MISSING, **kw: Any) -> Any:
    """A positional argument (required unless it has a default)."""
    return field(default=default, metadata={"spec": Spec(help=help, positional=True, **kw)})


def flag(default: bool, help: str, negative: str | None = None, **kw: Any) -> Any:
    """A boolean flag: ``--x`` (and ``--no-x`` with ``negative``)."""
    return field(default=default, metadata={"spec": Spec(help=help, negative=negative, **kw)})


# ------------------------------------------------------------------------------------- types


def _unwrap(tp: Any) -> tuple[Any, bool, bool]:
    """``(base type, optional, repeated)`` of an annotation such as ``tuple[int, ...] | None``."""
    optional = False
    origin = typing.get_origin(tp)
    if origin is typing.Union or (hasattr(__import__("types"), "UnionType") and isinstance(tp, __import__("types").UnionType)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0] if len(args) == 1 else str
        origin = typing.get_origin(tp)
    if origin in (tuple, list):
        return typing.get_args(tp)[0], optional, True
    return tp, optional, False


@dataclass(frozen=True)
class OptionInfo:
    """One field of an options class, with everything the generators need."""

    name: str
    spec: Spec
    base: Any  # bool, int, float, str or Path
    optional: bool
    repeated: bool
    default: Any  # MISSING when required

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def flag(self) -> str:
        """``--name`` on the command line (``NAME`` for a positional)."""
        if self.spec.positional:
            return self.spec.metavar or self.name.upper()
        return self.spec.cli or "--" + self.name.replace("_", "-")

    @property
    def is_bool(self) -> bool:
        return self.base is bool


class Options:
    """Base of the per-command options classes (frozen dataclasses).

    Subclasses set ``command`` (the CLI name, e.g. ``"simulate apply"``) and may override
    :meth:`check` for rules that involve several options.
    """

    command: ClassVar[str] = ""

    # -- introspection ------------------------------------------------------------------
    @classmethod
    def infos(cls) -> list[OptionInfo]:
        cached = cls.__dict__.get("_infos_cache")
        if cached is not None:
            return cached
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            spec = f.metadata.get("spec")
            if spec is None:
                continue
            base, optional, repeated = _unwrap(hints[f.name])
            default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else MISSING)  # type: ignore[misc]
            out.append(OptionInfo(f.name, spec, base, optional, repeated, default))
        setattr(cls, "_infos_cache", out)
        return out

    @classmethod
    def info(cls, name: str) -> OptionInfo:
        for i in cls.infos():
            if i.name == name:
                return i
        raise KeyError(name)

    # -- construction -------------------------------------------------------------------
    def __post_init__(self) -> None:
        for info in self.infos():
            value = getattr(self, info.name)
            object.__setattr__(self, info.name, coerce(value, info))
        self.check()

    def check(self) -> None:
        """Rules that involve several options (override); raise :class:`InputError`."""

    @classmethod
    def build(cls, *args: Any, **kwargs: Any):
        """Options from a Python call: positional arguments in order, then keywords.

        Older keyword spellings listed in a field's ``aliases`` are accepted; an unknown
        keyword raises ``TypeError`` naming it, as a Python function would.
        """
        infos = cls.infos()
        positional = [i for i in infos if i.spec.positional]
        names = {i.name for i in infos}
        alias_of = {a.lstrip("-").replace("-", "_"): i.name for i in infos for a in i.spec.aliases}
        values: dict[str, Any] = {}
        if len(args) > len(positional):
            raise TypeError(f"{cls.command}: takes {len(positional)} positional arguments ({', '.join(i.name for i in positional)}), got {len(args)}")
        for i, a in zip(positional, args):
            values[i.name] = a
        for k, v in kwargs.items():
            k2 = k if k in names else alias_of.get(k)
            if k2 is None:
                raise TypeError(f"{cls.command}: unexpected option {k!r}")
            if k2 in values:
                raise TypeError(f"{cls.command}: {k2!r} given twice")
            values[k2] = v
        missing = [i for i in infos if i.required and i.name not in values]
        if missing:
            raise InputError(f"{cls.command}: missing {', '.join(i.flag for i in missing)}")
        return cls(**values)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    # -- records ------------------------------------------------------------------------
    def kwargs(self, *skip: str) -> dict[str, Any]:
        """The values as keyword arguments (for library functions that take them one by one)."""
        return {i.name: getattr(self, i.name) for i in self.infos() if i.name not in skip}

    def as_dict(self) -> dict[str, Any]:
        return {i.name: plain(getattr(self, i.name)) for i in self.infos()}

    def resolved(self, name: str) -> Any:
        """The value the command uses: the option's value, or its declared ``fallback`` when unset."""
        value = getattr(self, name)
        if value is not None:
            return value
        fallback = self.info(name).spec.fallback
        return fallback(self) if callable(fallback) else fallback

    def affecting(self) -> dict[str, Any]:
        """The options that change the outputs (the run fingerprint's part), as plain JSON.

        An option left unset is recorded with the value it takes (:meth:`resolved`): a folder made
        under an earlier default differs, and an explicit default is the same run.
        """
        return {i.name: plain(self.resolved(i.name)) for i in self.infos() if i.spec.affects and not i.spec.output}

    def label(self, name: str) -> str:
        return self.info(name).flag


def plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------- checks


def _show(value: Any) -> str:
    if isinstance(value, float) and value == int(value) and abs(value) < 1e15:
        return f"{value:g}"
    return str(value)


def coerce(value: Any, info: OptionInfo) -> Any:
    """Check and convert one option's value; one-line :class:`InputError` naming the option."""
    spec, name = info.spec, info.flag
    if value is None:
        if info.optional or info.default is None:
            return None
        raise InputError(f"{name}: a value is required")
    if info.repeated:
        if isinstance(value, str) and spec.parse is not None:
            value = spec.parse(value, name) if _takes_name(spec.parse) else spec.parse(value)
            if value is None:
                return None if info.optional else ()
        if isinstance(value, (str, bytes, os.PathLike)) or not isinstance(value, typing.Iterable) or type(value).__name__ == "DataFrame":
            value = (value,)
        items = tuple(_scalar(v, info, name) for v in value)
        for v in items:
            _bounds(v, info, name)
        return items
    if isinstance(value, str) and spec.parse is not None:
        value = spec.parse(value, name) if _takes_name(spec.parse) else spec.parse(value)
        if value is None:
            return None
    v = _scalar(value, info, name)
    _bounds(v, info, name)
    return v


def _takes_name(fn: Callable) -> bool:
    try:
        return len(inspect.signature(fn).parameters) >= 2
    except (TypeError, ValueError):
        return False


def _scalar(value: Any, info: OptionInfo, name: str) -> Any:
    base = info.base
    kind = type(value).__name__
    if base is bool:
        if isinstance(value, bool) or kind == "bool_":
            return bool(value)
        raise InputError(f"{name} {value!r}: expected true or false")
    if base is int:
        if isinstance(value, bool) or kind == "bool_":
            raise InputError(f"{name} {value!r}: expected a whole number")
        if isinstance(value, int) or kind.startswith(("int", "uint")):
            return int(value)
        if isinstance(value, float) or kind.startswith("float"):
            if math.isfinite(float(value)) and float(value) == int(value):
                return int(value)
            raise InputError(f"{name} {_show(value)}: expected a whole number")
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise InputError(f"{name} {value}: expected a whole number") from None
        raise InputError(f"{name} {value!r}: expected a whole number")
    if base is float:
        if isinstance(value, bool) or kind == "bool_":
            raise InputError(f"{name} {value!r}: expected a number")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{name} {value}: expected a number") from None
        if math.isnan(v):
            raise InputError(f"{name} nan: expected a number, not NaN")
        if math.isinf(v) and not info.spec.allow_inf:
            raise InputError(f"{name} {value}: expected a finite number")
        return v
    if base is Path:
        if type(value).__name__ == "DataFrame":  # a table given as a pandas DataFrame (Python callers)
            from neurointerp.io.cohort import dataframe_table, is_dataframe

            if is_dataframe(value):
                value = dataframe_table(value)
        if isinstance(value, (str, os.PathLike)):
            text = os.fspath(value)
            if not str(text).strip():
                raise InputError(f"{name}: empty path")
            p = Path(text).expanduser()
            if info.spec.exists and not p.exists():
                raise InputError(f"{p}: not found ({name})")
            return p
        raise InputError(f"{name} {value!r}: expected a path")
    if base is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = _show(value)
            else:
                raise InputError(f"{name} {value!r}: expected text")
        return value
    return value


def _bounds(v: Any, info: OptionInfo, name: str) -> None:
    s = info.spec
    if s.choices is not None and v not in s.choices:
        raise InputError(f"{name} {_show(v)}: choose {', '.join(map(str, s.choices))}")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if s.minimum is not None and v < s.minimum:
            raise InputError(f"{name} {_show(v)}: must be at least {_show(s.minimum)}")
        if s.maximum is not None and v > s.maximum:
            raise InputError(f"{name} {_show(v)}: must be at most {_show(s.maximum)}")
        if s.above is not None and not v > s.above:
            raise InputError(f"{name} {_show(v)}: must be greater than {_show(s.above)}")
        if s.below is not None and not v < s.below:
            raise InputError(f"{name} {_show(v)}: must be less than {_show(s.below)}")


# ------------------------------------------------------------------------------ the API


def takes_options(cls: type[Options]) -> Callable[[Callable], Callable]:
    """Decorate ``run(options)`` so Python callers keep calling it with the command's arguments.

    ``run_saliency(model, cohort, out, method=["gradient"], steps=64)`` builds and checks a
    :class:`SaliencyOptions` and calls the body with it; ``run_saliency(options=opts)`` passes
    a ready one. The wrapper's signature and docstring list every option.
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, options: Options | None = None, **kwargs: Any) -> Any:
            if options is not None:
                if args or kwargs:
                    raise TypeError(f"{fn.__name__}: give either options= or arguments, not both")
                if not isinstance(options, cls):
                    raise TypeError(f"{fn.__name__}: options must be a {cls.__name__}")
                return fn(options)
            return fn(cls.build(*args, **kwargs))

        params = []
        for info in cls.infos():
            kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if info.spec.positional else inspect.Parameter.KEYWORD_ONLY
            default = inspect.Parameter.empty if info.required else info.default
            params.append(inspect.Parameter(info.name, kind, default=default))
        params.append(inspect.Parameter("options", inspect.Parameter.KEYWORD_ONLY, default=None))
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__doc__ = (fn.__doc__ or "").rstrip() + "\n\n" + parameters_doc(cls)
        wrapper.options_class = cls  # type: ignore[attr-defined]
        return wrapper

    return decorate


def parameters_doc(cls: type[Options]) -> str:
    """A numpydoc ``Parameters`` section made from the options' help."""
    lines = ["Parameters", "----------"]
    for info in cls.infos():
        default = "" if info.required else f", default {info.default!r}"
        lines.append(f"{info.name}{default}")
        lines.append(f"    {info.spec.help}")
    return "\n".join(lines)
