"""NIfTI reading and writing that keeps the affine (and nothing else of an input header).

Contract (see DESIGN.md, "Images"):

* NIfTI-1 and NIfTI-2, 3D. A 4D image with a single volume is squeezed; a true 4D image is
  refused, and so is a 2D image where 3D is expected.
* Every header goes through :mod:`neurointerp.io.headers` (orientation codes, qform/sform
  agreement, units, data type, scaling, claimed size vs file size) before any voxel is read.
* Non-finite voxels (NaN, Inf), an all-zero volume (optional) and a degenerate affine
  (singular, zero voxel size) are refused with one clear line naming the file.
* The affine of the input travels with the data: :func:`save_image` writes the affine it is
  given (sform and qform, with the codes of the reference header when one is given). It never
  falls back to an identity affine, and never copies an input's extensions, ``descrip``,
  ``aux_file``, display range or intent (the sidecar holds the provenance).
* Writes are atomic: a temporary file in the target folder, then ``os.replace``.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError
from neurointerp.io.atomic import atomic_path, check_writable
from neurointerp.io.headers import NIFTI_EXTENSIONS, check_affine, clean_header, is_nifti_path, read_array, read_header, xform_codes

__all__ = ["NIFTI_EXTENSIONS", "Volume", "check_affine", "is_nifti_path", "load_image", "save_image"]


@dataclass
class Volume:
    """A loaded image: float32 data, its affine (mm, by the header rules) and the original header."""

    data: np.ndarray
    affine: np.ndarray
    header: object  # nibabel Nifti1Header / Nifti2Header
    path: Path | None = None
    affine_source: str = ""  # 'sform', 'qform' or 'assumed LAS' (see neurointerp.io.headers)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def zooms(self) -> tuple[float, ...]:
        return tuple(float(z) for z in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def load_image(
    path: str | os.PathLike,
    ndim: int = 3,
    allow_empty: bool = False,
    dtype=np.float32,
    assume_orientation: str | None = None,
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
    assume_orientation
        Orientation (e.g. ``LAS``) for a header without one (``sform_code = qform_code = 0``),
        which is refused otherwise; ignored for headers that have an orientation.
    """
    path = Path(path)
    where = str(path)
    head = read_header(path, assume_orientation=assume_orientation)
    spatial = _spatial_shape(head.shape, ndim, where)
    data = read_array(head, dtype=np.float64 if dtype == np.float64 else np.float32)
    data = data.reshape(spatial)
    n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise InputError(f"{where}: {n_bad} voxel{'s' if n_bad > 1 else ''} are NaN or Inf")
    if not allow_empty and not np.any(data):
        raise InputError(f"{where}: image is empty (all voxels are zero)")
    return Volume(data=data.astype(dtype, copy=False), affine=head.affine, header=head.header, path=path, affine_source=head.source)


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


def save_image(
    data: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike,
    header=None,
    force: bool = False,
    dtype=np.float32,
    intent: str | tuple | None = None,
    intent_name: str = "",
) -> Path:
    """Write ``data`` with ``affine`` to ``path`` atomically and return the path.

    ``header`` (optional) is a reference header: only its sform/qform codes (the space they
    name) are kept; units are mm. Nothing else of it is copied: no extensions, ``descrip``,
    ``aux_file``, display range (``cal_min``/``cal_max``), intent or scaling. ``intent`` names
    what the voxels are (:data:`neurointerp.io.headers.INTENTS`: ``"z"``, ``"p"``,
    ``("t", dof)``, ``"estimate"``, ``"label"``, ...; default none) and ``intent_name`` is its
    short label (15 characters). The written affine is exactly ``affine`` as NIfTI can store
    it (float32 for NIfTI-1). An existing file is an error unless ``force``.
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
    hdr = clean_header(header, intent=intent, intent_name=intent_name)
    klass = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
    img = klass(arr, affine, header=hdr)
    scode, qcode = xform_codes(header)
    img.set_sform(affine, code=scode)
    img.set_qform(affine, code=qcode)
    # serialise in memory and write under a temporary name that is not a NIfTI name: a run
    # killed mid-write leaves a hidden ``.<name>.<random>.part`` that no glob for maps picks up
    raw = img.to_bytes()
    if path.name.lower().endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=1, mtime=0)
    with atomic_path(path, suffix=".part") as tmp:
        tmp.write_bytes(raw)
    return path
