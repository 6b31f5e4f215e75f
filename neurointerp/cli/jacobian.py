"""``neurointerp jacobian``: Jacobian determinant maps of displacement fields, and group means."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def jacobian(
    inputs: Path = typer.Argument(..., help="A displacement field (NIfTI vector image, ITK/ANTs convention), a table (fields.tsv of `simulate apply`: participant_id, field[, session_id, direction, image]; ids letters and digits, rows checked before any work) or a `simulate apply` folder (its fields.tsv or the fields-part*.tsv of an array)."),
    out: Path = typer.Argument(..., help="Output folder (per-subject _jacobian/_logjacobian maps, jacobian.tsv, group/ means)."),
    template: Optional[Path] = typer.Option(None, help="Template image: group maps in its space (fields must lie on its grid unless --register)."),
    register: bool = typer.Option(False, "--register", help="Align each subject's image to --template with ANTs SyN first and resample its log-Jacobian (§4.2 group maps)."),
    inverse: bool = typer.Option(False, "--inverse", help="Maps of the inverse mapping (1/det, -log det): the volume change from the input to the warped image, for pull-back fields such as simulate's."),
    field_column: str = typer.Option("field", help="Table column with the field paths."),
    image_column: str = typer.Option("image", help="Table column with each subject's image (for --register and grid checks)."),
    space: Optional[str] = typer.Option(None, help="Space name for the group maps (default: from the field names)."),
    clamp: bool = typer.Option(True, "--clamp/--no-clamp", help="As ANTs: determinant floored at 0, log-determinant at log(0.001)."),
    threads: Optional[int] = typer.Option(None, help="ITK threads for --register (default $SLURM_CPUS_PER_TASK)."),
    seed: int = typer.Option(0, help="Registration random seed."),
    array_index: Optional[int] = typer.Option(None, help="This task's index in a job array (default $SLURM_ARRAY_TASK_ID): rows index, index + size, ..."),
    array_size: Optional[int] = typer.Option(None, help="Number of tasks in the job array (default $SLURM_ARRAY_TASK_COUNT)."),
    force: bool = typer.Option(False, "--force", help="Recompute finished subjects; write into a non-empty folder, overwriting files."),
) -> None:
    """Determinant and log-determinant of the Jacobian of displacement fields (agrees with ANTs)."""
    from neurointerp.progress import info
    from neurointerp.simulate.jacobian import jacobian_maps

    path = jacobian_maps(
        inputs, out, field_column=field_column, image_column=image_column, template=template, register=register,
        inverse=inverse, space=space, clamp=clamp, threads=threads, seed=seed, array_index=array_index, array_size=array_size, force=force,
    )
    info(f"wrote {path}")
