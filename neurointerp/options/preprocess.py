"""Options of ``neurointerp preprocess``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from neurointerp.options import common as c
from neurointerp.options.core import Options, arg, flag, opt

BRAIN_EXTRACTION = ("auto", "deepbet", "template", "none")


def _orientation(text: str, name: str = "--assume-orientation") -> str:
    from neurointerp.io.headers import parse_orientation

    return parse_orientation(text, name)
REGISTRATIONS = ("affine", "rigid", "syn")


@dataclass(frozen=True)
class PreprocessOptions(Options):
    """N4, brain extraction, registration to the template, 64^3 grid, z-scoring; writes a cohort table for train."""

    command: ClassVar[str] = "preprocess"

    input: Path = arg("A T1w NIfTI file, a cohort table (CSV/TSV with participant_id, image, ...) or a raw BIDS dataset folder.", exists=True, nipype="in_file", affects=False)
    out: Path = c.output_folder("Derivatives folder (created; re-running into it resumes).")
    template: Optional[str] = opt(None, "Template name from the registry (default MNI152NLin2009aSym, nilearn's ICBM 2009a sym) or a NIfTI file.", fallback=c.default_template)
    template_mask: Optional[Path] = opt(None, "Brain mask of --template when that file is not skull-stripped.", exists=True)
    space: Optional[str] = opt(None, "Space name in output file names (default: the template's name).")
    shape: Optional[str] = opt(None, "Working grid shape, e.g. 64 or 64,64,64 (default 64^3 over the template brain).")
    voxel_size: Optional[float] = opt(None, "Working grid voxel size in mm (alone: the shape covers the brain).", above=0)
    reorient: bool = flag(True, "Reorder native voxels to RAS first.", "--no-reorient")
    n4: bool = flag(True, "N4 bias-field correction (antspyx).", "--no-n4")
    denoise: bool = flag(False, "Non-local-means denoising (slow; off by default).", "--no-denoise")
    brain_extraction: str = opt("auto", "auto (deepbet if installed, else template), deepbet, template (mask propagation), none (already stripped).", choices=BRAIN_EXTRACTION)
    registration: str = opt("affine", "affine, rigid or syn.", choices=REGISTRATIONS)
    registration_resolution: float = opt(3.0, "Grid (mm) on which the registration is estimated.", above=0)
    n4_resolution: float = opt(4.0, "Grid (mm) on which the N4 bias field is estimated.", above=0)
    n4_iterations: int = opt(50, "N4 iterations at each of its 4 fitting levels (ANTs' -c [50x50x50x50]).", minimum=1, maximum=1000)
    qc: bool = flag(True, "Write a QC PNG (template edges over the registered image).", "--no-qc")
    seed: int = c.seed("Seed of the registration's random sampling.")
    n_jobs: int = opt(1, "Subjects in parallel (worker processes; each 1 mm image in a fresh one).", minimum=1, affects=False)
    threads: Optional[int] = c.threads("ITK/torch/OMP threads per subject (default $SLURM_CPUS_PER_TASK or CPUs / n-jobs).")
    array_index: Optional[int] = c.array_index()
    array_size: Optional[int] = c.array_size()
    force: bool = c.force(per_subject=True)
    participant_label: tuple[str, ...] = opt((), "BIDS input: participant to process, with or without 'sub-' (repeatable; default all). Runs on other participants resume the same OUT.", affects=False)
    session_label: tuple[str, ...] = opt((), "BIDS input: session to process, with or without 'ses-' (repeatable; default all).", affects=False)
    bids_filter_file: Optional[Path] = opt(None, "BIDS input: fMRIPrep-style JSON filter, e.g. {\"t1w\": {\"session\": [\"01\"], \"acquisition\": \"mprage\", \"run\": 1}} (keys datatype, suffix, session, acquisition, ceagent, reconstruction, run; null = entity absent).", exists=True, affects=False)
    assume_orientation: Optional[str] = opt(None, "Orientation to assume for images whose header has none (sform_code = qform_code = 0), e.g. LAS or RAS: the direction each voxel axis points to. Without it such images are refused; images with an orientation keep their own.", parse=_orientation)
