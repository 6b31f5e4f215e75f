"""Interfaces to ``neurointerp train``, ``confound-test`` and ``evaluate``."""

from __future__ import annotations

from nipype.interfaces.base import Directory, File, InputMultiObject, OutputMultiObject, TraitedSpec, traits

from neurointerp.interfaces.base import NeurointerpCommand, NeurointerpInputSpec, flag, gpu_input, out_dir_input, threads_input


class TrainInputSpec(NeurointerpInputSpec):
    cohort = File(exists=True, mandatory=True, argstr="%s", position=0, desc="Cohort table (participant_id, image, label, ...)")
    out_dir = out_dir_input("cohort", "train", 1)
    task = traits.Enum("auto", "binary", "multiclass", "regression", argstr="--task %s", desc="Prediction task")
    architecture = traits.Str(argstr="--architecture %s", desc="simnet2d, simnet3d, cas2d, cas3d or auto")
    channels = traits.Str(argstr="--channels %s", desc="Channels of the conv stacks, e.g. '16,32,64,16'")
    kernel_size = traits.Int(argstr="--kernel-size %d", desc="Convolution kernel size")
    hidden = traits.Str(argstr="--hidden %s", desc="Hidden fully connected layer sizes, e.g. '64,32'")
    steps = traits.Int(argstr="--steps %d", desc="Optimiser steps per model")  # issue #21
    epochs = traits.Int(argstr="--epochs %d", desc="Instead of steps: passes over the training images")
    batch_size = traits.Int(argstr="--batch-size %d", desc="Global batch size")
    lr = traits.Float(argstr="--lr %g", desc="Adam learning rate")
    lr_schedule = traits.Enum("cosine", "constant", argstr="--lr-schedule %s", desc="Learning-rate schedule after the warm-up")  # issue #21
    warmup = traits.Float(argstr="--warmup %g", desc="Warm-up fraction of the steps")  # issue #21
    validation_fraction = traits.Float(argstr="--validation-fraction %g", desc="Validation split for early stopping")  # issue #21
    patience = traits.Int(argstr="--patience %d", desc="Validation checks without improvement before stopping")  # issue #21
    eval_every = traits.Int(argstr="--eval-every %d", desc="Steps between validation checks")  # issue #21
    confounder = InputMultiObject(traits.Str(), argstr="--confounder %s...", desc="Confounder columns for the confounder-only baseline")  # issue #25
    folds = traits.Int(argstr="--folds %d", desc="Subject-level stratified folds (0: none; needs final)")
    fold = InputMultiObject(traits.Int(), argstr="--fold %d...", desc="Train only these folds")
    final = flag("--final", "Also train a model on all data (model.pt)")
    shift = traits.Float(argstr="--shift %g", desc="Augmentation: random shifts (voxels)")
    rotation = traits.Float(argstr="--rotation %g", desc="Augmentation: random rotations (degrees)")
    flip = flag("--flip", "Augmentation: random left-right flips")
    balance = traits.Int(argstr="--balance %d", desc="Samples per class per epoch (0: each sample once)")
    normalize = traits.Enum("none", "zscore", argstr="--normalize %s", desc="Intensity normalisation per image")
    label_column = traits.Str(argstr="--label-column %s", desc="Column with the class label or regression target")
    image_column = traits.Str(argstr="--image-column %s", desc="Column with the image paths")
    seed = traits.Int(argstr="--seed %d", desc="Random seed")
    num_threads = threads_input()
    use_gpu = gpu_input()


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


class ConfoundTestInputSpec(NeurointerpInputSpec):
    model = File(exists=True, mandatory=True, argstr="%s", position=0, desc="Checkpoint written by train")
    cohort = File(exists=True, mandatory=True, argstr="%s", position=1, desc="Cohort table with the confounder columns")
    out_dir = out_dir_input("cohort", "confound", 2)
    confounder = InputMultiObject(traits.Str(), mandatory=True, argstr="--confounder %s...", desc="Confounder columns")
    layer = traits.Str(argstr="--layer %s", desc="Layer whose features are tested")
    threshold = traits.Float(argstr="--threshold %g", desc="p (or q with fdr) below which a feature is confounded")
    fdr = flag("--fdr", "Benjamini-Hochberg correction across features")
    score = traits.Enum("probability", "logit", argstr="--score %s", desc="The GLM's score s: P(positive class) or the logit")
    drop_missing = flag("--drop-missing", "Drop rows with a missing confounder")
    allow_unvalidated = flag("--allow-unvalidated", "Go on with a model without held-out evidence of skill")  # skill gate (issue #21)
    batch_size = traits.Int(argstr="--batch-size %d", desc="Images per batch")
    num_threads = threads_input()
    use_gpu = gpu_input()


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


class EvaluateInputSpec(NeurointerpInputSpec):
    model = File(exists=True, mandatory=True, argstr="%s", position=0, desc="Checkpoint written by train")
    cohort = File(exists=True, mandatory=True, argstr="%s", position=1, desc="Cohort table of held-out images")
    out_dir = out_dir_input("cohort", "evaluate", 2)
    method = InputMultiObject(traits.Str(), argstr="--method %s...", desc="Attribution methods to evaluate")
    ground_truth = traits.Str(argstr="--ground-truth %s", desc="Ground-truth map or cohort column")
    truth_mask = File(exists=True, argstr="--truth-mask %s", desc="Binary truth mask")
    extra_model = InputMultiObject(File(exists=True), argstr="--extra-model %s...", desc="Retrained checkpoints (retraining robustness)")
    n_subjects = traits.Int(argstr="--n-subjects %d", desc="Subjects evaluated")
    samples = traits.Int(argstr="--samples %d", desc="Infidelity: perturbations per subject")
    target = traits.Str(argstr="--target %s", desc="Class to explain")
    score = traits.Enum("logit", "probability", argstr="--score %s", desc="Score explained")
    allow_train = flag("--allow-train", "Evaluate on participants the model was trained on")
    allow_unvalidated = flag("--allow-unvalidated", "Go on with a model without held-out evidence of skill")  # skill gate (issue #21)
    seed = traits.Int(argstr="--seed %d", desc="Seed of the perturbations")
    num_threads = threads_input()
    use_gpu = gpu_input()


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
