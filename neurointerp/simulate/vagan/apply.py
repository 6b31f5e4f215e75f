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


def apply_vagan(
    cohort: str | os.PathLike,
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    image_column: str = "image",
    label_column: str = "label",
    batch_size: int = 16,
    device: str = "auto",
    threads: int | None = None,
    array_index: int | None = None,
    array_size: int | None = None,
    force: bool = False,
) -> Path:
    """Maps ``M(x)`` and translated images for the images of ``cohort`` (labels optional).

    Subjects with complete outputs (same image, checkpoint) are skipped unless ``force`` (a
    killed SLURM array can be resubmitted). Returns the ``maps.tsv`` path. Same arguments as
    ``neurointerp simulate apply --method vagan``.
    """
    params = {k: v for k, v in locals().items() if k != "force"}
    import pandas as pd

    from neurointerp.cluster import array_share, resolve_array
    from neurointerp.io import (
        add_bidsignore,
        derivative_path,
        prepare_output_dir,
        provenance,
        read_cohort,
        sha256,
        write_dataset_description,
        write_sidecar,
        write_table,
    )
    from neurointerp.progress import track
    from neurointerp.simulate.icam.apply import _save
    from neurointerp.simulate.vagan.checkpoint import load_vagan
    from neurointerp.train.device import resolve_device, set_threads

    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    index, size = resolve_array(array_index, array_size)
    set_threads(threads)
    dev = resolve_device(device)
    vag = load_vagan(checkpoint, device=str(dev))
    spec = vag.spec
    coh = read_cohort(cohort, require_label=False, image_column=image_column, label_column=label_column, min_classes=1)
    for i in range(len(coh)):  # refuse any image off the model's grid before work starts
        spec.check_header(coh.images[i], f"{coh.path} row {coh.rows[i]}: {coh.images[i]}", f"VA-GAN checkpoint {checkpoint}")
    share = array_share(len(coh), index, size)
    out = Path(out)
    ckpt_sha = sha256(checkpoint)
    sessions = coh.frame["session_id"].astype(str).tolist() if "session_id" in coh.frame.columns else [None] * len(coh)
    labels_out = coh.frame[label_column].astype(str).tolist() if label_column in coh.frame.columns else [""] * len(coh)

    def paths_of(i):
        kw = dict(space=spec.space, session=sessions[i])
        pid = coh.participant_ids[i]
        return {
            "translated": derivative_path(out, pid, "T1w", desc="vagantranslated", **kw),
            "map": derivative_path(out, pid, "attribution", desc="vaganmap", **kw),  # written last
        }

    rows, failures, pending = [], [], []
    for i in share:
        p = paths_of(i)
        meta = None if force else _completed(p, coh.images[i], ckpt_sha)
        if meta is not None:
            rows.append({"participant_id": coh.participant_ids[i], "label": labels_out[i], **meta["Scores"]})
        else:
            pending.append((i, p))
    for i, _ in pending:  # bad input is refused before anything is written
        spec.load_row(coh, i)
    out = prepare_output_dir(out, force=force, marker="dataset_description.json")
    write_dataset_description(out, "neurointerp simulate (vagan)", "VA-GAN feature attribution: additive maps M(x) that move an image to the other class", force=False)
    add_bidsignore(out, ["*_attribution.nii.gz", "maps*", "failures*"])

    for start in track(range(0, len(pending), batch_size), description="vagan apply", total=(len(pending) + batch_size - 1) // batch_size):
        chunk, vols = [], []
        for i, p in pending[start : start + batch_size]:
            try:
                vols.append(spec.load_row(coh, i))
                chunk.append((i, p))
            except (OSError, InputError) as exc:
                failures.append({"participant_id": coh.participant_ids[i], "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
        if not chunk:
            continue
        res = vagan_maps(vag.model, spec.prepare(np.stack([v.data for v in vols])), batch_size=batch_size)
        for k, ((i, p), vol) in enumerate(zip(chunk, vols)):
            pid = coh.participant_ids[i]
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
            try:
                maps = {"translated": res["translated"][k], "map": res["map"][k]}
                for key in p:
                    _save(maps[key], vol, spec, p[key])
                    write_sidecar(p[key], record, force=True)
                rows.append({"participant_id": pid, "label": labels_out[i], **scores})
            except (OSError, NeurointerpError) as exc:
                failures.append({"participant_id": pid, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})

    part = "" if size == 1 else f"-part{index}of{size}"
    cols = ["participant_id", "label", "map_l1", "critic_input", "critic_translated"]
    table = write_table(out / f"maps{part}.tsv", pd.DataFrame(rows, columns=cols), force=True)
    if failures:
        write_table(out / f"failures{part}.tsv", pd.DataFrame(failures), force=True)
        raise NeurointerpError(f"{len(failures)} of {len(share)} subjects failed; see {out / f'failures{part}.tsv'}")
    return table


def _completed(paths, image, ckpt_sha):
    """Sidecar of a finished subject (same input and checkpoint), else ``None``."""
    from neurointerp.io import sha256
    from neurointerp.io.derivatives import sidecar_path

    if not all(Path(p).exists() and sidecar_path(p).exists() for p in paths.values()):
        return None
    try:
        meta = json.loads(sidecar_path(paths["map"]).read_text())
        recorded = {Path(r["path"]).resolve(): r.get("sha256") for r in meta.get("Inputs", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if meta.get("CheckpointSha256") != ckpt_sha or recorded.get(Path(image).resolve()) != sha256(image) or "Scores" not in meta:
        return None
    return meta
