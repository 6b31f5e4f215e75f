"""Interfaces to ``neurointerp simulate train``, ``simulate apply`` and ``jacobian``."""

from __future__ import annotations

from nipype.interfaces.base import Directory, File, OutputMultiObject, TraitedSpec, traits

from neurointerp.interfaces.base import NeurointerpCommand, out_dir_input
from neurointerp.interfaces.generate import input_spec
from neurointerp.options.jacobian import JacobianOptions
from neurointerp.options.simulate import SimulateApplyOptions, SimulateTrainOptions


SimulateTrainInputSpec = input_spec(
    SimulateTrainOptions,
    positional=[
        ("cohort", File(exists=True, mandatory=True, argstr="%s", position=0, desc="Cohort table (participant_id, image, label) on the classifier's grid")),
        ("classifier", File(exists=True, argstr="%s", position=1, desc="Binary classifier checkpoint from train (kept frozen); not with method icam")),
        ("out_dir", out_dir_input("cohort", "simulator", 2)),
    ],
)


class SimulateTrainOutputSpec(TraitedSpec):
    out_dir = Directory(exists=True, desc="Output folder")
    simulator = File(exists=True, desc="simulator.pt")
    history = File(exists=True, desc="history.tsv")


class SimulateTrain(NeurointerpCommand):
    """``neurointerp simulate train``: the joint inject/remove simulator."""

    _cmd = "neurointerp simulate train"
    input_spec = SimulateTrainInputSpec
    output_spec = SimulateTrainOutputSpec

    def _outputs_in(self, out_dir):
        return {"simulator": self._file(out_dir, "simulator.pt"), "history": self._file(out_dir, "history.tsv")}


SimulateApplyInputSpec = input_spec(
    SimulateApplyOptions,
    positional=[
        ("cohort", File(exists=True, mandatory=True, argstr="%s", position=0, desc="Cohort table on the simulator's grid")),
        ("simulator", File(exists=True, mandatory=True, argstr="%s", position=1, desc="Simulator checkpoint, or the ICAM checkpoint with method icam")),
        ("classifier", File(exists=True, argstr="%s", position=2, desc="The classifier the simulator was trained against; not with method icam")),
        ("out_dir", out_dir_input("cohort", "simulate", 3)),
    ],
)


class SimulateApplyOutputSpec(TraitedSpec):
    out_dir = Directory(exists=True, desc="BIDS derivatives folder")
    logits = File(exists=True, desc="logits.tsv")
    fields = File(desc="fields.tsv (warp simulators): input of Jacobian")
    simulated = OutputMultiObject(File(exists=True), desc="Simulated images")
    field_files = OutputMultiObject(File(exists=True), desc="Displacement fields (warp simulators)")


class SimulateApply(NeurointerpCommand):
    """``neurointerp simulate apply``: simulated, cycled and difference images, fields and logits."""

    _cmd = "neurointerp simulate apply"
    input_spec = SimulateApplyInputSpec
    output_spec = SimulateApplyOutputSpec

    def _outputs_in(self, out_dir):
        simulated = self._glob(out_dir, "sub-*/**/*_desc-inject_T1w.nii.gz") + self._glob(out_dir, "sub-*/**/*_desc-remove_T1w.nii.gz")
        return {
            "logits": self._file(out_dir, "logits.tsv"),
            "fields": self._file(out_dir, "fields.tsv"),
            "simulated": sorted(simulated),
            "field_files": self._glob(out_dir, "sub-*/**/*_xfm.nii.gz"),
        }


JacobianInputSpec = input_spec(JacobianOptions, out_source="in_file", out_suffix="jacobian")


class JacobianOutputSpec(TraitedSpec):
    out_dir = Directory(exists=True, desc="Output folder")
    table = File(exists=True, desc="jacobian.tsv (per-subject summaries)")
    jacobian_files = OutputMultiObject(File(exists=True), desc="Jacobian determinant maps")
    logjacobian_files = OutputMultiObject(File(exists=True), desc="Log-determinant maps")
    group_files = OutputMultiObject(File(exists=True), desc="Group mean maps per direction")


class Jacobian(NeurointerpCommand):
    """``neurointerp jacobian``: Jacobian determinant maps and group means."""

    _cmd = "neurointerp jacobian"
    input_spec = JacobianInputSpec
    output_spec = JacobianOutputSpec

    def _outputs_in(self, out_dir):
        def subject_maps(suffix):
            return sorted(self._glob(out_dir, f"sub-*/**/*_{suffix}.nii.gz") + self._glob(out_dir, f"*_{suffix}.nii.gz"))

        return {
            "table": self._file(out_dir, "jacobian.tsv"),
            "jacobian_files": subject_maps("jacobian"),
            "logjacobian_files": subject_maps("logjacobian"),
            "group_files": self._glob(out_dir, "group/*.nii.gz"),
        }
