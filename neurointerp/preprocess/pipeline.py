"""``neurointerp preprocess``: T1w MRI to template space, per subject, parallel and resumable.

Per subject (each step switchable): reorient to RAS -> N4 bias-field correction -> optional
denoising -> brain extraction -> registration to the template at a coarse grid -> resampling
to the working grid -> z-scoring inside the brain mask. Outputs (BIDS derivatives)::

    <out>/dataset_description.json, preprocess.json (run parameters), cohort.csv, failures.tsv
    <out>/sub-<id>/[ses-<s>/]anat/
        sub-<id>_space-<tpl>_desc-preproc_T1w.nii.gz   (+ .json sidecar: provenance, QC numbers)
        sub-<id>_space-<tpl>_desc-brain_mask.nii.gz
        sub-<id>_desc-brain_mask.nii.gz                 (native grid, RAS)
        sub-<id>_from-T1w_to-<tpl>_mode-image_xfm.h5   (ANTs: native image -> template)
        sub-<id>_from-<tpl>_to-T1w_mode-image_xfm.h5   (ANTs: template maps -> native)
    <out>/sub-<id>/[ses-<s>/]figures/sub-<id>_space-<tpl>_desc-qc_T1w.png

The sidecar is written last: it marks a finished subject. A re-run skips subjects whose
sidecar exists with the same input sha256 and parameters; a killed run leaves no sidecar, and
its subject is redone. One subject per process with ``n_jobs > 1`` (ANTs memory grows when
one process registers many images). SLURM arrays: task ``array_index`` of ``array_size``
takes rows ``array_index, array_index + array_size, ...``; every task rebuilds the output
cohort table and ``failures.tsv`` from what is on disk, so the last task to finish leaves
them complete.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from neurointerp.errors import InputError, NeurointerpError

RUN_MARKER = "preprocess.json"
FAILURE_DIR = ".failures"
WORK_DIR = ".work"


@dataclass
class Subject:
    participant_id: str
    session: str | None
    image: Path
    row: int | None = None  # spreadsheet row in the input table

    @property
    def label(self) -> str:
        return f"sub-{self.participant_id}" + (f"_ses-{self.session}" if self.session else "")


@dataclass
class Outputs:
    image: Path
    mask: Path
    native_mask: Path
    forward: Path
    inverse: Path
    qc: Path | None
    sidecar: Path

    def files(self) -> list[Path]:
        return [p for p in (self.image, self.mask, self.native_mask, self.forward, self.inverse, self.qc) if p is not None]


@dataclass
class PreprocessResult:
    """What a run did: the output cohort table and the subjects done, skipped and failed."""

    out: Path
    table: Path | None
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


class PreprocessFailures(NeurointerpError):
    """Some subjects failed (listed in failures.tsv); the others finished. ``result`` says which."""

    def __init__(self, message: str, result: PreprocessResult, exit_code: int = 1):
        super().__init__(message)
        self.result = result
        self.exit_code = exit_code


def output_paths(out: Path, subject: Subject, space: str, qc: bool = True) -> Outputs:
    from neurointerp.io import derivative_path, sidecar_path
    from neurointerp.preprocess.registration import transform_names

    pid, ses = subject.participant_id, subject.session
    image = derivative_path(out, pid, "T1w", session=ses, space=space, desc="preproc")
    fwd, inv = transform_names(out, pid, ses, space)
    return Outputs(
        image=image,
        mask=derivative_path(out, pid, "mask", session=ses, space=space, desc="brain"),
        native_mask=derivative_path(out, pid, "mask", session=ses, desc="brain"),
        forward=fwd,
        inverse=inv,
        qc=derivative_path(out, pid, "T1w", ext=".png", session=ses, datatype="figures", space=space, desc="qc") if qc else None,
        sidecar=sidecar_path(image),
    )


# --------------------------------------------------------------------------- one subject


def preprocess_subject(subject: Subject, out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Preprocess one subject into ``out`` (call :func:`~neurointerp.preprocess.antsio.set_threads` first)."""
    from neurointerp.io import load_image, provenance, save_image, write_sidecar
    from neurointerp.preprocess import brain_extraction, intensity, qc, registration
    from neurointerp.preprocess.antsio import import_ants
    from neurointerp.preprocess.template import fixed_image, resolve_template, template_on_grid

    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - t0, 3)
        return now

    template = resolve_template(settings["template"], settings["template_mask"], settings["space"])
    shape, grid_affine = tuple(settings["grid_shape"]), np.asarray(settings["grid_affine"], dtype=np.float64)
    paths = output_paths(out, subject, template.space, settings["qc"])
    where = str(subject.image)

    t = time.perf_counter()
    vol = load_image(subject.image, assume_orientation=settings.get("assume_orientation"))  # h-io: header rules, --assume-orientation
    data, affine = vol.data, vol.affine
    if settings["reorient"]:
        data, affine = intensity.reorient_ras(data, affine)
    data = intensity.positive(data, where)
    import_ants(settings["seed"])  # after the input checks: a bad file fails fast
    t = lap("load", t)
    n4_info = None
    if settings["n4"]:
        data, n4_info = intensity.n4_correct(data, affine, resolution=settings["n4_resolution"])
        t = lap("n4", t)
    if settings["denoise"]:
        data = intensity.denoise(data, affine)
        t = lap("denoise", t)

    work = Path(tempfile.mkdtemp(prefix=f"{subject.label}.", dir=_mkdir(out / WORK_DIR)))
    try:
        mask, init = brain_extraction.extract_brain(settings["brain_extraction"], data, affine, template, work)
        t = lap("brain_extraction", t)
        brain = np.where(mask, data, 0.0).astype(np.float32)
        fixed = fixed_image(template, float(settings["registration_resolution"]))
        fwd, inv = registration.register(
            brain, affine, fixed, settings["registration"], settings["registration_resolution"], work / "reg_", initial_transform=init
        )
        t = lap("registration", t)
        img = registration.to_grid(brain, affine, fwd, shape, grid_affine)
        grid_mask = registration.to_grid(mask.astype(np.float32), affine, fwd, shape, grid_affine) > 0.5
        if not grid_mask.any():
            raise NeurointerpError(f"{where}: the brain mask falls outside the working grid after registration")
        img = intensity.zscore_within(img, grid_mask)
        t = lap("resample", t)

        tpl_img, tpl_mask = template_on_grid(template, shape, grid_affine)
        metrics = qc.qc_metrics(img, grid_mask, tpl_img, tpl_mask)
        force = True  # no sidecar yet: any file under these names is a leftover of a killed run
        save_image(img, grid_affine, paths.image, force=force)
        save_image(grid_mask, grid_affine, paths.mask, force=force, dtype=None)
        save_image(mask, affine, paths.native_mask, force=force, dtype=None)
        for src, dst in ((fwd, paths.forward), (inv, paths.inverse)):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dst.with_name(f".{dst.name}.tmp"))
            os.replace(dst.with_name(f".{dst.name}.tmp"), dst)
        if paths.qc is not None:
            qc.qc_figure(img, tpl_img, tpl_mask, paths.qc, title=f"{subject.label}  Dice {metrics['dice_brain_mask']:.3f}  NCC {metrics['ncc_template']:.3f}")
        t = lap("write", t)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    timings["total"] = round(time.perf_counter() - t_start, 3)
    record = provenance(
        "preprocess",
        settings["parameters"],
        inputs=[subject.image],
        seed=settings["seed"],
        Space=template.space,
        Template={"source": template.source, "files": list(template.files)},
        Grid={"shape": list(shape), "affine": grid_affine},
        Transforms={
            "forward": paths.forward.name,
            "inverse": paths.inverse.name,
            "convention": "ANTs composite (LPS). forward resamples the native T1w into template space "
            "(antsApplyTransforms -r template-grid -t forward); inverse takes template-space maps back to the native image",
        },
        Outputs={k: v.name for k, v in (("image", paths.image), ("mask", paths.mask), ("native_mask", paths.native_mask)) + ((("qc", paths.qc),) if paths.qc else ())},
        ParticipantId=subject.participant_id,
        SessionId=subject.session,
        N4=n4_info,
        QC=metrics,
        Timings=timings,
    )
    record["InputSha256"] = record["Inputs"][0]["sha256"]
    write_sidecar(paths.image, record, force=True)
    return {"qc": metrics, "seconds": timings["total"]}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_job(job: dict) -> dict:
    """Worker entry point (one subject; catches everything into a status record)."""
    from neurointerp.preprocess.antsio import set_threads

    set_threads(job["settings"]["threads"])
    subject = Subject(**job["subject"])
    try:
        info = preprocess_subject(subject, Path(job["out"]), job["settings"])
        return {"status": "done", **info}
    except InputError as exc:
        return {"status": "failed", "error_type": "input", "message": str(exc).splitlines()[0] if str(exc) else "bad input"}
    except Exception as exc:  # noqa: BLE001 - a per-subject failure must not stop the batch
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return {"status": "failed", "error_type": "runtime", "message": f"{subject.image}: {type(exc).__name__}: {text}"[:500]}


# --------------------------------------------------------------------------- the batch


def _parse_shape(shape) -> tuple[int, int, int] | None:
    if shape is None or shape == "":
        return None
    if isinstance(shape, str):
        parts = [p for p in shape.replace("x", ",").split(",") if p.strip()]
        try:
            shape = [int(p) for p in parts]
        except ValueError:
            raise InputError(f"--shape '{shape}': expected one or three integers like 64 or 64,64,64") from None
    if isinstance(shape, (int, np.integer)):
        shape = [int(shape)] * 3
    shape = [int(s) for s in shape]
    if len(shape) == 1:
        shape = shape * 3
    if len(shape) != 3 or min(shape) < 4:
        raise InputError(f"--shape {shape}: expected three sizes of at least 4")
    return tuple(shape)


def _subjects(input_path: Path):
    """``(subjects, cohort-or-None)`` for a NIfTI file or a cohort table."""
    from neurointerp.io import is_nifti_path, read_cohort

    name = input_path.name.lower()
    if name.endswith((".csv", ".tsv")):
        cohort = read_cohort(input_path, require_label=False)
        has_ses = "session_id" in cohort.frame.columns
        subjects = [
            Subject(
                participant_id=str(rec["participant_id"]),
                session=(str(rec["session_id"]) or None) if has_ses else None,
                image=Path(rec[cohort.image_column]),
                row=cohort.rows[i],
            )
            for i, rec in enumerate(cohort.frame.to_dict("records"))
        ]
        return subjects, cohort
    if is_nifti_path(input_path) or input_path.suffix == "":
        if not input_path.exists():
            raise InputError(f"{input_path}: file not found")
        pid, ses = _ids_from_name(input_path.name)
        return [Subject(participant_id=pid, session=ses, image=input_path.resolve())], None
    raise InputError(f"{input_path}: expected a NIfTI image (.nii, .nii.gz) or a cohort table (.csv, .tsv)")


def _ids_from_name(name: str) -> tuple[str, str | None]:
    import re

    stem = re.sub(r"\.nii(\.gz)?$", "", name)
    pid = re.search(r"(?:^|_)sub-([A-Za-z0-9]+)", stem)
    ses = re.search(r"(?:^|_)ses-([A-Za-z0-9]+)", stem)
    if pid:
        return pid.group(1), ses.group(1) if ses else None
    clean = re.sub(r"[^A-Za-z0-9]", "", stem)
    return (clean or "01"), None


def _status(paths: Outputs, subject: Subject, parameters: dict) -> str:
    """``missing`` (not done), ``done`` (same input and parameters) or ``stale``."""
    from neurointerp.io import sha256

    if not paths.sidecar.exists():
        return "missing"
    try:
        record = json.loads(paths.sidecar.read_text())
    except (OSError, ValueError):
        return "missing"
    if not all(p.exists() for p in paths.files()):
        return "missing"
    same_input = record.get("InputSha256") == sha256(subject.image) if subject.image.exists() else False
    same_params = json.loads(json.dumps(record.get("Parameters", {}), default=str)) == json.loads(json.dumps(parameters, default=str))
    return "done" if same_input and same_params else "stale"


def run_preprocess(
    input: str | os.PathLike,
    out: str | os.PathLike,
    template: str | None = None,
    template_mask: str | os.PathLike | None = None,
    space: str | None = None,
    shape: Sequence[int] | int | str | None = None,
    voxel_size: float | None = None,
    reorient: bool = True,
    n4: bool = True,
    denoise: bool = False,
    brain_extraction: str = "auto",
    registration: str = "affine",
    registration_resolution: float = 3.0,
    n4_resolution: float = 4.0,
    qc: bool = True,
    seed: int = 0,
    n_jobs: int = 1,
    threads: int | None = None,
    array_index: int | None = None,
    array_size: int | None = None,
    force: bool = False,
    assume_orientation: str | None = None,
) -> PreprocessResult:
    """Preprocess one T1w NIfTI or every image of a cohort table into ``out``.

    Same arguments as ``neurointerp preprocess``. Returns a :class:`PreprocessResult`; when
    some subjects failed (each is listed in ``<out>/failures.tsv`` and printed as one line)
    the others still finish and :class:`PreprocessFailures` is raised at the end (exit code 2
    when every failure is a bad input, else 1).

    Parameters
    ----------
    input
        A NIfTI file (participant id from its ``sub-`` entity or its name) or a cohort table.
    out
        Derivatives folder (created; a non-empty folder must be an earlier preprocess run
        unless ``force``).
    template, template_mask, space
        Registry name (default ``MNI152NLin2009aSym``, nilearn's ICBM 2009a symmetric) or a
        NIfTI file; its brain mask when the file is not skull-stripped; the space name used
        in file names (default: the registry name or the file name).
    shape, voxel_size
        Working grid over the template brain: default 64^3 (about 2.9 mm); a voxel size alone
        gives the shape that covers the brain.
    reorient, n4, denoise
        Steps on the native image (denoising is off by default: it is slow and the resampling
        to ~3 mm averages the noise anyway).
    brain_extraction
        ``auto`` (deepbet if installed, else ``template``), ``deepbet``, ``template``, ``none``.
    registration, registration_resolution
        ``affine`` (default), ``rigid`` or ``syn``, estimated at this many mm.
    n_jobs, threads
        Subjects processed in parallel (one process each) and ITK/torch threads per process
        (default ``$SLURM_CPUS_PER_TASK`` or the CPUs divided by ``n_jobs``).
    array_index, array_size
        Share of a SLURM job array (default ``$SLURM_ARRAY_TASK_ID``, ``$SLURM_ARRAY_TASK_COUNT``).
    force
        Redo subjects that are already done, and write into a folder that is not a preprocess run.
    assume_orientation
        Orientation (e.g. ``LAS``) of images whose header has none (``sform_code = qform_code = 0``);
        without it they are refused. The ANTs transforms then refer to the image with that
        orientation, as the native brain mask written next to them carries it.
    """
    from neurointerp.io import prepare_output_dir, write_dataset_description, write_json
    from neurointerp.preprocess.antsio import default_threads, set_threads
    from neurointerp.preprocess.brain_extraction import resolve_method
    from neurointerp.preprocess.registration import REGISTRATIONS
    from neurointerp.preprocess.template import resolve_template
    from neurointerp.progress import info, track

    t0 = time.perf_counter()
    input_path, out = Path(input), Path(out)
    if n_jobs < 1:
        raise InputError(f"--n-jobs must be at least 1 (got {n_jobs})")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1 (got {threads})")
    if registration not in REGISTRATIONS:
        raise InputError(f"--registration '{registration}': choose one of {', '.join(REGISTRATIONS)}")
    if not registration_resolution > 0 or not n4_resolution > 0:
        raise InputError("--registration-resolution and the N4 resolution must be positive")
    method = resolve_method(brain_extraction)
    from neurointerp.io.headers import parse_orientation  # h-io

    assume_orientation = parse_orientation(assume_orientation)
    from neurointerp.cluster import resolve_array

    index, size = resolve_array(array_index, array_size)
    threads = int(threads) if threads else default_threads(n_jobs)
    grid_shape_in = _parse_shape(shape)
    tpl = resolve_template(template, template_mask, space)
    grid_shape, grid_affine = tpl.grid(shape=grid_shape_in, voxel_size=voxel_size)
    subjects, cohort = _subjects(input_path)

    steps = {
        "reorient": bool(reorient),
        "n4": bool(n4),
        "n4_resolution": float(n4_resolution),
        "denoise": bool(denoise),
        "brain_extraction": method,
        "registration": registration,
        "registration_resolution": float(registration_resolution),
        "qc": bool(qc),
        "seed": int(seed),
        **({"assume_orientation": assume_orientation} if assume_orientation else {}),  # h-io: only when given (old runs stay 'done')
    }
    parameters = {
        "template": tpl.source,
        "template_mask": str(Path(template_mask).resolve()) if template_mask else None,
        "space": tpl.space,
        "shape": list(grid_shape),
        "voxel_size": float(grid_affine[0, 0]),
        **steps,
    }
    settings = {
        "template": template,
        "template_mask": str(Path(template_mask).resolve()) if template_mask else None,
        "space": space,
        "grid_shape": list(grid_shape),
        "grid_affine": grid_affine.tolist(),
        **steps,
        "threads": threads,
        "parameters": parameters,
    }

    out = prepare_output_dir(out, force=force, marker=RUN_MARKER)
    # the marker first: another array task starting now must see a preprocess folder
    if not (out / RUN_MARKER).exists() or force:
        write_json(out / RUN_MARKER, {"Command": "preprocess", "Input": str(input_path.resolve()), "Parameters": parameters}, force=True)
    write_dataset_description(out, "neurointerp preprocess", f"T1w images affinely registered to {tpl.space}, {grid_shape} grid, z-scored in the brain", force=False)

    mine = [s for i, s in enumerate(subjects) if i % size == index]
    result = PreprocessResult(out=out, table=None)
    todo = []
    for subject in mine:
        paths = output_paths(out, subject, tpl.space, qc)
        state = _status(paths, subject, parameters)
        if state == "done" and not force:
            result.skipped.append(subject.label)
            _clear_failure(out, subject)
            continue
        if state == "stale" and not force:
            _record_failure(out, subject, "input", f"{subject.image}: outputs in {paths.image.parent} come from a different input or parameters; use --force to redo them", result)
            continue
        if paths.sidecar.exists():
            paths.sidecar.unlink()  # --force or stale: the subject is not done until it is rewritten
        todo.append(subject)
    if result.skipped:
        info(f"preprocess: {len(result.skipped)} subject(s) already done, skipped")

    jobs = [{"subject": {"participant_id": s.participant_id, "session": s.session, "image": s.image, "row": s.row}, "out": str(out), "settings": settings} for s in todo]
    if todo:
        info(f"preprocess: {len(todo)} subject(s), {n_jobs} job(s) x {threads} thread(s), template {tpl.space}, grid {'x'.join(map(str, grid_shape))}")
    if n_jobs == 1 or len(todo) <= 1:
        set_threads(threads)
        for subject, job in track(zip(todo, jobs), description="preprocess", total=len(todo)):
            _finish(out, subject, _run_job(job), result)
    else:
        _run_parallel(out, todo, jobs, n_jobs, result)

    from neurointerp.io.derivatives import folder_lock

    with folder_lock(out):  # array tasks: the last to rebuild the tables sees every finished subject
        result.table = _write_tables(out, subjects, cohort, tpl.space, parameters, input_path, qc)
    _cleanup_work(out)
    result.seconds["total"] = round(time.perf_counter() - t0, 3)
    if result.failed:
        n = len(result.failed)
        every_input = all(f["error_type"] == "input" for f in result.failed)
        raise PreprocessFailures(
            f"preprocess: {n} of {len(mine)} subject{'s' if len(mine) != 1 else ''} failed (see {out / 'failures.tsv'})",
            result,
            exit_code=2 if every_input else 1,
        )
    return result


def _run_parallel(out: Path, todo, jobs, n_jobs: int, result: PreprocessResult) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from neurointerp.progress import track

    ctx = mp.get_context("spawn")
    kwargs = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    with ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs)), mp_context=ctx, **kwargs) as pool:
        futures = {pool.submit(_run_job, job): subject for subject, job in zip(todo, jobs)}
        for fut in track(as_completed(futures), description="preprocess", total=len(futures)):
            subject = futures[fut]
            try:
                status = fut.result()
            except BrokenProcessPool:
                status = {"status": "failed", "error_type": "runtime", "message": f"{subject.image}: worker process died (out of memory?)"}
            except Exception as exc:  # noqa: BLE001
                status = {"status": "failed", "error_type": "runtime", "message": f"{subject.image}: {type(exc).__name__}: {exc}"}
            _finish(out, subject, status, result)


def _finish(out: Path, subject: Subject, status: dict, result: PreprocessResult) -> None:
    if status["status"] == "done":
        result.done.append(subject.label)
        result.seconds[subject.label] = status.get("seconds", 0.0)
        _clear_failure(out, subject)
    else:
        _record_failure(out, subject, status["error_type"], status["message"], result)


def _failure_file(out: Path, subject: Subject) -> Path:
    return out / FAILURE_DIR / f"{subject.label}.json"


def _record_failure(out: Path, subject: Subject, error_type: str, message: str, result: PreprocessResult) -> None:
    from neurointerp.io import write_json

    message = " ".join(str(message).split())
    record = {
        "participant_id": subject.participant_id,
        "session_id": subject.session or "",
        "row": subject.row if subject.row is not None else "",
        "image": str(subject.image),
        "error_type": error_type,
        "message": message,
    }
    result.failed.append(record)
    write_json(_failure_file(out, subject), record, force=True)
    print(f"error: {subject.label}: {message}", file=sys.stderr)


def _clear_failure(out: Path, subject: Subject) -> None:
    path = _failure_file(out, subject)
    if path.exists():
        path.unlink()


def _write_tables(out: Path, subjects, cohort, space: str, parameters: dict, input_path: Path, qc: bool) -> Path | None:
    """Rebuild ``cohort.<ext>`` (finished subjects) and ``failures.tsv`` from what is on disk."""
    import pandas as pd

    from neurointerp.io import write_cohort, write_table

    records = []
    for i, subject in enumerate(subjects):
        paths = output_paths(out, subject, space, qc)
        if _status(paths, subject, parameters) == "done":
            if cohort is not None:
                rec = dict(cohort.frame.iloc[i])
                rec[cohort.image_column] = str(paths.image)
            else:
                rec = {"participant_id": subject.participant_id, "image": str(paths.image)}
                if subject.session:
                    rec["session_id"] = subject.session
            records.append(rec)
    ext = ".tsv" if input_path.name.lower().endswith(".tsv") else ".csv"
    table = out / f"cohort{ext}"
    columns = list(cohort.frame.columns) if cohort is not None else None
    image_col = cohort.image_column if cohort is not None else "image"
    if records:
        write_cohort(table, pd.DataFrame.from_records(records, columns=columns), image_columns=(image_col,), force=True)
    elif table.exists():
        table.unlink()

    fails = []
    fdir = out / FAILURE_DIR
    if fdir.exists():
        for path in sorted(fdir.glob("*.json")):
            try:
                fails.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
    failures = out / "failures.tsv"
    if fails:
        write_table(failures, pd.DataFrame(fails, columns=["participant_id", "session_id", "row", "image", "error_type", "message"]), force=True)
    elif failures.exists():
        failures.unlink()
    return table if records else None


def _cleanup_work(out: Path) -> None:
    work = out / WORK_DIR
    if work.exists():
        try:
            work.rmdir()  # only when empty: another array task may still be working
        except OSError:
            pass
