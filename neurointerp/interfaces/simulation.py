"""Interfaces to ``neurointerp simulate train``, ``simulate apply`` and ``jacobian``."""

from __future__ import annotations

from nipype.interfaces.base import Directory, File, OutputMultiObject, TraitedSpec, traits

from neurointerp.interfaces.base import NeurointerpCommand, NeurointerpInputSpec, flag, gpu_input, out_dir_input, threads_input


class SimulateTrainInputSpec(NeurointerpInputSpec):
    cohort = File(exists=True, mandatory=True, argstr="%s", position=0, desc="Cohort table (participant_id, image, label) on the classifier's grid")
    classifier = File(exists=True, mandatory=True, argstr="%s", position=1, desc="Binary classifier checkpoint from train (kept frozen)")
    out_dir = out_dir_input("cohort", "simulator", 2)
    mode = traits.Enum("warp", "image", argstr="--mode %s", desc="warp: displacement field; image: image output")
    delta = traits.Float(argstr="--delta %g", desc="Logit shift threshold delta")
    lambda_smooth = traits.Float(argstr="--lambda-smooth %g", desc="Weight of the field smoothness loss")
    lambda_cycle = traits.Float(argstr="--lambda-cycle %g", desc="Weight of the cycle-consistency loss")
    lambda_identity = traits.Float(argstr="--lambda-identity %g", desc="Weight of an L1 penalty on |X_hat - X|")
    experts = traits.Int(argstr="--experts %d", desc="Experts per CondConv layer")
    condconv = flag("--condconv", "CondConv layers (False: two conventional simulators)", "--no-condconv")
    allow_unvalidated = flag("--allow-unvalidated", "Go on with a model without held-out evidence of skill")  # skill gate (issue #21)
    channels = traits.Str(argstr="--channels %s", desc="Encoder channels, e.g. '16,32,64,16,16'")
    fc = traits.Int(argstr="--fc %d", desc="Units of the bottleneck fully connected layer")
    population_field = flag("--population-field", "Learned template-space field per task added to the U-Net's (False: the paper's U-Net alone)", "--no-population-field")
    population_lr = traits.Float(argstr="--population-lr %g", desc="Adam learning rate of the population field")
    interpolation = traits.Enum("linear", "cubic", argstr="--interpolation %s", desc="Spatial transformer resampling: linear or cubic B-spline")
    epochs = traits.Int(argstr="--epochs %d", desc="Training epochs")
    batch_size = traits.Int(argstr="--batch-size %d", desc="Images per step")
    lr = traits.Float(argstr="--lr %g", desc="Adam learning rate")
    image_column = traits.Str(argstr="--image-column %s", desc="Column with the image paths")
    label_column = traits.Str(argstr="--label-column %s", desc="Column with the class labels")
    seed = traits.Int(argstr="--seed %d", desc="Random seed")
    num_threads = threads_input()
    use_gpu = gpu_input()


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


class SimulateApplyInputSpec(NeurointerpInputSpec):
    cohort = File(exists=True, mandatory=True, argstr="%s", position=0, desc="Cohort table on the simulator's grid")
    simulator = File(exists=True, mandatory=True, argstr="%s", position=1, desc="Simulator checkpoint")
    classifier = File(exists=True, mandatory=True, argstr="%s", position=2, desc="The classifier the simulator was trained against")
    out_dir = out_dir_input("cohort", "simulate", 3)
    direction = traits.Enum("auto", "inject", "remove", "both", argstr="--direction %s", desc="Direction of the simulation")
    image_column = traits.Str(argstr="--image-column %s", desc="Column with the image paths")
    label_column = traits.Str(argstr="--label-column %s", desc="Column with the class labels")
    allow_unvalidated = flag("--allow-unvalidated", "Go on with a model without held-out evidence of skill")  # skill gate (issue #21)
    batch_size = traits.Int(argstr="--batch-size %d", desc="Images per forward pass")
    num_threads = threads_input()
    use_gpu = gpu_input()


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


class JacobianInputSpec(NeurointerpInputSpec):
    in_file = File(exists=True, mandatory=True, argstr="%s", position=0, desc="A displacement field or a table of fields (fields.tsv of SimulateApply)")
    out_dir = out_dir_input("in_file", "jacobian", 1)
    template = File(exists=True, argstr="--template %s", desc="Template image: group maps in its space")
    register = flag("--register", "Align each subject's image to the template with ANTs SyN first")
    inverse = flag("--inverse", "Maps of the inverse mapping (1/det, -log det)")
    field_column = traits.Str(argstr="--field-column %s", desc="Table column with the field paths")
    image_column = traits.Str(argstr="--image-column %s", desc="Table column with each subject's image")
    space = traits.Str(argstr="--space %s", desc="Space name for the group maps")
    clamp = flag("--clamp", "Floor the determinant at 0 and the log at log(0.001), as ANTs", "--no-clamp")
    seed = traits.Int(argstr="--seed %d", desc="Registration random seed")
    num_threads = threads_input()


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
