"""Interfaces to ``neurointerp synth ...``, ``preprocess`` and ``demo``."""

from __future__ import annotations

from nipype.interfaces.base import Directory, File, OutputMultiObject, TraitedSpec, traits

from neurointerp.interfaces.base import NeurointerpCommand
from neurointerp.interfaces.generate import input_spec
from neurointerp.options.preprocess import PreprocessOptions
from neurointerp.options.demo import DemoOptions
from neurointerp.options.synth import SynthBrainOptions, SynthGaussiansOptions, SynthLesionsOptions, SynthRodentOptions, SynthSpikeInOptions


SynthBrainInputSpec = input_spec(SynthBrainOptions, out_default="synth_brain")


class SynthBrainOutputSpec(TraitedSpec):
    out_dir = Directory(exists=True, desc="The synthetic dataset")
    cohort = File(exists=True, desc="cohort.csv (participant_id, image, label, age, sex, ...)")
    images = OutputMultiObject(File(exists=True), desc="Native T1w images")


class SynthBrain(NeurointerpCommand):
    """``neurointerp synth brain``: a 3D cohort with planted disease and age effects."""

    _cmd = "neurointerp synth brain"
    input_spec = SynthBrainInputSpec
    output_spec = SynthBrainOutputSpec

    def _outputs_in(self, out_dir):
        return {"cohort": self._file(out_dir, "cohort.csv"), "images": self._glob(out_dir, "sub-*/anat/sub-*_T1w.nii.gz")}


PreprocessInputSpec = input_spec(PreprocessOptions, out_source="in_file", out_suffix="preprocess")


class PreprocessOutputSpec(TraitedSpec):
    out_dir = Directory(exists=True, desc="Derivatives folder")
    cohort = File(desc="cohort.csv of the preprocessed images (for train/saliency), when the input was a table")
    out_files = OutputMultiObject(File(exists=True), desc="Preprocessed images on the working grid")
    out_file = File(desc="The preprocessed image, when one image was given")
    masks = OutputMultiObject(File(exists=True), desc="Brain masks on the working grid")


class Preprocess(NeurointerpCommand):
    """``neurointerp preprocess``: T1w images to the template's working grid."""

    _cmd = "neurointerp preprocess"
    input_spec = PreprocessInputSpec
    output_spec = PreprocessOutputSpec

    def _outputs_in(self, out_dir):
        images = self._glob(out_dir, "sub-*/anat/*_desc-preproc_T1w.nii.gz") + self._glob(out_dir, "sub-*/ses-*/anat/*_desc-preproc_T1w.nii.gz")
        masks = [p for p in self._glob(out_dir, "sub-*/anat/*_space-*_desc-brain_mask.nii.gz")]
        return {
            "cohort": self._file(out_dir, "cohort.csv"),
            "out_files": images,
            "out_file": images[0] if len(images) == 1 else traits.Undefined,
            "masks": masks,
        }


class _OutDir(TraitedSpec):
    out_dir = Directory(exists=True, desc="Output folder")


class SynthGaussiansOutputSpec(_OutDir):
    cohort = File(exists=True, desc="cohort.csv")


SynthGaussiansInputSpec = input_spec(SynthGaussiansOptions, out_default="synth_gaussians")


class SynthGaussians(NeurointerpCommand):
    """``neurointerp synth gaussians``: the 2D four-Gaussian cohorts of the papers."""

    _cmd = "neurointerp synth gaussians"
    input_spec = SynthGaussiansInputSpec
    output_spec = SynthGaussiansOutputSpec

    def _outputs_in(self, out_dir):
        return {"cohort": self._file(out_dir, "cohort.csv")}


SynthLesionsInputSpec = input_spec(SynthLesionsOptions, out_default="synth_lesions")


class SynthLesions(NeurointerpCommand):
    """``neurointerp synth lesions``: 2D healthy vs lesion phantoms with lesion masks."""

    _cmd = "neurointerp synth lesions"
    input_spec = SynthLesionsInputSpec
    output_spec = SynthGaussiansOutputSpec

    def _outputs_in(self, out_dir):
        return {"cohort": self._file(out_dir, "cohort.csv")}


class SynthRodentOutputSpec(_OutDir):
    train = File(exists=True, desc="train.csv")
    test = File(exists=True, desc="test.csv")


SynthRodentInputSpec = input_spec(SynthRodentOptions, out_default="synth_rodent")


class SynthRodent(NeurointerpCommand):
    """``neurointerp synth rodent``: rodent slices with tissue labels and artefacts."""

    _cmd = "neurointerp synth rodent"
    input_spec = SynthRodentInputSpec
    output_spec = SynthRodentOutputSpec

    def _outputs_in(self, out_dir):
        return {"train": self._file(out_dir, "train.csv"), "test": self._file(out_dir, "test.csv")}


class SynthSpikeInOutputSpec(_OutDir):
    cohort = File(exists=True, desc="cohort.csv of the spiked images (label, severity, covariate, truth maps)")


SynthSpikeInInputSpec = input_spec(SynthSpikeInOptions, out_default="synth_spike_in")


class SynthSpikeIn(NeurointerpCommand):
    """``neurointerp synth spike-in``: a known deformation planted into your own native T1s."""

    _cmd = "neurointerp synth spike-in"
    input_spec = SynthSpikeInInputSpec
    output_spec = SynthSpikeInOutputSpec

    def _outputs_in(self, out_dir):
        return {"cohort": self._file(out_dir, "cohort.csv")}


class DemoOutputSpec(_OutDir):
    report = File(exists=True, desc="report.html")


DemoInputSpec = input_spec(DemoOptions, out_default="neurointerp_demo")


class Demo(NeurointerpCommand):
    """``neurointerp demo``: the whole chain on built-in synthetic data."""

    _cmd = "neurointerp demo"
    input_spec = DemoInputSpec
    output_spec = DemoOutputSpec

    def _outputs_in(self, out_dir):
        return {"report": self._file(out_dir, "report.html")}
