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
    import nibabel as nib

    img = nib.load(str(template_file(name, "T1w")))
    data = np.asarray(img.dataobj, dtype=np.float32)
    top = float(data.max())
    if top > 0:
        data /= top
    mask = data > 0
    t1 = np.ascontiguousarray(data)
    t1.setflags(write=False)
    mask.setflags(write=False)
    return t1, mask, np.asarray(img.affine, dtype=np.float64)


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
    if voxel_size is None and shape is None:
        raise InputError("give a voxel size or a grid shape")
    if voxel_size is not None and not voxel_size > 0:
        raise InputError(f"voxel size must be positive (got {voxel_size})")
    if shape is not None and (len(shape) != 3 or min(shape) < 4):
        raise InputError(f"grid shape must be three sizes of at least 4 (got {tuple(shape)})")
    _, mask, affine = load_template(name)
    idx = np.array(np.nonzero(mask))
    corners = np.array([idx.min(axis=1), idx.max(axis=1)], dtype=np.float64)
    world = (affine[:3, :3] @ corners.T + affine[:3, 3:4]).T
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


def resample_template(shape, affine, name: str = DEFAULT_TEMPLATE, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The template T1 (anti-aliased) and its brain mask on a grid ``(shape, affine)``."""
    from scipy import ndimage

    t1, mask, t_aff = load_template(name)
    vox = float(np.mean(np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))))
    src = smoothed_template(name, vox)
    coords = np.linalg.solve(t_aff, np.c_[grid_points(shape, affine), np.ones(int(np.prod(shape)))].T)[:3]
    img = ndimage.map_coordinates(src, coords, order=order, mode="constant", cval=0.0).reshape(shape)
    m = ndimage.map_coordinates(mask.astype(np.float32), coords, order=1, mode="constant", cval=0.0).reshape(shape) > 0.5
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
