"""BIDS-derivatives layout: file names, dataset_description.json, sidecars, .bidsignore.

``<out>/sub-<id>/[ses-<s>/]<datatype>/sub-<id>[_ses-<s>]_<entity>-<value>..._<suffix><ext>``
with entities in BIDS order. Custom suffixes (``attribution``, ``logjacobian``...) are listed
in ``.bidsignore`` so BIDS validators skip them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

from neurointerp._version import __version__
from neurointerp.errors import InputError
from neurointerp.io.atomic import write_json, write_text

# BIDS entity order (subset that we use), after sub and ses
ENTITY_ORDER = ("task", "acq", "rec", "run", "hemi", "space", "cohort", "res", "den", "label", "roi", "method", "desc", "stat")
_VALUE_RE = re.compile(r"^[A-Za-z0-9.+]+$")


def bids_name(participant_id: str | None, suffix: str, ext: str = ".nii.gz", session: str | None = None, **entities: Any) -> str:
    """Compose a BIDS file name; entity values must be alphanumeric (``.``/``+`` allowed)."""
    parts = []
    if participant_id:
        _check_id("participant_id", participant_id)
        parts.append(f"sub-{participant_id}")
    if session:
        _check_id("session_id", session)
        parts.append(f"ses-{session}")
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities: {sorted(unknown)}")
    for key in ENTITY_ORDER:
        value = entities.get(key)
        if value is None or value == "":
            continue
        value = str(value)
        if not _VALUE_RE.match(value):
            raise InputError(f"BIDS entity {key}-{value}: value must be letters and digits only")
        parts.append(f"{key}-{value}")
    return "_".join(parts + [suffix]) + ext


_ID_RE = re.compile(r"^[A-Za-z0-9]+$")


def _check_id(kind: str, value: str) -> None:
    """Ids become folder and file names: letters and digits only, so no path can leave the output folder."""
    if not _ID_RE.match(str(value)):
        raise InputError(f"{kind} '{value}': must be letters and digits only (no path characters, spaces or '-')")


def derivative_path(
    root: str | os.PathLike,
    participant_id: str,
    suffix: str,
    ext: str = ".nii.gz",
    session: str | None = None,
    datatype: str = "anat",
    **entities: Any,
) -> Path:
    """Full path of a per-subject derivative file."""
    _check_id("participant_id", participant_id)  # an empty id would put the file in the root
    name = bids_name(participant_id, suffix, ext=ext, session=session, **entities)  # checks the ids
    if not _ID_RE.match(str(datatype)):
        raise InputError(f"datatype '{datatype}': must be letters and digits only")
    folder = Path(root) / f"sub-{participant_id}"
    if session:
        folder = folder / f"ses-{session}"
    return folder / datatype / name


def sidecar_path(image_path: str | os.PathLike) -> Path:
    """``x.nii.gz`` -> ``x.json``."""
    p = Path(image_path)
    name = p.name
    for ext in (".nii.gz", ".nii", ".tsv", ".csv", ".png", ".pt", ".h5", ".mat"):
        if name.endswith(ext):
            return p.with_name(name[: -len(ext)] + ".json")
    return p.with_name(name + ".json")


def write_sidecar(image_path: str | os.PathLike, record: Mapping[str, Any], force: bool = False) -> Path:
    """Write the JSON sidecar of ``image_path`` atomically."""
    return write_json(sidecar_path(image_path), dict(record), force=force)


def write_dataset_description(root: str | os.PathLike, name: str, description: str = "", force: bool = False) -> Path:
    """Write ``dataset_description.json`` of a derivatives folder (kept if already ours)."""
    path = Path(root) / "dataset_description.json"
    if path.exists() and not force:
        try:
            existing = json.loads(path.read_text())
        except (OSError, ValueError):
            raise InputError(f"{path}: exists but is not valid JSON (use --force to replace it)") from None
        if any(g.get("Name") == "neurointerp" for g in existing.get("GeneratedBy", [])):
            return path
        raise InputError(f"{path}: belongs to another dataset (use --force or another output folder)")
    desc = {
        "Name": name,
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "neurointerp", "Version": __version__, "Description": description}],
    }
    return write_json(path, desc, force=True)


def add_bidsignore(root: str | os.PathLike, patterns: list[str]) -> Path:
    """Add ``patterns`` to ``<root>/.bidsignore`` (idempotent)."""
    path = Path(root) / ".bidsignore"
    lines = path.read_text().splitlines() if path.exists() else []
    new = lines + [p for p in patterns if p not in lines]
    if new != lines or not path.exists():
        write_text(path, "\n".join(new) + "\n", force=True)
    return path


def prepare_output_dir(out: str | os.PathLike, force: bool = False, marker: str | None = None) -> Path:
    """Create ``out``; refuse a non-empty folder unless ``force`` or it already holds ``marker``.

    ``marker`` is a file name whose presence shows the folder is a previous run of the same
    command (which may then be resumed); nothing in the folder is deleted either way.

    When a command is running (:mod:`neurointerp.runs.context`), this is where it claims OUT:
    the folder-ownership rules of :func:`neurointerp.runs.folder.claim_folder` apply and every
    later write of the run is recorded. Otherwise (a bare call):

    Hidden entries (``.bidsignore``, temporary files of atomic writes, ``.work/``) do not count:
    array tasks that start together into one folder see each other's half-made folder as empty
    until the marker is written, instead of refusing it.
    """
    from neurointerp.runs.context import claim_current

    out = Path(out)
    if claim_current(out, force) is not None:  # the running command claims OUT (neurointerp.runs.folder)
        return out
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.exists() and not force and any(not p.name.startswith(".") for p in out.iterdir()):
        if marker is None or not (out / marker).exists():
            raise InputError(f"{out}: folder is not empty (use --force to write into it)")
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, name: str = ".lock") -> Iterator[None]:
    """An exclusive lock on ``<folder>/<name>`` (``fcntl.lockf``: also across NFS clients).

    Array tasks that rebuild a shared file from what is on disk (a cohort table, failures.tsv)
    hold it, so a task whose view is older cannot rename its table over a newer one. Where
    ``fcntl`` does not exist (Windows) it is a no-op.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(folder) / name
    with open(path, "a+") as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(fh, fcntl.LOCK_UN)
