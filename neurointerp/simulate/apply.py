"""Applying trained simulators to images (``neurointerp simulate apply``).

For every subject and simulation direction (``inject``: control -> patient, G1; ``remove``:
patient -> control, G2) it writes, on the classifier's grid and affine, in BIDS-derivatives
layout (``<desc>`` = ``inject`` or ``remove``)::

    sub-<id>_space-<tpl>_desc-<d>_T1w.nii.gz            simulated image X_hat
    sub-<id>_space-<tpl>_desc-<d>cycle_T1w.nii.gz       cycle-back image G_opposite(X_hat)
    sub-<id>_space-<tpl>_desc-<d>_difference.nii.gz     X - X_hat
    sub-<id>_space-<tpl>_desc-<d>_xfm.nii.gz            displacement field (warp mode; ITK/ANTs
                                                        displacement field, see neurointerp.simulate.warp)

each with a JSON sidecar (provenance, logits), plus ``logits.tsv`` (raw / simulated / cycle-back
logits per subject and direction), ``logits.png`` (the paper's Fig. 4) and ``fields.tsv`` (the
input table of ``neurointerp jacobian``). Intensities are those of the classifier's input (after
its normalisation, if any).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError, NeurointerpError

DIRECTIONS = ("inject", "remove")


def simulate_arrays(simulator, classifier, x, task, batch_size: int = 8) -> dict[str, np.ndarray]:
    """Run the simulator on model inputs ``x`` ``(N, 1, *S)`` with ``task`` (0 inject, 1 remove).

    Returns numpy arrays: ``simulated``, ``cycled`` ``(N, *S)``, ``field`` ``(N, ndim, *S)`` or
    ``None``, and the classifier logits ``raw``, ``simulated_logit``, ``cycled_logit`` ``(N,)``.
    """
    import torch

    device = next(simulator.parameters()).device
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    task = torch.as_tensor(np.asarray(task), dtype=torch.float32)
    out = {k: [] for k in ("simulated", "cycled", "field", "raw", "simulated_logit", "cycled_logit")}
    simulator.eval()
    classifier.eval()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb, tb = x[i : i + batch_size].to(device), task[i : i + batch_size].to(device)
            sim, field = simulator(xb, tb)
            cyc, _ = simulator(sim, 1.0 - tb)
            out["simulated"].append(sim[:, 0].float().cpu().numpy())
            out["cycled"].append(cyc[:, 0].float().cpu().numpy())
            if field is not None:
                out["field"].append(field.float().cpu().numpy())
            for key, v in (("raw", xb), ("simulated_logit", sim), ("cycled_logit", cyc)):
                out[key].append(classifier(v)[:, 0].float().cpu().numpy())
    return {k: (np.concatenate(v) if v else None) for k, v in out.items()}


def _check_simulator_classifier(sim, clf, sim_path, clf_path) -> None:
    from neurointerp.io import sha256

    expected = sim.classifier_sha256
    if expected and sha256(clf_path) != expected:
        raise InputError(f"{clf_path}: not the classifier the simulator {sim_path} was trained against (sha256 differs)")
    clf.spec.check_grid(sim.spec.shape, sim.spec.affine, where=f"simulator {sim_path}")
    if tuple(sim.spec.model_shape) != tuple(sim.model.shape):
        raise InputError(f"{sim_path}: simulator grid {sim.model.shape} differs from its input crop {sim.spec.model_shape}")


def plot_logits(frame, path, delta: float | None = None) -> Path:
    """Fig. 4 of the paper: logits of raw, simulated and cycle-back images, subjects ordered by raw logit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurointerp.io.atomic import atomic_path

    dirs = [d for d in DIRECTIONS if (frame["direction"] == d).any()]
    fig, axes = plt.subplots(1, max(1, len(dirs)), figsize=(5.5 * max(1, len(dirs)), 3.8), squeeze=False)
    for ax, d in zip(axes[0], dirs):
        sub = frame[frame["direction"] == d].sort_values("logit_raw")
        pos = np.arange(len(sub))
        ax.plot(pos, sub["logit_raw"], "o-", ms=3, label="raw")
        ax.plot(pos, sub["logit_simulated"], "o-", ms=3, label=f"simulated ({d})")
        ax.plot(pos, sub["logit_cycle"], "o-", ms=3, label="cycle-back")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel("subjects (ordered by raw logit)")
        ax.set_ylabel("classifier logit")
        title = f"{d} (n={len(sub)})"
        if delta is not None:
            title += f", delta={delta:g}"
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=120, format="png")
    plt.close(fig)
    return path


def apply_simulator(
    cohort: str | os.PathLike,
    simulator: str | os.PathLike,
    classifier: str | os.PathLike,
    out: str | os.PathLike,
    *,
    direction: str = "auto",
    image_column: str = "image",
    label_column: str = "label",
    batch_size: int = 8,
    device: str = "auto",
    threads: int | None = None,
    array_index: int | None = None,
    array_size: int | None = None,
    force: bool = False,
    allow_unvalidated: bool = False,
) -> Path:
    """Simulate disease injection/removal for the images of ``cohort``; returns the logits table path.

    ``direction``: ``auto`` (controls -> inject, patients -> remove; needs labels), ``inject``,
    ``remove`` or ``both`` (every subject in both directions). Subjects whose outputs exist are
    skipped unless ``force`` (a killed SLURM array can be resubmitted). Same arguments as
    ``neurointerp simulate apply``.

    Bad input (an unreadable, truncated, non-finite, all-zero or off-grid image, a degenerate
    affine) raises :class:`InputError` naming the table row and the file before anything is
    written: every image this task will simulate is validated first. A subject that fails while
    it is simulated (an image changed or vanished meanwhile, a failed write) is listed in
    ``failures.tsv`` and the others still finish (:class:`NeurointerpError`, exit code 1).
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
    from neurointerp.models.checkpoint import load_checkpoint
    from neurointerp.progress import track
    from neurointerp.simulate.checkpoint import load_simulator
    from neurointerp.simulate.train import tasks_from_labels
    from neurointerp.simulate.warp import save_field
    from neurointerp.train.device import resolve_device, set_threads

    if direction not in ("auto", "both") + DIRECTIONS:
        raise InputError(f"--direction {direction}: choose auto, inject, remove or both")
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    index, size = resolve_array(array_index, array_size)
    set_threads(threads)
    dev = resolve_device(device)
    sim = load_simulator(simulator, device=str(dev))
    clf = load_checkpoint(classifier, device=str(dev))
    from neurointerp.models.skill import require_skill  # skill gate (issue #21)
    require_skill(clf, allow_unvalidated, command="simulate apply", path=classifier)
    _check_simulator_classifier(sim, clf, simulator, classifier)
    coh = read_cohort(cohort, require_label=direction == "auto", image_column=image_column, label_column=label_column, min_classes=1)
    for path, r in zip(coh.images, coh.rows):  # cheap header check of the whole table first
        sim.spec.check_header(path, f"{coh.path} row {r}: {path}", f"column {image_column}")
    if direction == "auto":
        tasks = tasks_from_labels(coh.frame[label_column], clf.classes, str(cohort))
        jobs = [(i, int(tasks[i])) for i in range(len(coh))]
    else:
        dirs = DIRECTIONS if direction == "both" else (direction,)
        jobs = [(i, DIRECTIONS.index(d)) for i in range(len(coh)) for d in dirs]
    share = set(array_share(len(coh), index, size))
    jobs = [j for j in jobs if j[0] in share]

    out = Path(out)
    space = sim.spec.space
    delta = float(sim.meta.get("training", {}).get("delta", 0.0)) or None
    labels = coh.frame[label_column].astype(str).tolist() if label_column in coh.frame.columns else [""] * len(coh)
    rows, field_rows, failures = [], [], []

    def paths_of(pid, d, session=None):
        kw = dict(space=space, session=session)
        p = {
            "simulated": derivative_path(out, pid, "T1w", desc=d, **kw),
            "cycled": derivative_path(out, pid, "T1w", desc=f"{d}cycle", **kw),
            "difference": derivative_path(out, pid, "difference", desc=d, **kw),
        }
        if sim.mode == "warp":
            p["field"] = derivative_path(out, pid, "xfm", desc=d, **kw)
        return p

    has_ses = "session_id" in coh.frame.columns
    sessions = [s or None for s in coh.frame["session_id"].astype(str)] if has_ses else [None] * len(coh)

    def field_row(i, d, path):
        ses = {"session_id": sessions[i] or ""} if has_ses else {}
        return {"participant_id": coh.participant_ids[i], **ses, "direction": d, "field": str(path), "image": str(coh.images[i])}

    pending = []
    for i, t in jobs:
        p = paths_of(coh.participant_ids[i], DIRECTIONS[t], sessions[i])
        meta = _completed(p, coh.images[i]) if not force else None
        if meta is not None:
            rows.append(_row(coh.participant_ids[i], labels[i], DIRECTIONS[t], meta["Logits"], delta))
            if "field" in p:
                field_rows.append(field_row(i, DIRECTIONS[t], p["field"]))
        else:
            pending.append((i, t, p))

    # bad input is refused before anything is written: validate every image this task will
    # simulate (the first batch's volumes are kept, the others are read again when their turn comes)
    first_batch = {i for i, _, _ in pending[:batch_size]}
    last_job = {i: k for k, (i, _, _) in enumerate(pending)}
    loaded = {}
    for i in dict.fromkeys(i for i, _, _ in pending):
        vol = sim.spec.load_row(coh, i)
        if i in first_batch:
            loaded[i] = vol

    out = prepare_output_dir(out, force=force, marker="dataset_description.json")
    write_dataset_description(out, "neurointerp simulate", "Simulated disease injection/removal (cycle-consistent simulators)", force=False)
    add_bidsignore(out, ["*_difference.nii.gz", "*_xfm.nii.gz", "logits*", "fields*", "failures*"])
    sim_sha, clf_sha = sha256(simulator), sha256(classifier)

    for start in track(range(0, len(pending), batch_size), description="simulate apply", total=(len(pending) + batch_size - 1) // batch_size):
        chunk = pending[start : start + batch_size]
        vols, ok = [], []
        for i, t, p in chunk:
            try:  # validated above; an image that changed or vanished since is a runtime failure
                vol = loaded[i] if i in loaded else sim.spec.load_row(coh, i)
                vols.append(vol)
                ok.append((i, t, p))
            except (OSError, InputError) as exc:
                failures.append({"participant_id": coh.participant_ids[i], "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})
        for i, _, _ in chunk:  # both directions of a subject share its volume: drop it after its last job
            if last_job[i] < start + batch_size:
                loaded.pop(i, None)
        if not ok:
            continue
        x = sim.spec.prepare(np.stack([v.data for v in vols]))
        res = simulate_arrays(sim.model, clf.model, x, [t for _, t, _ in ok], batch_size=batch_size)
        full_raw = sim.spec.normalise_array(np.stack([v.data for v in vols]))
        for k, ((i, t, p), vol) in enumerate(zip(ok, vols)):
            pid, d = coh.participant_ids[i], DIRECTIONS[t]
            try:
                raw_full = full_raw[k]
                simulated = _uncrop_fill(sim.spec, res["simulated"][k], raw_full)
                cycled = _uncrop_fill(sim.spec, res["cycled"][k], raw_full)
                logits = {"raw": float(res["raw"][k]), "simulated": float(res["simulated_logit"][k]), "cycle": float(res["cycled_logit"][k])}
                record = provenance(
                    "simulate apply",
                    params,
                    inputs=[coh.images[i], simulator, classifier],
                    Direction=d,
                    Task=f"{clf.classes[0]} -> {clf.classes[1]}" if d == "inject" else f"{clf.classes[1]} -> {clf.classes[0]}",
                    Space=space,
                    SimulatorSha256=sim_sha,
                    ClassifierSha256=clf_sha,
                    Logits=logits,
                    Units="classifier input intensities" + ("" if sim.spec.normalize == "none" else f" ({sim.spec.normalize})"),
                )
                images = {"cycled": cycled, "difference": raw_full - simulated}
                if "field" in p:
                    fld = np.zeros((sim.spec.ndim,) + tuple(sim.spec.shape), dtype=np.float32)
                    fld[(slice(None),) + tuple(slice(a, b) for a, b in sim.spec.crop)] = res["field"][k]
                    save_field(fld, vol.affine, p["field"], force=True)
                    write_sidecar(p["field"], {**record, "FieldConvention": "ITK displacement field: LPS physical displacement (mm), T(p) = p + d(p) maps the output grid into the input image"}, force=True)
                for key, arr in images.items():
                    _save(arr, vol, p[key], sim.spec.ndim)
                    write_sidecar(p[key], record, force=True)
                _save(simulated, vol, p["simulated"], sim.spec.ndim)  # written last: marks completion
                write_sidecar(p["simulated"], record, force=True)
                rows.append(_row(pid, labels[i], d, logits, delta))
                if "field" in p:
                    field_rows.append(field_row(i, d, p["field"]))
            except (OSError, NeurointerpError) as exc:
                failures.append({"participant_id": pid, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__})

    part = "" if size == 1 else f"-part{index}of{size}"
    frame = pd.DataFrame(rows, columns=["participant_id", "label", "direction", "logit_raw", "logit_simulated", "logit_cycle", "shift", "shift_ge_delta"])
    table = write_table(out / f"logits{part}.tsv", frame, force=True)
    if field_rows:
        write_table(out / f"fields{part}.tsv", pd.DataFrame(field_rows), force=True)
    if len(frame) and size == 1:
        plot_logits(frame, out / "logits.png", delta)
    elif size > 1:
        _merge_parts(out, size, delta)
    if failures:
        write_table(out / f"failures{part}.tsv", pd.DataFrame(failures), force=True)
        raise NeurointerpError(f"{len(failures)} of {len(jobs)} simulations failed; see {out / f'failures{part}.tsv'}")
    return table


def _merge_parts(out: Path, size: int, delta) -> None:
    """Once every task of an array has written its part, join them into ``logits.tsv``/``fields.tsv``/``logits.png``.

    Whichever task finishes last does it (two finishing together write the same tables, atomically).
    """
    import pandas as pd

    from neurointerp.io import write_table

    for stem in ("logits", "fields"):
        parts = [out / f"{stem}-part{k}of{size}.tsv" for k in range(size)]
        present = [p for p in parts if p.exists()]
        if stem == "logits" and len(present) < size:
            return
        if not present:
            continue
        # ids and labels stay text ('01' must not become 1: it names the subject's files)
        text = {c: str for c in ("participant_id", "session_id", "label", "direction", "field", "image")}
        frame = pd.concat([pd.read_csv(p, sep="\t", dtype=text, keep_default_na=False) for p in present], ignore_index=True)
        write_table(out / f"{stem}.tsv", frame, force=True)
        if stem == "logits" and len(frame):
            plot_logits(frame, out / "logits.png", delta)


def _row(pid, label, d, logits, delta):
    shift = (logits["simulated"] - logits["raw"]) * (1.0 if d == "inject" else -1.0)
    return {
        "participant_id": pid,
        "label": label,
        "direction": d,
        "logit_raw": logits["raw"],
        "logit_simulated": logits["simulated"],
        "logit_cycle": logits["cycle"],
        "shift": shift,
        "shift_ge_delta": bool(delta is not None and shift >= delta),
    }


def _completed(paths, image):
    """Sidecar of a finished subject whose input is unchanged, else ``None``."""
    from neurointerp.io import sha256
    from neurointerp.io.derivatives import sidecar_path

    if not all(Path(p).exists() and sidecar_path(p).exists() for p in paths.values()):
        return None
    try:
        meta = json.loads(sidecar_path(paths["simulated"]).read_text())
        recorded = {Path(r["path"]).resolve(): r.get("sha256") for r in meta.get("Inputs", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if recorded.get(Path(image).resolve()) != sha256(image) or "Logits" not in meta:
        return None
    return meta


def _uncrop_fill(spec, arr, raw_full):
    out = raw_full.copy()
    out[tuple(slice(a, b) for a, b in spec.crop)] = arr
    return out


def _save(arr, vol, path, ndim):
    from neurointerp.io import save_image

    data = arr if ndim == 3 else arr.reshape(arr.shape + (1,) * (len(vol.header.get_data_shape()) - 2))
    save_image(data, vol.affine, path, header=vol.header, force=True)
