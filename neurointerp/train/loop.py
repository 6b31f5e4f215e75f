"""``neurointerp train``: CNN classifiers with subject-level cross-validation and held-out evidence.

Output folder::

    OUT/train_config.json          settings + hash of the run (lets a folder be resumed/extended)
    OUT/fold-<k>/model.pt          checkpoint of fold k (trained on the other folds)
    OUT/fold-<k>/metrics.tsv       per-check training loss, validation and held-out metrics of fold k
    OUT/fold-<k>/predictions.tsv   held-out predictions of fold k (and of the confounder baseline)
    OUT/model.pt                   with --final: the model trained on all data
    OUT/final-metrics.tsv          with --final: its per-check history
    OUT/metrics.tsv                all history rows (column ``unit``: fold-1.., final; ``epoch`` is
                                   the check number, ``step`` the optimiser steps so far); times:
                                   ``seconds`` (whole check), ``train_seconds`` (training pass),
                                   ``data_seconds`` (of which gathering/augmenting the batches)
    OUT/predictions.tsv            all held-out predictions (ids kept as text)
    OUT/cv_summary.tsv             per-fold balanced accuracy, AUC, accuracy; mean, sd, pooled
    OUT/heldout_evidence.json      held-out evidence per model and pooled over the CV folds
    OUT/training_curve.png         loss and balanced accuracy (r) against the optimiser step
    OUT/model.json                 provenance sidecar (inputs with sha256, parameters, models, evidence)

Training budget: ``steps`` optimiser steps (or ``epochs`` passes) of class-balanced batches, Adam
with a linear warm-up and a cosine decay of the learning rate. Without cross-validation (and
with ``--validation-fraction``), a subject-level stratified validation split of the training
participants is checked every ``eval_every`` steps and gives the model's held-out evidence; with
``patience`` (early stopping, off by default) training stops after that many checks without a
better validation AUC (balanced accuracy; loss for regression), never before half of the steps,
and the weights of the best check are kept.

Held-out evidence (:mod:`neurointerp.train.evidence`) is recorded in every checkpoint
(``metrics.evidence``): a fold model's own held-out fold, the final model's pooled
cross-validation (or its validation split without CV). :mod:`neurointerp.models.skill` reads it.

Repeatability: the initial weights of a unit (fold or final) come from ``(seed, unit)``, the
sample stream from ``(seed, unit)``, augmentation of every optimiser step from
``(seed, unit, step)``. The training state (weights, optimiser, history, best weights so far)
is saved atomically after every check (``--checkpoint-every``); ``--resume`` continues an
interrupted unit from its last saved check and gives the same final weights as an
uninterrupted run. Finished units are skipped when the folder is run again with the same
settings and inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from neurointerp.errors import InputError
from neurointerp.progress import info, track, warn
from neurointerp.train.defaults import (  # chosen by measurement; see that module
    DEFAULT_BATCH_SIZE,
    DEFAULT_LR,
    DEFAULT_PATIENCE,
    DEFAULT_ROTATION,
    DEFAULT_ROUNDS,
    DEFAULT_SHIFT,
    DEFAULT_WARMUP,
    LR_SCHEDULES,
    steps_for,
    validation_for,
)

MARKER = "train_config.json"
STATE = "state.pt"
EVIDENCE = "heldout_evidence.json"
_KILL_ENV = "NEUROINTERP_TRAIN_KILL_AT"  # fault injection for tests: "unit:check:step-in-check"


@dataclass
class Unit:
    """One model to train: a CV fold (trained on the other folds) or the final model."""

    name: str
    index: int  # fold number (1-based), 0 for the final model
    train_idx: np.ndarray  # rows of the model's training participants (fit + validation)
    test_idx: np.ndarray  # CV held-out rows (empty for the final model)
    directory: Path
    model_path: Path
    state_path: Path
    fit_idx: np.ndarray | None = None  # rows the optimiser sees (train_idx without the validation split)
    val_idx: np.ndarray | None = None  # internal validation rows (early stopping, best checkpoint)

    def __post_init__(self):
        if self.fit_idx is None:
            self.fit_idx = self.train_idx
        if self.val_idx is None:
            self.val_idx = np.array([], dtype=int)


@dataclass
class TrainResult:
    out: Path
    models: dict[str, Path] = field(default_factory=dict)
    heldout: dict[str, dict[str, float]] = field(default_factory=dict)
    summary: Any = None  # pandas DataFrame (cv_summary.tsv) or None
    final_model: Path | None = None
    evidence: dict[str, Any] = field(default_factory=dict)  # unit or "cross-validation" -> evidence record


def _derive(*keys: int) -> int:
    """A 63-bit seed from integer keys (independent streams per unit/epoch/purpose)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) % (2**63)


def _kill_point(unit: str, epoch: int, batch: int) -> None:
    spec = os.environ.get(_KILL_ENV)
    if spec and spec == f"{unit}:{epoch}:{batch}":
        os.kill(os.getpid(), signal.SIGKILL)


def resolve_budget(
    n_fit: int,
    n_classes: int,
    steps: int | None,
    epochs: int | None,
    batch_size: int,
    balance: int,
    eval_every: int | None,
) -> tuple[int, int]:
    """``(steps, eval_every)`` of one model: ``steps`` optimiser steps (the run's settings hold the
    budget as it runs, :data:`DEFAULT_STEPS` already filled in), a history row (and a validation
    check) every ``eval_every`` steps. With ``epochs``, an epoch is one pass over the training rows
    (or ``balance`` samples of every class) and a row is written per epoch."""
    if epochs is not None:
        per_epoch = balance * max(n_classes, 1) if balance else n_fit
        spe = max(1, math.ceil(per_epoch / batch_size))
        return int(epochs) * spe, (int(eval_every) if eval_every else spe)
    total = int(steps)
    every = int(eval_every) if eval_every else max(1, math.ceil(total / DEFAULT_ROUNDS))
    return total, min(every, total)


def train(
    cohort: str | os.PathLike,
    out: str | os.PathLike,
    task: str = "auto",
    architecture: str = "auto",
    channels: Sequence[int] | None = None,
    kernel_size: int | None = None,
    hidden: Sequence[int] | None = None,
    activation: str | None = None,
    batch_norm: bool | None = None,
    l2: float | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    lr_schedule: str = "cosine",
    warmup: float = DEFAULT_WARMUP,
    validation_fraction: float | None = None,
    patience: int | None = None,
    eval_every: int | None = None,
    folds: int = 5,
    fold: Sequence[int] | None = None,
    final: bool = False,
    shift: float = DEFAULT_SHIFT,
    rotation: float = DEFAULT_ROTATION,
    flip: bool = False,
    balance: int = 0,
    hemisphere: str = "both",
    normalize: str = "none",
    label_column: str = "label",
    image_column: str = "image",
    positive_class: str | None = None,
    confounder: Sequence[str] = (),
    balance_confounders: bool | None = None,
    space: str | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    checkpoint_every: int = 1,
    preload: bool | None = None,
    resume: bool = False,
    force: bool = False,
) -> TrainResult:
    """Train a CNN with subject-level stratified k-fold CV and/or on all data (``final``).

    Same arguments as ``neurointerp train`` (see its ``--help``). Returns the paths of the
    models written, the cross-validation summary and the held-out evidence.

    Budget: ``steps`` optimiser steps of ``batch_size`` class-balanced samples (default
    :data:`DEFAULT_STEPS`), or ``epochs`` passes over the training rows. ``validation_fraction``
    (default 0.2 without cross-validation, none with it): a subject-level stratified split of each
    model's training participants, checked every ``eval_every`` steps, never trained on: the
    model's held-out evidence without CV. ``patience`` (off by default): early stopping on that
    split, keeping the best check.
    ``confounder``: columns for the confounder-only baseline. ``balance_confounders``: draw each
    class's training samples with overlap weights so that those columns have equal weighted means
    in every class (:mod:`neurointerp.train.confounder_weights`); ``None`` (default): when every
    model keeps enough effective participants per class (:func:`~neurointerp.train.confounder_weights.choose_balancing`).
    """
    import torch

    from neurointerp.models.classifier import architecture_params, default_architecture
    from neurointerp.train.data import load_training_data, read_training_cohort
    from neurointerp.train.device import resolve_device, set_threads
    from neurointerp.train.distributed import env_world, init_distributed

    # ---- argument checks (before any heavy work)
    if steps is not None and epochs is not None:
        raise InputError("give --steps or --epochs, not both")
    if steps is not None and steps < 1:
        raise InputError(f"--steps {steps}: must be at least 1")
    if epochs is not None and epochs < 1:
        raise InputError(f"--epochs {epochs}: must be at least 1")
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    if not (lr > 0 and math.isfinite(lr)):
        raise InputError(f"--lr {lr}: must be a positive number")
    if lr_schedule not in LR_SCHEDULES:
        raise InputError(f"--lr-schedule {lr_schedule}: choose {', '.join(LR_SCHEDULES)}")
    if not (0 <= warmup < 1):
        raise InputError(f"--warmup {warmup}: must be in [0, 1) (a fraction of the steps)")
    if validation_fraction is not None and not (0 <= validation_fraction <= 0.5):
        raise InputError(f"--validation-fraction {validation_fraction}: must be in [0, 0.5]")
    if patience is not None and patience < 1:
        raise InputError(f"--patience {patience}: must be at least 1")
    if eval_every is not None and eval_every < 1:
        raise InputError(f"--eval-every {eval_every}: must be at least 1")
    if folds == 1 or folds < 0:
        raise InputError(f"--folds {folds}: use 0 (no cross-validation, with --final) or at least 2")
    if folds == 0 and not final:
        raise InputError("--folds 0 trains nothing without --final")
    if shift < 0 or rotation < 0:
        raise InputError("--shift and --rotation must be >= 0")
    if balance < 0:
        raise InputError(f"--balance {balance}: must be >= 0")
    if seed < 0:
        raise InputError(f"--seed {seed}: must be >= 0")
    if checkpoint_every < 1:
        raise InputError(f"--checkpoint-every {checkpoint_every}: must be at least 1")
    selected = sorted(set(int(f) for f in fold)) if fold else None
    if selected and folds == 0:
        raise InputError("--fold needs --folds >= 2")
    if selected and (selected[0] < 1 or selected[-1] > folds):
        raise InputError(f"--fold {selected[-1] if selected[-1] > folds else selected[0]}: folds are numbered 1..{folds}")
    if task == "regression" and balance:
        raise InputError("--balance applies to classification only")
    val_fraction = validation_for(folds) if validation_fraction is None else float(validation_fraction)
    if patience is not None and val_fraction == 0:
        raise InputError("--patience needs a validation split (--validation-fraction, default 0.2 with --folds 0)")
    confounders = list(dict.fromkeys(confounder or ()))
    if balance_confounders and not confounders:
        raise InputError("--balance-confounders needs the columns to balance: --confounder NAME")
    if balance_confounders and task == "regression":
        raise InputError("--balance-confounders applies to classification only")

    if architecture != "auto":
        architecture_params(architecture)  # unknown names fail before any image is read
    rank, world, local_rank = env_world()
    dev = resolve_device(device, local_rank=local_rank)
    n_threads = set_threads(threads)
    out = Path(out)
    cohort_table = read_training_cohort(cohort, task=task, label_column=label_column, image_column=image_column)
    conf_table = None
    if confounders:
        from neurointerp.train.baseline import confounder_table

        if label_column in confounders:
            raise InputError(f"--confounder {label_column}: that is the label column")
        conf_table = confounder_table(cohort_table.frame, confounders, cohort_table.rows, str(cohort_table.path))
    data = load_training_data(
        cohort_table,
        task=task,
        positive_class=positive_class,
        normalize=normalize,
        hemisphere=hemisphere,
        space=space,
        preload=preload,
    )
    spec = data.spec
    if dev.type == "cuda" and data.store.preloaded:
        free, _ = torch.cuda.mem_get_info(dev)
        if data.store.nbytes < 0.5 * free:
            data.store.to(dev)
    arch = default_architecture(spec.ndim) if architecture == "auto" else architecture
    arch_params = architecture_params(
        arch,
        ndim=spec.ndim,
        channels=tuple(channels) if channels else None,
        kernel_size=kernel_size,
        hidden=tuple(hidden) if hidden else None,
        activation=activation,
        batch_norm=batch_norm,
        l2=l2,
    )

    # ---- folds and validation splits (identical on every process)
    groups = data.groups
    units_all: list[Unit] = []
    if folds >= 2:
        from neurointerp.train.splits import regression_strata, stratified_group_kfold

        strata = data.targets if data.task != "regression" else regression_strata(data.targets, groups, folds)
        fold_of_row = stratified_group_kfold(groups, strata, folds, seed=seed)
        if data.task != "regression":
            _warn_small_classes(data, fold_of_row, folds)
        for k in range(1, folds + 1):
            d = out / f"fold-{k}"
            train_idx = np.flatnonzero(fold_of_row != k - 1)
            fit_idx, val_idx = _validation_split(data, train_idx, val_fraction, seed, k)
            units_all.append(Unit(f"fold-{k}", k, train_idx, np.flatnonzero(fold_of_row == k - 1), d, d / "model.pt", d / STATE, fit_idx, val_idx))
    if final:
        all_idx = np.arange(len(data))
        fit_idx, val_idx = _validation_split(data, all_idx, val_fraction, seed, 0)
        units_all.append(Unit("final", 0, all_idx, np.array([], dtype=int), out, out / "model.pt", out / "final-state.pt", fit_idx, val_idx))
    to_run = [u for u in units_all if u.index == 0 or selected is None or u.index in selected]
    from neurointerp.train.confounder_weights import choose_balancing

    weighting = choose_balancing(conf_table, {u.name: u.fit_idx for u in units_all}, data.targets, data.classes,
                                 balance_confounders if data.task != "regression" else False)
    weighted = weighting.weighted
    if rank == 0:
        if weighting.message:
            (warn if weighting.is_warning else info)(weighting.message)
        for line in weighting.warnings(data.classes, {u.name for u in to_run}):
            warn(line)

    hyper = dict(
        task=data.task,
        architecture=arch,
        architecture_params={k: (list(v) if isinstance(v, tuple) else v) for k, v in arch_params.items()},
        # the budget as it will run: a folder trained under an earlier default budget (600 steps
        # before 1500) has other settings, so it is neither reused nor resumed under the new one
        steps=int(steps) if steps is not None else steps_for(epochs),
        epochs=None if epochs is None else int(epochs),
        batch_size=int(batch_size),
        lr=float(lr),
        lr_schedule=lr_schedule,
        warmup=float(warmup),
        optimizer="adam",
        sampling=("class-balanced" + (", confounder-weighted" if weighted else "")) if data.task != "regression" else "shuffled",
        validation_fraction=val_fraction,
        patience=int(patience) if patience is not None else DEFAULT_PATIENCE,  # None: no early stopping / selection
        eval_every=None if eval_every is None else int(eval_every),
        shift=float(shift),
        rotation=float(rotation),
        flip=bool(flip),
        balance=int(balance),
        hemisphere=hemisphere,
        normalize=normalize,
        positive_class=data.classes[1] if data.task == "binary" else None,
        label_column=label_column,
        image_column=image_column,
        confounders=confounders,
        balance_confounders=weighted,
        seed=int(seed),
    )
    from neurointerp.io.provenance import sha256

    inputs = [data.cohort.path, *data.cohort.images]
    digest = hashlib.sha256()
    digest.update(json.dumps(hyper, sort_keys=True).encode())
    digest.update(json.dumps(spec.to_dict(), sort_keys=True).encode())
    for p in inputs:
        digest.update(sha256(p).encode())
    config_hash = digest.hexdigest()[:16]

    dist = init_distributed(dev)
    stack = contextlib.ExitStack()
    try:
        if dist.is_main:
            folder = _prepare_out(out, config_hash, hyper, protect=inputs, force=force)
            stack.enter_context(folder.writing())
        dist.barrier()
        settings = dict(
            hyper=hyper,
            arch_params=arch_params,
            config_hash=config_hash,
            n_folds=int(folds),
            checkpoint_every=int(checkpoint_every),
            confounders=conf_table,
            weighting=weighting,
            weighting_choice=weighting.choice(),
        )
        result = TrainResult(out=out)
        for unit in to_run:
            done = _completed(unit, config_hash, folds)
            if done is not None and not force:
                info(f"{unit.name}: already trained with these settings ({unit.model_path}); skipped")
                result.models[unit.name] = unit.model_path
                result.heldout[unit.name] = done
                continue
            heldout = _train_unit(unit, data, settings, dev, dist, resume=resume, force=force)
            result.models[unit.name] = unit.model_path
            result.heldout[unit.name] = heldout
        dist.barrier()
        if dist.is_main:
            params = dict(
                hyper,
                folds=folds,
                fold=selected,
                final=final,
                device=str(dev),
                threads=n_threads,
                world_size=world,
                checkpoint_every=checkpoint_every,
            )
            result.summary, result.evidence = _write_summaries(out, data, units_all, config_hash, folds, params, inputs, conf_table, seed)
            _report_evidence(result.evidence, balanced=weighted)
            if final and "final" not in result.evidence:
                why = ("its evidence is the pooled cross-validation, and not every fold has finished: run the same command again when they have"
                       if folds >= 2 else "it was trained without cross-validation and without a validation split")
                warn(f"final: no held-out evidence of skill ({why}); saliency, confound-test, simulate and evaluate refuse it without --allow-unvalidated")
        result.final_model = out / "model.pt" if final else None
        if dist.is_main and all(_completed(u, config_hash, folds) is not None for u in units_all):
            folder.mark("complete")
        return result
    finally:
        stack.close()
        dist.close()


def _validation_split(data, train_idx: np.ndarray, fraction: float, seed: int, unit_index: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit_idx, val_idx)``: a subject-level stratified validation split of ``train_idx``."""
    if fraction <= 0:
        return train_idx, np.array([], dtype=int)
    from neurointerp.train.splits import regression_strata, stratified_group_split

    groups = [data.groups[i] for i in train_idx]
    if data.task == "regression":
        strata = regression_strata(data.targets[train_idx], groups, 5)
    else:
        strata = data.targets[train_idx]
    mask = stratified_group_split(groups, strata, fraction, seed=_derive(seed, unit_index, 0x7A1) % (2**32))
    if not mask.any() or mask.all():
        raise InputError(f"--validation-fraction {fraction}: too few participants for a validation split ({len(set(groups))} in this model's training set)")
    return train_idx[~mask], train_idx[mask]


def _warn_small_classes(data, fold_of_row, folds) -> None:
    for c, name in enumerate(data.classes):
        n = len({g for g, t in zip(data.groups, data.targets) if t == c})
        if n < folds:
            warn(f"class '{name}' has {n} participants, fewer than the {folds} folds; some folds lack it (AUC undefined there)")


def _prepare_out(out: Path, config_hash: str, hyper: dict, protect: Sequence[Path], force: bool):
    """Claim ``out`` for this training run (the folder rules of every command, :mod:`neurointerp.runs.folder`).

    The same settings and inputs resume (array tasks of --fold, a killed run); other settings are
    refused unless --force, which first deletes every file the earlier run wrote (its fold
    models included, so no stale fold is left); the cohort and its images are never written.
    """
    from neurointerp.io.atomic import write_json
    from neurointerp.runs.folder import claim_folder

    folder = claim_folder(out, "train", {"config_hash": config_hash, **hyper}, protect=protect, outputs=[out / MARKER], force=force)
    if force and folder.resumed:
        folder.restart()  # --force: start over, even with the same settings
    with folder.writing():
        write_json(out / MARKER, {"config_hash": config_hash, "settings": hyper}, force=True)
    return folder


def _completed(unit: Unit, config_hash: str, n_folds: int) -> dict | None:
    """Held-out metrics of a finished unit with the same settings, else ``None``."""
    if not unit.model_path.exists():
        return None
    from neurointerp.models.checkpoint import read_checkpoint

    try:
        ck = read_checkpoint(unit.model_path)
    except InputError:
        return None
    tr = ck.get("training", {})
    if tr.get("config_hash") != config_hash or (unit.index > 0 and tr.get("n_folds") != n_folds):
        return None
    if unit.index > 0 and not (unit.directory / "predictions.tsv").exists():
        return None
    return dict(ck.get("metrics", {}).get("heldout", {}))


def sample_stream(fit_idx: np.ndarray, targets: np.ndarray, n_classes: int, balanced: bool, total: int, generator,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """The first ``total`` training samples of a model, in order.

    Balanced (classification): every class contributes the same number of samples, taken from
    successive random permutations of its members (each member used about equally often) and
    interleaved, so every batch holds the classes in equal shares; with ``weights`` (one per
    ``fit_idx`` row, ``--balance-confounders``) a class's samples are drawn with replacement in
    proportion to them instead. Otherwise: successive random permutations of ``fit_idx``.
    """
    import torch

    def perms(members: np.ndarray, need: int) -> np.ndarray:
        parts, have = [], 0
        while have < need:
            p = members[torch.randperm(len(members), generator=generator).numpy()]
            parts.append(p)
            have += len(p)
        return np.concatenate(parts)[:need]

    if not balanced:
        return perms(fit_idx, total)
    present = [c for c in range(n_classes) if np.any(targets[fit_idx] == c)]
    per = math.ceil(total / max(len(present), 1))
    if weights is None:
        seqs = np.stack([perms(fit_idx[targets[fit_idx] == c], per) for c in present])  # (K, per)
    else:
        from neurointerp.train.confounder_weights import weighted_draws

        of = targets[fit_idx]
        seqs = np.stack([weighted_draws(fit_idx[of == c], weights[of == c], per, generator) for c in present])
    order = seqs.T.reshape(-1)  # c0, c1, ..., c0, c1, ...
    # the class that starts each round of K is random, so no class is always first in a batch
    k = len(present)
    if k > 1:
        rounds = order.reshape(per, k)
        shuffle = torch.argsort(torch.rand(per, k, generator=generator), dim=1).numpy()
        order = np.take_along_axis(rounds, shuffle, axis=1).reshape(-1)
    return order[:total]


def lr_factor(step: int, total: int, schedule: str, warmup: float) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based): linear warm-up over the first
    ``warmup`` fraction of the steps, then constant or a cosine decay to 0 at ``total``."""
    n_warm = int(round(warmup * total))
    if n_warm > 0 and step < n_warm:
        return (step + 1) / n_warm
    if schedule == "constant":
        return 1.0
    progress = (step - n_warm) / max(1, total - n_warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _criterion(task: str):
    import torch

    if task == "binary":
        return torch.nn.BCEWithLogitsLoss()
    if task == "multiclass":
        return torch.nn.CrossEntropyLoss()
    return torch.nn.MSELoss()


def _batch_targets(targets: np.ndarray, idx: np.ndarray, task: str, target_norm: dict | None, device):
    import torch

    y = targets[idx]
    if task == "binary":
        return torch.as_tensor(y, dtype=torch.float32, device=device)[:, None]
    if task == "multiclass":
        return torch.as_tensor(y, dtype=torch.long, device=device)
    y = (y - target_norm["mean"]) / target_norm["sd"]
    return torch.as_tensor(y, dtype=torch.float32, device=device)[:, None]


def _crop_fn(spec):
    return None if spec.hemisphere == "both" else spec.crop_tensor


def evaluate(model, data, idx: np.ndarray, device, task: str, target_norm: dict | None, batch_size: int = 16):
    """Model outputs on rows ``idx`` (no augmentation): ``(loss, scores, metrics)``."""
    import torch

    from neurointerp.models.checkpoint import outputs_to_scores
    from neurointerp.train.metrics import classification_metrics, regression_metrics

    if len(idx) == 0:
        return float("nan"), np.array([]), {}
    crit = _criterion(task)
    crop = _crop_fn(data.spec)
    outs = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(idx), batch_size):
            b = idx[i : i + batch_size]
            x = data.store.get(b).to(device)
            if crop is not None:
                x = crop(x).contiguous()
            outs.append(model(x).float().cpu())
    model.train(was_training)
    out = torch.cat(outs)
    y = _batch_targets(data.targets, idx, task, target_norm, "cpu")
    loss = float(crit(out, y))
    scores = outputs_to_scores(out, task, target_norm)
    if task == "regression":
        metrics = regression_metrics(data.targets[idx], scores)
    else:
        metrics = classification_metrics(data.targets[idx], scores, task)
    return loss, scores, metrics


_SELECTION = {"binary": "AUC", "multiclass": "balanced accuracy", "regression": "-loss"}


def _selection_score(task: str, loss: float, metrics: dict) -> float:
    """What ``--patience`` selects on: the validation AUC (binary), balanced accuracy (multi-class)
    or minus the loss (regression). Not the loss of a classifier: it grows as a model that still
    improves its ranking becomes over-confident (measured; README "train")."""
    if task == "binary":
        v = metrics.get("auc", float("nan"))
    elif task == "multiclass":
        v = metrics.get("balanced_accuracy", float("nan"))
    else:
        v = -loss
    return float(v) if v == v else float("-inf")


def _state_copy(model) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _train_unit(unit: Unit, data, settings: dict, device, dist, resume: bool, force: bool) -> dict:
    import torch

    from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
    from neurointerp.models.classifier import ConvClassifier
    from neurointerp.train.augment import Augmentation, augment_batch
    from neurointerp.train.distributed import shard

    hyper = settings["hyper"]
    seed = hyper["seed"]
    task = data.task
    spec = data.spec
    bs = hyper["batch_size"]
    n_classes = len(data.classes)
    fit_idx, val_idx, test_idx = unit.fit_idx, unit.val_idx, unit.test_idx
    total, every = resolve_budget(len(fit_idx), n_classes, hyper["steps"], hyper["epochs"], bs, hyper["balance"], hyper["eval_every"])
    n_rounds = math.ceil(total / every)
    patience = hyper["patience"]
    target_norm = None
    if task == "regression":
        y = data.targets[fit_idx]
        sd = float(np.std(y))
        target_norm = {"mean": float(np.mean(y)), "sd": sd if sd > 0 else 1.0}

    torch.manual_seed(_derive(seed, unit.index, 0xA11))
    model = ConvClassifier(input_shape=spec.model_shape, n_outputs=data.n_outputs, **settings["arch_params"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=hyper["lr"])
    g_stream = torch.Generator().manual_seed(_derive(seed, unit.index, 2))
    weights = weighting = None
    if hyper.get("balance_confounders"):
        weights, weighting = settings["weighting"].fits[unit.name]
        weighting = {"weighted": True, **settings["weighting_choice"], **weighting}
    elif settings["weighting_choice"] is not None and task != "regression":
        weighting = {"weighted": False, **settings["weighting_choice"]}
    stream = sample_stream(fit_idx, data.targets, n_classes, task != "regression", total * bs, g_stream, weights=weights)
    history: list[dict] = []
    start_round = 0
    best: dict | None = None  # {"score", "round", "step", "model"}: best validation check so far (--patience)
    since_best = 0
    stopped = False
    if unit.state_path.exists() and not force:
        if not resume:
            raise InputError(
                f"{unit.state_path}: {unit.name} was interrupted; use --resume to continue it or --force to start over"
            )
        state = _read_state(unit.state_path)
        if state.get("config_hash") != settings["config_hash"]:
            raise InputError(f"{unit.state_path}: saved with other settings or inputs; use --force to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = list(state["history"])
        start_round = int(state["round"])
        best = state.get("best")
        since_best = int(state.get("since_best", 0))
        stopped = bool(state.get("stopped", False))
        info(f"{unit.name}: resuming after check {start_round}/{n_rounds} (step {min(start_round * every, total)}/{total})")
    net = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device] if device.type == "cuda" else None)

    aug = Augmentation(shift=hyper["shift"], rotation=hyper["rotation"], flip=hyper["flip"], lr_axis=spec.lr_axis)
    crop = _crop_fn(spec)
    crit = _criterion(task)
    l2 = float(settings["arch_params"].get("l2", 0.0))
    for rnd in range(start_round, n_rounds):
        if stopped:
            break
        t0 = time.perf_counter()
        first, last = rnd * every, min((rnd + 1) * every, total)
        model.train()
        loss_sum, n_seen = 0.0, 0
        t_data = 0.0  # gathering, transfer, augmentation, targets
        desc = f"{unit.name} steps {first + 1}-{last}/{total}"
        step_iter = range(first, last)
        for step in track(step_iter, description=desc, total=len(step_iter)) if dist.is_main else step_iter:
            _kill_point(unit.name, rnd + 1, step - first)
            t_b = time.perf_counter()
            torch.manual_seed(_derive(seed, unit.index, step, 1))
            g_aug = torch.Generator().manual_seed(_derive(seed, unit.index, step, 3, dist.rank))
            batch = stream[step * bs : (step + 1) * bs]
            local = shard(batch, dist.rank, dist.world)
            x = data.store.get(local).to(device, non_blocking=True)
            x = augment_batch(x, aug, g_aug, crop=crop) if aug.active else (crop(x).contiguous() if crop else x)
            y = _batch_targets(data.targets, local, task, target_norm, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t_data += time.perf_counter() - t_b
            for group in optimizer.param_groups:
                group["lr"] = hyper["lr"] * lr_factor(step, total, hyper["lr_schedule"], hyper["warmup"])
            out = net(x)
            loss = crit(out, y)
            if l2 > 0:
                loss = loss + l2 * model.l2_penalty()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(local)
            n_seen += len(local)
        t_train = time.perf_counter() - t0
        loss_sum, n_seen = dist.all_sum([loss_sum, float(n_seen)])
        row: dict[str, Any] = {
            "unit": unit.name,
            "epoch": rnd + 1,
            "step": last,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / max(n_seen, 1),
            "samples": int(n_seen),
        }
        improved = 0.0
        if dist.is_main and len(val_idx):
            vloss, _, metrics = evaluate(model, data, val_idx, device, task, target_norm)
            row["val_loss"] = vloss
            row.update({f"val_{k}": v for k, v in metrics.items()})
            score = _selection_score(task, vloss, metrics)
            # ties go to the later check (a saturated AUC of 1.0 keeps the better-trained model)
            if patience and (best is None or score >= best["score"]):
                improved = 1.0
        if dist.is_main and len(test_idx):
            hloss, _, metrics = evaluate(model, data, test_idx, device, task, target_norm)
            row["heldout_loss"] = hloss
            row.update({f"heldout_{k}": v for k, v in metrics.items()})
        if len(val_idx) and patience:  # early stopping and best-check selection (opt-in)
            (improved,) = dist.all_sum([improved])  # every process keeps the same best weights
            if improved > 0:
                best = {"score": float(_selection_score(task, row.get("val_loss", float("nan")), {k[4:]: v for k, v in row.items() if k.startswith("val_")}))
                        if dist.is_main else float("nan"), "round": rnd + 1, "step": last, "model": _state_copy(model)}
                since_best = 0
            else:
                since_best += 1
                # never before half of the budget: a small split's figures wander while a model starts to learn
                if since_best >= patience and last >= total // 2:
                    stopped = True
        row["seconds"] = round(time.perf_counter() - t0, 3)  # the whole round, evaluation included
        row["train_seconds"] = round(t_train, 3)  # the training pass
        row["data_seconds"] = round(t_data, 3)  # of which data handling (gather, augment, targets)
        history.append(row)
        if dist.is_main and ((rnd + 1) % settings["checkpoint_every"] == 0 or rnd + 1 == n_rounds or stopped):
            _write_state(
                unit.state_path,
                {
                    "config_hash": settings["config_hash"],
                    "round": rnd + 1,
                    "model": _state_copy(model),
                    "optimizer": optimizer.state_dict(),
                    "history": history,
                    "best": best,
                    "since_best": since_best,
                    "stopped": stopped,
                },
            )
    steps_done = history[-1]["step"] if history else 0
    selected = None
    if best is not None:
        model.load_state_dict(best["model"])
        selected = {"check": best["round"], "step": best["step"], "criterion": _SELECTION[task], "value": best["score"]}
    # ---- unit finished: checkpoint, held-out predictions, evidence, per-round history
    heldout: dict[str, float] = {}
    if dist.is_main:
        import pandas as pd

        from neurointerp.io.atomic import write_table
        from neurointerp.train.evidence import heldout_evidence

        conf = settings.get("confounders")
        scores = np.array([])
        base_test = None
        evidence = validation = None
        if len(test_idx):
            vloss, scores, heldout = evaluate(model, data, test_idx, device, task, target_norm)
            heldout = {"loss": vloss, **heldout}
            if conf is not None:
                from neurointerp.train.baseline import baseline_scores

                base_test = baseline_scores(conf, unit.train_idx, test_idx, data.targets, task, n_classes)
            evidence = heldout_evidence(
                data.targets[test_idx], scores, task, [data.groups[i] for i in test_idx],
                source="held-out fold",
                description=f"fold {unit.index} of {settings['n_folds']}-fold subject-level cross-validation: participants this model never saw",
                baseline_scores=base_test, confounders=conf.names if conf is not None else (), seed=seed,
            )
        if len(val_idx):
            _, vscores, _ = evaluate(model, data, val_idx, device, task, target_norm)
            base_val = None
            if conf is not None:
                from neurointerp.train.baseline import baseline_scores

                base_val = baseline_scores(conf, fit_idx, val_idx, data.targets, task, n_classes)
            validation = heldout_evidence(
                data.targets[val_idx], vscores, task, [data.groups[i] for i in val_idx],
                source="validation split",
                description=(
                    f"internal validation split ({len(set(data.groups[i] for i in val_idx))} of "
                    f"{len(set(data.groups[i] for i in unit.train_idx))} training participants, stratified, never trained on)"
                    + ("; it also chose the checkpoint (--patience), so the figures are somewhat optimistic" if selected else "")
                ),
                baseline_scores=base_val, confounders=conf.names if conf is not None else (),
                selected_on_split=selected is not None, seed=seed,
            )
            if evidence is None and unit.index == 0:  # with CV, replaced by the pooled CV evidence
                evidence = validation
        train_ids = list(dict.fromkeys(data.groups[i] for i in unit.train_idx))
        test_ids = list(dict.fromkeys(data.groups[i] for i in test_idx))
        training = {
            "unit": unit.name,
            "fold": unit.index if unit.index > 0 else None,
            "n_folds": settings["n_folds"] if unit.index > 0 else None,
            "cv_folds": settings["n_folds"],
            "participant_ids": train_ids,
            "heldout_participant_ids": test_ids,
            "validation_participant_ids": list(dict.fromkeys(data.groups[i] for i in val_idx)),
            "n_train_images": int(len(unit.train_idx)),
            "n_fit_images": int(len(fit_idx)),
            "steps_budget": int(total),
            "steps_done": int(steps_done),
            "stopped_early": bool(stopped and steps_done < total),
            "selected": selected,
            "confounder_weighting": weighting,
            "seed": seed,
            "hyperparameters": hyper,
            "config_hash": settings["config_hash"],
            "cohort": str(data.cohort.path),
        }
        contents = checkpoint_dict(
            model,
            spec,
            task,
            data.classes,
            hyper["architecture"],
            training=training,
            metrics={"heldout": heldout, "history": history, "evidence": evidence, "validation": validation},
            target=target_norm,
        )
        unit.directory.mkdir(parents=True, exist_ok=True)
        hist_path = unit.directory / ("metrics.tsv" if unit.index > 0 else "final-metrics.tsv")
        write_table(hist_path, pd.DataFrame(history), force=True)
        if len(test_idx):
            write_table(unit.directory / "predictions.tsv", _predictions_frame(data, test_idx, scores, unit.index, base_test), force=True)
        save_checkpoint(unit.model_path, contents)
        unit.state_path.unlink(missing_ok=True)
        from neurointerp.train.evidence import describe

        how = f"{steps_done} steps" + (f", best validation {selected['criterion']} at step {selected['step']}" if selected else "")
        msg = f"; held-out {describe(evidence)}" if evidence else ""
        info(f"{unit.name}: wrote {unit.model_path} ({how}){msg}")
    dist.barrier()
    return heldout


def _write_state(path: Path, state: dict) -> None:
    import io

    import torch

    from neurointerp.io.atomic import write_bytes

    buffer = io.BytesIO()  # serialise first: a full disk is then one line naming the file
    torch.save(state, buffer)
    write_bytes(path, buffer.getvalue(), force=True)


def _read_state(path: Path) -> dict:
    import pickle

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(f"{path}: refused to load: holds objects other than tensors and plain data") from exc
    except Exception as exc:
        raise InputError(f"{path}: unreadable training state ({type(exc).__name__}); use --force to start over") from exc


def _predictions_frame(data, idx: np.ndarray, scores: np.ndarray, fold: int, baseline: np.ndarray | None = None):
    import pandas as pd

    frame = data.cohort.frame.iloc[idx]
    out = pd.DataFrame({"participant_id": frame["participant_id"].to_numpy()})
    if "session_id" in frame.columns:
        out["session_id"] = frame["session_id"].astype(str).to_numpy()
    out["row"] = [data.cohort.rows[i] for i in idx]
    out["fold"] = fold
    out["label"] = frame[data.cohort.label_column].to_numpy()
    if data.task == "binary":
        out["predicted"] = [data.classes[int(s >= 0.5)] for s in scores]
        out[f"p_{data.classes[1]}"] = scores
        if baseline is not None:
            out[f"baseline_p_{data.classes[1]}"] = baseline
    elif data.task == "multiclass":
        out["predicted"] = [data.classes[int(k)] for k in np.argmax(scores, axis=1)]
        for k, c in enumerate(data.classes):
            out[f"p_{c}"] = scores[:, k]
        if baseline is not None:
            for k, c in enumerate(data.classes):
                out[f"baseline_p_{c}"] = baseline[:, k]
    else:
        out["predicted"] = scores
        if baseline is not None:
            out["baseline_predicted"] = baseline
    return out


def read_predictions(path: Path):
    """A ``predictions.tsv`` with its ids and labels kept as text (``01`` stays ``01``)."""
    import pandas as pd

    return pd.read_csv(path, sep="\t", dtype={"participant_id": str, "session_id": str, "label": str})


def _scores_of(pred, data, prefix: str = "") -> np.ndarray | None:
    if data.task == "binary":
        col = f"{prefix}p_{data.classes[1]}"
        return pred[col].to_numpy(dtype=float) if col in pred.columns else None
    if data.task == "multiclass":
        cols = [f"{prefix}p_{c}" for c in data.classes]
        return pred[cols].to_numpy(dtype=float) if all(c in pred.columns for c in cols) else None
    col = "baseline_predicted" if prefix else "predicted"
    return pred[col].to_numpy(dtype=float) if col in pred.columns else None


def _targets_of(pred, data) -> np.ndarray:
    if data.task == "regression":
        return pred["label"].astype(float).to_numpy()
    index = {c: i for i, c in enumerate(data.classes)}
    return pred["label"].astype(str).map(index).to_numpy()


def pooled_evidence(pred, data, n_folds: int, confounders: Sequence[str] = (), seed: int = 0) -> dict:
    """Evidence of the pooled held-out predictions of all CV folds (``predictions.tsv``)."""
    from neurointerp.train.evidence import heldout_evidence

    base = _scores_of(pred, data, "baseline_") if confounders else None
    return heldout_evidence(
        _targets_of(pred, data), _scores_of(pred, data), data.task, list(pred["participant_id"]),
        source="cross-validation",
        description=(
            f"pooled held-out predictions of {n_folds}-fold subject-level cross-validation: every participant "
            "predicted by the fold model that never saw it (the final model is trained on all participants with the same settings)"
        ),
        baseline_scores=base, confounders=confounders, seed=seed,
    )


def _write_summaries(out: Path, data, units: list[Unit], config_hash: str, n_folds: int, params: dict, inputs, conf_table=None, seed: int = 0) -> tuple[Any, dict]:
    """Combine finished units into metrics.tsv, predictions.tsv, cv_summary.tsv, the curve,
    heldout_evidence.json and model.json; attach the pooled CV evidence to the final model."""
    import pandas as pd

    from neurointerp.io.atomic import write_json, write_table
    from neurointerp.io.derivatives import sidecar_path
    from neurointerp.io.provenance import provenance, sha256
    from neurointerp.models.checkpoint import read_checkpoint, save_checkpoint
    from neurointerp.train.metrics import classification_metrics, regression_metrics

    histories, preds, rows, models = [], [], [], []
    evidence: dict[str, Any] = {}
    final_unit = None
    for u in units:
        if _completed(u, config_hash, n_folds) is None:
            continue
        hist = u.directory / ("metrics.tsv" if u.index > 0 else "final-metrics.tsv")
        if hist.exists():
            histories.append(pd.read_csv(hist, sep="\t"))
        ck = read_checkpoint(u.model_path)
        ev = ck.get("metrics", {}).get("evidence")
        if ev:
            evidence[u.name] = ev
        if u.index == 0:
            final_unit = (u, ck)
            continue
        models.append({"unit": u.name, "path": str(u.model_path.relative_to(out)), "sha256": sha256(u.model_path)})
        p = read_predictions(u.directory / "predictions.tsv")
        preds.append(p)
        m = ck["metrics"]["heldout"]
        rows.append({"fold": u.name, "n_train": len(u.train_idx), "n_test": len(u.test_idx),
                     "n_test_participants": len(set(data.groups[i] for i in u.test_idx)), **m})
    if histories:
        write_table(out / "metrics.tsv", pd.concat(histories, ignore_index=True), force=True)
        _plot_curves(pd.concat(histories, ignore_index=True), out / "training_curve.png", data.task, len(data.classes))
    summary = None
    if preds:
        allp = pd.concat(preds, ignore_index=True)
        write_table(out / "predictions.tsv", allp, force=True)
        table = pd.DataFrame(rows)
        metric_cols = [c for c in table.columns if c not in ("fold", "n_train", "n_test", "n_test_participants")]
        extra = [
            {"fold": "mean", **{c: table[c].mean() for c in metric_cols}},
            {"fold": "sd", **{c: table[c].std(ddof=1) if len(table) > 1 else float("nan") for c in metric_cols}},
        ]
        if len(rows) == n_folds:  # pooled over all held-out predictions
            y = _targets_of(allp, data)
            sc = _scores_of(allp, data)
            if data.task == "regression":
                pooled = regression_metrics(y, sc)
            else:
                pooled = classification_metrics(y, sc, data.task)
            extra.append({"fold": "pooled", "n_test": len(allp), **pooled})
            evidence["cross-validation"] = pooled_evidence(allp, data, n_folds, conf_table.names if conf_table is not None else (), seed)
        summary = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
        write_table(out / "cv_summary.tsv", summary, force=True)
    if final_unit is not None:
        u, ck = final_unit
        if "cross-validation" in evidence:
            # the final model's evidence is the cross-validation of its protocol
            if ck["metrics"].get("evidence") != evidence["cross-validation"]:
                ck["metrics"]["evidence"] = evidence["cross-validation"]
                save_checkpoint(u.model_path, ck)
            evidence["final"] = evidence["cross-validation"]
        models.append({"unit": u.name, "path": str(u.model_path.relative_to(out)), "sha256": sha256(u.model_path)})
    if evidence:
        write_json(out / EVIDENCE, evidence, force=True)
    record = provenance(
        "train",
        params,
        inputs=inputs,
        seed=params.get("seed"),
        Task=data.task,
        Classes=data.classes,
        Space=data.spec.space,
        Grid=data.spec.to_dict(),
        ConfigHash=config_hash,
        Models=models,
        CrossValidation=None if summary is None else summary.replace({np.nan: None}).to_dict(orient="records"),
        HeldOutEvidence=evidence or None,
    )
    write_json(sidecar_path(out / "model.pt"), record, force=True)
    return summary, evidence


def _report_evidence(evidence: dict, balanced: bool = False) -> None:
    """One line of held-out skill, and one-line warnings: no skill, or no gain over the confounders
    (``balanced``: the model was trained with ``--balance-confounders``, so the warning does not
    suggest it)."""
    from neurointerp.train.evidence import describe, describe_baseline, too_few_hint

    if not evidence:
        return
    if "cross-validation" in evidence:
        shown = {"cross-validation": evidence["cross-validation"]}
        failing = [k for k, v in evidence.items() if k.startswith("fold-") and not v.get("beats_chance")]
    else:
        shown = {k: v for k, v in evidence.items()}
        failing = []
    for name, ev in shown.items():
        info(f"held-out skill ({name}): {describe(ev)}")
        base = describe_baseline(ev)
        if base:
            info(f"confounder baseline ({name}): {base}")
        if not ev.get("beats_chance"):
            warn(
                f"{name}: no evidence that the model beats chance ({describe(ev)}{too_few_hint(ev)}); its maps would explain noise -- "
                "saliency, confound-test, simulate and evaluate refuse it without --allow-unvalidated"
            )
        b = ev.get("baseline")
        if b and b.get("confounded") and balanced:
            warn(
                f"{name}: the confounders alone predict the label and the model does not beat them ({base}); it was trained on draws "
                "balanced for them (confounder weighting), but these held-out figures cannot show that it learned more than they carry (see confound-test)"
            )
        elif b and b.get("confounded"):
            warn(
                f"{name}: the confounders alone predict the label and the model does not beat them ({base}); "
                "it may have learned the confounder, not the disease (see confound-test; train --balance-confounders trains on draws in which they do not predict the label)"
            )
    if failing:
        warn(f"{', '.join(failing)}: no evidence of skill on their own held-out fold; the skill gate refuses these fold models")


def _plot_curves(hist, path: Path, task: str, n_classes: int = 2) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurointerp.io.atomic import atomic_path

    score = "heldout_r" if task == "regression" else "heldout_balanced_accuracy"
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    vscore = score.replace("heldout_", "val_")
    xcol = "step" if "step" in hist.columns else "epoch"
    for unit, h in hist.groupby("unit", sort=False):
        line = axes[0].plot(h[xcol], h["train_loss"], label=f"{unit} train")[0]
        if "heldout_loss" in h and h["heldout_loss"].notna().any():
            axes[0].plot(h[xcol], h["heldout_loss"], "--", color=line.get_color(), label=f"{unit} held-out")
        if "val_loss" in h and h["val_loss"].notna().any():
            axes[0].plot(h[xcol], h["val_loss"], ":", color=line.get_color(), label=f"{unit} validation")
        if score in h and h[score].notna().any():
            axes[1].plot(h[xcol], h[score], color=line.get_color(), label=f"{unit} held-out")
        if vscore in h and h[vscore].notna().any():
            axes[1].plot(h[xcol], h[vscore], ":", color=line.get_color(), label=f"{unit} validation")
    axes[0].set(xlabel=xcol, ylabel="loss", title="loss (solid: training, dashed: held-out, dotted: validation)")
    axes[1].set(xlabel=xcol, ylabel=score.replace("heldout_", ""), title=("r" if task == "regression" else "balanced accuracy") + " (held-out, validation)")
    if task != "regression":
        axes[1].axhline(1.0 / max(n_classes, 2), color="grey", lw=0.8, ls=":")
    for ax in axes:
        if any(not line.get_label().startswith("_") for line in ax.lines):
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=100, format="png")
    plt.close(fig)
