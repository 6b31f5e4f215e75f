"""NIfTI header checks in one place: every reader of a NIfTI file goes through :func:`read_header`.

A header is read the way ANTs/ITK reads it, so that an image we load, the maps we write from it
and the ANTs transforms that ``preprocess`` saves next to them all put a structure on the same
side. The rules (checked with antspyx 0.6.3 / ITK 5.4 on this project's machines, see
``tests/test_headers.py``):

Orientation
    * ``sform_code = qform_code = 0``: the orientation is unknown (nibabel and FSL then assume
      radiological LAS, ITK assumes LPS with the origin at the first voxel: the tools disagree,
      left and right cannot be told apart). Refused, unless the caller names the orientation to
      assume (``assume_orientation="LAS"``, three letters: the direction each voxel axis points
      to); the grid is then centred on the world origin with the header's voxel sizes.
    * only one code set: that transform.
    * both set: they must agree (every corner of the grid within 0.1 voxel), else the image is
      refused: ITK takes the qform (the sform when ``sform_code = 1``, *scanner*) and nibabel,
      FSL and SPM the sform, so the tools would put the image in different places. When they
      agree the sform is used (full float32 precision; ITK's pick is then within 0.1 voxel).
    * an affine with shear (axes not perpendicular) is refused: neither the qform nor ITK
      can represent it.
Units
    ``xyzt_units`` metres and microns are converted to mm (as ITK does); unknown means mm.
    A voxel size outside 0.001-50 mm after conversion is refused as implausible.
Data type and intent
    real scalar types only: complex, RGB/RGBA and vector images (vector, displacement, matrix,
    RGB, CIFTI intents) are refused where a scalar volume is expected; a displacement field must
    be an ITK vector image (``X x Y x Z x 1 x C``, intent vector).
Scaling
    ``scl_slope`` finite and non-zero: values are ``slope * stored + inter`` computed in float64
    (a stored 0 becomes exactly ``inter``: 0 when there is no offset). ``scl_slope`` 0 or NaN
    means no scaling by the NIfTI standard, but ITK then still adds ``scl_inter``: such a header
    with a non-zero ``scl_inter`` is refused, and so is a NaN/Inf ``scl_inter``.
Size
    the bytes the header claims (offset + voxels x bytes per voxel) are checked against the file
    before anything is allocated: exactly for ``.nii``, by the largest possible gzip ratio for
    ``.nii.gz``, then by a bounded read (the buffer grows only with data that exist).

Writers use :func:`clean_header`: a fresh header with the affine, its codes, mm units and the
intent the caller names; nothing of an input header (extensions, ``descrip``, ``aux_file``,
display range, intent) is carried over. Provenance goes into the JSON sidecar instead.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError

NIFTI_EXTENSIONS = (".nii.gz", ".nii")

#: the hint given when the orientation is unknown (the CLI option that names it is ``--assume-orientation``)
ORIENTATION_HINT = "set the header's orientation (e.g. fslorient, nibabel), or for preprocess name the one to assume (--assume-orientation LAS)"

#: largest ratio of decompressed to compressed size that deflate can reach (zlib technical notes)
MAX_GZIP_RATIO = 1032
#: agreement of qform and sform: the largest distance at a grid corner, in voxels
XFORM_TOLERANCE_VOXELS = 0.1
#: plausible voxel sizes in mm after the unit conversion
VOXEL_SIZE_RANGE_MM = (1e-3, 50.0)

_UNIT_TO_MM = {"unknown": 1.0, "mm": 1.0, "meter": 1000.0, "micron": 1e-3}

# NIfTI intent codes that say the voxels are not scalars (vectors, matrices, colours, surfaces, CIFTI)
_NON_SCALAR_INTENTS = {
    1004: "general matrix", 1005: "symmetric matrix", 1006: "displacement vector", 1007: "vector",
    1008: "pointset", 1009: "triangle", 1010: "quaternion", 2002: "node index", 2003: "RGB vector",
    2004: "RGBA vector", 2005: "shape", 2006: "FSL FNIRT displacement field", 2007: "FSL cubic spline coefficients",
    2008: "FSL DCT coefficients", 2009: "FSL quadratic spline coefficients", 2016: "FSL TOPUP cubic spline coefficients",
    2017: "FSL TOPUP quadratic spline coefficients", 2018: "FSL TOPUP field",
}
FIELD_INTENTS = (1006, 1007)  # ITK writes 1007 (vector) for displacement fields

# our names for the statistical intents we write -> (nibabel intent name, number of parameters)
INTENTS = {
    "none": ("none", 0),
    "t": ("t test", 1),  # parameter: degrees of freedom
    "f": ("f test", 2),
    "z": ("z score", 0),
    "p": ("p value", 0),
    "log10p": ("log10 p value", 0),
    "chi2": ("chi2", 1),
    "correlation": ("correlation", 1),
    "estimate": ("estimate", 0),
    "label": ("label", 0),
}

_AXIS_PAIRS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


@dataclass
class Header:
    """A checked NIfTI header (no voxel data read yet).

    ``affine`` is the voxel-to-world matrix in mm (RAS) by the rules above; ``source`` says where
    it came from (``sform``, ``qform``, ``assumed LAS``); ``shape`` is the stored shape.
    """

    path: Path
    image: object  # nibabel Nifti1Image / Nifti2Image (header and a data proxy)
    shape: tuple[int, ...]
    affine: np.ndarray
    source: str
    slope: float | None
    inter: float | None

    @property
    def header(self):
        return self.image.header

    @property
    def orientation(self) -> str:
        return axcodes(self.affine)


def is_nifti_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_EXTENSIONS)


def axcodes(affine: np.ndarray) -> str:
    """``'RAS'``, ``'LAS'``, ... of an affine (the direction each voxel axis points to)."""
    import nibabel as nib

    return "".join(str(c) for c in nib.aff2axcodes(np.asarray(affine, dtype=float)))


def parse_orientation(code: str | None, option: str = "--assume-orientation") -> str | None:
    """Validate an orientation code such as ``LAS`` or ``PIR`` (one letter of R/L, A/P, S/I each)."""
    if code is None:
        return None
    text = str(code).strip().upper()
    axes = [_AXIS_PAIRS[c][0] for c in text if c in _AXIS_PAIRS]
    if len(text) != 3 or len(axes) != 3 or sorted(axes) != [0, 1, 2]:
        raise InputError(f"{option} '{code}': expected three letters, one of R/L, A/P and S/I each (e.g. LAS, RAS, LPI)")
    return text


def orientation_affine(code: str, shape, zooms) -> np.ndarray:
    """The affine of a grid whose voxel axes point to ``code`` (e.g. ``LAS``), centred on the origin."""
    code = parse_orientation(code)
    aff = np.zeros((4, 4))
    aff[3, 3] = 1.0
    for i, letter in enumerate(code):
        world, sign = _AXIS_PAIRS[letter]
        aff[world, i] = sign * float(zooms[i])
    aff[:3, 3] = -aff[:3, :3] @ ((np.asarray(shape[:3], dtype=float) - 1) / 2.0)
    return aff


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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def human_bytes(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"  # pragma: no cover


def _shear_degrees(affine: np.ndarray) -> float:
    m = np.asarray(affine, dtype=float)[:3, :3]
    unit = m / np.sqrt((m**2).sum(axis=0))
    cos = np.clip(np.abs(unit.T @ unit - np.eye(3)).max(), 0.0, 1.0)
    return float(np.degrees(np.arcsin(cos)))


def _corner_distance(a: np.ndarray, b: np.ndarray, shape) -> float:
    """Largest distance (mm) between where ``a`` and ``b`` put the corners of the grid."""
    dims = [max(int(s) - 1, 0) for s in shape[:3]] + [0] * (3 - len(shape[:3]))
    corners = np.array([[i, j, k, 1.0] for i in (0, dims[0]) for j in (0, dims[1]) for k in (0, dims[2])]).T
    return float(np.sqrt(((a @ corners - b @ corners)[:3] ** 2).sum(axis=0)).max())


def resolve_affine(hdr, shape, where: str, assume_orientation: str | None = None) -> tuple[np.ndarray, str]:
    """``(affine in the header's units, source)`` by the orientation rules of this module."""
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    if qcode <= 0 and scode <= 0:
        if assume_orientation is None:
            raise InputError(f"{where}: orientation unknown (qform_code = sform_code = 0: left and right cannot be told apart); {ORIENTATION_HINT}")
        code = parse_orientation(assume_orientation)
        zooms = [abs(float(z)) for z in hdr.get_zooms()[:3]]
        return orientation_affine(code, shape, zooms), f"assumed {code}"
    qform = np.asarray(hdr.get_qform(), dtype=np.float64) if qcode > 0 else None
    sform = np.asarray(hdr.get_sform(), dtype=np.float64) if scode > 0 else None
    if sform is not None:
        check_affine(sform, where)  # degenerate (singular, zero voxel size) before any other verdict
        shear = _shear_degrees(sform)
        if shear > 0.01:
            raise InputError(f"{where}: the sform has shear (voxel axes {shear:.2g} degrees off perpendicular); ANTs/ITK and the qform cannot represent it, resample the image first")
    if qform is None:
        return sform, "sform"
    if sform is None:
        return qform, "qform"
    zooms = np.sqrt((qform[:3, :3] ** 2).sum(axis=0))
    gap = _corner_distance(qform, sform, shape)
    if not np.isfinite(gap) or gap > XFORM_TOLERANCE_VOXELS * float(np.min(zooms[zooms > 0], initial=1.0)):
        raise InputError(
            f"{where}: qform ({axcodes(qform) if np.all(np.isfinite(qform)) else '?'}, code {qcode}) and sform "
            f"({axcodes(sform) if np.all(np.isfinite(sform)) else '?'}, code {scode}) disagree by up to {gap:.3g} mm; "
            "tools read different ones (ANTs/ITK the qform unless sform_code is 1, nibabel/FSL the sform): "
            "make them agree (e.g. fslorient -copysform2qform) after checking which is right"
        )
    # they agree: ITK's pick (the qform unless sform_code is 1) is within the tolerance of the
    # sform; the sform is stored at full float32 precision (the qform as a quaternion), so it
    # is the one we use: an affine written by save_image reads back exactly
    return sform, "sform"


def _units_factor(hdr, where: str) -> float:
    unit = hdr.get_xyzt_units()[0]
    if unit not in _UNIT_TO_MM:
        raise InputError(f"{where}: spatial unit '{unit}' is not a length (xyzt_units); expected mm")
    return _UNIT_TO_MM[unit]


def _check_dtype(hdr, where: str) -> np.dtype:
    dtype = hdr.get_data_dtype()
    code = int(hdr["datatype"])
    if dtype.fields is not None or code in (128, 2304):
        raise InputError(f"{where}: RGB/RGBA colour image (datatype {code}); expected one scalar value per voxel")
    if dtype.kind == "c":
        raise InputError(f"{where}: complex-valued image ({dtype.name}); expected real values (e.g. the magnitude)")
    if dtype.kind not in "iuf" and dtype.kind != "b":
        raise InputError(f"{where}: data type {dtype} (datatype {code}) is not a number per voxel")
    return dtype


def _scaling(hdr, where: str) -> tuple[float | None, float | None]:
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    if np.isfinite(slope) and slope != 0.0:
        if not np.isfinite(inter):
            raise InputError(f"{where}: scl_slope is {slope:g} but scl_inter is {inter}; fix the header's scaling")
        if slope == 1.0 and inter == 0.0:
            return None, None
        return slope, inter
    if np.isfinite(inter) and inter != 0.0:
        raise InputError(
            f"{where}: scl_slope is {slope:g} with scl_inter {inter:g}: the NIfTI standard reads it as unscaled, "
            "ANTs/ITK adds the offset; fix the header's scaling"
        )
    return None, None


def _peek_header(path: Path):
    """The raw NIfTI-1/2 header of ``path`` without building an image (``None`` if unreadable)."""
    import nibabel as nib

    try:
        opener = gzip.open if str(path).lower().endswith(".gz") else open
        with opener(path, "rb") as f:
            block = f.read(540)
    except (OSError, EOFError, zlib.error):
        return None
    for klass in (nib.Nifti1Header, nib.Nifti2Header):
        size = klass.template_dtype.itemsize
        if len(block) < size:
            continue
        try:
            hdr = klass(block[:size], check=False)
        except Exception:  # noqa: BLE001 - not this kind of header
            continue
        if int(hdr["sizeof_hdr"]) == size:
            return hdr
    return None


def _claimed_bytes(img) -> tuple[int, int]:
    """``(offset, data bytes)`` that the header claims."""
    proxy = img.dataobj
    n = int(np.prod([int(s) for s in proxy.shape], dtype=np.int64)) if len(proxy.shape) else 0
    return int(proxy.offset), n * int(np.dtype(proxy.dtype).itemsize)


def _check_size(path: Path, img, where: str) -> None:
    offset, nbytes = _claimed_bytes(img)
    size = path.stat().st_size
    shape = "x".join(str(int(s)) for s in img.shape)
    if str(path).lower().endswith(".gz"):
        if offset + nbytes > MAX_GZIP_RATIO * size + 1024:
            raise InputError(
                f"{where}: truncated: the header claims {shape} voxels of {img.header.get_data_dtype()} ({human_bytes(nbytes)}) "
                f"but the gzip file ({human_bytes(size)}) cannot hold them"
            )
    elif offset + nbytes > size:
        raise InputError(
            f"{where}: truncated: the header claims {shape} voxels of {img.header.get_data_dtype()} ({human_bytes(nbytes)}) "
            f"from byte {offset} but the file has {human_bytes(size)}"
        )


def _intent(hdr) -> tuple[int, str]:
    code = int(hdr["intent_code"])
    return code, _NON_SCALAR_INTENTS.get(code, "")


def read_header(
    path: str | os.PathLike,
    *,
    kind: str = "scalar",
    assume_orientation: str | None = None,
    what: str = "NIfTI file",
) -> Header:
    """Open a NIfTI file's header and check it; no voxel data is read.

    ``kind`` is ``scalar`` (an image: non-scalar intents refused) or ``field`` (an ITK/ANTs
    displacement field: vector intent and ``X x Y x Z x 1 x C`` shape required). Raises
    :class:`InputError` with one line naming the file. ``assume_orientation`` applies only to a
    header without orientation (both codes 0).
    """
    import nibabel as nib

    path = Path(path)
    where = str(path)
    if not path.exists():
        raise InputError(f"{where}: file not found")
    if path.is_dir():
        raise InputError(f"{where}: is a folder, expected a {what}")
    if path.stat().st_size == 0:
        raise InputError(f"{where}: file is empty (0 bytes)")
    if not is_nifti_path(path):
        raise InputError(f"{where}: not a NIfTI file name (expected .nii or .nii.gz)")
    if not os.access(path, os.R_OK):
        raise InputError(f"{where}: not readable (permission denied)")
    # the scaling as stored (nibabel moves it out of a loaded header, and refuses some
    # combinations itself with an obscure message)
    peek = _peek_header(path)
    scaling = _scaling(peek, where) if peek is not None else None
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt headers
        raise InputError(f"{where}: not a readable NIfTI file ({_short(exc)})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{where}: not a NIfTI-1/2 image ({type(img).__name__})")
    hdr = img.header
    shape = tuple(int(s) for s in img.shape)
    _check_dtype(hdr, where)
    code, name = _intent(hdr)
    if kind == "scalar" and name:
        raise InputError(f"{where}: a {name} image (intent {code}, shape {'x'.join(map(str, shape))}), not a scalar volume")
    if kind == "field":
        if code not in FIELD_INTENTS or len(shape) != 5 or shape[3] != 1 or shape[4] not in (2, 3):
            intent = f"intent {code}" + (f" {name}" if name else " (none)" if code == 0 else "")
            raise InputError(
                f"{where}: shape {'x'.join(map(str, shape))} with {intent} is not a displacement field "
                "(expected X x Y x Z x 1 x 3 with intent vector, an ITK/ANTs vector image)"
            )
    if scaling is None:  # pragma: no cover - a header nibabel reads but the peek did not
        proxy = img.dataobj
        scaling = _scaling({"scl_slope": float(getattr(proxy, "slope", 1.0)), "scl_inter": float(getattr(proxy, "inter", 0.0))}, where)
    slope, inter = scaling
    _check_size(path, img, where)
    affine, source = resolve_affine(hdr, shape, where, assume_orientation)
    factor = _units_factor(hdr, where)
    if kind == "field" and factor != 1.0:
        raise InputError(f"{where}: displacement field in '{hdr.get_xyzt_units()[0]}' units; ANTs/ITK fields hold mm (xyzt_units mm)")
    affine = np.array(affine, dtype=np.float64)
    if factor != 1.0:
        affine[:3, :] *= factor
    check_affine(affine, where)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    lo, hi = VOXEL_SIZE_RANGE_MM
    if np.any(zooms < lo) or np.any(zooms > hi):
        unit = hdr.get_xyzt_units()[0]
        raise InputError(
            f"{where}: voxel size {' x '.join(f'{z:.4g}' for z in zooms)} mm (header unit '{unit}') is outside {lo:g}-{hi:g} mm; "
            "check the header's units (xyzt_units) and voxel sizes"
        )
    return Header(path=path, image=img, shape=shape, affine=affine, source=source, slope=slope, inter=inter)


def read_array(header: Header, dtype=np.float32) -> np.ndarray:
    """The voxel data of a checked header, scaled, as ``dtype`` (stored shape, Fortran order).

    The read is bounded by what the header claims: a truncated or corrupt file raises one line
    naming it, before any buffer of the claimed size exists.
    """
    path, img = header.path, header.image
    where = str(path)
    offset, nbytes = _claimed_bytes(img)
    raw_dtype = np.dtype(img.dataobj.dtype)
    try:
        if where.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                got = _read_bounded(f, offset + nbytes)
        else:
            with open(path, "rb") as f:
                got = _read_bounded(f, offset + nbytes)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"{where}: truncated or corrupt image data ({_short(exc)})") from exc
    if len(got) < offset + nbytes:
        raise InputError(
            f"{where}: truncated image data: the header claims {human_bytes(nbytes)} from byte {offset}, the file holds {human_bytes(max(len(got) - offset, 0))}"
        )
    stored = np.frombuffer(got, dtype=raw_dtype, count=nbytes // max(raw_dtype.itemsize, 1), offset=offset)
    stored = stored.reshape(header.shape, order="F")
    if header.slope is not None:
        values = stored.astype(np.float64) * header.slope + header.inter
        return values.astype(dtype, copy=False)
    return stored.astype(dtype)


def _read_bounded(f, n: int, chunk: int = 1 << 23) -> bytes:
    """At most ``n`` bytes of ``f``; memory grows only with bytes that really exist."""
    parts, total = [], 0
    while total < n:
        block = f.read(min(chunk, n - total))
        if not block:
            break
        parts.append(block)
        total += len(block)
    return b"".join(parts)


def clean_header(reference=None, intent: str | tuple | None = None, intent_name: str = ""):
    """A fresh header for an output: mm units, the sform/qform codes of ``reference`` (else
    aligned/scanner), the ``intent`` named (see :data:`INTENTS`; a tuple adds its parameters,
    e.g. ``("t", df)``) and nothing else of the reference."""
    import nibabel as nib

    klass = nib.Nifti2Header if reference is not None and isinstance(reference, nib.Nifti2Header) else nib.Nifti1Header
    hdr = klass()
    hdr.set_xyzt_units("mm", "sec")
    name, params = _parse_intent(intent)
    code, n_params = INTENTS[name]
    if len(params) != n_params:
        raise ValueError(f"intent '{name}' takes {n_params} parameter(s), got {len(params)}")
    hdr.set_intent(code, tuple(float(p) for p in params), name=str(intent_name)[:15])
    return hdr


def _parse_intent(intent) -> tuple[str, tuple]:
    if intent is None:
        return "none", ()
    if isinstance(intent, str):
        name, params = intent, ()
    else:
        name, params = intent[0], tuple(intent[1:])
    if name not in INTENTS:
        raise ValueError(f"unknown intent '{name}' (known: {', '.join(INTENTS)})")
    return name, params


def xform_codes(reference) -> tuple[int, int]:
    """``(sform_code, qform_code)`` for an output written with a reference header (codes > 0 kept)."""
    if reference is None:
        return 2, 1
    s, q = int(reference["sform_code"]), int(reference["qform_code"])
    return (s if s > 0 else 2), (q if q > 0 else 1)


def load_mask_like(path: str | os.PathLike, shape, affine, option: str, ndim: int | None = None) -> np.ndarray:
    """A binary mask (voxels > 0) that must lie on the grid ``(shape, affine)``.

    Call it before anything is written: an unreadable file or a mask on another grid raises
    :class:`InputError` (exit 2) with one line naming ``option`` and the path.
    """
    from neurointerp.io.nifti import load_image

    shape = tuple(int(s) for s in shape)
    try:
        vol = load_image(path, ndim=ndim or len(shape), allow_empty=False)
    except InputError as exc:
        raise InputError(f"{option}: {exc}") from exc
    affine = np.asarray(affine, dtype=float)
    tol = 1e-3 * float(np.min(np.sqrt((affine[:3, :3] ** 2).sum(axis=0))))
    if tuple(vol.shape) != shape or not np.allclose(vol.affine, affine, atol=max(tol, 1e-6)):
        dev = float(np.max(np.abs(vol.affine - affine))) if tuple(vol.shape) == shape else None
        grid = "x".join(map(str, vol.shape))
        want = "x".join(map(str, shape))
        more = f"affine differs by up to {dev:.3g} mm" if dev is not None else f"grid {grid}, expected {want}"
        raise InputError(f"{option}: {path}: mask is on another grid ({more}); resample it onto the images' grid")
    return vol.data > 0
