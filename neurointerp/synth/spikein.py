"""Spike-in: plant a known deformation into a lab's own T1 images, with its ground truth.

A cohort of native T1 images (healthy or pooled) gets synthetic labels: a fraction of the
participants become "patients" whose images are deformed by a volume change in chosen atlas
regions (or the components of a template-space mask), scaled by a per-patient severity; an
optional confounder (other regions) deforms every image by a covariate correlated with the
label, written as a column of the new cohort table. Everything downstream -- preprocess,
train, saliency, confound-test, group-map -- can then be scored against what was planted, on
the lab's own scanner, contrast, noise and sample size.

The deformation (:mod:`neurointerp.synth.sourcefield`) is built in template space: for every
region a smooth field whose divergence is ``A`` inside the region (edges blurred by
``smoothness`` mm), balanced in a shell around it and exactly zero beyond ``support`` mm; ``A``
is solved so that the log-Jacobian at the region's centre (its deepest point) equals
``effect`` (< 0 atrophy). Its Jacobian is analytic and the map is checked to be a
diffeomorphism (``|grad v|_2 < 0.9`` on a lattice over the support, for the largest severity
and covariate drawn). Participant ``i`` is deformed by ``psi_i = id + s_i v_disease + c_i
v_confounder`` (severity ``s_i`` for patients, 0 for controls; covariate ``c_i``).

It is carried to each native image through that image's registration to the template ``A``
(the ANTs transforms ``preprocess`` writes -- ``preprocessed`` -- or a ``preprocess`` run made
on the fly into ``OUT/registration``): the new image is ``I'(x) = I(x + A(psi^-1(y)) - A(y))``
with ``y = A^-1(x)``, sampled by cubic B-spline interpolation (the input's own dtype, rounded for
integers, clipped to its range). Voxels whose template position lies outside the support are
copied, so they are bit-identical to the input; the header (affine, qform/sform, dtype,
scaling) is kept, minus extensions.

Outputs (``synth brain``'s truth form, so ``saliency --ground-truth``, ``evaluate`` and the
benchmarks read them unchanged)::

    OUT/cohort.csv                      participant_id[, session_id], image, label, <confounder column>, input covariates
    OUT/sub-<id>/[ses-<s>/]anat/sub-<id>[_ses-<s>]_desc-spikein_T1w.nii.gz   (+ .json: what was done)
    OUT/sub-<id>/.../sub-<id>[_ses-<s>]_desc-planted_logjacobian.nii.gz     (native grid)
    OUT/truth/space-<tpl>_T1w.nii.gz, _desc-brain_mask, _desc-disease_logjacobian,
              _desc-disease_mask, _desc-confounder_logjacobian, _desc-confounder_mask,
              _desc-regions_dseg, regions.tsv, subjects.tsv, truth.json
    OUT/registration/                   (the preprocess run of the input images, when made on the fly)

The truth lives on the working grid of ``preprocess`` (the run's grid with ``preprocessed``,
default 64^3): maps of the spiked cohort preprocessed on the same grid compare voxel to voxel.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from neurointerp.errors import InputError, NeurointerpError
from neurointerp.synth.sourcefield import Component, SourceField, region_sources

MASK_THRESHOLD = 0.05  # as synth brain: truth masks are |log-Jacobian| > 0.05 inside the brain
MAX_GRADIENT_NORM = 0.9  # |grad v|_2 bound: diffeomorphism, and the fixed-point inverse converges
LATTICE = 1.25  # source lattice spacing, in units of the smoothness
TAU = 1.0  # mm, softness of the distance that tapers each region's field
INNER = 0.4  # the taper starts at INNER * support mm from the region


@dataclass
class SpikeInput:
    """One native image: ``(participant_id, session, image)`` plus covariates to pass through."""

    participant_id: str
    session: str | None
    image: Path
    covariates: dict = field(default_factory=dict)
    row: int | None = None  # spreadsheet row of the input table, for messages

    @property
    def label(self) -> str:
        return f"sub-{self.participant_id}" + (f"_ses-{self.session}" if self.session else "")


@dataclass
class Region:
    """A template-space region: its voxel centres (world mm), voxel volume and deepest point."""

    name: str
    role: str  # "disease" or "confounder"
    source: str
    points: np.ndarray
    voxel_volume: float
    centre: np.ndarray
    effect: float | None = None  # this region's own log-Jacobian at its centre (``NAME=EFFECT``)

    @property
    def volume(self) -> float:
        return float(len(self.points) * self.voxel_volume)


# --------------------------------------------------------------------------------- regions


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _region_from_mask(mask: np.ndarray, affine: np.ndarray, name: str, role: str, source: str) -> Region:
    from scipy import ndimage

    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    sub = np.pad(mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], 1)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    depth = ndimage.distance_transform_edt(sub, sampling=zooms)
    deepest = np.array(np.unravel_index(int(np.argmax(depth)), depth.shape)) - 1 + lo
    pts = (affine[:3, :3] @ idx.T + affine[:3, 3:4]).T
    centre = affine[:3, :3] @ deepest + affine[:3, 3]
    return Region(name, role, source, pts, float(abs(np.linalg.det(affine[:3, :3]))), centre)


_ATLAS_CACHE: dict = {}


def _atlas_1mm(atlas: str, labels):
    from neurointerp.atlases import resolve_atlas, working_grid

    key = (str(atlas), str(labels))
    if key not in _ATLAS_CACHE:
        _ATLAS_CACHE.clear()
        from neurointerp.io.nifti import is_nifti_path

        if is_nifti_path(atlas):
            shape, grid = working_grid(voxel_size=1.0, margin_mm=10.0)
            _ATLAS_CACHE[key] = (*resolve_atlas(atlas, shape, grid, labels), grid)
        else:  # a registry atlas at its own resolution (no resampling)
            from neurointerp.atlases import _native_atlas, atlas_info

            name = atlas_info(atlas)["name"]
            lab, aff, table = _native_atlas(name)
            _ATLAS_CACHE[key] = (lab, table.copy(), name, aff)
    return _ATLAS_CACHE[key]


def atlas_regions(atlas: str, names: Sequence[str], role: str, labels=None) -> list[Region]:
    """Regions of a registry atlas (or a user atlas with ``labels``) by name or index.

    ``NAME=EFFECT`` gives the region its own log-Jacobian at the centre (e.g. atrophy of the
    hippocampi and expansion of the ventricles in one run).
    """
    lab, table, atlas_name, grid = _atlas_1mm(atlas, labels)
    lookup = {_norm(n): int(i) for i, n in table.items()}
    out = []
    option = f"--{'confounder-' if role == 'confounder' else ''}region"
    for name in names:
        key, _, own = str(name).partition("=")
        key = key.strip()
        own_effect = None
        if own.strip():
            try:
                own_effect = float(own)
            except ValueError:
                raise InputError(f"{option} '{name}': the effect after '=' must be a number (a log-Jacobian, e.g. {key}=-0.3)") from None
            if not np.isfinite(own_effect) or own_effect == 0 or abs(own_effect) > 1.5:
                raise InputError(f"{option} '{name}': the effect must be a non-zero log-Jacobian between -1.5 and 1.5")
        if key.lstrip("-").isdigit() and int(key) in table.index:
            index = int(key)
        elif _norm(key) in lookup:
            index = lookup[_norm(key)]
        else:
            import difflib

            close = difflib.get_close_matches(key.replace(" ", "_"), list(table.values), n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else f" (see the label table of {atlas_name})"
            raise InputError(f"{option} '{key}': no such region in atlas {atlas_name}{hint}")
        mask = lab == index
        if not mask.any():
            raise InputError(f"region '{table.loc[index]}' of atlas {atlas_name} has no voxel inside the template's field of view")
        region = _region_from_mask(mask, grid, str(table.loc[index]), role, f"{atlas_name}:{index}")
        region.effect = own_effect
        out.append(region)
    return out


def mask_regions(path: str | os.PathLike, role: str) -> list[Region]:
    """One region per connected component (26-connected) of a template-space mask image."""
    from scipy import ndimage

    from neurointerp.io import load_image

    vol = load_image(path)
    mask = vol.data > 0.5
    comps, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    stem = re.sub(r"[^A-Za-z0-9]", "", Path(path).name.split(".")[0]) or "mask"
    return [_region_from_mask(comps == k, vol.affine, f"{stem}{k}" if n > 1 else stem, role, f"{path}#{k}") for k in range(1, n + 1)]


# --------------------------------------------------------------------------------- the field


def _unit_components(regions: Sequence[Region], smoothness: float) -> list[Component]:
    spacing = LATTICE * smoothness
    return [Component(*region_sources(r.points, r.voxel_volume, spacing), name=r.name) for r in regions]


def build_field(regions: Sequence[Region], effect: float, smoothness: float, support: float) -> tuple[SourceField, list[dict]]:
    """The field whose log-Jacobian at every region's centre equals ``effect`` (or the region's own).

    Each region's amplitude ``A`` is solved by a few rounds of one-dimensional root finding
    (the regions' fields overlap only when they are closer than ``support``). Returns the field
    and per-region records (amplitude, log-Jacobian reached at the centre).
    """
    from scipy.optimize import brentq

    try:
        unit = SourceField(_unit_components(regions, smoothness), smoothness, INNER * support, support, TAU)
    except ValueError as exc:
        raise InputError(str(exc).replace("enlarge the support", "enlarge --support").replace("the smoothness", "--smoothness")) from None
    parts = [SourceField([c], smoothness, INNER * support, support, TAU) for c in unit.components]
    centres = np.array([r.centre for r in regions]).reshape(-1, 3)
    grads = np.stack([p.gradient(centres) for p in parts], axis=1)  # (centre r, component k, 3, 3)
    targets = np.array([float(effect) if r.effect is None else float(r.effect) for r in regions])
    amp = targets.copy()
    for _ in range(20):
        prev = amp.copy()
        for r in range(len(regions)):
            other = np.eye(3) + np.einsum("k,kij->ij", np.delete(amp, r), np.delete(grads[r], r, axis=0))
            g = grads[r, r]
            top = 0.99 / max(np.linalg.norm(g, 2), 1e-9)

            def f(a, target=targets[r]):
                det = np.linalg.det(other + a * g)
                return (np.log(det) if det > 0 else -np.inf) - target

            lo, hi = -top, top
            if not (f(lo) < 0 < f(hi)):
                raise InputError(f"effect {targets[r]:g} cannot be reached at the centre of region '{regions[r].name}' without folding (try a smaller --effect or a larger --smoothness)")
            amp[r] = brentq(f, lo, hi, xtol=1e-10)
        if np.max(np.abs(amp - prev)) < 1e-8:
            break
    comps = [Component(c.centres, c.masses * a, c.name) for c, a in zip(unit.components, amp)]
    fld = SourceField(comps, smoothness, INNER * support, support, TAU)
    reached = fld.log_jacobian(centres) if len(centres) else np.zeros(0)
    records = []
    for r, a, lj, target in zip(regions, amp, reached, targets):
        # volume change of the region itself: mean Jacobian over its voxels - 1
        jac = np.exp(fld.log_jacobian(r.points))
        records.append({
            "name": r.name, "role": r.role, "source": r.source, "volume_mm3": round(r.volume, 1),
            "centre_mm": [round(float(v), 2) for v in r.centre], "amplitude": float(a), "effect": float(target),
            "logjacobian_at_centre": float(lj), "region_volume_change": float(jac.mean() - 1.0), "n_sources": int(len(comps[regions.index(r)].centres)),
        })
    return fld, records


def check_diffeomorphic(disease: SourceField, confounder: SourceField, max_severity: float, max_covariate: float) -> float:
    """Bound ``|s grad v_d + c grad v_c|_2`` over the support for ``s <= max_severity``, ``|c| <= max_covariate``.

    Returns the bound; raises :class:`InputError` when it reaches :data:`MAX_GRADIENT_NORM`.
    """
    both = disease + confounder
    box = both.support_box()
    if box is None:
        return 0.0
    h = both.sigma / 2.0  # |grad v| varies on the scale of sigma; the 0.9 bound leaves the margin
    axes = [np.arange(lo, hi + h, h) for lo, hi in zip(*box)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    pts = pts[both.in_support(pts)]
    bound = 0.0
    for chunk in np.array_split(pts, max(1, len(pts) // 100_000)):
        if not len(chunk):
            continue
        nd = np.linalg.norm(disease.gradient(chunk), ord=2, axis=(1, 2)) if disease.components else 0.0
        nc = np.linalg.norm(confounder.gradient(chunk), ord=2, axis=(1, 2)) if confounder.components else 0.0
        bound = max(bound, float(np.max(max_severity * nd + max_covariate * nc)))
    if bound >= MAX_GRADIENT_NORM:
        raise InputError(
            f"the planted deformation may fold (|grad v| up to {bound:.2f} for the largest severity and covariate; must stay below {MAX_GRADIENT_NORM}): "
            "use a smaller --effect/--confounder-effect or --severity-max, or a larger --smoothness"
        )
    return bound


# --------------------------------------------------------------------------------- native images


class NativeTransform:
    """A native image's registration to the template, for points (world mm, RAS).

    ``to_template`` maps native points into template space and ``to_native`` back. Built from
    the ANTs files ``preprocess`` writes (:meth:`from_ants`) or a 4x4 native->template matrix.
    """

    def __init__(self, to_template, to_native, description: str, affine: bool):
        self.to_template = to_template
        self.to_native = to_native
        self.description = description
        self.affine = affine  # log-Jacobians carry over exactly (det of the transform cancels)

    @classmethod
    def from_matrix(cls, native_to_template: np.ndarray) -> "NativeTransform":
        m = np.asarray(native_to_template, dtype=np.float64)
        inv = np.linalg.inv(m)
        return cls(lambda p: p @ m[:3, :3].T + m[:3, 3], lambda p: p @ inv[:3, :3].T + inv[:3, 3], "matrix", True)

    @classmethod
    def from_ants(cls, forward: Path, inverse: Path, affine: bool) -> "NativeTransform":
        from neurointerp.preprocess.registration import map_points

        return cls(lambda p: map_points(p, str(inverse)), lambda p: map_points(p, str(forward)), f"{Path(forward).name}, {Path(inverse).name}", affine)


def _native_box(field_: SourceField, transform: NativeTransform, affine: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray] | None:
    """Voxel index box of the native image that can hold the support (None: outside the image)."""
    box = field_.support_box()
    if box is None:
        return None
    axes = [np.linspace(lo, hi, 7) for lo, hi in zip(*box)]
    lattice = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    native = transform.to_native(lattice)
    vox = np.linalg.solve(affine, np.c_[native, np.ones(len(native))].T)[:3].T
    step = (np.asarray(box[1]) - np.asarray(box[0])) / 6.0
    margin = 2 + np.ceil(np.max(step) / np.min(np.sqrt((affine[:3, :3] ** 2).sum(axis=0))))
    lo = np.maximum(np.floor(vox.min(axis=0) - margin), 0).astype(int)
    hi = np.minimum(np.ceil(vox.max(axis=0) + margin) + 1, np.asarray(shape)).astype(int)
    if np.any(hi <= lo):
        return None
    return lo, hi


def spike_array(raw: np.ndarray, affine: np.ndarray, field_: SourceField, transform: NativeTransform) -> tuple[np.ndarray, np.ndarray, dict]:
    """Deform one native image; return ``(new raw array, planted log-Jacobian map, stats)``.

    ``raw`` is the stored (unscaled) 3D array in its own dtype; voxels whose template position
    is outside the field's support are copied unchanged.
    """
    from scipy import ndimage

    shape = raw.shape
    new = raw.copy()
    logj = np.zeros(shape, dtype=np.float32)
    stats = {"resampled_voxels": 0, "changed_voxels": 0, "max_displacement_mm": 0.0}
    box = _native_box(field_, transform, affine, shape)
    if box is None:
        return new, logj, stats
    lo, hi = box
    idx = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1).reshape(-1, 3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    y = transform.to_template(world)
    sup = field_.in_support(y)
    if not sup.any():
        return new, logj, stats
    idx, world, y = idx[sup], world[sup], y[sup]
    z = field_.inverse(y)
    target = world + (transform.to_native(z) - transform.to_native(y))
    vox = np.linalg.solve(affine, np.c_[target, np.ones(len(target))].T)[:3].T
    pad = 6
    c_lo = np.maximum(np.floor(np.minimum(vox.min(axis=0), idx.min(axis=0))) - pad, 0).astype(int)
    c_hi = np.minimum(np.ceil(np.maximum(vox.max(axis=0), idx.max(axis=0))) + pad + 1, np.asarray(shape)).astype(int)
    crop = raw[c_lo[0] : c_hi[0], c_lo[1] : c_hi[1], c_lo[2] : c_hi[2]].astype(np.float64)
    coeffs = ndimage.spline_filter(crop, order=3, mode="mirror")
    values = ndimage.map_coordinates(coeffs, (vox - c_lo).T, order=3, mode="mirror", prefilter=False)
    values = np.clip(values, float(raw.min()), float(raw.max()))
    if np.issubdtype(raw.dtype, np.integer):
        values = np.rint(values)
    new[idx[:, 0], idx[:, 1], idx[:, 2]] = values.astype(raw.dtype)
    logj[idx[:, 0], idx[:, 1], idx[:, 2]] = field_.log_jacobian(y).astype(np.float32)
    stats = {
        "resampled_voxels": int(len(idx)),
        "changed_voxels": int(np.count_nonzero(new != raw)),
        "max_displacement_mm": float(np.abs(target - world).max()),
    }
    return new, logj, stats


def region_labels(regions: Sequence[Region], shape, affine) -> np.ndarray:
    """Regions on a grid: voxel = k where at least half of it is covered by region ``k`` (1-based)."""
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    vol = abs(np.linalg.det(np.asarray(affine)[:3, :3]))
    out = np.zeros(tuple(shape), dtype=np.int32)
    for k, r in enumerate(regions, start=1):
        vox = np.rint(r.points @ inv[:3, :3].T + inv[:3, 3]).astype(int)
        ok = np.all((vox >= 0) & (vox < np.asarray(shape)), axis=1)
        counts = np.zeros(tuple(shape))
        np.add.at(counts, tuple(vox[ok].T), r.voxel_volume)
        out[counts >= 0.5 * vol] = k
    return out


def _write_like(raw: np.ndarray, img, path: Path, force: bool) -> None:
    """Write ``raw`` (stored values) under ``img``'s header: affine, codes, dtype, byte order and
    scaling kept, extensions dropped. Written by hand: nibabel recomputes scl_slope/scl_inter
    on save, which would change the scaled values of every voxel of a scaled input."""
    import gzip
    import io

    from neurointerp.io.atomic import atomic_path, check_writable

    check_writable(path, force=force)
    hdr = img.header.copy()
    if hasattr(hdr, "extensions"):
        hdr.extensions.clear()
    hdr["descrip"] = b"neurointerp synth spike-in"
    slope, inter = img.dataobj.slope, img.dataobj.inter
    hdr["scl_slope"] = slope if np.isfinite(slope) else np.nan
    hdr["scl_inter"] = inter if np.isfinite(inter) else np.nan
    if path.name.endswith((".nii", ".nii.gz")) and not bytes(hdr["magic"]).startswith(b"n+"):
        raise InputError(f"{img.get_filename()}: a NIfTI pair (.hdr/.img) cannot be written as one .nii file")
    offset = int(hdr.sizeof_hdr) + 4  # header + empty extension flag; 352 (NIfTI-1) or 544 (NIfTI-2)
    hdr.set_data_offset(offset)
    buf = io.BytesIO()
    hdr.write_to(buf)
    buf.write(b"\0" * (offset - buf.tell()))
    buf.write(np.asarray(raw).reshape(img.shape).astype(hdr.get_data_dtype(), copy=False).tobytes(order="F"))
    data = buf.getvalue()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    with atomic_path(path, suffix=".part") as tmp:
        tmp.write_bytes(data)


# --------------------------------------------------------------------------------- the cohort


def draw_design(participants: Sequence[str], rng: np.random.Generator, patient_fraction: float, severity: tuple[float, float], strength: float) -> dict[str, dict]:
    """Per participant: ``label`` (control/patient), ``severity`` (0 for controls) and ``covariate``.

    The covariate is ``rho * d + sqrt(1 - rho^2) * eps`` with ``d`` the standardised label
    (as ``synth brain``'s age): its correlation with the label is ``strength`` in expectation.
    """
    n = len(participants)
    n_pat = int(round(n * patient_fraction))
    if n_pat in (0, n):
        raise InputError(f"{n} participants with --patient-fraction {patient_fraction} give a single class")
    labels = np.array(["control"] * (n - n_pat) + ["patient"] * n_pat)
    rng.shuffle(labels)
    d = np.where(labels == "patient", 1.0, -1.0)
    d = (d - d.mean()) / d.std()
    cov = strength * d + np.sqrt(1.0 - strength**2) * rng.standard_normal(n)
    sev = np.where(labels == "patient", rng.uniform(severity[0], severity[1], size=n), 0.0)
    return {p: {"label": str(labels[i]), "severity": float(sev[i]), "covariate": float(cov[i])} for i, p in enumerate(participants)}


def _check_params(effect, severity, patient_fraction, confounder_strength, smoothness, support, confounder_column) -> None:
    if not np.isfinite(effect) or effect == 0 or abs(effect) > 1.5:
        raise InputError(f"--effect must be a non-zero log-Jacobian between -1.5 and 1.5 (got {effect})")
    if not 0 <= severity[0] <= severity[1] or severity[1] <= 0:
        raise InputError(f"--severity-min/--severity-max must satisfy 0 <= min <= max, max > 0 (got {severity[0]}, {severity[1]})")
    if not 0 < patient_fraction < 1:
        raise InputError(f"--patient-fraction must be in (0, 1) (got {patient_fraction})")
    if not 0 <= confounder_strength < 1:
        raise InputError(f"--confounder-strength must be in [0, 1) (got {confounder_strength})")
    if not 0.5 <= smoothness <= 20:
        raise InputError(f"--smoothness must be between 0.5 and 20 mm (got {smoothness})")
    if not 2.5 * smoothness <= support <= 100:
        raise InputError(f"--support must be between 2.5 x smoothness ({2.5 * smoothness:g} mm) and 100 mm (got {support})")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", confounder_column):
        raise InputError(f"--confounder-column '{confounder_column}': letters, digits and _ only")


def _check_inputs(inputs: Sequence[SpikeInput]) -> None:
    import nibabel as nib

    from neurointerp.io.nifti import check_affine

    if not inputs:
        raise InputError("no input images")
    seen = {}
    for s in inputs:
        where = f"row {s.row}: " if s.row is not None else ""
        if not re.fullmatch(r"[A-Za-z0-9]+", s.participant_id) or (s.session and not re.fullmatch(r"[A-Za-z0-9]+", s.session)):
            raise InputError(f"{where}{s.label}: ids must be letters and digits only")
        key = (s.participant_id, s.session)
        if key in seen:
            raise InputError(f"{where}{s.label} appears twice")
        seen[key] = True
        path = Path(s.image)
        if not path.is_file():
            raise InputError(f"{where}{path}: image not found")
        try:
            img = nib.load(str(path))
        except Exception as exc:
            raise InputError(f"{where}{path}: not a readable NIfTI file ({str(exc).splitlines()[0][:100]})") from exc
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{where}{path}: not a NIfTI-1/2 image")
        if len(img.shape) != 3 and not (len(img.shape) == 4 and img.shape[3] == 1):
            raise InputError(f"{where}{path}: image of shape {img.shape}; expected one 3D volume")
        check_affine(img.affine, str(path))


def _registrations(inputs, out: Path, preprocessed, template, registration, registration_resolution, brain_extraction, shape, voxel_size, seed, threads):
    """``(transforms per input, preprocess parameters, working grid, the run's folder)`` -- reading or making a preprocess run."""
    import json

    import pandas as pd

    from neurointerp.io import sha256, write_cohort
    from neurointerp.preprocess.pipeline import RUN_MARKER, Subject, output_paths

    if registration == "identity" and preprocessed is None:  # the images are in template space already
        from neurointerp.preprocess.pipeline import _parse_shape
        from neurointerp.preprocess.template import resolve_template

        tpl = resolve_template(template)
        g_shape, g_aff = tpl.grid(shape=_parse_shape(shape), voxel_size=voxel_size)
        params = {"template": tpl.source, "template_mask": None, "space": tpl.space, "registration": "identity"}
        identity = NativeTransform.from_matrix(np.eye(4))
        identity.description = "identity (images in template space)"
        return [identity] * len(inputs), params, {"shape": list(g_shape), "affine": g_aff.tolist()}, None
    if preprocessed is None:
        from neurointerp.preprocess.pipeline import PreprocessFailures, run_preprocess

        rows = [{"participant_id": s.participant_id, **({"session_id": s.session or ""} if any(i.session for i in inputs) else {}), "image": str(Path(s.image).resolve())} for s in inputs]
        table = write_cohort(out / "source_cohort.csv", pd.DataFrame(rows), force=True)
        try:
            run_preprocess(table, out / "registration", template=template, shape=shape, voxel_size=voxel_size, registration=registration,
                           registration_resolution=registration_resolution, brain_extraction=brain_extraction, qc=False, seed=seed, threads=threads)
        except PreprocessFailures as exc:
            raise NeurointerpError(f"registration of the input images failed for {len(exc.result.failed)} image(s) (see {out / 'registration' / 'failures.tsv'}); fix or drop them and run again") from exc
        preprocessed = out / "registration"
    run = Path(preprocessed)
    marker = run / RUN_MARKER
    if not marker.is_file():
        raise InputError(f"{run}: not a preprocess output folder (no {RUN_MARKER})")
    params = json.loads(marker.read_text())["Parameters"]
    space = params["space"]
    transforms, grid = [], None
    for s in inputs:
        paths = output_paths(run, Subject(s.participant_id, s.session, Path(s.image)), space, qc=False, res=params.get("res"))
        if not paths.sidecar.is_file() or not paths.forward.is_file() or not paths.inverse.is_file():
            raise InputError(f"{s.image}: {s.label} has no finished preprocess outputs in {run}")
        side = json.loads(paths.sidecar.read_text())
        grid = grid or side.get("Grid")
        if side.get("InputSha256") != sha256(s.image):
            raise InputError(f"{s.image}: {run} was preprocessed from a different image for {s.label} (sha256 differs)")
        transforms.append(NativeTransform.from_ants(paths.forward, paths.inverse, affine=params.get("registration") != "syn"))
    if not grid or "shape" not in grid or "affine" not in grid:
        raise InputError(f"{run}: the preprocess sidecars do not record the working grid (an older run?); preprocess again")
    return transforms, params, grid, run


def spike_in(
    inputs: Sequence[SpikeInput | tuple],
    out: str | os.PathLike,
    *,
    atlas: str = "HarvardOxford",
    labels: str | os.PathLike | None = None,
    regions: Sequence[str] = (),
    mask: str | os.PathLike | None = None,
    effect: float = -0.3,
    severity_min: float = 0.5,
    severity_max: float = 1.5,
    patient_fraction: float = 0.5,
    confounder_regions: Sequence[str] = (),
    confounder_mask: str | os.PathLike | None = None,
    confounder_effect: float = -0.2,
    confounder_strength: float = 0.5,
    confounder_column: str = "confounder",
    smoothness: float = 3.0,
    support: float = 20.0,
    preprocessed: str | os.PathLike | None = None,
    template: str | None = None,
    registration: str = "affine",
    registration_resolution: float = 3.0,
    brain_extraction: str = "auto",
    shape: Any = None,
    voxel_size: float | None = None,
    seed: int = 0,
    threads: int | None = None,
    force: bool = False,
) -> Path:
    """Plant a known deformation into native T1 images; return the new cohort table.

    ``inputs``: :class:`SpikeInput` items or ``(participant_id, session, image)`` tuples (a BIDS
    reader or a cohort table feeds them). Disease regions: ``regions`` of ``atlas`` (names as in
    its label table, spaces or underscores alike, or indices) and/or the connected components of
    ``mask`` (template space); likewise the confounder. ``effect``: log-Jacobian at each
    region's centre at severity 1 (< 0 atrophy); patients draw a severity from
    U(``severity_min``, ``severity_max``); ``confounder_effect``: log-Jacobian at +1 of the
    covariate, whose correlation with the label is ``confounder_strength``. Registration to the
    template: the ``preprocessed`` run of these images, else a preprocess run made into
    ``OUT/registration`` with ``template``, ``registration``, ``registration_resolution`` and
    ``brain_extraction``; its grid (``shape``/``voxel_size``, default 64^3) is the truth's grid.
    ``registration="identity"``: the images are in template space already (world coordinates are
    template coordinates); no registration. Same arguments as ``neurointerp synth spike-in``.
    """
    params = {k: v for k, v in locals().items() if k not in ("inputs", "out", "force", "threads")}
    import pandas as pd

    from neurointerp.io import (
        add_bidsignore,
        derivative_path,
        prepare_output_dir,
        provenance,
        save_image,
        write_cohort,
        write_dataset_description,
        write_json,
        write_sidecar,
        skull_stripped_of,
        write_table,
    )
    from neurointerp.progress import info, track

    inputs = [s if isinstance(s, SpikeInput) else SpikeInput(str(s[0]), (str(s[1]) if s[1] else None), Path(s[2])) for s in inputs]
    severity = (float(severity_min), float(severity_max))
    _check_params(effect, severity, patient_fraction, confounder_strength, smoothness, support, confounder_column)
    has_conf = bool(confounder_regions) or confounder_mask is not None
    if has_conf:
        _check_params(confounder_effect, severity, patient_fraction, confounder_strength, smoothness, support, confounder_column)
    if not regions and mask is None:
        raise InputError("give the disease regions: --region NAME (repeatable, atlas --atlas) or --mask FILE")
    _check_inputs(inputs)
    for s in inputs:
        clash = [c for c in s.covariates if c == confounder_column]
        if clash and has_conf:
            raise InputError(f"the input table already has a column '{confounder_column}': choose another --confounder-column")
    dis_regions = (atlas_regions(atlas, list(regions), "disease", labels) if regions else []) + (mask_regions(mask, "disease") if mask is not None else [])
    conf_regions = (atlas_regions(atlas, list(confounder_regions), "confounder", labels) if confounder_regions else []) + (mask_regions(confounder_mask, "confounder") if confounder_mask is not None else [])
    names = [r.name for r in dis_regions + conf_regions]
    if len(set(names)) != len(names):
        raise InputError(f"a region is given twice ({', '.join(sorted({n for n in names if names.count(n) > 1}))})")
    disease, dis_records = build_field(dis_regions, effect, smoothness, support)
    if conf_regions:
        confounder, conf_records = build_field(conf_regions, confounder_effect, smoothness, support)
    else:
        confounder, conf_records = SourceField([], smoothness, INNER * support, support, TAU), []

    participants = list(dict.fromkeys(s.participant_id for s in inputs))
    rng = np.random.default_rng(seed)
    design = draw_design(participants, rng, patient_fraction, severity, confounder_strength if has_conf else 0.0)
    if not has_conf:
        for d in design.values():
            d["covariate"] = 0.0
    max_cov = max(abs(d["covariate"]) for d in design.values())
    bound = check_diffeomorphic(disease, confounder, max(d["severity"] for d in design.values()), max_cov)

    if threads is not None:
        from neurointerp.preprocess.antsio import set_threads

        set_threads(threads)
    from neurointerp.preprocess.brain_extraction import resolve_method
    from neurointerp.preprocess.pipeline import _parse_shape
    from neurointerp.preprocess.registration import REGISTRATIONS

    if registration not in REGISTRATIONS + ("identity",):
        raise InputError(f"--registration '{registration}': choose one of {', '.join(REGISTRATIONS + ('identity',))}")
    resolve_method(brain_extraction)
    _parse_shape(shape)
    if preprocessed is not None and (shape is not None or voxel_size is not None or template is not None):
        raise InputError("--shape, --voxel-size and --template are those of the --preprocessed run: leave them out")
    reg_args = (preprocessed, template, registration, registration_resolution, brain_extraction, shape, voxel_size, seed, threads)
    if preprocessed is not None or registration == "identity":  # read (and check) before anything is written
        transforms, pre_params, grid, run = _registrations(inputs, Path(out), *reg_args)
    out = prepare_output_dir(out, force=force)
    if preprocessed is None and registration != "identity":
        transforms, pre_params, grid, run = _registrations(inputs, out, *reg_args)
    space = pre_params["space"]
    write_dataset_description(out, "neurointerp synth spike-in", "Native T1 images with a planted deformation (known ground truth)", force=force)
    add_bidsignore(out, ["truth", "registration", "source_cohort.csv", "cohort.*", "*_logjacobian.nii.gz", "*_logjacobian.json"])

    import nibabel as nib

    rows, truth_rows = [], []
    for s, tf in track(list(zip(inputs, transforms)), description="spike-in", total=len(inputs)):
        d = design[s.participant_id]
        fld = disease.scaled(d["severity"]) + confounder.scaled(d["covariate"])
        img = nib.load(str(s.image))
        raw = np.asanyarray(img.dataobj.get_unscaled() if hasattr(img.dataobj, "get_unscaled") else img.dataobj)
        raw3 = raw.reshape(img.shape[:3])
        try:
            new, logj, stats = spike_array(raw3, np.asarray(img.affine, dtype=np.float64), fld, tf)
        except ValueError as exc:
            raise NeurointerpError(f"{s.image}: {exc}") from exc
        img_path = derivative_path(out, s.participant_id, "T1w", session=s.session, desc="spikein")
        _write_like(new, img, img_path, force=force)
        lj_path = derivative_path(out, s.participant_id, "logjacobian", session=s.session, desc="planted")
        save_image(logj, img.affine, lj_path, force=force)
        subject = {"label": d["label"], "severity": d["severity"], **({confounder_column: d["covariate"]} if has_conf else {})}
        record = provenance(
            "synth spike-in", params, inputs=[s.image], seed=seed, Subject=subject, Registration={"run": str(run) if run else None, "transforms": tf.description},
            Changes=stats, PlantedLogJacobian={"file": lj_path.name, "meaning": "log det of the template-space deformation at each voxel's template position"
                                               + (" (exact: the registration is affine)" if tf.affine else " (approximate: the registration is nonlinear)")},
        )
        write_sidecar(img_path, record, force=force, root=out, sources=[s.image], skull_stripped=skull_stripped_of(s.image))
        write_sidecar(lj_path, record, force=force)
        row = {"participant_id": s.participant_id, **({"session_id": s.session or ""} if any(i.session for i in inputs) else {}), "image": str(img_path), "label": d["label"]}
        if has_conf:
            row[confounder_column] = round(d["covariate"], 6)
        for k, v in s.covariates.items():
            row["source_label" if k == "label" else k] = v
        rows.append(row)
        truth_rows.append({"participant_id": s.participant_id, **({"session_id": s.session or ""} if s.session else {}), "label": d["label"], "severity": round(d["severity"], 6),
                           "covariate": round(d["covariate"], 6), "source_image": str(Path(s.image).resolve()), **stats})

    # ---- truth on the working grid, in synth brain's form
    from neurointerp.atlases import grid_points
    from neurointerp.preprocess.template import resolve_template, template_on_grid

    tpl = resolve_template(pre_params.get("template"), pre_params.get("template_mask"), space)
    g_shape, g_aff = tuple(int(v) for v in grid["shape"]), np.asarray(grid["affine"], dtype=np.float64)
    pts = grid_points(g_shape, g_aff)
    truth = out / "truth"
    stem = f"space-{space}"
    tpl_img, tpl_mask = template_on_grid(tpl, g_shape, g_aff)
    save_image(tpl_img, g_aff, truth / f"{stem}_T1w.nii.gz", force=force)
    save_image(tpl_mask, g_aff, truth / f"{stem}_desc-brain_mask.nii.gz", force=force, dtype=None)
    for name, fld in (("disease", disease), ("confounder", confounder)):
        if not fld.components:
            continue
        logj = fld.log_jacobian(pts).reshape(g_shape).astype(np.float32)
        save_image(logj, g_aff, truth / f"{stem}_desc-{name}_logjacobian.nii.gz", force=force)
        save_image((np.abs(logj) > MASK_THRESHOLD) & tpl_mask, g_aff, truth / f"{stem}_desc-{name}_mask.nii.gz", force=force, dtype=None)
    dseg = region_labels(dis_regions + conf_regions, g_shape, g_aff)
    save_image(dseg, g_aff, truth / f"{stem}_desc-regions_dseg.nii.gz", force=force, dtype=np.int32)
    region_records = dis_records + conf_records
    write_table(truth / "regions.tsv", pd.DataFrame([{"index": k, **{kk: (str(v) if isinstance(v, list) else v) for kk, v in r.items()}} for k, r in enumerate(region_records, start=1)]), force=force)
    write_table(truth / "subjects.tsv", pd.DataFrame(truth_rows), force=force)
    frame = pd.DataFrame(rows)
    table = write_cohort(out / "cohort.csv", frame, image_columns=("image",), force=force)
    record = provenance(
        "synth spike-in", params, inputs=[s.image for s in inputs], seed=seed, Space=space, TemplateGrid={"shape": g_shape, "affine": g_aff},
        Registration={"run": str(run) if run else None, "parameters": pre_params},
        Field={"smoothness_mm": smoothness, "lattice_mm": LATTICE * smoothness, "taper_mm": [INNER * support, support], "tau_mm": TAU, "max_gradient_norm": bound},
        Disease={"regions": dis_records, "meaning": "log-Jacobian at severity 1; patients have severity ~ U(severity_min, severity_max), controls 0"},
        Confounder={"column": confounder_column, "regions": conf_records, "meaning": "log-Jacobian at +1 of the covariate"} if has_conf else None,
        MaskThreshold=MASK_THRESHOLD,
    )
    write_json(truth / "truth.json", record, force=force)
    write_sidecar(out / "cohort.csv", record, force=force)
    n_pat = sum(1 for p in participants if design[p]["label"] == "patient")
    info(f"spike-in: {len(inputs)} image(s), {n_pat} of {len(participants)} participants are patients; truth in {truth}")
    return table


def spike_in_cohort(cohort: str | os.PathLike, out: str | os.PathLike, **kwargs) -> Path:
    """:func:`spike_in` on a cohort table (``participant_id``, ``image``, optional ``session_id``,
    covariates) or a raw BIDS dataset folder (its T1w images with ``participants.tsv`` and the
    sessions tables, as ``preprocess`` reads it)."""
    from neurointerp.io import read_cohort
    from neurointerp.io.bids import is_bids_dataset, read_bids

    if Path(cohort).is_dir():
        if not is_bids_dataset(cohort):
            raise InputError(f"{cohort}: a folder but not a BIDS dataset (no dataset_description.json, no sub-*/ folders)")
        frame = read_bids(cohort).frame
        has_ses = "session_id" in frame.columns
        keep = [c for c in frame.columns if c not in ("participant_id", "session_id", "image")]
        inputs = [
            SpikeInput(str(rec["participant_id"]), (str(rec["session_id"]) or None) if has_ses else None, Path(rec["image"]), {c: rec[c] for c in keep}, None)
            for rec in frame.to_dict("records")
        ]
        return spike_in(inputs, out, **kwargs)
    table = read_cohort(cohort, require_label=False)
    has_ses = "session_id" in table.frame.columns
    keep = [c for c in table.frame.columns if c not in ("participant_id", "session_id", table.image_column)]
    inputs = [
        SpikeInput(str(rec["participant_id"]), (str(rec["session_id"]) or None) if has_ses else None, Path(rec[table.image_column]), {c: rec[c] for c in keep}, table.rows[i])
        for i, rec in enumerate(table.frame.to_dict("records"))
    ]
    return spike_in(inputs, out, **kwargs)
