"""Training VA-GAN (Baumgartner et al. 2018; ``simulate train --method vagan``).

:func:`fit_vagan` trains on arrays in memory; :func:`train_vagan` reads a cohort and writes a checkpoint.

One class direction, as in the paper (AD -> MCI there): images ``x`` of the *source* class are
mapped to ``x + M(x)``, which the critic compares with real images of the other class. Each
generator step follows ``critic_iters`` critic steps (``critic_iters_long`` during the first
``warmup`` generator steps and every ``retune_every``-th, the authors' schedule: 5 / 100 / 25 /
100 there; smaller long phases by default here, for CPU budgets); Adam with betas (0, 0.9) for both
networks, as the authors. A critic step draws a batch of source images and one of other-class
images; a generator step a batch of source images.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError
from neurointerp.runs.context import runs_as, vagan_arguments


class _Cycler:
    """Rows of one class, in a new random order on each pass."""

    def __init__(self, rows, rng):
        self.rows, self.rng, self.order, self.pos = np.asarray(rows), rng, np.array([], dtype=int), 0

    def take(self, k: int) -> np.ndarray:
        out = []
        while len(out) < k:
            if self.pos >= len(self.order):
                self.order, self.pos = self.rng.permutation(self.rows), 0
            m = min(k - len(out), len(self.order) - self.pos)
            out.extend(self.order[self.pos : self.pos + m])
            self.pos += m
        return np.array(out)


def fit_vagan(
    x,
    labels,
    *,
    source: int = 1,
    channels: int = 16,
    critic_channels: int | None = None,
    levels: int = 3,
    lambdas: dict | None = None,
    epochs: int = 30,
    batch_size: int = 16,
    lr: float = 1e-3,
    critic_iters: int = 5,
    critic_iters_long: int = 25,
    warmup: int = 25,
    retune_every: int = 100,
    seed: int = 0,
    device=None,
    progress: bool = False,
):
    """Train VA-GAN on model inputs ``x`` ``(N, 1, *S)`` with binary ``labels`` ``(N,)`` (0/1),
    mapping class ``source`` to the other class.

    An epoch is ``ceil(n_source / batch_size)`` generator steps. ``lambdas`` overrides entries
    of :data:`~neurointerp.simulate.vagan.losses.LAMBDAS` (``map``: L1 of the map, ``gp``: gradient
    penalty). Returns ``(model in eval mode, history: list of per-epoch dicts)``; the history's
    ``wasserstein`` is the critic's estimate ``E[D(other)] - E[D(x + M(x))]`` (falls as the maps
    succeed), ``map_l1`` the mean |M|.
    """
    import torch

    from neurointerp.simulate.vagan import losses as L
    from neurointerp.simulate.vagan.networks import VAGAN

    if epochs < 1:
        raise InputError(f"--epochs {epochs}: must be at least 1")
    if batch_size < 2:
        raise InputError(f"--batch-size {batch_size}: must be at least 2")
    for name, v in (("--critic-iters", critic_iters), ("critic_iters_long", critic_iters_long)):
        if v < 1:
            raise InputError(f"{name} {v}: must be at least 1")
    lam = dict(L.LAMBDAS)
    for k, v in (lambdas or {}).items():
        if k not in lam:
            raise InputError(f"unknown VA-GAN loss weight '{k}' (choose {', '.join(lam)})")
        if v is not None:
            if not v >= 0:
                raise InputError(f"VA-GAN loss weight {k}={v}: must be >= 0")
            lam[k] = float(v)
    labels = np.asarray(labels).astype(int)
    if source not in (0, 1):
        raise InputError(f"VA-GAN source class index {source}: must be 0 or 1")
    src_rows, oth_rows = np.flatnonzero(labels == source), np.flatnonzero(labels == 1 - source)
    if len(src_rows) == 0 or len(oth_rows) == 0:
        raise InputError("VA-GAN needs training images of both classes (found only one class)")
    device = device or torch.device("cpu")
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    try:
        model = VAGAN(tuple(x.shape[2:]), channels=channels, critic_channels=critic_channels, levels=levels).to(device)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    opt_g = torch.optim.Adam(model.gen.parameters(), lr=lr, betas=(0.0, 0.9))
    opt_c = torch.optim.Adam(model.critic.parameters(), lr=lr, betas=(0.0, 0.9))
    src, oth = _Cycler(src_rows, rng), _Cycler(oth_rows, rng)
    steps = int(np.ceil(len(src_rows) / batch_size))
    from neurointerp.progress import track

    history = []
    step = 0
    epochs_iter = track(range(epochs), description="vagan train", total=epochs) if progress else range(epochs)
    for epoch in epochs_iter:
        model.train()
        sums: dict[str, float] = {}
        n_critic_total = 0
        for _ in range(steps):
            n_critic = critic_iters_long if (step < warmup or (retune_every > 0 and step % retune_every == 0)) else critic_iters
            for _ in range(n_critic):
                xs = x[src.take(batch_size)].to(device)
                xo = x[oth.take(batch_size)].to(device)
                with torch.no_grad():
                    fake = xs + model.gen(xs)
                d_real, d_fake = model.critic(xo), model.critic(fake)
                gp = L.gradient_penalty(model.critic, xo, fake)
                loss_c = L.critic_loss(d_real, d_fake) + lam["gp"] * gp
                opt_c.zero_grad(set_to_none=True)
                loss_c.backward()
                opt_c.step()
                n_critic_total += 1
                sums["wasserstein"] = sums.get("wasserstein", 0.0) + float((d_real.mean() - d_fake.mean()).detach())
                sums["gradient_penalty"] = sums.get("gradient_penalty", 0.0) + float(gp.detach())
            xs = x[src.take(batch_size)].to(device)
            m = model.gen(xs)
            adv = L.generator_loss(model.critic(xs + m))
            reg = L.map_l1(m)
            loss_g = adv + lam["map"] * reg
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            step += 1
            for k, v in (("loss_g", loss_g), ("adversarial", adv), ("map_l1", reg)):
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        row = {"epoch": epoch + 1, "generator_steps": step}
        row.update({k: v / (n_critic_total if k in ("wasserstein", "gradient_penalty") else steps) for k, v in sums.items()})
        history.append(row)
    model.eval()
    return model, history


@runs_as("simulate train", adapt=vagan_arguments)
def train_vagan(
    cohort: str | os.PathLike,
    out: str | os.PathLike,
    *,
    source_class: str | None = None,
    image_column: str = "image",
    label_column: str = "label",
    normalize: str = "zscore",
    space: str | None = None,
    channels: int = 16,
    lambdas: dict | None = None,
    epochs: int = 30,
    batch_size: int = 16,
    lr: float = 1e-3,
    critic_iters: int = 5,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    force: bool = False,
) -> Path:
    """Train VA-GAN on a binary cohort; writes ``OUT/vagan.pt``, ``OUT/history.tsv``, ``OUT/vagan.json``.

    ``source_class``: the class whose images are mapped to the other class (default: the second
    of the two labels in sorted order, e.g. ``1`` or ``patient``). The grid is that of the first
    image with the cohort's most common shape; every image must share it. Same arguments as
    ``neurointerp simulate train --method vagan``; returns the checkpoint path.
    """
    params = {k: v for k, v in locals().items() if k != "force"}
    import pandas as pd

    from neurointerp.io import load_image, prepare_output_dir, provenance, read_cohort, write_json, write_table
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.icam.train import _load_arrays, image_ndim, reference_row
    from neurointerp.simulate.vagan.checkpoint import save_vagan, vagan_dict
    from neurointerp.simulate.vagan.losses import LAMBDAS
    from neurointerp.train.device import resolve_device, set_threads

    set_threads(threads)
    dev = resolve_device(device)
    coh = read_cohort(cohort, image_column=image_column, label_column=label_column, min_classes=2)
    classes = coh.classes
    if len(classes) != 2:
        raise InputError(f"{cohort}: column '{label_column}' has {len(classes)} classes ({', '.join(classes[:6])}); VA-GAN maps one class to one other (binary)")
    if source_class is None:
        source_class = classes[1]
    if str(source_class) not in classes:
        raise InputError(f"--source-class {source_class}: not a class of column '{label_column}' ({', '.join(classes)})")
    source = classes.index(str(source_class))
    ref = reference_row(coh)
    ndim = image_ndim(coh.images[ref])
    try:
        first = load_image(coh.images[ref], ndim=ndim)
    except InputError as exc:
        raise InputError(f"{coh.path} row {coh.rows[ref]}: {exc}") from exc
    spec = InputSpec(first.shape, first.affine, space=space or "unknown", normalize=normalize)
    try:
        from neurointerp.simulate.vagan.networks import VAGAN

        VAGAN(first.shape, channels=1)  # grid check before the images are read
    except ValueError as exc:
        raise InputError(f"{coh.images[ref]}: {exc}") from None
    x = _load_arrays(coh, spec)
    labels = np.array([classes.index(str(v)) for v in coh.frame[label_column].astype(str)])
    out = prepare_output_dir(out, force=force)
    model, history = fit_vagan(x, labels, source=source, channels=channels, lambdas=lambdas, epochs=epochs, batch_size=batch_size, lr=lr,
                               critic_iters=critic_iters, seed=seed, device=dev, progress=True)
    lam = {**LAMBDAS, **{k: float(v) for k, v in (lambdas or {}).items() if v is not None}}
    training = {**params, "source_class": str(source_class), "lambdas": lam, "participant_ids": coh.participant_ids,
                "n_per_class": [int((labels == k).sum()) for k in (0, 1)], "ndim": ndim}
    path = save_vagan(out / "vagan.pt", vagan_dict(model, spec, classes, source, training, {"history": history}))
    write_table(out / "history.tsv", pd.DataFrame(history), force=True)
    write_json(out / "vagan.json", provenance("simulate train --method vagan", params, inputs=[cohort, *coh.images], seed=seed, Classes=classes,
                                              SourceClass=str(source_class), TargetClass=classes[1 - source], Space=spec.space, Lambdas=lam), force=True)
    return path
