"""``neurointerp saliency``: attribution maps in the model's (template) space."""

from __future__ import annotations

from neurointerp.options.cli import command
from neurointerp.options.saliency import SaliencyOptions


def _run(o: SaliencyOptions) -> None:
    from neurointerp.attribution.pipeline import run_saliency
    from neurointerp.progress import info

    info(f"wrote {run_saliency(options=o)}")


saliency = command(SaliencyOptions, _run)
