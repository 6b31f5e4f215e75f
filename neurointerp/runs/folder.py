"""Folder ownership: each output folder records which command and which run made it.

``OUT/.neurointerp/<command>/run.json`` holds the command, the run fingerprint (its
output-affecting options and the sha256 of its input files), the options and inputs in words,
and whether the run is complete. ``written.txt`` beside it lists every file the command wrote
there (appended *before* each file is renamed into place, so a killed run leaves nothing
unlisted). The rules, the same for every command (:func:`claim_folder`):

* an empty or new folder is claimed;
* the same command with the same fingerprint resumes (array tasks, resubmissions);
* the same command with another fingerprint is refused (exit 2, naming what differs) unless
  ``--force``, which deletes that command's earlier outputs (its ``written.txt``) and starts over;
* a folder holding another command's outputs, or files no neurointerp run made, is refused
  unless ``--force``, which then writes beside them;
* ``--force`` never deletes or overwrites a file that is an input of the run, or that another
  command's record lists: inputs are protected for the whole run (:func:`neurointerp.io.atomic.watch_writes`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from neurointerp.errors import InputError

RECORDS = ".neurointerp"
LOCK = ".lock"
SHARED = frozenset({"dataset_description.json", ".bidsignore", "README", "README.md", "CHANGES"})


def slug(command: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", command.lower()).strip("-")


def records_dir(out: str | os.PathLike) -> Path:
    return Path(out) / RECORDS


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def lock(out: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock on the folder's records (``fcntl.lockf``: also across NFS clients)."""
    folder = records_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(folder / LOCK, "a+") as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(fh, fcntl.LOCK_UN)


def check_output_path(out: Path) -> None:
    """OUT must be a folder or creatable: not a file, not below a regular file."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{out}: cannot be created below {parent}, which is a file")
            if not os.access(parent, os.W_OK | os.X_OK) and not out.exists():
                raise InputError(f"{out}: cannot be created in {parent} (no write permission)")
            break
    if out.exists() and not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"{out}: no write permission")


@dataclass
class RunFolder:
    """A claimed output folder: where this command's records live, and its fingerprint."""

    out: Path
    command: str
    fingerprint: str
    record: dict
    force: bool = False
    protected: list[Path] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)  # files other commands' runs wrote here
    resumed: bool = False  # an earlier run of the same fingerprint was found

    @property
    def dir(self) -> Path:
        return records_dir(self.out) / slug(self.command)

    @property
    def run_json(self) -> Path:
        return self.dir / "run.json"

    @property
    def written_txt(self) -> Path:
        return self.dir / "written.txt"

    def note(self, path: Path) -> None:
        """Append ``path`` (relative to OUT when inside it) to ``written.txt``."""
        try:
            rel = os.path.relpath(Path(path).absolute(), self.out.absolute())
        except ValueError:
            rel = str(Path(path).absolute())
        if rel.split(os.sep)[0] == RECORDS:  # the run's own records are not outputs
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.written_txt, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, (rel + "\n").encode("utf-8"))
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def writing(self) -> Iterator["RunFolder"]:
        """Every write of the run is listed, and no write replaces an input of the run."""
        from neurointerp.io.atomic import watch_writes

        with watch_writes(self.note, self.protected, self.others):
            yield self

    def restart(self) -> None:
        """``--force`` on a folder holding this very run: delete its outputs and start over."""
        from neurointerp.io.atomic import write_json

        keys = {_resolved(p) for p in self.protected}
        with lock(self.out):
            _purge(self.out, slug(self.command), keys, _other_records(self.out, slug(self.command)))
            self.record["state"] = "running"
            write_json(self.run_json, self.record, force=True)
        self.resumed = False

    @property
    def complete(self) -> bool:
        """The folder holds a finished run with this fingerprint."""
        rec = read_json(self.run_json) or {}
        return rec.get("fingerprint") == self.fingerprint and rec.get("state") == "complete"

    def still_ours(self) -> bool:
        rec = read_json(self.run_json)
        return bool(rec) and rec.get("fingerprint") == self.fingerprint

    def mark(self, state: str, report: bool = True, **extra: Any) -> None:
        """Record the run's state; a run marked complete (the end of a whole-run command) also
        writes its HTML report (:mod:`neurointerp.report.run_report`, never failing the run)."""
        from neurointerp.io.atomic import write_json

        rec = dict(read_json(self.run_json) or self.record)
        if rec.get("fingerprint") != self.fingerprint:
            raise InputError(f"{self.out}: another {self.command} run with other settings took over this folder (--force) while this one ran")
        rec["state"] = state
        rec.update(extra)
        write_json(self.run_json, rec, force=True)
        if state == "complete" and report:
            self.write_report()

    def write_report(self, counts: dict | None = None):
        """Build ``OUT/report.html`` for this run; returns its path, or ``None`` (a warning said why)."""
        from neurointerp.report.run_report import write_run_report

        return write_run_report(self, counts=counts)


def _written(out: Path, command_slug: str) -> list[Path]:
    path = records_dir(out) / command_slug / "written.txt"
    if not path.exists():
        return []
    files = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line:
            p = Path(line)
            files.append(p if p.is_absolute() else out / p)
    return files


def _other_records(out: Path, mine: str) -> dict[str, dict]:
    found = {}
    root = records_dir(out)
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if d.is_dir() and d.name != mine:
                rec = read_json(d / "run.json")
                if rec:
                    found[d.name] = rec
    return found


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``--steps 32 -> 64; model (content) changed`` for the refusal message."""
    parts = []
    oo, no = old.get("options", {}), new.get("options", {})
    for k in sorted(set(oo) | set(no)):
        if oo.get(k) != no.get(k):
            parts.append(f"--{k.replace('_', '-')} {_short(oo.get(k))} -> {_short(no.get(k))}")
    oi, ni = old.get("inputs", {}), new.get("inputs", {})
    for k in sorted(set(oi) | set(ni)):
        if oi.get(k) != ni.get(k):
            parts.append(f"{k.upper() if k in ('model', 'cohort') else k} changed (content differs)")
    if old.get("command") != new.get("command"):
        parts.append(f"command {old.get('command')} -> {new.get('command')}")
    return "; ".join(parts[:4]) + ("; ..." if len(parts) > 4 else "") if parts else "other settings"


def _short(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(map(str, v)) if v else "none"
    return "none" if v is None else str(v)


def claim_folder(
    out: str | os.PathLike,
    command: str,
    options: Mapping[str, Any],
    *,
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
    protect: Iterable[str | os.PathLike] = (),
    outputs: Iterable[str | os.PathLike] = (),
    force: bool = False,
    description: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    checked: bool = False,
) -> RunFolder:
    """Claim ``out`` for a run of ``command`` (see the module docstring for the rules).

    ``options``: the output-affecting options (``Options.affecting()``); ``inputs``: named
    run-level input files whose content enters the fingerprint; ``protect``: every input file of
    the run (they are never deleted or overwritten); ``outputs``: files the run will write at known
    names (checked against ``protect`` before anything is written). Returns the
    :class:`RunFolder`; use ``with folder.writing():`` around the run's writes. With ``dry_run``
    every check is made and nothing is written (commands call it first, then check their inputs,
    then claim for real). ``checked``: a dry run passed already and the run has begun writing, so
    files that appeared since are its own (folders made for its first output).
    """
    from neurointerp.io.atomic import write_json
    from neurointerp.io.provenance import command_line
    from neurointerp._version import __version__
    from neurointerp.runs.fingerprint import run_fingerprint

    out = Path(out)
    outputs = list(outputs)
    check_output_path(out)
    fp, record = run_fingerprint(command, options, inputs or {})
    protected = [Path(p) for p in protect]
    for v in (inputs or {}).values():
        protected += [Path(p) for p in v] if isinstance(v, (list, tuple)) else ([Path(v)] if v is not None else [])
    protected_keys = {_resolved(p) for p in protected}
    for o in outputs:
        if _resolved(Path(o)) in protected_keys:
            raise InputError(f"{o}: is an input of this run and would be overwritten by its outputs; choose another output folder")
    me = slug(command)
    folder = RunFolder(out=out, command=command, fingerprint=fp, record={}, force=force, protected=protected)
    if dry_run:
        if out.is_dir():
            _check_owner(folder, out, me, record, force)
            _check_others(folder, out, me, outputs, command)
        return folder
    out.mkdir(parents=True, exist_ok=True)
    with lock(out):
        mine = _check_owner(folder, out, me, record, force, ignore_visible=checked)
        _check_others(folder, out, me, outputs, command)
        if mine and not folder.resumed:
            _purge(out, me, protected_keys, _other_records(out, me))
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        rec = {
            "command": command,
            "fingerprint": fp,
            "options": record["options"],
            "inputs": record["inputs"],
            "input_paths": {k: (str(Path(v).absolute()) if isinstance(v, (str, os.PathLike)) else (f"{len(v)} files" if v is not None else None)) for k, v in (inputs or {}).items()},
            "version": __version__,
            "command_line": command_line(),
            "started": (mine or {}).get("started", now) if folder.resumed else now,
            "state": (mine or {}).get("state", "running") if folder.resumed else "running",
            **(dict(description) if description else {}),
        }
        folder.record = rec
        if not folder.resumed or mine != rec:
            write_json(folder.run_json, rec, force=True)
    return folder


def _check_owner(folder: RunFolder, out: Path, me: str, record: Mapping[str, Any], force: bool, ignore_visible: bool = False) -> dict | None:
    """The ownership rules; returns this command's earlier record (sets ``folder.resumed``)."""
    mine = read_json(folder.run_json)
    others = _other_records(out, me)
    visible = [p for p in out.iterdir() if not p.name.startswith(".") and p.name not in SHARED]
    command = folder.command
    if mine and mine.get("fingerprint") == folder.fingerprint:
        folder.resumed = True
    elif mine:
        if not force:
            raise InputError(
                f"{out}: holds a `{mine.get('command', command)}` run with other settings ({_differences(mine, record)}); "
                "use --force to redo it, or another output folder"
            )
    elif others:
        if not force:
            names = ", ".join(f"`{r.get('command', k)}`" for k, r in others.items())
            raise InputError(f"{out}: holds the outputs of {names}; write `{command}` into another folder (or use --force to write beside them)")
    elif visible and not force and not ignore_visible:
        raise InputError(f"{out}: folder is not empty and holds no neurointerp run record (use another folder, or --force to write into it)")
    return mine


def _check_others(folder: RunFolder, out: Path, me: str, outputs: Iterable, command: str) -> None:
    """Record the files other commands wrote here; refuse when a known output would replace one."""
    folder.others = [p for name in _other_records(out, me) for p in _written(out, name) if p.name not in SHARED]
    theirs = {_resolved(p) for p in folder.others}
    for o in outputs:
        if _resolved(Path(o)) in theirs:
            raise InputError(f"{o}: belongs to another command's run in {out} and would be overwritten; write {command} into another folder")


def _resolved(p: Path) -> str:
    try:
        return str(p.parent.resolve() / p.name)
    except OSError:
        return str(p.absolute())


def _purge(out: Path, me: str, protected_keys: set[str], others: Mapping[str, dict]) -> None:
    """Delete the files an earlier run of this command wrote (never inputs, never another command's)."""
    import shutil

    theirs = {_resolved(p) for name in others for p in _written(out, name)}
    for p in _written(out, me):
        key = _resolved(p)
        if key in protected_keys or key in theirs or p.name in SHARED:
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            p.unlink()
    shutil.rmtree(records_dir(out) / me, ignore_errors=True)
    _prune_empty(out)


def _prune_empty(out: Path) -> None:
    """Remove folders the purge left empty (deepest first), never OUT itself or the records."""
    for d in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if RECORDS in d.relative_to(out).parts:
            continue
        with contextlib.suppress(OSError):
            d.rmdir()


def owners(folder: str | os.PathLike) -> dict[str, dict]:
    """The run records of a folder: ``{command slug: run.json}``."""
    return _other_records(Path(folder), "")


def written_by(folder: str | os.PathLike, command: str) -> list[Path]:
    return _written(Path(folder), slug(command))


def whole_run(
    out: str | os.PathLike,
    command: str,
    options: Mapping[str, Any],
    *,
    inputs: Mapping[str, Any] | None = None,
    protect: Iterable[str | os.PathLike] = (),
    outputs: Iterable[str | os.PathLike] = (),
    force: bool = False,
    dry_run: bool = False,
    checked: bool = False,
) -> RunFolder:
    """Claim ``out`` for a command that makes its outputs in one go (train, group-map, ...).

    The folder rules of :func:`claim_folder`; a folder holding an earlier run of the same command
    with the same fingerprint (finished or killed) is redone from the start: its outputs are
    deleted first, so no stale file of it is left. Call ``folder.mark("complete")`` at the end.
    """
    folder = claim_folder(out, command, options, inputs=inputs, protect=protect, outputs=outputs, force=force, dry_run=dry_run, checked=checked)
    if folder.resumed and not dry_run:
        folder.restart()
    return folder
