"""``neurointerp synth``: synthetic cohorts with planted ground truth."""

from __future__ import annotations

import typer

from neurointerp.options.cli import command
from neurointerp.options.synth import SynthBrainOptions, SynthGaussiansOptions, SynthLesionsOptions, SynthRodentOptions, SynthSpikeInOptions

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


def _spike_in(o: SynthSpikeInOptions) -> None:
    from neurointerp.progress import info
    from neurointerp.synth.spikein import spike_in_cohort

    kw = o.spike_in_kwargs()
    info(f"wrote {spike_in_cohort(kw.pop('cohort'), kw.pop('out'), **kw)}")


gaussians = command(SynthGaussiansOptions, _gaussians)
brain = command(SynthBrainOptions, _brain)
rodent = command(SynthRodentOptions, _rodent)
lesions = command(SynthLesionsOptions, _lesions)
spike_in = command(SynthSpikeInOptions, _spike_in)
app.command("gaussians")(gaussians)
app.command("brain")(brain)
app.command("rodent")(rodent)
app.command("lesions")(lesions)
app.command("spike-in")(spike_in)
