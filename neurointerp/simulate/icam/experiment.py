"""The lesion experiment of papers/icam-vae-gan-attribution.txt (§4.2 data, Table 4 comparison).

:func:`evaluate_icam` scores a trained ICAM on images with ground-truth lesion masks:

* attribute-space classification accuracy (``E^a`` classification layer on the latent mean);
* NCC(-) (lesion -> healthy translations, the subject's own lesion mask) and NCC(+) (healthy ->
  lesion translations, the class-1 lesion frequency map, the expected change) of the absolute
  mean FA map (§4.1: "NCC between the absolute values of the attribution maps and the ground
  truth masks"), against the same scores of gradient and Grad-CAM maps of ICAM's *own* attribute
  encoder, computed with :func:`neurointerp.attribution.registry.attribute` (Table 4);
* variance maps: mean variance on the lesion sites (frequency map > 0) over the mean elsewhere in
  the brain, and the NCC of the variance map with the frequency map (healthy -> lesion draws);
* ``ncc_minus_chance``: the lesion -> healthy maps scored against the masks of *other* lesion
  subjects (shuffled): the share of NCC(-) that needs no subject-specific localisation.

Multi-class and regression ICAM (the paper's extensions): :func:`evaluate_icam_multiclass`,
:func:`evaluate_icam_regression`, :func:`lesion_experiment_tasks`.

:func:`lesion_experiment` runs synth -> train -> evaluate in memory; :func:`demo_step` runs the
on-disk pipeline (``synth lesions`` -> ``simulate train/apply --method icam``) for the demo.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

BASELINES = ("gradient", "gradcam")


def _ncc_rows(maps, truths):
    from neurointerp.evaluate.metrics import ncc

    vals = [ncc(np.abs(m), t) for m, t in zip(maps, truths)]
    vals = np.array([v for v in vals if np.isfinite(v)])
    return {"mean": float(vals.mean()) if len(vals) else float("nan"), "sd": float(vals.std()) if len(vals) else float("nan"), "n": int(len(vals))}


def evaluate_icam(model, x, labels, masks, frequency, *, n_samples: int = 16, seed: int = 0) -> dict:
    """Table-4-style scores of ICAM vs gradient / Grad-CAM on its attribute encoder (see module doc).

    ``x``: model inputs ``(N, 1, *S)``; ``labels`` ``(N,)`` 0 healthy / 1 lesion; ``masks``
    ``(N, *S)`` bool lesion masks; ``frequency`` ``(*S)`` class-1 lesion frequency map.
    """
    import torch

    from neurointerp.attribution.registry import attribute
    from neurointerp.simulate.icam.apply import translate
    from neurointerp.simulate.icam.networks import AttributeClassifier

    labels = np.asarray(labels).astype(int)
    masks = np.asarray(masks).astype(np.float32)
    frequency = np.asarray(frequency, dtype=np.float32)
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    res = translate(model, x, n_samples=n_samples, target=1 - labels, seed=seed)
    pred = res["predicted"]
    accuracy = float((pred == labels).mean())
    les, hea = labels == 1, labels == 0
    truth_minus = masks[les]
    truth_plus = np.broadcast_to(frequency, (int(hea.sum()),) + frequency.shape)
    table = {"icam": {"ncc_minus": _ncc_rows(res["mean"][les], truth_minus), "ncc_plus": _ncc_rows(res["mean"][hea], truth_plus)}}
    clf = AttributeClassifier(model.enc_a).eval()
    for method in BASELINES:
        kw = {"layer": "encoder.features"} if method == "gradcam" else {}
        # explain the lesion class: its evidence in lesion images, and what would make a healthy image a lesion one
        m_les, _ = attribute(clf, x[les], method, target=1, **kw)
        m_hea, _ = attribute(clf, x[hea], method, target=1, **kw)
        table[f"icam-ea-{method}"] = {"ncc_minus": _ncc_rows(m_les, truth_minus), "ncc_plus": _ncc_rows(m_hea, truth_plus)}
    var = res["variance"][hea].mean(axis=0)
    brain = np.abs(x[hea, 0].numpy()).mean(axis=0) > 1e-3
    sites = frequency > 0
    from neurointerp.evaluate.metrics import ncc

    variance = {
        "mean_on_sites": float(var[sites].mean()),
        "mean_elsewhere_in_brain": float(var[brain & ~sites].mean()),
        "ratio": float(var[sites].mean() / max(var[brain & ~sites].mean(), 1e-12)),
        "ncc_with_frequency": ncc(var, frequency),
        "n_samples": int(n_samples),
    }
    return {
        "accuracy": accuracy,
        "accuracy_by_class": {str(k): float((pred[labels == k] == k).mean()) for k in (0, 1)},
        "ncc": table,
        "ncc_minus_chance": _ncc_rows(res["mean"][les], _shuffled(truth_minus, seed)),  # the maps against other subjects' masks
        "variance": variance,
        "mean_rejection_draws": float(res["draws"].mean()),
        "n_test": {"healthy": int(hea.sum()), "lesion": int(les.sum())},
    }


def lesion_experiment(
    *,
    n_per_group: int = 128,
    n_test_per_group: int = 64,
    size: int = 32,
    polarity: str = "bright",
    epochs: int = 30,
    batch_size: int = 16,
    channels: int = 8,
    lr: float = 1e-3,
    n_samples: int = 16,
    lambdas: dict | None = None,
    seed: int = 0,
    device=None,
) -> dict:
    """Synthetic lesions in memory -> train ICAM -> :func:`evaluate_icam` on a held-out set."""
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.icam.train import fit_icam
    from neurointerp.synth.lesions import make_lesions

    train = make_lesions(n_per_group=n_per_group, size=size, polarity=polarity, seed=seed)
    test = make_lesions(n_per_group=n_test_per_group, size=size, polarity=polarity, seed=seed + 1000)
    spec = InputSpec((size, size), train.affine, normalize="zscore")
    t0 = time.perf_counter()
    model, history = fit_icam(spec.prepare(train.images), train.labels, channels=channels, epochs=epochs, batch_size=batch_size, lr=lr, lambdas=lambdas, seed=seed, device=device)
    train_s = time.perf_counter() - t0
    model = model.cpu()
    t0 = time.perf_counter()
    scores = evaluate_icam(model, spec.prepare(test.images), test.labels, test.masks, train.frequency, n_samples=n_samples, seed=seed)
    return {
        **scores,
        "train_seconds": round(train_s, 2),
        "evaluate_seconds": round(time.perf_counter() - t0, 2),
        "final_epoch": history[-1],
        "config": {"n_per_group": n_per_group, "n_test_per_group": n_test_per_group, "size": size, "polarity": polarity, "epochs": epochs, "batch_size": batch_size, "channels": channels, "lr": lr, "n_samples": n_samples, "seed": seed, "latent_shape": list(model.latent_shape)},
    }


def demo_step(out_dir, seed: int = 0, *, n_per_group: int = 96, epochs: int = 25, n_samples: int = 8) -> dict:
    """Demo: ``synth lesions`` -> ``simulate train --method icam`` -> ``simulate apply --method icam``
    on held-out subjects -> NCC table (ICAM mean FA map vs gradient / Grad-CAM on ``E^a``).

    Writes under ``out_dir``: ``lesions/`` (cohort), ``icam/`` (checkpoint), ``icam-apply/``
    (maps) and ``icam-table.json``; returns the table (also with the paths). About a minute on
    one CPU core with the defaults.
    """
    import pandas as pd

    from neurointerp.io import add_bidsignore, load_image, read_cohort, write_cohort, write_json
    from neurointerp.io.cohort import read_table_keeping_ids
    from neurointerp.simulate.icam.apply import apply_icam
    from neurointerp.simulate.icam.checkpoint import load_icam
    from neurointerp.simulate.icam.train import train_icam
    from neurointerp.synth.lesions import synth_lesions

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    table = synth_lesions(out_dir / "lesions", n_per_group=n_per_group, seed=seed, force=True)
    frame = read_table_keeping_ids(table)
    rng = np.random.default_rng(seed)
    test_idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(frame["label"] == k), size=max(4, n_per_group // 4), replace=False) for k in (0, 1)]))
    is_test = np.zeros(len(frame), dtype=bool)
    is_test[test_idx] = True
    base = Path(table).parent
    frame["image"] = [str(base / p) for p in frame["image"]]
    frame["mask"] = [str(base / p) for p in frame["mask"]]
    train_csv = write_cohort(out_dir / "lesions" / "train.csv", frame[~is_test], image_columns=("image", "mask"), force=True)
    test_csv = write_cohort(out_dir / "lesions" / "test.csv", frame[is_test], image_columns=("image", "mask"), force=True)
    add_bidsignore(out_dir / "lesions", ["train.csv", "test.csv"])  # the split tables are not BIDS files of that dataset
    ckpt = train_icam(train_csv, out_dir / "icam", space="synthetic", epochs=epochs, seed=seed, threads=None, device="cpu", force=True)
    preds = apply_icam(test_csv, ckpt, out_dir / "icam-apply", n_samples=n_samples, seed=seed, device="cpu", force=True)
    # score the written maps, and the baselines on the same model
    icam = load_icam(ckpt)
    test = read_cohort(test_csv)
    x = icam.spec.prepare(np.stack([load_image(p, ndim=2).data for p in test.images]))
    labels = test.frame["label"].astype(int).to_numpy()
    masks = np.stack([load_image(Path(test_csv).parent / p, ndim=2, allow_empty=True).data > 0.5 for p in test.frame["mask"]])
    frequency = load_image(out_dir / "lesions" / "truth" / "desc-frequency_lesionmap.nii.gz", ndim=2).data
    scores = evaluate_icam(icam.model, x, labels, masks, frequency, n_samples=n_samples, seed=seed)
    p = read_table_keeping_ids(preds, text_columns=("label", "predicted"))
    result = {
        **scores,
        "apply_accuracy": float((p["predicted"].astype(str) == p["label"].astype(str)).mean()),
        "seconds": round(time.perf_counter() - t0, 1),
        "paths": {"cohort": str(table), "checkpoint": str(ckpt), "maps": str(out_dir / "icam-apply"), "predictions": str(preds)},
    }
    write_json(out_dir / "icam-table.json", result, force=True)
    return result


def _shuffled(masks, seed=0):
    from neurointerp.simulate.vagan.experiment import shuffled

    return shuffled(masks, seed)


def evaluate_icam_multiclass(model, x, labels, masks, frequency, *, n_samples: int = 8, seed: int = 0) -> dict:
    """Multi-class ICAM on :func:`~neurointerp.synth.lesions.make_lesion_classes` images.

    * accuracy of the attribute layer (K classes) and per class;
    * ``to_healthy``: images of a lesion class translated to class 0 -- NCC of |mean FA map| with
      the subject's own lesion mask, and the chance level with shuffled masks of the same class;
    * ``from_healthy``: healthy images translated to each lesion class ``c`` -- NCC with class c's
      frequency map, and with the frequency map of the *other* lesion class(es) (wrong sites);
    * ``default_target``: the share of images whose default target (the most likely other
      class) is the class the attribute layer ranks second, and ``reached``: the mean
      P(target class) of the translated images.
    """
    import torch

    from neurointerp.evaluate.metrics import ncc
    from neurointerp.simulate.icam.apply import translate

    labels = np.asarray(labels).astype(int)
    masks = np.asarray(masks).astype(np.float32)
    frequency = np.asarray(frequency, dtype=np.float32)
    k = frequency.shape[0]
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    les = labels > 0
    to_h = translate(model, x[les], n_samples=n_samples, target=np.zeros(int(les.sum()), dtype=int), seed=seed)
    hea = np.flatnonzero(labels == 0)
    from_h, wrong = {}, {}
    for c in range(1, k):
        r = translate(model, x[hea], n_samples=n_samples, target=np.full(len(hea), c), seed=seed + c)
        from_h[str(c)] = _ncc_rows(r["mean"], np.broadcast_to(frequency[c], r["mean"].shape))
        others = [frequency[o] for o in range(1, k) if o != c]
        wrong[str(c)] = float(np.mean([ncc(np.abs(m), f) for m in r["mean"] for f in others]))
    default = translate(model, x, n_samples=1, seed=seed)
    probs = default["probability"]
    second = np.argsort(probs, axis=1)[:, -2]
    pred = default["predicted"]
    return {
        "accuracy": float((pred == labels).mean()),
        "accuracy_by_class": {str(c): float((pred[labels == c] == c).mean()) for c in range(k)},
        "to_healthy": {"ncc": _ncc_rows(to_h["mean"], masks[les]), "chance_shuffled": _ncc_rows(to_h["mean"], _shuffled_within(masks[les], labels[les], seed)),
                       "reached": float(to_h["reached"].mean())},
        "from_healthy": {"ncc": from_h, "ncc_wrong_class_sites": wrong},
        "default_target_is_second_most_likely": float((default["target"] == second).mean()),
        "default_reached": float(default["reached"].mean()),
        "n_test": {str(c): int((labels == c).sum()) for c in range(k)},
    }


def _shuffled_within(masks, groups, seed):
    out = masks.copy()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) > 1:
            out[idx] = _shuffled(masks[idx], seed)
    return out


def evaluate_icam_regression(model, x, ages, masks, *, shift: float = 10.0, young: float = 45.0, old: float = 80.0, n_samples: int = 8, seed: int = 0) -> dict:
    """Regression ICAM on :func:`~neurointerp.synth.lesions.make_lesion_ages` images ("brain age").

    * ``r`` and ``mae``: the attribute layer's predicted age against the true age;
    * ``to_young``: subjects of ``(young + old) / 2 + 5`` years or more translated to ``young``
      (45: no lesion load) -- the translation should remove their lesions: NCC of |mean FA map|
      with the own lesion mask, its chance level with shuffled masks, and the *signed* NCC
      (negative: the lesions darken);
    * ``to_old``: subjects of ``(young + old) / 2 - 5`` years or less translated to ``old`` --
      the lesions should appear at the population's sites: NCC of |mean FA map| with the mean
      lesion mask, signed NCC (positive: brighter there);
    * ``older``/``younger``: translations by ``+-shift`` years from the predicted age, with
      ``reached_change`` (the mean change of the predicted age of the translated images; ideally
      ``+-shift``) and the signed NCC with the own mask.
    """
    import torch

    from neurointerp.evaluate.metrics import ncc
    from neurointerp.simulate.icam.apply import translate

    ages = np.asarray(ages, dtype=np.float64)
    masks = np.asarray(masks).astype(np.float32)
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    mid = (young + old) / 2
    out = {}
    pred = None
    for sign, name in ((1, "older"), (-1, "younger")):
        r = translate(model, x, n_samples=n_samples, target_shift=sign * shift, seed=seed)
        pred = r["predicted"]
        out[name] = {
            "reached_change": float((r["reached"] - r["predicted"]).mean()),
            "signed_ncc": float(np.nanmean([ncc(m, t) for m, t in zip(r["mean"], masks)])),
        }
    sel = ages >= mid + 5
    r = translate(model, x[sel], n_samples=n_samples, target_value=young, seed=seed)
    out["to_young"] = {
        "ncc": _ncc_rows(r["mean"], masks[sel]),
        "chance_shuffled": _ncc_rows(r["mean"], _shuffled(masks[sel], seed)),
        "signed_ncc": float(np.nanmean([ncc(m, t) for m, t in zip(r["mean"], masks[sel])])),
        "reached": float(r["reached"].mean()),
        "max_abs_prior_z": float(np.abs(r["prior_z"]).max()),
    }
    sel = ages <= mid - 5
    r = translate(model, x[sel], n_samples=n_samples, target_value=old, seed=seed)
    freq = masks.mean(axis=0)
    out["to_old"] = {
        "ncc_with_mean_mask": _ncc_rows(r["mean"], np.broadcast_to(freq, r["mean"].shape)),
        "signed_ncc_with_mean_mask": float(np.nanmean([ncc(m, freq) for m in r["mean"]])),
        "reached": float(r["reached"].mean()),
        "max_abs_prior_z": float(np.abs(r["prior_z"]).max()),
    }
    return {
        "r": float(np.corrcoef(pred, ages)[0, 1]),
        "mae": float(np.abs(pred - ages).mean()),
        "mae_of_mean_prediction": float(np.abs(ages - ages.mean()).mean()),
        "shift": float(shift),
        **out,
        "n_test": int(len(ages)),
    }


def lesion_experiment_tasks(task: str, *, n_per_group: int = 64, n_test_per_group: int = 24, size: int = 32, epochs: int = 30, batch_size: int = 16,
                            channels: int = 8, lr: float = 1e-3, n_samples: int = 8, n_classes: int = 3, shift: float = 10.0, seed: int = 0, device=None) -> dict:
    """Multi-class (``n_per_group`` per class) or regression (``2 n_per_group`` images) lesion
    phantoms in memory -> train ICAM -> :func:`evaluate_icam_multiclass` / :func:`evaluate_icam_regression`."""
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.icam.train import fit_icam
    from neurointerp.synth.lesions import make_lesion_ages, make_lesion_classes

    if task == "multiclass":
        train = make_lesion_classes(n_per_class=n_per_group, n_classes=n_classes, size=size, seed=seed)
        test = make_lesion_classes(n_per_class=n_test_per_group, n_classes=n_classes, size=size, seed=seed + 1000)
    elif task == "regression":
        train = make_lesion_ages(n=2 * n_per_group, size=size, seed=seed)
        test = make_lesion_ages(n=2 * n_test_per_group, size=size, seed=seed + 1000)
    else:
        raise ValueError(f"task {task!r}: multiclass or regression (binary: lesion_experiment)")
    spec = InputSpec((size, size), train.affine, normalize="zscore")
    t0 = time.perf_counter()
    model, history = fit_icam(spec.prepare(train.images), train.labels, task=task, channels=channels, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device)
    train_s = time.perf_counter() - t0
    model = model.cpu()
    t0 = time.perf_counter()
    xt = spec.prepare(test.images)
    if task == "multiclass":
        scores = evaluate_icam_multiclass(model, xt, test.labels, test.masks, train.frequency, n_samples=n_samples, seed=seed)
    else:
        scores = evaluate_icam_regression(model, xt, test.labels, test.masks, shift=shift, n_samples=n_samples, seed=seed)
    return {
        "task": task,
        **scores,
        "train_seconds": round(train_s, 2),
        "evaluate_seconds": round(time.perf_counter() - t0, 2),
        "final_epoch": history[-1],
        "config": {"n_per_group": n_per_group, "n_test_per_group": n_test_per_group, "size": size, "epochs": epochs, "batch_size": batch_size, "channels": channels,
                   "lr": lr, "n_samples": n_samples, "n_classes": n_classes if task == "multiclass" else None, "shift": shift if task == "regression" else None, "seed": seed},
    }


def format_table(result: dict) -> str:
    """The Table-4-style comparison as Markdown."""
    lines = ["| method | NCC (-) lesion->healthy | NCC (+) healthy->lesion |", "|---|---|---|"]
    names = {"icam": "ICAM (mean FA map)", "icam-ea-gradient": "ICAM-E^a gradient", "icam-ea-gradcam": "ICAM-E^a Grad-CAM", "vagan": "VA-GAN (lesion -> healthy only)"}

    def cell(v):
        return "N/A" if not v.get("n") else f"{v['mean']:.3f} ± {v['sd']:.3f}"

    for key, row in result["ncc"].items():
        name = f"VA-GAN, L1 weight {key[len('vagan-l'):]} (lesion -> healthy only)" if key.startswith("vagan-l") else names.get(key, key)
        lines.append(f"| {name} | {cell(row['ncc_minus'])} | {cell(row['ncc_plus'])} |")
    v = result["variance"]
    lines.append("")
    lines.append(f"attribute-space accuracy {result['accuracy']:.3f}; variance on lesion sites / elsewhere {v['ratio']:.2f} (NCC with frequency map {v['ncc_with_frequency']:.3f})")
    return "\n".join(lines)
