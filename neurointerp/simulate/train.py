"""Training of the cycle-consistent simulators against a frozen classifier (§3; ``simulate train``).

:func:`fit_simulator` works on arrays in memory; :func:`train_simulator` reads a cohort and a
classifier checkpoint and writes a simulator checkpoint.

Each step draws a batch of controls X (task 0, inject: G1) and patients Y (task 1, remove: G2)
and runs them through the joint simulator in *one* batch, then the simulated images through it
again with the opposite task (the cycle)::

    X_hat, Y_hat = G([X, Y], [0, 1]);   X_cyc, Y_cyc = G([X_hat, Y_hat], [1, 0])
    E = E_logit(P(X), P(X_hat), P(Y), P(Y_hat); delta) + lambda_cycle E_cycle + lambda_phi E_phi

The classifier P is frozen (eval mode, no parameter updates); gradients flow through it to G.
``lambda_identity`` (default 0, not in the paper) optionally adds ``lambda_identity * mean |X_hat - X|``,
asking for the smallest change that achieves the logit shift.

``population_field`` (default on in warp mode, not in the paper) adds a learned template-space
field per task to the U-Net's output (see :mod:`neurointerp.simulate.unet`); it is trained with
its own Adam learning rate ``population_lr`` (voxels per step; default 0.01), since it is a
displacement in voxels rather than a network weight. ``interpolation`` (``linear``, the paper's,
or ``cubic``) is the spatial transformer's resampling (:func:`neurointerp.simulate.warp.warp`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from neurointerp.errors import InputError
from neurointerp.runs.context import runs_as, simulator_arguments


def classifier_logit(model):
    """``x -> logit`` of the positive class for a binary classifier ``(N, 1)`` output."""

    def fn(x):
        return model(x)[:, 0]

    return fn


def _check_options(mode: str, interpolation: str, lr: float, population_lr: float) -> None:
    """One-line errors for ``--mode``, ``--interpolation``, ``--lr`` and ``--population-lr``."""
    from neurointerp.simulate.unet import MODES
    from neurointerp.simulate.warp import INTERPOLATIONS

    if mode not in MODES:
        raise InputError(f"--mode {mode}: choose {' or '.join(MODES)}")
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"--interpolation {interpolation}: choose {' or '.join(INTERPOLATIONS)}")
    if lr <= 0 or population_lr <= 0:
        raise InputError(f"--lr {lr} / --population-lr {population_lr}: must be positive")


def balanced_batches(idx, batch_size: int, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """One epoch of ``(class-0 rows, class-1 rows)`` pairs, ``batch_size // 2`` of each per step.

    ``idx``: the row indices of the two classes. The larger class sets the number of steps; the
    smaller one is cycled (each pass in a new random order). Used by the simulator and ICAM.
    """
    half = max(1, batch_size // 2)
    steps = int(np.ceil(max(len(i) for i in idx) / half))
    perm = [rng.permutation(np.resize(rng.permutation(i), steps * half)) for i in idx]
    return [(perm[0][s * half : (s + 1) * half], perm[1][s * half : (s + 1) * half]) for s in range(steps)]


def fit_simulator(
    x,
    task,
    classifier,
    *,
    mode: str = "warp",
    delta: float = 5.0,
    lambda_smooth: float = 10.0,
    lambda_cycle: float = 1.0,
    lambda_identity: float = 0.0,
    experts: int = 3,
    condconv: bool = True,
    channels: Sequence[int] | None = None,
    fc: int | None = None,
    kernel_size: int = 3,
    epochs: int = 20,
    batch_size: int = 16,
    lr: float = 1e-3,
    population_field: bool = True,
    population_lr: float = 1e-2,
    interpolation: str = "linear",
    seed: int = 0,
    device=None,
    progress: bool = False,
):
    """Train a :class:`~neurointerp.simulate.unet.Simulator` on model inputs ``x`` ``(N, 1, *S)``.

    ``task``: ``(N,)`` 0 for controls (to inject the disease into), 1 for patients (to remove it
    from). ``classifier``: the frozen binary classifier (``model(x)[:, 0]`` is the logit).
    Returns ``(simulator in eval mode, history: list of per-epoch dicts)``.
    """
    import torch

    from neurointerp.simulate.losses import cycle_loss, logit_shift_loss, smoothness_loss
    from neurointerp.simulate.unet import Simulator

    if epochs < 1:
        raise InputError(f"--epochs {epochs}: must be at least 1")
    if batch_size < 2:
        raise InputError(f"--batch-size {batch_size}: must be at least 2")
    if delta <= 0:
        raise InputError(f"--delta {delta}: must be positive")
    _check_options(mode, interpolation, lr, population_lr)
    device = device or torch.device("cpu")
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    task = np.asarray(task).astype(int)
    idx = [np.flatnonzero(task == k) for k in (0, 1)]
    if min(len(i) for i in idx) == 0:
        raise InputError("the simulator needs images of both classes (controls to inject, patients to remove)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sim = Simulator(tuple(x.shape[2:]), mode=mode, channels=channels, fc=fc, kernel_size=kernel_size, experts=experts, condconv=condconv, population_field=population_field and mode == "warp", interpolation=interpolation).to(device)
    classifier = classifier.to(device).eval()
    for p in classifier.parameters():
        p.requires_grad_(False)
    logit = classifier_logit(classifier)
    with torch.no_grad():
        raw = torch.cat([logit(x[i : i + 64].to(device)).cpu() for i in range(0, len(x), 64)])
    groups = [{"params": [p for n, p in sim.named_parameters() if n != "population"], "lr": lr}]
    if sim.population is not None:
        groups.append({"params": [sim.population], "lr": population_lr})
    opt = torch.optim.Adam(groups)
    history = []
    from neurointerp.progress import track

    epochs_iter = track(range(epochs), description="simulate train", total=epochs) if progress else range(epochs)
    for epoch in epochs_iter:
        sim.train()
        batches = balanced_batches(idx, batch_size, rng)
        steps = len(batches)
        sums = {"loss": 0.0, "logit": 0.0, "cycle": 0.0, "smooth": 0.0, "shift_inject": 0.0, "shift_remove": 0.0}
        for b0, b1 in batches:
            b = np.concatenate([b0, b1])
            xb = x[b].to(device)
            tb = torch.as_tensor(task[b], dtype=torch.float32, device=device)
            rb = raw[b].to(device)
            simulated, f1 = sim(xb, tb)
            cycled, f2 = sim(simulated, 1.0 - tb)
            p_sim = logit(simulated)
            l_logit = logit_shift_loss(rb, p_sim, tb, delta)
            l_cycle = cycle_loss(cycled, xb)
            l_smooth = smoothness_loss(f1) + smoothness_loss(f2) if f1 is not None else torch.zeros((), device=device)
            loss = l_logit + lambda_cycle * l_cycle + lambda_smooth * l_smooth
            if lambda_identity > 0:
                loss = loss + lambda_identity * (simulated - xb).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                shift = (p_sim - rb).detach()
                sums["shift_inject"] += float(shift[tb == 0].mean())
                sums["shift_remove"] += float(shift[tb == 1].mean())
            sums["loss"] += float(loss.detach())
            sums["logit"] += float(l_logit.detach())
            sums["cycle"] += float(l_cycle.detach())
            sums["smooth"] += float(l_smooth.detach())
        history.append({"epoch": epoch + 1, **{k: v / steps for k, v in sums.items()}})
    sim.eval()
    return sim, history


def _load_arrays(cohort, clf, image_column: str):
    """Images of a cohort on the classifier's grid -> model inputs ``(N, 1, *model_shape)`` (CPU)."""
    from neurointerp.io import load_image

    arrays = []
    for path in cohort.images:
        vol = load_image(path, ndim=clf.spec.ndim)
        clf.spec.check_grid(vol.shape, vol.affine, where=str(path))
        arrays.append(vol.data)
    return clf.spec.prepare(np.stack(arrays))


def tasks_from_labels(labels, classes: list[str], where: str) -> np.ndarray:
    """Cohort labels -> task: the classifier's negative class 0 (inject), positive class 1 (remove)."""
    labels = [str(v) for v in labels]
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise InputError(f"{where}: label {unknown[0]!r} is not a class of the classifier ({', '.join(classes)})")
    return np.array([classes.index(v) for v in labels], dtype=int)


@runs_as("simulate train", adapt=simulator_arguments)
def train_simulator(
    cohort: str | os.PathLike,
    classifier: str | os.PathLike,
    out: str | os.PathLike,
    *,
    mode: str = "warp",
    image_column: str = "image",
    label_column: str = "label",
    delta: float = 5.0,
    lambda_smooth: float = 10.0,
    lambda_cycle: float = 1.0,
    lambda_identity: float = 0.0,
    experts: int = 3,
    condconv: bool = True,
    channels: Sequence[int] | None = None,
    fc: int | None = None,
    kernel_size: int = 3,
    epochs: int = 20,
    batch_size: int = 16,
    lr: float = 1e-3,
    population_field: bool = True,
    population_lr: float = 1e-2,
    interpolation: str = "linear",
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    force: bool = False,
    allow_unvalidated: bool = False,
) -> Path:
    """Train the simulators of ``classifier`` (a binary ``train`` checkpoint) on ``cohort``.

    Writes ``OUT/simulator.pt`` (self-describing, see :mod:`neurointerp.simulate.checkpoint`),
    ``OUT/history.tsv`` and ``OUT/simulator.json`` (provenance); returns the checkpoint path.
    Same arguments as ``neurointerp simulate train``.
    """
    params = {k: v for k, v in locals().items() if k not in ("force",)}
    import pandas as pd

    from neurointerp.io import prepare_output_dir, provenance, read_cohort, sha256, write_json, write_table
    from neurointerp.models.checkpoint import load_checkpoint
    from neurointerp.simulate.checkpoint import save_simulator, simulator_dict
    from neurointerp.train.device import resolve_device, set_threads

    _check_options(mode, interpolation, lr, population_lr)  # before anything is read or written
    set_threads(threads)
    dev = resolve_device(device)
    clf = load_checkpoint(classifier, device=str(dev))
    from neurointerp.models.skill import require_skill  # skill gate (issue #21)
    require_skill(clf, allow_unvalidated, command="simulate train", path=classifier)
    if clf.task != "binary":
        raise InputError(f"{classifier}: the simulator needs a binary classifier (this one is {clf.task})")
    coh = read_cohort(cohort, image_column=image_column, label_column=label_column)
    task = tasks_from_labels(coh.frame[label_column], clf.classes, str(cohort))
    out = prepare_output_dir(out, force=force)
    x = _load_arrays(coh, clf, image_column)
    sim, history = fit_simulator(
        x, task, clf.model, mode=mode, delta=delta, lambda_smooth=lambda_smooth, lambda_cycle=lambda_cycle, lambda_identity=lambda_identity,
        experts=experts, condconv=condconv, channels=channels, fc=fc, kernel_size=kernel_size,
        epochs=epochs, batch_size=batch_size, lr=lr, population_field=population_field, population_lr=population_lr,
        interpolation=interpolation, seed=seed, device=dev, progress=True,
    )
    clf_sha = sha256(classifier)
    training = {**params, "participant_ids": coh.participant_ids, "n_inject": int((task == 0).sum()), "n_remove": int((task == 1).sum())}
    ckpt = simulator_dict(
        sim,
        clf.spec,
        {"sha256": clf_sha, "path": str(Path(classifier).resolve()), "classes": clf.classes, "space": clf.space},
        training,
        {"history": history},
    )
    path = save_simulator(out / "simulator.pt", ckpt)
    write_table(out / "history.tsv", pd.DataFrame(history), force=True)
    record = provenance("simulate train", params, inputs=[cohort, classifier, *coh.images], seed=seed, ClassifierSha256=clf_sha, Space=clf.space, Tasks={"inject": f"{clf.classes[0]} -> {clf.classes[1]}", "remove": f"{clf.classes[1]} -> {clf.classes[0]}"})
    write_json(out / "simulator.json", record, force=True)
    return path
