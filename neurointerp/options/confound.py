"""Options of ``neurointerp confound-test``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from neurointerp.options import common as c
from neurointerp.options.core import Options, flag, opt, required


@dataclass(frozen=True)
class ConfoundTestOptions(Options):
    """Find the learned features that carry a confounder (confounder-aware saliency, step 1)."""

    command: ClassVar[str] = "confound-test"

    model: Path = c.input_file("Checkpoint written by `neurointerp train`.")
    cohort: Path = c.input_file("Cohort table (training and held-out images) with the confounder columns; the model-level tests use the subjects the model was not trained on.", affects=False)
    out: Path = c.output_folder("Output folder: confound_glm.tsv, mask.json, summary.json, model_tests.tsv, report.html.")
    confounder: tuple[str, ...] = required("Confounder column, repeatable (numeric: t-test; categorical: F-test).")
    layer: Optional[str] = opt(None, "Layer whose features are tested (default: the encoder -> predictor boundary).")
    threshold: float = opt(0.05, "A feature is confounded when a confounder's p (or q with --fdr) is below this.", above=0, maximum=1)
    fdr: bool = flag(False, "Benjamini-Hochberg correction across features.")
    score: str = opt("probability", "The score s of the GLM: probability (P(positive class), as the paper) or logit (keeps the severity a saturated binary classifier squeezes into P ~ 0/1).", choices=("probability", "logit"))
    drop_missing: bool = flag(False, "Drop rows with a missing confounder (listed) instead of failing.")
    batch_size: int = c.batch_size(16, "Images per batch.")
    device: str = c.device()
    threads: Optional[int] = c.threads()
    model_tests: bool = flag(True, "Also test the model's score (needs the label column): does it carry label information beyond the confounders, and does it depend on a confounder within a class. On the subjects the model was not trained on.", "--no-model-tests")
    permutations: int = opt(5000, "Permutations for the within-class partial-correlation p-values.", minimum=99, maximum=1_000_000)
    seed: int = c.seed("Seed of the permutations.")
    force: bool = c.force()
    allow_unvalidated: bool = c.allow_unvalidated()
