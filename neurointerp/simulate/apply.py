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


def apply_simulator(cohort=None, simulator=None, classifier=None, out=None, *, options=None, **kwargs) -> Path:
    """Simulate disease injection/removal for the images of ``cohort``; returns the logits table path.

    ``direction``: ``auto`` (controls -> inject, patients -> remove; needs labels), ``inject``,
    ``remove`` or ``both`` (every subject in both directions). Same arguments as ``neurointerp
    simulate apply`` (``image_column``, ``label_column``, ``batch_size``, ``device``, ``threads``,
    ``array_index``, ``array_size``, ``force``), or ``options=`` a
    :class:`~neurointerp.options.simulate.SimulateApplyOptions`.

    Runs through the per-subject runner (:mod:`neurointerp.runs`): finished simulations (same
    image, simulator, classifier and options) are skipped, stale ones redone. Bad input (an
    unreadable, truncated, non-finite, all-zero or off-grid image, a degenerate affine) raises
    :class:`InputError` naming the table row and the file before anything is written: every image
    this task will simulate is validated first. A subject that fails while it is simulated is
    listed in ``failures.tsv`` and the others still finish (exit code 1). The task that completes
    the cohort writes ``logits.tsv``, ``logits.png`` and ``fields.tsv``.
    """
    from neurointerp.options.simulate import SimulateApplyOptions

    if options is None:
        options = SimulateApplyOptions(paths=(cohort, simulator, classifier, out), method="simulator", **kwargs)
    elif cohort is not None or kwargs:
        raise TypeError("apply_simulator: give either options= or arguments, not both")
    return _apply_simulator(options)


def _apply_simulator(o) -> Path:
    import pandas as pd

    from neurointerp.io import (
        add_bidsignore,
        derivative_path,
        derived_from,
        provenance,
        read_cohort,
        res_of,
        sha256,
        sidecar_path,
        write_dataset_description,
        write_sidecar,
        write_table,
    )
    from neurointerp.models.checkpoint import load_checkpoint
    from neurointerp.runs import Item, claim_folder, run_items
    from neurointerp.runs.subjects import pending_items
    from neurointerp.simulate.checkpoint import load_simulator
    from neurointerp.simulate.train import tasks_from_labels
    from neurointerp.simulate.warp import save_field
    from neurointerp.train.device import resolve_device, set_threads

    paths = o.named_paths()
    cohort, simulator, classifier, out = paths["cohort"], paths["simulator"], paths["classifier"], paths["out"]
    direction, image_column, label_column, batch_size = o.direction, o.image_column, o.label_column, o.batch_size
    set_threads(o.threads)
    dev = resolve_device(o.device)
    sim = load_simulator(simulator, device=str(dev))
    clf = load_checkpoint(classifier, device=str(dev))
    from neurointerp.models.skill import require_skill  # skill gate (issue #21)
    require_skill(clf, o.allow_unvalidated, command="simulate apply", path=classifier)
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

    space = sim.spec.space
    delta = float(sim.meta.get("training", {}).get("delta", 0.0)) or None
    labels = coh.frame[label_column].astype(str).tolist() if label_column in coh.frame.columns else [""] * len(coh)
    has_ses = "session_id" in coh.frame.columns
    sessions = [s or None for s in coh.frame["session_id"].astype(str)] if has_ses else [None] * len(coh)

    def paths_of(pid, d, session=None, image=None):
        kw = dict(space=space, res=res_of(image), session=session)  # on the input image's grid: its res- label
        p = {
            "cycled": derivative_path(out, pid, "T1w", desc=f"{d}cycle", **kw),
            "difference": derivative_path(out, pid, "difference", desc=d, **kw),
        }
        if sim.mode == "warp":
            p["field"] = derivative_path(out, pid, "xfm", desc=d, **kw)
        p["simulated"] = derivative_path(out, pid, "T1w", desc=d, **kw)  # written last
        return p

    items = []
    for i, t in jobs:
        pid, d = coh.participant_ids[i], DIRECTIONS[t]
        p = paths_of(pid, d, sessions[i], coh.images[i])
        outputs = [f for v in p.values() for f in (v, sidecar_path(v))]
        key = f"sub-{pid}" + (f"_ses-{sessions[i]}" if sessions[i] else "") + f"_{d}"
        items.append(Item(key=key, inputs=[coh.images[i]], outputs=outputs, maps=[p["difference"]],
                          extra={"direction": d}, share=i, participant_id=pid, session_id=sessions[i] or "",
                          where=f"{coh.path} row {coh.rows[i]}", image=str(coh.images[i]), payload=(i, t, p)))

    claim = dict(inputs={"simulator": simulator, "classifier": classifier}, protect=[cohort, *coh.images], force=o.force)
    folder = claim_folder(out, "simulate apply", o.affecting(), dry_run=True, **claim)
    # bad input is refused before anything is written: validate every image this task will simulate
    for i in dict.fromkeys(it.payload[0] for it in pending_items(folder, items, o.array_index, o.array_size)):
        sim.spec.load_row(coh, i)
    folder = claim_folder(out, "simulate apply", o.affecting(), **claim)
    sim_sha, clf_sha = sha256(simulator), sha256(classifier)
    params = {"cohort": str(cohort), "simulator": str(simulator), "classifier": str(classifier), "out": str(out), **o.affecting()}

    def process(batch: list[Item]) -> dict:
        vols = [sim.spec.load_row(coh, it.payload[0]) for it in batch]
        x = sim.spec.prepare(np.stack([v.data for v in vols]))
        res = simulate_arrays(sim.model, clf.model, x, [it.payload[1] for it in batch], batch_size=batch_size)
        full_raw = sim.spec.normalise_array(np.stack([v.data for v in vols]))
        for k, (it, vol) in enumerate(zip(batch, vols)):
            i, t, p = it.payload
            d = DIRECTIONS[t]
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
                Label=labels[i],
                Units="classifier input intensities" + ("" if sim.spec.normalize == "none" else f" ({sim.spec.normalize})"),
            )
            if "field" in p:
                fld = np.zeros((sim.spec.ndim,) + tuple(sim.spec.shape), dtype=np.float32)
                fld[(slice(None),) + tuple(slice(a, b) for a, b in sim.spec.crop)] = res["field"][k]
                save_field(fld, vol.affine, p["field"], force=True)
                write_sidecar(p["field"], {**record, "FieldConvention": "ITK displacement field: LPS physical displacement (mm), T(p) = p + d(p) maps the output grid into the input image"}, force=True,
                              **derived_from(coh.images[i], out, anatomical=False))
            bids = derived_from(coh.images[i], out)
            for key, arr in (("cycled", cycled), ("difference", raw_full - simulated)):
                _save(arr, vol, p[key], sim.spec.ndim)
                write_sidecar(p[key], record, force=True, **bids)
            _save(simulated, vol, p["simulated"], sim.spec.ndim)  # written last
            write_sidecar(p["simulated"], record, force=True, **bids)
        return {}

    def finalize(done: list[Item]) -> None:
        rows, field_rows = [], []
        for it in done:
            i, t, p = it.payload
            meta = json.loads(sidecar_path(p["simulated"]).read_text())
            rows.append(_row(coh.participant_ids[i], labels[i], DIRECTIONS[t], meta["Logits"], delta))
            if "field" in p:
                ses = {"session_id": sessions[i] or ""} if has_ses else {}
                field_rows.append({"participant_id": coh.participant_ids[i], **ses, "direction": DIRECTIONS[t],
                                   "field": _relative(p["field"], out), "image": _relative(coh.images[i], out)})
        frame = pd.DataFrame(rows, columns=["participant_id", "label", "direction", "logit_raw", "logit_simulated", "logit_cycle", "shift", "shift_ge_delta"])
        write_table(out / "logits.tsv", frame, force=True)
        if field_rows:
            write_table(out / "fields.tsv", pd.DataFrame(field_rows), force=True)
        if len(frame):
            plot_logits(frame, out / "logits.png", delta)

    with folder.writing():
        write_dataset_description(out, "neurointerp simulate", "Simulated disease injection/removal (cycle-consistent simulators)", force=False)
        add_bidsignore(out, ["*_difference.nii.gz", "*_difference.json", "*_xfm.nii.gz", "*_xfm.json", "logits*", "fields*", "failures*"])
    run_items(folder, items, process, batch_size=batch_size, array_index=o.array_index, array_size=o.array_size, finalize=finalize, label="simulate apply", noun="simulation")
    return out / "logits.tsv"


def _relative(path, folder: Path) -> str:
    """A path as written in a table of ``folder``: relative to it (tables resolve from their folder)."""
    try:
        return os.path.relpath(Path(path).absolute(), Path(folder).absolute())
    except ValueError:
        return str(Path(path).absolute())


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


def _uncrop_fill(spec, arr, raw_full):
    out = raw_full.copy()
    out[tuple(slice(a, b) for a, b in spec.crop)] = arr
    return out


def _save(arr, vol, path, ndim):
    from neurointerp.io import save_image

    data = arr if ndim == 3 else arr.reshape(arr.shape + (1,) * (len(vol.header.get_data_shape()) - 2))
    save_image(data, vol.affine, path, header=vol.header, force=True)
