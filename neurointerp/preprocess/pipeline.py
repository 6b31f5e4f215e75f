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

Runs, re-runs, array shares, failures and the output cohort table go through the per-subject
runner (:mod:`neurointerp.runs`): a subject is done when its record matches its input's sha256
and the run's options; a killed run leaves no record and the subject is redone; the output
cohort table and ``failures.tsv`` are rebuilt under the folder lock by every task, so the last
one leaves them complete. One subject per process with ``n_jobs > 1`` (ANTs memory grows when
one process registers many images).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurointerp.errors import InputError, NeurointerpError
from neurointerp.options.core import takes_options
from neurointerp.options.preprocess import PreprocessOptions
from neurointerp.progress import info
from neurointerp.runs.subjects import Item, resolve_share

RUN_MARKER = "preprocess.json"
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


def output_paths(out: Path, subject: Subject, space: str, qc: bool = True, res: str | None = None) -> Outputs:
    """The files of one subject; ``res``: the working grid's ``res-`` label (``None`` on the template's own grid)."""
    from neurointerp.io import derivative_path, sidecar_path
    from neurointerp.preprocess.registration import transform_names

    pid, ses = subject.participant_id, subject.session
    image = derivative_path(out, pid, "T1w", session=ses, space=space, res=res, desc="preproc")
    fwd, inv = transform_names(out, pid, ses, space)  # transforms map to the template's space, whatever the grid
    return Outputs(
        image=image,
        mask=derivative_path(out, pid, "mask", session=ses, space=space, res=res, desc="brain"),
        native_mask=derivative_path(out, pid, "mask", session=ses, desc="brain"),
        forward=fwd,
        inverse=inv,
        qc=derivative_path(out, pid, "T1w", ext=".png", session=ses, datatype="figures", space=space, res=res, desc="qc") if qc else None,
        sidecar=sidecar_path(image),
    )


# --------------------------------------------------------------------------- one subject


def preprocess_subject(subject: Subject, out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Preprocess one subject into ``out`` (call :func:`~neurointerp.preprocess.antsio.set_threads` first)."""
    from neurointerp.io import load_image, provenance, save_image, write_sidecar
    from neurointerp.io.atomic import note_written
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
    paths = output_paths(out, subject, template.space, settings["qc"], settings["parameters"].get("res"))
    where = str(subject.image)

    t = time.perf_counter()
    vol = load_image(subject.image, assume_orientation=settings.get("assume_orientation"))  # header rules, --assume-orientation
    data, affine = vol.data, vol.affine
    if settings["reorient"]:
        data, affine = intensity.reorient_ras(data, affine)
    data = intensity.positive(data, where)
    import_ants(settings["seed"])  # after the input checks: a bad file fails fast
    t = lap("load", t)
    n4_info = None
    if settings["n4"]:
        data, n4_info = intensity.n4_correct(data, affine, resolution=settings["n4_resolution"], iterations=(int(settings.get("n4_iterations", 50)),) * 4)
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
            note_written(dst)  # the run's record of written files, and never over an input
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
    # SkullStripped: non-brain voxels are zero after a brain extraction ('none' keeps the head's foreground)
    # SpatialReference: the template file (a user's template, or a registry one under another --space name)
    from neurointerp.io.derivatives import STANDARD_SPACES, TEMPLATE_REFERENCES

    reference = None
    if template.space not in STANDARD_SPACES:
        reference = TEMPLATE_REFERENCES.get(template.source) if template.registered else Path(template.source)
    # the mask on the working grid: its own sidecar (BIDS: a res- label needs Resolution), before the image's (the completion mark)
    write_sidecar(paths.mask, {"Type": "Brain", "Description": "brain mask on the working grid (the native brain mask carried by the forward transform)"},
                  force=True, root=out, sources=[subject.image], spatial_reference=reference)
    write_sidecar(paths.image, record, force=True, root=out, sources=[subject.image], skull_stripped=settings["brain_extraction"] != "none",
                  spatial_reference=reference)
    return {"qc": metrics, "seconds": timings["total"]}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _process_item(item) -> None:
    """Worker entry point: one subject (module-level, so worker processes can run it)."""
    from neurointerp.preprocess.antsio import set_threads

    job = item.payload
    set_threads(job["settings"]["threads"])
    subject = Subject(**job["subject"])
    try:
        preprocess_subject(subject, Path(job["out"]), job["settings"])
    except (InputError, NeurointerpError):
        raise
    except Exception as exc:  # one line naming the image (a traceback with --debug)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise NeurointerpError(f"{subject.image}: {type(exc).__name__}: {text}"[:500]) from exc


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


def _subjects(input_path: Path, o: PreprocessOptions | None = None):
    """``(subjects, cohort-or-None)`` for a NIfTI file, a cohort table or a raw BIDS dataset."""
    from neurointerp.io import is_nifti_path, read_cohort
    from neurointerp.io.bids import is_bids_dataset, read_bids

    bids_opts = {} if o is None else {"participant_label": o.participant_label, "session_label": o.session_label, "filter_file": o.bids_filter_file}
    if input_path.is_dir():
        if not is_bids_dataset(input_path):
            raise InputError(f"{input_path}: a folder but not a BIDS dataset (no dataset_description.json, no sub-*/ folders)")
        bids = read_bids(input_path, **bids_opts)
        has_ses = "session_id" in bids.frame.columns
        subjects = [
            Subject(participant_id=str(rec["participant_id"]), session=(str(rec["session_id"]) or None) if has_ses else None, image=Path(rec["image"]))
            for rec in bids.frame.to_dict("records")
        ]
        return subjects, bids
    used = [f for f, v in (("--participant-label", bids_opts.get("participant_label")), ("--session-label", bids_opts.get("session_label")), ("--bids-filter-file", bids_opts.get("filter_file"))) if v]
    if used:
        raise InputError(f"{input_path}: {used[0]} needs a BIDS dataset folder as INPUT")
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


@takes_options(PreprocessOptions)
def run_preprocess(o: PreprocessOptions) -> PreprocessResult:
    """Preprocess one T1w NIfTI, every image of a cohort table, or the T1w images of a raw BIDS
    dataset (selected by ``participant_label``, ``session_label``, ``bids_filter_file``; see
    :mod:`neurointerp.io.bids`) into ``out``.

    Same arguments as ``neurointerp preprocess``. Returns a :class:`PreprocessResult`. Runs
    through the per-subject runner (:mod:`neurointerp.runs`): finished subjects (same input
    and options) are skipped, a subject whose input changed is redone, and when some subjects
    fail (each listed in ``<out>/failures.tsv`` and printed as one line) the others still finish
    and :class:`PreprocessFailures` is raised at the end (exit code 2 when every failure is a
    bad input, else 1). ``n_jobs`` subjects run in parallel in worker processes, replaced after
    :func:`tasks_per_worker` subjects (ANTs memory grows when one process registers many images);
    threads default to ``$SLURM_CPUS_PER_TASK`` or the CPUs divided by ``n_jobs``. The working
    grid is 64^3 over the template brain by default (about 2.9 mm); a voxel size alone gives the
    shape that covers the brain.
    """
    from neurointerp.io import add_bidsignore, resolution_label, sidecar_path, write_dataset_description, write_json
    from neurointerp.preprocess.antsio import default_threads
    from neurointerp.preprocess.brain_extraction import resolve_method
    from neurointerp.preprocess.template import resolve_template
    from neurointerp.runs import claim_folder

    t0 = time.perf_counter()
    input_path, out = Path(o.input), Path(o.out)
    method = resolve_method(o.brain_extraction)
    threads = int(o.threads) if o.threads else default_threads(o.n_jobs)
    grid_shape_in = _parse_shape(o.shape)
    tpl = resolve_template(o.template, o.template_mask, o.space)
    grid_shape, grid_affine = tpl.grid(shape=grid_shape_in, voxel_size=o.voxel_size)
    subjects, cohort = _subjects(input_path, o)

    steps = {
        "reorient": bool(o.reorient),
        "n4": bool(o.n4),
        "n4_resolution": float(o.n4_resolution),
        "n4_iterations": int(o.n4_iterations),
        "denoise": bool(o.denoise),
        "brain_extraction": method,
        "registration": o.registration,
        "registration_resolution": float(o.registration_resolution),
        "qc": bool(o.qc),
        "seed": int(o.seed),
        **({"assume_orientation": o.assume_orientation} if o.assume_orientation else {}),
    }
    template_mask = str(Path(o.template_mask).resolve()) if o.template_mask else None
    # BIDS res-: the working grid is not the template's own (64^3 of ~2.9 mm by default)
    res = resolution_label(grid_affine, grid_shape, reference=(tpl.mask.shape, tpl.affine))
    parameters = {"template": tpl.source, "template_mask": template_mask, "space": tpl.space, "res": res, "shape": list(grid_shape), "voxel_size": float(grid_affine[0, 0]), **steps}
    settings = {
        "template": o.template,
        "template_mask": template_mask,
        "space": o.space,
        "grid_shape": list(grid_shape),
        "grid_affine": grid_affine.tolist(),
        **steps,
        "threads": threads,
        "parameters": parameters,
    }

    items = []
    for i, subject in enumerate(subjects):
        paths = output_paths(out, subject, tpl.space, o.qc, res)
        job = {"subject": {"participant_id": subject.participant_id, "session": subject.session, "image": subject.image, "row": subject.row}, "out": str(out), "settings": settings}
        items.append(Item(
            key=subject.label, inputs=[subject.image], outputs=[*paths.files(), sidecar_path(paths.mask), paths.sidecar], maps=[paths.image], share=i,
            participant_id=subject.participant_id, session_id=subject.session or "", image=str(subject.image),
            where=f"{input_path} row {subject.row}" if subject.row is not None else str(subject.image), payload=job,
        ))
    ext = ".tsv" if input_path.name.lower().endswith(".tsv") else ".csv"
    table_path = out / f"cohort{ext}"
    template_file = Path(o.template) if o.template and Path(o.template).is_file() else None
    claim = dict(
        inputs={"template": template_file, "template_mask": o.template_mask},
        protect=[input_path, *(s.image for s in subjects)],
        outputs=[table_path, out / "failures.tsv", out / RUN_MARKER],
        force=o.force,
    )
    description = {"grid": {"shape": list(grid_shape), "affine": grid_affine.tolist()}, "space": tpl.space}
    claim_folder(out, "preprocess", {**o.affecting(), "grid": parameters["shape"], "template_source": tpl.source}, dry_run=True, **claim)
    folder = claim_folder(out, "preprocess", {**o.affecting(), "grid": parameters["shape"], "template_source": tpl.source}, description=description, **claim)
    with folder.writing():
        if not (out / RUN_MARKER).exists() or not folder.resumed:
            write_json(out / RUN_MARKER, {"Command": "preprocess", "Input": str(input_path.resolve()), "Parameters": parameters}, force=True)
        write_dataset_description(out, "neurointerp preprocess", f"T1w images affinely registered to {tpl.space}, {grid_shape} grid, z-scored in the brain", force=False)
        # not BIDS: the cohort table, the run marker, ANTs .h5 transforms, QC figures
        add_bidsignore(out, ["cohort.*", RUN_MARKER, "failures.tsv", "*_xfm.h5", "figures"])

    def process(batch):
        for item in batch:
            _process_item(item)

    def finalize(done):
        _write_table(table_path, subjects, cohort, [it.share for it in done], tpl.space, o.qc, others=_done_elsewhere(out, items), res=res)

    if any(True for _ in subjects):
        info(f"preprocess: {len(resolve_share(items, o.array_index, o.array_size))} subject(s), {o.n_jobs} job(s) x {threads} thread(s), template {tpl.space}, grid {'x'.join(map(str, grid_shape))}")
    from neurointerp.preprocess.antsio import caller_threads_kept, itk_threads_fixed_otherwise, set_threads
    from neurointerp.runs import RunFailures, run_items

    with caller_threads_kept():
        set_threads(threads)

        # ants imported earlier in this process (a Python session, a notebook) keeps the ITK thread
        # count of that import: the subjects then run in fresh worker processes, so --threads holds and
        # the result is the one a fresh `neurointerp preprocess` gives
        isolate = itk_threads_fixed_otherwise(threads)
        if isolate:
            info(f"preprocess: ants was imported earlier in this process with another thread count; the subjects run in fresh worker processes ({threads} thread(s) each)")
        result = PreprocessResult(out=out, table=None)
        try:
            outcome = run_items(folder, items, process, batch_size=1, array_index=o.array_index, array_size=o.array_size, finalize=finalize,
                                finalize_partial=True, label="preprocess", parallel=o.n_jobs, process_one=_process_item, isolate=isolate,
                                tasks_per_worker=tasks_per_worker([s.image for s in subjects]))
        except RunFailures as exc:
            _fill(result, exc.outcome, table_path)
            _cleanup_work(out)
            raise PreprocessFailures(str(exc), result, exit_code=exc.exit_code) from None
        _fill(result, outcome, table_path)
        _cleanup_work(out)
        result.seconds["total"] = round(time.perf_counter() - t0, 3)
        return result


# what one worker process may register before it is replaced: one 1 mm whole-head image
# (197x233x189 voxels). ANTs' memory grows with what a process has registered, so 1 mm images
# still get a fresh process each; small images share one, which saves the ~4 s start-up (the
# import of ants) per subject. Measured here on 4 mm synth brain images: +1 MB per subject.
WORKER_VOXELS = 197 * 233 * 189


def tasks_per_worker(images) -> int:
    """How many of ``images`` one worker process preprocesses before it is replaced
    (:data:`WORKER_VOXELS` over the largest image; 1 when a header cannot be read)."""
    import nibabel as nib

    largest = 1
    for path in images:
        try:
            largest = max(largest, int(np.prod(nib.load(str(path)).shape[:3])))
        except Exception:  # noqa: BLE001 - the subject's own run reports a bad file
            return 1
        if largest >= WORKER_VOXELS:  # no need to read the other headers
            return 1
    return max(1, WORKER_VOXELS // largest)


def _fill(result: PreprocessResult, outcome, table_path: Path) -> None:
    result.done = [it.key for it in outcome.done]
    result.skipped = [it.key for it in outcome.skipped]
    result.failed = list(outcome.failed)
    result.table = table_path if table_path.exists() else None


def _done_elsewhere(out: Path, items) -> set[tuple[str, str]]:
    """(participant, session) done on disk by earlier invocations on other inputs (e.g. other
    ``--participant-label``s resuming the same OUT) whose outputs all still exist."""
    from neurointerp.runs.subjects import done_records

    mine = {(it.participant_id, it.session_id) for it in items}
    keep = set()
    for rec in done_records(out, "preprocess"):
        key = (str(rec.get("participant_id", "")), str(rec.get("session_id", "") or ""))
        if key not in mine and all((out / p).exists() for p in rec.get("outputs", [])):
            keep.add(key)
    return keep


def _earlier_rows(table: Path, others: set[tuple[str, str]]) -> list[dict]:
    """Rows of the existing output table for ``others`` (image paths made absolute)."""
    from neurointerp.io.cohort import read_table_keeping_ids

    if not others or not table.exists():
        return []
    frame = read_table_keeping_ids(table)
    if "image" not in frame.columns or "participant_id" not in frame.columns:
        return []
    rows = []
    for rec in frame.to_dict("records"):
        key = (str(rec["participant_id"]), str(rec.get("session_id", "") or ""))
        if key in others:
            rec["image"] = str((table.parent / str(rec["image"])).absolute())
            rows.append(rec)
    return rows


def _write_table(table: Path, subjects, cohort, done_rows, space: str, qc: bool, others: set[tuple[str, str]] = frozenset(), res: str | None = None) -> None:
    """The output cohort table: every finished subject on disk, image paths relative to the table.

    ``others``: subjects finished by earlier invocations on other inputs (other participant
    labels into the same OUT); their rows are kept from the table those invocations wrote.
    """
    import pandas as pd

    from neurointerp.io import write_cohort

    out = table.parent
    earlier = _earlier_rows(table, set(others))
    records = []
    for i in sorted(done_rows):
        subject = subjects[i]
        paths = output_paths(out, subject, space, qc, res)
        if cohort is not None:
            rec = dict(cohort.frame.iloc[i])
            rec[cohort.image_column] = str(paths.image)
        else:
            rec = {"participant_id": subject.participant_id, "image": str(paths.image)}
            if subject.session:
                rec["session_id"] = subject.session
        records.append(rec)
    columns = list(cohort.frame.columns) if cohort is not None else None
    image_col = cohort.image_column if cohort is not None else "image"
    if earlier and image_col == "image":
        frame = pd.DataFrame.from_records(earlier + records)
        if columns is not None:
            frame = frame[columns + [c for c in frame.columns if c not in columns]]
        keys = ["participant_id"] + (["session_id"] if "session_id" in frame.columns else [])
        frame = frame.fillna("n/a").sort_values(keys, kind="stable").reset_index(drop=True)
        write_cohort(table, frame, image_columns=(image_col,), force=True)
    elif records:
        write_cohort(table, pd.DataFrame.from_records(records, columns=columns), image_columns=(image_col,), force=True)
    elif table.exists():
        table.unlink()


def _cleanup_work(out: Path) -> None:
    work = out / WORK_DIR
    if work.exists():
        try:
            work.rmdir()  # only when empty: another array task may still be working
        except OSError:
            pass
