"""Which files are per-subject maps: what group-map, jacobian and evaluate may read.

A folder made by neurointerp lists, in each run's done records, the per-subject maps of every
subject (``OUT/.neurointerp/<command>/done/*.json``, key ``maps``). Group means, statistics,
figures and the outputs of group-map itself are never among them, so a folder of a finished
``saliency`` run gives its subjects' maps and nothing else, wherever the group outputs sit.
Folders without run records (maps made elsewhere) are read as before, minus the files of a
``group`` folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from neurointerp.errors import InputError
from neurointerp.runs.folder import RECORDS, owners, read_json, slug, written_by
from neurointerp.runs.subjects import done_records

_ENTITY = re.compile(r"(?:^|_)(sub|ses)-[A-Za-z0-9]+")


def kind(path: str | os.PathLike) -> str:
    """The map's kind: its file name without the participant and session entities."""
    return _ENTITY.sub("", Path(path).name).lstrip("_")


def run_root(path: str | os.PathLike) -> Path | None:
    """The nearest folder above ``path`` that holds neurointerp run records, if any."""
    p = Path(path).absolute()
    for parent in p.parents:
        if (parent / RECORDS).is_dir():
            return parent
    return None


def per_subject_maps(folder: str | os.PathLike) -> list[Path] | None:
    """The per-subject maps listed by the per-subject runs of ``folder``; ``None`` when none of
    its runs is a per-subject run (no run records, or only commands such as synth or train)."""
    folder = Path(folder)
    recs = owners(folder)
    maps: list[Path] = []
    found = False
    for rec in recs.values():
        done = done_records(folder, rec.get("command", ""))
        if done or (folder / RECORDS / slug(rec.get("command", "")) / "done").is_dir():
            found = True
        for r in done:
            maps += [folder / m for m in r.get("maps", [])]
    if not found:
        return None
    return sorted({m for m in maps if m.exists()})


def derived_outputs(folder: str | os.PathLike) -> set[Path]:
    """Files of ``folder`` that are group or derived outputs: the finalise step of its per-subject
    runs, and everything group-map wrote there."""
    folder = Path(folder)
    out: set[Path] = set()
    for key, rec in owners(folder).items():
        final = read_json(folder / RECORDS / key / "final.json") or {}
        out |= {(folder / p).absolute() for p in final.get("outputs", [])}
        if rec.get("command") == "group-map":
            out |= {p.absolute() for p in written_by(folder, "group-map")}
    return out


def maps_of_folder(folder: str | os.PathLike) -> list[Path] | None:
    """A folder's per-subject maps, all of one kind; ``None`` for a folder without per-subject runs."""
    folder = Path(folder)
    maps = per_subject_maps(folder)
    if maps is None:
        return None
    commands = ", ".join(sorted(r.get("command", k) for k, r in owners(folder).items()))
    if not maps:
        raise InputError(f"{folder}: its runs ({commands}) list no per-subject maps yet (is the run finished?)")
    kinds = sorted({kind(m) for m in maps})
    if len(kinds) > 1:
        example = maps[0].relative_to(folder).parent / ("*" + kinds[0])
        raise InputError(
            f"{folder}: holds {len(kinds)} kinds of per-subject maps ({', '.join(kinds[:4])}{', ...' if len(kinds) > 4 else ''}); "
            f"give one kind as a quoted glob, e.g. '{folder / 'sub-*' / Path(*example.parts[1:])}'"
        )
    return maps


def is_per_subject(path: str | os.PathLike, _cache: dict | None = None) -> bool:
    """False for a group or derived output (a per-subject run's finalise step, group-map's
    outputs, anything in a ``group`` folder); True otherwise."""
    p = Path(path).absolute()
    if p.parent.name == "group":
        return False
    root = run_root(p)
    if root is None:
        return True
    cache = _cache if _cache is not None else {}
    if root not in cache:
        cache[root] = derived_outputs(root)
    return p not in cache[root]
