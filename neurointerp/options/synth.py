"""Options of ``neurointerp synth gaussians|brain|lesions|rodent``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from neurointerp.errors import InputError
from neurointerp.options import common as c
from neurointerp.options.core import Options, flag, opt

_OUT = "Output folder (created; must be empty unless --force)."
_SEED = "Random seed (the output is identical for the same seed)."


def parse_orientation(text: str, name: str = "--orientation") -> str:
    code = str(text).strip().upper()
    axes = {"L": 0, "R": 0, "A": 1, "P": 1, "S": 2, "I": 2}
    if len(code) != 3 or any(ch not in axes for ch in code) or len({axes[ch] for ch in code}) != 3:
        raise InputError(f"{name} {text}: expected a three-letter orientation code such as RAS, LAS or LPI")
    return code


def parse_shape3(text: str, name: str = "--shape") -> tuple[int, ...]:
    grid = c.int_list(text, name)
    if grid is None or len(grid) != 3:
        raise InputError(f"{name} {text}: expected three numbers nx,ny,n_slices, e.g. 64,64,16")
    return grid


#: Gaussian noise sd of each variant when --noise is not given
GAUSSIAN_NOISE = {"width": 0.0, "magnitude": 0.002}


def _scenario(name: str):
    """The fallback of a scenario parameter: the --scenario's value, else the default (synth.brain.resolve_scenario)."""

    def fallback(o: Options):
        from neurointerp.synth.brain import resolve_scenario

        keys = ("effect_size", "confound_strength", "confound_size")
        return resolve_scenario(o.scenario)[keys.index(name)]  # type: ignore[attr-defined]

    fallback.__doc__ = f"{name} of --scenario, else synth.brain.DEFAULTS"
    return fallback


@dataclass(frozen=True)
class SynthGaussiansOptions(Options):
    """2D four-Gaussian cohorts (32x32) of the papers, with ground-truth maps."""

    command: ClassVar[str] = "synth gaussians"

    out: Path = c.output_folder(_OUT)
    variant: str = opt("width", "width: confounder-aware-saliency §3.1; magnitude: simulator-networks §4.1.", choices=("width", "magnitude"))
    n_per_group: int = opt(512, "Images per group (the papers use 512).", minimum=1)
    seed: int = c.seed(_SEED)
    noise: Optional[float] = opt(None, "Gaussian noise sd (default: 0 for width, 0.002 for magnitude).", minimum=0, fallback=lambda o: GAUSSIAN_NOISE[o.variant])
    force: bool = c.force()


@dataclass(frozen=True)
class SynthBrainOptions(Options):
    """3D cohort from the MNI152 template: posed, biased, noisy native images with planted disease and age effects."""

    command: ClassVar[str] = "synth brain"

    out: Path = c.output_folder(_OUT)
    n_subjects: int = opt(40, "Number of subjects.", minimum=2)
    voxel_size: float = opt(3.0, "Voxel size in mm of the native and template grids.", above=0)
    effect_size: Optional[float] = opt(None, "Scale of the disease deformation (hippocampal atrophy, ventricle expansion) [default: 1.0, or the --scenario's].", minimum=0, fallback=_scenario("effect_size"))
    confound_strength: Optional[float] = opt(None, "Correlation between age and diagnosis, in [0, 1) [default: 0.5, or the --scenario's].", minimum=0, below=1, fallback=_scenario("confound_strength"))
    confound_size: Optional[float] = opt(None, "Scale of the age deformation (frontal atrophy per SD of age) [default: 1.0, or the --scenario's].", minimum=0, fallback=_scenario("confound_size"))
    patient_fraction: float = opt(0.5, "Fraction of patients.", above=0, below=1)
    age_mean: float = opt(70.0, "Mean age in years.")
    age_sd: float = opt(8.0, "Standard deviation of age in years.", above=0)
    noise: float = opt(0.03, "Rician noise sd relative to the white-matter intensity.", minimum=0)
    bias: float = opt(0.15, "Strength of the smooth multiplicative bias field.", minimum=0)
    max_rotation: float = opt(8.0, "Largest head rotation about each axis (degrees).", minimum=0)
    max_translation: float = opt(8.0, "Largest head translation along each axis (mm).", minimum=0)
    orientation: str = opt("LAS", "Voxel orientation code of the native images (RAS, LAS, LPI, ...).", parse=parse_orientation)
    template_space: bool = flag(False, "Also write each subject's unposed anatomy on the template grid.")
    seed: int = c.seed(_SEED)
    scenario: Optional[str] = opt(None, "Confound set-up: age-confounded (age effect 3, disease 0.5, age-diagnosis r 0.8: a CNN learns mostly age) or unconfounded (age effect 3, disease 3, r 0). Explicit --effect-size/--confound-strength/--confound-size override it.", choices=("age-confounded", "unconfounded"))
    n_jobs: int = opt(1, "Subjects rendered in parallel (worker processes); the images are the same for any value.", minimum=1, affects=False)
    force: bool = c.force()


@dataclass(frozen=True)
class SynthLesionsOptions(Options):
    """2D brain-slice phantoms: healthy vs small lesions at variable sites, with lesion masks (ICAM §4.2)."""

    command: ClassVar[str] = "synth lesions"

    out: Path = c.output_folder(_OUT)
    n_per_group: int = opt(128, "Images per class (healthy, lesion).", minimum=1)
    size: int = opt(32, "Image side in pixels (the ICAM paper's 2D slices are larger, e.g. 128).", minimum=24)
    polarity: str = opt("bright", "Lesions bright, dark or mixed (each lesion bright or dark at random).", choices=("bright", "dark", "mixed"))
    contrast: float = opt(0.7, "Lesion amplitude in image units (white matter ~1, cortex ~0.5).", above=0, maximum=2)
    noise: float = opt(0.03, "Gaussian noise sd inside the brain.", minimum=0)
    voxel_size: float = opt(1.0, "Pixel size in mm.", above=0)
    seed: int = c.seed(_SEED)
    task: str = opt("binary", "binary (healthy vs lesion), multiclass (healthy + lesion classes at their own sites; --n-per-group each) or regression (label = age 45-80, lesion load grows with age; 2 x --n-per-group subjects).", choices=("binary", "multiclass", "regression"))
    n_classes: int = opt(3, "multiclass: number of classes, healthy included (3 to 7).", minimum=3, maximum=7)
    force: bool = c.force()


@dataclass(frozen=True)
class SynthRodentOptions(Options):
    """Rodent brain slices with WM/GM/CSF labels, brain masks, bright artefacts and random translations (segment-bg)."""

    command: ClassVar[str] = "synth rodent"

    out: Path = c.output_folder(_OUT)
    n_animals: int = opt(10, "Number of animals (one acquisition each).", minimum=1)
    shape: tuple[int, ...] = opt((64, 64, 16), "Grid nx,ny,n_slices (slices along the third axis).", parse=parse_shape3, cli_type=str)
    max_shift: float = opt(6.0, "Largest in-plane translation between acquisitions, in voxels.", minimum=0)
    artefacts: bool = flag(True, "Bright artefacts outside the brain (muscle arcs, blobs).", "--no-artefacts")
    noise: float = opt(0.03, "Rician noise sd (tissue intensities: WM 0.45, GM 0.65, CSF 1.0).", minimum=0)
    test_fraction: float = opt(0.2, "Share of the animals in test.csv (the rest in train.csv).", minimum=0, below=1)
    seed: int = c.seed(_SEED)
    force: bool = c.force()

    def check(self) -> None:
        if len(self.shape) != 3:
            raise InputError(f"--shape {','.join(map(str, self.shape))}: expected three numbers nx,ny,n_slices, e.g. 64,64,16")


@dataclass(frozen=True)
class SynthSpikeInOptions(Options):
    """Plant a known deformation (atlas regions, severity, confounder) into your own native T1s, with its ground truth."""

    command: ClassVar[str] = "synth spike-in"

    cohort: Path = c.input_file("Cohort table (CSV/TSV) of native T1 images: participant_id, image[, session_id], covariates (passed through; a 'label' column becomes 'source_label'); or a raw BIDS dataset folder (T1w images, participants.tsv, sessions tables).")
    out: Path = c.output_folder(_OUT)
    atlas: str = opt("HarvardOxford", "Atlas of --region/--confounder-region: a registry name (AAL2, HarvardOxford, ...) or a label image in template space with --labels.")
    labels: Optional[Path] = c.path_option("Label table of a user --atlas image.")
    region: tuple[str, ...] = opt((), "Disease region (atlas name, spaces or underscores alike, or index; NAME=EFFECT gives it its own log-Jacobian); repeatable.")
    mask: Optional[Path] = c.path_option("Disease regions as a template-space mask (one region per connected component).")
    effect: float = opt(-0.3, "Log-Jacobian at each disease region's centre at severity 1 (< 0 atrophy, > 0 expansion); |effect| <= 1.5.", minimum=-1.5, maximum=1.5)
    severity_min: float = opt(0.5, "Patients' severity ~ U(min, max) scales the disease deformation (controls 0).", minimum=0)
    severity_max: float = opt(1.5, "Upper end of the patients' severity.", minimum=0)
    patient_fraction: float = opt(0.5, "Fraction of participants made patients, in (0, 1).", above=0, below=1)
    confounder_region: tuple[str, ...] = opt((), "Confounder region (atlas name or index, NAME=EFFECT as --region); repeatable. None: no confounder.")
    confounder_mask: Optional[Path] = c.path_option("Confounder regions as a template-space mask.")
    confounder_effect: float = opt(-0.2, "Log-Jacobian at each confounder region's centre per +1 of the covariate.", minimum=-1.5, maximum=1.5)
    confounder_strength: float = opt(0.5, "Expected correlation of the covariate with the label, in [0, 1).", minimum=0, below=1)
    confounder_column: str = c.column("confounder", "Name of the covariate column written to the cohort table.")
    smoothness: float = opt(3.0, "Width (Gaussian sd, mm) of the region edges of the volume change, 0.5-20.", minimum=0.5, maximum=20)
    support: float = opt(20.0, "Distance (mm) from a region beyond which voxels are never changed (the volume change is balanced in between); 2.5 x smoothness to 100.", maximum=100, above=0)
    preprocessed: Optional[Path] = c.path_option("A preprocess output folder of these images: its transforms carry the deformation to each image (else a preprocess run is made into OUT/registration).")
    template: Optional[str] = opt(None, "Template of the on-the-fly registration (default MNI152NLin2009aSym).", fallback=c.default_template)
    registration: str = opt("affine", "On-the-fly registration: affine, rigid or syn (as preprocess); identity: the images are in template space already (no registration).", choices=("affine", "rigid", "syn", "identity"))
    registration_resolution: float = opt(3.0, "Grid (mm) of the on-the-fly registration.", above=0)
    brain_extraction: str = opt("auto", "Brain extraction before the on-the-fly registration (as preprocess).", choices=("auto", "deepbet", "template", "none"))
    shape: Optional[str] = opt(None, "Working grid of the truth maps and the on-the-fly run, e.g. 64 (default 64^3, as preprocess).")
    voxel_size: Optional[float] = opt(None, "Working grid voxel size in mm (as preprocess).", above=0)
    seed: int = c.seed("Random seed (labels, severities, covariate, registration sampling).")
    threads: Optional[int] = c.threads("ITK/OMP threads (default $SLURM_CPUS_PER_TASK or all CPUs).")
    force: bool = c.force()

    def check(self) -> None:
        if self.severity_max < self.severity_min:
            raise InputError(f"--severity-max {self.severity_max:g}: must be at least --severity-min {self.severity_min:g}")

    def spike_in_kwargs(self) -> dict:
        """``spike_in_cohort``'s arguments (its region lists are plural)."""
        kw = self.kwargs()
        kw["regions"] = list(kw.pop("region"))
        kw["confounder_regions"] = list(kw.pop("confounder_region"))
        return kw
