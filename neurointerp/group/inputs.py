"""Sets of maps for group statistics: resolve, join with covariates, check grids, stream.

A map set comes from a folder of NIfTI files, a glob pattern, or a table (CSV/TSV) with a
``map`` column (paths relative to the table). Participant ids come from the table or from the
``sub-<id>`` part of each file name. Covariates come from the same table or from a separate
table joined on ``participant_id``. Every problem is reported with the file or row it concerns.

Before any data is read, the headers of all maps are compared (shape and affine) so that a
map on another grid is named at once. Data are then streamed in small batches
(:func:`iter_batches`): memory does not grow with the number of maps.
"""

from __future__ import annotations

import glob as _glob
import os
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from neurointerp.errors import CohortError, InputError

_SUB_RE = re.compile(r"sub-([A-Za-z0-9]+)")
_SES_RE = re.compile(r"ses-([A-Za-z0-9]+)")
_ID_RE = re.compile(r"^[A-Za-z0-9]+$")
MISSING = {"", "na", "n/a", "nan", "none", "null"}


@dataclass
class MapSet:
    """Validated maps on one grid, with their covariates.

    ``frame`` (pandas) has one row per map: ``participant_id``, ``map`` (absolute path) and
    the covariate columns; ``where`` names the source of each row for messages
    (``table.tsv row 5`` or the file path).
    """

    frame: "object"
    where: list[str]
    shape: tuple[int, int, int]
    affine: np.ndarray
    header: object
    source: str
    cov_where: list[str] | None = None
    cov_source: str = ""
    members: list[list[str]] | None = None  # --sessions mean: the session maps averaged into each row

    def check_covariates(self, columns: Sequence[str], numeric: Sequence[str] = ()) -> None:
        """Every map has a value for ``columns`` (numbers for ``numeric``), else one line."""
        check_covariates(self.frame, self.cov_where or self.where, columns, numeric, self.cov_source or self.source)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def paths(self) -> list[Path]:
        return [Path(p) for p in self.frame["map"]]

    @property
    def participant_ids(self) -> list[str]:
        return list(self.frame["participant_id"])


def _participant_from_name(path: Path) -> str:
    m = _SUB_RE.search(path.name)
    if m:
        return m.group(1)
    stem = path.name[:-7] if path.name.endswith(".nii.gz") else path.stem
    pid = re.sub(r"[^A-Za-z0-9]", "", stem)
    if not pid:
        raise InputError(f"{path}: cannot derive a participant id from the file name (use a table with participant_id)")
    return pid


def _session_from_name(path: Path) -> str:
    m = _SES_RE.search(path.name)
    return m.group(1) if m else ""


def resolve_map_paths(maps: str | os.PathLike) -> tuple[list[Path], str]:
    """Paths of a folder's NIfTI files (recursive if the folder itself has none) or of a glob."""
    from neurointerp.io.nifti import is_nifti_path

    from neurointerp.runs.maps import is_per_subject, maps_of_folder

    text = str(maps)
    path = Path(text)
    if path.is_dir():
        listed = maps_of_folder(path)  # a neurointerp output folder: its runs' per-subject maps only
        if listed is not None:
            return listed, str(path)
        found = sorted(p for p in path.iterdir() if p.is_file() and is_nifti_path(p) and not p.name.startswith("."))
        if not found:  # hidden files and folders (temporary files of a killed run, .work/) are never maps
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and is_nifti_path(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and "group" not in p.relative_to(path).parts[:-1]  # group outputs are never maps of subjects
            )
        if not found:
            raise InputError(f"{path}: no NIfTI maps (.nii/.nii.gz) in this folder")
        return found, str(path)
    if any(ch in text for ch in "*?["):
        found = sorted(Path(p) for p in _glob.glob(os.path.expanduser(text), recursive=True) if is_nifti_path(p) and Path(p).is_file())
        if not found:
            raise InputError(f"{text}: the pattern matches no NIfTI files")
        cache: dict = {}
        kept = [p for p in found if is_per_subject(p, cache)]
        if not kept:
            raise InputError(f"{text}: the pattern matches only group or derived outputs ({found[0].name}, ...), no per-subject maps")
        found = kept
        return found, text
    if not path.exists():
        raise InputError(f"{path}: not found (expected a folder of maps, a glob pattern or a table with a 'map' column)")
    raise InputError(f"{path}: expected a folder of maps, a glob pattern or a .csv/.tsv table with a 'map' column")


def read_table(path: str | os.PathLike) -> tuple["object", list[int]]:
    """A CSV/TSV as strings (no NA guessing), with the spreadsheet row of each record."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: table not found")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".txt"):
        raise InputError(f"{path}: unknown table type '{suffix}' (expected .csv or .tsv)")
    from neurointerp.io.cohort import _sniff_delimiter

    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty table (no header row)")
    try:
        with open(path, encoding="utf-8-sig") as fh:
            _sniff_delimiter(path, fh.readline())
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        frame = pd.read_csv(path, sep="," if suffix == ".csv" else "\t", dtype=str, keep_default_na=False, encoding="utf-8-sig", skip_blank_lines=True)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable table ({str(exc).splitlines()[0][:120]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.apply(lambda col: col.str.strip())
    if "participant_id" not in frame.columns:
        raise InputError(f"{path} row 1: missing column 'participant_id'")
    rows = [int(i) + 2 for i in range(len(frame))]
    frame["participant_id"] = [p[4:] if p.startswith("sub-") else p for p in frame["participant_id"]]
    problems = []
    for r, pid in zip(rows, frame["participant_id"]):
        if not pid:
            problems.append(f"row {r}: participant_id is empty")
        elif not _ID_RE.match(pid):
            problems.append(f"row {r}: participant_id '{pid}' must be letters and digits only (no path characters, spaces or '-')")
    if not len(frame):
        problems.append("no rows after the header")
    if problems:
        raise CohortError(path, problems)
    return frame, rows


def collect_maps(
    maps: str | os.PathLike,
    covariates: str | os.PathLike | None = None,
    required: Sequence[str] = (),
    numeric: Sequence[str] = (),
) -> MapSet:
    """Resolve a map set, join its covariates and check that every map is on the same grid.

    Parameters
    ----------
    maps
        Folder, glob pattern, or CSV/TSV with ``participant_id`` and ``map`` columns.
    covariates
        Optional CSV/TSV with ``participant_id`` and covariate columns (joined on the id; it
        takes precedence over same-named columns of a maps table).
    required
        Columns that must exist with a value for every map (e.g. those of the design).
    numeric
        Of those, columns that must hold a finite number.
    """
    import pandas as pd

    from neurointerp.io.nifti import is_nifti_path

    mpath = Path(str(maps))
    if mpath.is_file() and mpath.suffix.lower() in (".csv", ".tsv", ".txt"):
        frame, rows = read_table(mpath)
        if "map" not in frame.columns:
            raise InputError(f"{mpath} row 1: missing column 'map' (paths of the maps)")
        from neurointerp.runs.maps import is_per_subject

        problems = []
        paths = []
        cache: dict = {}
        for r, value in zip(rows, frame["map"]):
            p = Path(value) if os.path.isabs(value) else (mpath.parent / value)
            if not value:
                problems.append(f"row {r}: map is empty")
            elif not is_nifti_path(p):
                problems.append(f"row {r}: map '{value}' is not a NIfTI file name (.nii or .nii.gz)")
            elif not p.is_file():
                problems.append(f"row {r}: map '{value}' not found")
            elif not is_per_subject(p, cache):
                problems.append(f"row {r}: map '{value}' is a group or derived output, not a per-subject map")
            paths.append(str(p.absolute()))
        if problems:
            raise CohortError(mpath, problems)
        frame["map"] = paths
        where = [f"{mpath} row {r}" for r in rows]
        source = str(mpath)
    else:
        found, source = resolve_map_paths(maps)
        frame = pd.DataFrame({"participant_id": [_participant_from_name(p) for p in found], "map": [str(p.absolute()) for p in found]})
        sessions = [_session_from_name(p) for p in found]
        if any(sessions):
            frame["session_id"] = sessions
        where = [str(p) for p in found]

    keys = list(zip(frame["participant_id"], frame["session_id"] if "session_id" in frame.columns else [""] * len(frame)))
    seen: dict = {}
    for w, key in zip(where, keys):
        if key in seen:
            raise InputError(f"{w}: participant '{key[0]}'{' session ' + repr(key[1]) if key[1] else ''} appears twice (first at {seen[key]})")
        seen[key] = w

    cov_where = where
    if covariates is not None:
        cpath = Path(covariates)
        cov, crows = read_table(cpath)
        # a per-session table (session_id filled in) joins on (participant, session)
        per_session = "session_id" in cov.columns and any(v.strip() for v in cov["session_id"])
        if per_session:
            cov["session_id"] = [v[4:] if v.startswith("ses-") else v for v in cov["session_id"]]
            ckeys = list(zip(cov["participant_id"], cov["session_id"]))
            if "session_id" not in frame.columns:
                raise InputError(f"{cpath}: has a session_id column but the maps have no sessions (no ses-<label> in their names or table)")
        else:
            ckeys = list(cov["participant_id"])
        seen_c: dict = {}
        for r, key in zip(crows, ckeys):
            if key in seen_c:
                what = f"participant_id '{key[0]}' with session_id '{key[1]}'" if per_session else f"participant_id '{key}'"
                raise InputError(f"{cpath} row {r}: duplicate {what} (first at row {seen_c[key]})")
            seen_c[key] = r
        index = {key: i for i, key in enumerate(ckeys)}
        mkeys = list(zip(frame["participant_id"], frame["session_id"])) if per_session else list(frame["participant_id"])
        take = []
        for w, key in zip(where, mkeys):
            if key not in index:
                who = f"participant '{key[0]}' session '{key[1]}'" if per_session else f"participant '{key}'"
                raise InputError(f"{w}: {who} has no row in {cpath}")
            take.append(index[key])
        extra = [c for c in cov.columns if c not in ("participant_id", "session_id", "map")]  # maps come from `maps`
        frame = frame.drop(columns=[c for c in extra if c in frame.columns])
        for c in extra:
            frame[c] = cov[c].to_numpy()[take]
        cov_where = [f"{cpath} row {crows[i]}" for i in take]

    check_covariates(frame, cov_where, required, numeric, str(covariates or maps))

    shape, affine, header = check_grids([Path(p) for p in frame["map"]])
    return MapSet(frame=frame.reset_index(drop=True), where=where, shape=shape, affine=affine, header=header, source=source, cov_where=cov_where, cov_source=str(covariates or maps))


def repeated_participants(frame) -> dict[str, int]:
    """``{participant: number of maps}`` for participants with more than one map (sessions)."""
    counts = frame["participant_id"].value_counts()
    return {str(k): int(v) for k, v in counts.items() if v > 1}


def subject_means(ms: MapSet, columns: Sequence[str]) -> MapSet:
    """One row per participant: the mean of its session maps (loaded and averaged when read).

    Covariates of ``columns`` must be one value per participant, except numeric ones, which are
    averaged over the participant's sessions (e.g. age at each scan); another column keeps its
    value when the sessions agree and is dropped otherwise. ``members`` lists each row's maps.
    """
    import pandas as pd

    frame = ms.frame
    cov_where = ms.cov_where or ms.where
    order = list(dict.fromkeys(frame["participant_id"]))
    groups = {pid: [i for i, p in enumerate(frame["participant_id"]) if p == pid] for pid in order}
    rows, members, where, cwhere = [], [], [], []
    drop: set[str] = set()
    for pid in order:
        idx = groups[pid]
        rec = {"participant_id": pid, "map": frame["map"].iloc[idx[0]]}
        for col in frame.columns:
            if col in ("participant_id", "map", "session_id"):
                continue
            values = [str(v) for v in frame[col].iloc[idx]]
            if len(set(values)) == 1:
                rec[col] = frame[col].iloc[idx[0]]
                continue
            if col in columns:
                try:
                    rec[col] = float(np.mean([float(v) for v in values]))
                    continue
                except ValueError:
                    pass
                raise InputError(
                    f"{cov_where[idx[0]]}: {col} of participant '{pid}' differs between sessions ('{values[0]}', '{values[1]}'); "
                    f"--sessions mean needs one value per participant (or use --sessions subject)"
                )
            drop.add(col)
        rows.append(rec)
        members.append([str(frame["map"].iloc[i]) for i in idx])
        where.append(ms.where[idx[0]] + (f" (+{len(idx) - 1} session map{'s' if len(idx) > 2 else ''})" if len(idx) > 1 else ""))
        cwhere.append(cov_where[idx[0]])
    out = pd.DataFrame(rows)
    out = out.drop(columns=[c for c in drop if c in out.columns])
    return MapSet(frame=out, where=where, shape=ms.shape, affine=ms.affine, header=ms.header, source=ms.source,
                  cov_where=cwhere, cov_source=ms.cov_source, members=members)


def check_covariates(frame, where: Sequence[str], columns: Sequence[str], numeric: Sequence[str] = (), source: str = "") -> None:
    """Raise one line naming the first row with a missing (or non-numeric) covariate."""
    for col in columns:
        if col not in frame.columns:
            known = ", ".join(c for c in frame.columns if c not in ("map", "participant_id"))
            raise InputError(f"{source}: missing column '{col}' (known covariates: {known or 'none; give --covariates'})")
    problems = []
    from neurointerp.io.cohort import mostly_numeric_outlier

    for col in columns:
        typo = mostly_numeric_outlier(list(frame[col]), list(where))
        if col not in numeric and typo is not None:
            problems.append(f"{typo[0]}: {col} '{typo[1]}' is not a number (the other values of '{col}' are numbers)")
        for i, (w, value) in enumerate(zip(where, frame[col])):
            if str(value).strip().lower() in MISSING:
                problems.append(f"{w}: {col} is missing for participant '{frame['participant_id'].iloc[i]}'")
            elif col in numeric:
                try:
                    ok = bool(np.isfinite(float(value)))
                except ValueError:
                    ok = False
                if not ok:
                    problems.append(f"{w}: {col} '{value}' is not a number")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(problems[0] + more)


def _grid_of(path: Path):
    from neurointerp.io.headers import read_header  # h-io: the header rules of every reader
    from neurointerp.io.nifti import _spatial_shape

    head = read_header(path)
    shape = _spatial_shape(head.shape, 3, str(path))
    return shape, head.affine, head.header


def check_grids(paths: Sequence[Path]) -> tuple[tuple[int, int, int], np.ndarray, object]:
    """Read only the headers and check that every map has the first map's shape and affine.

    The tolerance on the affine is 1e-3 of a voxel. Raises :class:`InputError` naming the first
    map that differs and how.
    """
    if not paths:
        raise InputError("no maps given")
    shape0, aff0, hdr0 = _grid_of(Path(paths[0]))
    tol = 1e-3 * float(np.min(np.sqrt((aff0[:3, :3] ** 2).sum(axis=0))))
    for p in paths[1:]:
        shape, aff, _ = _grid_of(Path(p))
        if shape != shape0:
            raise InputError(f"{p}: grid {'x'.join(map(str, shape))} differs from {'x'.join(map(str, shape0))} of {paths[0]} (resample all maps to one grid)")
        if not np.allclose(aff, aff0, atol=tol, rtol=0):
            zooms = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
            zooms0 = np.sqrt((aff0[:3, :3] ** 2).sum(axis=0))
            what = "voxel size" if not np.allclose(zooms, zooms0, atol=tol) else ("origin" if np.allclose(aff[:3, :3], aff0[:3, :3], atol=tol) else "orientation")
            raise InputError(f"{p}: affine differs from that of {paths[0]} ({what}); the maps must share one grid")
    return shape0, aff0, hdr0


def load_map(path, shape=None) -> np.ndarray:
    """One map as float32 (validated: NaN/Inf refused naming the file), flattened in C order.

    A list of paths (one participant's sessions) gives the mean of those maps."""
    from neurointerp.io.nifti import load_image

    if isinstance(path, (list, tuple)):
        acc = np.zeros(0)
        for k, p in enumerate(path):
            y = load_map(p, shape).astype(np.float64)
            acc = y if k == 0 else acc + y
        return (acc / len(path)).astype(np.float32)

    vol = load_image(path, ndim=3, allow_empty=True)
    if shape is not None and tuple(vol.shape) != tuple(shape):
        raise InputError(f"{path}: grid {'x'.join(map(str, vol.shape))} differs from {'x'.join(map(str, shape))}")
    return vol.data.reshape(-1)


def iter_batches(
    items: Sequence,
    batch_size: int = 32,
    loader: Callable[[object], np.ndarray] = load_map,
    n_threads: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, data)`` with ``data`` of shape ``(len(indices), n_voxels)``, float32.

    At most ``batch_size`` maps are in a batch, and with ``n_threads > 1`` at most
    ``2 * batch_size`` more are being read ahead (threads release the GIL while decompressing):
    memory is bounded by the batch size, never by the number of maps.
    """
    n = len(items)
    batch_size = max(1, int(batch_size))
    if n_threads <= 1:
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size))
            yield idx, np.stack([loader(items[i]) for i in idx])
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=int(n_threads)) as pool:
        pending: deque = deque()
        nxt = 0
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            while nxt < min(n, stop + batch_size):
                pending.append(pool.submit(loader, items[nxt]))
                nxt += 1
            rows = [pending.popleft().result() for _ in range(stop - start)]
            yield np.arange(start, stop), np.stack(rows)


def iter_arrays(arrays: Iterable[np.ndarray], batch_size: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batch an iterable of maps (arrays) as :func:`iter_batches` does, holding one batch only."""
    buf: list[np.ndarray] = []
    start = 0
    for a in arrays:
        buf.append(np.asarray(a, dtype=np.float32).reshape(-1))
        if len(buf) == batch_size:
            yield np.arange(start, start + len(buf)), np.stack(buf)
            start += len(buf)
            buf = []
    if buf:
        yield np.arange(start, start + len(buf)), np.stack(buf)
