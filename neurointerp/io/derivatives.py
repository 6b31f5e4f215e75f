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
ENTITY_ORDER = ("task", "acq", "rec", "run", "hemi", "space", "cohort", "res", "den", "label", "roi", "method", "desc")
_VALUE_RE = re.compile(r"^[A-Za-z0-9.+]+$")


def stat_desc(desc: str | None, stat: str | None) -> str | None:
    """``desc`` with the statistic folded in: ``("gradient", "meanabs")`` -> ``"gradientMeanabs"``.

    BIDS has no ``stat-`` entity (pybids drops it, so the mean and the mean |map| of one group
    would get the same entities); group files carry their statistic in ``desc-`` instead.
    """
    if not stat:
        return desc
    stat = str(stat)
    return f"{desc or ''}{stat[:1].upper()}{stat[1:]}" if desc else stat


def bids_name(participant_id: str | None, suffix: str, ext: str = ".nii.gz", session: str | None = None, stat: str | None = None, **entities: Any) -> str:
    """Compose a BIDS file name; entity values must be alphanumeric (``.``/``+`` allowed).

    ``stat`` (a statistic of a group file) is folded into ``desc`` (:func:`stat_desc`).
    """
    if stat:
        entities["desc"] = stat_desc(entities.get("desc"), stat)
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


# Template spaces named by a standard BIDS identifier (SpatialReference is then only recommended)
STANDARD_SPACES = {"MNI152NLin2009aSym", "MNI152NLin2009cAsym", "MNI152NLin6Asym", "MNI152Lin", "MNI305", "fsaverage", "T1w", "T2w"}
# where the images of those spaces come from (this tool never downloads: the templates ship with nilearn)
TEMPLATE_REFERENCES = {
    "MNI152NLin2009aSym": "https://www.bic.mni.mcgill.ca/ServicesAtlases/ICBM152NLin2009",
}
# suffixes of anatomical images for which a derivative sidecar needs SkullStripped
ANAT_SUFFIXES = ("T1w", "T2w", "PDw", "T2starw", "FLAIR", "inplaneT1", "inplaneT2", "PDT2", "angio", "UNIT1")


_RES_RE = re.compile(r"(?:^|_)res-([A-Za-z0-9]+)")
_SPACE_NAME_RE = re.compile(r"(?:^|_)space-([A-Za-z0-9]+)")


def _mm(v: float) -> str:
    """``2.8642`` -> ``'2p86'``, ``3.0`` -> ``'3'`` (BIDS labels are letters and digits only)."""
    return f"{float(v):.2f}".rstrip("0").rstrip(".").replace(".", "p")


def resolution_label(affine: Any, shape: Any = None, reference: Any = None) -> str | None:
    """The ``res-`` label of a template-space grid, or ``None`` when it is the template's own grid.

    BIDS derivatives name an image resampled off the template's grid with ``res-<label>``; the
    label here is the voxel size in mm (``2p86mm``; ``1x1x2mm`` when anisotropic). ``reference``
    is the template's ``(shape, affine)``: a grid equal to it gets no ``res-``. Files derived on
    the grid of an input take its label instead (:func:`res_of`), so one grid has one label.
    """
    import numpy as np

    aff = np.asarray(affine, dtype=np.float64)
    if reference is not None and shape is not None:
        rshape, raff = reference
        if tuple(int(s) for s in shape)[:3] == tuple(int(s) for s in rshape)[:3] and np.allclose(aff, np.asarray(raff, dtype=np.float64), atol=1e-4):
            return None
    sizes = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    if np.allclose(sizes, sizes.mean(), rtol=0.005):
        return _mm(sizes.mean()) + "mm"
    return "x".join(_mm(v) for v in sizes) + "mm"


def res_of(path: str | os.PathLike | None) -> str | None:
    """The ``res-`` label in a file name (``None`` without one): derived files on its grid keep it."""
    m = _RES_RE.search(Path(str(path)).name) if path else None
    return m.group(1) if m else None


def common_res(paths) -> str | None:
    """The ``res-`` label a set of files shares (``None`` when they have none or differ): group
    files made from per-subject files on one grid keep it."""
    labels = {res_of(p) for p in paths}
    return labels.pop() if len(labels) == 1 else None


def space_of(path: str | os.PathLike | None) -> str | None:
    """The ``space-`` label in a file name (``None`` without one)."""
    m = _SPACE_NAME_RE.search(Path(str(path)).name) if path else None
    return m.group(1) if m else None


def resolution_description(label: str, space: str | None = None) -> str:
    """What a ``res-`` label means, for the sidecar's required ``Resolution`` key."""
    sizes = label.removesuffix("mm").split("x")
    size = " x ".join(s.replace("p", ".") for s in sizes) + " mm"
    kind = "isotropic voxels" if len(sizes) == 1 else "voxels"
    where = f" in {space}" if space else ""
    return f"{size} {kind}{where} (the grid's shape and affine are those of the image header)"


def bids_uri(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """``bids::<path relative to root>`` for a file inside the dataset ``root``, else a ``file://`` URI."""
    p = Path(path).absolute()
    if root is not None:
        try:
            return "bids::" + p.relative_to(Path(root).absolute()).as_posix()
        except ValueError:
            pass
    return p.as_uri()


def bids_metadata(
    image_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    sources: Any = (),
    skull_stripped: bool | None = None,
    spatial_reference: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The BIDS-derivatives sidecar keys of ``image_path`` (a file under ``root``).

    ``Sources``: URIs of the input files (``bids::`` inside ``root``, else ``file://``).
    ``SkullStripped``: required for anatomical images (``_T1w`` ...) in derivatives.
    ``Resolution``: what the file's ``res-`` label means (required with ``res-``).
    ``SpatialReference``: required when the file's ``space-`` is not a standard template
    identifier (then give the image whose grid the file shares, e.g. the input); for a standard
    template it names where the template comes from.
    """
    name = Path(image_path).name
    meta: dict[str, Any] = {}
    srcs = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources or ())
    if srcs:
        meta["Sources"] = [bids_uri(s, root) for s in srcs]
    if skull_stripped is not None:
        meta["SkullStripped"] = bool(skull_stripped)
    space = space_of(name)
    res = res_of(name)
    if res:  # BIDS: a file with res- MUST say what the label means
        meta["Resolution"] = {res: resolution_description(res, space)}
    if spatial_reference is not None:
        meta["SpatialReference"] = spatial_reference if isinstance(spatial_reference, str) and ":" in spatial_reference else bids_uri(spatial_reference, root)
    elif space in TEMPLATE_REFERENCES:
        meta["SpatialReference"] = TEMPLATE_REFERENCES[space]
    return meta


def skull_stripped_of(image_path: str | os.PathLike, default: bool = False) -> bool:
    """``SkullStripped`` of an input image, read from its JSON sidecar (``default`` when it has none)."""
    try:
        value = json.loads(sidecar_path(image_path).read_text()).get("SkullStripped")
    except (OSError, ValueError, AttributeError):
        return default
    return value if isinstance(value, bool) else default


def is_anatomical(image_path: str | os.PathLike) -> bool:
    """Whether the file's suffix is an anatomical one (``_T1w`` ...: its derivative sidecar needs ``SkullStripped``)."""
    stem = re.sub(r"\.(nii\.gz|nii)$", "", Path(image_path).name)
    return stem.rsplit("_", 1)[-1] in ANAT_SUFFIXES


def derived_from(image: str | os.PathLike, root: str | os.PathLike, anatomical: bool = True) -> dict[str, Any]:
    """:func:`write_sidecar` keywords of a file derived from one input ``image`` on its grid (a
    simulated or translated image, a map): ``Sources`` and ``SpatialReference`` name the input;
    ``SkullStripped`` is the input's (:func:`skull_stripped_of`), given when ``anatomical``."""
    return {"root": root, "sources": [image], "spatial_reference": image, "skull_stripped": skull_stripped_of(image) if anatomical else None}


def write_sidecar(
    image_path: str | os.PathLike,
    record: Mapping[str, Any],
    force: bool = False,
    *,
    root: str | os.PathLike | None = None,
    sources: Any = (),
    skull_stripped: bool | None = None,
    spatial_reference: str | os.PathLike | None = None,
) -> Path:
    """Write the JSON sidecar of ``image_path`` atomically, with its BIDS keys (:func:`bids_metadata`).

    An anatomical image (``_T1w`` ...) in a derivative dataset must say whether it is skull-stripped,
    a call that omits it is a programming error (``ValueError``), caught by the tests. A file in a
    ``space-`` that is not a standard template should name its ``SpatialReference`` (the callers
    pass the template file or the image whose grid the file shares); a run is never stopped for it.
    """
    meta = bids_metadata(image_path, root, sources, skull_stripped, spatial_reference)
    record = {**meta, **dict(record)}
    if root is not None and _is_derivative(root) and is_anatomical(image_path) and "SkullStripped" not in record:
        raise ValueError(f"{Path(image_path).name}: an anatomical derivative needs SkullStripped")
    return write_json(sidecar_path(image_path), record, force=force)


def _is_derivative(root: str | os.PathLike) -> bool:
    try:
        return json.loads((Path(root) / "dataset_description.json").read_text()).get("DatasetType") == "derivative"
    except (OSError, ValueError):
        return False


def write_dataset_description(
    root: str | os.PathLike, name: str, description: str = "", force: bool = False, dataset_type: str = "derivative"
) -> Path:
    """Write ``dataset_description.json`` of a derivatives folder (kept if already ours).

    ``dataset_type="raw"`` for a dataset of acquired-like images (``synth brain``): BIDS raw,
    with ``participants.tsv`` (:func:`write_participants`).
    """
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
        "DatasetType": dataset_type,
        "GeneratedBy": [{"Name": "neurointerp", "Version": __version__, "Description": description}],
    }
    return write_json(path, desc, force=True)


def add_bidsignore(root: str | os.PathLike, patterns: list[str]) -> Path:
    """Add ``patterns`` to ``<root>/.bidsignore`` (idempotent).

    A folder is ignored by its name without a trailing slash (``group``, not ``group/``: the
    validator does not honour ``group/``); such lines of an older file are rewritten.
    """
    path = Path(root) / ".bidsignore"
    old = path.read_text().splitlines() if path.exists() else []
    new: list[str] = []
    for p in old + list(patterns):
        p = p.rstrip("/") if p.endswith("/") and p.strip("/") else p  # 'group/' -> 'group'
        if p not in new:
            new.append(p)
    if new != old or not path.exists():
        write_text(path, "\n".join(new) + "\n", force=True)
    return path


def write_participants(root: str | os.PathLike, frame: Any, columns: Mapping[str, Any], force: bool = False) -> Path:
    """``participants.tsv`` (one row per participant, ids as ``sub-<id>``) and ``participants.json``.

    ``columns`` maps each column to its description (a string, or a BIDS column dict with
    ``Description``, ``Levels``, ``Units``); only those columns are written.
    """
    import pandas as pd

    table = pd.DataFrame(frame).drop_duplicates("participant_id")
    table = table[["participant_id", *[c for c in columns if c != "participant_id"]]].copy()
    table["participant_id"] = ["sub-" + str(p).removeprefix("sub-") for p in table["participant_id"]]
    text = table.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n")
    path = write_text(Path(root) / "participants.tsv", text, force=force)
    meta = {"participant_id": {"Description": "participant identifier"}}
    for col, d in columns.items():
        if col != "participant_id":
            meta[col] = {"Description": d} if isinstance(d, str) else dict(d)
    write_json(Path(root) / "participants.json", meta, force=force)
    return path


def write_dseg_tsv(root: str | os.PathLike, labels: Mapping[int, str], force: bool = True, **entities: Any) -> Path:
    """The look-up table of segmentations (``index``, ``name``) at the dataset root.

    BIDS derivatives: ``_dseg`` images have a ``dseg.tsv`` naming their integer labels; written
    once at the root (``[desc-<d>_]dseg.tsv``), it applies to every ``..._[desc-<d>_]dseg.nii.gz``
    below by the inheritance principle.
    """
    import pandas as pd

    frame = pd.DataFrame({"index": [int(k) for k in labels], "name": [str(v) for v in labels.values()]})
    text = frame.to_csv(sep="\t", index=False, lineterminator="\n")
    return write_text(Path(root) / bids_name(None, "dseg", ext=".tsv", **entities), text, force=force)


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
