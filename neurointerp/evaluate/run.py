"""``neurointerp evaluate``: which attribution map to believe.

For each method, on up to ``n_subjects`` subjects of the cohort: infidelity (eq. 18),
deletion curve and its area, max-sensitivity (eq. 19), continuity (eq. 20), cascading
randomisation (flagging maps that do not depend on the model), retraining robustness when
``extra_model`` checkpoints are given, and NCC / mass-in-mask against ground truth when given.
Writes ``metrics.tsv``, ``deletion_curves.tsv``, ``randomisation.tsv``, ``evaluate.png`` and
``metrics.json`` (provenance). See README "Reading the evaluation".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from neurointerp.errors import InputError
from neurointerp.runs.context import runs_as


@runs_as("evaluate")
def run_evaluate(
    model: str | os.PathLike,
    cohort: str | os.PathLike,
    out: str | os.PathLike,
    method: Sequence[str] = ("gradient",),
    ground_truth: str | None = None,
    truth_mask: str | os.PathLike | None = None,
    extra_model: Sequence[str | os.PathLike] = (),
    n_subjects: int = 8,
    samples: int = 32,
    noise_level: float = 0.1,
    epsilon: float = 0.05,
    sensitivity_samples: int = 8,
    target: str | None = None,
    score: str = "logit",
    params: dict | None = None,
    atlas: str | None = "auto",
    labels: str | os.PathLike | None = None,
    reference: str | os.PathLike | None = None,
    allow_train: bool = False,
    allow_unvalidated: bool = False,
    device: str = "auto",
    threads: int | None = None,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Evaluate attribution methods; returns the path of ``metrics.tsv``. Same arguments as the CLI.

    ``params``: method parameters as ``saliency`` takes them (``{"n_samples": 200, ...}``; each
    method takes the ones it has, the others keep their defaults). ``atlas``/``labels``: the
    regions of region-perturbation and of the atlas variants of swap-test, lime and
    kernel-shap (``auto``: AAL2 for a model in MNI152 space). ``reference``: the cohort table
    the swap test (and ``gradient-shap --baseline reference``) takes other subjects from
    (default: the evaluated cohort). The swap test keeps the partners chosen with the trained
    model when the model is randomised or the input perturbed.
    """
    import pandas as pd
    import torch

    from neurointerp.attribution.core import score_function
    from neurointerp.attribution.pipeline import _truth_for, check_not_trained
    from neurointerp.attribution.registry import attribute, get_method
    from neurointerp.evaluate.fidelity import continuity, deletion_auc, deletion_curve, infidelity, max_sensitivity
    from neurointerp.evaluate.metrics import mass_in_mask, ncc
    from neurointerp.evaluate.sanity import cascading_randomisation, parameterised_layers, retraining_robustness
    from neurointerp.io import check_writable, load_image, prepare_output_dir, provenance, read_cohort, sha256, write_json, write_table
    from neurointerp.models.checkpoint import load_checkpoint
    from neurointerp.progress import info
    from neurointerp.train.device import set_threads

    from neurointerp.attribution.registry import check_score, needs_reference, needs_regions

    methods = list(dict.fromkeys(method))
    params = dict(params or {})
    for m in methods:
        get_method(m)
    known = {k for m in methods for k in get_method(m).defaults}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InputError(f"--param {', '.join(unknown)}: not a parameter of {', '.join(methods)} (parameters: {', '.join(sorted(known)) or 'none'})")
    if n_subjects < 2:
        raise InputError("--n-subjects must be at least 2 (continuity compares pairs)")
    set_threads(threads)
    torch.manual_seed(seed)
    clf = load_checkpoint(model, device=device)
    from neurointerp.models.skill import require_skill  # skill gate (issue #21)
    require_skill(clf, allow_unvalidated, command="evaluate", path=model)
    extras = [load_checkpoint(p, device=device) for p in extra_model]
    for p, e in zip(extra_model, extras):
        if e.spec.shape != clf.spec.shape or not np.allclose(e.spec.affine, clf.spec.affine, atol=1e-3):
            raise InputError(f"{p}: its grid differs from {model}'s; retraining robustness needs models of one grid")
    for m in methods:
        check_score(m, score, clf.task)
    table = read_cohort(cohort, require_label=False)
    check_not_trained(clf, table, allow_train)
    full_table = table
    table = table.subset(range(min(n_subjects, len(table))))
    regions = None
    if any(needs_regions(m, params) for m in methods):
        if atlas is None or str(atlas).lower() == "none" or (str(atlas).lower() == "auto" and not clf.spec.space.upper().startswith("MNI152")):
            raise InputError(f"{', '.join(m for m in methods if needs_regions(m, params))}: needs an atlas on the model's grid (--atlas NAME, or --atlas img.nii.gz --labels t.tsv)")
        from neurointerp.atlases import resolve_atlas

        regions = clf.spec.crop_tensor(resolve_atlas("AAL2" if str(atlas).lower() == "auto" else atlas, clf.spec.shape, clf.spec.affine, labels=labels)[0])
    reference_set = None
    if any(needs_reference(m, params) for m in methods):
        from neurointerp.attribution.reference import load_reference

        reference_set = load_reference(clf, reference if reference is not None else full_table, seed=seed)
    if len(table) < 2:
        raise InputError(f"{table.path}: needs at least 2 subjects")
    target_index = None
    if target is not None:
        if target not in clf.classes:
            raise InputError(f"--target '{target}': the model's classes are {', '.join(clf.classes)}")
        target_index = clf.classes.index(target)
    truth_mask_data = None
    if truth_mask is not None:  # before anything is written: unreadable or on another grid -> one line, exit 2
        from neurointerp.io.headers import load_mask_like

        truth_mask_data = load_mask_like(truth_mask, clf.spec.shape, clf.spec.affine, "--truth-mask")
    out = prepare_output_dir(out, force=force, marker="metrics.tsv")
    for name in ("metrics.tsv", "deletion_curves.tsv", "randomisation.tsv", "metrics.json", "evaluate.png"):
        check_writable(out / name, force=force)

    vols = []
    for i in range(len(table)):
        vols.append(clf.spec.load_row(table, i).data)
    x = clf.prepare(np.stack(vols))
    brain = torch.as_tensor(clf.spec.crop_tensor(np.stack(vols)) != 0)[:, None].to(x.device)
    if not brain.any():
        raise InputError(f"{table.path}: the images are empty")
    if bool(brain.all()):
        info("evaluate: images have no zero background; every voxel counts as brain")
    f_score = score_function(clf.model, task=clf.task, score=score)
    # the deletion curve follows P(target class) (Petsiuk et al.): bounded, comparable across subjects
    f_prob = score_function(clf.model, task=clf.task, score="probability") if clf.task != "regression" else f_score
    n_layers = len(parameterised_layers(clf.model))
    info(
        f"evaluate: {len(methods)} method(s) x {len(table)} subjects: per method about "
        f"{len(table) * (samples + 11)} forward passes for fidelity and {len(table) * (sensitivity_samples + n_layers + 1 + len(extras))} "
        f"attribution runs for sensitivity, randomisation and retraining"
    )

    rows, curves_rows, rand_rows = [], [], []
    fractions = None
    mask_np = brain[:, 0].cpu().numpy()
    for m in methods:
        spec_m = get_method(m)
        kw = {k: v for k, v in params.items() if k in spec_m.defaults and v is not None}
        if "seed" in spec_m.defaults:
            kw.setdefault("seed", seed)
        if "reference" in spec_m.defaults:
            kw["reference"] = None if reference is None else str(Path(reference).resolve())

        def run(mod, z, tgt, mask, choice=None, kw=kw, m=m):
            extra = {"regions": regions} if regions is not None else {}
            if "mask" in get_method(m).inputs:
                extra["mask"] = mask
            if "reference" in get_method(m).inputs and reference_set is not None:
                extra.update(reference_set=reference_set, reference_choice=choice)
            return attribute(mod, z, m, target=tgt, task=clf.task, score=score, **extra, **kw)

        maps_np, record = run(clf.model, x, target_index, mask_np)
        targets = record["Targets"]
        choice = record.get("ReferenceIndices")
        maps = torch.as_tensor(maps_np).unsqueeze(1).to(x.device)

        def f_subject(i, fn=f_score):
            t = torch.tensor([targets[i]], device=x.device)
            return lambda z: fn(z, t.expand(len(z)))

        fid = np.array([infidelity(f_subject(i), x[i : i + 1], maps[i : i + 1], brain[i : i + 1], samples=samples, noise_level=noise_level, seed=seed)[0] for i in range(len(x))])
        curves = []
        for i in range(len(x)):
            fractions, c = deletion_curve(f_subject(i, f_prob), x[i : i + 1], maps[i : i + 1], brain[i : i + 1], signed=spec_m.signed)
            curves.append(c[0])
        curves = np.stack(curves)
        auc = deletion_auc(fractions, curves, relative=clf.task == "regression")

        def explain_single(z, i, run=run, choice=choice):
            res, _ = run(clf.model, z, targets[i], np.repeat(mask_np[i : i + 1], len(z), axis=0), None if choice is None else [choice[i]] * len(z))
            return torch.as_tensor(res).unsqueeze(1)

        sens = np.array([max_sensitivity(lambda z, i=i: explain_single(z, i), x[i : i + 1], brain[i : i + 1], epsilon=epsilon, samples=sensitivity_samples, seed=seed + i)[0] for i in range(len(x))])
        cont = continuity(maps, x)

        def explain_with(mod, z, run=run, choice=choice):
            res, _ = run(mod, z, targets, mask_np, choice)
            return res

        layers, corr, flagged, flag_step = cascading_randomisation(explain_with, clf.model, x, mask_np, seed=seed)
        for layer, c in zip(layers, corr):
            rand_rows.append({"method": m, "randomised_down_to": layer, "spearman_abs": c})
        row = {
            "method": m,
            "infidelity": float(np.mean(fid)),
            "deletion_auc": float(np.mean(auc)),
            "max_sensitivity": float(np.mean(sens)),
            "continuity": cont,
            "randomised_top_spearman": float(corr[flag_step]) if len(corr) else float("nan"),
            "randomised_all_spearman": float(corr[-1]) if len(corr) else float("nan"),
            "randomisation_flag": flagged,
        }
        if extras:
            all_maps = [maps_np] + [run(e.model, e.prepare(np.stack(vols)), targets, mask_np, choice)[0] for e in extras]
            row.update(retraining_robustness(all_maps, mask_np))
        if ground_truth is not None:
            full = clf.spec.uncrop(maps_np)
            nccs, masses = [], []
            for i in range(len(table)):
                truth = _truth_for(ground_truth, table, i, clf.spec.shape)
                tmask = truth_mask_data if truth_mask_data is not None else np.abs(truth) >= 0.1 * np.abs(truth).max()
                inside = vols[i] != 0
                nccs.append(ncc(np.abs(full[i]), np.abs(truth), mask=inside if inside.any() else None))
                masses.append(mass_in_mask(full[i], tmask))
            row["ncc_truth"] = float(np.nanmean(nccs))
            row["mass_in_truth"] = float(np.nanmean(masses))
        rows.append(row)
        for frac, vals in zip(fractions, curves.T):
            curves_rows.append({"method": m, "fraction_deleted": float(frac), "score_mean": float(vals.mean()), "score_sd": float(vals.std())})
        info(f"evaluate: {m}: infidelity {row['infidelity']:.3f}, deletion AUC {row['deletion_auc']:.3f}, rho with the predictor randomised {row['randomised_top_spearman']:.2f}{' FLAGGED' if flagged else ''}")

    metrics = pd.DataFrame(rows)
    write_table(out / "deletion_curves.tsv", pd.DataFrame(curves_rows), force=force)
    write_table(out / "randomisation.tsv", pd.DataFrame(rand_rows), force=force)
    _figure(out / "evaluate.png", pd.DataFrame(curves_rows), pd.DataFrame(rand_rows))
    method_params = {m: {k: v for k, v in params.items() if k in get_method(m).defaults} for m in methods}
    params = dict(method=methods, n_subjects=len(table), samples=samples, noise_level=noise_level, epsilon=epsilon, sensitivity_samples=sensitivity_samples, target=target, score=score, ground_truth=ground_truth, method_params=method_params, atlas=atlas, reference=None if reference is None else str(reference))
    record = provenance(
        "evaluate",
        params,
        inputs=list(table.images),
        seed=seed,
        Checkpoint={"path": str(Path(model).resolve()), "sha256": sha256(model)},
        ExtraModels=[{"path": str(Path(p).resolve()), "sha256": sha256(p)} for p in extra_model],
        Perturbations={
            "infidelity": f"Gaussian noise on brain voxels, sd = {noise_level} x brain intensity sd, {samples} samples; normalised (optimal scale), divided by E[df^2]",
            "deletion": f"top-k% attributed brain voxels set to 0 (the model's baseline after normalisation), k = 0..100% in {len(fractions) - 1} steps; curve of P(target class) (regression: output relative to the unperturbed one)",
            "max_sensitivity": f"{sensitivity_samples} uniform samples in the L-inf ball of radius {epsilon} x brain intensity sd; relative to the map's norm",
            "randomisation": "layers re-initialised from the output down (reset_parameters); Spearman correlation of |map| inside the brain; flagged if > 0.5 once every fully connected layer is random",
        },
        Metrics=rows,
    )
    write_json(out / "metrics.json", record, force=force)
    return write_table(out / "metrics.tsv", metrics, force=force)


def _figure(path: Path, curves, rand) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurointerp.io.atomic import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for m, sub in curves.groupby("method", sort=False):
        axes[0].plot(sub["fraction_deleted"] * 100, sub["score_mean"], marker="o", ms=3, label=m)
    axes[0].set_xlabel("brain voxels deleted, most attributed first (%)")
    axes[0].set_ylabel("P(explained class)")
    axes[0].set_title("deletion curves (steeper = more faithful)", fontsize=9)
    axes[0].legend(fontsize=7)
    for m, sub in rand.groupby("method", sort=False):
        axes[1].plot(range(1, len(sub) + 1), sub["spearman_abs"], marker="o", ms=3, label=m)
    axes[1].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[1].set_xlabel("layers randomised (from the output)")
    axes[1].set_ylabel("Spearman rho with the original |map|")
    axes[1].set_title("cascading randomisation (should fall)", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
