"""Fingerprints: sha256 digests of what a run, or one subject of it, was made from.

A *run fingerprint* covers the command, every option marked as changing the outputs, and the
content (sha256) of the run-level input files (checkpoints, masks, templates). A *subject
fingerprint* adds the content of the subject's own inputs (its image, truth map, field...) and
its per-subject settings (label, direction). Paths are never part of a fingerprint: moving a
checkpoint does not make a run stale, editing it does.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes; a folder is identified by its resolved path."""
    from neurointerp.io.provenance import sha256

    p = Path(path)
    if p.is_dir():
        return "folder:" + str(p.resolve())
    if not p.exists():  # the command names it in its own checks; the fingerprint just differs
        return "missing:" + str(p.absolute())
    return sha256(p)


def input_records(paths: Iterable[str | os.PathLike]) -> list[dict[str, str]]:
    return [{"path": str(Path(p).absolute()), "sha256": content(p)} for p in paths]


def run_fingerprint(command: str, options: Mapping[str, Any], inputs: Mapping[str, Any]) -> tuple[str, dict]:
    """``(fingerprint, record)`` of a run: the command, its output-affecting options and its input files.

    ``inputs`` maps a name (e.g. ``"model"``) to a file whose *content* enters the fingerprint in
    place of its path (the option of the same name, if any, is replaced by the file's sha256);
    a list of files enters as the digest of their contents, in order.
    """
    opts = dict(options)
    files = {}
    for name, path in inputs.items():
        if path is None:
            files[name] = None
            opts.pop(name, None)
            continue
        files[name] = digest([content(p) for p in path]) if isinstance(path, (list, tuple)) else content(path)
        opts.pop(name, None)
    record = {"command": command, "options": opts, "inputs": files}
    return digest(record), record


def item_fingerprint(run_fp: str, inputs: Iterable[str | os.PathLike], extra: Mapping[str, Any] | None = None) -> str:
    """A subject's fingerprint: the run's, its input files' content and its own settings."""
    return digest({"run": run_fp, "inputs": [content(p) for p in inputs], "extra": dict(extra or {})})
