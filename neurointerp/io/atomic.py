"""Atomic writes and the no-overwrite rule.

Every output file is written to a temporary file in the same folder and renamed into place,
so a killed job never leaves a half-written file under the final name. An existing output is
never replaced unless the caller passes ``force=True``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from neurointerp.errors import InputError, NeurointerpError

#: errors that mean 'the device is full' (or the user's quota, or the largest file allowed)
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
#: errors that mean 'this place cannot be written' (a bad output path: the user's to fix)
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


class DiskFullError(NeurointerpError):
    """An output could not be written for lack of space (exit 1); nothing was left under its name."""


def write_failure(path: Path, exc: BaseException) -> NeurointerpError | None:
    """The one-line error for an ``OSError`` while writing ``path`` (``None``: not a write failure we name)."""
    code = getattr(exc, "errno", None)
    if code in _FULL:
        what = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large for the file system or the process limit"}[code]
        return DiskFullError(f"{path}: cannot write: {what}; nothing was written under this name (free space and run again)")
    if code in _NOT_WRITABLE:
        return InputError(f"{path}: cannot write: {os.strerror(code).lower()}")
    return None

# A run registers who must hear of each file it writes (its folder's record of written files)
# and the paths no write may replace (its inputs): see neurointerp.runs.folder.
_OBSERVERS: list[Callable[[Path], None]] = []
_PROTECTED: dict[str, str] = {}  # path -> why it must not be replaced


def _key(path: Path) -> str:
    path = Path(path)
    try:
        return str(path.parent.resolve() / path.name)
    except OSError:
        return str(path.absolute())


@contextlib.contextmanager
def watch_writes(observer: Callable[[Path], None] | None = None, protected: Iterable[str | os.PathLike] = (), others: Iterable[str | os.PathLike] = ()) -> Iterator[None]:
    """While active, ``observer(path)`` hears of every file about to be written, and no write
    may replace a ``protected`` path (a run's inputs) or one of ``others`` (another command's
    files): it raises :class:`InputError` naming it."""
    new = {}
    for paths, why in ((others, "belongs to another command's run in this folder"), (protected, "is an input of this run")):
        for p in paths:
            k = _key(Path(p))
            if k not in _PROTECTED:
                new[k] = why
    _PROTECTED.update(new)
    if observer is not None:
        _OBSERVERS.append(observer)
    try:
        yield
    finally:
        if observer is not None:
            _OBSERVERS.remove(observer)
        for k in new:
            _PROTECTED.pop(k, None)


def check_not_protected(path: str | os.PathLike) -> None:
    """Refuse to write over an input of the running command, or over another command's file."""
    if _PROTECTED:
        why = _PROTECTED.get(_key(Path(path)))
        if why is not None:
            raise InputError(f"{path}: {why}; it is never overwritten (choose another output folder)")


def note_written(path: str | os.PathLike) -> None:
    """Tell the run's observers that ``path`` is being written (for writes not made by :func:`atomic_path`)."""
    check_not_protected(path)
    for observer in list(_OBSERVERS):
        observer(Path(path))


def _suffixes(name: str) -> str:
    for ext in (".nii.gz", ".tsv.gz", ".tar.gz"):
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def check_writable(path: str | os.PathLike, force: bool = False) -> None:
    """Raise :class:`InputError` if ``path`` exists and ``force`` is false."""
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{path}: already exists (use --force to overwrite)")
    if path.exists() and path.is_dir():
        raise InputError(f"{path}: is a folder, cannot write a file there")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary file is hidden (``.<stem>.<random>.tmp<ext>``): by default it keeps the
    extension for writers that choose the format by it (matplotlib, ANTs); ``suffix`` replaces
    ``.tmp<ext>`` (``save_image`` uses ``.part`` so a left-over is never a ``*.nii.gz``). On any
    exception the temporary file is removed and ``path`` is left untouched; after a SIGKILL
    only the hidden temporary file can remain, never a partial file under the final name. The
file gets the mode the umask gives new files (``tempfile.mkstemp`` alone makes it 600, which
lab-mates could not read).
    """
    path = Path(path)
    check_not_protected(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ext = _suffixes(path.name)
        tail = suffix if suffix is not None else f".tmp{ext}"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[: -len(ext)] if ext else path.name}.", suffix=tail, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        named = write_failure(path, exc)
        if named is not None:
            raise named from exc
        raise
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes mode 600 whatever the umask: give the file the usual mode
            os.chmod(tmp_path, 0o666 & ~_umask())
        for observer in list(_OBSERVERS):  # before the rename: a kill between them leaves no unlisted file
            observer(path)
        os.replace(tmp_path, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        named = write_failure(path, exc) if isinstance(exc, OSError) else None
        if named is not None:
            raise named from exc
        raise


_UMASK: list[int] = []


def _umask() -> int:
    """The process umask (read once: ``os.umask`` can only be read by setting it)."""
    if not _UMASK:
        mask = os.umask(0o022)
        os.umask(mask)
        _UMASK.append(mask)
    return _UMASK[0]


def write_text(path: str | os.PathLike, text: str, force: bool = False) -> Path:
    """Atomically write ``text`` to ``path``."""
    path = Path(path)
    check_writable(path, force=force)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_bytes(path: str | os.PathLike, raw: bytes, force: bool = False) -> Path:
    """Atomically write ``raw`` to ``path`` (serialise first, e.g. ``torch.save`` into a
    ``BytesIO``: a full disk then raises the one-line :class:`DiskFullError`, not the
    serialiser's own message)."""
    path = Path(path)
    check_writable(path, force=force)
    with atomic_path(path) as tmp:
        tmp.write_bytes(raw)
    return path


def write_json(path: str | os.PathLike, obj, force: bool = False) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", force=force)


def _json_default(obj):
    import numpy as np

    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_table(path: str | os.PathLike, frame, force: bool = False) -> Path:
    """Atomically write a pandas DataFrame as TSV (``.tsv``) or CSV (anything else)."""
    path = Path(path)
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    return write_text(path, frame.to_csv(sep=sep, index=False, lineterminator="\n"), force=force)
