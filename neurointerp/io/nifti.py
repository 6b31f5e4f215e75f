"""NIfTI reading and writing that keeps the affine and header.

Contract (see DESIGN.md, "Images"):

* NIfTI-1 and NIfTI-2, 3D. A 4D image with a single volume is squeezed; a true 4D image is
  refused, and so is a 2D image where 3D is expected.
* Non-finite voxels (NaN, Inf), an all-zero volume (optional) and a degenerate affine
  (singular, zero voxel size) are refused with one clear line naming the file.
* The affine of the input travels with the data: :func:`save_image` writes the affine it is
  given (sform and qform, with the codes of the reference header when one is given). It never
  falls back to an identity affine.
* Writes are atomic: a temporary file in the target folder, then ``os.replace``.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError
from neurointerp.io.atomic import atomic_path, check_writable

NIFTI_EXTENSIONS = (".nii.gz", ".nii")


@dataclass
class Volume:
    """A loaded image: float32 data, its affine and the original header."""

    data: np.ndarray
    affine: np.ndarray
    header: object  # nibabel Nifti1Header / Nifti2Header
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def zooms(self) -> tuple[float, ...]:
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def is_nifti_path(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_EXTENSIONS)


def check_affine(affine: np.ndarray, where: str) -> None:
    """Refuse affines that cannot describe a grid (non-finite, singular, zero voxel size)."""
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(f"{where}: affine is not a finite 4x4 matrix")
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if np.any(zooms < 1e-6):
        raise InputError(f"{where}: affine has a zero voxel size ({', '.join(f'{z:g}' for z in zooms)})")
    det = abs(np.linalg.det(affine[:3, :3]))
    if det < 1e-9 * float(np.prod(zooms)):
        raise InputError(f"{where}: affine is singular (determinant {det:g})")


def load_image(
    path: str | os.PathLike,
    ndim: int = 3,
    allow_empty: bool = False,
    dtype=np.float32,
) -> Volume:
    """Load a NIfTI image as a :class:`Volume`, validating it.

    Parameters
    ----------
    path
        NIfTI-1/2 file (``.nii`` or ``.nii.gz``).
    ndim
        Expected number of spatial dimensions: 3 (volumes) or 2 (slices). A trailing singleton
        4th dimension is squeezed; for ``ndim=2`` a trailing singleton 3rd dimension is too.
    allow_empty
        Accept an all-zero image (refused by default: it is almost always a failed upstream step).
    """
    import nibabel as nib

    path = Path(path)
    where = str(path)
    if not path.exists():
        raise InputError(f"{where}: file not found")
    if path.is_dir():
        raise InputError(f"{where}: is a folder, expected a NIfTI file")
    if path.stat().st_size == 0:
        raise InputError(f"{where}: file is empty (0 bytes)")
    if not is_nifti_path(path):
        raise InputError(f"{where}: not a NIfTI file name (expected .nii or .nii.gz)")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt headers
        raise InputError(f"{where}: not a readable NIfTI file ({_short(exc)})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{where}: not a NIfTI-1/2 image ({type(img).__name__})")
    shape = tuple(int(s) for s in img.shape)
    spatial = _spatial_shape(shape, ndim, where)
    try:
        data = np.asarray(img.dataobj, dtype=np.float64 if dtype == np.float64 else np.float32)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise InputError(f"{where}: truncated or corrupt image data ({_short(exc)})") from exc
    data = data.reshape(spatial)
    n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise InputError(f"{where}: {n_bad} voxel{'s' if n_bad > 1 else ''} are NaN or Inf")
    if not allow_empty and not np.any(data):
        raise InputError(f"{where}: image is empty (all voxels are zero)")
    affine = np.asarray(img.affine, dtype=np.float64)
    check_affine(affine, where)
    return Volume(data=data.astype(dtype, copy=False), affine=affine, header=img.header, path=path)


def _spatial_shape(shape: tuple[int, ...], ndim: int, where: str) -> tuple[int, ...]:
    dims = list(shape)
    # squeeze trailing singleton dimensions beyond the expected spatial ones (4D with 1 volume)
    while len(dims) > ndim and dims[-1] == 1:
        dims.pop()
    if len(dims) > ndim:
        extra = "x".join(str(d) for d in dims[ndim:])
        kind = "4D" if len(dims) == 4 else f"{len(dims)}D"
        raise InputError(f"{where}: {kind} image of shape {shape} ({extra} volumes); expected a single {ndim}D volume")
    if len(dims) < ndim or any(d < 2 for d in dims[:ndim]):
        raise InputError(f"{where}: image of shape {shape} is not {ndim}D")
    return tuple(dims)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def save_image(
    data: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike,
    header=None,
    force: bool = False,
    dtype=np.float32,
) -> Path:
    """Write ``data`` with ``affine`` to ``path`` atomically and return the path.

    ``header`` (optional) is a reference header whose units, descriptions and sform/qform codes
    are kept. The written affine is exactly ``affine`` as NIfTI can store it (float32 for
    NIfTI-1). An existing file is an error unless ``force``.
    """
    import nibabel as nib

    path = Path(path)
    check_writable(path, force=force)
    affine = np.asarray(affine, dtype=np.float64)
    check_affine(affine, str(path))
    arr = np.asarray(data)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif dtype is not None:
        arr = arr.astype(dtype, copy=False)
    klass = nib.Nifti2Image if header is not None and isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    hdr = None
    if header is not None:
        hdr = header.copy()
        hdr.set_data_dtype(arr.dtype)
        hdr.set_data_shape(arr.shape)
        # scaling of the input does not apply to the new data
        hdr.set_slope_inter(None, None)
    img = klass(arr, affine, header=hdr)
    scode = int(header["sform_code"]) if header is not None and int(header["sform_code"]) > 0 else 2
    qcode = int(header["qform_code"]) if header is not None and int(header["qform_code"]) > 0 else 1
    img.set_sform(affine, code=scode)
    img.set_qform(affine, code=qcode)
    if header is None:
        img.header.set_xyzt_units("mm", "sec")
    # serialise in memory and write under a temporary name that is not a NIfTI name: a run
    # killed mid-write leaves a hidden ``.<name>.<random>.part`` that no glob for maps picks up
    raw = img.to_bytes()
    if path.name.lower().endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=1, mtime=0)
    with atomic_path(path, suffix=".part") as tmp:
        tmp.write_bytes(raw)
    return path
