"""``neurointerp simulate``: generative explanations of a diagnosis.

``--method simulator`` (default): cycle-consistent simulator networks against a frozen classifier
(papers/simulator-networks-jacobian.txt §3-4). ``--method icam``: ICAM, a VAE-GAN that classifies
by itself and explains by translation (papers/icam-vae-gan-attribution.txt §3-4). The positional
paths depend on the method (see :mod:`neurointerp.options.simulate`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from neurointerp.options.cli import command
from neurointerp.options.simulate import ICAM_LAMBDAS, SimulateApplyOptions, SimulateTrainOptions

app = typer.Typer(help="Generative explanations: cycle-consistent simulators (CondConv U-Net) against a classifier, or ICAM (--method icam), which classifies by itself.", no_args_is_help=True)


def _train(o: SimulateTrainOptions) -> None:
    from neurointerp.progress import info

    paths = o.named_paths()
    r = o.resolved  # an option's value, or the fallback it declares (recorded in the run fingerprint)
    if o.method == "vagan":
        from neurointerp.simulate.vagan.train import train_vagan

        path = train_vagan(
            paths["cohort"], paths["out"], source_class=o.source_class, image_column=o.image_column, label_column=o.label_column,
            normalize=r("normalize"), space=o.space, channels=r("channels")[0],
            lambdas={"map": r("lambda_map"), "gp": r("lambda_gp")}, epochs=r("epochs"), batch_size=o.batch_size,
            lr=r("lr"), critic_iters=r("critic_iters"), seed=o.seed, device=o.device,
            threads=o.threads, force=o.force,
        )
        info(f"wrote {path}")
        return
    if o.method == "icam":
        from neurointerp.simulate.icam.train import train_icam

        lambdas = {k: r(f"lambda_{k}") for k in ICAM_LAMBDAS}
        path = train_icam(
            paths["cohort"], paths["out"], image_column=o.image_column, label_column=o.label_column, normalize=r("normalize"), space=o.space,
            latent_shape=list(o.latent_shape) if o.latent_shape else None, channels=r("channels")[0], lambdas=lambdas,
            epochs=r("epochs"), batch_size=o.batch_size, lr=r("lr"),
            max_draws=r("max_draws"), seed=o.seed, device=o.device, threads=o.threads, force=o.force,
            task=r("task"),
        )
        info(f"wrote {path}")
        return
    from neurointerp.simulate.train import train_simulator

    _not_icam(paths["classifier"])
    path = train_simulator(
        paths["cohort"], paths["classifier"], paths["out"], mode=o.mode, delta=o.delta, lambda_smooth=o.lambda_smooth, lambda_cycle=o.lambda_cycle,
        lambda_identity=o.lambda_identity, experts=o.experts, condconv=o.condconv, channels=list(o.channels) if o.channels else None, fc=o.fc,
        epochs=r("epochs"), batch_size=o.batch_size, lr=r("lr"), population_field=o.population_field,
        population_lr=o.population_lr, interpolation=o.interpolation, image_column=o.image_column, label_column=o.label_column, seed=o.seed,
        device=o.device, threads=o.threads, force=o.force, allow_unvalidated=o.allow_unvalidated,
    )
    info(f"wrote {path}")


def _apply(o: SimulateApplyOptions) -> None:
    from neurointerp.progress import info

    if o.method == "icam":
        from neurointerp.simulate.icam.apply import apply_icam

        info(f"wrote {apply_icam(options=o)}")
        return
    if o.method == "vagan":
        from neurointerp.simulate.vagan.apply import apply_vagan

        info(f"wrote {apply_vagan(options=o)}")
        return
    from neurointerp.simulate.apply import apply_simulator

    _not_icam(o.named_paths()["simulator"])
    info(f"wrote {apply_simulator(options=o)}")


def _not_icam(path: Path) -> None:
    """An ICAM checkpoint given to the simulator path: one line pointing to --method icam."""
    from neurointerp.errors import InputError

    if Path(path).is_file() and Path(path).suffix == ".pt":
        from neurointerp.simulate.icam.checkpoint import FORMAT, checkpoint_format

        fmt = checkpoint_format(path)
        if fmt == FORMAT:
            raise InputError(f"{path}: is an ICAM checkpoint; use --method icam (ICAM needs no classifier argument)")
        if fmt == "neurointerp-vagan":
            raise InputError(f"{path}: is a VA-GAN checkpoint; use --method vagan (VA-GAN needs no classifier argument)")


train = command(SimulateTrainOptions, _train)
app.command("train")(train)
apply = command(SimulateApplyOptions, _apply)
app.command("apply")(apply)
