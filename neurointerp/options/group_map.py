"""Options of ``neurointerp group-map``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from neurointerp.options import common as c
from neurointerp.options.core import Options, arg, flag, opt


@dataclass(frozen=True)
class GroupMapOptions(Options):
    """Group maps: per-group mean/|mean|/sd/count, voxelwise GLM (t, z, FDR q, permutation FWE), atlas region table, figures."""

    command: ClassVar[str] = "group-map"

    maps: str = arg("Folder of NIfTI maps, a glob pattern (quote it), or a CSV/TSV with participant_id and map columns.")
    out: Path = c.output_folder("Output folder; results go to <out>/group/.")
    covariates: Optional[Path] = opt(None, "CSV/TSV with participant_id, label and covariates (joined on participant_id; with a session_id column, on participant and session).", exists=True)
    sessions: Optional[str] = opt(None, "Maps with several sessions per participant: 'mean' averages each participant's sessions before the statistics (between-subject designs), 'subject' adds a subject term to the design (within-subject effects, e.g. session or age at scan). Degrees of freedom then count participants; without it repeated participants are refused.", choices=("mean", "subject"))
    design: Optional[str] = opt(None, "Columns 'label,age,sex' (intercept added, categorical columns dummy-coded) or a formula '~ label + age + C(sex)'; 'none' for descriptive maps only. Default: the label column.")
    contrast: Optional[str] = opt(None, "'patient-control', a design column ('age') or weights '0,1,0'. Default: second class minus first.")
    label_column: str = c.column("label", "Column with the group of each map.")
    mask: Optional[Path] = opt(None, "Analysis mask on the maps' grid (default: voxels where any map is non-zero).", exists=True)
    atlas: Optional[str] = opt(None, "Atlas for the region table: a registry name (AAL2, HarvardOxford, DesikanKilliany, ...) or a label image with --labels.")
    labels: Optional[Path] = opt(None, "Label table (index, name) of a user atlas image.", exists=True)
    n_perm: int = opt(0, "Permutations for family-wise error p-values (max statistic); 0 for none.", minimum=0)
    seed: int = c.seed("Random seed of the permutations.")
    alpha: float = opt(0.05, "Significance level for FDR/FWE counts and figure thresholds.", above=0, below=1)
    one_sided: bool = flag(False, "Test contrast > 0 only (default: two-sided).")
    mirror: bool = flag(False, "Show a one-hemisphere model's maps on both sides (mirror across x = 0).")
    figures: bool = flag(True, "Write PNG mosaics and glass brains next to the NIfTI outputs.", "--no-figures")
    space: str = opt("MNI152NLin2009aSym", "Template space name used in the output names.")
    top: int = opt(10, "Regions listed on the console.", minimum=0, affects=False)
    batch_size: int = c.batch_size(32, "Maps per streamed batch (memory does not grow with the number of maps).")
    threads: int = opt(2, "Threads reading maps ahead.", minimum=1, affects=False, aliases=("--n-threads",), nipype="num_threads")
    memory_mb: float = opt(512.0, "Memory budget of the permutation accumulators in MB (more passes when exceeded).", above=0, affects=False)
    volumes: Optional[str] = opt(None, "Column with preprocessed template-space T1 images: Atropos grey-matter volume per --atlas region, GLM with the same design, box plots.")
    force: bool = c.force()
