"""Each command's own sections of its run report, and its methods paragraph.

A hook reads only files the run itself recorded (``view.find`` over ``written.txt``, or the
per-subject ``done`` records), so it follows the command's file names wherever they change.
To plug a command in: ``@register("name")`` a function ``view -> [Section, ...]`` and
``@register_methods("name")`` one ``view -> (paragraph, [citation keys])``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from neurointerp.report.html import Section, esc, kv_html, table_html
from neurointerp.report.methods import METHOD_CITATIONS, cite, citet, method_list
from neurointerp.report.run_report import RunView, register, register_methods


def _read_json(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _read_table(path: Path | None):
    if path is None:
        return None
    import pandas as pd

    try:
        return pd.read_csv(path, sep="\t" if str(path).endswith(".tsv") else ",")
    except (OSError, ValueError):
        return None


def _fmt(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "n/a" if not np.isfinite(f) else f"{f:.{digits}g}"


def _figures_section(view: RunView, title: str, pattern: str, text: str = "", limit: int = 24, anchor: str = "") -> list[Section]:
    figs = sorted(view.find(pattern))
    if not figs:
        return []
    more = f" ({len(figs) - limit} more in the folder)" if len(figs) > limit else ""
    return [Section(title, text + more, figures=figs[:limit], anchor=anchor, gallery=len(figs[:limit]) > 1)]


# --------------------------------------------------------------------------- preprocess

#: a QC value is flagged when its robust z (median / 1.4826 MAD of the cohort) is below this ...
QC_ROBUST_Z = -3.0
#: ... and it is at least this far below the median (so a tight cohort flags nobody for noise),
QC_MIN_GAP = 0.02
#: or when it is below these floors (registration or masking has failed outright)
QC_FLOORS = {"dice_brain_mask": 0.80, "ncc_template": 0.50}
QC_NAMES = {"dice_brain_mask": "Dice (brain mask vs template)", "ncc_template": "NCC (image vs template)"}


def qc_flags(frame, columns=tuple(QC_FLOORS)) -> list[str]:
    """One reason string per row ('' when not flagged): robust-z outliers of the cohort and values
    below the floors of :data:`QC_FLOORS`."""
    reasons = [[] for _ in range(len(frame))]
    for col in columns:
        if col not in frame.columns:
            continue
        v = frame[col].astype(float).to_numpy()
        ok = np.isfinite(v)
        med = float(np.median(v[ok])) if ok.any() else np.nan
        mad = 1.4826 * float(np.median(np.abs(v[ok] - med))) if ok.any() else np.nan
        for i, x in enumerate(v):
            if not np.isfinite(x):
                reasons[i].append(f"{col} missing")
            elif x < QC_FLOORS[col]:
                reasons[i].append(f"{col} {x:.3f} < {QC_FLOORS[col]:g}")
            elif ok.sum() >= 3 and med - x >= QC_MIN_GAP and (mad == 0 or (x - med) / mad < QC_ROBUST_Z):
                reasons[i].append(f"{col} {x:.3f}: outlier (cohort median {med:.3f})")
    return ["; ".join(r) for r in reasons]


def _qc_rows(view: RunView):
    import pandas as pd

    rows, figs = [], {}
    for rec in view.done:
        qc, secs = None, None
        for rel in rec.get("outputs", []):
            p = view.out / rel
            if rel.endswith(".json"):
                side = _read_json(p)
                if isinstance(side, dict) and isinstance(side.get("QC"), dict):
                    qc = side["QC"]
                    secs = (side.get("Timings") or {}).get("total")
            elif rel.endswith(".png") and p.exists():
                figs[rec.get("key")] = p
        row = {"participant_id": rec.get("participant_id", ""), "session_id": rec.get("session_id", "")}
        row.update({k: (qc or {}).get(k, np.nan) for k in QC_FLOORS})
        row["seconds"] = secs if secs is not None else np.nan
        row["_key"] = rec.get("key")
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame):
        frame = frame.sort_values(["participant_id", "session_id"]).reset_index(drop=True)
    return frame, figs


@register("preprocess")
def _preprocess(view: RunView) -> list[Section]:
    frame, figs = _qc_rows(view)
    if not len(frame):
        return [Section("Cohort QC", "No subject has finished yet.", status="skipped", anchor="qc")]
    frame["flagged because"] = qc_flags(frame)
    n_done, n_qc = len(frame), sum(1 for r in frame["flagged because"] if r)
    if view.failures is not None and len(view.failures):  # failed subjects: in the table too, red
        import pandas as pd

        failed = pd.DataFrame({"participant_id": view.failures.get("participant_id", ""), "session_id": view.failures.get("session_id", ""),
                               "flagged because": ["failed: " + str(m) for m in view.failures.get("message", [""] * len(view.failures))], "_key": ""})
        frame = pd.concat([frame, failed], ignore_index=True)
    flagged = [i for i, r in enumerate(frame["flagged because"]) if r]
    shown = frame.drop(columns=["_key"] + (["session_id"] if not (frame["session_id"] != "").any() else []))
    shown = shown.rename(columns=QC_NAMES)
    stats = "; ".join(f"{QC_NAMES[c]}: median {_fmt(frame[c].median())}, range {_fmt(frame[c].min())}-{_fmt(frame[c].max())}" for c in QC_FLOORS if frame[c].notna().any())
    text = (
        f"{n_done} subject(s) preprocessed{f' ({len(frame) - n_done} failed: red rows at the end)' if len(frame) > n_done else ''}. Dice: overlap of each subject's brain mask, carried to the template grid, with the "
        f"template's brain mask; NCC: normalised cross-correlation of the registered, z-scored image with the template inside the "
        f"template's brain. {stats}.\n\n"
        f"Flagged (red rows): a value below {QC_FLOORS['dice_brain_mask']:g} (Dice) or {QC_FLOORS['ncc_template']:g} (NCC), where registration "
        f"or masking has failed outright, or a cohort outlier (robust z < {QC_ROBUST_Z:g} from the median and MAD, and at least "
        f"{QC_MIN_GAP:g} below the median). "
        + (f"{n_qc} subject(s) flagged: look at their figures below first." if n_qc else "No finished subject is flagged.")
    )
    out = [Section("Cohort QC", text, table=shown, flag_rows=flagged, anchor="qc", nav="QC table", max_rows=2000)]
    if figs:
        order = [frame.loc[i, "_key"] for i in flagged] + [k for k in frame["_key"] if k not in {frame.loc[i, '_key'] for i in flagged}]
        paths = [figs[k] for k in order if k in figs]
        limit = 400
        note = (f" Only the first {limit} are shown." if len(paths) > limit else "")
        out.append(Section(
            "Per-subject QC figures",
            "Each subject's registered image (three orthogonal slices) with the template's brain outline (red) and its grey/white "
            "boundary (yellow): the outlines should follow the image's edges. Flagged subjects come first." + note,
            figures=paths[:limit], gallery=True, anchor="qc-figures", nav="QC figures",
        ))
    return out


@register_methods("preprocess")
def _preprocess_methods(view: RunView) -> tuple[str, list[str]]:
    o = view.options
    space = view.record.get("space") or o.get("template_source") or "the template"
    grid = o.get("grid") or o.get("shape")
    grid = "x".join(map(str, grid)) if isinstance(grid, (list, tuple)) else str(grid)
    keys = ["avants2011"]
    steps = []
    if o.get("reorient", True):
        steps.append("reoriented to RAS")
    if o.get("n4", True):
        steps.append(f"corrected for intensity non-uniformity with N4 {cite('tustison2010')} (fitted at {_fmt(o.get('n4_resolution'))} mm, {_fmt(o.get('n4_iterations', 50))} iterations at each of 4 levels)")
        keys.append("tustison2010")
    if o.get("denoise"):
        steps.append("denoised (non-local means, ANTs)")
    be = o.get("brain_extraction", "none")
    steps.append("used without brain extraction (already skull-stripped)" if be in (None, "none") else f"skull-stripped ({be})")
    reg = o.get("registration", "affine")
    tpl_default = "MNI152NLin2009" in str(space)
    if tpl_default:
        keys.append("fonov2011")
    text = (
        f"T1-weighted images were preprocessed with neurointerp preprocess, which uses ANTs through ANTsPy {cite('avants2011')}. "
        f"Each image was {', '.join(steps)}, then registered to the {space} template{' ' + cite('fonov2011') if tpl_default else ''} with "
        f"{'an' if str(reg)[:1] in 'aeiou' else 'a'} {reg} transform estimated on a {_fmt(o.get('registration_resolution'))} mm grid, resampled to a {grid} working grid in one "
        f"interpolation and z-scored inside the brain mask. Registration quality was measured by the Dice overlap of the brain mask with "
        f"the template's and the normalised cross-correlation with the template (QC table)."
    )
    return text, keys


# --------------------------------------------------------------------------- train


def _evidence_rows(ev: dict):
    import pandas as pd

    rows = []
    for unit, e in ev.items():
        if not isinstance(e, dict):
            continue
        ci = e.get("ci") or [np.nan, np.nan]
        b = e.get("baseline") or {}
        rows.append({
            "model": unit, "evidence": e.get("source", ""), "participants": e.get("n_participants"),
            "balanced accuracy": e.get("balanced_accuracy", np.nan), "AUC": e.get("auc", np.nan),
            "R2": e.get("r2", np.nan), "primary": e.get("primary", ""), "95% CI": f"{_fmt(ci[0])}-{_fmt(ci[1])}",
            "p vs chance": e.get("p_value", np.nan), "test": e.get("test", ""),
            "baseline": f"{'+'.join(b.get('confounders', []))} {_fmt(b.get(b.get('gain_of', ''), np.nan))}" if b else "",
            "beats chance": bool(e.get("beats_chance")),
        })
    frame = pd.DataFrame(rows)
    empty = [c for c in ("R2", "AUC", "balanced accuracy", "baseline") if c in frame and (frame[c].isna() | (frame[c] == "")).all()]
    return frame.drop(columns=empty)


@register("train")
def _train(view: RunView) -> list[Section]:
    from neurointerp.train.evidence import describe, describe_baseline

    out = []
    ev = _read_json(view.first("*evidence*.json"))
    if isinstance(ev, dict) and ev:
        main = ev.get("final") or ev.get("cross-validation") or next(iter(ev.values()))
        ok = bool(main.get("beats_chance"))
        badge = "<span class='badge ok'>evidence of skill</span>" if ok else "<span class='badge bad'>no evidence of skill</span>"
        line = describe(main)
        base = describe_baseline(main)
        frame = _evidence_rows(ev)
        bad = [i for i, v in enumerate(frame.get("beats chance", [])) if not v]
        text = (f"<p>{badge} {esc(line)}.{(' ' + esc(base[:1].upper() + base[1:]) + '.') if base else ''}</p><p class='note'>Each row: a model and the participants it never saw "
                "(a fold model: its own held-out fold; the final model: the pooled cross-validation). AUC with a 95% bootstrap CI, "
                "balanced accuracy, and a one-sided test against chance; rows without evidence of skill are red: saliency, confound-test, "
                "simulate and evaluate refuse those models without --allow-unvalidated.</p>")
        out.append(Section("Held-out evidence", html=text + table_html(frame, bad), anchor="evidence", nav="Evidence"))
    cv = _read_table(view.first("cv_summary*.tsv"))
    if cv is not None:
        out.append(Section("Cross-validation per fold", table=cv, anchor="cv", nav="Folds"))
    out += _figures_section(view, "Learning curve", "*.png", "Training loss and held-out figures against optimiser steps (per fold and final model).", anchor="curve")
    return out


@register_methods("train")
def _train_methods(view: RunView) -> tuple[str, list[str]]:
    o = view.options
    ev = _read_json(view.first("*evidence*.json")) or {}
    folds = sum(1 for k in ev if str(k).startswith("fold-"))
    from neurointerp.train.defaults import DEFAULT_STEPS

    budget = (f"{o.get('steps')} optimiser steps" if o.get("steps") else f"{o.get('epochs')} epochs" if o.get("epochs")
              else f"{DEFAULT_STEPS} optimiser steps")
    cv = (f"Skill was estimated by {folds}-fold subject-level stratified cross-validation (no participant in both a training and a "
          f"held-out fold); the final model was trained on all participants with the same settings." if folds else
          "Skill was estimated on a held-out validation split of participants." if o.get("validation_fraction") else
          "No held-out data was used: this model carries no evidence of skill.")
    aug = []
    if o.get("rotation"):
        aug.append(f"rotations up to {_fmt(o.get('rotation'))} degrees")
    if o.get("shift"):
        aug.append(f"shifts up to {_fmt(o.get('shift'))} voxels")
    if o.get("flip"):
        aug.append("left-right flips")
    text = (
        f"A {o.get('architecture', 'CNN')} convolutional network ({o.get('task', '')} task, positive class '{o.get('positive_class', '')}') "
        f"was trained with neurointerp train for {budget} (batch {o.get('batch_size')}, {o.get('optimizer', 'adam')} {cite('kingma2015') if o.get('optimizer', 'adam') == 'adam' else ''}, "
        f"learning rate {_fmt(o.get('lr'))} with {o.get('lr_schedule', '')} schedule and {_fmt(o.get('warmup'))} warm-up, {o.get('sampling', '')} sampling"
        f"{', augmentation: ' + ', '.join(aug) if aug else ''}; seed {o.get('seed')}). {cv} Held-out skill is reported as the AUC with a 95% "
        f"bootstrap confidence interval {cite('hanley1982')}, the balanced accuracy, and a one-sided Mann-Whitney test of AUC > 0.5."
    )
    refs = ["kingma2015", "hanley1982"] if o.get("optimizer", "adam") == "adam" else ["hanley1982"]
    conf = list(o.get("confounders") or o.get("confounder") or [])
    if conf and o.get("balance_confounders"):
        text += (f" Training samples were drawn in proportion to overlap weights of a logistic model of the class on {', '.join(conf)} "
                 f"(1 - p(own class | {', '.join(conf)}) for two classes) {cite('li2018')}, so that the weighted means of {', '.join(conf)} were "
                 f"equal in every class of the draws.")
        refs.append("li2018")
    elif conf and o.get("task") != "regression":
        text += f" Training draws were not weighted for {', '.join(conf)}."
    if conf:
        text += f" A baseline on {', '.join(conf)} alone was fitted and evaluated on the same held-out participants."
    return text, refs


# --------------------------------------------------------------------------- saliency


def _skill_section(view: RunView, model_key: str = "model") -> list[Section]:
    """The model's held-out skill, read from its checkpoint: shown before any map."""
    from neurointerp.models.skill import checkpoint_evidence
    from neurointerp.train.evidence import describe, describe_baseline

    path = (view.record.get("input_paths") or {}).get(model_key)
    if not path or not Path(path).is_file():
        return []
    from neurointerp.models.checkpoint import read_checkpoint

    try:
        ck = read_checkpoint(path)
    except Exception as exc:  # noqa: BLE001
        return [Section("Held-out skill of the model", f"{path}: could not be read ({exc}).", status="failed", anchor="skill", nav="Model skill")]
    ev = checkpoint_evidence(ck)
    if ev is None:
        html = ("<p><span class='badge bad'>no held-out evidence</span> The checkpoint records no held-out evidence of skill: "
                "its maps may explain noise.</p>")
    else:
        ok = bool(ev.get("beats_chance"))
        base = describe_baseline(ev)
        html = (f"<p><span class='badge {'ok' if ok else 'bad'}'>{'evidence of skill' if ok else 'no evidence that it beats chance'}</span> "
                f"{esc(describe(ev))}.{(' ' + esc(base[:1].upper() + base[1:]) + '.') if base else ''}</p>")
        if not ok:
            html += "<p class='failed'>The maps below explain a model without evidence of skill (the run used --allow-unvalidated): they may explain noise.</p>"
    html += f"<p class='note'>Checkpoint: <code>{esc(path)}</code> (sha256 {esc(str((view.record.get('inputs') or {}).get(model_key, ''))[:16])}...). Read it first: maps and tests of a model that learned nothing look just like the real thing.</p>"
    return [Section("Held-out skill of the model", html=html, anchor="skill", nav="Model skill")]


@register("saliency")
def _saliency(view: RunView) -> list[Section]:
    out = _skill_section(view)
    n_maps = len(view.item_files("*.nii.gz"))
    scores = _read_table(view.first("*scores_summary*.tsv"))
    if scores is not None:
        out.append(Section("Scores against the ground truth", "Per-subject NCC of each map with the ground truth and the share of its mass inside the truth mask "
                           "(mean and sd over subjects; the per-subject values are in the scores table).", table=scores, anchor="truth", nav="Truth scores"))
    out += _figures_section(view, "Group mean maps", "group/*.png", f"{n_maps} per-subject maps written. Group means (|map|) of each method.", anchor="group", limit=12)
    out += _roi_section(view, "Atlas regions")
    return out


def _roi_section(view: RunView, title: str, rows: int = 15, tables: int = 8) -> list[Section]:
    """The top rows of each atlas region table the run wrote: the first open, the others folded."""
    found = sorted(view.find("*roi*.tsv"), key=lambda p: (0 if "all" in p.name else 1, view.rel(p)))
    parts = []
    for k, p in enumerate(found[:tables]):
        t = _read_table(p)
        if t is None:
            continue
        head = f"{esc(view.rel(p))}: the first {min(rows, len(t))} of {len(t)} rows (ranked as written)"
        body = table_html(t.head(rows))
        parts.append(f"<h3>{head}</h3>{body}" if k == 0 else f"<details><summary>{head}</summary>{body}</details>")
    if not parts:
        return []
    more = f"<p class='note'>{len(found) - tables} more region tables in the folder.</p>" if len(found) > tables else ""
    return [Section(title, html="".join(parts) + more, anchor="regions", nav="Regions")]


@register_methods("saliency")
def _saliency_methods(view: RunView) -> tuple[str, list[str]]:
    o = view.options
    methods = method_list(o.get("method"))
    keys, named = [], []
    for m in methods:
        k = METHOD_CITATIONS.get(m, ())
        keys += list(k)
        extra = ""
        if m == "integrated-gradients":
            extra = f", {o.get('steps')} steps from a {o.get('baseline')} baseline"
        elif m == "smoothgrad":
            extra = f", {o.get('samples')} samples, noise {_fmt(o.get('noise_level'))} of the intensity range"
        elif m == "occlusion":
            extra = f", window {o.get('window')}, stride {o.get('stride')} voxels"
        elif m.startswith("lrp-epsilon"):
            extra = f", epsilon {_fmt(o.get('epsilon'))}"
        named.append(f"{m}{extra} {cite(*k)}" if k else m + extra)
    target = f"class '{o['target']}'" if o.get("target") else "each subject's predicted class"
    text = (f"Per-subject attribution maps were computed with neurointerp saliency: {'; '.join(named)}. Each map explains the {o.get('score', 'logit')} "
            f"of {target} on the model's input grid (seed {o.get('seed')}), and group means were computed per label. The methods are reviewed in {citet('review')}.")
    keys.append("review")
    if o.get("confounder_mask") or (view.record.get("inputs") or {}).get("confounder_mask"):
        text += f" Confounder-free maps: back-propagation through the features not confounded per confound-test's mask only {cite('zhao2019')}."
        keys.append("zhao2019")
    if o.get("ground_truth"):
        text += " Maps were scored against the ground truth by normalised cross-correlation and the share of attribution mass inside the truth mask."
    return text, keys


# --------------------------------------------------------------------------- confound-test


@register("confound-test")
def _confound(view: RunView) -> list[Section]:
    summary = _read_json(view.first("summary.json")) or {}
    out = _skill_section(view)
    tests = summary.get("ModelTests")
    names = ", ".join((view.options.get("confounder") or []))
    if isinstance(tests, dict) and tests.get("Conclusions"):
        out.append(Section("Is the model right for the wrong reason?", "\n\n".join(tests["Conclusions"]), anchor="verdict", nav="Verdict"))
        table = _read_table(view.first("model_tests*.tsv"))
        within = tests.get("WithinClass") or []
        n_perm = max([w.get("n_perm", 0) for w in within] or [0])
        thr = view.options.get("threshold", 0.05)
        flag = [i for i, v in enumerate(table["significant"]) if str(v).lower() == "true"] if table is not None and "significant" in table else []
        out.append(Section(
            "Model-level tests",
            f"Score: {tests.get('Score')}. Subjects: {(tests.get('Subjects') or {}).get('note', '')}. (a) label ~ confounders + score against label ~ confounders, "
            f"likelihood-ratio test. (b) partial correlation of the score with each confounder given the others, within each class; "
            f"p from {n_perm} Freedman-Lane permutations (p_perm), Holm-corrected over the {len(within)} tests (p_holm); significant at p < {thr:g} (red rows).",
            table=table, flag_rows=flag, anchor="model-tests", nav="Model tests",
        ))
    elif isinstance(tests, dict):
        out.append(Section("Model-level tests", f"Not run: {tests.get('NotRun')}.", status="skipped", anchor="model-tests"))
    if summary:
        fdr = view.options.get("fdr")
        thr = view.options.get("threshold", 0.05)
        crit = f"q < {thr:g} (Benjamini-Hochberg)" if fdr else f"p < {thr:g}"
        layer = view.options.get("layer") or "the encoder output"
        out.append(Section(
            "Per-feature GLM (confounder-aware saliency, step 1)",
            f"{summary.get('NConfounded')} of {summary.get('NFeatures')} features at {layer} carry {names} ({crit}; "
            f"{summary.get('NConstant')} constant), tested on {summary.get('NSubjects')} subjects. mask.json gates them out in "
            "`saliency --confounder-mask`; confound_glm.tsv has every feature's coefficients.",
            anchor="glm", nav="Feature GLM",
        ))
    return out


@register_methods("confound-test")
def _confound_methods(view: RunView) -> tuple[str, list[str]]:
    o = view.options
    names = ", ".join(o.get("confounder") or [])
    keys = ["zhao2019"]
    text = (f"Confounded features were identified as in confounder-aware saliency {cite('zhao2019')}: for every feature f of layer "
            f"{o.get('layer') or 'the encoder output'}, the GLM f = b0 + b1 s + b2 c (s: the model's {o.get('score')}, c: {names}) was fitted over "
            f"the subjects and a feature was called confounded when the confounder term was significant (")
    if o.get("fdr"):
        text += f"Benjamini-Hochberg q < {_fmt(o.get('threshold'))} {cite('benjamini1995')})."
        keys.append("benjamini1995")
    else:
        text += f"p < {_fmt(o.get('threshold'))})."
    if o.get("model_tests"):
        text += (f" Model-level tests asked whether the score carries information beyond the confounders (likelihood-ratio test of a "
                 f"logistic model) and whether it depends on them within each class (partial correlation, {o.get('permutations')} "
                 f"Freedman-Lane permutations {cite('winkler2014')}, Holm correction).")
        keys.append("winkler2014")
    return text, keys


# --------------------------------------------------------------------------- group-map


@register("group-map")
def _group_map(view: RunView) -> list[Section]:
    out = []
    summary = _read_json(view.first("*group_map*.json")) or {}
    if summary:
        pairs = [("Maps", summary.get("n_maps")), ("Participants", summary.get("n_participants")), ("Space", summary.get("space")),
                 ("Groups", ", ".join(f"{k}: {v}" for k, v in (summary.get("groups") or {}).items()))]
        glm = summary.get("glm")
        if isinstance(glm, dict):
            for k in ("contrast", "formula", "df", "n_fdr_significant", "n_fwe_significant", "n_permutations"):
                if k in glm:
                    pairs.append((k.replace("_", " "), json.dumps(glm[k]) if isinstance(glm[k], (list, dict)) else glm[k]))
        out.append(Section("Statistics summary", html=kv_html(pairs), anchor="stats", nav="Statistics"))
    out += _figures_section(view, "Group maps", "*.png", "", anchor="figures", limit=16)
    out += _roi_section(view, "Atlas regions")
    return out


@register_methods("group-map")
def _group_map_methods(view: RunView) -> tuple[str, list[str]]:
    o = view.options
    keys = []
    text = "Group statistics of the per-subject maps were computed with neurointerp group-map in one streaming pass: per-group mean, mean |map|, standard deviation and count of non-zero maps."
    design = o.get("design")
    if design and design != "none":
        text += f" A voxelwise general linear model ({design}) gave t and z maps with Benjamini-Hochberg FDR q values {cite('benjamini1995')}"
        keys.append("benjamini1995")
        if o.get("permutations"):
            text += f" and family-wise error p values from {o.get('permutations')} permutations (max-statistic) {cite('winkler2014')}"
            keys.append("winkler2014")
        text += "."
    if o.get("atlas") and o.get("atlas") != "none":
        text += f" Region summaries used the {o.get('atlas')} atlas."
    return text, keys


# --------------------------------------------------------------------------- evaluate


@register("evaluate")
def _evaluate(view: RunView) -> list[Section]:
    out = _skill_section(view)
    t = _read_table(view.first("metrics.tsv"))
    if t is not None:
        flag = [i for i, v in enumerate(t.get("randomisation_flag", [])) if str(v).lower() == "true"]
        out.append(Section("Attribution quality", "Fidelity (infidelity: lower is better; deletion AUC: lower is better), stability (max-sensitivity, continuity: lower is "
                           "steadier) and the cascading-randomisation sanity check: a method whose maps barely change when the model's weights are "
                           "randomised is flagged (red rows) - its maps do not depend on what the model learned.", table=t, flag_rows=flag, anchor="metrics", nav="Metrics"))
    out += _figures_section(view, "Figures", "*.png", anchor="figures")
    return out


@register_methods("evaluate")
def _evaluate_methods(view: RunView) -> tuple[str, list[str]]:
    o = view.options
    methods = method_list(o.get("method"))
    keys = ["yeh2019", "adebayo2018"]
    for m in methods:
        keys += list(METHOD_CITATIONS.get(m, ()))
    text = (f"Attribution methods ({', '.join(methods)}) were evaluated with neurointerp evaluate on {o.get('n_subjects')} subjects: infidelity and "
            f"max-sensitivity {cite('yeh2019')} ({o.get('samples')} perturbations, {o.get('sensitivity_samples')} sensitivity samples), the deletion "
            f"curve, continuity, and the cascading model-parameter randomisation test {cite('adebayo2018')}.")
    return text, keys


# --------------------------------------------------------------------------- simulate, jacobian, segment-bg


@register("simulate train", "simulate apply", "jacobian", "segment-bg train", "segment-bg apply")
def _tables_and_figures(view: RunView) -> list[Section]:
    out = []
    if view.command in ("simulate train", "simulate apply", "segment-bg apply"):
        out += _skill_section(view, "classifier") if view.command.startswith("simulate") else []
    for p in sorted(view.find("*.tsv"))[:4]:
        if p.name == "failures.tsv":
            continue
        t = _read_table(p)
        if t is None or not len(t):
            continue
        if len(t) > 20:
            text = f"{view.rel(p)}: {len(t)} rows; the last 20 are shown." if "loss" in " ".join(map(str, t.columns)).lower() else f"{view.rel(p)}: the first 20 of {len(t)} rows."
            t = t.tail(20) if "loss" in " ".join(map(str, t.columns)).lower() else t.head(20)
        else:
            text = view.rel(p)
        losses = any("loss" in str(c).lower() for c in t.columns)
        title = "Training losses" if losses else p.stem.replace("_", " ").capitalize()
        out.append(Section(f"{title} ({p.name})", text, table=t, anchor=f"t-{p.stem}", nav=title[:18]))
    out += _figures_section(view, "Figures", "*.png", anchor="figures", limit=12)
    return out


@register_methods("simulate train", "simulate apply")
def _simulate_methods(view: RunView) -> tuple[str, list[str]]:
    o = view.options
    m = o.get("method", "simulator")
    if m == "icam":
        return (f"Feature attribution by image-to-image translation with ICAM {cite('bass2020')}: a VAE-GAN whose attribute space is disentangled "
                "from the content space; attribution maps are the differences between an image and its translations to the other class."), ["bass2020"]
    if m == "vagan":
        return (f"Visual attribution with VA-GAN {cite('baumgartner2018')}: a Wasserstein GAN learns an additive map that moves an image of one class to the other."), ["baumgartner2018"]
    return (f"Simulator networks {cite('liu2021')}: a conditional U-Net trained against the frozen classifier injects (or removes) the disease pattern "
            f"by warping each image (mode {o.get('mode', 'warp')}, logit shift delta {o.get('delta', '')}); the displacement fields are turned into "
            f"log-Jacobian maps of tissue expansion and atrophy."), ["liu2021"]


@register_methods("jacobian")
def _jacobian_methods(view: RunView) -> tuple[str, list[str]]:
    return (f"Determinants of the Jacobian of each displacement field (and their logarithms) were computed voxelwise, as for the simulator "
            f"networks' fields {cite('liu2021')}: values above 1 (log above 0) mark expansion, below 1 atrophy."), ["liu2021"]


@register_methods("segment-bg train", "segment-bg apply")
def _segment_bg_methods(view: RunView) -> tuple[str, list[str]]:
    return (f"Rodent brain tissue was segmented slice by slice with a 2D U-Net {cite('ronneberger2015')}; guided back-propagation "
            f"{cite('springenberg2015')} of the background class finds the voxels the network treats as background and removes them "
            f"{cite('gbp_rodent')}."), ["ronneberger2015", "springenberg2015", "gbp_rodent"]


# --------------------------------------------------------------------------- demo


@register_methods("demo")
def _demo_methods(view: RunView) -> tuple[str, list[str]]:
    from neurointerp.demo import DEMO_METHODS

    keys = ["avants2011", "tustison2010", "fonov2011", "zhao2019", "liu2021", "bass2020", "ronneberger2015", "springenberg2015", "gbp_rodent",
            "review", "yeh2019", "adebayo2018"]
    for m in DEMO_METHODS:
        keys += list(METHOD_CITATIONS.get(m, ()))
    maps = ", ".join(f"{m} {cite(*METHOD_CITATIONS[m])}" for m in DEMO_METHODS if m in METHOD_CITATIONS)
    text = (f"A synthetic brain cohort with planted disease and age effects was preprocessed with ANTs {cite('avants2011')}: N4 bias "
            f"correction {cite('tustison2010')} and affine registration to MNI152NLin2009aSym {cite('fonov2011')}. A 3D CNN was trained "
            f"with a subject-level stratified validation split held out and its skill on that split tested against chance. The attribution maps of {maps} were scored "
            f"against the planted truth (review: {citet('review')}); confounded features were found and gated out as in {citet('zhao2019')}; "
            f"a warp simulator {cite('liu2021')} gave log-Jacobian maps; map quality was evaluated by infidelity and sensitivity "
            f"{cite('yeh2019')} and model randomisation {cite('adebayo2018')}. ICAM {cite('bass2020')} ran on 2D lesions, and a U-Net "
            f"{cite('ronneberger2015')} with guided back-propagation {cite('springenberg2015')} background removal "
            f"{cite('gbp_rodent')} on a synthetic rodent cohort. Each step's own report (report.html in its folder) has its methods paragraph.")
    return text, keys
