"""``neurointerp preprocess``: T1w NIfTI (or a cohort of them) to the template's working grid."""

from __future__ import annotations

from neurointerp.options.cli import command
from neurointerp.options.preprocess import PreprocessOptions


def _run(o: PreprocessOptions) -> None:
    from neurointerp.preprocess import run_preprocess
    from neurointerp.progress import info

    result = run_preprocess(options=o)
    info(f"preprocess: {len(result.done)} done, {len(result.skipped)} skipped; wrote {result.table}")


preprocess = command(PreprocessOptions, _run)
