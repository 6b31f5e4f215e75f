"""``neurointerp simulate``: cycle-consistent simulator networks (papers/simulator-networks-jacobian.txt §3-4)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from neurointerp.cli._options import int_list as _ints

app = typer.Typer(help="Cycle-consistent simulators that inject/remove the pattern a classifier learned (CondConv U-Net).", no_args_is_help=True)


@app.command("train")
def train(
    cohort: Path = typer.Argument(..., help="Cohort table (participant_id, image, label); images on the classifier's grid."),
    classifier: Path = typer.Argument(..., help="Binary classifier checkpoint from `neurointerp train` (kept frozen)."),
    out: Path = typer.Argument(..., help="Output folder (simulator.pt, history.tsv, simulator.json)."),
    mode: str = typer.Option("warp", help="warp: output a displacement field applied by a spatial transformer (shape change, §3.3); image: output the image directly (intensity change, §4.1)."),
    delta: float = typer.Option(5.0, help="Logit shift threshold delta of eq. (1) (paper: 5 synthetic, 12.5 ADNI)."),
    lambda_smooth: float = typer.Option(0.02, help="Weight lambda_phi of the diffusion smoothness loss on the field (eq. 5; warp mode)."),
    lambda_cycle: float = typer.Option(1.0, help="Weight of the cycle-consistency loss (eq. 2)."),
    lambda_identity: float = typer.Option(0.0, help="Weight of an optional L1 penalty on |X_hat - X| (not in the paper; 0: off)."),
    experts: int = typer.Option(3, help="Experts K per CondConv layer."),
    condconv: bool = typer.Option(True, "--condconv/--no-condconv", help="--no-condconv: two separate conventional-convolution simulators (the paper's ablation)."),
    channels: Optional[str] = typer.Option(None, help="Encoder channels, e.g. 16,32,64,16,16 (default: the paper's 1,2,4,8 in 2D, 16,32,64,16,16 in 3D)."),
    fc: Optional[int] = typer.Option(None, help="Units of the bottleneck fully connected layer (default 64 in 2D, 512 in 3D)."),
    epochs: int = typer.Option(20, help="Training epochs."),
    batch_size: int = typer.Option(16, help="Images per step (half controls, half patients)."),
    lr: float = typer.Option(1e-3, help="Adam learning rate (paper, ADNI: 1e-4 for 45 epochs)."),
    image_column: str = typer.Option("image", help="Column with the image paths."),
    label_column: str = typer.Option("label", help="Column with the class labels (the classifier's classes)."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads (default: SLURM_CPUS_PER_TASK, else torch's default)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder, overwriting files."),
) -> None:
    """Train the joint inject/remove simulator against a frozen binary classifier."""
    from neurointerp.progress import info
    from neurointerp.simulate.train import train_simulator

    path = train_simulator(
        cohort, classifier, out, mode=mode, delta=delta, lambda_smooth=lambda_smooth, lambda_cycle=lambda_cycle,
        lambda_identity=lambda_identity, experts=experts, condconv=condconv, channels=_ints(channels, "--channels"), fc=fc,
        epochs=epochs, batch_size=batch_size, lr=lr, image_column=image_column, label_column=label_column,
        seed=seed, device=device, threads=threads, force=force,
    )
    info(f"wrote {path}")


@app.command("apply")
def apply(
    cohort: Path = typer.Argument(..., help="Cohort table (participant_id, image[, label]); images on the simulator's grid."),
    simulator: Path = typer.Argument(..., help="Simulator checkpoint (simulate train)."),
    classifier: Path = typer.Argument(..., help="The classifier checkpoint the simulator was trained against."),
    out: Path = typer.Argument(..., help="Output folder (BIDS derivatives, logits.tsv, logits.png, fields.tsv)."),
    direction: str = typer.Option("auto", help="auto (controls: inject, patients: remove), inject, remove or both."),
    image_column: str = typer.Option("image", help="Column with the image paths."),
    label_column: str = typer.Option("label", help="Column with the class labels (for --direction auto)."),
    batch_size: int = typer.Option(8, help="Images per forward pass."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, help="Torch CPU threads."),
    array_index: Optional[int] = typer.Option(None, help="SLURM array task index (default: $SLURM_ARRAY_TASK_ID)."),
    array_size: Optional[int] = typer.Option(None, help="SLURM array size (default: $SLURM_ARRAY_TASK_COUNT)."),
    force: bool = typer.Option(False, "--force", help="Recompute and overwrite existing outputs."),
) -> None:
    """Simulate disease injection/removal: simulated, cycle-back and difference images, fields, logits (Fig. 4)."""
    from neurointerp.progress import info
    from neurointerp.simulate.apply import apply_simulator

    table = apply_simulator(
        cohort, simulator, classifier, out, direction=direction, image_column=image_column, label_column=label_column,
        batch_size=batch_size, device=device, threads=threads, array_index=array_index, array_size=array_size, force=force,
    )
    info(f"wrote {table}")
