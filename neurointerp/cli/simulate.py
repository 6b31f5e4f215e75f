"""``neurointerp simulate``: generative explanations of a diagnosis.

``--method simulator`` (default): cycle-consistent simulator networks against a frozen classifier
(papers/simulator-networks-jacobian.txt §3-4). ``--method icam``: ICAM, a VAE-GAN that classifies
by itself and explains by translation (papers/icam-vae-gan-attribution.txt §3-4).

The positional arguments depend on the method: the simulator needs the classifier it explains,
ICAM does not (it *is* the classifier)::

    simulate train COHORT CLASSIFIER OUT                 simulate train COHORT OUT --method icam
    simulate apply COHORT SIMULATOR CLASSIFIER OUT       simulate apply COHORT ICAM OUT --method icam

so the arguments are one variadic list whose length is checked against ``--method`` (the existing
simulator usage is unchanged; a two-path ``train`` or three-path ``apply`` without ``--method icam``
is refused with a hint, as is an ICAM checkpoint given to the simulator path).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from neurointerp.cli._options import int_list as _ints

app = typer.Typer(help="Generative explanations: cycle-consistent simulators (CondConv U-Net) against a classifier, or ICAM (--method icam), which classifies by itself.", no_args_is_help=True)

METHODS = ("simulator", "icam")


USAGE = {
    ("train", "simulator"): "COHORT CLASSIFIER OUT",
    ("train", "icam"): "COHORT OUT",
    ("apply", "simulator"): "COHORT SIMULATOR CLASSIFIER OUT",
    ("apply", "icam"): "COHORT ICAM OUT",
}


def _split_paths(paths: List[Path], method: str, command: str) -> List[Path]:
    """Check the number of positional paths for ``method`` (one-line errors with the usage)."""
    from neurointerp.errors import InputError

    if method not in METHODS:
        raise InputError(f"--method {method}: choose {' or '.join(METHODS)}")
    usage = USAGE[(command, method)]
    if len(paths) != len(usage.split()):
        other = "icam" if method == "simulator" else "simulator"
        alt = USAGE[(command, other)]
        hint = f"; --method {other} takes {alt}" if len(paths) == len(alt.split()) else ""
        raise InputError(f"simulate {command} --method {method} takes {usage}; got {len(paths)} path{'s' if len(paths) != 1 else ''}{hint}")
    return list(paths)


def _icam_only(method: str, **given) -> None:
    from neurointerp.errors import InputError

    if method != "icam":
        used = [k for k, v in given.items() if v is not None]
        if used:
            raise InputError(f"--{used[0].replace('_', '-')} applies to --method icam only")


@app.command("train")
def train(
    paths: List[Path] = typer.Argument(..., metavar="COHORT [CLASSIFIER] OUT", help="simulator: COHORT CLASSIFIER OUT -- cohort table (participant_id, image, label) on the classifier's grid, binary classifier checkpoint from `neurointerp train` (kept frozen), output folder (simulator.pt, history.tsv, simulator.json). icam: COHORT OUT -- a binary cohort on one grid, output folder (icam.pt, history.tsv, icam.json)."),
    method: str = typer.Option("simulator", help="simulator (cycle-consistent simulators against CLASSIFIER) or icam (ICAM VAE-GAN, its own classifier)."),
    mode: str = typer.Option("warp", help="simulator: warp: output a displacement field applied by a spatial transformer (shape change, §3.3); image: output the image directly (intensity change, §4.1)."),
    delta: float = typer.Option(5.0, help="simulator: Logit shift threshold delta of eq. (1) (paper: 5 synthetic, 12.5 ADNI)."),
    lambda_smooth: float = typer.Option(10.0, help="simulator: Weight lambda_phi of the diffusion smoothness loss on the field (eq. 5; warp mode), which is averaged over voxels here, so the weight does not depend on the grid (the paper's 0.02 multiplies a sum over its 64^3 grid, about 5000 here). 10 recovers the planted deformations of `synth brain`; in benchmarks/simulate.py, 1 gives rougher maps and at 1500 most logits no longer move by delta."),
    lambda_cycle: float = typer.Option(1.0, help="simulator: Weight of the cycle-consistency loss (eq. 2)."),
    lambda_identity: float = typer.Option(0.0, help="simulator: Weight of an optional L1 penalty on |X_hat - X| (not in the paper; 0: off)."),
    experts: int = typer.Option(3, help="simulator: Experts K per CondConv layer."),
    condconv: bool = typer.Option(True, "--condconv/--no-condconv", help="simulator: --no-condconv: two separate conventional-convolution simulators (the paper's ablation)."),
    channels: Optional[str] = typer.Option(None, help="simulator: encoder channels, e.g. 16,32,64,16,16 (default: the paper's 1,2,4,8 in 2D, 16,32,64,16,16 in 3D). icam: one number, the base width (default 8; the authors' code: 16)."),
    fc: Optional[int] = typer.Option(None, help="simulator: Units of the bottleneck fully connected layer (default 64 in 2D, 512 in 3D)."),
    population_field: bool = typer.Option(True, "--population-field/--no-population-field", help="simulator, warp mode: add a learned template-space field per task, shared by all subjects, to the U-Net's field (not in the paper; recovers the classifier's localised pattern where the U-Net alone drifts to near-global fields, see README). --no-population-field: the paper's U-Net alone."),
    population_lr: float = typer.Option(0.01, help="simulator: Adam learning rate of the population field (voxels per step)."),
    interpolation: str = typer.Option("linear", help="simulator, warp mode: resampling of the spatial transformer, linear (the paper's) or cubic (B-spline: sub-voxel displacements do not blur the image, so the simulator cannot move the logit by blur; about 2x slower; see README)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs (default 20 for simulator, 30 for icam; the ICAM authors: 300)."),
    batch_size: int = typer.Option(16, help="Images per step (half of each class)."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate (default 1e-3; paper, ADNI: 1e-4 for 45 epochs; ICAM authors: 1e-4)."),
    latent_shape: Optional[str] = typer.Option(None, help="icam: attribute latent grid, e.g. 8,8 (2D) or 8,10,8 (3D, the paper's 640 values); default 2D min(8, side/4), 3D side/16."),
    normalize: Optional[str] = typer.Option(None, help="icam: intensity normalisation per image, none or zscore (default zscore, over non-zero voxels)."),
    space: Optional[str] = typer.Option(None, help="icam: name of the images' space, recorded in the checkpoint and output names."),
    max_draws: Optional[int] = typer.Option(None, help="icam: rejection-sampling draws per vector during training before falling back to the paired image's attribute (default 64)."),
    lambda_content_adv: Optional[float] = typer.Option(None, help="icam: weight of the class-adversarial content loss, Eq. 1 (default 1)."),
    lambda_domain_adv: Optional[float] = typer.Option(None, help="icam: weight of the domain real/fake loss (default 1)."),
    lambda_domain_bce: Optional[float] = typer.Option(None, help="icam: weight of the domain discriminator's class loss on generated images (default 5)."),
    lambda_attr_bce: Optional[float] = typer.Option(None, help="icam: weight of the attribute-space classification BCE (default 10)."),
    lambda_kl: Optional[float] = typer.Option(None, help="icam: weight of the attribute KL loss (default 0.01)."),
    lambda_fa_map: Optional[float] = typer.Option(None, help="icam: weight of the FA-map L1 loss |translated - input| (default 10)."),
    lambda_latent: Optional[float] = typer.Option(None, help="icam: weight of the latent regression loss, Eq. 2 (default 1)."),
    lambda_rec: Optional[float] = typer.Option(None, help="icam: weight of reconstruction and cycle L1 + L2, Eqs. 3-4 (default 100)."),
    lambda_content_l2: Optional[float] = typer.Option(None, help="icam: weight of the content-latent L2 regularisation (default 0.01)."),
    image_column: str = typer.Option("image", help="Column with the image paths."),
    label_column: str = typer.Option("label", help="Column with the class labels (the classifier's classes)."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads (default: SLURM_CPUS_PER_TASK, else torch's default)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder, overwriting files."),
    allow_unvalidated: bool = typer.Option(False, "--allow-unvalidated", help="simulator: go on with a classifier that has no held-out evidence of skill (refused by default: its maps would explain noise)."),  # skill gate (issue #21)
) -> None:
    """Train the joint inject/remove simulator against a frozen binary classifier, or ICAM (--method icam)."""
    from neurointerp.progress import info

    lambdas = dict(
        content_adv=lambda_content_adv, domain_adv=lambda_domain_adv, domain_bce=lambda_domain_bce, attr_bce=lambda_attr_bce,
        kl=lambda_kl, fa_map=lambda_fa_map, latent=lambda_latent, rec=lambda_rec, content_l2=lambda_content_l2,
    )
    _icam_only(method, latent_shape=latent_shape, normalize=normalize, space=space, max_draws=max_draws, **{f"lambda_{k}": v for k, v in lambdas.items()})
    if method == "icam":
        from neurointerp.errors import InputError
        from neurointerp.simulate.icam.train import train_icam

        cohort, out = _split_paths(paths, method, "train")
        ch = _ints(channels, "--channels")
        if ch is not None and len(ch) != 1:
            raise InputError(f"--channels {channels}: --method icam takes one number (the base width)")
        path = train_icam(
            cohort, out, image_column=image_column, label_column=label_column, normalize=normalize or "zscore", space=space,
            latent_shape=_ints(latent_shape, "--latent-shape"), channels=ch[0] if ch else 8, lambdas=lambdas,
            epochs=30 if epochs is None else epochs, batch_size=batch_size, lr=1e-3 if lr is None else lr,
            max_draws=64 if max_draws is None else max_draws, seed=seed, device=device, threads=threads, force=force,
        )
        info(f"wrote {path}")
        return
    from neurointerp.simulate.train import train_simulator

    cohort, classifier, out = _split_paths(paths, method, "train")
    _not_icam(classifier)
    epochs = 20 if epochs is None else epochs
    lr = 1e-3 if lr is None else lr
    path = train_simulator(
        cohort, classifier, out, mode=mode, delta=delta, lambda_smooth=lambda_smooth, lambda_cycle=lambda_cycle,
        lambda_identity=lambda_identity, experts=experts, condconv=condconv, channels=_ints(channels, "--channels"), fc=fc,
        epochs=epochs, batch_size=batch_size, lr=lr, population_field=population_field, population_lr=population_lr,
        interpolation=interpolation, image_column=image_column, label_column=label_column, seed=seed, device=device, threads=threads, force=force,
        allow_unvalidated=allow_unvalidated,
    )
    info(f"wrote {path}")


@app.command("apply")
def apply(
    paths: List[Path] = typer.Argument(..., metavar="COHORT MODEL [CLASSIFIER] OUT", help="simulator: COHORT SIMULATOR CLASSIFIER OUT -- cohort table (participant_id, image[, label]) on the simulator's grid, simulator checkpoint (simulate train), the classifier it was trained against, output folder (BIDS derivatives, logits.tsv, logits.png, fields.tsv). icam: COHORT ICAM OUT -- no classifier: ICAM classifies by itself (BIDS derivatives, predictions.tsv)."),
    method: str = typer.Option("simulator", help="simulator or icam (must match the checkpoint)."),
    direction: str = typer.Option("auto", help="simulator: auto (controls: inject, patients: remove), inject, remove or both. icam: auto (into the opposite of the predicted class) or label (opposite of the cohort label)."),
    n_samples: Optional[int] = typer.Option(None, help="icam: attribute vectors drawn per image for the mean and variance FA maps (default 16)."),
    max_draws: Optional[int] = typer.Option(None, help="icam: rejection-sampling draws per vector before giving up (default 1000)."),
    save_samples: Optional[bool] = typer.Option(None, "--save-samples", help="icam: also write every translated image (4D)."),
    seed: Optional[int] = typer.Option(None, help="icam: random seed of the attribute draws (default 0)."),
    image_column: str = typer.Option("image", help="Column with the image paths."),
    label_column: str = typer.Option("label", help="Column with the class labels (for --direction auto)."),
    batch_size: int = typer.Option(8, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads."),
    array_index: Optional[int] = typer.Option(None, help="SLURM array task index (default: $SLURM_ARRAY_TASK_ID)."),
    array_size: Optional[int] = typer.Option(None, help="SLURM array size (default: $SLURM_ARRAY_TASK_COUNT)."),
    force: bool = typer.Option(False, "--force", help="Recompute and overwrite existing outputs."),
    allow_unvalidated: bool = typer.Option(False, "--allow-unvalidated", help="simulator: go on with a classifier that has no held-out evidence of skill (refused by default: its maps would explain noise)."),  # skill gate (issue #21)
) -> None:
    """Simulate disease injection/removal (simulated, cycle-back and difference images, fields, logits; Fig. 4),
    or with --method icam: class probability, mean/variance FA maps and translated images per image."""
    from neurointerp.progress import info

    _icam_only(method, n_samples=n_samples, max_draws=max_draws, save_samples=save_samples, seed=seed)
    if method == "icam":
        from neurointerp.simulate.icam.apply import apply_icam

        cohort, model, out = _split_paths(paths, method, "apply")
        table = apply_icam(
            cohort, model, out, n_samples=16 if n_samples is None else n_samples, direction=direction, image_column=image_column,
            label_column=label_column, max_draws=1000 if max_draws is None else max_draws, save_samples=bool(save_samples),
            seed=0 if seed is None else seed, batch_size=batch_size, device=device, threads=threads,
            array_index=array_index, array_size=array_size, force=force,
        )
        info(f"wrote {table}")
        return
    from neurointerp.simulate.apply import apply_simulator

    cohort, simulator, classifier, out = _split_paths(paths, method, "apply")
    _not_icam(simulator)
    table = apply_simulator(
        cohort, simulator, classifier, out, direction=direction, image_column=image_column, label_column=label_column,
        batch_size=batch_size, device=device, threads=threads, array_index=array_index, array_size=array_size, force=force,
        allow_unvalidated=allow_unvalidated,
    )
    info(f"wrote {table}")


def _not_icam(path: Path) -> None:
    """An ICAM checkpoint given to the simulator path: one line pointing to --method icam."""
    from neurointerp.errors import InputError

    if Path(path).is_file() and Path(path).suffix == ".pt":
        from neurointerp.simulate.icam.checkpoint import FORMAT, checkpoint_format

        if checkpoint_format(path) == FORMAT:
            raise InputError(f"{path}: is an ICAM checkpoint; use --method icam (ICAM needs no classifier argument)")
