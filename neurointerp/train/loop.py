"""``neurointerp train``: CNN classifiers with subject-level cross-validation.

Output folder::

    OUT/train_config.json          settings + hash of the run (lets a folder be resumed/extended)
    OUT/fold-<k>/model.pt          checkpoint of fold k (trained on the other folds)
    OUT/fold-<k>/metrics.tsv       per-epoch training loss and held-out metrics of fold k
    OUT/fold-<k>/predictions.tsv   held-out predictions of fold k
    OUT/model.pt                   with --final: the model trained on all data
    OUT/final-metrics.tsv          with --final: its per-epoch training loss
    OUT/metrics.tsv                all per-epoch rows (column ``unit``: fold-1.., final); times:
                                   ``seconds`` (whole epoch), ``train_seconds`` (training pass),
                                   ``data_seconds`` (of which gathering/augmenting the batches)
    OUT/predictions.tsv            all held-out predictions
    OUT/cv_summary.tsv             per-fold balanced accuracy, AUC, accuracy; mean, sd, pooled
    OUT/training_curve.png         loss and held-out balanced accuracy (r) per epoch
    OUT/model.json                 provenance sidecar (inputs with sha256, parameters, models)

Repeatability: the initial weights of a unit (fold or final) come from ``(seed, unit)``, the
sample order, class balancing and augmentation of every epoch from ``(seed, unit, epoch)``.
The training state (weights, optimiser, history) is saved atomically after every epoch
(``--checkpoint-every``); ``--resume`` continues an interrupted unit from its last saved
epoch and gives the same final weights as an uninterrupted run. Finished units are skipped
when the folder is run again with the same settings and inputs.
"""

from __future__ import annotations

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
from neurointerp.progress import info, track

MARKER = "train_config.json"
STATE = "state.pt"
_KILL_ENV = "NEUROINTERP_TRAIN_KILL_AT"  # fault injection for tests: "unit:epoch:batch"


@dataclass
class Unit:
    """One model to train: a CV fold (trained on the other folds) or the final model."""

    name: str
    index: int  # fold number (1-based), 0 for the final model
    train_idx: np.ndarray
    test_idx: np.ndarray
    directory: Path
    model_path: Path
    state_path: Path


@dataclass
class TrainResult:
    out: Path
    models: dict[str, Path] = field(default_factory=dict)
    heldout: dict[str, dict[str, float]] = field(default_factory=dict)
    summary: Any = None  # pandas DataFrame (cv_summary.tsv) or None
    final_model: Path | None = None


def _derive(*keys: int) -> int:
    """A 63-bit seed from integer keys (independent streams per unit/epoch/purpose)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) % (2**63)


def _kill_point(unit: str, epoch: int, batch: int) -> None:
    spec = os.environ.get(_KILL_ENV)
    if spec and spec == f"{unit}:{epoch}:{batch}":
        os.kill(os.getpid(), signal.SIGKILL)


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
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 1e-3,
    folds: int = 5,
    fold: Sequence[int] | None = None,
    final: bool = False,
    shift: float = 1.0,
    rotation: float = 1.0,
    flip: bool = False,
    balance: int = 0,
    hemisphere: str = "both",
    normalize: str = "none",
    label_column: str = "label",
    image_column: str = "image",
    positive_class: str | None = None,
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
    models written and the cross-validation summary.
    """
    import torch

    from neurointerp.models.classifier import architecture_params, default_architecture
    from neurointerp.train.data import load_training_data, read_training_cohort
    from neurointerp.train.device import resolve_device, set_threads
    from neurointerp.train.distributed import env_world, init_distributed

    # ---- argument checks (before any heavy work)
    if epochs < 1:
        raise InputError(f"--epochs {epochs}: must be at least 1")
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    if not (lr > 0 and math.isfinite(lr)):
        raise InputError(f"--lr {lr}: must be a positive number")
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

    if architecture != "auto":
        architecture_params(architecture)  # unknown names fail before any image is read
    rank, world, local_rank = env_world()
    dev = resolve_device(device, local_rank=local_rank)
    n_threads = set_threads(threads)
    out = Path(out)
    cohort_table = read_training_cohort(cohort, task=task, label_column=label_column, image_column=image_column)
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

    hyper = dict(
        task=data.task,
        architecture=arch,
        architecture_params={k: (list(v) if isinstance(v, tuple) else v) for k, v in arch_params.items()},
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr=float(lr),
        optimizer="adam",
        shift=float(shift),
        rotation=float(rotation),
        flip=bool(flip),
        balance=int(balance),
        hemisphere=hemisphere,
        normalize=normalize,
        positive_class=data.classes[1] if data.task == "binary" else None,
        label_column=label_column,
        image_column=image_column,
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

    # ---- folds (identical on every process)
    groups = data.groups
    units_all: list[Unit] = []
    fold_of_row = None
    if folds >= 2:
        from neurointerp.train.splits import regression_strata, stratified_group_kfold

        strata = data.targets if data.task != "regression" else regression_strata(data.targets, groups, folds)
        fold_of_row = stratified_group_kfold(groups, strata, folds, seed=seed)
        if data.task != "regression":
            _warn_small_classes(data, fold_of_row, folds)
        for k in range(1, folds + 1):
            d = out / f"fold-{k}"
            units_all.append(
                Unit(f"fold-{k}", k, np.flatnonzero(fold_of_row != k - 1), np.flatnonzero(fold_of_row == k - 1), d, d / "model.pt", d / STATE)
            )
    if final:
        units_all.append(Unit("final", 0, np.arange(len(data)), np.array([], dtype=int), out, out / "model.pt", out / "final-state.pt"))
    to_run = [u for u in units_all if u.index == 0 or selected is None or u.index in selected]

    dist = init_distributed(dev)
    try:
        if dist.is_main:
            _prepare_out(out, config_hash, hyper, force=force)
        dist.barrier()
        settings = dict(
            hyper=hyper,
            arch_params=arch_params,
            config_hash=config_hash,
            n_folds=int(folds),
            checkpoint_every=int(checkpoint_every),
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
            result.summary = _write_summaries(out, data, units_all, config_hash, folds, params, inputs)
        result.final_model = out / "model.pt" if final else None
        return result
    finally:
        dist.close()


def _warn_small_classes(data, fold_of_row, folds) -> None:
    for c, name in enumerate(data.classes):
        n = len({g for g, t in zip(data.groups, data.targets) if t == c})
        if n < folds:
            info(f"warning: class '{name}' has {n} participants, fewer than the {folds} folds; some folds lack it (AUC undefined there)")


def _prepare_out(out: Path, config_hash: str, hyper: dict, force: bool) -> None:
    from neurointerp.io.atomic import write_json

    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if marker.exists():
            try:
                old = json.loads(marker.read_text())
            except (OSError, ValueError):
                old = {}
            if old.get("config_hash") != config_hash and not force:
                raise InputError(
                    f"{out}: holds a training run with other settings or inputs (hash {old.get('config_hash')} vs {config_hash}); "
                    "use --force to start over, or another output folder"
                )
        elif not force:
            raise InputError(f"{out}: folder is not empty and holds no training run (use --force to write into it)")
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"config_hash": config_hash, "settings": hyper}, force=True)


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


def _epoch_order(train_idx: np.ndarray, targets: np.ndarray, n_classes: int, balance: int, generator) -> np.ndarray:
    """Sample order of one epoch: a permutation, or ``balance`` samples of every class."""
    import torch

    if not balance:
        return train_idx[torch.randperm(len(train_idx), generator=generator).numpy()]
    parts = []
    for c in range(n_classes):
        members = train_idx[targets[train_idx] == c]
        if len(members) == 0:
            continue
        reps = []
        need = balance
        while need > 0:  # whole permutations first: every sample used about equally often
            perm = members[torch.randperm(len(members), generator=generator).numpy()]
            reps.append(perm[:need])
            need -= len(perm[:need])
        parts.append(np.concatenate(reps))
    order = np.concatenate(parts)
    return order[torch.randperm(len(order), generator=generator).numpy()]


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


def evaluate(model, data, idx: np.ndarray, device, task: str, target_norm: dict | None, batch_size: int = 64):
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
    epochs = hyper["epochs"]
    bs = hyper["batch_size"]
    train_idx, test_idx = unit.train_idx, unit.test_idx
    target_norm = None
    if task == "regression":
        y = data.targets[train_idx]
        sd = float(np.std(y))
        target_norm = {"mean": float(np.mean(y)), "sd": sd if sd > 0 else 1.0}

    torch.manual_seed(_derive(seed, unit.index, 0xA11))
    model = ConvClassifier(input_shape=spec.model_shape, n_outputs=data.n_outputs, **settings["arch_params"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=hyper["lr"])
    history: list[dict] = []
    start = 0
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
        start = int(state["epoch"])
        info(f"{unit.name}: resuming after epoch {start}/{epochs}")
    net = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device] if device.type == "cuda" else None)

    aug = Augmentation(shift=hyper["shift"], rotation=hyper["rotation"], flip=hyper["flip"], lr_axis=spec.lr_axis)
    crop = _crop_fn(spec)
    crit = _criterion(task)
    l2 = float(settings["arch_params"].get("l2", 0.0))
    n_classes = len(data.classes)
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        torch.manual_seed(_derive(seed, unit.index, epoch, 1))
        g_order = torch.Generator().manual_seed(_derive(seed, unit.index, epoch, 2))
        g_aug = torch.Generator().manual_seed(_derive(seed, unit.index, epoch, 3, dist.rank))
        order = _epoch_order(train_idx, data.targets, n_classes, hyper["balance"] if task != "regression" else 0, g_order)
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        if len(batches) > 1 and len(batches[-1]) == 1:  # batch norm cannot train on one sample
            batches[-2:] = [np.concatenate(batches[-2:])]
        model.train()
        loss_sum, n_seen = 0.0, 0
        t_data = 0.0  # gathering, transfer, augmentation, targets
        desc = f"{unit.name} epoch {epoch + 1}/{epochs}"
        for b_i, batch in enumerate(track(batches, description=desc, total=len(batches)) if dist.is_main else batches):
            _kill_point(unit.name, epoch + 1, b_i)
            t_b = time.perf_counter()
            local = shard(batch, dist.rank, dist.world)
            x = data.store.get(local).to(device, non_blocking=True)
            x = augment_batch(x, aug, g_aug, crop=crop) if aug.active else (crop(x).contiguous() if crop else x)
            y = _batch_targets(data.targets, local, task, target_norm, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t_data += time.perf_counter() - t_b
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
        row: dict[str, Any] = {"unit": unit.name, "epoch": epoch + 1, "train_loss": loss_sum / max(n_seen, 1), "samples": int(n_seen)}
        if dist.is_main and len(test_idx):
            vloss, _, metrics = evaluate(model, data, test_idx, device, task, target_norm)
            row["heldout_loss"] = vloss
            row.update({f"heldout_{k}": v for k, v in metrics.items()})
        row["seconds"] = round(time.perf_counter() - t0, 3)  # the whole epoch, evaluation included
        row["train_seconds"] = round(t_train, 3)  # the training pass
        row["data_seconds"] = round(t_data, 3)  # of which data handling (gather, augment, targets)
        history.append(row)
        if dist.is_main and ((epoch + 1) % settings["checkpoint_every"] == 0 or epoch + 1 == epochs):
            _write_state(
                unit.state_path,
                {
                    "config_hash": settings["config_hash"],
                    "epoch": epoch + 1,
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "history": history,
                },
            )
    # ---- unit finished: checkpoint, held-out predictions, per-epoch metrics
    heldout: dict[str, float] = {}
    if dist.is_main:
        import pandas as pd

        from neurointerp.io.atomic import write_table

        scores = np.array([])
        if len(test_idx):
            vloss, scores, heldout = evaluate(model, data, test_idx, device, task, target_norm)
            heldout = {"loss": vloss, **heldout}
        train_ids = list(dict.fromkeys(data.groups[i] for i in train_idx))
        test_ids = list(dict.fromkeys(data.groups[i] for i in test_idx))
        training = {
            "unit": unit.name,
            "fold": unit.index if unit.index > 0 else None,
            "n_folds": settings["n_folds"] if unit.index > 0 else None,
            "participant_ids": train_ids,
            "heldout_participant_ids": test_ids,
            "n_train_images": int(len(train_idx)),
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
            metrics={"heldout": heldout, "history": history},
            target=target_norm,
        )
        unit.directory.mkdir(parents=True, exist_ok=True)
        hist_path = unit.directory / ("metrics.tsv" if unit.index > 0 else "final-metrics.tsv")
        write_table(hist_path, pd.DataFrame(history), force=True)
        if len(test_idx):
            write_table(unit.directory / "predictions.tsv", _predictions_frame(data, test_idx, scores, unit.index), force=True)
        save_checkpoint(unit.model_path, contents)
        unit.state_path.unlink(missing_ok=True)
        msg = ", ".join(f"{k} {v:.3f}" for k, v in heldout.items() if k in ("balanced_accuracy", "auc", "r", "mae"))
        info(f"{unit.name}: wrote {unit.model_path}" + (f" (held-out {msg})" if msg else ""))
    dist.barrier()
    return heldout


def _write_state(path: Path, state: dict) -> None:
    import torch

    from neurointerp.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, str(tmp))


def _read_state(path: Path) -> dict:
    import pickle

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(f"{path}: refused to load: holds objects other than tensors and plain data") from exc
    except Exception as exc:
        raise InputError(f"{path}: unreadable training state ({type(exc).__name__}); use --force to start over") from exc


def _predictions_frame(data, idx: np.ndarray, scores: np.ndarray, fold: int):
    import pandas as pd

    frame = data.cohort.frame.iloc[idx]
    out = pd.DataFrame({"participant_id": frame["participant_id"].to_numpy()})
    if "session_id" in frame.columns:
        out["session_id"] = frame["session_id"].to_numpy()
    out["row"] = [data.cohort.rows[i] for i in idx]
    out["fold"] = fold
    out["label"] = frame[data.cohort.label_column].to_numpy()
    if data.task == "binary":
        out["predicted"] = [data.classes[int(s >= 0.5)] for s in scores]
        out[f"p_{data.classes[1]}"] = scores
    elif data.task == "multiclass":
        out["predicted"] = [data.classes[int(k)] for k in np.argmax(scores, axis=1)]
        for k, c in enumerate(data.classes):
            out[f"p_{c}"] = scores[:, k]
    else:
        out["predicted"] = scores
    return out


def _write_summaries(out: Path, data, units: list[Unit], config_hash: str, n_folds: int, params: dict, inputs) -> Any:
    """Combine finished units into metrics.tsv, predictions.tsv, cv_summary.tsv, the curve and model.json."""
    import pandas as pd

    from neurointerp.io.atomic import write_json, write_table
    from neurointerp.io.derivatives import sidecar_path
    from neurointerp.io.provenance import provenance, sha256
    from neurointerp.models.checkpoint import read_checkpoint
    from neurointerp.train.metrics import classification_metrics, regression_metrics

    histories, preds, rows, models = [], [], [], []
    for u in units:
        if _completed(u, config_hash, n_folds) is None:
            continue
        hist = u.directory / ("metrics.tsv" if u.index > 0 else "final-metrics.tsv")
        if hist.exists():
            histories.append(pd.read_csv(hist, sep="\t"))
        models.append({"unit": u.name, "path": str(u.model_path.relative_to(out)), "sha256": sha256(u.model_path)})
        if u.index > 0:
            p = pd.read_csv(u.directory / "predictions.tsv", sep="\t", dtype={"participant_id": str, "label": str})
            preds.append(p)
            m = read_checkpoint(u.model_path)["metrics"]["heldout"]
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
            if data.task == "regression":
                pooled = regression_metrics(allp["label"].astype(float), allp["predicted"].astype(float))
            else:
                index = {c: i for i, c in enumerate(data.classes)}
                y = allp["label"].astype(str).map(index).to_numpy()
                sc = allp[f"p_{data.classes[1]}"].to_numpy() if data.task == "binary" else allp[[f"p_{c}" for c in data.classes]].to_numpy()
                pooled = classification_metrics(y, sc, data.task)
            extra.append({"fold": "pooled", "n_test": len(allp), **pooled})
        summary = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
        write_table(out / "cv_summary.tsv", summary, force=True)
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
    )
    write_json(sidecar_path(out / "model.pt"), record, force=True)
    return summary


def _plot_curves(hist, path: Path, task: str, n_classes: int = 2) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurointerp.io.atomic import atomic_path

    score = "heldout_r" if task == "regression" else "heldout_balanced_accuracy"
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for unit, h in hist.groupby("unit", sort=False):
        line = axes[0].plot(h["epoch"], h["train_loss"], label=f"{unit} train")[0]
        if "heldout_loss" in h and h["heldout_loss"].notna().any():
            axes[0].plot(h["epoch"], h["heldout_loss"], "--", color=line.get_color(), label=f"{unit} held-out")
        if score in h and h[score].notna().any():
            axes[1].plot(h["epoch"], h[score], color=line.get_color(), label=unit)
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss (solid: training, dashed: held-out)")
    axes[1].set(xlabel="epoch", ylabel=score.replace("heldout_", "held-out "), title="held-out " + ("r" if task == "regression" else "balanced accuracy"))
    if task != "regression":
        axes[1].axhline(1.0 / max(n_classes, 2), color="grey", lw=0.8, ls=":")
    for ax in axes:
        if any(not line.get_label().startswith("_") for line in ax.lines):
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=100, format="png")
    plt.close(fig)
