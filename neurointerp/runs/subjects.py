"""The per-subject job runner shared by every per-subject command.

A command supplies only its *items* (one per subject, or per subject and direction: the files
it reads and the files it writes), how to process a batch of them, and how to finalise (the
group outputs). The runner does the rest, the same way for every command:

* **array share**: task ``k`` of ``n`` takes the items whose ``share`` index is ``k, k + n, ...``
  (``--array-index``/``--array-size``, default ``$SLURM_ARRAY_TASK_ID``/``$SLURM_ARRAY_TASK_COUNT``);
* **done / stale / missing**: ``OUT/.neurointerp/<command>/done/<key>.json`` is written after
  an item's outputs and holds its fingerprint (run fingerprint + sha256 of the item's inputs +
  its own settings). An item is *done* when that record matches and every output exists; a
  record that no longer matches (an input changed) makes it *stale*: it is redone, never kept;
  no record: *missing*. ``--force`` redoes this task's share;
* **failure isolation**: an item that raises is recorded (``failed/<key>.json``, rebuilt into
  ``OUT/failures.tsv``) and the others go on; a batch that fails is retried one item at a time
  so only the culprit fails;
* **completion barrier**: under the folder lock, the task that finds every item of the cohort
  done runs ``finalize`` once (``final.json`` records the set of item fingerprints it used), so
  the group outputs come from the maps of one run;
* exit codes: every failure an input problem -> exit 2, any other -> exit 1, none -> 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from neurointerp.errors import InputError, NeurointerpError
from neurointerp.io.atomic import DiskFullError
from neurointerp.runs.fingerprint import digest, item_fingerprint
from neurointerp.runs.folder import RunFolder, lock, read_json

FAILURE_COLUMNS = ["participant_id", "session_id", "item", "row", "image", "error_type", "message"]


@dataclass
class Item:
    """One unit of per-subject work.

    ``key``: unique within the run (it names the record files); ``inputs``: files whose content
    defines the item; ``outputs``: every file the item writes; ``maps``: the per-subject maps
    among them (what group-map may read); ``extra``: per-item settings that change its outputs;
    ``share``: the index that decides which array task takes it (items of one subject share it).
    """

    key: str
    inputs: Sequence[Path]
    outputs: Sequence[Path]
    maps: Sequence[Path] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    share: int = 0
    participant_id: str = ""
    session_id: str = ""
    where: str = ""  # "cohort.csv row 4"
    image: str = ""
    payload: Any = None
    fingerprint: str = ""


@dataclass
class RunOutcome:
    """What one task did: items done now, skipped (already done), failed; whether the run is complete."""

    folder: RunFolder
    done: list[Item] = field(default_factory=list)
    skipped: list[Item] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    share: list[Item] = field(default_factory=list)
    complete: bool = False
    finalized: bool = False
    pending: int = 0
    final_outputs: list[str] = field(default_factory=list)


class RunFailures(NeurointerpError):
    """Some items failed (listed in failures.tsv); the others finished."""

    def __init__(self, message: str, outcome: RunOutcome, exit_code: int = 1):
        super().__init__(message)
        self.outcome = outcome
        self.exit_code = exit_code


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _safe(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)


class _Records:
    def __init__(self, folder: RunFolder):
        self.folder = folder
        self.done = folder.dir / "done"
        self.failed = folder.dir / "failed"

    def done_path(self, item: Item) -> Path:
        return self.done / f"{_safe(item.key)}.json"

    def failed_path(self, item: Item) -> Path:
        return self.failed / f"{_safe(item.key)}.json"

    def status(self, item: Item) -> str:
        rec = read_json(self.done_path(item))
        if rec is None:
            return "missing"
        if rec.get("fingerprint") != item.fingerprint:
            return "stale"
        if not all(Path(p).exists() for p in item.outputs):
            return "missing"
        return "done"

    def write_done(self, item: Item) -> None:
        from neurointerp.io.atomic import write_json

        out = self.folder.out
        rec = {
            "key": item.key,
            "participant_id": item.participant_id,
            "session_id": item.session_id,
            "fingerprint": item.fingerprint,
            "outputs": [_rel(p, out) for p in item.outputs],
            "maps": [_rel(p, out) for p in item.maps],
        }
        with contextlib.suppress(FileNotFoundError):
            self.failed_path(item).unlink()
        write_json(self.done_path(item), rec, force=True)

    def forget(self, item: Item) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.done_path(item).unlink()

    def write_failed(self, item: Item, error_type: str, message: str) -> dict:
        from neurointerp.io.atomic import write_json

        rec = {
            "participant_id": item.participant_id,
            "session_id": item.session_id,
            "item": item.key,
            "row": item.where,
            "image": item.image,
            "error_type": error_type,
            "message": " ".join(message.split())[:500],
        }
        write_json(self.failed_path(item), rec, force=True)
        return rec


def _rel(p: Path | str, out: Path) -> str:
    try:
        return os.path.relpath(Path(p).absolute(), out.absolute())
    except ValueError:
        return str(Path(p).absolute())


def resolve_share(items: Sequence[Item], array_index: int | None, array_size: int | None) -> list[Item]:
    from neurointerp.cluster import resolve_array

    index, size = resolve_array(array_index, array_size)
    return [it for it in items if it.share % size == index]


def pending_items(folder: RunFolder, items: Sequence[Item], array_index: int | None = None, array_size: int | None = None) -> list[Item]:
    """The items of this task's share that are not done (read-only): what a command must check
    before anything is written."""
    rec = _Records(folder)
    out = []
    for it in resolve_share(items, array_index, array_size):
        it.fingerprint = item_fingerprint(folder.fingerprint, it.inputs, it.extra)
        if folder.force or rec.status(it) != "done":
            out.append(it)
    return out


def run_items(
    folder: RunFolder,
    items: Sequence[Item],
    process: Callable[[list[Item]], Mapping[str, BaseException | None] | None],
    *,
    batch_size: int = 1,
    array_index: int | None = None,
    array_size: int | None = None,
    finalize: Callable[[list[Item]], Any] | None = None,
    finalize_partial: bool = False,
    label: str | None = None,
    progress: bool = True,
    parallel: int = 1,
    process_one: Callable[[Item], Any] | None = None,
    noun: str = "subject",
    isolate: bool = False,
    tasks_per_worker: int = 1,
) -> RunOutcome:
    """Process this task's share of ``items`` into ``folder`` (see the module docstring).

    ``process(batch)`` writes the outputs of each item of ``batch``; it may return
    ``{key: exception}`` for items that failed (the others count as done) or raise, in which case
    the batch is retried one item at a time. ``finalize(items)`` writes the group outputs from
    the items of the whole cohort (all done); with ``finalize_partial`` it also runs on the done
    items while others are still missing or failed (e.g. preprocess's output cohort table).
    With ``parallel > 1``, ``process_one(item)`` (a picklable module-level function) runs in that
    many worker processes, and each item is recorded as soon as it ends; a worker process is
    replaced after ``tasks_per_worker`` items (1: a fresh process per item); ``isolate`` runs the
    items in worker processes even with ``parallel`` 1.
    Raises :class:`RunFailures` at the end when an item of this task failed.
    """
    from neurointerp.progress import info, track

    label = label or folder.command
    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise InputError(f"two items would write the same outputs ({dup}): each participant/session must appear once")
    for it in items:
        it.fingerprint = item_fingerprint(folder.fingerprint, it.inputs, it.extra)
    rec = _Records(folder)
    share = resolve_share(items, array_index, array_size)
    outcome = RunOutcome(folder=folder, share=list(share))

    todo: list[Item] = []
    for it in share:
        state = rec.status(it)
        if state == "done" and not folder.force:
            outcome.skipped.append(it)
            with contextlib.suppress(FileNotFoundError):
                rec.failed_path(it).unlink()
            continue
        if state != "missing" or folder.force:
            rec.forget(it)  # stale or forced: not done until rewritten
        todo.append(it)
    if outcome.skipped and todo:
        info(f"{label}: {len(outcome.skipped)} already done, {len(todo)} to do")

    def record(item: Item, exc: BaseException | None) -> None:
        if exc is None:
            rec.write_done(item)
            outcome.done.append(item)
        elif isinstance(exc, DiskFullError):
            # a full disk fails every later subject too: stop at the first, in one line
            with contextlib.suppress(OSError, NeurointerpError):
                rec.write_failed(item, "runtime", _one_line(exc))
            raise exc
        else:
            kind = "input" if isinstance(exc, InputError) else "runtime"
            failure = rec.write_failed(item, kind, _one_line(exc))
            outcome.failed.append(failure)
            who = f"{item.where} ({item.key})" if item.where else item.key
            from neurointerp.progress import error

            error(f"{who}: {failure['message']}")

    with folder.writing():
        if process_one is not None and todo and (isolate or (parallel > 1 and len(todo) > 1)):
            for item, exc in _parallel(process_one, todo, max(1, parallel), label if progress else None, tasks_per_worker):
                record(item, exc)
        else:
            batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
            it_batches = track(batches, description=label, total=len(batches)) if progress and batches else batches
            for batch in it_batches:
                for item, exc in _process(process, batch):
                    record(item, exc)

        with lock(folder.out):
            if not folder.still_ours():
                raise InputError(f"{folder.out}: another {folder.command} run with other settings took over this folder (--force) while this one ran")
            _write_failures(folder, items, rec)
            states = [rec.status(it) for it in items]
            outcome.pending = sum(s != "done" for s in states)
            outcome.complete = outcome.pending == 0
            done_items = [it for it, s in zip(items, states) if s == "done"]
            final_fp = digest(sorted(it.fingerprint for it in done_items))
            final = read_json(folder.dir / "final.json") or {}
            if finalize is not None and (outcome.complete or finalize_partial) and final.get("fingerprint") != final_fp:
                written: list[Path] = []
                from neurointerp.io.atomic import watch_writes, write_json

                with watch_writes(written.append):
                    finalize(done_items)
                outcome.finalized = True
                outcome.final_outputs = [_rel(p, folder.out) for p in written]
                write_json(folder.dir / "final.json", {"fingerprint": final_fp, "items": len(done_items), "complete": outcome.complete, "outputs": outcome.final_outputs}, force=True)
            if outcome.complete:
                folder.mark("complete", report=False)
            elif (read_json(folder.run_json) or {}).get("state") == "complete":
                folder.mark("running")
            # every task rebuilds the run's report from what is on disk (never fails the run)
            n_failed = sum(1 for it, st in zip(items, states) if st != "done" and rec.failed_path(it).exists())
            folder.write_report(counts={
                "total": len(items), "done": len(done_items), "failed": n_failed, "pending": outcome.pending,
                "done_keys": [it.key for it in done_items],
                "task": {"share": len(share), "done": len(outcome.done), "skipped": len(outcome.skipped), "failed": len(outcome.failed)},
            })

    from neurointerp.runs.context import note_outcome

    note_outcome(outcome)
    if outcome.failed:
        n, m = len(outcome.failed), len(share)
        every_input = all(f["error_type"] == "input" for f in outcome.failed)
        first = outcome.failed[0]
        raise RunFailures(
            f"{label}: {n} of {m} {noun}{'s' if m != 1 else ''} failed; see {folder.out / 'failures.tsv'}",
            outcome,
            exit_code=2 if every_input else 1,
        )
    if not outcome.complete and finalize is not None and not finalize_partial:
        info(f"{label}: {outcome.pending} of {len(items)} still to do (other array tasks); the group outputs are written by the task that finishes last")
    return outcome


def _process(process, batch: list[Item]) -> Iterable[tuple[Item, BaseException | None]]:
    """Run a batch; if it raises, run its items one at a time so only the culprit fails."""
    try:
        result = process(batch) or {}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - isolate the failing item
        if len(batch) == 1 or isinstance(exc, DiskFullError):
            return [(batch[0], exc)]
        out = []
        for item in batch:
            out.extend(_process(process, [item]))
        return out
    return [(it, result.get(it.key)) for it in batch]


def _parallel(process_one, items: list[Item], workers: int, label: str | None, tasks_per_worker: int = 1):
    """``process_one`` over ``items`` in worker processes (spawned; each replaced after
    ``tasks_per_worker`` items, so what a library leaks per item stays bounded)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from neurointerp.progress import track

    kwargs = {"max_tasks_per_child": max(1, int(tasks_per_worker))} if sys.version_info >= (3, 11) else {}
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=mp.get_context("spawn"), **kwargs) as pool:
        futures = {pool.submit(process_one, item): item for item in items}
        done = as_completed(futures)
        try:
            for fut in (track(done, description=label, total=len(futures)) if label else done):
                item = futures[fut]
                try:
                    fut.result()
                    result = None
                except BrokenProcessPool:
                    result = NeurointerpError(f"{item.image or item.key}: worker process died (out of memory?)")
                except Exception as exc:  # noqa: BLE001 - one item's failure
                    result = exc
                yield item, result
        except GeneratorExit:  # the caller stopped (a full disk): start nothing more
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _write_failures(folder: RunFolder, items: Sequence[Item], rec: _Records) -> None:
    """Rebuild ``OUT/failures.tsv`` from the failure records of every task (none: removed)."""
    import pandas as pd

    from neurointerp.io.atomic import write_table

    rows = []
    for it in items:
        r = read_json(rec.failed_path(it))
        if r is not None and rec.status(it) != "done":
            rows.append(r)
    path = folder.out / "failures.tsv"
    if rows:
        write_table(path, pd.DataFrame(rows, columns=FAILURE_COLUMNS), force=True)
    elif path.exists():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def done_records(folder_out: str | os.PathLike, command: str) -> list[dict]:
    """The done records of a command's run in a folder (for readers of per-subject maps)."""
    from neurointerp.runs.folder import records_dir, slug

    d = records_dir(folder_out) / slug(command) / "done"
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.json")):
        r = read_json(p)
        if r:
            out.append(r)
    return out
