"""Templates and parcellations resolved from installed packages (never downloaded).

The registry lives in the top-level ``atlases/registry.json`` (installed inside the package as
``neurointerp/_atlases``). A file entry ``package:relative/path`` is resolved inside that
installed package, without importing it.
"""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError

DEFAULT_TEMPLATE = "MNI152NLin2009aSym"


def _registry_path() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "_atlases" / "registry.json", here.parent / "atlases" / "registry.json"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("atlas registry (atlases/registry.json) is missing from the installation")


@lru_cache(maxsize=1)
def registry() -> dict:
    return json.loads(_registry_path().read_text())


def resolve_package_file(spec: str) -> Path:
    """Resolve ``package:relative/path`` inside an installed package."""
    package, _, rel = spec.partition(":")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise InputError(f"template file {spec}: package '{package}' is not installed")
    path = Path(list(found.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise InputError(f"template file {spec}: not found in the installed '{package}' package")
    return path


def template_names() -> list[str]:
    return sorted(registry()["templates"])


def template_file(name: str = DEFAULT_TEMPLATE, kind: str = "T1w") -> Path:
    """Path of a template image (``kind`` T1w, GM or WM)."""
    templates = registry()["templates"]
    if name not in templates:
        raise InputError(f"unknown template '{name}' (known: {', '.join(sorted(templates))}; or pass a NIfTI file)")
    files = templates[name]["files"]
    if kind not in files:
        raise InputError(f"template '{name}' has no {kind} image")
    return resolve_package_file(files[kind])


@lru_cache(maxsize=4)
def load_template(name: str = DEFAULT_TEMPLATE):
    """Return ``(t1, mask, affine)``: the 1 mm T1 scaled to 0-1 (float32), its brain mask, affine."""
    from neurointerp.io.headers import read_array, read_header

    head = read_header(template_file(name, "T1w"))
    data = read_array(head, dtype=np.float32).reshape(head.shape[:3])
    top = float(data.max())
    if top > 0:
        data /= top
    mask = data > 0
    t1 = np.ascontiguousarray(data)
    t1.setflags(write=False)
    mask.setflags(write=False)
    return t1, mask, head.affine


def grid_points(shape, affine) -> np.ndarray:
    """World coordinates (mm) of every voxel centre of a grid, ``(prod(shape), 3)``, C order."""
    idx = np.indices(tuple(int(s) for s in shape), dtype=np.float64).reshape(3, -1)
    return (np.asarray(affine)[:3, :3] @ idx + np.asarray(affine)[:3, 3:4]).T


def working_grid(
    voxel_size: float | None = None,
    shape: tuple[int, int, int] | None = None,
    name: str = DEFAULT_TEMPLATE,
    margin_mm: float = 4.0,
) -> tuple[tuple[int, int, int], np.ndarray]:
    """A RAS grid covering the template's brain: ``(shape, affine)``.

    With ``voxel_size`` only, the shape follows from the brain's bounding box (plus
    ``margin_mm``); with ``shape`` only, an isotropic voxel size is chosen so the box fits;
    with both, the grid of that shape and voxel size is centred on the brain.
    """
    _, mask, affine = load_template(name)
    return grid_from_mask(mask, affine, voxel_size=voxel_size, shape=shape, margin_mm=margin_mm)


def grid_from_mask(mask: np.ndarray, affine: np.ndarray, voxel_size=None, shape=None, margin_mm: float = 4.0):
    """A RAS grid covering a brain mask (the rule of :func:`working_grid`, for any template)."""
    if voxel_size is None and shape is None:
        raise InputError("give a voxel size or a grid shape")
    if voxel_size is not None and not voxel_size > 0:
        raise InputError(f"voxel size must be positive (got {voxel_size})")
    if shape is not None and (len(shape) != 3 or min(shape) < 4):
        raise InputError(f"grid shape must be three sizes of at least 4 (got {tuple(shape)})")
    idx = np.array(np.nonzero(mask))
    if idx.size == 0:
        raise InputError("template brain mask is empty")
    corners = np.array(np.meshgrid(*[[idx[k].min(), idx[k].max()] for k in range(3)], indexing="ij")).reshape(3, -1)
    world = (affine[:3, :3] @ corners + affine[:3, 3:4]).T
    low, high = world.min(axis=0) - margin_mm, world.max(axis=0) + margin_mm
    extent = high - low
    if shape is None:
        shape_arr = np.ceil(extent / voxel_size).astype(int) + 1
    else:
        shape_arr = np.asarray(shape, dtype=int)
        if voxel_size is None:
            voxel_size = float(np.max(extent / (shape_arr - 1)))
    centre = (low + high) / 2.0
    out = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    out[:3, 3] = centre - voxel_size * (shape_arr - 1) / 2.0
    return tuple(int(s) for s in shape_arr), out


def resample_to_grid(data: np.ndarray, src_affine: np.ndarray, shape, affine, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Values of a volume ``(data, src_affine)`` at the voxel centres of the grid ``(shape, affine)``.

    Both affines map voxels to the same world space (mm); ``order`` 0 is nearest neighbour (labels),
    1 trilinear. Points outside the source get ``cval``.
    """
    from scipy import ndimage

    shape = tuple(int(s) for s in shape)
    pts = grid_points(shape, affine)
    coords = np.linalg.solve(np.asarray(src_affine, dtype=np.float64), np.c_[pts, np.ones(len(pts))].T)[:3]
    out = ndimage.map_coordinates(np.asarray(data), coords, order=order, mode="constant", cval=cval)
    return out.reshape(shape)


def resample_template(shape, affine, name: str = DEFAULT_TEMPLATE, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The template T1 (anti-aliased) and its brain mask on a grid ``(shape, affine)``."""
    _, mask, t_aff = load_template(name)
    vox = float(np.mean(np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))))
    img = resample_to_grid(smoothed_template(name, vox), t_aff, shape, affine, order=order)
    m = resample_to_grid(mask.astype(np.float32), t_aff, shape, affine, order=1) > 0.5
    return img.astype(np.float32), m


@lru_cache(maxsize=4)
def smoothed_template(name: str, voxel_size: float) -> np.ndarray:
    """The 1 mm template low-pass filtered for sampling at ``voxel_size`` (no aliasing)."""
    from scipy import ndimage

    t1, _, t_aff = load_template(name)
    src_vox = float(np.mean(np.sqrt((t_aff[:3, :3] ** 2).sum(axis=0))))
    if voxel_size <= src_vox * 1.01:
        return t1
    sigma_mm = np.sqrt(voxel_size**2 - src_vox**2) / 2.3548
    out = ndimage.gaussian_filter(t1, sigma=sigma_mm / src_vox, mode="constant")
    out.setflags(write=False)
    return out


# --------------------------------------------------------------------------------------------
# Parcellations (atlases) -- the "atlases" section of the registry
# --------------------------------------------------------------------------------------------


def atlas_names() -> list[str]:
    """Names of the parcellations in the registry (usable when their package is installed)."""
    return sorted(registry().get("atlases", {}))


def atlas_info(name: str) -> dict:
    """The registry entry of a parcellation (case-insensitive name): files, kind, space, licence."""
    atlases = registry().get("atlases", {})
    lookup = {k.lower(): k for k in atlases}
    key = lookup.get(str(name).lower())
    if key is None:
        raise InputError(f"unknown atlas '{name}' (known: {', '.join(sorted(atlases))}; or pass an atlas image and a labels table)")
    return {"name": key, **atlases[key]}


def _resolve_atlas_file(spec: str, name: str) -> Path:
    package = spec.partition(":")[0]
    if importlib.util.find_spec(package) is None:
        raise InputError(f"atlas '{name}' needs the '{package}' package (pip install {package}); nothing is downloaded at run time")
    return resolve_package_file(spec)


def _label_frame(index, names):
    """Label table: a pandas Series ``index -> name`` (int index named ``index``, background 0 dropped)."""
    import pandas as pd

    series = pd.Series([str(n) for n in names], index=pd.Index([int(i) for i in index], name="index"), name="name")
    series = series[series.index != 0]
    return series.sort_index()


@lru_cache(maxsize=4)
def _native_atlas(name: str) -> tuple[np.ndarray, np.ndarray, object]:
    """``(labels int32, affine, label table)`` of a registry atlas at its own resolution."""
    import pandas as pd

    from neurointerp.io.headers import read_header

    info = atlas_info(name)
    head = read_header(_resolve_atlas_file(info["file"], info["name"]), what="atlas image")
    img = head.image
    table = pd.read_csv(_resolve_atlas_file(info["labels"], info["name"]))
    if info.get("kind") == "probabilistic":
        # maximum-probability labels, thresholded; integer compare per volume, no float 4D copy
        raw = img.dataobj.get_unscaled()  # integer percentages, no float copy of the 4D array
        slope = float(img.dataobj.slope) if np.isfinite(img.dataobj.slope) else 1.0
        inter = float(img.dataobj.inter) if np.isfinite(img.dataobj.inter) else 0.0
        offset = int(info.get("label_offset", 1))
        best = np.array(raw[..., 0])
        labels = np.where(best > 0, offset, 0).astype(np.int32)
        for k in range(1, img.shape[3]):
            vol = raw[..., k]
            better = vol > best
            np.copyto(best, vol, where=better)
            labels[better] = k + offset
        best = best * slope + inter
        labels[best < float(info.get("threshold", 0))] = 0
        lut = _label_frame(table["index"].astype(int) + offset, table["name"])
    else:
        labels = np.asarray(img.dataobj).astype(np.int32)
        lut = _label_frame(table["index"], table["name"])
        labels[~np.isin(labels, lut.index.to_numpy())] = 0  # values without a name are background
    labels.setflags(write=False)
    return labels, head.affine, lut


def resample_labels(labels: np.ndarray, src_affine, shape, affine) -> np.ndarray:
    """Nearest-neighbour resampling of a label volume onto the grid ``(shape, affine)`` (int32)."""
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape))
    vox = np.linalg.solve(np.asarray(src_affine, dtype=np.float64), np.c_[grid_points(shape, affine), np.ones(n)].T)[:3]
    idx = np.rint(vox).astype(np.int64)
    inside = np.all((idx >= 0) & (idx < np.asarray(labels.shape)[:, None]), axis=0)
    out = np.zeros(n, dtype=np.int32)
    out[inside] = labels[idx[0, inside], idx[1, inside], idx[2, inside]]
    return out.reshape(shape)


def load_atlas(name: str, shape, affine) -> tuple[np.ndarray, "object"]:
    """A registry parcellation on the grid ``(shape, affine)``.

    Parameters
    ----------
    name
        Atlas name from :func:`atlas_names` (case-insensitive), e.g. ``"AAL2"``,
        ``"HarvardOxford"``, ``"DesikanKilliany"``.
    shape, affine
        The target grid (e.g. of the maps being summarised).

    Returns
    -------
    labels : np.ndarray
        int32 volume of ``shape``; 0 is background, other values are region indices.
        Resampled with nearest neighbour (probabilistic atlases: maximum-probability labels
        at the registry's threshold first).
    table : pandas.Series
        Region names indexed by region index (background excluded), including regions that
        fall outside the grid.
    """
    labels, src_affine, lut = _native_atlas(atlas_info(name)["name"])
    return resample_labels(labels, src_affine, shape, affine), lut.copy()


def read_label_table(path) -> "object":
    """Read a user label table (TSV/CSV, or a FreeSurfer-style LUT text) as ``index -> name``.

    Accepted columns: ``index`` and ``name`` (also ``label``/``value``/``id`` for the index and
    ``label_name``/``region`` for the name); a table without a header of two columns
    ``<int> <name>`` (whitespace-separated, ``#`` comments) works too.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: label table not found")
    text = path.read_text(encoding="utf-8-sig")
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InputError(f"{path}: label table is empty")
    sep = "\t" if "\t" in lines[0] else ("," if "," in lines[0] else None)
    first = lines[0].split(sep) if sep else lines[0].split()
    has_header = not first[0].strip().lstrip("-").isdigit()
    rows = [(line.split(sep) if sep else line.split()) for line in lines[1 if has_header else 0 :]]
    header = [h.strip().lower() for h in first] if has_header else ["index", "name"]
    idx_col = next((header.index(c) for c in ("index", "label", "value", "id", "roi") if c in header), 0)
    name_col = next((header.index(c) for c in ("name", "label_name", "region", "roi_name") if c in header and header.index(c) != idx_col), 1 if idx_col == 0 else 0)
    index, names = [], []
    for n, fields in enumerate(rows, start=2 if has_header else 1):
        if len(fields) <= max(idx_col, name_col):
            raise InputError(f"{path} line {n}: expected an index and a name")
        try:
            index.append(int(float(fields[idx_col].strip())))
        except ValueError:
            raise InputError(f"{path} line {n}: index '{fields[idx_col].strip()}' is not an integer") from None
        names.append(fields[name_col].strip())
    dupes = sorted({i for i in index if index.count(i) > 1})
    if dupes:
        raise InputError(f"{path}: duplicate region index {dupes[0]}")
    return _label_frame(index, names)


def load_user_atlas(img_path, labels_tsv, shape, affine) -> tuple[np.ndarray, "object"]:
    """A user parcellation (3D integer NIfTI + label table) on the grid ``(shape, affine)``.

    The image must hold integer labels (0 = background) in the same space as the grid; it is
    resampled with nearest neighbour. Labels in the image without a row in the table are
    reported (one line) rather than silently dropped. Returns ``(labels, table)`` as
    :func:`load_atlas`.
    """
    from neurointerp.io.headers import read_array, read_header

    img_path = Path(img_path)
    if not img_path.is_file():
        raise InputError(f"{img_path}: atlas image not found")
    head = read_header(img_path, what="atlas image")  # orientation, units, dtype, size vs file
    data = read_array(head, dtype=np.float64)
    data = data.reshape(data.shape[:3]) if data.ndim == 4 and data.shape[3] == 1 else data
    if data.ndim != 3:
        raise InputError(f"{img_path}: atlas must be a 3D label image (got shape {data.shape})")
    if not np.all(np.isfinite(data)) or not np.allclose(data, np.round(data)):
        raise InputError(f"{img_path}: atlas values must be whole numbers (region indices)")
    labels = np.round(data).astype(np.int32)
    table = read_label_table(labels_tsv)
    unknown = sorted(set(np.unique(labels).tolist()) - set(table.index.tolist()) - {0})
    if unknown:
        raise InputError(f"{img_path}: region {unknown[0]} has no row in {labels_tsv}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    return resample_labels(labels, head.affine, shape, affine), table


def resolve_atlas(atlas, shape, affine, labels=None) -> tuple[np.ndarray, "object", str]:
    """A registry name or a user image (with ``labels``) on a grid: ``(labels, table, name)``."""
    from neurointerp.io.nifti import is_nifti_path

    if atlas is None:
        raise InputError("no atlas given")
    if is_nifti_path(atlas):
        if labels is None:
            raise InputError(f"{atlas}: a user atlas needs a label table (--labels labels.tsv)")
        lab, table = load_user_atlas(atlas, labels, shape, affine)
        name = Path(atlas).name.split(".")[0]
        return lab, table, name
    lab, table = load_atlas(str(atlas), shape, affine)
    return lab, table, atlas_info(str(atlas))["name"]
