"""Interfaces to ``neurointerp segment-bg train`` and ``segment-bg apply``."""

from __future__ import annotations

from nipype.interfaces.base import Directory, File, OutputMultiObject, TraitedSpec, traits

from neurointerp.interfaces.base import NeurointerpCommand, NeurointerpInputSpec, flag, gpu_input, out_dir_input, threads_input


class SegmentBgTrainInputSpec(NeurointerpInputSpec):
    cohort = File(exists=True, mandatory=True, argstr="%s", position=0, desc="Cohort table: participant_id, image, tissue labels and brain mask columns")
    out_dir = out_dir_input("cohort", "segmenter", 1)
    image_column = traits.Str(argstr="--image-column %s", desc="Column with the image paths")
    label_column = traits.Str(argstr="--label-column %s", desc="Column with the tissue label volumes")
    mask_column = traits.Str(argstr="--mask-column %s", desc="Column with the brain masks ('none': train on the images as they are)")
    axis = traits.Int(argstr="--axis %d", desc="Voxel axis along which volumes are cut into 2D slices")
    epochs = traits.Int(argstr="--epochs %d", desc="Training epochs")
    batch_size = traits.Int(argstr="--batch-size %d", desc="Slices per step")
    lr = traits.Float(argstr="--lr %g", desc="Learning rate")
    seed = traits.Int(argstr="--seed %d", desc="Random seed")
    num_threads = threads_input()
    use_gpu = gpu_input()


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


class SegmentBgApplyInputSpec(NeurointerpInputSpec):
    model = File(exists=True, mandatory=True, argstr="%s", position=0, desc="Segmenter checkpoint (segment-bg train)")
    cohort = File(exists=True, mandatory=True, argstr="%s", position=1, desc="Cohort table or one NIfTI volume")
    out_dir = out_dir_input("cohort", "segment", 2)
    image_column = traits.Str(argstr="--image-column %s", desc="Column with the image paths")
    label_column = traits.Str(argstr="--label-column %s", desc="Column with true tissue labels (metrics)")
    mask_column = traits.Str(argstr="--mask-column %s", desc="Column with true brain masks (metrics)")
    positioning = traits.Enum("slice", "volume", argstr="--positioning %s", desc="One mask shift per slice or per volume")
    max_shift = traits.Int(argstr="--max-shift %d", desc="Largest mask shift searched (voxels)")
    clip_to_mask = flag("--clip-to-mask", "Label voxels outside the positioned mask as background", "--no-clip-to-mask")
    save_intermediates = flag("--save-intermediates", "Also save gradient images, correlation maps and the masked input")
    batch_size = traits.Int(argstr="--batch-size %d", desc="Slices per forward pass")
    num_threads = threads_input()
    use_gpu = gpu_input()


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
