"""``neurointerp segment-bg``: tissue segmentation with guided-backprop background removal
(papers/gbp-background-removal-segmentation.txt)."""

from __future__ import annotations

import typer

from neurointerp.options.cli import command
from neurointerp.options.segment_bg import SegmentBgApplyOptions, SegmentBgTrainOptions

app = typer.Typer(help="Rodent tissue segmentation (2D U-Net) with guided-backprop-driven background removal.", no_args_is_help=True)


def _train(o: SegmentBgTrainOptions) -> None:
    from neurointerp.progress import info
    from neurointerp.segment_bg.train import run_train

    info(f"wrote {run_train(**o.kwargs())}")


def _apply(o: SegmentBgApplyOptions) -> None:
    from neurointerp.progress import info
    from neurointerp.segment_bg.apply import run_apply

    info(f"wrote {run_apply(options=o)}")


train = command(SegmentBgTrainOptions, _train)
app.command("train")(train)
apply = command(SegmentBgApplyOptions, _apply)
app.command("apply")(apply)
