"""One HTML report for every run (fMRIPrep/MRIQC style), built from the run's own record.

Every command's run ends here (:func:`write_run_report`): the per-subject runner calls it after
its locked completion step (so each array task, and every resubmission, rebuilds it from what is
on disk), and a whole-run command's ``folder.mark("complete")`` calls it. It never fails the run:
an error while building the page is one ``warning:`` line.

The page, ``OUT/report.html`` (``OUT/<command>_report.html`` when another command's run shares
the folder or ``report.html`` is not this run's), holds:

* a header: command, state, neurointerp version, dates, host, the exact command line;
* a summary: items done / failed / still to do, files written;
* the command's own sections (:func:`register`): preprocess's cohort QC table and per-subject
  QC figures, train's held-out evidence, saliency's model skill before any map, ...;
* the failures (``failures.tsv``);
* a methods paragraph generated from the options actually used, with citations and the
  versions of the libraries, read when the report is written;
* provenance: options, input files with sha256, software versions, every file written.

Nothing here knows output file names beyond what each command's hook reads: files are found in
the run's ``written.txt`` (and per-subject ``done`` records).
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from neurointerp.report.html import Markup, Section, esc, kv_html, render_page, table_html
from neurointerp.runs.folder import slug

#: commands without a report: they write data sets (inputs of other commands), not analyses
NO_REPORT_PREFIXES = ("synth",)

_HOOKS: dict[str, list[Callable[["RunView"], list[Section]]]] = {}
_METHODS: dict[str, Callable[["RunView"], tuple[str, list[str]]]] = {}


def register(*commands: str) -> Callable:
    """Decorator: ``fn(view) -> [Section, ...]`` adds sections to the reports of ``commands``
    (names as in the run record, e.g. ``"simulate apply"``)."""

    def deco(fn):
        for c in commands:
            _HOOKS.setdefault(c, []).append(fn)
        return fn

    return deco


def register_methods(*commands: str) -> Callable:
    """Decorator: ``fn(view) -> (paragraph, [citation keys])`` writes the methods paragraph."""

    def deco(fn):
        for c in commands:
            _METHODS[c] = fn
        return fn

    return deco


@dataclass
class RunView:
    """What the report knows of a run: its record, the files it wrote, its per-subject records."""

    out: Path
    command: str
    record: dict
    written: list[Path]
    done: list[dict] = field(default_factory=list)
    failures: Any = None  # DataFrame of failures.tsv, or None
    counts: dict | None = None  # from the per-subject runner: total, done, failed, pending, task
    page: Path | None = None

    @property
    def options(self) -> dict:
        return dict(self.record.get("options") or {})

    def opt(self, name: str, default: Any = None) -> Any:
        v = self.options.get(name, default)
        return default if v is None else v

    def rel(self, path: Path) -> str:
        try:
            return os.path.relpath(Path(path).absolute(), self.out.absolute()).replace(os.sep, "/")
        except ValueError:
            return str(path)

    def find(self, pattern: str) -> list[Path]:
        """Files this run wrote whose path relative to OUT (or whose name) matches ``pattern``."""
        return [p for p in self.written if fnmatch.fnmatch(self.rel(p), pattern) or fnmatch.fnmatch(p.name, pattern)]

    def first(self, pattern: str) -> Path | None:
        found = self.find(pattern)
        return found[0] if found else None

    def item_files(self, pattern: str) -> list[tuple[dict, Path]]:
        """``(done record, file)`` for each per-subject output matching ``pattern``."""
        out = []
        for rec in self.done:
            for rel in rec.get("outputs", []):
                p = Path(rel) if Path(rel).is_absolute() else self.out / rel
                if (fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(p.name, pattern)) and p.exists():
                    out.append((rec, p))
        return out


# --------------------------------------------------------------------------- where and when


def report_path(out: str | os.PathLike, command: str) -> Path | None:
    """``OUT/report.html``, or ``OUT/<command>_report.html`` when another command's run shares the
    folder or ``report.html`` is someone else's file; ``None`` when both names are taken."""
    from neurointerp.runs.folder import _resolved, owners, written_by

    out = Path(out)
    me = slug(command)
    mine = {_resolved(p) for p in written_by(out, command)}
    names = ["report.html", f"{me}_report.html"]
    for name in names:
        if _resolved(out / name) in mine:
            return out / name
    others = [k for k in owners(out) if k != me]
    for name in names[1:] if others else names:
        if not (out / name).exists():
            return out / name
    return None


def wants_report(command: str) -> bool:
    return not any(command == p or command.startswith(p + " ") for p in NO_REPORT_PREFIXES)


def write_run_report(folder, counts: dict | None = None) -> Path | None:
    """Build the run's report; never raises (a failure is one warning line). Returns its path."""
    try:
        if not wants_report(folder.command):
            return None
        return build_run_report(folder, counts=counts)
    except Exception as exc:  # noqa: BLE001 - the report must never fail the run
        from neurointerp.progress import warn

        text = " ".join(str(exc).split())[:300]
        warn(f"{folder.command}: the HTML report of {folder.out} was not written ({type(exc).__name__}: {text}); the run's outputs are kept")
        return None


def build_run_report(folder, counts: dict | None = None, extra: Sequence[Section] = ()) -> Path | None:
    """Write the report of ``folder`` (a :class:`~neurointerp.runs.folder.RunFolder`) atomically and
    list it in the run's ``written.txt``."""
    from neurointerp.io.atomic import write_text
    from neurointerp.runs.folder import _resolved, written_by

    out = Path(folder.out)
    path = report_path(out, folder.command)
    if path is None:
        from neurointerp.progress import warn

        warn(f"{folder.command}: report.html and its other name in {out} belong to another run; no HTML report written")
        return None
    view = _view(folder, counts, path)
    extra = list(extra) + _context_sections(folder.command)
    page = render_run_page(view, extra)
    write_text(path, page, force=True)
    if _resolved(path) not in {_resolved(p) for p in written_by(out, folder.command)}:
        folder.note(path)
    if (out / ".bidsignore").is_file():  # a BIDS derivatives folder: the page is not a BIDS file
        from neurointerp.io.derivatives import add_bidsignore

        add_bidsignore(out, [path.name])
    return path


def _context_sections(command: str) -> list[Section]:
    """Sections a running command handed over (the demo's steps) through its run context."""
    from neurointerp.runs.context import current

    run = current()
    if run is None or getattr(run.options, "command", None) != command:
        return []
    return list(getattr(run, "report_sections", None) or [])


def _view(folder, counts: dict | None, page: Path) -> RunView:
    from neurointerp.runs.folder import read_json, written_by
    from neurointerp.runs.subjects import done_records

    out = Path(folder.out)
    record = read_json(folder.run_json) or dict(folder.record)
    seen, written = set(), []
    for p in written_by(out, folder.command):
        if p.exists() and p.is_file() and p.absolute() != page.absolute() and str(p) not in seen:
            seen.add(str(p))
            written.append(p)
    done = done_records(out, folder.command)
    if counts and counts.get("done_keys") is not None:
        keys = set(counts["done_keys"])
        done = [r for r in done if r.get("key") in keys]
    failures = None
    fpath = out / "failures.tsv"
    if fpath.exists() and _resolved_in(fpath, written):
        import pandas as pd

        failures = pd.read_csv(fpath, sep="\t", dtype=str, keep_default_na=False)
    return RunView(out=out, command=folder.command, record=record, written=written, done=done, failures=failures, counts=counts, page=page)


def _resolved_in(p: Path, files: Iterable[Path]) -> bool:
    return any(Path(f).absolute() == p.absolute() for f in files)


# --------------------------------------------------------------------------- the page


def render_run_page(view: RunView, extra: Sequence[Section] = ()) -> str:
    from neurointerp.report import sections as _  # noqa: F401 - registers the commands' hooks
    from neurointerp.report.methods import methods_section

    sections: list[Section] = [_summary(view)]
    for hook in _HOOKS.get(view.command, []):
        try:
            sections += hook(view)
        except Exception as exc:  # noqa: BLE001 - one broken section does not lose the page
            sections.append(Section(f"{hook.__name__.strip('_').replace('_', ' ')}", f"This section could not be built: {type(exc).__name__}: {exc}", status="failed"))
    sections += list(extra)
    sections.append(_failures(view))
    sections.append(methods_section(view, _METHODS.get(view.command)))
    sections.append(_provenance(view))
    title = f"neurointerp {view.command}: {view.out.name}"
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    footer = f"Written {now} by neurointerp {view.record.get('version', '')} from {view.out}/.neurointerp/{slug(view.command)}/ (run.json, written.txt). Rebuilt at the end of every run or resubmission."
    return render_page(view.page or view.out / "report.html", title, sections, footer=footer)


def _state(view: RunView) -> tuple[str, str]:
    """(badge class, words) of the run's state."""
    c = view.counts or {}
    failed = c.get("failed", len(view.failures) if view.failures is not None else 0)
    state = view.record.get("state", "")
    if failed:
        return "bad", f"{failed} failed"
    if state == "complete":
        return "ok", "complete"
    if c.get("pending"):
        return "warn", f"{c['pending']} still to do (other array tasks or a resubmission)"
    return "warn", state or "unknown"


def _summary(view: RunView) -> Section:
    import platform
    import socket

    rec = view.record
    cls, words = _state(view)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    cmdline = rec.get("command_line") or []
    import shlex

    pairs: list[tuple[str, Any]] = [
        ("State", Markup(f"<span class='badge {cls}'>{esc(words)}</span>")),
        ("Command", rec.get("command", view.command)),
        ("Output folder", str(view.out.absolute())),
        ("neurointerp", rec.get("version", "")),
        ("Started", rec.get("started", "")),
        ("Report written", now),
        ("Host", f"{socket.gethostname()} ({platform.system()} {platform.machine()}, Python {platform.python_version()})"),
    ]
    c = view.counts
    if c:
        not_yet = max(0, c.get("pending", 0) - c.get("failed", 0))
        pairs.append(("Items", f"{c.get('total', 0)} in the run: {c.get('done', 0)} done, {c.get('failed', 0)} failed, {not_yet} not yet done"))
        t = c.get("task")
        if t:
            pairs.append(("This task", f"{t.get('share', 0)} item(s) in its share: {t.get('done', 0)} done now, {t.get('skipped', 0)} already done (skipped), {t.get('failed', 0)} failed"))
    elif view.done:
        pairs.append(("Items", f"{len(view.done)} done"))
    pairs.append(("Files written", f"{len(view.written)} (listed under Provenance)"))
    body = kv_html(pairs)
    body += "<h3>Command line</h3><pre class='cmd'>" + esc(" ".join(shlex.quote(str(a)) for a in cmdline) or "(called from Python)") + "</pre>"
    return Section("Summary", html=body, anchor="summary")


def _failures(view: RunView) -> Section:
    if view.failures is None or len(view.failures) == 0:
        text = "No failures." if view.counts is not None else "No failures recorded (this command makes its outputs in one go: a failure stops it with a one-line error and no report)."
        return Section("Failures", text, anchor="failures")
    cols = [c for c in ("participant_id", "session_id", "row", "image", "error_type", "message") if c in view.failures.columns and (view.failures[c] != "").any()]
    text = (f"{len(view.failures)} item(s) failed (from failures.tsv); the others finished. Fix the cause and run the same command "
            "again: only the missing and failed items are redone. error_type 'input': a problem with the input (exit 2); 'runtime': anything else (exit 1).")
    return Section("Failures", text, table=view.failures[cols], flag_rows=range(len(view.failures)), anchor="failures", status="failed")


def _provenance(view: RunView) -> Section:
    import pandas as pd

    from neurointerp.report.methods import versions

    rec = view.record
    parts = ["<p>Everything needed to repeat this run: the options (those that change the outputs make the run's fingerprint), "
             "the input files with their sha256, the software versions, and every file written. "
             f"To repeat it: the command line above, or <code>neurointerp {esc(view.command)} ARGUMENTS --config "
             f"{esc(str((view.out / '.neurointerp' / slug(view.command) / 'run.json').absolute()))}</code> with the same positional arguments.</p>"]
    opts = rec.get("options") or {}
    if opts:
        rows = [{"option": "--" + k.replace("_", "-"), "value": json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else str(v))} for k, v in opts.items()]
        parts.append("<h3>Options (output-affecting)</h3>" + table_html(pd.DataFrame(rows), max_rows=500))
    inputs = rec.get("inputs") or {}
    paths = rec.get("input_paths") or {}
    if inputs:
        rows = [{"input": k, "path": paths.get(k) or "", "sha256": v if isinstance(v, str) else (json.dumps(v) if v is not None else "")} for k, v in inputs.items()]
        parts.append("<h3>Inputs</h3>" + table_html(pd.DataFrame(rows)))
    parts.append(f"<p class='note'>Run fingerprint: <code>{esc(rec.get('fingerprint', ''))}</code></p>")
    parts.append("<h3>Software</h3>" + kv_html([(k, v) for k, v in versions().items()]))
    files = "".join(f"<li><code>{esc(view.rel(p))}</code></li>" for p in view.written[:2000])
    more = f"<li>... {len(view.written) - 2000} more</li>" if len(view.written) > 2000 else ""
    parts.append(f"<details><summary>Files written ({len(view.written)})</summary><ul>{files}{more}</ul></details>")
    return Section("Provenance", html="".join(parts), anchor="provenance")
