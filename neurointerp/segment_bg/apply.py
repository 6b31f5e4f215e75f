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


def _complete(paths: dict[str, Path], job: Job, ckpt_sha: str, params: dict) -> bool | None:
    """True: done with these inputs; False: outputs from other inputs/parameters; None: not done."""
    import json

    from neurointerp.io import sha256, sidecar_path

    final = paths["final"]
    side = sidecar_path(final)
    if not final.exists() or not side.exists() or not all(p.exists() for p in paths.values()):
        return None
    try:
        rec = json.loads(side.read_text())
    except (OSError, ValueError):
        return False
    same = rec.get("CheckpointSha256") == ckpt_sha and rec.get("Parameters") == params and rec.get("Inputs", [{}])[0].get("sha256") == sha256(job.image)
    return bool(same)


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


def run_apply(
    model: str | os.PathLike,
    cohort: str | os.PathLike,
    out: str | os.PathLike,
    image_column: str = "image",
    label_column: str | None = "labels",
    mask_column: str | None = "mask",
    positioning: str = "slice",
    max_shift: int | None = None,
    gbp_score: str | None = None,
    clip_to_mask: bool = True,
    save_intermediates: bool = False,
    batch_size: int = 16,
    device: str = "auto",
    threads: int | None = None,
    array_index: int | None = None,
    array_size: int | None = None,
    force: bool = False,
) -> Path:
    """Segment every animal with and without background removal; returns the output folder.

    ``cohort`` is a cohort table (``participant_id``, ``image``; optional truth columns
    ``labels`` and ``mask`` for the metrics) or a single NIfTI image. Same arguments as
    ``neurointerp segment-bg apply``.
    """
    import pandas as pd

    from neurointerp.cluster import array_share, resolve_array
    from neurointerp.io import add_bidsignore, prepare_output_dir, provenance, save_image, sha256, write_dataset_description, write_sidecar, write_table
    from neurointerp.progress import info, track
    from neurointerp.segment_bg.checkpoint import load_segmenter
    from neurointerp.segment_bg.core import GBP_SCORES, POSITIONING
    from neurointerp.segment_bg.metrics import segmentation_counts
    from neurointerp.train.device import resolve_device, set_threads

    if positioning not in POSITIONING:
        raise InputError(f"--positioning {positioning}: choose {' or '.join(POSITIONING)}")
    if gbp_score is not None and gbp_score not in GBP_SCORES:
        raise InputError(f"--gbp-score {gbp_score}: choose {' or '.join(GBP_SCORES)}")
    if max_shift is not None and max_shift < 0:
        raise InputError(f"--max-shift {max_shift}: must be non-negative")
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    index, size = resolve_array(array_index, array_size)
    set_threads(threads)
    dev = resolve_device(device)
    seg = load_segmenter(model, device=str(dev))
    score = gbp_score or seg.gbp_score
    jobs, inputs = _jobs(cohort, image_column, label_column, mask_column)
    params = {"positioning": positioning, "max_shift": max_shift, "gbp_score": score, "axis": seg.axis, "clip_to_mask": clip_to_mask, "save_intermediates": save_intermediates}
    out = Path(out)
    ckpt_sha = sha256(model)
    share = array_share(len(jobs), index, size)
    todo, skipped = [], 0
    for i in share:
        job = jobs[i]
        paths = output_paths(out, job, save_intermediates)
        state = None if force else _complete(paths, job, ckpt_sha, params)
        if state is True:
            skipped += 1
            continue
        if state is False:
            raise InputError(f"{paths['final']}: exists from a run with other inputs or parameters (use --force to replace it, or another output folder)")
        todo.append((job, paths))
    # bad input is refused before anything is written: every animal this task will segment is
    # loaded and checked once (image, slice size, truth labels and mask), then read again in turn
    check_jobs(seg, [job for job, _ in todo])
    out = prepare_output_dir(out, force=force, marker="dataset_description.json")
    write_dataset_description(out, "neurointerp segment-bg", "Tissue segmentation with guided-backprop background removal")
    add_bidsignore(out, ["*_gbp.nii.gz", "*_gbp.json", "*_input.nii.gz", "*_input.json", "metrics*", "failures*"])
    if skipped:
        info(f"segment-bg apply: {skipped} animal(s) already done, skipped")
    failures = []
    for job, paths in track(todo, description="segment-bg apply", total=len(todo)):
        try:
            paths["final"].unlink(missing_ok=True)  # not done until rewritten
            vol, res, truth = segment_animal(seg, job, positioning, max_shift, score, batch_size, dev, clip_to_mask)
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
                    write_sidecar(paths[key], {**record, "Step": key}, force=True)
            save_image(res["labels_raw"], vol.affine, paths["firstpass"], header=vol.header, force=True, dtype=np.uint8)
            write_sidecar(paths["firstpass"], {**record, "BackgroundRemoval": False}, force=True)
            save_image(res["mask"], vol.affine, paths["mask"], header=vol.header, force=True, dtype=np.uint8)
            write_sidecar(paths["mask"], {**record, "Type": "Brain", "Positioning": positioning}, force=True)
            save_image(res["labels"], vol.affine, paths["final"], header=vol.header, force=True, dtype=np.uint8)
            write_sidecar(paths["final"], {**record, "BackgroundRemoval": True, "Truth": [str(p) for p in files[1:]], "Metrics": metrics}, force=True)
        except (NeurointerpError, OSError, RuntimeError, ValueError) as exc:
            kind = "input" if isinstance(exc, InputError) else "runtime"
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            failures.append({"participant_id": job.participant_id, "row": job.row, "image": str(job.image), "error_type": kind, "message": msg})
    _write_metrics(out, jobs, save_intermediates)
    part = "" if size == 1 else f"-part{index}of{size}"
    fail_path = out / f"failures{part}.tsv"
    if failures:
        write_table(fail_path, pd.DataFrame(failures), force=True)
        every_input = all(f["error_type"] == "input" for f in failures)
        raise SegmentBgFailures(
            f"segment-bg apply: {len(failures)} of {len(share)} animal(s) failed (first: {failures[0]['message']}); see {fail_path}",
            exit_code=2 if every_input else 1,
        )
    if fail_path.exists():
        fail_path.unlink()
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
