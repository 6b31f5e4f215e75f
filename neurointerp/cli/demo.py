"""``neurointerp demo``: the whole chain on built-in synthetic data in one command."""

from __future__ import annotations

from neurointerp.options.cli import command
from neurointerp.options.demo import DemoOptions


def _run(o: DemoOptions) -> None:
    from neurointerp.demo import run_demo
    from neurointerp.progress import info

    info(f"wrote {run_demo(**o.kwargs())}")


demo = command(DemoOptions, _run)
