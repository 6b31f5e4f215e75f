"""``segment-bg apply``: slice-wise segmentation with guided-backprop background removal.

For every animal of a cohort (or a single NIfTI image):

``sub-<id>/anat/sub-<id>_desc-firstpass_dseg.nii.gz``   segmentation of the acquisition as it is
``sub-<id>/anat/sub-<id>_desc-brain_mask.nii.gz``        the positioned shape mask
``sub-<id>/anat/sub-<id>_desc-bgremoved_dseg.nii.gz``    segmentation after background removal
                                                           (voxels outside the positioned mask are
                                                           background unless ``clip_to_mask=False``;
                                                           written last: marks the animal done)

each with a JSON sidecar (provenance, checkpoint sha256, shifts, and -- when the cohort has
truth columns -- the confusion counts of §4.4). ``--save-intermediates`` adds the gradient
image and every enhancement step (``_gbp.nii.gz`` with desc ``gradient``, ``magnitude``,
``expanded``, ``compressed``, ``zscore``, ``enhanced``), the cross-correlation maps
(``desc-xcorr_gbp``) and the masked input (``desc-masked_input``). Labels: 0 background,
1 WM, 2 GM, 3 CSF. All maps are on the input grid with the input affine.

With truth columns (labels, brain mask) ``metrics.tsv`` (per animal) and
``metrics_summary.tsv`` (pooled over the animals, as the paper's Tables 1-2) compare the
segmentation with and without background removal; they are rebuilt from the sidecars of every
finished animal, so the last SLURM array task leaves complete tables. Animals whose outputs
are complete with the same inputs and parameters are skipped. Bad input (an unreadable, non-3D,
NaN or empty image, slices of another size than the segmenter's, truth labels with unknown
classes or off the image's grid) is refused before anything is written, in one line naming the
rows and files (exit 2); failures while segmenting go to ``failures.tsv`` and the others finish.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurointerp.errors import InputError, NeurointerpError
from neurointerp.options.core import takes_options
from neurointerp.options.segment_bg import SegmentBgApplyOptions

STEPS = ("gradient", "magnitude", "expanded", "compressed", "zscore", "enhanced")


class SegmentBgFailures(NeurointerpError):
    """Some animals failed (listed in failures.tsv); the others finished."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Job:
    participant_id: str
    session: str | None
    image: Path
    labels: Path | None
    mask: Path | None
    row: int
    table: Path | None = None  # the cohort table the job comes from (None: a single image)

    @property
    def where(self) -> str:
        """``cohort.csv row 3`` for error messages ('' for a single image)."""
        return f"{self.table} row {self.row}" if self.table is not None else ""


def _jobs(cohort, image_column: str, label_column: str | None, mask_column: str | None) -> tuple[list[Job], list[Path]]:
    from neurointerp.io import is_nifti_path, read_cohort
    from neurointerp.io.cohort import MISSING

    cohort = Path(cohort)
    if is_nifti_path(cohort):
        if not cohort.exists():
            raise InputError(f"{cohort}: file not found")
        stem = cohort.name[: -len(".nii.gz")] if cohort.name.endswith(".nii.gz") else cohort.stem
        pid = re.sub(r"^sub-", "", stem.split("_")[0])
        pid = re.sub(r"[^A-Za-z0-9]", "", pid) or "image"
        return [Job(pid, None, cohort, None, None, 1)], [cohort]
    table = read_cohort(cohort, require_label=False, image_column=image_column)
    cols = {}
    for key, col in (("labels", label_column), ("mask", mask_column)):
        if col is not None and str(col).lower() != "none" and col in table.frame.columns:
            cols[key] = col
    base = table.path.parent
    sessions = table.frame["session_id"].astype(str).tolist() if "session_id" in table.frame.columns else [None] * len(table)

    def path_of(i, key):
        if key not in cols:
            return None
        value = str(table.frame.loc[i, cols[key]]).strip()
        if value.lower() in MISSING:  # no truth for this animal: no metrics for it
            return None
        p = Path(value)
        return p if p.is_absolute() else (base / p)

    jobs = [Job(table.participant_ids[i], sessions[i], table.images[i], path_of(i, "labels"), path_of(i, "mask"), table.row_of(i), table.path) for i in range(len(table))]
    return jobs, [cohort]


def output_paths(out: Path, job: Job, save_intermediates: bool) -> dict[str, Path]:
    from neurointerp.io import derivative_path

    kw = dict(session=job.session)
    p = {
        "firstpass": derivative_path(out, job.participant_id, "dseg", desc="firstpass", **kw),
        "mask": derivative_path(out, job.participant_id, "mask", desc="brain", **kw),
        "final": derivative_path(out, job.participant_id, "dseg", desc="bgremoved", **kw),
    }
    if save_intermediates:
        for s in STEPS:
            p[s] = derivative_path(out, job.participant_id, "gbp", desc=s, **kw)
        p["correlation"] = derivative_path(out, job.participant_id, "gbp", desc="xcorr", **kw)
        p["masked"] = derivative_path(out, job.participant_id, "input", desc="masked", **kw)
    return p


def load_job(seg, job: Job, name_row: bool = True) -> tuple[Any, dict | None]:
    """Load and check one animal: its image (3D, slices of the model's size) and, when the cohort
    has truth columns, its labels (classes 0..3) and brain mask on the image's grid.

    Returns ``(volume, truth or None)``; an :class:`InputError` names the file and, with
    ``name_row``, the table and row.
    """
    from neurointerp.io import load_image
    from neurointerp.segment_bg.core import to_slices
    from neurointerp.segment_bg.train import check_labels

    try:
        vol = load_image(job.image, ndim=3)
        slices = to_slices(vol.data, seg.axis)
        tpl = seg.reference["template"]
        if slices.shape[1:] != tpl.shape[1:]:
            raise InputError(
                f"{job.image}: slices of {slices.shape[1]}x{slices.shape[2]} voxels (axis {seg.axis}) differ from the model's "
                f"{tpl.shape[1]}x{tpl.shape[2]} (segmenter {seg.path} was trained on another grid)"
            )
        truth = None
        if job.labels is not None:
            lab = load_image(job.labels, ndim=3, allow_empty=True)
            if lab.shape != vol.shape or not np.allclose(lab.affine, vol.affine, atol=1e-4):
                raise InputError(f"{job.labels}: label grid {lab.shape} does not match image {job.image} {vol.shape}")
            truth = {"labels": check_labels(lab.data, str(job.labels)), "mask": None}
            if job.mask is not None:
                m = load_image(job.mask, ndim=3, allow_empty=True)
                if m.shape != vol.shape or not np.allclose(m.affine, vol.affine, atol=1e-4):
                    raise InputError(f"{job.mask}: mask grid {m.shape} does not match image {job.image} {vol.shape}")
                truth["mask"] = (m.data > 0).astype(np.uint8)
    except InputError as exc:
        raise InputError(f"{job.where}: {exc}" if job.where and name_row else str(exc)) from exc
    return vol, truth


def check_jobs(seg, jobs: list[Job]) -> None:
    """Load and check every animal (:func:`load_job`); raise one error listing every bad one.

    Called before anything is written, so a cohort with a bad image, label volume or mask (or
    images off the segmenter's grid) is refused at once instead of after a night of work.
    """
    from neurointerp.errors import CohortError

    problems, table = [], None
    for job in jobs:
        try:
            load_job(seg, job, name_row=False)
        except InputError as exc:
            if job.table is None:
                raise
            table = job.table
            problems.append(f"row {job.row}: {exc}")
    if problems:
        raise CohortError(table, problems)


def segment_animal(seg, job: Job, positioning: str, max_shift: int | None, gbp_score: str, batch_size: int, device, clip_to_mask: bool = True) -> tuple[Any, dict[str, Any], dict | None]:
    """Load one animal (:func:`load_job`), run both phases; returns ``(volume, results as volumes, truth)``."""
    from neurointerp.segment_bg.core import from_slices, remove_background, to_slices

    vol, truth = load_job(seg, job)
    ref = seg.reference
    res = remove_background(seg.model, to_slices(vol.data, seg.axis), ref["template"], ref["mask"], max_shift=max_shift, positioning=positioning, score=gbp_score, clip_to_mask=clip_to_mask, batch_size=batch_size, device=device)
    shifts = res.pop("shifts")
    vols = {k: from_slices(v, seg.axis) for k, v in res.items()}
    vols["shifts"] = shifts
    return vol, vols, truth


@takes_options(SegmentBgApplyOptions)
def run_apply(o: SegmentBgApplyOptions) -> Path:
    """Segment every animal with and without background removal; returns the output folder.

    ``cohort`` is a cohort table (``participant_id``, ``image``; optional truth columns
    ``labels`` and ``mask`` for the metrics) or a single NIfTI image. Same arguments as
    ``neurointerp segment-bg apply``. Runs through the per-subject runner
    (:mod:`neurointerp.runs`): array shares, skipping of finished animals, ``failures.tsv`` for
    animals that fail while the others finish, and the metrics tables rebuilt under the folder
    lock from every finished animal.
    """
    from neurointerp.io import add_bidsignore, provenance, save_image, sha256, sidecar_path, write_dataset_description, write_dseg_tsv, write_sidecar
    from neurointerp.runs import Item, RunFailures, claim_folder, run_items
    from neurointerp.runs.subjects import pending_items
    from neurointerp.segment_bg.checkpoint import load_segmenter
    from neurointerp.segment_bg.metrics import segmentation_counts
    from neurointerp.train.device import resolve_device, set_threads

    model, out, positioning, max_shift, save_intermediates = o.model, Path(o.out), o.positioning, o.max_shift, o.save_intermediates
    set_threads(o.threads)
    dev = resolve_device(o.device)
    seg = load_segmenter(model, device=str(dev))
    score = o.gbp_score or seg.gbp_score
    jobs, inputs = _jobs(o.cohort, o.image_column, o.label_column, o.mask_column)
    params = {"positioning": positioning, "max_shift": max_shift, "gbp_score": score, "axis": seg.axis, "clip_to_mask": o.clip_to_mask, "save_intermediates": save_intermediates}
    items = []
    for k, job in enumerate(jobs):
        paths = output_paths(out, job, save_intermediates)
        outputs = [f for v in paths.values() for f in (v, sidecar_path(v))]
        key = f"sub-{job.participant_id}" + (f"_ses-{job.session}" if job.session else "")
        items.append(Item(key=key, inputs=[job.image] + [p for p in (job.labels, job.mask) if p is not None], outputs=outputs, maps=[paths["final"]],
                          share=k, participant_id=job.participant_id, session_id=job.session or "", where=job.where, image=str(job.image), payload=(job, paths)))
    claim = dict(inputs={"model": model}, protect=[o.cohort, *(p for j in jobs for p in (j.image, j.labels, j.mask) if p is not None)], force=o.force)
    folder = claim_folder(out, "segment-bg apply", {**o.affecting(), "gbp_score_used": score}, dry_run=True, **claim)
    # bad input is refused before anything is written: every animal this task will segment is
    # loaded and checked once (image, slice size, truth labels and mask), then read again in turn
    check_jobs(seg, [it.payload[0] for it in pending_items(folder, items, o.array_index, o.array_size)])
    folder = claim_folder(out, "segment-bg apply", {**o.affecting(), "gbp_score_used": score}, **claim)
    ckpt_sha = sha256(model)

    def process(batch: list[Item]) -> dict:
        for it in batch:
            job, paths = it.payload
            vol, res, truth = segment_animal(seg, job, positioning, max_shift, score, o.batch_size, dev, o.clip_to_mask)
            shifts = res.pop("shifts")
            metrics = None
            if truth is not None:
                metrics = [dict(r, condition="without") for r in segmentation_counts(res["labels_raw"], truth["labels"])]
                metrics += [dict(r, condition="with") for r in segmentation_counts(res["labels"], truth["labels"], res["mask"], truth["mask"])]
            files = [job.image] + [p for p in (job.labels, job.mask) if p is not None]
            record = provenance(
                "segment-bg apply",
                params,
                inputs=[job.image, model],
                CheckpointSha256=ckpt_sha,
                Reference=seg.reference["participant_id"],
                Classes={"0": "background", "1": "WM", "2": "GM", "3": "CSF"},
                SliceAxis=seg.axis,
                ShiftsVoxels=shifts.tolist(),
            )
            if save_intermediates:
                for key in STEPS + ("correlation", "masked"):
                    save_image(res[key], vol.affine, paths[key], header=vol.header, force=True)
                    write_sidecar(paths[key], {**record, "Step": key}, force=True, root=out, sources=[job.image])
            save_image(res["labels_raw"], vol.affine, paths["firstpass"], header=vol.header, force=True, dtype=np.uint8)
            write_sidecar(paths["firstpass"], {**record, "BackgroundRemoval": False}, force=True, root=out, sources=[job.image])
            save_image(res["mask"], vol.affine, paths["mask"], header=vol.header, force=True, dtype=np.uint8)
            write_sidecar(paths["mask"], {**record, "Type": "Brain", "Positioning": positioning}, force=True, root=out, sources=[job.image])
            save_image(res["labels"], vol.affine, paths["final"], header=vol.header, force=True, dtype=np.uint8)
            write_sidecar(paths["final"], {**record, "BackgroundRemoval": True, "Truth": [str(p) for p in files[1:]], "Metrics": metrics}, force=True, root=out, sources=[job.image])
        return {}

    def finalize(done: list[Item]) -> None:
        _write_metrics(out, [it.payload[0] for it in done], save_intermediates)

    with folder.writing():
        write_dataset_description(out, "neurointerp segment-bg", "Tissue segmentation with guided-backprop background removal")
        add_bidsignore(out, ["*_gbp.nii.gz", "*_gbp.json", "*_input.nii.gz", "*_input.json", "metrics*", "failures*"])
        for desc in ("firstpass", "bgremoved"):  # the labels of every sub-*_desc-<desc>_dseg.nii.gz
            write_dseg_tsv(out, {0: "background", 1: "WM", 2: "GM", 3: "CSF"}, desc=desc)
    try:
        run_items(folder, items, process, batch_size=1, array_index=o.array_index, array_size=o.array_size, finalize=finalize,
                  finalize_partial=True, label="segment-bg apply", noun="animal")
    except RunFailures as exc:
        raise SegmentBgFailures(str(exc), exit_code=exc.exit_code) from None
    return out


def _write_metrics(out: Path, jobs: list[Job], save_intermediates: bool) -> None:
    """Rebuild metrics.tsv / metrics_summary.tsv from the sidecars of every finished animal."""
    import json

    import pandas as pd

    from neurointerp.io import sidecar_path, write_table
    from neurointerp.segment_bg.metrics import score_table

    rows = []
    for job in jobs:
        side = sidecar_path(output_paths(out, job, save_intermediates)["final"])
        if not side.exists():
            continue
        try:
            rec = json.loads(side.read_text())
        except (OSError, ValueError):
            continue
        for r in rec.get("Metrics") or []:
            rows.append({"participant_id": job.participant_id, **r})
    if not rows:
        return
    frame = pd.DataFrame(rows)
    order = ["participant_id", "condition", "class", "tp", "fp", "tn", "fn"]
    per = score_table(frame[order].to_dict("records"))
    write_table(out / "metrics.tsv", per, force=True)
    summary = score_table(frame[order[1:]].to_dict("records"))
    summary.insert(2, "n_animals", frame["participant_id"].nunique())
    write_table(out / "metrics_summary.tsv", summary, force=True)
