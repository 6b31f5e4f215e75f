"""Options of every command, held once (see :mod:`neurointerp.options.core`).

``OPTIONS`` maps each command line (``"simulate apply"``) to its options class, imported lazily;
:func:`options_class` returns one and :func:`all_options` all of them.
"""

from __future__ import annotations

import importlib

from neurointerp.options.core import Options, OptionInfo, Spec, arg, flag, opt, required, takes_options

OPTIONS = {
    "synth gaussians": "synth:SynthGaussiansOptions",
    "synth brain": "synth:SynthBrainOptions",
    "synth lesions": "synth:SynthLesionsOptions",
    "synth rodent": "synth:SynthRodentOptions",
    "synth spike-in": "synth:SynthSpikeInOptions",
    "preprocess": "preprocess:PreprocessOptions",
    "train": "train:TrainOptions",
    "saliency": "saliency:SaliencyOptions",
    "confound-test": "confound:ConfoundTestOptions",
    "simulate train": "simulate:SimulateTrainOptions",
    "simulate apply": "simulate:SimulateApplyOptions",
    "jacobian": "jacobian:JacobianOptions",
    "group-map": "group_map:GroupMapOptions",
    "evaluate": "evaluate:EvaluateOptions",
    "segment-bg train": "segment_bg:SegmentBgTrainOptions",
    "segment-bg apply": "segment_bg:SegmentBgApplyOptions",
    "demo": "demo:DemoOptions",
}


def options_class(command: str) -> type[Options]:
    module, name = OPTIONS[command].split(":")
    return getattr(importlib.import_module(f"neurointerp.options.{module}"), name)


def all_options() -> dict[str, type[Options]]:
    return {cmd: options_class(cmd) for cmd in OPTIONS}


__all__ = ["OPTIONS", "OptionInfo", "Options", "Spec", "all_options", "arg", "flag", "opt", "options_class", "required", "takes_options"]
