"""Jacobian determinant maps of displacement fields (``neurointerp jacobian``).

Sign: a field of ``simulate apply`` is a pull-back (``X_hat(v) = X(v + u(v))``); its determinant
is > 1 where the simulation *shrank* tissue. ``inverse=True`` reports the inverse mapping's
Jacobian (``1/det``, ``-log det``, evaluated at the output point -- exact up to the small shift
``u``): the local volume change from the raw to the simulated image (atrophy < 0), the sign
convention of tensor-based morphometry and of ``synth brain``'s ground truth.

:func:`jacobian_determinant` computes ``det(I + du/dv)`` of a voxel displacement field ``u``
(the convention of :mod:`neurointerp.simulate.warp`). Derivatives are 4th-order central
differences ``(-f[i+2] + 8 f[i+1] - 8 f[i-1] + f[i-2]) / 12`` with replicated borders and,
with ``clamp`` (default), the determinant is floored at 0 and the log-determinant at
``log(0.001)`` -- the scheme of ANTs' ``CreateJacobianDeterminantImage`` (non-geometric),
so the maps agree with ``ants.create_jacobian_determinant_image`` on the same field written by
:func:`~neurointerp.simulate.warp.save_field` (the determinant does not depend on the voxel
size or orientation: it is the same in voxel and world coordinates). Values > 1 (log > 0):
the output grid point draws from a larger region of the input -- the input is contracted
(atrophy simulated); < 1: expanded. Folded voxels (det <= 0) are counted in the sidecar.

:func:`jacobian_maps` runs it over one field or a table of fields (``fields.tsv`` of
``simulate apply``), writes per-subject maps and the group mean log-Jacobian per direction in
template space -- optionally after a nonlinear (SyN) alignment of each subject's image to the
template, as the group-level maps of papers/simulator-networks-jacobian.txt §4.2.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError, NeurointerpError

LOG_FLOOR = 0.001


def _d4(f: np.ndarray, axis: int) -> np.ndarray:
    f = np.moveaxis(f, axis, 0)
    if f.shape[0] == 1:
        return np.zeros_like(np.moveaxis(f, 0, axis))
    p = np.concatenate([f[:1], f[:1], f, f[-1:], f[-1:]])
    d = (-p[4:] + 8.0 * p[3:-1] - 8.0 * p[1:-3] + p[:-4]) / 12.0
    return np.moveaxis(d, 0, axis)


def jacobian_determinant(field: np.ndarray, log: bool = False, clamp: bool = True) -> np.ndarray:
    """Jacobian determinant (or its log) of a voxel displacement field ``(ndim, *S)`` -> ``(*S)``."""
    field = np.asarray(field, dtype=np.float64)
    ndim = field.shape[0]
    if field.ndim != ndim + 1:
        raise InputError(f"displacement field of shape {field.shape}: expected ({ndim}, *grid) with a {ndim}D grid")
    jac = np.empty(field.shape[1:] + (ndim, ndim))
    for i in range(ndim):
        for a in range(ndim):
            jac[..., i, a] = _d4(field[i], a) + (1.0 if i == a else 0.0)
    det = np.linalg.det(jac)
    if log:
        return np.log(np.maximum(det, LOG_FLOOR)) if clamp else np.log(det)
    return np.maximum(det, 0.0) if clamp else det


def _field_ndim(path) -> int:
    import nibabel as nib

    try:
        shape = nib.load(str(path)).shape
    except Exception as exc:
        raise InputError(f"{path}: not a readable NIfTI displacement field ({str(exc).splitlines()[0][:120]})") from exc
    return 2 if len(shape) >= 3 and shape[2] == 1 else 3


def _read_inputs(inputs, field_column: str, image_column: str):
    """One field file, or a table -> list of dicts (participant_id, direction, field, image)."""
    import pandas as pd

    from neurointerp.io import is_nifti_path

    inputs = Path(inputs)
    if not inputs.exists():
        raise InputError(f"{inputs}: not found")
    if is_nifti_path(inputs):
        return [{"participant_id": None, "direction": None, "field": inputs, "image": None}], inputs.parent
    sep = "\t" if inputs.suffix.lower() in (".tsv", ".txt") else ","
    try:
        frame = pd.read_csv(inputs, sep=sep, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(f"{inputs}: not a readable table ({str(exc).splitlines()[0][:120]})") from exc
    for col in ("participant_id", field_column):
        if col not in frame.columns:
            raise InputError(f"{inputs}: no column '{col}' (columns: {', '.join(frame.columns)})")
    rows = []
    for k, r in frame.iterrows():
        f = Path(r[field_column])
        f = f if f.is_absolute() else inputs.parent / f
        if not f.exists():
            raise InputError(f"{inputs} row {k + 2}: field '{r[field_column]}' not found")
        img = None
        if image_column in frame.columns and r[image_column]:
            img = Path(r[image_column])
            img = img if img.is_absolute() else inputs.parent / img
        rows.append({"participant_id": str(r["participant_id"]), "direction": (r.get("direction") or None), "field": f, "image": img})
    if not rows:
        raise InputError(f"{inputs}: the table lists no fields")
    return rows, inputs.parent


def jacobian_maps(
    inputs: str | os.PathLike,
    out: str | os.PathLike,
    *,
    field_column: str = "field",
    image_column: str = "image",
    template: str | os.PathLike | None = None,
    register: bool = False,
    inverse: bool = False,
    space: str | None = None,
    clamp: bool = True,
    threads: int | None = None,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Jacobian determinant and log-determinant maps of displacement fields, and group means.

    ``inputs``: one NIfTI displacement field, or a table (``fields.tsv`` of ``simulate apply``)
    with ``participant_id``, ``field``, optional ``direction`` and ``image`` columns.
    Writes ``OUT/sub-<id>/anat/sub-<id>[_space-<s>]_desc-<direction>_jacobian.nii.gz`` and
    ``..._logjacobian.nii.gz`` (a single field: ``OUT/<name>_jacobian.nii.gz``), and per direction
    ``OUT/group/space-<s>_desc-<direction>mean_logjacobian.nii.gz`` (+ ``..._jacobian``) and
    ``OUT/jacobian.tsv`` (per-subject summaries).

    Group maps need all fields on one grid; with ``template`` and ``register`` each subject's
    ``image`` is first aligned to the template with ANTs SyN and its log-Jacobian map resampled
    into template space (linear); with ``template`` alone the fields must lie on its grid.
    Returns the output folder. Same arguments as ``neurointerp jacobian``.
    """
    params = {k: v for k, v in locals().items() if k != "force"}
    import pandas as pd

    from neurointerp.io import (
        bids_name,
        derivative_path,
        load_image,
        prepare_output_dir,
        provenance,
        save_image,
        write_sidecar,
        write_table,
    )
    from neurointerp.progress import track
    from neurointerp.simulate.warp import load_field

    if threads is not None:
        if threads < 1:
            raise InputError(f"--threads {threads}: must be at least 1")
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    if register and template is None:
        raise InputError("--register needs --template (the image to align the subjects to)")
    rows, base = _read_inputs(inputs, field_column, image_column)
    tpl = None
    if template is not None:
        tpl = load_image(template, ndim=3)
    if register:
        missing = [r for r in rows if r["image"] is None]
        if missing:
            raise InputError(f"{inputs}: --register needs an '{image_column}' column with each subject's image (missing for {missing[0]['participant_id']})")
    out = prepare_output_dir(out, force=force, marker="jacobian.tsv")
    space = space or ((_space_of(template) or "template") if tpl is not None else None)
    sums: dict[str, list] = {}
    summary = []
    ref_grid = None
    for r in track(rows, description="jacobian", total=len(rows)):
        ndim = _field_ndim(r["field"])
        shape = affine = None
        if r["image"] is not None:
            vol = load_image(r["image"], ndim=ndim)
            shape, affine = vol.shape, vol.affine
        u, aff = load_field(r["field"], ndim=ndim, shape=shape, affine=affine)
        raw_det = jacobian_determinant(u, clamp=False)
        folded = int((raw_det <= 0).sum())
        logdet = np.log(np.maximum(raw_det, LOG_FLOOR)) if clamp else np.log(raw_det)
        det = np.maximum(raw_det, 0.0) if clamp else raw_det
        if inverse:
            logdet, det = -logdet, np.exp(-logdet)
        det, logdet = det.astype(np.float32), logdet.astype(np.float32)
        pid, d = r["participant_id"], r["direction"]
        if pid is None:
            stem = Path(r["field"]).name.split(".nii")[0]
            stem = stem[:-4] if stem.endswith("_xfm") else stem
            paths = {"jacobian": out / f"{stem}_jacobian.nii.gz", "logjacobian": out / f"{stem}_logjacobian.nii.gz"}
        else:
            paths = {k: derivative_path(out, pid, k, desc=d, space=_space_of(r["field"])) for k in ("jacobian", "logjacobian")}
        ext = (1,) if ndim == 2 else ()
        record = provenance("jacobian", params, inputs=[r["field"]] + ([r["image"]] if r["image"] else []), FoldedVoxels=folded, Clamp={"determinant_min": 0.0, "log_floor": LOG_FLOOR} if clamp else None, Method="4th-order central differences, replicated borders (as ANTs CreateJacobianDeterminantImage)", Inverse=bool(inverse), Meaning=("volume change from the input image to the warped image (inverse mapping: 1/det, -log det)" if inverse else "determinant of the displacement-field transform T(p) = p + d(p), as ANTs"))
        save_image(det.reshape(det.shape + ext), aff, paths["jacobian"], force=True)
        save_image(logdet.reshape(logdet.shape + ext), aff, paths["logjacobian"], force=True)
        for p in paths.values():
            write_sidecar(p, record, force=True)
        summary.append({"participant_id": pid or "", "direction": d or "", "field": str(r["field"]), "mean_logjacobian": float(logdet.mean()), "min_jacobian": float(det.min()), "max_jacobian": float(det.max()), "folded_voxels": folded})
        # group accumulation (streaming: one running sum per direction)
        if pid is None:
            continue
        if register:
            group_map, g_aff = _to_template(logdet, aff, r["image"], template, out, pid, seed), tpl.affine
        else:
            group_map, g_aff = logdet, aff
            if tpl is not None and (tuple(logdet.shape) != tuple(tpl.shape) or not np.allclose(aff, tpl.affine, atol=1e-3)):
                raise InputError(f"{r['field']}: not on the template grid {'x'.join(map(str, tpl.shape))}; add --register to align subjects first")
        key = d or "all"
        grid = (tuple(group_map.shape), np.round(np.asarray(g_aff, float), 3).tobytes())
        if ref_grid is None:
            ref_grid = grid
        elif grid != ref_grid:
            raise InputError(f"{r['field']}: grid differs from the first field's; group maps need one grid (use --template with --register)")
        acc = sums.setdefault(key, [np.zeros(group_map.shape, np.float64), 0, g_aff, ext])
        acc[0] += group_map
        acc[1] += 1
    write_table(out / "jacobian.tsv", pd.DataFrame(summary), force=True)
    for key, (total, n, g_aff, ext) in sums.items():
        mean = (total / n).astype(np.float32)
        path = out / "group" / bids_name(None, "logjacobian", space=space or _space_of(rows[0]["field"]), desc=f"{key}mean")
        save_image(mean.reshape(mean.shape + ext), g_aff, path, force=True)
        write_sidecar(path, provenance("jacobian", params, N=n, Direction=key, Registered=bool(register)), force=True)
    return out


def _space_of(path) -> str | None:
    import re

    m = re.search(r"(?:^|_)space-([A-Za-z0-9.+]+)_", Path(path).name)
    return m.group(1) if m else None


def _to_template(logdet, aff, image, template, out, pid, seed):
    """SyN-align ``image`` to ``template`` and resample ``logdet`` (on ``image``'s grid) into template space."""
    import tempfile

    import nibabel as nib

    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(max(1, len(os.sched_getaffinity(0)))))
    import ants

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        lpath = Path(tmp) / "logj.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(logdet, np.float32).reshape(logdet.shape + (1,) * (3 - logdet.ndim)), aff), str(lpath))
        fixed = ants.image_read(str(template))
        moving = ants.image_read(str(image))
        try:
            reg = ants.registration(fixed=fixed, moving=moving, type_of_transform="SyN", outprefix=str(Path(tmp) / "reg_"), random_seed=seed)
        except Exception as exc:
            raise NeurointerpError(f"{image}: registration to {template} failed ({str(exc).splitlines()[0][:120]})") from exc
        warped = ants.apply_transforms(fixed=fixed, moving=ants.image_read(str(lpath)), transformlist=reg["fwdtransforms"], interpolator="linear")
        return warped.numpy().astype(np.float64)
