"""Applying ICAM to single images (``simulate apply --method icam``; §3.2-3.3, Fig. 4).

For every image: encode content and attribute, classify with the attribute encoder (class
probability), draw ``n_samples`` attribute vectors of the *opposite* class by rejection sampling
(no paired image of the other class is needed), translate ``t_s = G(E^c(x), z_s)`` and form the FA
maps ``M_s = t_s - x``. Written per subject, on the input's grid and affine, with sidecars::

    sub-<id>_space-<s>_desc-icammean_attribution.nii.gz       mean FA map over the draws
    sub-<id>_space-<s>_desc-icamvariance_attribution.nii.gz   voxelwise variance of the FA maps
    sub-<id>_space-<s>_desc-icamtranslated_T1w.nii.gz         mean translated image
    sub-<id>_space-<s>_desc-icamsamples_T1w.nii.gz            all translated images (--save-samples; 4D)

plus ``predictions.tsv`` (class probabilities, predicted and target class, mean rejection draws).
Intensities are those of the model input (after the checkpoint's normalisation).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError, NeurointerpError

DIRECTIONS = ("auto", "label")


def translate(model, x, *, n_samples: int = 16, target=None, max_draws: int = 1000, seed: int = 0, seeds=None, batch_size: int = 16, keep_samples: bool = False, where: str = "",
              source=None, target_value=None, target_shift=None):
    """ICAM translation of model inputs ``x`` ``(N, 1, *S)`` into another class (or target value).

    Classification (binary, multi-class): ``target``: ``(N,)`` class to translate to; None: the
    most likely class other than the source class (binary: the opposite class), where ``source``
    ``(N,)`` is the class translated from (None: the attribute encoder's predicted class).
    Regression: the target value in label units is ``target_value`` (scalar or ``(N,)``) or the
    source value plus ``target_shift`` (source: ``source`` ``(N,)`` in label units, else the
    predicted value); attribute vectors are drawn from the prior conditioned on that value
    (:func:`~neurointerp.simulate.icam.sampling.conditional_sample`).

    Returns numpy arrays: ``probability`` (binary: P(class 1) ``(N,)``; multi-class: ``(N, K)``;
    regression: None), ``predicted`` (class, or value in label units), ``target`` (class, or value),
    ``mean``/``variance`` FA maps and ``translated`` (mean image) ``(N, *S)``, ``draws`` (mean
    rejection draws per sample, ``(N,)``), ``reached`` (mean over the draws of P(target class) of
    the translated image under the attribute encoder, or its predicted value for regression),
    ``prior_z`` (regression: z-score of the target under the prior, see
    :func:`~neurointerp.simulate.icam.sampling.prior_zscore`; targets outside the training range
    of the model are flagged with a warning) and, with ``keep_samples``,
    ``samples`` ``(N, n_samples, *S)``. ``seeds``: one seed per image (its draws then do not
    depend on the batch it is in, e.g. on the SLURM array split); otherwise one stream from ``seed``.
    """
    import torch

    from neurointerp.simulate.icam.sampling import conditional_sample, prior_zscore, sample_class

    if n_samples < 1:
        raise InputError(f"--n-samples {n_samples}: must be at least 1")
    task = getattr(model, "task", "binary")
    regression = task == "regression"
    if regression and (target_value is None) == (target_shift is None):
        raise InputError("a regression ICAM translates to a target value: give exactly one of --target-value or --target-shift")
    if not regression and (target_value is not None or target_shift is not None):
        raise InputError(f"--target-value/--target-shift apply to a regression ICAM; this one is {task} (use --target CLASS)")
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    gen = torch.Generator().manual_seed(int(seed))
    if seeds is not None and len(seeds) != len(x):
        raise ValueError(f"{len(seeds)} seeds for {len(x)} images")

    def per_image(v, i, dtype):
        if v is None:
            return None
        a = np.asarray(v, dtype=dtype)
        return torch.as_tensor(np.broadcast_to(a, (len(x),))[i : i + batch_size].copy(), device=device)

    out: dict[str, list] = {k: [] for k in ("probability", "predicted", "target", "mean", "variance", "translated", "draws", "reached", "prior_z", "samples")}
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            c = model.enc_c(xb)
            mu, _ = model.enc_a(xb)
            head = model.enc_a.classify(mu)
            src = per_image(source, i, np.float64 if regression else np.int64)
            if task == "binary":
                p = torch.sigmoid(head[:, 0])
                pred = (p > 0.5).long()
                if target is not None:
                    tgt = per_image(target, i, np.int64)
                else:
                    tgt = 1 - (pred if src is None else src)
            elif task == "multiclass":
                p = torch.softmax(head, dim=1)
                pred = p.argmax(1)
                if target is not None:
                    tgt = per_image(target, i, np.int64)
                else:  # the most likely class other than the source class
                    tgt = p.scatter(1, (pred if src is None else src)[:, None], -1.0).argmax(1)
            else:
                pred = model.unstandardise(head[:, 0].double())
                tgt = per_image(target_value, i, np.float64) if target_value is not None else (pred if src is None else src) + float(target_shift)
                tgt_std = model.standardise(tgt).float()
            s1 = torch.zeros_like(xb[:, 0])
            s2 = torch.zeros_like(xb[:, 0])
            draws = torch.zeros(len(xb), device=device)
            reached = torch.zeros(len(xb), dtype=torch.float64, device=device)
            samples = []
            g = gen if seeds is None else [torch.Generator().manual_seed(int(v)) for v in seeds[i : i + batch_size]]
            for _ in range(n_samples):
                if regression:
                    z, d = conditional_sample(model.enc_a, tgt_std, model.latent_shape, generator=g, device=device)
                else:
                    z, d = sample_class(model.enc_a, tgt, model.latent_shape, max_draws=max_draws, generator=g, device=device, where=where)
                t = model.gen(c, z)[:, 0]
                m = t - xb[:, 0]
                s1 += m
                s2 += m * m
                draws += d.float()
                h = model.enc_a.classify(model.enc_a(t[:, None])[0])
                if task == "binary":
                    pt = torch.sigmoid(h[:, 0]).double()
                    reached += torch.where(tgt == 1, pt, 1 - pt)
                elif task == "multiclass":
                    reached += torch.softmax(h, dim=1).gather(1, tgt[:, None])[:, 0].double()
                else:
                    reached += model.unstandardise(h[:, 0].double())
                if keep_samples:
                    samples.append(t.cpu().numpy())
            mean = s1 / n_samples
            var = (s2 / n_samples - mean * mean).clamp_min(0.0)
            if not regression:
                out["probability"].append(p.cpu().numpy())
            else:
                out["prior_z"].append(prior_zscore(model.enc_a, tgt_std.cpu()).cpu().numpy())
            out["predicted"].append(pred.cpu().numpy())
            out["target"].append(tgt.cpu().numpy())
            out["mean"].append(mean.cpu().numpy())
            out["variance"].append(var.cpu().numpy())
            out["translated"].append((mean + xb[:, 0]).cpu().numpy())
            out["draws"].append((draws / n_samples).cpu().numpy())
            out["reached"].append((reached / n_samples).cpu().numpy())
            if keep_samples:
                out["samples"].append(np.stack(samples, axis=1))
    res = {k: (np.concatenate(v) if v else None) for k, v in out.items()}
    rng_ = getattr(model, "target_range", None)
    if regression and rng_ is not None and len(res["target"]):
        lo, hi = rng_
        outside = (res["target"] < lo) | (res["target"] > hi)
        if outside.any():
            from neurointerp.progress import warn

            worst = res["target"][outside][np.argmax(np.abs(res["target"][outside] - (lo + hi) / 2))]
            warn(f"{where + ': ' if where else ''}{int(outside.sum())} of {len(outside)} target values lie outside the training range "
                 f"[{lo:g}, {hi:g}] (e.g. {worst:g}); those translations are extrapolations")
    return res


def apply_icam(cohort=None, checkpoint=None, out=None, *, options=None, **kwargs) -> Path:
    """Mean/variance FA maps, translated images and class probabilities for the images of ``cohort``.

    ``direction``: ``auto`` translates from the predicted class (no label needed), ``label`` from the
    cohort's label, into the most likely other class (binary: the opposite class) unless
    ``target`` names the class; a regression ICAM translates to ``target_value`` or to the source
    value plus ``target_shift`` (see :func:`translate`). Same arguments as ``neurointerp simulate
    apply --method icam`` (``n_samples``, ``direction``, ``target``, ``target_value``, ``target_shift``, ``image_column``, ``label_column``,
    ``max_draws``, ``save_samples``, ``seed``, ``batch_size``, ``device``, ``threads``,
    ``array_index``, ``array_size``, ``force``), or ``options=`` a
    :class:`~neurointerp.options.simulate.SimulateApplyOptions`. Runs through the per-subject
    runner (:mod:`neurointerp.runs`); the task that completes the cohort writes
    ``predictions.tsv``. Returns its path.
    """
    from neurointerp.options.simulate import SimulateApplyOptions

    if options is None:
        options = SimulateApplyOptions(paths=(cohort, checkpoint, out), method="icam", **kwargs)
    elif cohort is not None or kwargs:
        raise TypeError("apply_icam: give either options= or arguments, not both")
    return _apply_icam(options)


def _apply_icam(o) -> Path:
    import pandas as pd

    from neurointerp.io import add_bidsignore, derivative_path, derived_from, is_anatomical, provenance, read_cohort, res_of, sha256, sidecar_path, write_dataset_description, write_sidecar, write_table
    from neurointerp.runs import Item, claim_folder, run_items
    from neurointerp.runs.subjects import pending_items
    from neurointerp.simulate.icam.checkpoint import load_icam
    from neurointerp.simulate.icam.sampling import RejectionError
    from neurointerp.train.device import resolve_device, set_threads

    paths = o.named_paths()
    cohort, checkpoint, out = paths["cohort"], paths["icam"], paths["out"]
    n_samples, max_draws, seed = o.resolved("n_samples"), o.resolved("max_draws"), o.resolved("seed")  # the options' fallbacks
    save_samples = bool(o.resolved("save_samples"))
    direction, image_column, label_column, batch_size = o.direction, o.image_column, o.label_column, o.batch_size
    set_threads(o.threads)
    dev = resolve_device(o.device)
    icam = load_icam(checkpoint, device=str(dev))
    spec = icam.spec
    coh = read_cohort(cohort, require_label=direction == "label", image_column=image_column, label_column=label_column, min_classes=1)
    for i in range(len(coh)):  # refuse any image off the model's grid before work starts
        spec.check_header(coh.images[i], f"{coh.path} row {coh.rows[i]}: {coh.images[i]}", f"ICAM checkpoint {checkpoint}")
    targets = _targets(icam, coh, cohort, direction, label_column, o.target, o.target_value, o.target_shift)
    sessions = coh.frame["session_id"].astype(str).tolist() if "session_id" in coh.frame.columns else [None] * len(coh)
    labels_out = coh.frame[label_column].astype(str).tolist() if label_column in coh.frame.columns else [""] * len(coh)
    params = {"cohort": str(cohort), "checkpoint": str(checkpoint), "out": str(out), "n_samples": n_samples, "direction": direction,
              "target": o.target, "target_value": o.target_value, "target_shift": o.target_shift,
              "max_draws": max_draws, "save_samples": save_samples, "seed": seed, "image_column": image_column, "label_column": label_column}

    def paths_of(i):
        kw = dict(space=spec.space, res=res_of(coh.images[i]), session=sessions[i] or None)  # the input's grid label
        pid = coh.participant_ids[i]
        p = {
            "variance": derivative_path(out, pid, "attribution", desc="icamvariance", **kw),
            "translated": derivative_path(out, pid, "T1w", desc="icamtranslated", **kw),
        }
        if save_samples:
            p["samples"] = derivative_path(out, pid, "T1w", desc="icamsamples", **kw)
        p["mean"] = derivative_path(out, pid, "attribution", desc="icammean", **kw)  # written last
        return p

    items = []
    for i in range(len(coh)):
        p = paths_of(i)
        pid = coh.participant_ids[i]
        key = f"sub-{pid}" + (f"_ses-{sessions[i]}" if sessions[i] else "")
        extra = {k: (v[i].item() if isinstance(v, np.ndarray) else v) for k, v in targets.items()}
        items.append(Item(key=key, inputs=[coh.images[i]], outputs=[f for v in p.values() for f in (v, sidecar_path(v))], maps=[p["mean"]],
                          extra=extra, share=i, participant_id=pid, session_id=sessions[i] or "", where=f"{coh.path} row {coh.rows[i]}",
                          image=str(coh.images[i]), payload=(i, p)))
    claim = dict(inputs={"icam": checkpoint}, protect=[cohort, *coh.images], force=o.force)
    folder = claim_folder(out, "simulate apply", o.affecting(), dry_run=True, **claim)
    # bad input is refused before anything is written: every image this task will translate
    for it in pending_items(folder, items, o.array_index, o.array_size):
        spec.load_row(coh, it.payload[0])
    folder = claim_folder(out, "simulate apply", o.affecting(), **claim)
    ckpt_sha = sha256(checkpoint)

    def process(batch: list[Item]) -> dict:
        rows = [it.payload[0] for it in batch]
        vols = [spec.load_row(coh, i) for i in rows]
        x = spec.prepare(np.stack([v.data for v in vols]))
        tg = {k: (v[rows] if isinstance(v, np.ndarray) else v) for k, v in targets.items()}
        seeds = [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in rows]  # per subject (row)
        try:
            res = translate(icam.model, x, n_samples=n_samples, **tg, max_draws=max_draws, seeds=seeds, batch_size=batch_size, keep_samples=save_samples, where=str(checkpoint))
        except RejectionError as exc:
            raise NeurointerpError(str(exc)) from exc
        for k, (it, vol) in enumerate(zip(batch, vols)):
            i, p = it.payload
            pred = _prediction(res, k, icam)
            record = provenance(
                "simulate apply --method icam",
                params,
                inputs=[coh.images[i], checkpoint],
                seed=seed,
                CheckpointSha256=ckpt_sha,
                Space=spec.space,
                Classes=icam.classes,
                Prediction=pred,
                Label=labels_out[i],
                Translation=f"{pred['predicted'] if direction != 'label' else labels_out[i]} -> {pred['target']}",
                NSamples=n_samples,
                Task=icam.task,
                Definition=DEFINITIONS[icam.task],
                Units="model input intensities" + ("" if spec.normalize == "none" else f" ({spec.normalize})"),
            )
            maps = {"variance": res["variance"][k], "translated": res["translated"][k], "mean": res["mean"][k]}
            if save_samples:
                maps["samples"] = np.moveaxis(res["samples"][k], 0, -1)
            for key in p:
                _save(maps[key], vol, spec, p[key])
                write_sidecar(p[key], record, force=True, **derived_from(coh.images[i], out, anatomical=is_anatomical(p[key])))
        return {}

    def finalize(done: list[Item]) -> None:
        rows = []
        for it in done:
            i, p = it.payload
            meta = json.loads(sidecar_path(p["mean"]).read_text())
            rows.append(_row(coh.participant_ids[i], labels_out[i], meta["Prediction"], icam.classes))
        write_table(out / "predictions.tsv", pd.DataFrame(rows, columns=_columns(icam)), force=True)

    with folder.writing():
        write_dataset_description(out, "neurointerp simulate (icam)", "ICAM feature attribution: mean/variance FA maps by rejection sampling of the attribute space", force=False)
        add_bidsignore(out, ["*_attribution.nii.gz", "*_attribution.json", "predictions*", "failures*"])
    run_items(folder, items, process, batch_size=batch_size, array_index=o.array_index, array_size=o.array_size, finalize=finalize, label="icam apply", noun="subject")
    return out / "predictions.tsv"


def _row(pid, label, pred, classes):
    row = {"participant_id": pid, "label": label, "predicted": pred["predicted"], "target": pred["target"]}
    if "probability" in pred:
        row.update({f"p_{c}": pred["probability"][j] for j, c in enumerate(classes)})
    row["mean_draws"] = pred["mean_draws"]
    for key in ("reached", "prior_z"):  # absent in sidecars written before the extensions
        if key in pred:
            row[key] = pred[key]
    return row


DEFINITIONS = {
    "binary": "M = G(E^c(x), z) - x, z ~ N(0, I) rejection-sampled to the target class; mean and variance over the draws",
    "multiclass": "M = G(E^c(x), z) - x, z ~ N(0, I) rejection-sampled to the target class (arg max of the K logits); mean and variance over the draws",
    "regression": "M = G(E^c(x), z) - x, z ~ N(0, I) conditioned on the attribute layer giving the target value; mean and variance over the draws",
}


def _columns(icam) -> list[str]:
    """Columns of predictions.tsv: ``p_<class>`` per class (classification), ``reached``: mean
    P(target class) of the translated images (regression: their mean predicted value),
    ``prior_z`` (regression: the target's z-score under the prior)."""
    if icam.task == "regression":
        return ["participant_id", "label", "predicted", "target", "mean_draws", "reached", "prior_z"]
    return ["participant_id", "label", "predicted", "target", *[f"p_{c}" for c in icam.classes], "mean_draws", "reached"]


def _prediction(res, k, icam) -> dict:
    """The sidecar's ``Prediction`` of image ``k`` of a :func:`translate` result."""
    if icam.task == "regression":
        return {
            "predicted": float(res["predicted"][k]),
            "target": float(res["target"][k]),
            "mean_draws": float(res["draws"][k]),
            "reached": float(res["reached"][k]),
            "prior_z": float(res["prior_z"][k]),
        }
    prob = res["probability"][k]
    probability = [float(1.0 - prob), float(prob)] if icam.task == "binary" else [float(v) for v in prob]
    return {
        "probability": probability,
        "predicted": icam.classes[int(res["predicted"][k])],
        "target": icam.classes[int(res["target"][k])],
        "mean_draws": float(res["draws"][k]),
        "reached": float(res["reached"][k]),
    }


def _targets(icam, coh, cohort, direction, label_column, target, target_value, target_shift) -> dict:
    """Keyword arguments of :func:`translate` per cohort row (arrays) or shared (scalars), checked
    before anything is written: ``--target`` must be a class of a classification model,
    ``--target-value``/``--target-shift`` (exactly one) go with a regression model, labels of
    ``--direction label`` must be classes of the model (numbers for regression)."""
    task = icam.task
    out: dict = {}
    if task == "regression":
        if target is not None:
            raise InputError(f"--target {target}: this ICAM is a regression model; give --target-value or --target-shift")
        if (target_value is None) == (target_shift is None):
            raise InputError("a regression ICAM translates to a target value: give exactly one of --target-value or --target-shift")
        for name, v in (("--target-value", target_value), ("--target-shift", target_shift)):
            if v is not None and not np.isfinite(v):
                raise InputError(f"{name} {v}: must be a finite number")
        out = {"target_value": target_value} if target_value is not None else {"target_shift": target_shift}
        if direction == "label" and target_shift is not None:
            vals = []
            for i, v in enumerate(coh.frame[label_column]):
                try:
                    vals.append(float(v))
                except (TypeError, ValueError):
                    raise InputError(f"{coh.path} row {coh.rows[i]}: label {v!r} is not a number (regression ICAM)") from None
                if not np.isfinite(vals[-1]):
                    raise InputError(f"{coh.path} row {coh.rows[i]}: label {v!r} is not a finite number (regression ICAM)")
            out["source"] = np.array(vals)
        return out
    if target_value is not None or target_shift is not None:
        raise InputError(f"--target-value/--target-shift apply to a regression ICAM; this one is {task} (use --target CLASS)")
    if target is not None:
        if str(target) not in icam.classes:
            raise InputError(f"--target {target}: not a class of the ICAM model ({', '.join(icam.classes)})")
        out["target"] = icam.classes.index(str(target))
    if direction == "label":
        labels = [str(v) for v in coh.frame[label_column]]
        unknown = sorted(set(labels) - set(icam.classes))
        if unknown:
            raise InputError(f"{cohort}: label {unknown[0]!r} is not a class of the ICAM model ({', '.join(icam.classes)})")
        out["source"] = np.array([icam.classes.index(v) for v in labels])
    return out


def _save(arr, vol, spec, path):
    from neurointerp.io import save_image

    arr = np.asarray(arr, dtype=np.float32)
    data = spec.uncrop(arr) if arr.shape[: spec.ndim] != tuple(spec.shape) else arr
    extra = data.shape[spec.ndim :]  # samples axis (4th) if any
    if spec.ndim == 2:
        data = data.reshape(data.shape[:2] + (1,) + extra)
    save_image(data, vol.affine, path, header=vol.header if not extra else None, force=True)
