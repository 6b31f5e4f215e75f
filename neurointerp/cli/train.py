"""``neurointerp train``: CNN classifiers with subject-level cross-validation and self-describing checkpoints."""

from __future__ import annotations

from neurointerp.options.cli import command
from neurointerp.options.train import TrainOptions


def _run(o: TrainOptions) -> None:
    from neurointerp.progress import info
    from neurointerp.train.loop import train as run

    kw = o.kwargs()
    for key in ("channels", "hidden", "fold"):
        if kw[key] is not None:
            kw[key] = list(kw[key])
    result = run(**kw)
    if result.summary is not None:
        row = result.summary[result.summary["fold"] == "mean"]
        if len(row):
            cols = [c for c in ("balanced_accuracy", "auc", "r", "mae") if c in row.columns]
            info("cross-validation mean over folds: " + ", ".join(f"{c} {float(row[c].iloc[0]):.3f}" for c in cols))
    info(f"wrote {result.out}")


train = command(TrainOptions, _run)
