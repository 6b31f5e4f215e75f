"""Group outputs of ``saliency``: per-class mean maps, figures and ground-truth scores.

Everything streams over the saved per-subject maps: memory holds a few running sums, not the
cohort. With confounder-free maps, the difference maps (full minus confounder-free) get their
own group means, figure and region table: where the confounder acted. Means are written signed and absolute (signed maps averaged over subjects can cancel --
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


class _Sums:
    """Running per-class weighted sums of a map and of its absolute value (float64).

    Each map is weighted by 1 / (its participant's number of maps in the class), so a mean
    weights participants, not sessions: each participant's sessions are averaged first.
    ``n`` counts maps, ``participants`` the participants of each class.
    """

    def __init__(self, keys):
        self.sum = {c: None for c in keys}
        self.abs = {c: None for c in keys}
        self.w = {c: 0.0 for c in keys}
        self.n = {c: 0 for c in keys}
        self.participants = {c: set() for c in keys}
        self.members = {c: [] for c in keys}

    def add(self, keys, data, path, participant: str = "", weights=None) -> None:
        for k, c in enumerate(keys):
            w = 1.0 if weights is None else float(weights[k])
            d = data.astype(np.float64) * w
            self.sum[c] = d if self.sum[c] is None else self.sum[c] + d
            self.abs[c] = np.abs(d) if self.abs[c] is None else self.abs[c] + np.abs(d)
            self.w[c] += w
            self.n[c] += 1
            self.participants[c].add(participant)
            self.members[c].append(str(path))

    def means(self, c):
        return (self.sum[c] / self.w[c]).astype(np.float32), (self.abs[c] / self.w[c]).astype(np.float32)


def confounder_region_table(diff_abs: np.ndarray, diff: np.ndarray, cfree_abs: np.ndarray, labels: np.ndarray, names) -> "object":
    """Region table of the group-mean difference map (full minus confounder-free).

    :func:`region_ranking` of the mean |difference| (where the confounded features carried the
    attribution), plus ``mean_abs_confounder_free`` and ``confounder_share`` =
    mean |difference| / (mean |difference| + mean |confounder-free|) of the region: the share of
    the region's attribution that came through the confounded features (0 to 1).
    """
    frame = region_ranking(diff_abs, diff, labels, names)
    idx = labels.ravel()
    keep = idx > 0
    n_regions = int(idx.max()) + 1 if idx.size else 1
    counts = np.bincount(idx[keep], minlength=n_regions)
    free = np.bincount(idx[keep], weights=cfree_abs.ravel()[keep], minlength=n_regions)
    free_mean = free[frame["index"].to_numpy()] / counts[frame["index"].to_numpy()]
    frame["mean_abs_confounder_free"] = free_mean
    total = frame["mean_abs_attribution"].to_numpy() + free_mean
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["confounder_share"] = np.where(total > 0, frame["mean_abs_attribution"].to_numpy() / np.where(total > 0, total, 1.0), np.nan)
    return frame


def write_group_outputs(out: Path, table, methods, spec, clf, cfree: bool, has_ses: bool, ground_truth=None, truth_mask=None, atlas=None) -> None:
    """Per-class group means (signed and |map|), region tables, figures and ground-truth scores.

    With confounder-free maps (``cfree``) the per-subject difference maps (``desc-<method>cdiff``,
    full minus confounder-free: where the confounder acted) get the same group means and figure,
    a region table with each region's confounder share (:func:`confounder_region_table`), and
    the whole-brain confounder share in the sidecar of the group mean.
    """
    import pandas as pd

    from neurointerp.attribution.pipeline import _map_path, _res, _truth_for, method_desc
    from neurointerp.evaluate.metrics import mass_in_mask, ncc
    from neurointerp.io import bids_name, common_res, derivative_path, load_image, provenance, save_image, write_json, write_table
    from neurointerp.report.figures import ortho_figure

    group = out / "group"
    grid_res = common_res(table.images)  # the grid label of the maps (one model grid)
    labels = [str(v) for v in table.frame["label"]] if "label" in table.frame.columns else ["all"] * len(table)
    classes = sorted(set(labels))
    keys = classes + ["all"]
    score_rows = []
    pids = [str(p) for p in table.participant_ids]
    from collections import Counter

    per_participant = Counter((pids[i], k) for i in range(len(table)) for k in (labels[i], "all"))
    weights = [(1.0 / per_participant[(pids[i], labels[i])], 1.0 / per_participant[(pids[i], "all")]) for i in range(len(table))]
    for m in methods:
        desc = method_desc(m, cfree)
        diff_desc = method_desc(m, suffix="cdiff")
        main, diff = _Sums(keys), (_Sums(keys) if cfree else None)
        background = None
        affine = header = None
        for i in range(len(table)):
            path = _map_path(out, table, i, m, spec.space, cfree, has_ses)
            vol = load_image(path, ndim=spec.ndim, allow_empty=True)
            affine, header = vol.affine, vol.header
            img = load_image(table.images[i], ndim=spec.ndim).data
            background = img if background is None else background + img
            main.add((labels[i], "all"), vol.data, path, pids[i], weights[i])
            if diff is not None:
                ses = (str(table.frame.loc[i, "session_id"]) or None) if has_ses else None
                dpath = derivative_path(out, table.participant_ids[i], "attribution", session=ses, space=spec.space, res=_res(table, i), desc=diff_desc)
                diff.add((labels[i], "all"), load_image(dpath, ndim=spec.ndim, allow_empty=True).data, dpath, pids[i], weights[i])
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
        panels, diff_panels = [], []
        for c in (["all"] + classes) if len(classes) > 1 else ["all"]:
            n = main.n[c]
            mean, mean_abs = main.means(c)
            rec = provenance("saliency (group mean)", {"method": desc, "label": c}, Space=spec.space, Maps=main.members[c])
            for stat, data in (("mean", mean), ("meanabs", mean_abs)):
                p = group / bids_name(None, "attribution", space=spec.space, res=grid_res, label=_safe(c), desc=desc, stat=stat)
                save_image(data, affine, p, header=header, force=True, intent="estimate", intent_name=stat)
                write_json(p.with_name(p.name.replace(".nii.gz", ".json")), {**rec, "Statistic": stat, "NMaps": n, "NParticipants": len(main.participants[c]),
                                                                              "Weighting": "participants: each participant's maps (sessions) averaged first"}, force=True)
            panels.append((f"{desc} mean |map| ({c}, n={len(main.participants[c])})", background / len(table), affine, mean_abs))
            if atlas is not None and spec.ndim == 3:
                labels_vol, names, atlas_name = atlas
                ranking = region_ranking(mean_abs, mean, labels_vol, names)
                ranking.insert(1, "atlas", atlas_name)
                write_table(group / f"space-{spec.space}_desc-{desc}_label-{_safe(c)}_atlas-{_safe(atlas_name)}_roi-table.tsv", ranking, force=True)
            if diff is not None:
                dmean, dmean_abs = diff.means(c)
                share = float(dmean_abs.sum() / (dmean_abs.sum() + mean_abs.sum())) if (dmean_abs.sum() + mean_abs.sum()) > 0 else None
                drec = provenance("saliency (group mean)", {"method": diff_desc, "label": c}, Space=spec.space, Maps=diff.members[c])
                drec.update(Map="full minus confounder-free: where the confounder acted", ConfounderShare=share, ConfounderShareMeaning="sum of mean |difference| / (sum of mean |difference| + sum of mean |confounder-free map|) over the grid")
                for stat, data in (("mean", dmean), ("meanabs", dmean_abs)):
                    p = group / bids_name(None, "attribution", space=spec.space, res=grid_res, label=_safe(c), desc=diff_desc, stat=stat)
                    save_image(data, affine, p, header=header, force=True)
                    write_json(p.with_name(p.name.replace(".nii.gz", ".json")), {**drec, "Statistic": stat, "NMaps": diff.n[c]}, force=True)
                diff_panels.append((f"{diff_desc} mean |full - confounder-free| ({c}, n={diff.n[c]})", background / len(table), affine, dmean_abs))
                if atlas is not None and spec.ndim == 3:
                    labels_vol, names, atlas_name = atlas
                    ranking = confounder_region_table(dmean_abs, dmean, mean_abs, labels_vol, names)
                    ranking.insert(1, "atlas", atlas_name)
                    write_table(group / f"space-{spec.space}_desc-{diff_desc}_label-{_safe(c)}_atlas-{_safe(atlas_name)}_roi-table.tsv", ranking, force=True)
        if spec.ndim == 3:
            ortho_figure(panels, group / f"desc-{desc}_meanabs.png", overlay_label="mean |attribution|")
            if diff_panels:
                ortho_figure(diff_panels, group / f"desc-{diff_desc}_meanabs.png", overlay_label="mean |full - confounder-free|")
    if score_rows:
        scores = pd.DataFrame(score_rows)
        write_table(group / "scores.tsv", scores, force=True)
        summary = scores.groupby("method")[["ncc", "mass_in_truth"]].agg(["mean", "std"]).reset_index()
        summary.columns = ["method", "ncc_mean", "ncc_sd", "mass_in_truth_mean", "mass_in_truth_sd"]
        write_table(group / "scores_summary.tsv", summary, force=True)


def _safe(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9]", "", text) or "x"
