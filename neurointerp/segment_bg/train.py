"""Training of the 2D U-Net with the Dice loss (§3.1) and ``segment-bg train``.

Defaults are the paper's: SGD with learning rate 3e-4, decay 1.5e-6 (Keras-style, per step:
``lr_t = lr / (1 + decay * t)``), momentum 0.9, batches of 5 slices; 80 % / 20 % of the
training animals for training / validation (split by animal, so slices of one animal never sit
on both sides). The model is trained on "sectioned" images -- the acquisition times its brain
mask (§4.3) -- and the weights with the best validation Dice are kept.

The checkpoint also stores the reference animal for background removal: the training animal
whose brain volume is the median of the training set, its sectioned image, its brain mask and
the shape template (mask times enhanced gradient image, Fig. 7a) computed with the trained model.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurointerp.errors import InputError
from neurointerp.runs.context import runs_as

OPTIMIZERS = ("sgd", "adam")
N_CLASSES = 4


@dataclass
class FitResult:
    model: Any
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def fit_unet(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    base: int = 16,
    depth: int = 3,
    epochs: int = 30,
    batch_size: int = 5,
    lr: float = 3e-4,
    decay: float = 1.5e-6,
    momentum: float = 0.9,
    optimizer: str = "sgd",
    seed: int = 0,
    device="cpu",
    log=None,
) -> FitResult:
    """Train a :class:`~.unet.UNet2D` on slices ``(n, H, W)`` and integer labels ``(n, H, W)`` in 0..3."""
    import torch

    from neurointerp.segment_bg.losses import dice_loss, soft_dice
    from neurointerp.segment_bg.unet import UNet2D

    if optimizer not in OPTIMIZERS:
        raise InputError(f"--optimizer {optimizer}: choose {' or '.join(OPTIMIZERS)}")
    if epochs < 1 or batch_size < 1 or lr <= 0 or decay < 0:
        raise InputError("epochs and batch size must be at least 1, lr positive and decay non-negative")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = UNet2D(1, N_CLASSES, base=base, depth=depth).to(device)
    m = model.multiple

    def tensors(images, labels):
        n, h, w = images.shape
        ph, pw = (-h) % m, (-w) % m
        x = np.pad(images, ((0, 0), (0, ph), (0, pw)))[:, None].astype(np.float32)
        y = np.pad(labels, ((0, 0), (0, ph), (0, pw))).astype(np.int64)
        return torch.from_numpy(x), torch.from_numpy(y)

    xt, yt = tensors(train_images, train_labels)
    xv, yv = tensors(val_images, val_labels) if val_images is not None and len(val_images) else (None, None)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1.0 + decay * step))
    best, best_state, best_epoch, history = -1.0, None, 0, []
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(len(xt))
        losses = []
        for i in range(0, len(order), batch_size):
            idx = torch.from_numpy(order[i : i + batch_size])
            if len(idx) < 2 and len(order) > 1:
                continue  # batch norm needs more than one slice
            xb, yb = xt[idx].to(device), yt[idx].to(device)
            opt.zero_grad(set_to_none=True)
            loss = dice_loss(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"), "lr": float(sched.get_last_lr()[0])}
        model.eval()
        if xv is not None:
            with torch.inference_mode():
                probs = torch.cat([model.probabilities(xv[i : i + 32].to(device)).cpu() for i in range(0, len(xv), 32)])
                onehot = torch.nn.functional.one_hot(yv, N_CLASSES).permute(0, 3, 1, 2).float()
                hard = torch.nn.functional.one_hot(probs.argmax(1), N_CLASSES).permute(0, 3, 1, 2).float()
                row["val_loss"] = float(1.0 - soft_dice(probs, onehot).mean())
                dice = soft_dice(hard, onehot, eps=1e-6)
                for c, name in enumerate(("background", "WM", "GM", "CSF")):
                    row[f"val_dice_{name}"] = float(dice[c])
            score = -row["val_loss"]
        else:
            score = -row["train_loss"]
        history.append(row)
        if score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if log is not None:
            log(row)
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(model=model, history=history, best_epoch=best_epoch, seconds=time.perf_counter() - t0)


def check_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Integer labels in 0..3 (background, WM, GM, CSF); anything else is an input error naming the values."""
    lab = np.asarray(labels)
    if not np.all(np.isfinite(lab)) or np.any(lab != np.round(lab)):
        raise InputError(f"{where}: label volume holds non-integer values; expected classes 0 background, 1 WM, 2 GM, 3 CSF")
    values = np.unique(lab.astype(np.int64))
    bad = [int(v) for v in values if v < 0 or v >= N_CLASSES]
    if bad:
        shown = ", ".join(str(v) for v in bad[:6]) + (", ..." if len(bad) > 6 else "")
        raise InputError(f"{where}: label volume has unknown classes {shown}; expected 0 background, 1 WM, 2 GM, 3 CSF")
    return lab.astype(np.uint8)


def load_animal(table, i: int, image_column: str, label_column: str | None, mask_column: str | None):
    """Image (3D), labels and mask of row ``i`` of a cohort, checked to share one grid."""
    from neurointerp.io import load_image

    img = load_image(table.frame.loc[i, image_column], ndim=3)
    out = {"image": img, "labels": None, "mask": None}
    for key, col in (("labels", label_column), ("mask", mask_column)):
        if col is None:
            continue
        vol = load_image(table.frame.loc[i, col], ndim=3, allow_empty=(key == "labels"))
        if vol.shape != img.shape or not np.allclose(vol.affine, img.affine, atol=1e-4):
            raise InputError(f"{vol.path}: {key} grid {vol.shape} does not match image {img.path} {img.shape}")
        data = check_labels(vol.data, str(vol.path)) if key == "labels" else (vol.data > 0).astype(np.uint8)
        out[key] = data
    return out


def _resolve(table, column: str | None, what: str) -> str | None:
    if column is None or str(column).lower() == "none":
        return None
    if column not in table.frame.columns:
        raise InputError(f"{table.path}: no '{column}' column for the {what} (columns: {', '.join(map(str, table.frame.columns))})")
    return column


def _absolute(table, column: str):
    """Resolve the paths of ``column`` against the table's folder; refuse empty cells, names that
    are not NIfTI and missing files with a :class:`~neurointerp.errors.CohortError` naming the rows."""
    from neurointerp.errors import CohortError
    from neurointerp.io import is_nifti_path
    from neurointerp.io.cohort import MISSING

    base = table.path.parent
    paths, problems = [], []
    for i, raw in enumerate(table.frame[column].astype(str)):
        row = table.row_of(i)
        value = raw.strip()
        p = Path(value) if Path(value).is_absolute() else base / value
        if value.lower() in MISSING:
            problems.append(f"row {row}: {column} is empty")
        elif not is_nifti_path(p):
            problems.append(f"row {row}: {column} '{value}' is not a NIfTI file name (.nii or .nii.gz)")
        elif not p.is_file():
            problems.append(f"row {row}: {column} '{value}' not found")
        paths.append(str(p.resolve() if p.exists() else p.absolute()))
    if problems:
        raise CohortError(table.path, problems)
    table.frame[column] = paths


@runs_as("segment-bg train")
def run_train(
    cohort: str | os.PathLike,
    out: str | os.PathLike,
    image_column: str = "image",
    label_column: str = "labels",
    mask_column: str | None = "mask",
    axis: int = 2,
    base: int = 16,
    depth: int = 3,
    epochs: int = 30,
    batch_size: int = 5,
    lr: float = 3e-4,
    decay: float = 1.5e-6,
    momentum: float = 0.9,
    optimizer: str = "sgd",
    val_fraction: float = 0.2,
    gbp_score: str = "logit",
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    force: bool = False,
) -> Path:
    """Train the tissue segmenter on a cohort and return the checkpoint path (``<out>/model.pt``).

    The cohort table has ``participant_id``, the image column, a label column (0 background,
    1 WM, 2 GM, 3 CSF) and, unless ``mask_column`` is ``None``/``"none"``, a brain-mask column:
    the images are multiplied by their masks before training (the paper's sectioned images).
    Same arguments as ``neurointerp segment-bg train``.
    """
    import pandas as pd

    from neurointerp.io import prepare_output_dir, provenance, read_cohort, write_sidecar, write_table
    from neurointerp.progress import info
    from neurointerp.segment_bg.checkpoint import save_segmenter
    from neurointerp.segment_bg.core import reference_template, to_slices
    from neurointerp.train.device import resolve_device, set_threads

    if axis not in (0, 1, 2):
        raise InputError(f"--axis {axis}: choose 0, 1 or 2")
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-fraction {val_fraction}: must be in [0, 1)")
    set_threads(threads)
    dev = resolve_device(device)
    out = Path(out)
    if (out / "model.pt").exists() and not force:
        raise InputError(f"{out / 'model.pt'}: already exists (use --force to overwrite)")
    table = read_cohort(cohort, require_label=False, image_column=image_column)
    label_column = _resolve(table, label_column, "tissue labels")
    if label_column is None:
        raise InputError("segment-bg train needs a label column (--label-column)")
    mask_column = _resolve(table, mask_column, "brain masks")
    for col in [label_column] + ([mask_column] if mask_column else []):
        _absolute(table, col)
    animals = []
    grid = None
    for i in range(len(table)):
        try:
            a = load_animal(table, i, image_column, label_column, mask_column)
            vol = a["image"]
            if grid is None:
                grid = (vol.shape, vol.affine)
            elif to_slices(vol.data, axis).shape[1:] != to_slices(np.zeros(grid[0]), axis).shape[1:]:
                raise InputError(f"{vol.path}: slice size {to_slices(vol.data, axis).shape[1:]} differs from the first image's {to_slices(np.zeros(grid[0]), axis).shape[1:]}")
        except InputError as exc:
            raise InputError(f"{table.path} row {table.row_of(i)}: {exc}") from exc
        data = vol.data * a["mask"] if a["mask"] is not None else vol.data
        mask = a["mask"] if a["mask"] is not None else (a["labels"] > 0).astype(np.uint8)
        animals.append({"pid": table.participant_ids[i], "image": to_slices(data, axis), "labels": to_slices(a["labels"], axis), "mask": to_slices(mask, axis), "path": vol.path})
    n = len(animals)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = int(round(val_fraction * n)) if n >= 2 else 0
    if val_fraction > 0 and n >= 2:
        n_val = max(1, n_val)
    val_idx, train_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())

    def stack(idx, key):
        sl = [animals[j][key] for j in idx]
        keep = [animals[j]["labels"].reshape(len(animals[j]["labels"]), -1).any(axis=1) for j in idx]
        return np.concatenate([s[k] for s, k in zip(sl, keep)]) if sl else None

    xt, yt = stack(train_idx, "image"), stack(train_idx, "labels")
    if xt is None or not len(xt):
        raise InputError(f"{cohort}: no training slice holds any tissue label")
    xv, yv = (stack(val_idx, "image"), stack(val_idx, "labels")) if val_idx else (None, None)
    out = prepare_output_dir(out, force=force, marker="model.pt")
    info(f"segment-bg train: {len(train_idx)} training animals ({len(xt)} slices), {len(val_idx)} validation animals; {optimizer} lr {lr:g}, batch {batch_size}, {epochs} epochs")
    res = fit_unet(xt, yt, xv, yv, base=base, depth=depth, epochs=epochs, batch_size=batch_size, lr=lr, decay=decay, momentum=momentum, optimizer=optimizer, seed=seed, device=dev)
    # reference animal for background removal: median brain volume among the training animals
    vols = np.array([animals[j]["mask"].sum() for j in train_idx])
    ref = animals[train_idx[int(np.argsort(vols)[len(vols) // 2])]]
    template = reference_template(res.model, ref["image"], ref["mask"], device=dev, score=gbp_score)
    params = dict(image_column=image_column, label_column=label_column, mask_column=mask_column, axis=axis, base=base, depth=depth, epochs=epochs, batch_size=batch_size, lr=lr, decay=decay, momentum=momentum, optimizer=optimizer, val_fraction=val_fraction, gbp_score=gbp_score)
    reference = {"participant_id": ref["pid"], "image": ref["image"], "mask": ref["mask"], "template": template}
    path = save_segmenter(
        out / "model.pt",
        res.model,
        grid_shape=grid[0],
        affine=grid[1],
        axis=axis,
        reference=reference,
        training={**params, "seed": seed, "train_ids": [animals[j]["pid"] for j in train_idx], "val_ids": [animals[j]["pid"] for j in val_idx], "best_epoch": res.best_epoch, "seconds": round(res.seconds, 2)},
        history=res.history,
        force=force,
    )
    hist = pd.DataFrame(res.history)
    write_table(out / "history.tsv", hist, force=True)
    write_sidecar(path, provenance("segment-bg train", params, inputs=[cohort] + [a["path"] for a in animals], seed=seed, BestEpoch=res.best_epoch, Reference=ref["pid"], History=res.history[-1] if res.history else {}), force=True)
    return path
