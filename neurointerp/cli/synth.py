"""``neurointerp synth``: synthetic cohorts with planted ground truth."""

from __future__ import annotations

import typer

from neurointerp.options.cli import command
from neurointerp.options.synth import SynthBrainOptions, SynthGaussiansOptions, SynthLesionsOptions, SynthRodentOptions

app = typer.Typer(help="Synthetic cohorts with planted, known effects and confounders.", no_args_is_help=True)


def _gaussians(o: SynthGaussiansOptions) -> None:
    from neurointerp.progress import info
    from neurointerp.synth.gaussians import synth_gaussians

    info(f"wrote {synth_gaussians(**o.kwargs())}")


def _brain(o: SynthBrainOptions) -> None:
    from neurointerp.progress import info
    from neurointerp.synth.brain import synth_brain

    info(f"wrote {synth_brain(**o.kwargs())}")


def _rodent(o: SynthRodentOptions) -> None:
    from neurointerp.progress import info
    from neurointerp.synth.rodent import synth_rodent

    info(f"wrote {synth_rodent(**o.kwargs())}")


def _lesions(o: SynthLesionsOptions) -> None:
    from neurointerp.progress import info
    from neurointerp.synth.lesions import synth_lesions

    info(f"wrote {synth_lesions(**o.kwargs())}")


gaussians = command(SynthGaussiansOptions, _gaussians)
brain = command(SynthBrainOptions, _brain)
rodent = command(SynthRodentOptions, _rodent)
lesions = command(SynthLesionsOptions, _lesions)
app.command("gaussians")(gaussians)
app.command("brain")(brain)
app.command("rodent")(rodent)
app.command("lesions")(lesions)
