"""Interfaces to ``neurointerp synth brain`` and ``neurointerp preprocess``."""

from __future__ import annotations

from nipype.interfaces.base import Directory, File, OutputMultiObject, TraitedSpec, traits

from neurointerp.interfaces.base import NeurointerpCommand, NeurointerpInputSpec, flag, out_dir_input, threads_input


class SynthBrainInputSpec(NeurointerpInputSpec):
    out_dir = Directory("synth_brain", usedefault=True, argstr="%s", position=0, hash_files=False, desc="Output folder (default: synth_brain in the node's working directory)")
    n_subjects = traits.Int(argstr="--n-subjects %d", desc="Number of subjects")
    voxel_size = traits.Float(argstr="--voxel-size %g", desc="Voxel size in mm of the native and template grids")
    effect_size = traits.Float(argstr="--effect-size %g", desc="Scale of the disease deformation")
    confound_strength = traits.Float(argstr="--confound-strength %g", desc="Correlation between age and diagnosis, in [0, 1)")
    confound_size = traits.Float(argstr="--confound-size %g", desc="Scale of the age deformation")
    patient_fraction = traits.Float(argstr="--patient-fraction %g", desc="Fraction of patients")
    noise = traits.Float(argstr="--noise %g", desc="Rician noise sd relative to the white-matter intensity")
    bias = traits.Float(argstr="--bias %g", desc="Strength of the smooth multiplicative bias field")
    max_rotation = traits.Float(argstr="--max-rotation %g", desc="Largest head rotation about each axis (degrees)")
    max_translation = traits.Float(argstr="--max-translation %g", desc="Largest head translation along each axis (mm)")
    orientation = traits.Str(argstr="--orientation %s", desc="Voxel orientation code of the native images (RAS, LAS, ...)")
    template_space = flag("--template-space", "Also write each subject's unposed anatomy on the template grid")
    seed = traits.Int(argstr="--seed %d", desc="Random seed")


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


class PreprocessInputSpec(NeurointerpInputSpec):
    in_file = File(exists=True, mandatory=True, argstr="%s", position=0, desc="A T1w NIfTI file or a cohort table (CSV/TSV with participant_id, image, ...)")
    out_dir = out_dir_input("in_file", "preprocess", 1)
    template = traits.Str(argstr="--template %s", desc="Template name from the registry or a NIfTI file")
    template_mask = File(exists=True, argstr="--template-mask %s", desc="Brain mask of a template file that is not skull-stripped")
    space = traits.Str(argstr="--space %s", desc="Space name in output file names")
    shape = traits.Either(traits.Int(), traits.Str(), argstr="--shape %s", desc="Working grid shape, e.g. 64 or '64,64,64'")
    voxel_size = traits.Float(argstr="--voxel-size %g", desc="Working grid voxel size in mm")
    reorient = flag("--reorient", "Reorder native voxels to RAS first", "--no-reorient")
    n4 = flag("--n4", "N4 bias-field correction", "--no-n4")
    denoise = flag("--denoise", "Non-local-means denoising", "--no-denoise")
    brain_extraction = traits.Enum("auto", "deepbet", "template", "none", argstr="--brain-extraction %s", desc="Brain extraction method")
    registration = traits.Enum("affine", "rigid", "syn", argstr="--registration %s", desc="Registration to the template")
    registration_resolution = traits.Float(argstr="--registration-resolution %g", desc="Grid (mm) on which the registration is estimated")
    n4_resolution = traits.Float(argstr="--n4-resolution %g", desc="Grid (mm) on which the N4 bias field is estimated")
    qc = flag("--qc", "Write a QC PNG per subject", "--no-qc")
    seed = traits.Int(argstr="--seed %d", desc="Seed of the registration's random sampling")
    n_jobs = traits.Int(argstr="--n-jobs %d", desc="Subjects in parallel (one process each)")
    num_threads = threads_input()


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
