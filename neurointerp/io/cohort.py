"""Cohort tables: one row per image, validated before any work starts.

Format (CSV or TSV, UTF-8, a byte-order mark is accepted):

``participant_id``
    required; letters and digits only (a BIDS ``sub-`` prefix is accepted and dropped).
``session_id``
    optional; letters and digits (a ``ses-`` prefix is accepted and dropped).
``image``
    required; path to a NIfTI file, relative to the table's folder or absolute.
``label``
    class name or number (required by commands that need it).
any other column
    a covariate; columns that a command needs as numbers are checked to be numeric and complete.

Row numbers in messages are the rows a spreadsheet shows: the header is row 1, the first
subject is row 2. All problems are collected and reported at once (:class:`CohortError`).

Python callers may pass a pandas DataFrame wherever a cohort table is taken (:func:`read_cohort`,
``run_saliency(model, frame, out)``, ...): relative paths in it resolve from the current
directory, and the table is written to a CSV file named by its content
(:func:`dataframe_table`), which is then checked, read and fingerprinted like any table file --
the run fingerprint covers the table's content.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from neurointerp.errors import CohortError, InputError
from neurointerp.io.nifti import is_nifti_path

ID_RE = re.compile(r"^[A-Za-z0-9]+$")
MISSING = {"", "na", "n/a", "nan", "none", "null"}
#: longest participant_id / session_id: both go into every output file name
#: (``sub-<id>_ses-<s>_space-<tpl>_desc-<method>_<suffix>.nii.gz`` plus a hidden temporary
#: name while it is written), and file names stop at 255 bytes
MAX_ID_LENGTH = 64


def id_problem(value: str, column: str, shown: str | None = None) -> str | None:
    """Why ``value`` cannot be a ``participant_id``/``session_id`` (``None`` when it can);
    ``shown`` is the value as the table spells it (with its ``sub-`` prefix)."""
    shown = value if shown is None else shown
    if not ID_RE.match(value):
        return f"{column} '{shown[:80]}{'...' if len(shown) > 80 else ''}' must be letters and digits only (no path characters, spaces or '-')"
    if len(value) > MAX_ID_LENGTH:
        return f"{column} '{value[:16]}...' is {len(value)} characters long; at most {MAX_ID_LENGTH} fit in output file names"
    return None


def label_spelling_problems(values: Sequence[str], rows: Sequence, column: str = "label") -> list[str]:
    """One problem per class written in more than one way (``1``/``1.0``/``01``, ``Patient``/``patient``).

    Numbers are compared as numbers, names without regard to case. ``rows`` are spreadsheet
    rows (``int``: problems read ``row N: ...``) or places (``str``, e.g. ``maps.csv row 3``).
    Each problem names the spellings and the first row of each.
    """
    first: dict[object, dict[str, object]] = {}
    for value, row in zip(values, rows):
        text = str(value).strip()
        if text.lower() in MISSING:
            continue
        try:
            num = float(text)
            key: object = ("n", num) if math.isfinite(num) else ("s", text.casefold())
        except ValueError:
            key = ("s", text.casefold())
        first.setdefault(key, {}).setdefault(text, row)
    problems = []
    for spellings in first.values():
        if len(spellings) > 1:
            places = list(spellings.values())
            at = places[0]
            where = " and ".join(f"'{t}' ({'row ' + str(r) if isinstance(r, int) else r})" for t, r in list(spellings.items())[:3])
            head = f"row {at}" if isinstance(at, int) else str(at)
            problems.append(f"{head}: {column} {where} are one class spelled {len(spellings)} ways; use one spelling")
    return problems


@dataclass
class Cohort:
    """A validated cohort table.

    ``frame`` is a pandas DataFrame with normalised ids, absolute image paths and numeric
    covariates parsed as float; ``rows`` gives the spreadsheet row of each record.
    """

    path: Path
    frame: "object"  # pandas.DataFrame
    rows: list[int]
    image_column: str = "image"
    label_column: str = "label"
    covariates: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def participant_ids(self) -> list[str]:
        return list(self.frame["participant_id"])

    @property
    def images(self) -> list[Path]:
        return [Path(p) for p in self.frame[self.image_column]]

    @property
    def has_label(self) -> bool:
        return self.label_column in self.frame.columns

    @property
    def classes(self) -> list[str]:
        """Sorted class names (numbers sort numerically)."""
        values = list(dict.fromkeys(self.frame[self.label_column].astype(str)))
        return sorted(values, key=_class_key)

    def row_of(self, index: int) -> int:
        return self.rows[index]

    def subset(self, indices: Sequence[int]) -> "Cohort":
        idx = list(indices)
        return Cohort(
            path=self.path,
            frame=self.frame.iloc[idx].reset_index(drop=True),
            rows=[self.rows[i] for i in idx],
            image_column=self.image_column,
            label_column=self.label_column,
            covariates=list(self.covariates),
        )


def _class_key(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def normalise_id(value: str, prefix: str) -> str:
    value = value.strip()
    return value[len(prefix):] if value.startswith(prefix) else value


def _sniff_delimiter(path: Path, header_line: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab", ".txt"):
        expected = "\t"
    elif suffix == ".csv":
        expected = ","
    else:
        raise InputError(f"{path}: unknown table type '{suffix}' (expected .csv or .tsv)")
    if expected not in header_line:
        for other, name in (("\t", "tab"), (",", "comma"), (";", "semicolon")):
            if other != expected and other in header_line:
                kind = "TSV" if expected == "\t" else "CSV"
                raise InputError(
                    f"{path}: header is {name}-separated but the file name says {kind}; "
                    f"use {'a .tsv name' if other == chr(9) else 'a .csv name' if other == ',' else 'commas or tabs'}"
                )
    return expected


def is_dataframe(value) -> bool:
    """A pandas DataFrame (checked without importing pandas)."""
    return any(t.__name__ == "DataFrame" and t.__module__.startswith("pandas") for t in type(value).__mro__)


_TABLES: list[Path] = []


def _cleanup_tables() -> None:
    for p in _TABLES:
        try:
            p.unlink()
        except OSError:
            pass


def _absolute_if_path(value):
    """A relative path in a DataFrame cell, resolved from the current directory; other values unchanged."""
    if not isinstance(value, str) or not value.strip() or os.path.isabs(value.strip()):
        return value
    text = value.strip()
    if text.lower() in MISSING:
        return value
    if is_nifti_path(Path(text)) or os.path.exists(text):
        return str(Path(text).absolute())
    return value


def dataframe_table(frame) -> Path:
    """``frame`` (a pandas DataFrame) as a CSV file, for the functions that take a cohort table.

    Relative paths in its cells (NIfTI file names, and names of files or folders that exist) are
    made absolute from the current directory; the file is named by the sha256 of its content
    (``dataframe-<12 hex>.csv`` in a private temporary folder, deleted when the process exits), so
    the same table gives the same file, and the run fingerprint of a command hashes the table.
    """
    import atexit
    import hashlib
    import tempfile

    table = frame.copy()
    table.columns = [str(c) for c in table.columns]
    for col in table.columns:
        if getattr(table[col].dtype, "kind", "O") not in "biufcmM":  # text columns (object or str dtype)
            table[col] = [_absolute_if_path(v) for v in table[col]]
    text = table.to_csv(index=False, lineterminator="\n")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"neurointerp-tables-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"dataframe-{digest}.csv"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        tmp = folder / f".{path.name}.{os.getpid()}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    if not _TABLES:
        atexit.register(_cleanup_tables)
    if path not in _TABLES:
        _TABLES.append(path)
    return path


def read_cohort(
    path,
    require_label: bool = True,
    numeric: Iterable[str] = (),
    required: Iterable[str] = (),
    image_column: str = "image",
    label_column: str = "label",
    check_files: bool = True,
    min_classes: int = 2,
) -> Cohort:
    """Read and validate a cohort table; raise :class:`CohortError` listing every problem.

    Parameters
    ----------
    path
        CSV (``.csv``) or TSV (``.tsv``) file, or a pandas DataFrame with the same columns
        (relative image paths resolve from the current directory; see :func:`dataframe_table`).
    require_label
        The ``label`` column must exist and be complete, with at least ``min_classes`` classes
        (``min_classes=0`` for regression targets).
    numeric
        Covariate columns that must exist and hold a finite number in every row.
    required
        Further columns that must exist and be non-empty in every row.
    image_column
        Column with the image paths (``image``; group commands use ``map``).
    check_files
        Check that every image file exists.
    """
    import pandas as pd

    path = dataframe_table(path) if is_dataframe(path) else Path(path)
    if not path.exists():
        raise InputError(f"{path}: cohort table not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a CSV/TSV cohort table")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise InputError(f"{path}: empty table (no header row)")
    delimiter = _sniff_delimiter(path, lines[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [h.strip() for h in next(reader)]
    problems: list[str] = []

    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        problems.append(f"row 1: duplicate column name{'s' if len(dupes) > 1 else ''} {', '.join(repr(d) for d in dupes)}")
    if "" in header:
        problems.append(f"row 1: column {header.index('') + 1} has no name")
    needed = ["participant_id", image_column]
    if require_label:
        needed.append(label_column)
    needed += [c for c in list(required) + list(numeric) if c not in needed]
    missing_cols = [c for c in needed if c not in header]
    for col in missing_cols:
        problems.append(f"row 1: missing column '{col}'")
    if "participant_id" in missing_cols or image_column in missing_cols:
        raise CohortError(path, problems)

    records: list[dict] = []
    rows: list[int] = []
    seen: dict[tuple[str, str], int] = {}
    numeric = [c for c in numeric if c in header]
    required = [c for c in required if c in header]
    base = path.parent
    for values in reader:
        row = reader.line_num  # physical line where this record ends (header = 1)
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            problems.append(f"row {row}: {len(values)} fields, header has {len(header)}")
            continue
        rec = {h: v.strip() for h, v in zip(header, values)}
        pid_raw = rec["participant_id"]
        pid = normalise_id(pid_raw, "sub-")
        if not pid:
            problems.append(f"row {row}: participant_id is empty")
        elif id_problem(pid, "participant_id"):
            problems.append(f"row {row}: {id_problem(pid, 'participant_id', pid_raw)}")
        rec["participant_id"] = pid
        ses = ""
        if "session_id" in rec:
            ses = normalise_id(rec["session_id"], "ses-")
            if ses and id_problem(ses, "session_id"):
                problems.append(f"row {row}: {id_problem(ses, 'session_id', rec['session_id'])}")
            rec["session_id"] = ses
        key = (pid, ses)
        if pid and key in seen:
            what = f"participant_id '{pid}'" + (f" with session_id '{ses}'" if ses else "")
            problems.append(f"row {row}: duplicate {what} (first at row {seen[key]})")
        elif pid:
            seen[key] = row
        img = rec[image_column]
        if not img:
            problems.append(f"row {row}: {image_column} is empty")
        else:
            img_path = Path(img) if os.path.isabs(img) else (base / img)
            if not is_nifti_path(img_path):
                problems.append(f"row {row}: {image_column} '{img}' is not a NIfTI file name (.nii or .nii.gz)")
            elif check_files and not img_path.is_file():
                problems.append(f"row {row}: {image_column} '{img}' not found")
            rec[image_column] = str(img_path.resolve() if img_path.exists() else img_path.absolute())
        if require_label and label_column in rec and rec[label_column].lower() in MISSING:
            problems.append(f"row {row}: {label_column} is missing")
        for col in required:
            if rec[col].lower() in MISSING:
                problems.append(f"row {row}: {col} is missing")
        for col in numeric:
            val = rec[col]
            if val.lower() in MISSING:
                problems.append(f"row {row}: {col} is missing (NaN)")
                continue
            try:
                num = float(val)
            except ValueError:
                problems.append(f"row {row}: {col} '{val}' is not a number")
                continue
            if not math.isfinite(num):
                problems.append(f"row {row}: {col} '{val}' is not finite")
        records.append(rec)
        rows.append(row)

    if not records and not problems:
        problems.append("no rows after the header")
    if label_column in header and label_column not in numeric and records:
        # '1' and '1.0' (or 'Patient' and 'patient') would silently become two classes
        problems += label_spelling_problems([r[label_column] for r in records], rows, label_column)
    if require_label and label_column in header and records and min_classes > 1:
        classes = {r[label_column] for r in records if r[label_column].lower() not in MISSING}
        if 0 < len(classes) < min_classes:
            only = ", ".join(repr(c) for c in sorted(classes))
            problems.append(f"column '{label_column}': only {len(classes)} class ({only}); need at least {min_classes}")
    if problems:
        raise CohortError(path, problems)

    frame = pd.DataFrame.from_records(records, columns=header)
    covariates = [c for c in header if c not in ("participant_id", "session_id", image_column, label_column)]
    for col in covariates:
        frame[col] = _maybe_numeric(frame[col])
    return Cohort(
        path=path,
        frame=frame,
        rows=rows,
        image_column=image_column,
        label_column=label_column,
        covariates=covariates,
    )


def _maybe_numeric(series):
    """Parse a column as float if every non-missing value is a number, else keep strings."""
    import pandas as pd

    vals = series.astype(str)
    mask = vals.str.lower().isin(MISSING)
    try:
        parsed = pd.to_numeric(vals.where(~mask, None), errors="raise")
    except (ValueError, TypeError):
        return series
    return parsed.astype(float)


def write_cohort(path: str | os.PathLike, frame, image_columns: Sequence[str] = ("image",), force: bool = False) -> Path:
    """Write a cohort table (CSV or TSV by extension), with image paths relative to its folder."""
    from neurointerp.io.atomic import write_table

    path = Path(path)
    out = frame.copy()
    for col in image_columns:
        if col in out.columns:
            out[col] = [_relative_to(Path(p), path.parent) for p in out[col]]
    return write_table(path, out, force=force)


def _relative_to(p: Path, base: Path) -> str:
    try:
        return os.path.relpath(p.absolute(), base.absolute())
    except ValueError:  # different drives
        return str(p)


ID_COLUMNS = ("participant_id", "session_id")


def read_table_keeping_ids(path: str | os.PathLike, sep: str | None = None, text_columns: Sequence[str] = ()):
    """A CSV/TSV (e.g. one a command wrote) as a DataFrame whose identifier columns stay text.

    ``participant_id``/``session_id`` (and ``text_columns``) are read as strings: ``01`` stays
    ``01`` (it names the subject's files), missing ids stay empty strings. ``sep`` defaults to
    tab for ``.tsv`` and comma otherwise.
    """
    import pandas as pd

    path = Path(path)
    if sep is None:
        sep = "\t" if path.suffix.lower() in (".tsv", ".tab", ".txt") else ","
    with open(path, encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f, delimiter=sep), [])
    text = {c for c in (*ID_COLUMNS, *text_columns)}
    dtype = {c: str for c in header if c.strip() in text}
    frame = pd.read_csv(path, sep=sep, dtype=dtype, encoding="utf-8-sig")
    for c in dtype:
        frame[c] = frame[c].fillna("")
    return frame


def mostly_numeric_outlier(values: Sequence, rows: Sequence) -> tuple | None:
    """``(row, value)`` of the first non-number in a column whose other values are numbers.

    A column where most non-missing values are finite numbers but a few are not (``'old'``,
    ``'7O'``) is almost always a typo; read as categorical it would silently change the analysis
    (one dummy column per distinct age). Returns ``None`` for numeric, missing-only or truly
    categorical columns (at most half of the values are numbers).
    """
    bad, n_num = None, 0
    for row, value in zip(rows, values):
        text = str(value).strip()
        if text.lower() in MISSING:
            continue
        try:
            ok = math.isfinite(float(text))
        except ValueError:
            ok = False
        if ok:
            n_num += 1
        elif bad is None:
            bad = (row, text)
    n_bad = sum(1 for v in values if str(v).strip().lower() not in MISSING) - n_num
    if bad is not None and n_num > n_bad:
        return bad
    return None


def numeric_covariate(cohort: Cohort, column: str) -> np.ndarray:
    """Return a covariate as a float array, or raise naming the first bad row."""
    if column not in cohort.frame.columns:
        raise InputError(f"{cohort.path}: missing column '{column}'")
    values = cohort.frame[column]
    out = np.empty(len(values), dtype=float)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise InputError(f"{cohort.path} row {cohort.rows[i]}: {column} '{v}' is not a number") from None
        if not math.isfinite(out[i]):
            raise InputError(f"{cohort.path} row {cohort.rows[i]}: {column} is missing (NaN)")
    return out
