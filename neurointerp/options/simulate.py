"""Options of ``neurointerp simulate train`` and ``simulate apply``.

The positional arguments depend on the method: the simulator needs the classifier it explains,
ICAM does not (it *is* the classifier)::

    simulate train COHORT CLASSIFIER OUT                 simulate train COHORT OUT --method icam
    simulate apply COHORT SIMULATOR CLASSIFIER OUT       simulate apply COHORT ICAM OUT --method icam

so they are one variadic list whose length is checked against ``--method``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from neurointerp.errors import InputError
from neurointerp.options import common as c
from neurointerp.options.core import Options, arg, flag, opt

METHODS = ("simulator", "icam", "vagan")
USAGE = {
    ("train", "simulator"): "COHORT CLASSIFIER OUT",
    ("train", "icam"): "COHORT OUT",
    ("train", "vagan"): "COHORT OUT",
    ("apply", "simulator"): "COHORT SIMULATOR CLASSIFIER OUT",
    ("apply", "icam"): "COHORT ICAM OUT",
    ("apply", "vagan"): "COHORT VAGAN OUT",
}


def split_paths(paths, method: str, command: str) -> dict[str, Path]:
    """Name the positional paths of ``simulate <command> --method <method>`` (one-line errors with the usage)."""
    usage = USAGE[(command, method)]
    names = usage.lower().split()
    if len(paths) != len(names):
        others = [m for m in METHODS if m != method and len(USAGE[(command, m)].split()) == len(paths)]
        hint = "".join(f"; --method {m} takes {USAGE[(command, m)]}" for m in others)
        raise InputError(f"simulate {command} --method {method} takes {usage}; got {len(paths)} path{'s' if len(paths) != 1 else ''}{hint}")
    named = dict(zip(names, map(Path, paths)))
    for key, p in named.items():
        if key != "out" and not p.exists():
            raise InputError(f"{p}: not found ({key.upper()})")
    return named


def _only(opts: Options, methods: tuple[str, ...], names: tuple[str, ...]) -> None:
    """Options that belong to some methods: refused (one line) with another."""
    if opts.method not in methods:  # type: ignore[attr-defined]
        used = [n for n in names if getattr(opts, n) is not None]
        if used:
            raise InputError(f"{opts.label(used[0])} applies to --method {' and '.join(methods)} only")


def _icam_only(opts: Options, names: tuple[str, ...]) -> None:
    _only(opts, ("icam",), names)


def _for(methods: tuple[str, ...], value):
    """The fallback of an option of some methods: ``value`` with those methods, unset with the others."""

    def fallback(o: Options):
        return value if o.method in methods else None  # type: ignore[attr-defined]

    fallback.__doc__ = f"{value!r} with --method {' or '.join(methods)}"
    return fallback


def _loss_weight(method: str, key: str):
    """The fallback of a loss weight: the ``LAMBDAS`` table of that method's losses module."""

    def fallback(o: Options):
        if o.method != method:  # type: ignore[attr-defined]
            return None
        import importlib

        return importlib.import_module(f"neurointerp.simulate.{method}.losses").LAMBDAS[key]

    fallback.__doc__ = f"neurointerp.simulate.{method}.losses.LAMBDAS[{key!r}] with --method {method}"
    return fallback


#: epochs of each method when --epochs is not given
EPOCHS = {"simulator": 20, "icam": 30, "vagan": 30}
#: base width of ICAM's and VA-GAN's networks when --channels is not given (the simulator's depend on 2D/3D)
BASE_WIDTH = {"icam": 8, "vagan": 16}

ICAM_LAMBDAS = ("content_adv", "domain_adv", "domain_bce", "attr_bce", "kl", "fa_map", "latent", "rec", "content_l2")


@dataclass(frozen=True)
class SimulateTrainOptions(Options):
    """Train the joint inject/remove simulator against a frozen binary classifier, or ICAM (--method icam)."""

    command: ClassVar[str] = "simulate train"

    paths: tuple[Path, ...] = arg("simulator: COHORT CLASSIFIER OUT -- cohort table (participant_id, image, label) on the classifier's grid, binary classifier checkpoint from `neurointerp train` (kept frozen), output folder (simulator.pt, history.tsv, simulator.json). icam: COHORT OUT -- a binary cohort on one grid, output folder (icam.pt, history.tsv, icam.json).", variadic=True, metavar="COHORT [CLASSIFIER] OUT", affects=False)
    method: str = opt("simulator", "simulator (cycle-consistent simulators against CLASSIFIER), icam (ICAM VAE-GAN, its own classifier) or vagan (VA-GAN map generator with a WGAN-GP critic; binary cohort, one direction).", choices=METHODS)
    mode: str = opt("warp", "simulator: warp: output a displacement field applied by a spatial transformer (shape change, §3.3); image: output the image directly (intensity change, §4.1).", choices=("warp", "image"))
    delta: float = opt(5.0, "simulator: Logit shift threshold delta of eq. (1) (paper: 5 synthetic, 12.5 ADNI).", above=0)
    lambda_smooth: float = opt(10.0, "simulator: Weight lambda_phi of the diffusion smoothness loss on the field (eq. 5; warp mode), which is averaged over voxels here, so the weight does not depend on the grid (the paper's 0.02 multiplies a sum over its 64^3 grid, about 5000 here). 10 recovers the planted deformations of `synth brain`; in benchmarks/simulate.py, 1 gives rougher maps and at 1500 most logits no longer move by delta.", minimum=0)
    lambda_cycle: float = opt(1.0, "simulator: Weight of the cycle-consistency loss (eq. 2).", minimum=0)
    lambda_identity: float = opt(0.0, "simulator: Weight of an optional L1 penalty on |X_hat - X| (not in the paper; 0: off).", minimum=0)
    experts: int = opt(3, "simulator: Experts K per CondConv layer.", minimum=1)
    condconv: bool = flag(True, "simulator: --no-condconv: two separate conventional-convolution simulators (the paper's ablation).", "--no-condconv")
    channels: Optional[tuple[int, ...]] = opt(None, "simulator: encoder channels, e.g. 16,32,64,16,16 (default: the paper's 1,2,4,8 in 2D, 16,32,64,16,16 in 3D). icam: one number, the base width (default 8; the authors' code: 16). vagan: one number, the base width of the U-Net and critic (default 16, the authors').", parse=c.int_list, cli_type=str,
                                            fallback=lambda o: (BASE_WIDTH[o.method],) if o.method in BASE_WIDTH else None)
    fc: Optional[int] = opt(None, "simulator: Units of the bottleneck fully connected layer (default 64 in 2D, 512 in 3D).", minimum=1)
    population_field: bool = flag(True, "simulator, warp mode: add a learned template-space field per task, shared by all subjects, to the U-Net's field (not in the paper; recovers the classifier's localised pattern where the U-Net alone drifts to near-global fields, see README). --no-population-field: the paper's U-Net alone.", "--no-population-field")
    population_lr: float = opt(0.01, "simulator: Adam learning rate of the population field (voxels per step).", above=0)
    interpolation: str = opt("linear", "simulator, warp mode: resampling of the spatial transformer, linear (the paper's) or cubic (B-spline: sub-voxel displacements do not blur the image, so the simulator cannot move the logit by blur; about 2x slower; see README).", choices=("linear", "cubic"))
    epochs: Optional[int] = opt(None, "Training epochs (default 20 for simulator, 30 for icam and vagan; the ICAM authors: 300). vagan: an epoch is one pass over the source-class images in generator steps.", minimum=1, fallback=lambda o: EPOCHS[o.method])
    batch_size: int = c.batch_size(16, "Images per step (half of each class).", affects=True)
    lr: Optional[float] = opt(None, "Adam learning rate (default 1e-3; paper, ADNI: 1e-4 for 45 epochs; ICAM authors: 1e-4).", above=0, fallback=1e-3)
    latent_shape: Optional[tuple[int, ...]] = opt(None, "icam: attribute latent grid, e.g. 8,8 (2D) or 8,10,8 (3D, the paper's 640 values); default 2D min(8, side/4), 3D side/16.", parse=c.int_list, cli_type=str)
    normalize: Optional[str] = opt(None, "icam, vagan: intensity normalisation per image, none or zscore (default zscore, over non-zero voxels).", choices=("none", "zscore"), fallback=_for(("icam", "vagan"), "zscore"))
    space: Optional[str] = opt(None, "icam, vagan: name of the images' space, recorded in the checkpoint and output names.")
    max_draws: Optional[int] = opt(None, "icam: rejection-sampling draws per vector during training before falling back to the paired image's attribute (default 64).", minimum=1, fallback=_for(("icam",), 64))
    lambda_content_adv: Optional[float] = opt(None, "icam: weight of the class-adversarial content loss, Eq. 1 (default 1).", minimum=0, fallback=_loss_weight("icam", "content_adv"))
    lambda_domain_adv: Optional[float] = opt(None, "icam: weight of the domain real/fake loss (default 1).", minimum=0, fallback=_loss_weight("icam", "domain_adv"))
    lambda_domain_bce: Optional[float] = opt(None, "icam: weight of the domain discriminator's class loss on generated images (default 5).", minimum=0, fallback=_loss_weight("icam", "domain_bce"))
    lambda_attr_bce: Optional[float] = opt(None, "icam: weight of the attribute-space classification BCE (default 10).", minimum=0, fallback=_loss_weight("icam", "attr_bce"))
    lambda_kl: Optional[float] = opt(None, "icam: weight of the attribute KL loss (default 0.01).", minimum=0, fallback=_loss_weight("icam", "kl"))
    lambda_fa_map: Optional[float] = opt(None, "icam: weight of the FA-map L1 loss |translated - input| (default 10).", minimum=0, fallback=_loss_weight("icam", "fa_map"))
    lambda_latent: Optional[float] = opt(None, "icam: weight of the latent regression loss, Eq. 2 (default 1).", minimum=0, fallback=_loss_weight("icam", "latent"))
    lambda_rec: Optional[float] = opt(None, "icam: weight of reconstruction and cycle L1 + L2, Eqs. 3-4 (default 100).", minimum=0, fallback=_loss_weight("icam", "rec"))
    lambda_content_l2: Optional[float] = opt(None, "icam: weight of the content-latent L2 regularisation (default 0.01).", minimum=0, fallback=_loss_weight("icam", "content_l2"))
    task: Optional[str] = opt(None, "icam: auto (binary for 2 classes, multi-class for more), binary, multiclass or regression (the label column holds numbers, e.g. age; the paper's extensions). Default auto.", choices=("auto", "binary", "multiclass", "regression"), fallback=_for(("icam",), "auto"))
    source_class: Optional[str] = opt(None, "vagan: the class whose images the map translates into the other class (default: the second label in sorted order, e.g. 1 or patient).")
    lambda_map: Optional[float] = opt(None, "vagan: weight of the L1 penalty on the map M(x) (default 100, the authors').", minimum=0, fallback=_loss_weight("vagan", "map"))
    lambda_gp: Optional[float] = opt(None, "vagan: weight of the WGAN gradient penalty (default 10).", minimum=0, fallback=_loss_weight("vagan", "gp"))
    critic_iters: Optional[int] = opt(None, "vagan: critic steps per generator step (default 5; 25 in the first 25 steps and every 100th).", minimum=1, fallback=_for(("vagan",), 5))
    image_column: str = c.column("image", "Column with the image paths.")
    label_column: str = c.column("label", "Column with the class labels (the classifier's classes).")
    seed: int = c.seed("Random seed.")
    device: str = c.device()
    threads: Optional[int] = c.threads("Torch CPU threads (default: SLURM_CPUS_PER_TASK, else torch's default).")
    force: bool = c.force()
    allow_unvalidated: bool = c.allow_unvalidated("simulator: go on with a classifier that has no held-out evidence of skill (refused by default: its maps would explain noise).")

    def check(self) -> None:
        _icam_only(self, ("latent_shape", "max_draws", "task") + tuple(f"lambda_{k}" for k in ICAM_LAMBDAS))
        _only(self, ("icam", "vagan"), ("normalize", "space"))
        _only(self, ("vagan",), ("source_class", "lambda_map", "lambda_gp", "critic_iters"))
        if self.allow_unvalidated and self.method != "simulator":
            raise InputError(f"--allow-unvalidated applies to --method simulator only (--method {self.method} trains no classifier of ours to gate)")
        self.named_paths()
        if self.batch_size < 2:
            raise InputError(f"--batch-size {self.batch_size}: must be at least 2")
        if self.method in ("icam", "vagan") and self.channels is not None and len(self.channels) != 1:
            raise InputError(f"--channels {','.join(map(str, self.channels))}: --method {self.method} takes one number (the base width)")

    def named_paths(self) -> dict[str, Path]:
        return split_paths(self.paths, self.method, "train")

    @property
    def out(self) -> Path:
        return self.named_paths()["out"]


@dataclass(frozen=True)
class SimulateApplyOptions(Options):
    """Simulate disease injection/removal (simulated, cycle-back and difference images, fields, logits; Fig. 4),
    or with --method icam: class probability, mean/variance FA maps and translated images per image."""

    command: ClassVar[str] = "simulate apply"

    paths: tuple[Path, ...] = arg("simulator: COHORT SIMULATOR CLASSIFIER OUT -- cohort table (participant_id, image[, label]) on the simulator's grid, simulator checkpoint (simulate train), the classifier it was trained against, output folder (BIDS derivatives, logits.tsv, logits.png, fields.tsv). icam: COHORT ICAM OUT -- no classifier: ICAM classifies by itself (BIDS derivatives, predictions.tsv).", variadic=True, metavar="COHORT MODEL [CLASSIFIER] OUT", affects=False)
    method: str = opt("simulator", "simulator, icam or vagan (must match the checkpoint).", choices=METHODS)
    direction: str = opt("auto", "simulator: auto (controls: inject, patients: remove), inject, remove or both. icam: auto (from the predicted class) or label (from the cohort label), into the most likely other class (binary: the opposite class) unless --target; regression: the source of --target-shift.", choices=("auto", "inject", "remove", "both", "label"))
    target: Optional[str] = opt(None, "icam (binary, multi-class): class to translate every image to (default: the most likely class other than the source class -- predicted, or the label with --direction label; binary: the opposite class).")
    target_value: Optional[float] = opt(None, "icam (regression): target value to translate every image to, in label units (e.g. 70 years).")
    target_shift: Optional[float] = opt(None, "icam (regression): translate to the source value plus this shift, in label units (e.g. 10 = ten years older; source: predicted, or the label with --direction label).")
    n_samples: Optional[int] = opt(None, "icam: attribute vectors drawn per image for the mean and variance FA maps (default 16).", minimum=1, fallback=_for(("icam",), 16))
    max_draws: Optional[int] = opt(None, "icam: rejection-sampling draws per vector before giving up (default 1000).", minimum=1, fallback=_for(("icam",), 1000))
    save_samples: Optional[bool] = flag(None, "icam: also write every translated image (4D).", fallback=_for(("icam",), False))
    seed: Optional[int] = c.seed("icam: random seed of the attribute draws (default 0).", default=None, fallback=_for(("icam",), 0))
    image_column: str = c.column("image", "Column with the image paths.")
    label_column: str = c.column("label", "Column with the class labels (for --direction auto).")
    batch_size: int = c.batch_size(8, "Images per forward pass.")
    device: str = c.device()
    threads: Optional[int] = c.threads("Torch CPU threads.")
    array_index: Optional[int] = c.array_index("SLURM array task index (default: $SLURM_ARRAY_TASK_ID).")
    array_size: Optional[int] = c.array_size("SLURM array size (default: $SLURM_ARRAY_TASK_COUNT).")
    force: bool = c.force(per_subject=True)
    allow_unvalidated: bool = c.allow_unvalidated("simulator: go on with a classifier that has no held-out evidence of skill (refused by default: its maps would explain noise).")

    def check(self) -> None:
        _icam_only(self, ("n_samples", "max_draws", "save_samples", "seed", "target", "target_value", "target_shift"))
        self.named_paths()
        if self.allow_unvalidated and self.method != "simulator":
            raise InputError("--allow-unvalidated applies to --method simulator only")
        if self.method == "simulator" and self.direction == "label":
            raise InputError("--direction label: choose auto, inject, remove or both for --method simulator")
        if self.method == "icam" and self.direction not in ("auto", "label"):
            raise InputError(f"--direction {self.direction}: choose auto or label for --method icam")
        if self.method == "vagan" and self.direction != "auto":
            raise InputError(f"--direction {self.direction}: does not apply to --method vagan (its map goes one way, fixed in training by --source-class)")

    def named_paths(self) -> dict[str, Path]:
        return split_paths(self.paths, self.method, "apply")

    @property
    def out(self) -> Path:
        return self.named_paths()["out"]
