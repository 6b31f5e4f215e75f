"""Applying VA-GAN to images (``simulate apply --method vagan``).

For every image: the map ``M(x)`` and the translated image ``x + M(x)`` (one deterministic output
per image: VA-GAN has no latent space to sample), written per subject on the input's grid and
affine, with sidecars::

    sub-<id>_space-<s>_desc-vaganmap_attribution.nii.gz     M(x), the feature attribution map
    sub-<id>_space-<s>_desc-vagantranslated_T1w.nii.gz      x + M(x)

plus ``maps.tsv``: per subject the label (if any), the mean |M|, and the critic's score of the
input and of the translated image (higher = more like the target class; a difference, not a
probability: VA-GAN does not classify). The map was trained on images of the source class; on
images of the target class it should be small (compare ``map_l1``). Intensities are those of the
model input (after the checkpoint's normalisation).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError, NeurointerpError


def vagan_maps(model, x, *, batch_size: int = 16) -> dict:
    """``map`` ``M(x)`` and ``translated`` ``x + M(x)`` ``(N, *S)``, ``critic_input`` and
    ``critic_translated`` ``(N,)`` for model inputs ``x`` ``(N, 1, *S)`` (numpy arrays)."""
    import torch

    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    out: dict[str, list] = {k: [] for k in ("map", "translated", "critic_input", "critic_translated")}
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            m, y = model(xb)
            out["map"].append(m[:, 0].cpu().numpy())
            out["translated"].append(y[:, 0].cpu().numpy())
            out["critic_input"].append(model.critic(xb).cpu().numpy())
            out["critic_translated"].append(model.critic(y).cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def apply_vagan(cohort=None, checkpoint=None, out=None, *, options=None, **kwargs) -> Path:
    """Maps ``M(x)`` and translated images for the images of ``cohort`` (labels optional).

    Same arguments as ``neurointerp simulate apply --method vagan`` (``image_column``,
    ``label_column``, ``batch_size``, ``device``, ``threads``, ``array_index``, ``array_size``,
    ``force``), or ``options=`` a :class:`~neurointerp.options.simulate.SimulateApplyOptions`.
    Runs through the per-subject runner (:mod:`neurointerp.runs`): finished subjects are skipped,
    bad images are refused before anything is written, a subject that fails is listed in
    ``failures.tsv``, and the task that completes the cohort writes ``maps.tsv``. Returns its path.
    """
    from neurointerp.options.simulate import SimulateApplyOptions

    if options is None:
        options = SimulateApplyOptions(paths=(cohort, checkpoint, out), method="vagan", **kwargs)
    elif cohort is not None or kwargs:
        raise TypeError("apply_vagan: give either options= or arguments, not both")
    return _apply_vagan(options)


def _apply_vagan(o) -> Path:
    import pandas as pd

    from neurointerp.io import add_bidsignore, derivative_path, derived_from, is_anatomical, provenance, read_cohort, res_of, sha256, sidecar_path, write_dataset_description, write_sidecar, write_table
    from neurointerp.runs import Item, claim_folder, run_items
    from neurointerp.runs.subjects import pending_items
    from neurointerp.simulate.icam.apply import _save
    from neurointerp.simulate.vagan.checkpoint import load_vagan
    from neurointerp.train.device import resolve_device, set_threads

    paths = o.named_paths()
    cohort, checkpoint, out = paths["cohort"], paths["vagan"], paths["out"]
    set_threads(o.threads)
    dev = resolve_device(o.device)
    vag = load_vagan(checkpoint, device=str(dev))
    spec = vag.spec
    coh = read_cohort(cohort, require_label=False, image_column=o.image_column, label_column=o.label_column, min_classes=1)
    for i in range(len(coh)):  # refuse any image off the model's grid before work starts
        spec.check_header(coh.images[i], f"{coh.path} row {coh.rows[i]}: {coh.images[i]}", f"VA-GAN checkpoint {checkpoint}")
    sessions = coh.frame["session_id"].astype(str).tolist() if "session_id" in coh.frame.columns else [None] * len(coh)
    labels_out = coh.frame[o.label_column].astype(str).tolist() if o.label_column in coh.frame.columns else [""] * len(coh)
    params = {"cohort": str(cohort), "checkpoint": str(checkpoint), "out": str(out), "image_column": o.image_column, "label_column": o.label_column}

    def paths_of(i):
        kw = dict(space=spec.space, res=res_of(coh.images[i]), session=sessions[i] or None)  # the input's grid label
        pid = coh.participant_ids[i]
        return {
            "translated": derivative_path(out, pid, "T1w", desc="vagantranslated", **kw),
            "map": derivative_path(out, pid, "attribution", desc="vaganmap", **kw),  # written last
        }

    items = []
    for i in range(len(coh)):
        p = paths_of(i)
        pid = coh.participant_ids[i]
        key = f"sub-{pid}" + (f"_ses-{sessions[i]}" if sessions[i] else "")
        items.append(Item(key=key, inputs=[coh.images[i]], outputs=[f for v in p.values() for f in (v, sidecar_path(v))], maps=[p["map"]],
                          share=i, participant_id=pid, session_id=sessions[i] or "", where=f"{coh.path} row {coh.rows[i]}", image=str(coh.images[i]), payload=(i, p)))
    claim = dict(inputs={"vagan": checkpoint}, protect=[cohort, *coh.images], force=o.force)
    folder = claim_folder(out, "simulate apply", o.affecting(), dry_run=True, **claim)
    for it in pending_items(folder, items, o.array_index, o.array_size):  # bad input is refused before anything is written
        spec.load_row(coh, it.payload[0])
    folder = claim_folder(out, "simulate apply", o.affecting(), **claim)
    ckpt_sha = sha256(checkpoint)

    def process(batch: list[Item]) -> dict:
        vols = [spec.load_row(coh, it.payload[0]) for it in batch]
        res = vagan_maps(vag.model, spec.prepare(np.stack([v.data for v in vols])), batch_size=o.batch_size)
        for k, (it, vol) in enumerate(zip(batch, vols)):
            i, p = it.payload
            scores = {"map_l1": float(np.abs(res["map"][k]).mean()), "critic_input": float(res["critic_input"][k]), "critic_translated": float(res["critic_translated"][k])}
            record = provenance(
                "simulate apply --method vagan",
                params,
                inputs=[coh.images[i], checkpoint],
                seed=None,
                CheckpointSha256=ckpt_sha,
                Space=spec.space,
                Classes=vag.classes,
                Translation=f"{vag.source_class} -> {vag.target_class} (the map was trained on {vag.source_class} images)",
                Scores=scores,
                Definition="M(x): additive map of the VA-GAN generator, x + M(x) looks like the target class to the critic",
                Units="model input intensities" + ("" if spec.normalize == "none" else f" ({spec.normalize})"),
            )
            maps = {"translated": res["translated"][k], "map": res["map"][k]}
            for key in p:
                _save(maps[key], vol, spec, p[key])
                write_sidecar(p[key], record, force=True, **derived_from(coh.images[i], out, anatomical=is_anatomical(p[key])))
        return {}

    def finalize(done: list[Item]) -> None:
        rows = []
        for it in done:
            i, p = it.payload
            meta = json.loads(sidecar_path(p["map"]).read_text())
            rows.append({"participant_id": coh.participant_ids[i], "label": labels_out[i], **meta["Scores"]})
        cols = ["participant_id", "label", "map_l1", "critic_input", "critic_translated"]
        write_table(out / "maps.tsv", pd.DataFrame(rows, columns=cols), force=True)

    with folder.writing():
        write_dataset_description(out, "neurointerp simulate (vagan)", "VA-GAN feature attribution: additive maps M(x) that move an image to the other class", force=False)
        add_bidsignore(out, ["*_attribution.nii.gz", "*_attribution.json", "maps*", "failures*"])
    run_items(folder, items, process, batch_size=o.batch_size, array_index=o.array_index, array_size=o.array_size, finalize=finalize, label="vagan apply")
    return out / "maps.tsv"
