"""``neurointerp confound-test``: per-feature GLM tests for confounders."""

from __future__ import annotations

from neurointerp.options.cli import command
from neurointerp.options.confound import ConfoundTestOptions


def _run(o: ConfoundTestOptions) -> None:
    from neurointerp.confound.run import run_confound_test

    kw = o.kwargs()
    kw["confounder"] = list(kw["confounder"])
    run_confound_test(**kw)


confound_test = command(ConfoundTestOptions, _run)
