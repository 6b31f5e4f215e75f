"""``neurointerp preprocess``: T1w NIfTI (or a cohort of them) to the template's working grid."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def preprocess(
    input: Path = typer.Argument(..., help="A T1w NIfTI file or a cohort table (CSV/TSV with participant_id, image, ...)."),
    out: Path = typer.Argument(..., help="Derivatives folder (created; re-running into it resumes)."),
    template: Optional[str] = typer.Option(None, help="Template name from the registry (default MNI152NLin2009aSym, nilearn's ICBM 2009a sym) or a NIfTI file."),
    template_mask: Optional[Path] = typer.Option(None, help="Brain mask of --template when that file is not skull-stripped."),
    space: Optional[str] = typer.Option(None, help="Space name in output file names (default: the template's name)."),
    shape: Optional[str] = typer.Option(None, help="Working grid shape, e.g. 64 or 64,64,64 (default 64^3 over the template brain)."),
    voxel_size: Optional[float] = typer.Option(None, help="Working grid voxel size in mm (alone: the shape covers the brain)."),
    reorient: bool = typer.Option(True, "--reorient/--no-reorient", help="Reorder native voxels to RAS first."),
    n4: bool = typer.Option(True, "--n4/--no-n4", help="N4 bias-field correction (antspyx)."),
    denoise: bool = typer.Option(False, "--denoise/--no-denoise", help="Non-local-means denoising (slow; off by default)."),
    brain_extraction: str = typer.Option("auto", help="auto (deepbet if installed, else template), deepbet, template (mask propagation), none (already stripped)."),
    registration: str = typer.Option("affine", help="affine, rigid or syn."),
    registration_resolution: float = typer.Option(3.0, help="Grid (mm) on which the registration is estimated."),
    n4_resolution: float = typer.Option(4.0, help="Grid (mm) on which the N4 bias field is estimated."),
    qc: bool = typer.Option(True, "--qc/--no-qc", help="Write a QC PNG (template edges over the registered image)."),
    seed: int = typer.Option(0, help="Seed of the registration's random sampling."),
    n_jobs: int = typer.Option(1, help="Subjects in parallel (one process each)."),
    threads: Optional[int] = typer.Option(None, help="ITK/torch/OMP threads per subject (default $SLURM_CPUS_PER_TASK or CPUs / n-jobs)."),
    array_index: Optional[int] = typer.Option(None, help="This task's index in a job array (default $SLURM_ARRAY_TASK_ID)."),
    array_size: Optional[int] = typer.Option(None, help="Number of tasks in the job array (default $SLURM_ARRAY_TASK_COUNT)."),
    force: bool = typer.Option(False, "--force", help="Redo finished subjects; write into a folder that is not a preprocess run."),
    assume_orientation: Optional[str] = typer.Option(None, help="Orientation to assume for images whose header has none (sform_code = qform_code = 0), e.g. LAS or RAS: the direction each voxel axis points to. Without it such images are refused; images with an orientation keep their own."),  # h-io
) -> None:
    """N4, brain extraction, registration to the template, 64^3 grid, z-scoring; writes a cohort table for train."""
    from neurointerp.preprocess import run_preprocess
    from neurointerp.progress import info

    result = run_preprocess(
        input,
        out,
        template=template,
        template_mask=template_mask,
        space=space,
        shape=shape,
        voxel_size=voxel_size,
        reorient=reorient,
        n4=n4,
        denoise=denoise,
        brain_extraction=brain_extraction,
        registration=registration,
        registration_resolution=registration_resolution,
        n4_resolution=n4_resolution,
        qc=qc,
        seed=seed,
        n_jobs=n_jobs,
        threads=threads,
        array_index=array_index,
        array_size=array_size,
        force=force,
        assume_orientation=assume_orientation,  # h-io
    )
    info(f"preprocess: {len(result.done)} done, {len(result.skipped)} skipped; wrote {result.table}")
