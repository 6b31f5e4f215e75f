"""Interfaces to ``neurointerp saliency`` and ``neurointerp group-map``."""

from __future__ import annotations

import os

from nipype.interfaces.base import Directory, File, InputMultiObject, OutputMultiObject, TraitedSpec, isdefined, traits

from neurointerp.interfaces.base import NeurointerpCommand
from neurointerp.interfaces.generate import input_spec
from neurointerp.options.group_map import GroupMapOptions
from neurointerp.options.saliency import SaliencyOptions


SaliencyInputSpec = input_spec(SaliencyOptions, out_source="cohort", out_suffix="saliency")


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
        maps = [p for p in found if "_space-" in os.path.basename(p) and not _resampled(p)]
        return {"maps": sorted(maps), "group_files": self._glob(out_dir, "group/*.nii.gz")}


GroupMapInputSpec = input_spec(
    GroupMapOptions,
    positional=[
        ("maps", traits.Str(argstr="%s", position=0, mandatory=True, xor=["in_files"], desc="Folder of NIfTI maps, a glob pattern, or a CSV/TSV with participant_id and map columns")),
        ("in_files", InputMultiObject(File(exists=True), argstr="%s", position=0, mandatory=True, xor=["maps"], desc="The maps as a list (participant ids from their sub- entities)")),
        ("out_dir", Directory("group_map", usedefault=True, argstr="%s", position=1, hash_files=False, desc="Output folder (default: group_map in the node's working directory)")),
    ],
)


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


def _resampled(path: str) -> bool:
    """A ``--resample-to`` copy (its sidecar says ``ResampledTo``), not a map on the model's grid."""
    import json

    from neurointerp.io import sidecar_path

    try:
        return "ResampledTo" in json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return False
