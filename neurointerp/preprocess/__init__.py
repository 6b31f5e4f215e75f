"""T1w MRI to template space: N4, brain extraction, coarse-grid ANTs registration, 64^3 grid, z-scores.

Library entry point: :func:`run_preprocess` (same arguments as ``neurointerp preprocess``).
Heavy packages (antspyx, torch, deepbet) are imported inside the functions that need them.
"""

from neurointerp.preprocess.pipeline import (
    Outputs,
    PreprocessFailures,
    PreprocessResult,
    Subject,
    output_paths,
    preprocess_subject,
    run_preprocess,
)

__all__ = [
    "Outputs",
    "PreprocessFailures",
    "PreprocessResult",
    "Subject",
    "output_paths",
    "preprocess_subject",
    "run_preprocess",
]
