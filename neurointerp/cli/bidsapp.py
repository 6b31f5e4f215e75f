"""BIDS-App command-line conventions for the commands that read a raw BIDS dataset.

fMRIPrep, MRIQC and the other BIDS Apps are called as ``app bids_dir output_dir participant
--participant-label 01 02``: an analysis-level positional argument and space-separated labels.
Click has no variadic options, so :func:`neurointerp.cli.app.main` rewrites such a command line
into ours before parsing it:

- the analysis level ``participant`` after INPUT and OUT is dropped; ``group`` is refused in
  one line (group-level analysis is ``neurointerp group-map``);
- ``--participant-label 01 02`` (and ``--session-label``) becomes ``--participant-label 01
  --participant-label 02``, but only once INPUT and OUT have been given, as in the BIDS-App
  usage, so that a label list can never swallow a positional argument.

Only commands whose options have a ``participant_label`` field are rewritten.
"""

from __future__ import annotations

from neurointerp.errors import InputError

#: the options of the BIDS-App convention that take several values after one flag
MULTI = ("participant_label", "session_label")
LEVELS = ("participant", "group")


def _command(args: list[str]) -> tuple[str | None, int]:
    """The command line name (``"preprocess"``) and the index of its first argument."""
    from neurointerp.options import OPTIONS

    for i, tok in enumerate(args):
        if tok.startswith("-"):
            continue
        two = " ".join(args[i:i + 2])
        if two in OPTIONS:
            return two, i + 2
        return (tok, i + 1) if tok in OPTIONS else (None, -1)
    return None, -1


def rewrite(args: list[str]) -> list[str]:
    """``args`` with the BIDS-App conventions turned into ours (unchanged for other commands)."""
    command, start = _command(args)
    if command is None:
        return args
    from neurointerp.options import options_class

    infos = options_class(command).infos()
    if not any(i.name == "participant_label" for i in infos):
        return args
    takes_value, multi = set(), set()
    for info in infos:
        if info.spec.positional:
            continue
        names = [info.flag, *info.spec.aliases]
        if not info.is_bool:
            takes_value.update(names)
        if info.name in MULTI:
            multi.update(names)
    takes_value.update({"--config", "--log-file"})
    n_positional = sum(1 for i in infos if i.spec.positional)
    out, positional, i = list(args[:start]), 0, start
    while i < len(args):
        tok = args[i]
        if tok == "--":
            out += args[i:]
            break
        if tok.startswith("-") and tok != "-":
            name = tok.split("=", 1)[0]
            if "=" in tok or name not in takes_value or i + 1 >= len(args):
                out.append(tok)
                i += 1
                continue
            values = [args[i + 1]]
            i += 2
            if name in multi and positional >= n_positional:
                while i < len(args) and not args[i].startswith("-"):
                    values.append(args[i])
                    i += 1
            for v in values:
                out += [name, v]
            continue
        if positional == n_positional and tok in LEVELS:
            if tok == "group":
                raise InputError(f"'{command} ... group': {command} has no group level (BIDS-App analysis level); "
                                 "run it at the participant level and use 'neurointerp group-map' for group statistics")
            i += 1  # the analysis level 'participant': what this command does anyway
            continue
        positional += 1
        out.append(tok)
        i += 1
    return out


__all__ = ["rewrite"]
