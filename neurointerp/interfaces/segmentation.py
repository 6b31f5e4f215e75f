"""Interfaces to ``neurointerp segment-bg train`` and ``segment-bg apply``."""

from __future__ import annotations

from nipype.interfaces.base import Directory, File, OutputMultiObject, TraitedSpec, traits

from neurointerp.interfaces.base import NeurointerpCommand
from neurointerp.interfaces.generate import input_spec
from neurointerp.options.segment_bg import SegmentBgApplyOptions, SegmentBgTrainOptions


SegmentBgTrainInputSpec = input_spec(SegmentBgTrainOptions, out_source="cohort", out_suffix="segmenter")


class SegmentBgTrainOutputSpec(TraitedSpec):
    out_dir = Directory(exists=True, desc="Output folder")
    model = File(exists=True, desc="model.pt")
    history = File(desc="history.tsv")


class SegmentBgTrain(NeurointerpCommand):
    """``neurointerp segment-bg train``: the 2D tissue-segmentation U-Net."""

    _cmd = "neurointerp segment-bg train"
    input_spec = SegmentBgTrainInputSpec
    output_spec = SegmentBgTrainOutputSpec

    def _outputs_in(self, out_dir):
        return {"model": self._file(out_dir, "model.pt"), "history": self._file(out_dir, "history.tsv")}


SegmentBgApplyInputSpec = input_spec(SegmentBgApplyOptions, out_source="cohort", out_suffix="segment")


class SegmentBgApplyOutputSpec(TraitedSpec):
    out_dir = Directory(exists=True, desc="BIDS derivatives folder")
    segmentations = OutputMultiObject(File(exists=True), desc="Segmentations after background removal (desc-bgremoved_dseg)")
    masks = OutputMultiObject(File(exists=True), desc="Positioned brain masks")
    metrics = File(desc="metrics.tsv (with truth columns)")


class SegmentBgApply(NeurointerpCommand):
    """``neurointerp segment-bg apply``: segmentation with guided-backprop background removal."""

    _cmd = "neurointerp segment-bg apply"
    input_spec = SegmentBgApplyInputSpec
    output_spec = SegmentBgApplyOutputSpec

    def _outputs_in(self, out_dir):
        return {
            "segmentations": self._glob(out_dir, "sub-*/**/*_desc-bgremoved_dseg.nii.gz"),
            "masks": self._glob(out_dir, "sub-*/**/*_desc-brain_mask.nii.gz"),
            "metrics": self._file(out_dir, "metrics.tsv"),
        }
