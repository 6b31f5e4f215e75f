"""Options of ``neurointerp segment-bg train`` and ``segment-bg apply``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from neurointerp.options import common as c
from neurointerp.options.core import Options, arg, flag, opt


@dataclass(frozen=True)
class SegmentBgTrainOptions(Options):
    """Train the 2D U-Net (softmax over 4 classes, Dice loss, SGD defaults of §3.1) on sectioned slices."""

    command: ClassVar[str] = "segment-bg train"

    cohort: Path = c.input_file("Cohort table: participant_id, image, tissue labels (0 bg, 1 WM, 2 GM, 3 CSF) and brain mask columns.", affects=False)
    out: Path = c.output_folder("Output folder (model.pt, model.json, history.tsv).")
    image_column: str = c.column("image", "Column with the image paths (3D NIfTI).")
    label_column: str = c.column("labels", "Column with the tissue label volumes.")
    mask_column: str = c.column("mask", "Column with the brain masks; images are multiplied by them before training (the paper's sectioned images). 'none': train on the images as they are.")
    axis: int = opt(2, "Voxel axis along which volumes are cut into 2D slices.", choices=(0, 1, 2))
    base: int = opt(16, "U-Net channels of the first level (doubled per level).", minimum=1)
    depth: int = opt(3, "U-Net pooling steps.", minimum=1)
    epochs: int = opt(30, "Training epochs.", minimum=1)
    batch_size: int = c.batch_size(5, "Slices per step (paper: 5).", affects=True)
    lr: float = opt(3e-4, "Learning rate (paper: 3e-4).", above=0)
    decay: float = opt(1.5e-6, "Learning-rate decay per step, lr/(1 + decay*t) (paper: 1.5e-6).", minimum=0)
    momentum: float = opt(0.9, "SGD momentum (paper: 0.9).", minimum=0, below=1)
    optimizer: str = opt("sgd", "sgd (paper) or adam.", choices=("sgd", "adam"))
    val_fraction: float = opt(0.2, "Share of the animals held out for validation (paper: 20 %).", minimum=0, below=1)
    gbp_score: str = opt("logit", "Output explained by guided backprop for the shape template: summed tissue logits or probabilities.", choices=("logit", "probability"))
    seed: int = c.seed("Random seed.")
    device: str = c.device()
    threads: Optional[int] = c.threads("Torch CPU threads (default: SLURM_CPUS_PER_TASK, else torch's default).")
    force: bool = c.force()


@dataclass(frozen=True)
class SegmentBgApplyOptions(Options):
    """Segment slice by slice, find the brain by guided backprop + cross-correlation, remove the background, segment again."""

    command: ClassVar[str] = "segment-bg apply"

    model: Path = c.input_file("Segmenter checkpoint (segment-bg train).")
    cohort: Path = c.input_file("Cohort table (participant_id, image[, labels, mask] for metrics) or one NIfTI volume.", affects=False)
    out: Path = c.output_folder("Output folder (BIDS derivatives, metrics.tsv, metrics_summary.tsv, failures.tsv).")
    image_column: str = c.column("image", "Column with the image paths.")
    label_column: str = c.column("labels", "Column with true tissue labels for the metrics (ignored when absent).")
    mask_column: str = c.column("mask", "Column with true brain masks for the metrics (ignored when absent).")
    positioning: str = opt("slice", "slice: one mask shift per slice (paper, 2D); volume: one shift per volume from the summed correlations.", choices=("slice", "volume"))
    max_shift: Optional[int] = opt(None, "Largest mask shift searched, in voxels (default: a quarter of the slice size).", minimum=0)
    gbp_score: Optional[str] = opt(None, "logit or probability (default: as in training).", choices=("logit", "probability"))
    clip_to_mask: bool = flag(True, "Label voxels outside the positioned mask as background in the second pass (else keep the network's labels of the zeroed input).", "--no-clip-to-mask")
    save_intermediates: bool = flag(False, "Also save the gradient image, each enhancement step, the correlation maps and the masked input.")
    batch_size: int = c.batch_size(16, "Slices per forward pass.")
    device: str = c.device()
    threads: Optional[int] = c.threads("Torch CPU threads (default: SLURM_CPUS_PER_TASK, else torch's default).")
    array_index: Optional[int] = c.array_index("SLURM array task index (default: $SLURM_ARRAY_TASK_ID).")
    array_size: Optional[int] = c.array_size("SLURM array size (default: $SLURM_ARRAY_TASK_COUNT).")
    force: bool = c.force(per_subject=True)
