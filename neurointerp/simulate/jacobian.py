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

import json
import os
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError, NeurointerpError
from neurointerp.io.derivatives import bids_name, res_of, sidecar_path, space_of
from neurointerp.options.core import takes_options
from neurointerp.options.jacobian import JacobianOptions

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
    from neurointerp.io.headers import read_header  # h-io: the header rules of every reader

    shape = read_header(path, kind="field", what="NIfTI displacement field").shape
    return 2 if len(shape) >= 3 and shape[2] == 1 else 3


def _read_table(path: Path):
    """A fields table as strings; blank lines are kept as empty rows and dropped, so that
    ``index + 2`` is the row a spreadsheet shows (header = row 1)."""
    import pandas as pd

    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except Exception as exc:
        raise InputError(f"{path}: not a readable table ({str(exc).splitlines()[0][:120]})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    keep = [any(str(v).strip() for v in values) for values in frame.itertuples(index=False)]
    return frame.loc[np.asarray(keep, dtype=bool)]


def _resolve(value: str, folder: Path) -> Path:
    """A table's path: absolute, or relative to the table's folder (never to the working directory)."""
    p = Path(value)
    return p if p.is_absolute() else folder / p


def _table_rows(frame, where: Path, folder: Path, field_column: str, image_column: str) -> tuple[list[dict], list[str]]:
    """Validate the rows of one fields table -> (records, problems).

    Ids follow the cohort-table rules of :func:`neurointerp.io.read_cohort` (letters and digits,
    ``sub-``/``ses-`` prefixes dropped): they become folder and file names. Problems name the
    spreadsheet row (header = row 1).
    """
    from neurointerp.io.cohort import ID_RE, id_problem, normalise_id  # h-io: id_problem

    records, problems = [], []
    has_ses, has_dir, has_img = "session_id" in frame.columns, "direction" in frame.columns, image_column in frame.columns
    for k, r in frame.iterrows():
        row = int(k) + 2
        pid_raw = str(r["participant_id"]).strip()
        pid = normalise_id(pid_raw, "sub-")
        if not pid:
            problems.append(f"row {row}: participant_id is empty")
        elif id_problem(pid, "participant_id", pid_raw):  # h-io: also ids too long for file names
            problems.append(f"row {row}: {id_problem(pid, 'participant_id', pid_raw)}")
        ses = normalise_id(str(r["session_id"]), "ses-") if has_ses else ""
        if ses and id_problem(ses, "session_id", r["session_id"].strip()):  # h-io
            problems.append(f"row {row}: {id_problem(ses, 'session_id', r['session_id'].strip())}")
        d = str(r["direction"]).strip() if has_dir else ""
        if d and not ID_RE.match(d):
            problems.append(f"row {row}: direction '{d}' must be letters and digits only")
        value = str(r[field_column]).strip()
        f = None
        if not value:
            problems.append(f"row {row}: {field_column} is empty")
        else:
            f = _resolve(value, folder)
            if not f.is_file():
                problems.append(f"row {row}: {field_column} '{value}' not found")
        img = None
        image = str(r[image_column]).strip() if has_img else ""
        if image:
            img = _resolve(image, folder)
            if not img.is_file():
                problems.append(f"row {row}: {image_column} '{image}' not found")
        records.append({"participant_id": pid, "session_id": ses or None, "direction": d or None, "field": f, "image": img, "where": where, "row": row})
    return records, problems


def _read_inputs(inputs, field_column: str, image_column: str):
    """One field file, a table, or a `simulate apply` folder -> (list of row dicts, base folder).

    A row dict has ``participant_id``, ``session_id``, ``direction``, ``field``, ``image`` and,
    for tables, ``where`` (the table) and ``row`` (its spreadsheet row) for messages. Every row
    is validated before any work starts; a table with problems raises :class:`CohortError`
    naming the table and the rows.
    """
    from neurointerp.errors import CohortError
    from neurointerp.io import is_nifti_path

    inputs = Path(inputs)
    if not inputs.exists():
        raise InputError(f"{inputs}: not found")
    if is_nifti_path(inputs):
        return [{"participant_id": None, "session_id": None, "direction": None, "field": inputs, "image": None, "where": None, "row": None}], inputs.parent
    if inputs.is_dir():  # a `simulate apply` folder: fields.tsv, or the parts its array tasks wrote
        tables = [inputs / "fields.tsv"] if (inputs / "fields.tsv").exists() else sorted(inputs.glob("fields-part*of*.tsv"))
        if not tables:
            raise InputError(f"{inputs}: a folder without fields.tsv or fields-part*.tsv (give a field, a table, or a `simulate apply` folder)")
        folder = inputs
    else:
        tables, folder = [inputs], inputs.parent
    rows, seen_rows = [], set()
    for table in tables:
        frame = _read_table(table)
        for col in ("participant_id", field_column):
            if col not in frame.columns:
                raise InputError(f"{table}: no column '{col}' (columns: {', '.join(frame.columns)})")
        records, problems = _table_rows(frame, table, folder, field_column, image_column)
        if problems:
            raise CohortError(table, problems)
        for rec in records:
            content = tuple(rec[k] for k in ("participant_id", "session_id", "direction", "field", "image"))
            if inputs.is_dir() and content in seen_rows:
                continue  # the same row in two parts (an array resubmitted with another size)
            seen_rows.add(content)
            rows.append(rec)
    if not rows:
        raise InputError(f"{inputs}: the table lists no fields")
    # one output per (participant, session, direction): a repeated key would overwrite a map
    first: dict[tuple, dict] = {}
    for rec in rows:
        key = (rec["participant_id"], rec["session_id"], rec["direction"])
        if key in first:
            what = f"participant_id '{key[0]}'" + (f" with session_id '{key[1]}'" if key[1] else "") + (f" and direction '{key[2]}'" if key[2] else "")
            prev = first[key]
            at = f"row {prev['row']}" if prev["where"] == rec["where"] else f"{prev['where']} row {prev['row']}"
            raise CohortError(rec["where"], [f"row {rec['row']}: duplicate {what} (first at {at})"])
        first[key] = rec
    if inputs.is_dir():  # one order whichever task wrote which part (array tasks of jacobian share rows)
        rows.sort(key=lambda r: (r["participant_id"], r["session_id"] or "", r["direction"] or ""))
    return rows, folder


@takes_options(JacobianOptions)
def jacobian_maps(o: JacobianOptions) -> Path:
    """Jacobian determinant and log-determinant maps of displacement fields, and group means.

    ``inputs``: one NIfTI displacement field, or a table (``fields.tsv`` of ``simulate apply``)
    with ``participant_id``, ``field``, optional ``session_id``, ``direction`` and ``image``
    columns (paths relative to the table's folder), or a ``simulate apply`` folder. Ids follow the
    cohort-table rules (letters and digits; ``sub-``/``ses-`` dropped) and one (participant,
    session, direction) appears once; every row is checked before any work starts and a bad one
    raises :class:`~neurointerp.errors.InputError` naming the table and the row. Writes
    ``OUT/sub-<id>/[ses-<s>/]anat/sub-<id>[_ses-<s>][_space-<s>]_desc-<direction>_jacobian.nii.gz`` and
    ``..._logjacobian.nii.gz`` (a single field: ``OUT/<name>_jacobian.nii.gz``), and per direction
    ``OUT/group/space-<s>_desc-<direction>mean_logjacobian.nii.gz`` and ``OUT/jacobian.tsv``.

    Group maps need all fields on one grid; with ``template`` and ``register`` each subject's
    ``image`` is first aligned to the template with ANTs SyN and its log-Jacobian map resampled
    into template space (linear; kept as ``..._desc-<direction>registered_logjacobian``); with
    ``template`` alone the fields must lie on its grid. Runs through the per-subject runner
    (:mod:`neurointerp.runs`): array shares, skipping of finished rows, ``failures.tsv`` for rows
    that fail while the others finish, and the group step written once by the last task.
    """
    import nibabel as nib
    import pandas as pd

    from neurointerp.io import add_bidsignore, load_image, provenance, save_image, write_dataset_description, write_json, write_sidecar, write_table
    from neurointerp.runs import Item, claim_folder, run_items
    from neurointerp.runs.subjects import pending_items
    from neurointerp.simulate.warp import load_field

    inputs, out, template, register, inverse, clamp, seed = o.inputs, Path(o.out), o.template, o.register, o.inverse, o.clamp, o.seed
    threads = o.threads
    if threads is None:
        env = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
        threads = int(env) if env.isdigit() and int(env) > 0 else None
    if threads is not None:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    rows, base = _read_inputs(inputs, o.field_column, o.image_column)
    _refuse_own_outputs(rows, out)
    tpl = load_image(template, ndim=3) if template is not None else None
    if register:
        missing = [r for r in rows if r["image"] is None]
        if missing:
            at = f"{missing[0]['where']} row {missing[0]['row']}" if missing[0]["where"] is not None else str(inputs)
            raise InputError(f"{at}: --register needs an '{o.image_column}' column with each subject's image (missing for {missing[0]['participant_id']})")
    space = o.space or ((space_of(template) or "template") if tpl is not None else None)
    params = {"inputs": str(inputs), "out": str(out), **o.affecting()}
    registered_space = space if register else None
    registered_res = res_of(template) if register else None  # registered maps are on the template image's grid

    items = []
    for k, r in enumerate(rows):
        paths = _paths(out, r, registered_space, registered_res)
        key = "_".join(x for x in (f"sub-{r['participant_id']}" if r["participant_id"] else Path(r["field"]).name.split(".nii")[0],
                                   f"ses-{r['session_id']}" if r["session_id"] else "", r["direction"] or "") if x)
        outputs = [f for v in paths.values() for f in (v, sidecar_path(v))]
        maps = [paths["registered" if register else "logjacobian"]]
        where = f"{r['where']} row {r['row']}" if r["where"] is not None else str(r["field"])
        items.append(Item(key=key, inputs=[r["field"]] + ([r["image"]] if r["image"] else []), outputs=outputs, maps=maps, share=k,
                          participant_id=r["participant_id"] or "", session_id=r["session_id"] or "", where=where, image=str(r["field"]), payload=r))

    claim = dict(inputs={"template": template}, protect=[inputs] + [p for r in rows for p in (r["field"], r["image"]) if p is not None], force=o.force)
    folder = claim_folder(out, "jacobian", o.affecting(), dry_run=True, **claim)
    for it in pending_items(folder, items, o.array_index, o.array_size):  # bad fields refused before anything is written
        _load_row(it.payload)
    folder = claim_folder(out, "jacobian", o.affecting(), **claim)

    def process(batch: list[Item]) -> dict:
        for it in batch:
            _one_field(it.payload, _paths(out, it.payload, registered_space, registered_res), tpl, template, register, inverse, clamp, space, seed, out, params)
        return {}

    def finalize(done: list[Item]) -> None:
        summary, sums, ref_grid = [], {}, None
        for r in rows:
            paths = _paths(out, r, registered_space, registered_res)
            summary.append(json.loads(sidecar_path(paths["logjacobian"]).read_text())["Summary"])
            if r["participant_id"] is None:
                continue
            img = nib.load(str(paths["registered" if register else "logjacobian"]))
            group_map, g_aff = np.asarray(img.dataobj, np.float64), img.affine
            ext = ()
            if _field_ndim(r["field"]) == 2:
                group_map, ext = group_map.reshape(group_map.shape[:2]), (1,)
            key = r["direction"] or "all"
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
            grid_res = registered_res if register else res_of(rows[0]["field"])
            path = out / "group" / bids_name(None, "logjacobian", space=space or space_of(rows[0]["field"]), res=grid_res, desc=f"{key}mean")
            save_image(mean.reshape(mean.shape + ext), g_aff, path, force=True)
            write_sidecar(path, provenance("jacobian", params, N=n, Direction=key, Registered=bool(register)), force=True)

    with folder.writing():
        write_json(out / "jacobian.json", provenance("jacobian", params, inputs=[inputs] if Path(inputs).is_file() else []), force=True)
        write_dataset_description(out, "neurointerp jacobian", "Jacobian determinant maps of displacement fields")
        add_bidsignore(out, ["*_jacobian.nii.gz", "*_jacobian.json", "*_logjacobian.nii.gz", "*_logjacobian.json", "jacobian.*", "group", "failures.tsv"])
    run_items(folder, items, process, batch_size=1, array_index=o.array_index, array_size=o.array_size, finalize=finalize, label="jacobian", noun="field")
    return out


def _refuse_own_outputs(rows: list[dict], out: Path) -> None:
    """jacobian never reads its own outputs (a table or field inside OUT written by jacobian)."""
    from neurointerp.runs.folder import written_by

    mine = {str(p.resolve()) for p in written_by(out, "jacobian")} if out.is_dir() else set()
    for r in rows:
        if r["field"] is not None and str(Path(r["field"]).resolve()) in mine:
            at = f"{r['where']} row {r['row']}: " if r["where"] is not None else ""
            raise InputError(f"{at}{r['field']}: is an output of jacobian in {out}; give displacement fields")


def _load_row(r: dict):
    """``(ndim, field, affine)`` of one row, checked (one-line errors naming the table row)."""
    from neurointerp.io import load_image
    from neurointerp.simulate.warp import load_field

    try:
        ndim = _field_ndim(r["field"])
        shape = affine = None
        if r["image"] is not None:
            vol = load_image(r["image"], ndim=ndim)
            shape, affine = vol.shape, vol.affine
        u, aff = load_field(r["field"], ndim=ndim, shape=shape, affine=affine)
    except InputError as exc:
        if r["where"] is None:
            raise
        raise InputError(f"{r['where']} row {r['row']}: {exc}") from exc
    return ndim, u, aff


def _one_field(r: dict, paths: dict, tpl, template, register, inverse, clamp, space, seed, out: Path, params: dict) -> None:
    """The determinant and log-determinant maps of one field (and its registered version)."""
    from neurointerp.io import load_image, provenance, save_image, write_sidecar
    from neurointerp.simulate.warp import load_field

    ndim, u, aff = _load_row(r)
    raw_det = jacobian_determinant(u, clamp=False)
    folded = int((raw_det <= 0).sum())
    logdet = np.log(np.maximum(raw_det, LOG_FLOOR)) if clamp else np.log(raw_det)
    det = np.maximum(raw_det, 0.0) if clamp else raw_det
    if inverse:
        logdet, det = -logdet, np.exp(-logdet)
    det, logdet = det.astype(np.float32), logdet.astype(np.float32)
    pid, d = r["participant_id"], r["direction"]
    if pid is not None and not register and tpl is not None and (tuple(logdet.shape) != tuple(tpl.shape) or not np.allclose(aff, tpl.affine, atol=1e-3)):
        raise InputError(f"{r['field']}: not on the template grid {'x'.join(map(str, tpl.shape))}; add --register to align subjects first")
    ext = (1,) if ndim == 2 else ()
    summary = {"participant_id": pid or "", **({"session_id": r["session_id"]} if r["session_id"] else {}), "direction": d or "", "field": str(r["field"]), "mean_logjacobian": float(logdet.mean()), "min_jacobian": float(det.min()), "max_jacobian": float(det.max()), "folded_voxels": folded}
    record = provenance("jacobian", params, inputs=[r["field"]] + ([r["image"]] if r["image"] else []), FoldedVoxels=folded, Clamp={"determinant_min": 0.0, "log_floor": LOG_FLOOR} if clamp else None, Method="4th-order central differences, replicated borders (as ANTs CreateJacobianDeterminantImage)", Inverse=bool(inverse), Meaning=("volume change from the input image to the warped image (inverse mapping: 1/det, -log det)" if inverse else "determinant of the displacement-field transform T(p) = p + d(p), as ANTs"), Summary=summary)
    if register and pid is not None:
        registered = _to_template(logdet, aff, r["image"], template, out, pid, seed).astype(np.float32)
        save_image(registered, tpl.affine, paths["registered"], force=True)
        write_sidecar(paths["registered"], {**record, "Space": space, "Registration": {"template": str(template), "transform": "SyN", "interpolation": "linear"}}, force=True)
    save_image(det.reshape(det.shape + ext), aff, paths["jacobian"], force=True)
    write_sidecar(paths["jacobian"], record, force=True)
    save_image(logdet.reshape(logdet.shape + ext), aff, paths["logjacobian"], force=True)
    write_sidecar(paths["logjacobian"], record, force=True)


def _paths(out: Path, r: dict, registered_space: str | None, registered_res: str | None = None) -> dict[str, Path]:
    """Output maps of one table row (a single field: named after the field file)."""
    from neurointerp.io import derivative_path

    pid, d = r["participant_id"], r["direction"]
    if pid is None:
        stem = Path(r["field"]).name.split(".nii")[0]
        stem = stem[:-4] if stem.endswith("_xfm") else stem
        return {"jacobian": out / f"{stem}_jacobian.nii.gz", "logjacobian": out / f"{stem}_logjacobian.nii.gz"}
    ses = r.get("session_id")
    # on the field's grid: its space- and res- (the grid's label, given once by whoever resampled it)
    paths = {k: derivative_path(out, pid, k, session=ses, desc=d, space=space_of(r["field"]), res=res_of(r["field"])) for k in ("jacobian", "logjacobian")}
    if registered_space is not None:
        paths["registered"] = derivative_path(out, pid, "logjacobian", session=ses, desc=f"{d or ''}registered", space=registered_space, res=registered_res)
    return paths


def _to_template(logdet, aff, image, template, out, pid, seed):
    """SyN-align ``image`` to ``template`` and resample ``logdet`` (on ``image``'s grid) into template space."""
    import tempfile

    import nibabel as nib

    from neurointerp.preprocess.antsio import available_cpus

    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(available_cpus()))
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
