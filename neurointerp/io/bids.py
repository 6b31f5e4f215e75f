"""A small reader of raw BIDS datasets: the T1w images of a cohort, with their covariates.

BIDS-App style input for the commands that take raw images (``preprocess``): the cohort is
``sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>][_acq-..][_ce-..][_rec-..][_run-..]_T1w.nii[.gz]``,
joined with ``participants.tsv`` on ``participant_id`` and with ``sub-<label>/sub-<label>_sessions.tsv``
on (``participant_id``, ``session_id``) (a session-level column wins over a participant-level one
of the same name). The selection follows the BIDS-App conventions: ``--participant-label``
(with or without ``sub-``), ``--session-label`` and fMRIPrep's ``--bids-filter-file``
(``{"t1w": {"datatype": "anat", "suffix": "T1w", "session": [...], "acquisition": ...}}``).
pybids is not needed. Every problem is one line naming the file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from neurointerp.errors import InputError

#: filter-file entity keys (pybids names) -> the key in file names
FILTER_ENTITIES = {"session": "ses", "acquisition": "acq", "ceagent": "ce", "reconstruction": "rec", "run": "run"}
#: filter-file keys with one allowed value each (what this reader reads)
FIXED = {"datatype": "anat", "suffix": "T1w", "extension": (".nii", ".nii.gz")}
_NAME_RE = re.compile(r"^(?P<entities>(?:[a-zA-Z]+-[a-zA-Z0-9]+_)*)(?P<suffix>[a-zA-Z0-9]+)(?P<ext>\.nii(?:\.gz)?)$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")


def is_bids_dataset(path: str | os.PathLike) -> bool:
    """A folder with ``dataset_description.json`` or a ``sub-*`` folder."""
    p = Path(path)
    return p.is_dir() and ((p / "dataset_description.json").is_file() or any(c.is_dir() for c in p.glob("sub-*")))


@dataclass
class BidsCohort:
    """The selected T1w images: ``frame`` (pandas) has ``participant_id``, ``session_id`` (only
    when the dataset has sessions), ``image`` (absolute path) and the covariates of
    ``participants.tsv`` and the sessions tables; ``where`` names the image of each row."""

    root: Path
    frame: "object"
    image_column: str = "image"

    def __len__(self) -> int:
        return len(self.frame)


def entities(name: str) -> tuple[dict[str, str], str] | None:
    """``({entity: label}, suffix)`` of a BIDS file name, or ``None`` when it is not one."""
    m = _NAME_RE.match(name)
    if not m:
        return None
    ents = {}
    for part in m.group("entities").strip("_").split("_"):
        if part:
            k, v = part.split("-", 1)
            ents[k] = v
    return ents, m.group("suffix")


def _labels(values: Sequence[str], prefix: str, what: str) -> list[str]:
    out = []
    for v in values:
        for part in str(v).replace(",", " ").split():
            lab = part[len(prefix):] if part.startswith(prefix) else part
            if not _LABEL_RE.match(lab):
                raise InputError(f"--{what}-label '{part}': must be letters and digits (with or without '{prefix}')")
            out.append(lab)
    return list(dict.fromkeys(out))


def read_filter_file(path: str | os.PathLike) -> dict[str, object]:
    """The ``t1w`` query of an fMRIPrep ``--bids-filter-file``: ``{file-name key: None | [labels]}``.

    Values may be a label, a number (``run``), a list of them, or ``null`` (the entity must be
    absent). Other queries (``bold``, ``t2w``, ...) are not used here and are ignored; an entity
    this reader does not support is refused (one line naming the file and the key).
    """
    path = Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(spec, dict):
        raise InputError(f"{path}: expected a JSON object like {{\"t1w\": {{\"session\": [\"01\"]}}}}")
    query = spec.get("t1w", {})
    if not isinstance(query, dict):
        raise InputError(f"{path}: 't1w' must be an object of BIDS entities")
    out: dict[str, object] = {}
    for key, value in query.items():
        if key in FIXED:
            allowed = FIXED[key]
            ok = value in allowed if isinstance(allowed, tuple) else value == allowed
            if not ok:
                raise InputError(f"{path}: t1w.{key} {json.dumps(value)} is not supported (only {json.dumps(allowed)}: T1w images in anat/)")
            continue
        if key not in FILTER_ENTITIES:
            known = ", ".join(list(FILTER_ENTITIES) + list(FIXED))
            raise InputError(f"{path}: t1w.{key} is not supported (supported keys: {known})")
        if value is None:
            out[FILTER_ENTITIES[key]] = None
            continue
        values = value if isinstance(value, list) else [value]
        labels = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (str, int)) or not _LABEL_RE.match(str(v)):
                raise InputError(f"{path}: t1w.{key} value {json.dumps(v)} must be a label (letters and digits), a number or null")
            labels.append(str(v))
        out[FILTER_ENTITIES[key]] = labels
    return out


def _matches(ents: dict[str, str], query: dict[str, object]) -> bool:
    for key, allowed in query.items():
        have = ents.get(key)
        if allowed is None:
            if have is not None:
                return False
        elif have is None:
            return False
        elif key == "run":
            if not any(have.lstrip("0") == a.lstrip("0") for a in allowed):  # run 1 == run-01
                return False
        elif have not in allowed:
            return False
    return True


def _read_tsv(path: Path, key_columns: Sequence[str]):
    """A BIDS TSV as strings (``n/a`` kept as text), checked for its key columns and duplicates."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable TSV ({str(exc).splitlines()[0][:120]})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    for col in key_columns:
        if col not in frame.columns:
            raise InputError(f"{path} row 1: missing column '{col}'")
    for col, prefix in (("participant_id", "sub-"), ("session_id", "ses-")):
        if col in frame.columns:
            frame[col] = [v.strip()[len(prefix):] if v.strip().startswith(prefix) else v.strip() for v in frame[col]]
    dup = frame.duplicated(subset=list(key_columns))
    if dup.any():
        i = int(dup.to_numpy().nonzero()[0][0])
        raise InputError(f"{path} row {i + 2}: duplicate {' and '.join(key_columns)} {' '.join(frame[list(key_columns)].iloc[i])}")
    return frame


def read_bids(
    root: str | os.PathLike,
    participant_label: Sequence[str] = (),
    session_label: Sequence[str] = (),
    filter_file: str | os.PathLike | None = None,
) -> BidsCohort:
    """The T1w cohort of a raw BIDS dataset, selected as a BIDS App selects it.

    Raises :class:`InputError` (one line naming the file or label) for a label that matches no
    folder, a subject/session with more than one matching T1w image (choose one with the filter
    file, e.g. ``{"t1w": {"run": 1}}``), an image whose name disagrees with its folder, a broken
    ``dataset_description.json`` or TSV, or a selection that leaves no image.
    """
    import pandas as pd

    from neurointerp.io.cohort import id_problem

    root = Path(root)
    desc = root / "dataset_description.json"
    if desc.is_file():
        try:
            d = json.loads(desc.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{desc}: not valid JSON ({exc})") from None
        if not isinstance(d, dict):
            raise InputError(f"{desc}: expected a JSON object")
        if str(d.get("DatasetType", "raw")).lower() == "derivative":
            raise InputError(f"{desc}: DatasetType is 'derivative'; give the raw BIDS dataset (or a cohort table of the derivatives)")
    query = read_filter_file(filter_file) if filter_file is not None else {}
    subjects = sorted(p.name[4:] for p in root.glob("sub-*") if p.is_dir())
    wanted = _labels(participant_label, "sub-", "participant")
    for lab in wanted:
        if lab not in subjects:
            raise InputError(f"{root}: participant '{lab}' not found (no folder sub-{lab}/)")
    if wanted:
        subjects = [s for s in subjects if s in wanted]
    sessions_wanted = _labels(session_label, "ses-", "session")
    if sessions_wanted:
        prior = query.get("ses", "any")
        if prior is None:
            raise InputError(f"{filter_file}: t1w.session is null (no sessions) but --session-label was given")
        query["ses"] = sessions_wanted if prior == "any" else [s for s in sessions_wanted if s in prior]
    for sub in subjects:
        if id_problem(sub, "participant_id"):
            raise InputError(f"{root / ('sub-' + sub)}: {id_problem(sub, 'participant_id')}")

    rows: list[dict] = []
    found_sessions: set[str] = set()
    for sub in subjects:
        sdir = root / f"sub-{sub}"
        ses_dirs = sorted(p for p in sdir.glob("ses-*") if p.is_dir())
        places = [(p.name[4:], p / "anat") for p in ses_dirs] or [(None, sdir / "anat")]
        for ses, anat in places:
            if ses is not None:
                found_sessions.add(ses)
                if id_problem(ses, "session_id"):
                    raise InputError(f"{anat.parent}: {id_problem(ses, 'session_id')}")
            if not anat.is_dir():
                continue
            picked = []
            for f in sorted(anat.iterdir()):
                if f.name.startswith(".") or not f.name.endswith((".nii", ".nii.gz")):
                    continue
                parsed = entities(f.name)
                if parsed is None or parsed[1] != "T1w":
                    continue
                ents = parsed[0]
                if ents.get("sub") != sub or ents.get("ses") != ses:
                    raise InputError(f"{f}: the file name's sub-/ses- entities disagree with its folder {anat.relative_to(root)}")
                if _matches(ents, query):
                    picked.append(f)
            if len(picked) > 1:
                names = ", ".join(p.name for p in picked[:3])
                raise InputError(f"{anat}: {len(picked)} T1w images match ({names}); choose one with --bids-filter-file, e.g. {{\"t1w\": {{\"run\": 1}}}}")
            if picked:
                rows.append({"participant_id": sub, "session_id": ses or "", "image": str(picked[0].absolute())})
    for ses in sessions_wanted:
        if ses not in found_sessions:
            raise InputError(f"{root}: session '{ses}' not found (no folder sub-*/ses-{ses}/)")
    if not rows:
        what = "the selected participants/sessions" if (wanted or sessions_wanted or query) else "the dataset"
        raise InputError(f"{root}: no T1w image (sub-*/[ses-*/]anat/*_T1w.nii[.gz]) in {what}")

    frame = pd.DataFrame(rows)
    has_ses = bool(found_sessions) and any(frame["session_id"])
    if has_ses and not all(frame["session_id"]):
        i = int((frame["session_id"] == "").to_numpy().nonzero()[0][0])
        raise InputError(f"{frame['image'].iloc[i]}: outside a ses-* folder while other subjects have sessions; put every image in a session")
    if not has_ses:
        frame = frame.drop(columns=["session_id"])

    ptsv = root / "participants.tsv"
    if ptsv.is_file():
        part = _read_tsv(ptsv, ["participant_id"])
        frame = frame.merge(part, on="participant_id", how="left", validate="many_to_one")
    if has_ses:
        tables = []
        for sub in sorted(set(frame["participant_id"])):
            stsv = root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv"
            if stsv.is_file():
                st = _read_tsv(stsv, ["session_id"])
                if "participant_id" in st.columns:
                    st["participant_id"] = sub
                else:
                    st.insert(0, "participant_id", sub)
                tables.append(st)
        if tables:
            sess = pd.concat(tables, ignore_index=True)
            clash = [c for c in sess.columns if c in frame.columns and c not in ("participant_id", "session_id")]
            frame = frame.drop(columns=clash).merge(sess, on=["participant_id", "session_id"], how="left", validate="one_to_one")
    frame = frame.fillna("n/a")
    first = ["participant_id"] + (["session_id"] if has_ses else []) + ["image"]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    return BidsCohort(root=root, frame=frame.reset_index(drop=True))
