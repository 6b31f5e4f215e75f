"""Interfaces to ``neurointerp train``, ``confound-test`` and ``evaluate``."""

from __future__ import annotations

from nipype.interfaces.base import Directory, File, InputMultiObject, OutputMultiObject, TraitedSpec, traits

from neurointerp.interfaces.base import NeurointerpCommand
from neurointerp.interfaces.generate import input_spec
from neurointerp.options.confound import ConfoundTestOptions
from neurointerp.options.evaluate import EvaluateOptions
from neurointerp.options.train import TrainOptions


TrainInputSpec = input_spec(TrainOptions, out_source="cohort", out_suffix="train")


class TrainOutputSpec(TraitedSpec):
    out_dir = Directory(exists=True, desc="Training folder")
    model = File(desc="model.pt trained on all data (with final)")
    fold_models = OutputMultiObject(File(exists=True), desc="fold-<k>/model.pt")
    metrics = File(desc="metrics.tsv (per-epoch rows)")
    cv_summary = File(desc="cv_summary.tsv (per-fold scores)")


class Train(NeurointerpCommand):
    """``neurointerp train``: a 2D/3D CNN with cross-validation and/or on all data."""

    _cmd = "neurointerp train"
    input_spec = TrainInputSpec
    output_spec = TrainOutputSpec

    def _outputs_in(self, out_dir):
        return {
            "model": self._file(out_dir, "model.pt"),
            "fold_models": self._glob(out_dir, "fold-*/model.pt"),
            "metrics": self._file(out_dir, "metrics.tsv"),
            "cv_summary": self._file(out_dir, "cv_summary.tsv"),
        }


ConfoundTestInputSpec = input_spec(ConfoundTestOptions, out_source="cohort", out_suffix="confound")


class ConfoundTestOutputSpec(TraitedSpec):
    out_dir = Directory(exists=True, desc="Output folder")
    mask = File(exists=True, desc="mask.json (for Saliency confounder_mask)")
    glm = File(exists=True, desc="confound_glm.tsv")
    summary = File(exists=True, desc="summary.json")


class ConfoundTest(NeurointerpCommand):
    """``neurointerp confound-test``: learned features that carry a confounder."""

    _cmd = "neurointerp confound-test"
    input_spec = ConfoundTestInputSpec
    output_spec = ConfoundTestOutputSpec

    def _outputs_in(self, out_dir):
        return {"mask": self._file(out_dir, "mask.json"), "glm": self._file(out_dir, "confound_glm.tsv"), "summary": self._file(out_dir, "summary.json")}


EvaluateInputSpec = input_spec(EvaluateOptions, out_source="cohort", out_suffix="evaluate")


class EvaluateOutputSpec(TraitedSpec):
    out_dir = Directory(exists=True, desc="Output folder")
    metrics = File(exists=True, desc="metrics.tsv")
    metrics_json = File(exists=True, desc="metrics.json (provenance)")


class Evaluate(NeurointerpCommand):
    """``neurointerp evaluate``: fidelity, sensitivity and sanity checks of attribution methods."""

    _cmd = "neurointerp evaluate"
    input_spec = EvaluateInputSpec
    output_spec = EvaluateOutputSpec

    def _outputs_in(self, out_dir):
        return {"metrics": self._file(out_dir, "metrics.tsv"), "metrics_json": self._file(out_dir, "metrics.json")}
