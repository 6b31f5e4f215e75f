"""Interfaces to ``neurointerp saliency`` and ``neurointerp group-map``."""

from __future__ import annotations

import os

from nipype.interfaces.base import Directory, File, InputMultiObject, OutputMultiObject, TraitedSpec, isdefined, traits

from neurointerp.interfaces.base import NeurointerpCommand, NeurointerpInputSpec, flag, gpu_input, out_dir_input, threads_input


class SaliencyInputSpec(NeurointerpInputSpec):
    model = File(exists=True, mandatory=True, argstr="%s", position=0, desc="Checkpoint written by train (model.pt)")
    cohort = File(exists=True, mandatory=True, argstr="%s", position=1, desc="Cohort table of the images to explain (on the model's grid)")
    out_dir = out_dir_input("cohort", "saliency", 2)
    method = InputMultiObject(traits.Str(), argstr="--method %s...", desc="Attribution methods (gradient, integrated-gradients, gradcam, ...)")
    target = traits.Str(argstr="--target %s", desc="Class to explain (default: predicted class)")
    score = traits.Enum("logit", "probability", argstr="--score %s", desc="Score explained")
    layer = traits.Str(argstr="--layer %s", desc="Grad-CAM layer")
    baseline = traits.Str(argstr="--baseline %s", desc="Integrated gradients baseline: zeros, min, mean or a number")
    steps = traits.Int(argstr="--steps %d", desc="Integrated gradients: points on the path")
    samples = traits.Int(argstr="--samples %d", desc="SmoothGrad: noisy copies per image")
    noise_level = traits.Float(argstr="--noise-level %g", desc="SmoothGrad: noise sd as a fraction of the intensity range")
    window = traits.Int(argstr="--window %d", desc="Occlusion window (voxels)")
    stride = traits.Int(argstr="--stride %d", desc="Occlusion stride (voxels)")
    epsilon = traits.Float(argstr="--epsilon %g", desc="LRP epsilon")
    confounder_mask = File(exists=True, argstr="--confounder-mask %s", desc="mask.json from ConfoundTest: confounder-free maps")
    ground_truth = traits.Str(argstr="--ground-truth %s", desc="Ground-truth map or the cohort column holding one per subject")
    truth_mask = File(exists=True, argstr="--truth-mask %s", desc="Binary truth mask for the attribution-mass score")
    atlas = traits.Str(argstr="--atlas %s", desc="Region tables: registry atlas, label image, auto or none")
    labels = File(exists=True, argstr="--labels %s", desc="Label table of a user atlas image")
    native = flag("--native", "Also write each map in native T1w space")
    resample_to = File(exists=True, argstr="--resample-to %s", desc="Also write each map on this NIfTI's grid")
    allow_train = flag("--allow-train", "Explain participants the model was trained on")
    allow_unvalidated = flag("--allow-unvalidated", "Go on with a model without held-out evidence of skill")  # skill gate (issue #21)
    batch_size = traits.Int(argstr="--batch-size %d", desc="Subjects per batch")
    seed = traits.Int(argstr="--seed %d", desc="Random seed (SmoothGrad noise)")
    num_threads = threads_input()
    use_gpu = gpu_input()


class SaliencyOutputSpec(TraitedSpec):
    out_dir = Directory(exists=True, desc="BIDS derivatives folder")
    maps = OutputMultiObject(File(exists=True), desc="Per-subject attribution maps on the model's grid")
    group_files = OutputMultiObject(File(exists=True), desc="Group mean maps (group/*.nii.gz)")


class Saliency(NeurointerpCommand):
    """``neurointerp saliency``: attribution maps per subject and group means."""

    _cmd = "neurointerp saliency"
    input_spec = SaliencyInputSpec
    output_spec = SaliencyOutputSpec

    def _outputs_in(self, out_dir):
        found = self._glob(out_dir, "sub-*/anat/*_attribution.nii.gz") + self._glob(out_dir, "sub-*/ses-*/anat/*_attribution.nii.gz")
        maps = [p for p in found if "_space-" in os.path.basename(p) and "_res-" not in os.path.basename(p)]
        return {"maps": sorted(maps), "group_files": self._glob(out_dir, "group/*.nii.gz")}


class GroupMapInputSpec(NeurointerpInputSpec):
    maps = traits.Str(argstr="%s", position=0, mandatory=True, xor=["in_files"], desc="Folder of NIfTI maps, a glob pattern, or a CSV/TSV with participant_id and map columns")
    in_files = InputMultiObject(File(exists=True), argstr="%s", position=0, mandatory=True, xor=["maps"], desc="The maps as a list (participant ids from their sub- entities)")
    out_dir = Directory("group_map", usedefault=True, argstr="%s", position=1, hash_files=False, desc="Output folder (default: group_map in the node's working directory)")
    covariates = File(exists=True, argstr="--covariates %s", desc="CSV/TSV with participant_id, label and covariates")
    design = traits.Str(argstr="--design %s", desc="Columns 'label,age,sex', a formula '~ label + age', or 'none'")
    contrast = traits.Str(argstr="--contrast %s", desc="'patient-control', a design column or weights")
    label_column = traits.Str(argstr="--label-column %s", desc="Column with the group of each map")
    mask = File(exists=True, argstr="--mask %s", desc="Analysis mask on the maps' grid")
    atlas = traits.Str(argstr="--atlas %s", desc="Atlas for the region table")
    labels = File(exists=True, argstr="--labels %s", desc="Label table of a user atlas image")
    n_perm = traits.Int(argstr="--n-perm %d", desc="Permutations for FWE p-values")
    seed = traits.Int(argstr="--seed %d", desc="Random seed of the permutations")
    alpha = traits.Float(argstr="--alpha %g", desc="Significance level")
    one_sided = flag("--one-sided", "Test contrast > 0 only")
    mirror = flag("--mirror", "Mirror a one-hemisphere model's maps across x = 0")
    figures = flag("--figures", "PNG mosaics and glass brains", "--no-figures")
    space = traits.Str(argstr="--space %s", desc="Template space name used in the output names")
    batch_size = traits.Int(argstr="--batch-size %d", desc="Maps per streamed batch")
    memory_mb = traits.Float(argstr="--memory-mb %g", desc="Memory budget of the permutation accumulators (MB)")
    volumes = traits.Str(argstr="--volumes %s", desc="Column with preprocessed T1 images for regional volumetry")
    num_threads = threads_input("--n-threads %d")


class GroupMapOutputSpec(TraitedSpec):
    out_dir = Directory(exists=True, desc="Output folder")
    group_dir = Directory(exists=True, desc="OUT/group")
    summary = File(exists=True, desc="group/group_map.json")
    stat_maps = OutputMultiObject(File(exists=True), desc="group/*_statmap.nii.gz (means, sd, counts, t, z, p, q, effect)")
    mask_file = File(desc="The analysis mask")


class GroupMap(NeurointerpCommand):
    """``neurointerp group-map``: group statistics of attribution or Jacobian maps.

    ``in_files`` (a list, e.g. Saliency's ``maps``) are linked into ``input_maps/`` in the
    node's directory and given to the command as a folder.
    """

    _cmd = "neurointerp group-map"
    input_spec = GroupMapInputSpec
    output_spec = GroupMapOutputSpec
    _links = "input_maps"

    def _format_arg(self, name, spec, value):
        if name == "in_files":
            return os.path.join(os.getcwd(), self._links)
        return super()._format_arg(name, spec, value)

    def _run_interface(self, runtime, correct_return_codes=(0,)):
        if isdefined(self.inputs.in_files):
            folder = os.path.join(runtime.cwd, self._links)
            os.makedirs(folder, exist_ok=True)
            names = [os.path.basename(p) for p in self.inputs.in_files]
            if len(set(names)) != len(names):
                raise ValueError(f"GroupMap in_files: file names must be unique (BIDS names carry the participant id): {names}")
            for old in os.listdir(folder):
                os.unlink(os.path.join(folder, old))
            for path, name in zip(self.inputs.in_files, names):
                os.symlink(os.path.abspath(path), os.path.join(folder, name))
        return super()._run_interface(runtime, correct_return_codes)

    def _outputs_in(self, out_dir):
        group = os.path.join(out_dir, "group")
        masks = self._glob(group, "*_desc-analysis_mask.nii.gz")
        return {
            "group_dir": group if os.path.isdir(group) else traits.Undefined,
            "summary": self._file(group, "group_map.json"),
            "stat_maps": self._glob(group, "*_statmap.nii.gz"),
            "mask_file": masks[0] if masks else traits.Undefined,
        }
