"""Nipype input specs generated from the options classes (one place for every option).

:func:`input_spec` turns a command's options class (:mod:`neurointerp.options`) into a
``CommandLineInputSpec``: one trait per option with the option's help as ``desc``, its command-line
spelling as ``argstr``, ``Enum`` for choices, ``File(exists=True)`` for input files, flags for
booleans (``--x``/``--no-x``), ``nohash`` for options that do not change the outputs, ``num_threads``
for ``--threads`` and ``use_gpu`` for ``--device`` (so MultiProc can schedule them). Positional
arguments keep their position; the output folder is named from an input (``cohort.csv`` ->
``cohort_<suffix>``) unless given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from nipype.interfaces.base import Directory, File, InputMultiObject, traits

from neurointerp.interfaces.base import NeurointerpInputSpec, flag, gpu_input, out_dir_input, threads_input
from neurointerp.options.core import OptionInfo, Options


def _scalar_trait(info: OptionInfo, **kw: Any):
    s = info.spec
    if s.choices is not None:
        return traits.Enum(*s.choices, **kw)
    base = s.cli_type or info.base
    if base is Path:
        return File(exists=True, **kw) if s.exists else File(**kw)
    if base is int:
        return traits.Int(**kw)
    if base is float:
        return traits.Float(**kw)
    return traits.Either(traits.Str(), traits.Int(), traits.Float(), **kw)  # text on the command line (e.g. --shape 64)


def trait_for(info: OptionInfo) -> Any:
    """The Nipype trait of one (non-positional) option."""
    s = info.spec
    common = dict(desc=s.help)
    if not s.affects:
        common["nohash"] = True
    if info.required:
        common["mandatory"] = True
    name = info.flag
    if info.name == "threads":
        return threads_input(f"{name} %d")
    if info.name == "device":
        return gpu_input()
    if info.is_bool:
        t = flag(name, s.help, s.negative)
        if not s.affects:
            t = traits.Bool(argstr=name, neg_argstr=s.negative, desc=s.help, nohash=True)
        return t
    if info.repeated and s.cli_type is None:
        fmt = "%d" if info.base is int else "%s"
        inner = _scalar_trait(info)
        return InputMultiObject(inner, argstr=f"{name} {fmt}...", **common)
    fmt = "%d" if (s.cli_type or info.base) is int and s.choices is None else "%s"
    return _scalar_trait(info, argstr=f"{name} {fmt}", **common)


def input_spec(
    options: type[Options],
    *,
    out_source: str | None = None,
    out_suffix: str | None = None,
    out_default: str | None = None,
    positional: Sequence[tuple[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    skip: Sequence[str] = (),
) -> type:
    """A ``CommandLineInputSpec`` class with one trait per option of ``options``.

    ``out_source``/``out_suffix``: the output folder's default name comes from that input trait;
    ``out_default``: a fixed default folder name instead. ``positional``: explicit positional traits
    ``(name, trait)`` in order (for variadic arguments such as simulate's paths). ``extra``: traits
    added as they are (e.g. group-map's ``in_files``). Assign the result to a module-level name
    ``<Command>InputSpec`` in the calling module: Nipype's MultiProc pickles it by that name.
    """
    attrs: dict[str, Any] = {}
    pos = 0
    infos = options.infos()
    if positional is not None:
        for name, t in positional:
            attrs[name] = t
        pos = len(positional)
    for info in infos:
        if info.name in skip or info.name == "force":
            continue
        s = info.spec
        if s.positional:
            if positional is not None:
                continue
            name = s.nipype or info.name
            if s.output:
                if out_source is not None:
                    attrs[name] = out_dir_input(out_source, out_suffix or options.command.replace(" ", "_"), pos)
                else:
                    default = out_default or options.command.replace(" ", "_").replace("-", "_")
                    attrs[name] = Directory(default, usedefault=True, argstr="%s", position=pos, hash_files=False, desc=s.help)
            elif info.base is Path:
                attrs[name] = File(exists=True, mandatory=True, argstr="%s", position=pos, desc=s.help)
            else:
                attrs[name] = traits.Str(mandatory=True, argstr="%s", position=pos, desc=s.help)
            pos += 1
            continue
        attrs[s.nipype or info.name] = trait_for(info)
    attrs.update(extra or {})
    import sys

    name = f"{options.__name__.replace('Options', '')}InputSpec"
    attrs["__module__"] = sys._getframe(1).f_globals.get("__name__", __name__)  # picklable: MultiProc sends it to workers
    attrs["__qualname__"] = name
    cls = type(name, (NeurointerpInputSpec,), attrs)
    cls.options_class = options  # type: ignore[attr-defined]
    return cls


def trait_names(spec_cls: type) -> set[str]:
    """The input traits a spec class defines (for the conformance test)."""
    return set(spec_cls.class_editable_traits())
