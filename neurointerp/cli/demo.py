"""``neurointerp demo``: the whole chain on built-in synthetic data in one command."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Argument(Path("neurointerp-demo"), help="Output folder (created; must be empty unless --force)."),
    n_subjects: int = typer.Option(40, help="Subjects in the synthetic cohort (at least 16)."),
    voxel_size: float = typer.Option(4.0, help="Voxel size in mm of the synthetic cohort."),
    seed: int = typer.Option(0, help="Random seed."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder, overwriting files."),
) -> None:
    """Run every available step on a small synthetic brain cohort and write report.html."""
    from neurointerp.demo import run_demo
    from neurointerp.progress import info

    report = run_demo(out, n_subjects=n_subjects, voxel_size=voxel_size, seed=seed, force=force)
    info(f"wrote {report}")
