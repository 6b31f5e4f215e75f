"""``neurointerp group-map``: group statistics and atlas summaries of attribution and Jacobian maps."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def group_map(
    maps: str = typer.Argument(..., help="Folder of NIfTI maps, a glob pattern (quote it), or a CSV/TSV with participant_id and map columns."),
    out: Path = typer.Argument(..., help="Output folder; results go to <out>/group/."),
    covariates: Optional[Path] = typer.Option(None, help="CSV/TSV with participant_id, label and covariates (joined on participant_id)."),
    design: Optional[str] = typer.Option(None, help="Columns 'label,age,sex' (intercept added, categorical columns dummy-coded) or a formula '~ label + age + C(sex)'; 'none' for descriptive maps only. Default: the label column."),
    contrast: Optional[str] = typer.Option(None, help="'patient-control', a design column ('age') or weights '0,1,0'. Default: second class minus first."),
    label_column: str = typer.Option("label", help="Column with the group of each map."),
    mask: Optional[Path] = typer.Option(None, help="Analysis mask on the maps' grid (default: voxels where any map is non-zero)."),
    atlas: Optional[str] = typer.Option(None, help="Atlas for the region table: a registry name (AAL2, HarvardOxford, DesikanKilliany, ...) or a label image with --labels."),
    labels: Optional[Path] = typer.Option(None, help="Label table (index, name) of a user atlas image."),
    n_perm: int = typer.Option(0, help="Permutations for family-wise error p-values (max statistic); 0 for none."),
    seed: int = typer.Option(0, help="Random seed of the permutations."),
    alpha: float = typer.Option(0.05, help="Significance level for FDR/FWE counts and figure thresholds."),
    one_sided: bool = typer.Option(False, "--one-sided", help="Test contrast > 0 only (default: two-sided)."),
    mirror: bool = typer.Option(False, "--mirror", help="Show a one-hemisphere model's maps on both sides (mirror across x = 0)."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Write PNG mosaics and glass brains next to the NIfTI outputs."),
    space: str = typer.Option("MNI152NLin2009aSym", help="Template space name used in the output names."),
    top: int = typer.Option(10, help="Regions listed on the console."),
    batch_size: int = typer.Option(32, help="Maps per streamed batch (memory does not grow with the number of maps)."),
    n_threads: int = typer.Option(2, help="Threads reading maps ahead."),
    memory_mb: float = typer.Option(512.0, help="Memory budget of the permutation accumulators in MB (more passes when exceeded)."),
    volumes: Optional[str] = typer.Option(None, help="Column with preprocessed template-space T1 images: Atropos grey-matter volume per --atlas region, GLM with the same design, box plots."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder, overwriting files."),
) -> None:
    """Group maps: per-group mean/|mean|/sd/count, voxelwise GLM (t, z, FDR q, permutation FWE), atlas region table, figures."""
    from neurointerp.group.api import group_map as run
    from neurointerp.progress import info

    summary = run(
        maps, out, covariates=covariates, design=design, contrast=contrast, label_column=label_column, mask=mask,
        atlas=atlas, labels=labels, n_perm=n_perm, seed=seed, alpha=alpha, one_sided=one_sided, mirror=mirror,
        figures=figures, space=space, top=top, batch_size=batch_size, n_threads=n_threads, memory_mb=memory_mb, volumes=volumes, force=force,
    )
    info(f"wrote {summary}")
