"""``neurointerp synth``: synthetic cohorts with planted ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Synthetic cohorts with planted, known effects and confounders.", no_args_is_help=True)


@app.command("gaussians")
def gaussians(
    out: Path = typer.Argument(..., help="Output folder (created; must be empty unless --force)."),
    variant: str = typer.Option("width", help="width: confounder-aware-saliency §3.1; magnitude: simulator-networks §4.1."),
    n_per_group: int = typer.Option(512, help="Images per group (the papers use 512)."),
    seed: int = typer.Option(0, help="Random seed (the output is identical for the same seed)."),
    noise: Optional[float] = typer.Option(None, help="Gaussian noise sd (default: 0 for width, 0.002 for magnitude)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder, overwriting files."),
) -> None:
    """2D four-Gaussian cohorts (32x32) of the papers, with ground-truth maps."""
    from neurointerp.progress import info
    from neurointerp.synth.gaussians import synth_gaussians

    table = synth_gaussians(out, variant=variant, n_per_group=n_per_group, seed=seed, noise=noise, force=force)
    info(f"wrote {table}")


@app.command("brain")
def brain(
    out: Path = typer.Argument(..., help="Output folder (created; must be empty unless --force)."),
    n_subjects: int = typer.Option(40, help="Number of subjects."),
    voxel_size: float = typer.Option(3.0, help="Voxel size in mm of the native and template grids."),
    effect_size: float = typer.Option(1.0, help="Scale of the disease deformation (hippocampal atrophy, ventricle expansion)."),
    confound_strength: float = typer.Option(0.5, help="Correlation between age and diagnosis, in [0, 1)."),
    confound_size: float = typer.Option(1.0, help="Scale of the age deformation (frontal atrophy per SD of age)."),
    patient_fraction: float = typer.Option(0.5, help="Fraction of patients."),
    age_mean: float = typer.Option(70.0, help="Mean age in years."),
    age_sd: float = typer.Option(8.0, help="Standard deviation of age in years."),
    noise: float = typer.Option(0.03, help="Rician noise sd relative to the white-matter intensity."),
    bias: float = typer.Option(0.15, help="Strength of the smooth multiplicative bias field."),
    max_rotation: float = typer.Option(8.0, help="Largest head rotation about each axis (degrees)."),
    max_translation: float = typer.Option(8.0, help="Largest head translation along each axis (mm)."),
    orientation: str = typer.Option("LAS", help="Voxel orientation code of the native images (RAS, LAS, LPI, ...)."),
    template_space: bool = typer.Option(False, "--template-space", help="Also write each subject's unposed anatomy on the template grid."),
    seed: int = typer.Option(0, help="Random seed (the output is identical for the same seed)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder, overwriting files."),
) -> None:
    """3D cohort from the MNI152 template: posed, biased, noisy native images with planted disease and age effects."""
    from neurointerp.progress import info
    from neurointerp.synth.brain import synth_brain

    table = synth_brain(
        out,
        n_subjects=n_subjects,
        voxel_size=voxel_size,
        effect_size=effect_size,
        confound_strength=confound_strength,
        confound_size=confound_size,
        patient_fraction=patient_fraction,
        age_mean=age_mean,
        age_sd=age_sd,
        noise=noise,
        bias=bias,
        max_rotation=max_rotation,
        max_translation=max_translation,
        orientation=orientation,
        template_space=template_space,
        seed=seed,
        force=force,
    )
    info(f"wrote {table}")


@app.command("rodent")
def rodent(
    out: Path = typer.Argument(..., help="Output folder (created; must be empty unless --force)."),
    n_animals: int = typer.Option(10, help="Number of animals (one acquisition each)."),
    shape: str = typer.Option("64,64,16", help="Grid nx,ny,n_slices (slices along the third axis)."),
    max_shift: float = typer.Option(6.0, help="Largest in-plane translation between acquisitions, in voxels."),
    artefacts: bool = typer.Option(True, "--artefacts/--no-artefacts", help="Bright artefacts outside the brain (muscle arcs, blobs)."),
    noise: float = typer.Option(0.03, help="Rician noise sd (tissue intensities: WM 0.45, GM 0.65, CSF 1.0)."),
    test_fraction: float = typer.Option(0.2, help="Share of the animals in test.csv (the rest in train.csv)."),
    seed: int = typer.Option(0, help="Random seed (the output is identical for the same seed)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder, overwriting files."),
) -> None:
    """Rodent brain slices with WM/GM/CSF labels, brain masks, bright artefacts and random translations (segment-bg)."""
    from neurointerp.cli._options import int_list
    from neurointerp.errors import InputError
    from neurointerp.progress import info
    from neurointerp.synth.rodent import synth_rodent

    grid = int_list(shape, "--shape")
    if grid is None or len(grid) != 3:
        raise InputError(f"--shape {shape}: expected three numbers nx,ny,n_slices, e.g. 64,64,16")
    table = synth_rodent(out, n_animals=n_animals, shape=tuple(grid), max_shift=max_shift, artefacts=artefacts, noise=noise, test_fraction=test_fraction, seed=seed, force=force)
    info(f"wrote {table}")


@app.command("lesions")
def lesions(
    out: Path = typer.Argument(..., help="Output folder (created; must be empty unless --force)."),
    n_per_group: int = typer.Option(128, help="Images per class (healthy, lesion)."),
    size: int = typer.Option(32, help="Image side in pixels (the ICAM paper's 2D slices are larger, e.g. 128)."),
    polarity: str = typer.Option("bright", help="Lesions bright, dark or mixed (each lesion bright or dark at random)."),
    contrast: float = typer.Option(0.7, help="Lesion amplitude in image units (white matter ~1, cortex ~0.5)."),
    noise: float = typer.Option(0.03, help="Gaussian noise sd inside the brain."),
    voxel_size: float = typer.Option(1.0, help="Pixel size in mm."),
    seed: int = typer.Option(0, help="Random seed (the output is identical for the same seed)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder, overwriting files."),
) -> None:
    """2D brain-slice phantoms: healthy vs small lesions at variable sites, with lesion masks (ICAM §4.2)."""
    from neurointerp.progress import info
    from neurointerp.synth.lesions import synth_lesions

    table = synth_lesions(out, n_per_group=n_per_group, size=size, polarity=polarity, contrast=contrast, noise=noise, voxel_size=voxel_size, seed=seed, force=force)
    info(f"wrote {table}")


@app.command("spike-in")
def spike_in(
    cohort: Path = typer.Argument(..., help="Cohort table (CSV/TSV) of native T1 images: participant_id, image[, session_id], covariates (passed through; a 'label' column becomes 'source_label')."),
    out: Path = typer.Argument(..., help="Output folder (created; must be empty unless --force)."),
    atlas: str = typer.Option("HarvardOxford", help="Atlas of --region/--confounder-region: a registry name (AAL2, HarvardOxford, ...) or a label image in template space with --labels."),
    labels: Optional[Path] = typer.Option(None, help="Label table of a user --atlas image."),
    region: list[str] = typer.Option([], "--region", help="Disease region (atlas name, spaces or underscores alike, or index; NAME=EFFECT gives it its own log-Jacobian); repeatable."),
    mask: Optional[Path] = typer.Option(None, help="Disease regions as a template-space mask (one region per connected component)."),
    effect: float = typer.Option(-0.3, help="Log-Jacobian at each disease region's centre at severity 1 (< 0 atrophy, > 0 expansion); |effect| <= 1.5."),
    severity_min: float = typer.Option(0.5, help="Patients' severity ~ U(min, max) scales the disease deformation (controls 0)."),
    severity_max: float = typer.Option(1.5, help="Upper end of the patients' severity."),
    patient_fraction: float = typer.Option(0.5, help="Fraction of participants made patients, in (0, 1)."),
    confounder_region: list[str] = typer.Option([], "--confounder-region", help="Confounder region (atlas name or index, NAME=EFFECT as --region); repeatable. None: no confounder."),
    confounder_mask: Optional[Path] = typer.Option(None, help="Confounder regions as a template-space mask."),
    confounder_effect: float = typer.Option(-0.2, help="Log-Jacobian at each confounder region's centre per +1 of the covariate."),
    confounder_strength: float = typer.Option(0.5, help="Expected correlation of the covariate with the label, in [0, 1)."),
    confounder_column: str = typer.Option("confounder", help="Name of the covariate column written to the cohort table."),
    smoothness: float = typer.Option(3.0, help="Width (Gaussian sd, mm) of the region edges of the volume change, 0.5-20."),
    support: float = typer.Option(20.0, help="Distance (mm) from a region beyond which voxels are never changed (the volume change is balanced in between); 2.5 x smoothness to 100."),
    preprocessed: Optional[Path] = typer.Option(None, help="A preprocess output folder of these images: its transforms carry the deformation to each image (else a preprocess run is made into OUT/registration)."),
    template: Optional[str] = typer.Option(None, help="Template of the on-the-fly registration (default MNI152NLin2009aSym)."),
    registration: str = typer.Option("affine", help="On-the-fly registration: affine, rigid or syn (as preprocess)."),
    registration_resolution: float = typer.Option(3.0, help="Grid (mm) of the on-the-fly registration."),
    brain_extraction: str = typer.Option("auto", help="Brain extraction before the on-the-fly registration (as preprocess)."),
    shape: Optional[str] = typer.Option(None, help="Working grid of the truth maps and the on-the-fly run, e.g. 64 (default 64^3, as preprocess)."),
    voxel_size: Optional[float] = typer.Option(None, help="Working grid voxel size in mm (as preprocess)."),
    seed: int = typer.Option(0, help="Random seed (labels, severities, covariate, registration sampling)."),
    threads: Optional[int] = typer.Option(None, help="ITK/OMP threads (default $SLURM_CPUS_PER_TASK or all CPUs)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder, overwriting files."),
) -> None:
    """Plant a known deformation (atlas regions, severity, confounder) into your own native T1s, with its ground truth."""
    from neurointerp.progress import info
    from neurointerp.synth.spikein import spike_in_cohort

    table = spike_in_cohort(
        cohort, out, atlas=atlas, labels=labels, regions=region, mask=mask, effect=effect, severity_min=severity_min,
        severity_max=severity_max, patient_fraction=patient_fraction, confounder_regions=confounder_region,
        confounder_mask=confounder_mask, confounder_effect=confounder_effect, confounder_strength=confounder_strength,
        confounder_column=confounder_column, smoothness=smoothness, support=support, preprocessed=preprocessed,
        template=template, registration=registration, registration_resolution=registration_resolution,
        brain_extraction=brain_extraction, shape=shape, voxel_size=voxel_size, seed=seed, threads=threads, force=force,
    )
    info(f"wrote {table}")
