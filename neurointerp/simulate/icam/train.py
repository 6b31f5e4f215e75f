"""Training ICAM (papers/icam-vae-gan-attribution.txt §3; ``simulate train --method icam``).

:func:`fit_icam` trains on arrays in memory; :func:`train_icam` reads a cohort and writes a checkpoint.

One step draws ``B`` images of class 0 (``x``) and ``B`` of class 1 (``y``), unpaired, and:

1. updates the content discriminator ``D^c`` to tell ``E^c(x)`` from ``E^c(y)``;
2. encodes ``z^c = E^c``, ``z^a ~ q(E^a)``; draws ``z_r`` of the *opposite* class by rejection
   sampling (:mod:`~neurointerp.simulate.icam.sampling`; a row the classifier has not accepted
   within the draw budget -- early in training -- falls back to the attribute of the paired image
   of the other class);
3. generates reconstructions ``G(z^c_x, z^a_x)``, swapped translations ``v = G(z^c_x, z^a_y)``,
   ``mu = G(z^c_y, z^a_x)``, random translations ``G(z^c, z_r)`` and cycle reconstructions
   ``G(E^c(v), E^a(mu))`` (Eq. 4);
4. updates the domain discriminator ``D`` (real/fake on real vs generated, class head on real images);
5. updates ``E^c, E^a, G`` with the generator side of Eq. 5.

Multi-class and regression (the paper's §5 extensions; :func:`pair_batches`): the ``B`` images
``x`` are paired with ``B`` images ``y`` of *another* class (target value); each image is
translated towards its partner's class (value), ``z_r`` is drawn for the partner's class by
rejection sampling (arg max of K logits) or, for regression, from the prior conditioned on the
partner's value; the BCE terms become cross-entropy or smooth L1 on the standardised target
(:func:`~neurointerp.simulate.icam.losses.head_loss`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError
from neurointerp.runs.context import runs_as, icam_arguments


def pair_batches(labels: np.ndarray, batch_size: int, rng, task: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """One epoch of ``(a rows, b rows)``: ``batch_size // 2`` pairs per step, ``b[i]`` of another
    class (multi-class) or another target value (regression) than ``a[i]`` -- the generalisation of
    :func:`~neurointerp.simulate.train.balanced_batches` (class 0 with class 1) to the extensions.

    Multi-class: the ``a`` rows are class-balanced (each class in turn, in a random order), the
    partner's class is uniform over the other classes and each class's images are cycled in a
    new random order on each pass. Regression: two random orders, partners with equal targets
    re-drawn. Steps per epoch: ``ceil(N / batch_size)``.
    """
    half = max(1, batch_size // 2)
    n = len(labels)
    steps = int(np.ceil(n / (2 * half)))
    total = steps * half
    if task == "regression":
        a = np.resize(rng.permutation(n), total)
        b = np.resize(rng.permutation(n), total)
        for _ in range(10):
            same = np.flatnonzero(labels[a] == labels[b])
            if not len(same):
                break
            b[same] = rng.integers(0, n, len(same))
        keep = labels[a] != labels[b]
        a, b = a[keep], b[keep]
        steps = int(np.ceil(len(a) / half))
    else:
        classes = np.unique(labels)
        rows = {c: np.flatnonzero(labels == c) for c in classes}
        cursor = {c: 0 for c in classes}
        order = {c: rng.permutation(rows[c]) for c in classes}

        def take(c):
            if cursor[c] >= len(order[c]):
                order[c] = rng.permutation(rows[c])
                cursor[c] = 0
            cursor[c] += 1
            return order[c][cursor[c] - 1]

        a_cls = rng.permutation(np.resize(classes, total))
        b_cls = np.array([rng.choice(classes[classes != c]) for c in a_cls])
        a = np.array([take(c) for c in a_cls])
        b = np.array([take(c) for c in b_cls])
    return [(a[s * half : (s + 1) * half], b[s * half : (s + 1) * half]) for s in range(steps) if len(a[s * half : (s + 1) * half])]


def fit_icam(
    x,
    labels,
    *,
    task: str = "binary",
    latent_shape=None,
    channels: int = 8,
    n_res: int = 2,
    lambdas: dict | None = None,
    epochs: int = 30,
    batch_size: int = 16,
    lr: float = 1e-3,
    lr_content_ratio: float = 0.4,
    max_draws: int = 64,
    seed: int = 0,
    device=None,
    progress: bool = False,
):
    """Train ICAM on model inputs ``x`` ``(N, 1, *S)`` with ``labels`` ``(N,)``.

    ``task``: ``binary`` (labels 0/1), ``multiclass`` (labels 0..K-1, K >= 3) or ``regression``
    (labels: the target values; the networks work on them standardised by their mean and sd,
    which the model keeps). The binary step is unchanged by the extensions (same draws, same
    numbers for the same seed).

    ``lambdas`` overrides entries of :data:`~neurointerp.simulate.icam.losses.LAMBDAS`. The
    content discriminator's learning rate is ``lr * lr_content_ratio`` (authors: 1e-4 and 4e-5).
    Returns ``(model in eval mode, history: list of per-epoch dicts)``.
    """
    import torch

    from neurointerp.simulate.icam import losses as L
    from neurointerp.simulate.icam.networks import ICAM, TASKS
    from neurointerp.simulate.icam.sampling import conditional_sample, rejection_sample

    if task not in TASKS:
        raise InputError(f"--task {task}: choose {', '.join(TASKS)} for --method icam")
    if epochs < 1:
        raise InputError(f"--epochs {epochs}: must be at least 1")
    if batch_size < 2:
        raise InputError(f"--batch-size {batch_size}: must be at least 2")
    lam = dict(L.LAMBDAS)
    for k, v in (lambdas or {}).items():
        if k not in lam:
            raise InputError(f"unknown ICAM loss weight '{k}' (choose {', '.join(lam)})")
        if v is not None:
            if v < 0:
                raise InputError(f"ICAM loss weight {k}={v}: must be >= 0")
            lam[k] = float(v)
    device = device or torch.device("cpu")
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    extra = {}
    if task == "regression":
        values = np.asarray(labels, dtype=np.float64)
        if not np.isfinite(values).all():
            raise InputError("ICAM regression needs finite target values")
        if len(np.unique(values)) < 2:
            raise InputError("ICAM regression needs at least two different target values")
        extra = {"target_mean": float(values.mean()), "target_sd": float(values.std()), "target_range": (float(values.min()), float(values.max()))}
        labels = (values - extra["target_mean"]) / extra["target_sd"]
    else:
        labels = np.asarray(labels).astype(int)
        n_classes = 2 if task == "binary" else int(labels.max()) + 1
        if task == "multiclass":
            extra = {"n_classes": n_classes}
        idx = [np.flatnonzero(labels == k) for k in range(n_classes)]
        if min(len(i) for i in idx) == 0:
            if task == "binary":
                raise InputError("ICAM needs training images of both classes (found only one class)")
            raise InputError(f"ICAM needs training images of every class (class {[len(i) for i in idx].index(0)} has none)")
        if task == "binary" and set(np.unique(labels)) - {0, 1}:
            raise InputError("binary ICAM needs labels 0 and 1 (more classes: task multiclass)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    try:
        model = ICAM(tuple(x.shape[2:]), latent_shape, channels=channels, n_res=n_res, task=task, **extra).to(device)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    lat = model.latent_shape
    gen_params = [*model.enc_c.parameters(), *model.enc_a.parameters(), *model.gen.parameters()]
    opt_g = torch.optim.Adam(gen_params, lr=lr, betas=(0.5, 0.999), weight_decay=1e-4)
    opt_d = torch.optim.Adam(model.dis.parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=1e-4)
    opt_dc = torch.optim.Adam(model.dis_c.parameters(), lr=lr * lr_content_ratio, betas=(0.5, 0.999), weight_decay=1e-4)
    history = []
    from neurointerp.progress import track
    from neurointerp.simulate.train import balanced_batches

    lab_all = torch.as_tensor(labels, dtype=torch.long if task == "multiclass" else torch.float32)
    epochs_iter = track(range(epochs), description="icam train", total=epochs) if progress else range(epochs)
    for epoch in epochs_iter:
        model.train()
        batches = balanced_batches(idx, batch_size, rng) if task == "binary" else pair_batches(labels, batch_size, rng, task)
        steps = len(batches)
        sums: dict[str, float] = {}
        for b0, b1 in batches:
            X = x[np.concatenate([b0, b1])].to(device)
            B = len(b0)

            def swap(t):
                return torch.cat([t[B:], t[:B]])

            if task == "binary":
                lab = torch.cat([torch.zeros(B), torch.ones(B)]).to(device)
                tgt = 1.0 - lab
            else:  # the partner's class / target value is the target of each row's translation
                lab = lab_all[np.concatenate([b0, b1])].to(device)
                tgt = swap(lab)

            # 1. content discriminator
            with torch.no_grad():
                c_det = model.enc_c(X)
            loss_dc = lam["content_adv"] * L.head_loss(task, model.dis_c(c_det), lab)
            opt_dc.zero_grad(set_to_none=True)
            loss_dc.backward()
            opt_dc.step()

            # 2. encode, sample attribute vectors of the partner's class (value)
            c = model.enc_c(X)
            mu, logvar = model.enc_a(X)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            z_swap = swap(z)
            if task == "regression":
                z_r, ok = conditional_sample(model.enc_a, tgt, lat, device=device)[0], torch.ones(2 * B, dtype=torch.bool, device=device)
            else:
                z_r, ok, _ = rejection_sample(model.enc_a, tgt.long(), lat, max_draws=max_draws, device=device)
                z_r = torch.where(ok.reshape(-1, *([1] * len(lat))), z_r, z_swap.detach())

            # 3. generate: reconstruction, swapped translation, random translation
            out = model.gen(torch.cat([c, c, c]), torch.cat([z, z_swap, z_r]))
            rec, trans, rand = out[: 2 * B], out[2 * B : 4 * B], out[4 * B :]
            c_t = model.enc_c(trans)
            mu_t, _ = model.enc_a(trans)
            cyc = model.gen(c_t, swap(mu_t))  # G(E^c(v), E^a(mu)) -> x, G(E^c(mu), E^a(v)) -> y
            mu_r, _ = model.enc_a(rand)
            fakes = torch.cat([trans, rand])
            fake_tgt = torch.cat([tgt, tgt])

            # 4. domain discriminator
            rf_real, cls_real = model.dis(X)
            rf_fake, _ = model.dis(fakes.detach())
            loss_d = lam["domain_adv"] * (L.bce(rf_real, 1.0) + L.bce(rf_fake, 0.0)) + lam["domain_bce_real"] * L.head_loss(task, cls_real, lab)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            # 5. encoders and generator (Eq. 5, generator side)
            rf_g, cls_g = model.dis(fakes)
            terms = {
                "content_adv": L.confusion_loss(task, model.dis_c(c)),
                "domain_adv": L.bce(rf_g, 1.0),
                "domain_bce": L.head_loss(task, cls_g, fake_tgt),
                "attr_bce": L.head_loss(task, model.enc_a.classify(z), lab),
                "kl": L.kl_normal(mu, logvar),
                "fa_map": L.l1(trans, X) + L.l1(rand, X),
                "latent": L.l1(mu_r, z_r),
                "rec": L.l1(rec, X) + L.l2(rec, X) + L.l1(cyc, X) + L.l2(cyc, X),
                "content_l2": c.pow(2).mean(),
            }
            loss_g = sum(lam[k] * v for k, v in terms.items())
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()

            with torch.no_grad():
                head = model.enc_a.classify(mu)
                if task == "binary":
                    fit = {"accuracy": float(((head[:, 0] > 0).float() == lab).float().mean())}
                elif task == "multiclass":
                    fit = {"accuracy": float((head.argmax(1) == lab).float().mean())}
                else:  # mean absolute error in label units
                    fit = {"mae": float((head[:, 0] - lab).abs().mean()) * model.target_sd}
            rows = {"loss_g": float(loss_g.detach()), "loss_d": float(loss_d.detach()), "loss_dc": float(loss_dc.detach()), **fit, "rejection_fallback": float((~ok).float().mean()), **{k: float(v.detach()) for k, v in terms.items()}}
            for k, v in rows.items():
                sums[k] = sums.get(k, 0.0) + v
        history.append({"epoch": epoch + 1, **{k: v / steps for k, v in sums.items()}})
    model.eval()
    return model, history


def image_shape(path) -> tuple[int, ...]:
    """Spatial shape of a NIfTI image from its header: ``X x Y`` for ``X x Y`` or ``X x Y x 1``."""
    from neurointerp.io.headers import read_header

    shape = list(read_header(path).shape)  # the header checks of every reader (orientation, size, dtype)
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    if len(shape) not in (2, 3):
        raise InputError(f"{path}: image of shape {tuple(shape)} is neither 2D nor 3D")
    return tuple(shape)


def image_ndim(path) -> int:
    """Spatial dimensions of a NIfTI image: 2 for ``X x Y`` or ``X x Y x 1``, else 3."""
    return len(image_shape(path))


def reference_row(cohort) -> int:
    """Index of the image that defines the grid: the first with the cohort's most common shape.

    Headers only. A cohort mixing 2D and 3D images is refused naming the first image whose
    dimensionality differs from most images (not the first image of the table, which may be
    the odd one out).
    """
    from collections import Counter

    shapes = []
    for i, path in enumerate(cohort.images):
        try:
            shapes.append(image_shape(path))
        except InputError as exc:
            raise InputError(f"{cohort.path} row {cohort.rows[i]}: {exc}") from exc
    ndims = Counter(len(s) for s in shapes)
    ndim = max(ndims, key=lambda d: (ndims[d], -[len(s) for s in shapes].index(d)))
    for i, s in enumerate(shapes):
        if len(s) != ndim:
            raise InputError(
                f"{cohort.path} row {cohort.rows[i]}: {cohort.images[i]}: {len(s)}D image ({'x'.join(map(str, s))}) "
                f"where the cohort's other images are {ndim}D"
            )
    counts = Counter(shapes)
    common = max(counts, key=lambda s: (counts[s], -shapes.index(s)))
    return shapes.index(common)


def _load_arrays(cohort, spec):
    from neurointerp.io import load_image

    arrays = []
    for i in range(len(cohort)):
        try:
            vol = load_image(cohort.images[i], ndim=spec.ndim)
        except InputError as exc:
            raise InputError(f"{cohort.path} row {cohort.rows[i]}: {exc}") from exc
        spec.check_grid(vol.shape, vol.affine, where=f"{cohort.path} row {cohort.rows[i]}: {cohort.images[i]}")
        arrays.append(vol.data)
    return spec.prepare(np.stack(arrays))


@runs_as("simulate train", adapt=icam_arguments)
def train_icam(
    cohort: str | os.PathLike,
    out: str | os.PathLike,
    *,
    image_column: str = "image",
    label_column: str = "label",
    normalize: str = "zscore",
    space: str | None = None,
    latent_shape=None,
    channels: int = 8,
    n_res: int = 2,
    lambdas: dict | None = None,
    epochs: int = 30,
    batch_size: int = 16,
    lr: float = 1e-3,
    max_draws: int = 64,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    force: bool = False,
    task: str = "auto",
) -> Path:
    """Train ICAM on a cohort; writes ``OUT/icam.pt``, ``OUT/history.tsv``, ``OUT/icam.json``.

    The grid (shape + affine) is that of the first image with the cohort's most common shape
    (:func:`reference_row`); every image must share it. ``task``: ``auto`` (binary for two
    classes, multi-class for more), ``binary``, ``multiclass`` or ``regression`` (the label
    column holds numbers, e.g. age). Classes are the cohort's labels in sorted order (class 0
    first); every class needs at least two images. Same arguments as
    ``neurointerp simulate train --method icam``; returns the checkpoint path.
    """
    params = {k: v for k, v in locals().items() if k != "force"}
    import pandas as pd

    from neurointerp.io import load_image, prepare_output_dir, provenance, read_cohort, write_json, write_table
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.icam.checkpoint import icam_dict, save_icam
    from neurointerp.simulate.icam.losses import LAMBDAS
    from neurointerp.train.device import resolve_device, set_threads

    set_threads(threads)
    dev = resolve_device(device)
    from neurointerp.simulate.icam.networks import TASKS

    if task not in ("auto", *TASKS):
        raise InputError(f"--task {task}: choose auto, {', '.join(TASKS)}")
    if task == "regression":
        coh = read_cohort(cohort, numeric=[label_column], image_column=image_column, label_column=label_column, min_classes=0)
        classes = []
    else:
        coh = read_cohort(cohort, image_column=image_column, label_column=label_column, min_classes=2)
        classes = coh.classes
        if task == "auto":
            task = "binary" if len(classes) == 2 else "multiclass"
        if task == "binary" and len(classes) != 2:
            raise InputError(f"{cohort}: column '{label_column}' has {len(classes)} classes ({', '.join(classes[:6])}{', ...' if len(classes) > 6 else ''}); --task binary needs 2")
        if task == "multiclass" and len(classes) < 3:
            raise InputError(f"{cohort}: column '{label_column}' has {len(classes)} classes; --task multiclass needs at least 3 (2 classes: binary)")
        counts = coh.frame[label_column].astype(str).value_counts()
        few = [c for c in classes if counts.get(c, 0) < 2]
        if few:
            raise InputError(
                f"{cohort}: class {few[0]!r} of column '{label_column}' has {int(counts.get(few[0], 0))} image; ICAM needs at least 2 per class"
                + (" (a continuous target? use --task regression)" if len(classes) > 2 else "")
            )
    ref = reference_row(coh)
    ndim = image_ndim(coh.images[ref])
    try:
        first = load_image(coh.images[ref], ndim=ndim)
    except InputError as exc:
        raise InputError(f"{coh.path} row {coh.rows[ref]}: {exc}") from exc
    spec = InputSpec(first.shape, first.affine, space=space or "unknown", normalize=normalize)
    x = _load_arrays(coh, spec)
    if task == "regression":
        labels = coh.frame[label_column].astype(float).to_numpy()
        if len(np.unique(labels)) < 2:
            raise InputError(f"{cohort}: column '{label_column}' has one value only; regression needs different target values")
    else:
        labels = np.array([classes.index(str(v)) for v in coh.frame[label_column].astype(str)])
    out = prepare_output_dir(out, force=force)
    model, history = fit_icam(
        x, labels, task=task, latent_shape=latent_shape, channels=channels, n_res=n_res, lambdas=lambdas, epochs=epochs,
        batch_size=batch_size, lr=lr, max_draws=max_draws, seed=seed, device=dev, progress=True,
    )
    lam = {**LAMBDAS, **{k: float(v) for k, v in (lambdas or {}).items() if v is not None}}
    training = {**params, "task": task, "lambdas": lam, "participant_ids": coh.participant_ids, "ndim": ndim}
    if task == "regression":
        training["target"] = {"column": label_column, "mean": float(labels.mean()), "sd": float(labels.std()), "min": float(labels.min()), "max": float(labels.max())}
    else:
        training["n_per_class"] = [int((labels == k).sum()) for k in range(len(classes))]
    path = save_icam(out / "icam.pt", icam_dict(model, spec, classes, training, {"history": history}))
    write_table(out / "history.tsv", pd.DataFrame(history), force=True)
    write_json(out / "icam.json", provenance("simulate train --method icam", params, inputs=[cohort, *coh.images], seed=seed, Task=task, Classes=classes, Space=spec.space, Lambdas=lam), force=True)
    return path
