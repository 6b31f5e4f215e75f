"""``neurointerp evaluate``: attribution-quality metrics and sanity checks."""

from __future__ import annotations

from neurointerp.options.cli import command
from neurointerp.options.evaluate import EvaluateOptions


def _run(o: EvaluateOptions) -> None:
    from neurointerp.evaluate.run import run_evaluate
    from neurointerp.progress import info

    from neurointerp.attribution.registry import get_method, parse_params

    for m in o.method:
        get_method(m)
    kw = o.kwargs("param")
    kw["method"], kw["extra_model"] = list(kw["method"]), list(kw["extra_model"])
    kw["params"] = parse_params(list(o.param), list(o.method))
    info(f"wrote {run_evaluate(**kw)}")


evaluate = command(EvaluateOptions, _run)
