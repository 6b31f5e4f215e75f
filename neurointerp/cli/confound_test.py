"""``neurointerp confound-test``: per-feature GLM tests for confounders."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def confound_test(
    model: Path = typer.Argument(..., help="Checkpoint written by `neurointerp train`."),
    cohort: Path = typer.Argument(..., help="Cohort table (normally the training images) with the confounder columns."),
    out: Path = typer.Argument(..., help="Output folder: confound_glm.tsv, mask.json, summary.json."),
    confounder: List[str] = typer.Option(..., help="Confounder column, repeatable (numeric: t-test; categorical: F-test)."),
    layer: Optional[str] = typer.Option(None, help="Layer whose features are tested (default: the encoder -> predictor boundary)."),
    threshold: float = typer.Option(0.05, help="A feature is confounded when a confounder's p (or q with --fdr) is below this."),
    fdr: bool = typer.Option(False, "--fdr", help="Benjamini-Hochberg correction across features."),
    score: str = typer.Option("probability", help="The score s of the GLM: probability (P(positive class), as the paper) or logit (keeps the severity a saturated binary classifier squeezes into P ~ 0/1)."),
    drop_missing: bool = typer.Option(False, "--drop-missing", help="Drop rows with a missing confounder (listed) instead of failing."),
    batch_size: int = typer.Option(16, help="Images per batch."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads (default: SLURM_CPUS_PER_TASK)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the outputs of an earlier run."),
    allow_unvalidated: bool = typer.Option(False, "--allow-unvalidated", help="Go on with a model that has no held-out evidence of skill (refused by default: its maps would explain noise)."),  # skill gate (issue #21)
) -> None:
    """Find the learned features that carry a confounder (confounder-aware saliency, step 1)."""
    from neurointerp.confound.run import run_confound_test

    run_confound_test(
        model,
        cohort,
        out,
        confounder=confounder,
        layer=layer,
        threshold=threshold,
        fdr=fdr,
        score=score,
        drop_missing=drop_missing,
        batch_size=batch_size,
        device=device,
        threads=threads,
        force=force,
        allow_unvalidated=allow_unvalidated,
    )
