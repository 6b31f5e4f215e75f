"""Group outputs of ``saliency``: per-class mean maps, figures and ground-truth scores.

Everything streams over the saved per-subject maps: memory holds a few running sums, not the
cohort. Means are written signed and absolute (signed maps averaged over subjects can cancel --
one of ClinicaDL's pitfalls -- so the mean of |map| is always given too).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def region_ranking(mean_abs: np.ndarray, mean: np.ndarray, labels: np.ndarray, names) -> "object":
    """Mean |attribution| and mean signed attribution per atlas region, ranked by the former."""
    import pandas as pd

    idx = labels.ravel()
    keep = idx > 0
    n_regions = int(idx.max()) + 1 if idx.size else 1
    counts = np.bincount(idx[keep], minlength=n_regions)
    sum_abs = np.bincount(idx[keep], weights=mean_abs.ravel()[keep], minlength=n_regions)
    sum_signed = np.bincount(idx[keep], weights=mean.ravel()[keep], minlength=n_regions)
    present = np.flatnonzero(counts)
    frame = pd.DataFrame(
        {
            "index": present,
            "name": [str(names.get(i, f"region {i}")) if hasattr(names, "get") else f"region {i}" for i in present],
            "n_voxels": counts[present],
            "mean_abs_attribution": sum_abs[present] / counts[present],
            "mean_attribution": sum_signed[present] / counts[present],
        }
    )
    frame = frame.sort_values("mean_abs_attribution", ascending=False).reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame


def write_group_outputs(out: Path, table, methods, spec, clf, cfree: bool, has_ses: bool, ground_truth=None, truth_mask=None, atlas=None) -> None:
    import pandas as pd

    from neurointerp.attribution.pipeline import _map_path, _truth_for, method_desc
    from neurointerp.evaluate.metrics import mass_in_mask, ncc
    from neurointerp.io import load_image, provenance, save_image, write_json, write_table
    from neurointerp.report.figures import ortho_figure

    group = out / "group"
    labels = [str(v) for v in table.frame["label"]] if "label" in table.frame.columns else ["all"] * len(table)
    classes = sorted(set(labels))
    score_rows = []
    for m in methods:
        desc = method_desc(m, cfree)
        sums = {c: None for c in classes + ["all"]}
        abs_sums = {c: None for c in classes + ["all"]}
        counts = {c: 0 for c in classes + ["all"]}
        background = None
        affine = header = None
        members = {c: [] for c in classes + ["all"]}
        for i in range(len(table)):
            path = _map_path(out, table, i, m, spec.space, cfree, has_ses)
            vol = load_image(path, ndim=spec.ndim, allow_empty=True)
            affine, header = vol.affine, vol.header
            img = load_image(table.images[i], ndim=spec.ndim).data
            background = img if background is None else background + img
            for c in (labels[i], "all"):
                sums[c] = vol.data.astype(np.float64) if sums[c] is None else sums[c] + vol.data
                abs_sums[c] = np.abs(vol.data).astype(np.float64) if abs_sums[c] is None else abs_sums[c] + np.abs(vol.data)
                counts[c] += 1
                members[c].append(str(path))
            truth = _truth_for(ground_truth, table, i, vol.shape)
            if truth is not None:
                brain = img != 0
                tmask = truth_mask if truth_mask is not None else np.abs(truth) >= 0.1 * np.abs(truth).max()
                score_rows.append(
                    {
                        "participant_id": table.participant_ids[i],
                        "label": labels[i],
                        "method": desc,
                        "ncc": ncc(np.abs(vol.data), np.abs(truth), mask=brain if brain.any() else None),
                        "mass_in_truth": mass_in_mask(vol.data, tmask),
                    }
                )
        panels = []
        for c in (["all"] + classes) if len(classes) > 1 else ["all"]:
            n = counts[c]
            mean = (sums[c] / n).astype(np.float32)
            mean_abs = (abs_sums[c] / n).astype(np.float32)
            rec = provenance("saliency (group mean)", {"method": desc, "label": c}, Space=spec.space, Maps=members[c])
            for stat, data in (("mean", mean), ("meanabs", mean_abs)):
                p = group / f"space-{spec.space}_desc-{desc}_label-{_safe(c)}_stat-{stat}_attribution.nii.gz"
                save_image(data, affine, p, header=header, force=True, intent="estimate", intent_name=stat)
                write_json(p.with_name(p.name.replace(".nii.gz", ".json")), {**rec, "Statistic": stat, "NMaps": n}, force=True)
            panels.append((f"{desc} mean |map| ({c}, n={n})", background / len(table), affine, mean_abs))
            if atlas is not None and spec.ndim == 3:
                labels_vol, names, atlas_name = atlas
                ranking = region_ranking(mean_abs, mean, labels_vol, names)
                ranking.insert(1, "atlas", atlas_name)
                write_table(group / f"space-{spec.space}_desc-{desc}_label-{_safe(c)}_atlas-{_safe(atlas_name)}_roi-table.tsv", ranking, force=True)
        if spec.ndim == 3:
            ortho_figure(panels, group / f"desc-{desc}_meanabs.png", overlay_label="mean |attribution|")
    if score_rows:
        scores = pd.DataFrame(score_rows)
        write_table(group / "scores.tsv", scores, force=True)
        summary = scores.groupby("method")[["ncc", "mass_in_truth"]].agg(["mean", "std"]).reset_index()
        summary.columns = ["method", "ncc_mean", "ncc_sd", "mass_in_truth_mean", "mass_in_truth_sd"]
        write_table(group / "scores_summary.tsv", summary, force=True)


def _safe(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9]", "", text) or "x"
