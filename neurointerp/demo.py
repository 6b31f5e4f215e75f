"""``neurointerp demo``: every available step, end to end, on a small synthetic brain cohort.

Each step writes into its own subfolder of ``out`` and adds a section to ``report.html``.
The planted ground truth of the cohort (disease and confounder log-Jacobians) is shown next
to what the steps recover, so a user sees at a glance whether a map can be trusted.
"""

from __future__ import annotations

import html
import os
import time
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError, NeurointerpError
from neurointerp.io.cohort import read_table_keeping_ids
from neurointerp.report.html import Section
from neurointerp.runs.context import runs_as


# the demo's classifier: one model (no cross-validation), its held-out evidence from a stratified
# validation split of 30 % of the participants that it never trains on (early stopping off, so
# nothing is chosen on it); that split is the demo's held-out set for every later step
DEMO_TRAIN = dict(folds=0, validation_fraction=0.3, steps=150)
# the demo's preprocessing: N4 with 25 iterations per fitting level instead of 50 (on the demo's
# 4 mm images the corrected intensities correlate 0.998 with the 50-iteration result, in half the time)
DEMO_N4_ITERATIONS = 25
DEMO_METHODS = ("gradient", "smoothgrad", "integrated-gradients", "gradcam", "guided-backprop", "occlusion")
# the demo's simulator: small enough for two CPU cores (see benchmarks/simulate.py for the study)
DEMO_SIMULATOR = dict(delta=5.0, lambda_smooth=10.0, channels=[8, 16, 32], fc=32, epochs=8, batch_size=8)
# ICAM on 2D lesions: 15 epochs (measured: 26 s instead of 36 s for 25, NCC of the mean FA map with
# the lesions 0.37 / 0.11 against 0.35 / 0.14, attribute-space accuracy 0.88 both)
DEMO_ICAM_EPOCHS = 15


@runs_as("demo")
def run_demo(
    out: str | os.PathLike = "neurointerp-demo",
    n_subjects: int = 40,
    voxel_size: float = 4.0,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Run the demo chain and return the path of ``report.html``. Same arguments as the CLI.

    synth brain -> preprocess -> train -> saliency (scored against the planted truth) ->
    confound-test (age) and confounder-free saliency -> simulate (warp simulator) and jacobian ->
    group-map -> evaluate; then ICAM on synthetic 2D lesions and segment-bg on a synthetic rodent cohort.
    """
    from neurointerp._version import __version__
    from neurointerp.io import prepare_output_dir
    from neurointerp.progress import info
    from neurointerp.report.html import write_report

    if n_subjects < 16:
        raise InputError(f"the demo needs at least 16 subjects (got {n_subjects})")
    from neurointerp.runs.context import current

    out = prepare_output_dir(out, force=force)
    sections: list[Section] = []
    run = current()
    if run is not None:  # the demo's steps become sections of its run report
        run.report_sections = sections
    timings: dict[str, float] = {}
    state: dict = {}
    steps = [
        ("synth brain", lambda: _step_synth(out, n_subjects, voxel_size, seed, force, sections, state)),
        ("preprocess", lambda: _step_preprocess(out, seed, force, sections, state)),
        ("train", lambda: _step_train(out, seed, force, sections, state)),
        ("saliency", lambda: _step_saliency(out, seed, force, sections, state)),
        ("confound-test", lambda: _step_confound(out, seed, force, sections, state)),
        ("simulate + jacobian", lambda: _step_simulate(out, seed, force, sections, state)),
        ("group-map", lambda: _step_group(out, seed, force, sections, state)),
        ("evaluate", lambda: _step_evaluate(out, seed, force, sections, state)),
        ("icam", lambda: _step_icam(out, seed, force, sections)),
        ("segment-bg", lambda: _step_segment_bg(out, seed, force, sections)),
    ]
    for name, step in steps:
        info(f"demo: {name}")
        t0 = time.perf_counter()
        step()
        timings[name] = time.perf_counter() - t0
    summary = "\n".join(f"{k}: {v:.1f} s" for k, v in timings.items()) + f"\ntotal: {sum(timings.values()):.1f} s"
    sections.append(Section("Timings", summary))
    steps_html = "".join(
        f"<li><a href='{html.escape(p.relative_to(out).as_posix())}'>{html.escape(p.parent.name)}/{html.escape(p.name)}</a></li>"
        for p in sorted(out.glob("*/*report.html"))
    )
    if steps_html:
        sections.append(Section("Each step's own report", "Every command the demo ran wrote its own report into its folder: its options, methods and provenance.",
                                html=f"<ul>{steps_html}</ul>", nav="Step reports"))
    report = run.folder.write_report() if run is not None and run.folder is not None else None
    if report is None:  # no run record (a bare call): the sections alone
        report = write_report(out / "report.html", "neurointerp demo", sections, footer=f"neurointerp {__version__}; seed {seed}")
    return report


def _step_synth(out: Path, n_subjects: int, voxel_size: float, seed: int, force: bool, sections: list[Section], state: dict) -> Path:
    import pandas as pd
    from scipy import stats

    from neurointerp.io import load_image, read_cohort
    from neurointerp.report.figures import ortho_figure
    from neurointerp.synth.brain import SPACE, synth_brain

    data = out / "synth"
    # a strong planted disease effect and a large age effect, correlated with diagnosis at the
    # default 0.5, so that a small cohort shows both and the classifier can learn the disease
    table = synth_brain(data, n_subjects=n_subjects, voxel_size=voxel_size, effect_size=3.0, confound_strength=0.5, confound_size=2.0, seed=seed, force=force)
    state["synth"] = data
    state["synth_table"] = table
    cohort = read_cohort(table, numeric=["age"])
    frame = cohort.frame
    truth = data / "truth"
    tpl = load_image(truth / f"space-{SPACE}_T1w.nii.gz")
    dis = load_image(truth / f"space-{SPACE}_desc-disease_logjacobian.nii.gz")
    age = load_image(truth / f"space-{SPACE}_desc-confounder_logjacobian.nii.gz")
    figs = out / "figures"
    truth_png = ortho_figure(
        [("disease (severity 1)", tpl.data, tpl.affine, dis.data), ("age (+1 SD)", tpl.data, tpl.affine, age.data)],
        figs / "truth.png",
        at_world=(-26.0, -18.0, 10.0),
        overlay_label="log-Jacobian",
    )
    first = [frame.index[frame["label"] == lab][0] for lab in sorted(frame["label"].unique())]
    panels = []
    for i in first:
        vol = load_image(cohort.images[i])
        panels.append((f"{frame.loc[i, 'participant_id']} ({frame.loc[i, 'label']})", vol.data, vol.affine, None))
    native_png = ortho_figure(panels, figs / "native_examples.png")
    groups = frame.groupby("label")["age"].agg(["count", "mean", "std"]).reset_index()
    is_patient = (frame["label"] == sorted(frame["label"].unique())[-1]).astype(float)
    r, p = stats.pearsonr(frame["age"], is_patient)
    text = (
        f"{len(frame)} subjects written to {data.name}/ in native (posed, LAS, bias field, Rician noise) space. "
        f"Planted disease effect: hippocampal atrophy and ventricle expansion; planted confounder: age "
        f"(frontal atrophy), correlated with diagnosis (r = {r:.2f}, p = {p:.2g}); sex is a null covariate.\n\n"
        f"Ground truth (template space {SPACE}) is in {data.name}/truth/. The demo plants a strong "
        f"disease effect (effect size 3) and a large age effect (size 2) correlated with diagnosis (0.5) so that a "
        f"cohort this small shows both."
    )
    sections.append(Section("Synthetic cohort (synth brain)", text, [truth_png, native_png], table=pd.DataFrame(groups)))
    return table


def _step_preprocess(out: Path, seed: int, force: bool, sections: list[Section], state: dict) -> None:
    from neurointerp.atlases import resample_to_grid
    from neurointerp.io import load_image, save_image
    from neurointerp.preprocess.antsio import available_cpus
    from neurointerp.preprocess.pipeline import run_preprocess
    from neurointerp.report.figures import ortho_figure
    from neurointerp.synth.brain import SPACE

    # the synthetic images are skull-stripped; a 32^3 grid (about 6 mm) keeps the demo fast;
    # one subject per CPU at a time (the demo's images are small: one thread each is enough)
    jobs = min(8, available_cpus())
    result = run_preprocess(state["synth_table"], out / "preprocess", shape=32, brain_extraction="none", registration_resolution=6.0,
                            n4_iterations=DEMO_N4_ITERATIONS, n_jobs=jobs, threads=1, seed=seed, force=force)
    frame = read_table_keeping_ids(result.table)
    frame["image"] = [str((result.table.parent / p).resolve()) for p in frame["image"]]
    state["cohort_csv"] = out / "cohort.csv"
    frame.to_csv(state["cohort_csv"], index=False)
    state["frame"] = frame
    first = load_image(frame["image"][0])
    state["grid"] = (first.shape, first.affine, first.header)
    truth = state["synth"] / "truth"
    grid_truth = out / "truth_on_grid"
    for name in ("disease", "confounder"):
        src = load_image(truth / f"space-{SPACE}_desc-{name}_logjacobian.nii.gz")
        data = resample_to_grid(src.data, src.affine, first.shape, first.affine)
        state[f"truth_{name}"] = save_image(data, first.affine, grid_truth / f"space-{SPACE}_desc-{name}_logjacobian.nii.gz", force=True)
    tpl = load_image(truth / f"space-{SPACE}_T1w.nii.gz")
    state["template_on_grid"] = resample_to_grid(tpl.data, tpl.affine, first.shape, first.affine)
    qc = sorted((out / "preprocess").glob("sub-*/figures/*.png"))[:1]
    example = ortho_figure([(f"{frame['participant_id'][0]} preprocessed", first.data, first.affine, None)], out / "figures" / "preprocessed_example.png")
    text = (
        f"{len(result.done)} subjects: reorientation to RAS, N4 ({DEMO_N4_ITERATIONS} iterations at each of 4 levels), affine "
        f"registration to {SPACE} (estimated on a 6 mm grid), resampling to a 32^3 working grid, z-scoring inside the brain; "
        f"forward and inverse ANTs transforms and QC figures per subject in preprocess/ ({jobs} subject(s) at a time)."
    )
    sections.append(Section("Preprocessing (preprocess)", text, [example] + qc))


def _step_train(out: Path, seed: int, force: bool, sections: list[Section], state: dict) -> None:
    import pandas as pd

    from neurointerp.models.checkpoint import load_checkpoint
    from neurointerp.train.evidence import describe, describe_baseline
    from neurointerp.train.loop import train

    result = train(state["cohort_csv"], out / "train", folds=DEMO_TRAIN["folds"], final=True, validation_fraction=DEMO_TRAIN["validation_fraction"],
                   steps=DEMO_TRAIN["steps"], confounder=["age"], seed=seed, force=force)
    state["model"] = result.final_model
    clf = load_checkpoint(result.final_model)
    tr = clf.meta["training"]
    # the model's validation split (never trained on, nothing chosen on it) is the demo's held-out set
    frame = state["frame"]
    held_out = set(tr["validation_participant_ids"])
    is_test = frame["participant_id"].astype(str).isin(held_out)
    if is_test.sum() != len(held_out) or not is_test.any() or is_test.all():
        raise NeurointerpError(f"{result.final_model}: its validation participants do not match the demo cohort {state['cohort_csv']}")
    state["train_csv"] = out / "train.csv"
    state["test_csv"] = out / "test.csv"
    frame[~is_test].to_csv(state["train_csv"], index=False)
    frame[is_test].to_csv(state["test_csv"], index=False)
    ev = clf.meta["metrics"].get("evidence") or {}
    # a tiny demo cohort (--n-subjects 16) cannot show skill: the steps still run, with a warning on every map
    state["unvalidated"] = not ev.get("beats_chance")
    def row(model: str, figures: dict) -> dict:
        ci = figures.get("ci")
        return {"model": model, "held-out participants": ev.get("n_participants"), "AUC": figures.get("auc"),
                "AUC 95% CI": "{:.2f}-{:.2f}".format(*ci) if ci else "", "balanced accuracy": figures.get("balanced_accuracy"),
                "p vs chance": figures.get("p_value")}

    base = ev.get("baseline") or {}
    rows = [row("simnet3d", ev)] + ([row("age only (logistic regression)", base)] if base.get("auc") is not None else [])
    curve = out / "train" / "training_curve.png"
    verdict = "beats chance" if ev.get("beats_chance") else "does NOT beat chance: the maps below explain noise and must not be read"
    base_line = describe_baseline(ev)
    n_test, n_fit = int(is_test.sum()), int((~is_test).sum())
    # train's one line on the confounder weighting, as the checkpoint records it
    choice = (tr.get("confounder_weighting") or {}).get("reason") or ""
    weighting = f" {choice[:1].upper()}{choice[1:]}." if choice else ""
    text = (
        f"Held-out skill first, before any map. On the {n_test} held-out subjects, which the classifier never trained on: "
        f"{describe(ev) if ev else 'no evidence'} -- the model {verdict}."
        + (f" Against the confounder: {base_line}." if base_line else "")
        + (" On this held-out set age alone separates the classes as well as the model does, so these figures cannot tell whether the "
           "model learned the disease or age (train warns so); the maps below, scored against the planted disease and age patterns, can."
           if base.get("confounded") else "")
        + " This evidence is recorded in train/model.pt and checked by every command that explains the model.\n\n"
        f"simnet3d (simulator-networks §4.2: 3x3x3 conv stacks 16/32/64/16, MLP 64) trained on {n_fit} subjects; the other {n_test} "
        f"({DEMO_TRAIN['validation_fraction']:.0%}, stratified by diagnosis) are train's validation split, never trained on and not used to choose "
        f"the checkpoint (no early stopping), and every later step explains the model on them. {tr['steps_done']} optimiser steps of "
        f"class-balanced batches of 16 (Adam, warm-up and cosine decay); an age-only logistic regression fitted on the same {n_fit} "
        f"subjects is the confounder baseline (--confounder age).{weighting} No cross-validation here, to keep the demo short: "
        f"`neurointerp train` cross-validates by default (5 folds)."
    )
    sections.append(Section("Classifier (train): held-out skill", text, [curve] if curve.exists() else [], table=pd.DataFrame(rows)))


def _mean_abs_maps(out_dir: Path, desc: str, ids) -> np.ndarray:
    from neurointerp.io import load_image

    maps = [np.abs(load_image(p, allow_empty=True).data) for pid in ids for p in out_dir.glob(f"sub-{pid}/anat/*_desc-{desc}_attribution.nii.gz")]
    return np.mean(maps, axis=0)


# where the planted effects are (MNI mm): hippocampi (axial z = -14), ventricles (axial z = 22), coronal y = -20
CUTS = (("axial", -14.0), ("axial", 22.0), ("coronal", -20.0))
TOP_PERCENT = 10.0


def _contour_figure(rows, background: np.ndarray, affine: np.ndarray, masks, path: Path, title: str = "") -> Path:
    """One row per ``(title, volume)``: slices through the planted regions (:data:`CUTS`), each
    volume scaled to its own 99.5th percentile, with the planted masks' outlines drawn on top
    (``masks``: ``[(mask, colour, label)]``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    from neurointerp.io.atomic import atomic_path

    ornt = nib.orientations.io_orientation(affine)
    canon_aff = affine @ nib.orientations.inv_ornt_aff(ornt, background.shape)

    def canon(v):
        return nib.orientations.apply_orientation(np.asarray(v, dtype=np.float32), ornt)

    def cut(v, kind, mm):
        ijk = np.linalg.solve(canon_aff, np.r_[0.0, mm, 0.0, 1.0] if kind == "coronal" else np.r_[0.0, 0.0, mm, 1.0])[:3]
        if kind == "coronal":
            return v[:, int(np.clip(round(ijk[1]), 0, v.shape[1] - 1)), :].T
        return v[:, :, int(np.clip(round(ijk[2]), 0, v.shape[2] - 1))].T

    bg = canon(background)
    lo, hi = np.percentile(bg[bg != 0], [1, 99.5]) if np.any(bg != 0) else (0.0, 1.0)
    brain = bg != 0
    fig, axes = plt.subplots(len(rows), len(CUTS), figsize=(3.0 * len(CUTS), 2.9 * len(rows)), squeeze=False)
    for r, (name, vol) in enumerate(rows):
        v = canon(vol)
        inside = v[brain & (v > 0)]
        # the top TOP_PERCENT of the map's voxels inside the brain: where its mass is concentrated
        vmin = float(np.percentile(inside, 100 - TOP_PERCENT)) if inside.size else 0.0
        vmax = float(np.percentile(inside, 99.5)) if inside.size else 1.0
        for c, (kind, mm) in enumerate(CUTS):
            ax = axes[r, c]
            ax.imshow(cut(bg, kind, mm), cmap="gray", origin="lower", vmin=lo, vmax=hi, interpolation="nearest")
            ov = cut(v, kind, mm)
            ax.imshow(np.ma.masked_where((ov < vmin) | ~cut(brain, kind, mm), ov), cmap="autumn", origin="lower", vmin=vmin, vmax=max(vmax, vmin + 1e-12),
                      alpha=0.9, interpolation="nearest")
            for mask, colour, _ in masks:
                m = cut(canon(mask.astype(np.float32)), kind, mm)
                if m.any():
                    ax.contour(m, levels=[0.5], colors=colour, linewidths=1.2)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{kind} {'y' if kind == 'coronal' else 'z'} = {mm:g} mm", fontsize=9)
        axes[r, 0].set_ylabel(name, fontsize=9)
    legend = f"each row: its top {TOP_PERCENT:g} % of brain voxels; " + ", ".join(f"{colour} outline: {label}" for _, colour, label in masks)
    fig.suptitle((title + "\n" if title else "") + legend, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=110, format="png")
    plt.close(fig)
    return path


def _step_saliency(out: Path, seed: int, force: bool, sections: list[Section], state: dict) -> None:
    import pandas as pd

    from neurointerp.attribution.pipeline import method_desc, run_saliency
    from neurointerp.evaluate.metrics import mass_in_mask, ncc
    from neurointerp.io import load_image
    from neurointerp.synth.brain import MASK_THRESHOLD

    methods = list(DEMO_METHODS)
    sal = run_saliency(state["model"], state["test_csv"], out / "saliency", method=methods, steps=16, window=4, stride=4, ground_truth=str(state["truth_disease"]),
                       seed=seed, force=force, allow_unvalidated=state["unvalidated"])
    state["saliency"] = sal
    summary = pd.read_csv(sal / "group" / "scores_summary.tsv", sep="\t")
    shape, affine, _ = state["grid"]
    truth = np.abs(load_image(state["truth_disease"], allow_empty=True).data)
    age = np.abs(load_image(state["truth_confounder"], allow_empty=True).data)
    test = read_table_keeping_ids(state["test_csv"])
    background = np.mean([load_image(p).data for p in test["image"]], axis=0)
    brain = background != 0
    group = {m: _mean_abs_maps(sal, method_desc(m), test["participant_id"]) for m in methods}
    rows = [{"method": m, "NCC of group mean |map| with disease": ncc(g, truth, brain), "mass in disease mask": mass_in_mask(g, (truth > MASK_THRESHOLD) & brain, brain),
             "NCC with age": ncc(g, age, brain)} for m, g in group.items()]
    scores = pd.DataFrame(rows).merge(summary, on="method", how="left")
    best = max(rows, key=lambda r: r["NCC of group mean |map| with disease"])["method"]
    state["best_method"] = best
    dmask = (truth > MASK_THRESHOLD) & brain
    amask = (age > MASK_THRESHOLD) & brain
    fig = _contour_figure(
        [("planted disease |log-Jacobian|", truth), (f"mean |{best}| (best)", group[best]),
         *[(f"mean |{m}|", group[m]) for m in methods if m != best][:2]],
        background, affine, [(dmask, "lime", "planted disease"), (amask, "cyan", "planted age effect")],
        out / "figures" / "saliency_vs_truth.png",
    )
    warn = "" if not state["unvalidated"] else "WARNING: this classifier has no evidence of skill (see above); these maps explain noise. "
    text = (
        warn + f"{len(methods)} methods on the {len(test)} held-out subjects (targets: each subject's predicted class), maps of the classifier "
        "whose held-out skill is given above. The figure shows the group mean |map| through the planted regions (green outline: disease; "
        "cyan: age). Table: NCC of the group mean |map| with the planted |disease log-Jacobian| inside the brain, the share of its mass "
        "inside the disease mask, its NCC with the planted age pattern, and the per-subject scores of saliency (ncc_mean, ...)."
        f" Best here: {best}."
    )
    sections.append(Section("Attribution maps scored against the truth (saliency)", text, [fig], table=scores))


def _step_confound(out: Path, seed: int, force: bool, sections: list[Section], state: dict) -> None:
    import json

    import pandas as pd

    from neurointerp.attribution.pipeline import run_saliency
    from neurointerp.confound.run import run_confound_test
    from neurointerp.evaluate.metrics import ncc
    from neurointerp.io import load_image

    # the encoder output of simnet3d is a few coarse cells mixing frontal (age) and temporal (disease)
    # regions; the 2nd conv stack's features are spatially specific (see benchmarks/confound.py)
    layer = "encoder.stack2"
    mask_path = run_confound_test(state["model"], state["train_csv"], out / "confound", confounder=["age"], layer=layer, force=force, allow_unvalidated=state["unvalidated"])
    summary = json.loads((mask_path.parent / "summary.json").read_text())
    cfree = run_saliency(state["model"], state["test_csv"], out / "saliency_confounder_free", method=["gradient"], confounder_mask=mask_path, seed=seed, force=force, allow_unvalidated=state["unvalidated"])
    test = read_table_keeping_ids(state["test_csv"])
    ids = test["participant_id"]
    brain = np.mean([load_image(p).data for p in test["image"]], axis=0) != 0
    full = _mean_abs_maps(state["saliency"], "gradient", ids)
    free = _mean_abs_maps(cfree, "gradientcfree", ids)
    rows = []
    for name in ("disease", "confounder"):
        truth = np.abs(load_image(state[f"truth_{name}"], allow_empty=True).data)
        rows.append({"truth": name, "NCC full map": ncc(full, truth, brain), "NCC confounder-free map": ncc(free, truth, brain)})
    text = (
        f"confound-test on the {summary['NSubjects']} training images: {summary['NConfounded']} of {summary['NFeatures']} features of "
        f"layer {layer} (the 2nd conv stack) are confounded by age (GLM f = b0 + b1 s + b2 age, p < 0.05; {summary['NConstant']} constant). "
        f"Partial back-propagation through the other features gives confounder-free gradient maps; the table compares the "
        f"group-mean |map| with the planted disease and age (confounder) patterns before and after."
    )
    sections.append(Section("Confounders (confound-test, confounder-free saliency)", text, table=pd.DataFrame(rows)))


def _step_simulate(out: Path, seed: int, force: bool, sections: list[Section], state: dict) -> None:
    import pandas as pd

    from neurointerp.io import load_image
    from neurointerp.report.figures import ortho_figure
    from neurointerp.simulate.apply import apply_simulator
    from neurointerp.simulate.jacobian import jacobian_maps
    from neurointerp.simulate.train import train_simulator
    from neurointerp.synth.brain import SPACE

    delta = DEMO_SIMULATOR["delta"]
    sim = train_simulator(state["train_csv"], state["model"], out / "simulate", mode="warp", seed=seed, force=force, allow_unvalidated=state["unvalidated"], **DEMO_SIMULATOR)
    logits_path = apply_simulator(state["test_csv"], sim, state["model"], out / "simulate_apply", force=force, allow_unvalidated=state["unvalidated"])
    jac = jacobian_maps(out / "simulate_apply" / "fields.tsv", out / "jacobian", inverse=True, force=force)
    logits = pd.read_csv(logits_path, sep="\t")
    truth = load_image(state["truth_disease"], allow_empty=True)
    brain = np.mean([load_image(p).data for p in read_table_keeping_ids(state["test_csv"])["image"]], axis=0) != 0
    rows, panels = [], []
    for direction, sign in (("inject", 1.0), ("remove", -1.0)):
        sub = logits[logits["direction"] == direction]
        found = sorted((Path(jac) / "group").glob(f"space-{SPACE}*_desc-{direction}mean_logjacobian.nii.gz"))  # [res-<grid>_]
        if len(sub) and len(found) != 1:  # maps were made: their group mean must be there, once
            raise NeurointerpError(f"{Path(jac) / 'group'}: expected one {direction} mean log-Jacobian, found {len(found)}")
        path = found[0] if len(found) == 1 else None
        r = float("nan")
        if path is not None:
            mean = load_image(path, allow_empty=True).data
            r = float(np.corrcoef(sign * mean[brain], truth.data[brain])[0, 1])
            panels.append((f"mean log-Jacobian, {direction}", state["template_on_grid"], truth.affine, mean))
        rows.append({
            "direction": direction,
            "subjects": len(sub),
            f"logit shift >= {delta:g}": f"{(sub['shift'] >= delta).mean():.0%}" if len(sub) else "",
            "median shift": float(sub["shift"].median()) if len(sub) else float("nan"),
            "cycle-back |logit - raw|": float((sub["logit_cycle"] - sub["logit_raw"]).abs().mean()) if len(sub) else float("nan"),
            "r with planted log-Jacobian": r,
        })
    figs = [p for p in (out / "simulate_apply" / "logits.png",) if p.exists()]
    if panels:
        panels.insert(0, ("planted disease log-Jacobian", state["template_on_grid"], truth.affine, truth.data))
        figs.append(ortho_figure(panels, out / "figures" / "simulated_jacobian.png", at_world=(-26.0, -18.0, 10.0), overlay_label="log-Jacobian"))
    text = (
        "A cycle-consistent warp simulator (CondConv U-Net, simulator-networks §3, plus a learned template-space "
        "field per direction shared by all subjects) trained against the frozen classifier "
        "injects the disease into the held-out controls and removes it from the held-out patients; `jacobian --inverse` "
        "turns its displacement fields into log-Jacobian maps (tissue expansion > 0, atrophy < 0). The table gives the "
        "logit shifts (eq. 1 asks for at least delta), how far the cycle-back logits stay from the raw ones, and the "
        "correlation of the group-mean log-Jacobian (removal with its sign flipped) with the planted disease "
        "log-Jacobian inside the brain."
    )
    sections.append(Section("Simulated disease and its Jacobian (simulate, jacobian)", text, figs, table=pd.DataFrame(rows)))


def _step_group(out: Path, seed: int, force: bool, sections: list[Section], state: dict) -> None:
    import json

    import pandas as pd

    from neurointerp.group.api import group_map

    from neurointerp.attribution.pipeline import method_desc

    test = read_table_keeping_ids(state["test_csv"])
    best = state.get("best_method", "integrated-gradients")
    rows = []
    for pid, lab, age in zip(test["participant_id"], test["label"], test["age"]):
        for p in state["saliency"].glob(f"sub-{pid}/anat/*_desc-{method_desc(best)}_attribution.nii.gz"):
            rows.append({"participant_id": pid, "map": str(p.resolve()), "label": lab, "age": age})
    table = out / "group_maps.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    # descriptive: regions ranked by the group mean |map|, i.e. where the classifier looks
    summary_path = group_map(str(table), out / "group_map", design="none", atlas="AAL2", seed=seed, force=force)
    figs = sorted((out / "group_map" / "group").glob("*.png"))[:2]
    roi = sorted((out / "group_map" / "group").glob("*roi-table.tsv"))
    table_df = pd.read_csv(roi[0], sep="\t").head(8) if roi else None
    info = json.loads(summary_path.read_text())
    text = (f"Group statistics of the {best} maps of the held-out subjects (the best method above): group means and the AAL2 region "
            f"table, regions ranked by the group mean |map| (where the classifier looks; top rows). Summary: {summary_path.relative_to(out)}.")
    if isinstance(info, dict) and "NMaps" in info:
        text += f" {info['NMaps']} maps."
    sections.append(Section("Group maps (group-map)", text, figs, table=table_df))


def _step_evaluate(out: Path, seed: int, force: bool, sections: list[Section], state: dict) -> None:
    import pandas as pd

    from neurointerp.evaluate.run import run_evaluate

    path = run_evaluate(state["model"], state["test_csv"], out / "evaluate", method=["gradient", "integrated-gradients", "guided-backprop"], ground_truth=str(state["truth_disease"]), n_subjects=6, samples=16, sensitivity_samples=4, seed=seed, force=force, allow_unvalidated=state["unvalidated"])
    metrics = pd.read_csv(path, sep="\t")
    text = "Which map to believe: fidelity (infidelity, deletion AUC), stability (max-sensitivity, continuity), and the cascading-randomisation sanity check (a flagged method's maps barely change when the predictor is randomised). See the README section 'evaluate - reading the numbers'."
    sections.append(Section("Attribution quality (evaluate)", text, [out / "evaluate" / "evaluate.png"], table=metrics))


def _step_icam(out: Path, seed: int, force: bool, sections: list[Section]) -> None:
    import pandas as pd

    from neurointerp.simulate.icam import demo_step

    res = demo_step(out / "icam", seed, epochs=DEMO_ICAM_EPOCHS)
    names = {"icam": "ICAM mean FA map", "icam-ea-gradient": "gradient of ICAM's attribute encoder", "icam-ea-gradcam": "Grad-CAM of ICAM's attribute encoder"}
    table = pd.DataFrame([
        {"map": names.get(k, k), "NCC- lesion -> healthy": v["ncc_minus"]["mean"], "NCC+ healthy -> lesion": v["ncc_plus"]["mean"]}
        for k, v in res["ncc"].items()
    ])
    var = res["variance"]
    text = (
        f"ICAM (simulate --method icam) on a small `synth lesions` cohort (in {out.name}/icam/): attribute-space accuracy "
        f"{res['accuracy']:.2f}. Mean FA maps (translated - input, over rejection-sampled attribute vectors of the other "
        "class) are scored against the planted lesions (NCC-: lesion -> healthy against each image's own mask; NCC+: "
        "healthy -> lesion against the lesion frequency map), next to the gradient and Grad-CAM of ICAM's own attribute "
        f"encoder. Variance maps: {var['ratio']:.2f}x higher on the lesion sites than elsewhere. This model is far smaller "
        "than the benchmark's (benchmarks/icam.py)."
    )
    sections.append(Section("ICAM: attribution by translation (simulate --method icam)", text, table=table))


def _step_segment_bg(out: Path, seed: int, force: bool, sections: list[Section]) -> None:
    from neurointerp.segment_bg import demo_step

    # one thread: the U-Net on 48x48 slices is faster without torch's intra-op threading
    res = demo_step(out / "segment_bg", seed=seed, threads=1, force=force)
    sections.append(Section(res["title"], res["text"], list(res["figures"]), table=res["table"]))
