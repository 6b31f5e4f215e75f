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


def translate(model, x, *, n_samples: int = 16, target=None, max_draws: int = 1000, seed: int = 0, seeds=None, batch_size: int = 16, keep_samples: bool = False, where: str = ""):
    """ICAM translation of model inputs ``x`` ``(N, 1, *S)`` into the opposite class.

    ``target``: ``(N,)`` class to translate to; None: the opposite of the attribute encoder's
    predicted class. Returns numpy arrays: ``probability`` (P(class 1), ``(N,)``), ``predicted``,
    ``target``, ``mean``/``variance`` FA maps and ``translated`` (mean image) ``(N, *S)``, ``draws``
    (mean rejection draws per sample, ``(N,)``) and, with ``keep_samples``, ``samples``
    ``(N, n_samples, *S)``. ``seeds``: one seed per image (its draws then do not depend on the
    batch it is in, e.g. on the SLURM array split); otherwise one stream from ``seed``.
    """
    import torch

    from neurointerp.simulate.icam.sampling import sample_class

    if n_samples < 1:
        raise InputError(f"--n-samples {n_samples}: must be at least 1")
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    gen = torch.Generator().manual_seed(int(seed))
    if seeds is not None and len(seeds) != len(x):
        raise ValueError(f"{len(seeds)} seeds for {len(x)} images")
    out: dict[str, list] = {k: [] for k in ("probability", "predicted", "target", "mean", "variance", "translated", "draws", "samples")}
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            c = model.enc_c(xb)
            mu, _ = model.enc_a(xb)
            p = torch.sigmoid(model.enc_a.classify(mu)[:, 0])
            pred = (p > 0.5).long()
            tgt = (1 - pred) if target is None else torch.as_tensor(np.asarray(target)[i : i + batch_size], dtype=torch.long, device=device)
            s1 = torch.zeros_like(xb[:, 0])
            s2 = torch.zeros_like(xb[:, 0])
            draws = torch.zeros(len(xb), device=device)
            samples = []
            g = gen if seeds is None else [torch.Generator().manual_seed(int(v)) for v in seeds[i : i + batch_size]]
            for _ in range(n_samples):
                z, d = sample_class(model.enc_a, tgt, model.latent_shape, max_draws=max_draws, generator=g, device=device, where=where)
                t = model.gen(c, z)[:, 0]
                m = t - xb[:, 0]
                s1 += m
                s2 += m * m
                draws += d.float()
                if keep_samples:
                    samples.append(t.cpu().numpy())
            mean = s1 / n_samples
            var = (s2 / n_samples - mean * mean).clamp_min(0.0)
            out["probability"].append(p.cpu().numpy())
            out["predicted"].append(pred.cpu().numpy())
            out["target"].append(tgt.cpu().numpy())
            out["mean"].append(mean.cpu().numpy())
            out["variance"].append(var.cpu().numpy())
            out["translated"].append((mean + xb[:, 0]).cpu().numpy())
            out["draws"].append((draws / n_samples).cpu().numpy())
            if keep_samples:
                out["samples"].append(np.stack(samples, axis=1))
    return {k: (np.concatenate(v) if v else None) for k, v in out.items()}


def apply_icam(cohort=None, checkpoint=None, out=None, *, options=None, **kwargs) -> Path:
    """Mean/variance FA maps, translated images and class probabilities for the images of ``cohort``.

    ``direction``: ``auto`` translates into the opposite of the predicted class (no label needed);
    ``label`` into the opposite of the cohort's label. Same arguments as ``neurointerp simulate
    apply --method icam`` (``n_samples``, ``direction``, ``image_column``, ``label_column``,
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

    from neurointerp.io import add_bidsignore, derivative_path, provenance, read_cohort, sha256, sidecar_path, write_dataset_description, write_sidecar, write_table
    from neurointerp.runs import Item, claim_folder, run_items
    from neurointerp.runs.subjects import pending_items
    from neurointerp.simulate.icam.checkpoint import load_icam
    from neurointerp.simulate.icam.sampling import RejectionError
    from neurointerp.train.device import resolve_device, set_threads

    paths = o.named_paths()
    cohort, checkpoint, out = paths["cohort"], paths["icam"], paths["out"]
    n_samples = 16 if o.n_samples is None else o.n_samples
    max_draws = 1000 if o.max_draws is None else o.max_draws
    seed = 0 if o.seed is None else o.seed
    save_samples = bool(o.save_samples)
    direction, image_column, label_column, batch_size = o.direction, o.image_column, o.label_column, o.batch_size
    set_threads(o.threads)
    dev = resolve_device(o.device)
    icam = load_icam(checkpoint, device=str(dev))
    spec = icam.spec
    coh = read_cohort(cohort, require_label=direction == "label", image_column=image_column, label_column=label_column, min_classes=1)
    for i in range(len(coh)):  # refuse any image off the model's grid before work starts
        spec.check_header(coh.images[i], f"{coh.path} row {coh.rows[i]}: {coh.images[i]}", f"ICAM checkpoint {checkpoint}")
    targets = None
    if direction == "label":
        labels = [str(v) for v in coh.frame[label_column]]
        unknown = sorted(set(labels) - set(icam.classes))
        if unknown:
            raise InputError(f"{cohort}: label {unknown[0]!r} is not a class of the ICAM model ({', '.join(icam.classes)})")
        targets = np.array([1 - icam.classes.index(v) for v in labels])
    sessions = coh.frame["session_id"].astype(str).tolist() if "session_id" in coh.frame.columns else [None] * len(coh)
    labels_out = coh.frame[label_column].astype(str).tolist() if label_column in coh.frame.columns else [""] * len(coh)
    params = {"cohort": str(cohort), "checkpoint": str(checkpoint), "out": str(out), "n_samples": n_samples, "direction": direction,
              "max_draws": max_draws, "save_samples": save_samples, "seed": seed, "image_column": image_column, "label_column": label_column}

    def paths_of(i):
        kw = dict(space=spec.space, session=sessions[i] or None)
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
        extra = {"target": None if targets is None else int(targets[i])}
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
        tg = None if targets is None else targets[rows]
        seeds = [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in rows]  # per subject (row)
        try:
            res = translate(icam.model, x, n_samples=n_samples, target=tg, max_draws=max_draws, seeds=seeds, batch_size=batch_size, keep_samples=save_samples, where=str(checkpoint))
        except RejectionError as exc:
            raise NeurointerpError(str(exc)) from exc
        for k, (it, vol) in enumerate(zip(batch, vols)):
            i, p = it.payload
            pred = {
                "probability": [float(1.0 - res["probability"][k]), float(res["probability"][k])],
                "predicted": icam.classes[int(res["predicted"][k])],
                "target": icam.classes[int(res["target"][k])],
                "mean_draws": float(res["draws"][k]),
            }
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
                Translation=f"{pred['predicted'] if targets is None else labels_out[i]} -> {pred['target']}",
                NSamples=n_samples,
                Definition="M = G(E^c(x), z) - x, z ~ N(0, I) rejection-sampled to the target class; mean and variance over the draws",
                Units="model input intensities" + ("" if spec.normalize == "none" else f" ({spec.normalize})"),
            )
            maps = {"variance": res["variance"][k], "translated": res["translated"][k], "mean": res["mean"][k]}
            if save_samples:
                maps["samples"] = np.moveaxis(res["samples"][k], 0, -1)
            for key in p:
                _save(maps[key], vol, spec, p[key])
                write_sidecar(p[key], record, force=True)
        return {}

    def finalize(done: list[Item]) -> None:
        rows = []
        for it in done:
            i, p = it.payload
            meta = json.loads(sidecar_path(p["mean"]).read_text())
            rows.append(_row(coh.participant_ids[i], labels_out[i], meta["Prediction"], icam.classes))
        cols = ["participant_id", "label", "predicted", "target", *[f"p_{c}" for c in icam.classes], "mean_draws"]
        write_table(out / "predictions.tsv", pd.DataFrame(rows, columns=cols), force=True)

    with folder.writing():
        write_dataset_description(out, "neurointerp simulate (icam)", "ICAM feature attribution: mean/variance FA maps by rejection sampling of the attribute space", force=False)
        add_bidsignore(out, ["*_attribution.nii.gz", "*_attribution.json", "predictions*", "failures*"])
    run_items(folder, items, process, batch_size=batch_size, array_index=o.array_index, array_size=o.array_size, finalize=finalize, label="icam apply", noun="subject")
    return out / "predictions.tsv"


def _row(pid, label, pred, classes):
    return {
        "participant_id": pid,
        "label": label,
        "predicted": pred["predicted"],
        "target": pred["target"],
        **{f"p_{c}": pred["probability"][j] for j, c in enumerate(classes)},
        "mean_draws": pred["mean_draws"],
    }


def _save(arr, vol, spec, path):
    from neurointerp.io import save_image

    arr = np.asarray(arr, dtype=np.float32)
    data = spec.uncrop(arr) if arr.shape[: spec.ndim] != tuple(spec.shape) else arr
    extra = data.shape[spec.ndim :]  # samples axis (4th) if any
    if spec.ndim == 2:
        data = data.reshape(data.shape[:2] + (1,) + extra)
    save_image(data, vol.affine, path, header=vol.header if not extra else None, force=True)
