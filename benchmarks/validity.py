"""Validity at scale: do default options give a model that learns and maps that find the planted effect?

On a ``synth brain`` cohort (default effect size, a strong age confound: correlation
``--confound-strength`` 0.8 with diagnosis, ``--confound-size`` 2), with default options end to
end except where noted:

1. ``synth brain`` (``--max-n`` subjects) -> ``preprocess`` (default 64^3 grid; ``--brain-extraction
   none`` because the synthetic images are skull-stripped already); with ``--template-space``
   instead each subject's anatomy on the template grid (no pose, bias or noise: what preprocess
   would give with a perfect registration), when ANTs is too slow for the machine;
2. per size N: the first N subjects (class-balanced, nested), split 70/30 (stratified) into
   training and test participants;
3. ``train TRAIN --folds 0 --final --confounder age`` (one model: its own evidence is its
   validation split; the figures below are on the test participants, which it never saw;
   whether the skill gate passes it is recorded, and the maps are made either way);
4. ``saliency`` with every method on the test participants, one run per method (a method the
   model does not support is recorded with its error); the costly perturbation methods (``COSTLY``)
   on the first ``--costly-subjects`` of them;
5. per method: NCC of the group mean |map| with |planted disease log-Jacobian| and with |planted
   age log-Jacobian| inside the brain, and the share of the group mean |map| inside the disease
   mask (mass-in-truth);
6. ``confound-test --confounder age --layer encoder.stack2`` on the training images and
   confounder-free saliency (gradient methods): the same NCCs before and after;
7. ``group-map`` of the best method's maps (AAL2, descriptive: regions ranked by mean |map|):
   where the planted regions (the AAL2 regions holding most of the planted disease
   log-Jacobian) rank.

Step 3 uses train's default for the confounder weighting (weighted draws when every model keeps
at least 10 effective participants per class and the weights bring age within 0.25 SD between the
classes) and the results go under ``n<N>_auto``; with
``--balance-confounders`` it is ``train ... --balance-confounders`` (draws weighted by overlap
weights, so that mean age is the same in both classes of the training samples; results under
``n<N>_balanced``), with ``--no-balance-confounders`` unweighted draws (under ``n<N>``: train's
default before it weighted by itself); ``--methods`` limits step 4 to some methods.

Goals (issue #21): held-out balanced accuracy >= 0.90; best method NCC >= 0.30 with the disease
truth; age NCC at least halved by confounder-free saliency with the disease NCC kept.

Every stage is resumable (finished subjects and models are skipped; results go to the JSON after
each stage). Two CPU cores make this hours: run it in the background, e.g.::

    nohup nice -n 10 python benchmarks/validity.py --sizes 200 400 --work /tmp/validity \\
        --output benchmarks/results/validity.json > validity.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

#: methods with hundreds of forward passes per subject: run on the first --costly-subjects test participants
COSTLY = ("occlusion", "region-perturbation", "optimised-perturbation", "swap-test", "lime", "kernel-shap")
LAYER = "encoder.stack2"  # spatially specific features of simnet3d (see benchmarks/confound.py)


def _save(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    tmp.replace(path)


def _stage(container: dict, key: str, fn, save):
    """Run ``fn`` once; its result is kept in ``container[key]`` and saved at once (resumable)."""
    if key in container:
        return container[key]
    t0 = time.perf_counter()
    value = fn()
    if isinstance(value, dict):
        value = {**value, "seconds": round(time.perf_counter() - t0, 1)}
    container[key] = value
    save()
    print(f"[validity] {key} done in {time.perf_counter() - t0:.0f} s", flush=True)
    return value


def template_space_table(table: Path, out: Path) -> tuple[Path, int]:
    """``synth brain --template-space``'s cohort table with each subject's template-grid anatomy as
    its image (absolute paths), written to ``out``; returns ``(out, rows)``."""
    import pandas as pd

    frame = pd.read_csv(table, dtype={"participant_id": str})
    frame["image"] = [str((table.parent / p).resolve()) for p in frame["template_image"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.drop(columns=["template_image"]).to_csv(out, index=False)
    return out, len(frame)


def make_data(args, work: Path) -> dict:
    from neurointerp.preprocess.pipeline import run_preprocess
    from neurointerp.synth.brain import synth_brain

    table = work / "synth" / "cohort.csv"
    if not table.exists():
        synth_brain(work / "synth", n_subjects=args.max_n, voxel_size=args.voxel_size, confound_strength=args.confound_strength,
                    confound_size=args.confound_size, template_space=args.template_space, seed=args.seed, force=True, n_jobs=args.synth_jobs)
    if args.template_space:  # no preprocess: each subject's anatomy on the template grid
        out, n = template_space_table(table, work / "template_space" / "cohort.csv")
        return {"table": str(out), "n_done": n, "images": "synth brain --template-space (no preprocess)"}
    kw = {} if args.shape is None else {"shape": args.shape}
    res = run_preprocess(table, work / "preprocess", brain_extraction="none", threads=args.threads, seed=args.seed, **kw)
    return {"table": str(res.table), "n_done": len(res.done)}


def split(table: Path, n: int, seed: int, folder: Path) -> tuple[Path, Path]:
    import pandas as pd

    frame = pd.read_csv(table, dtype={"participant_id": str})
    frame["image"] = [str((table.parent / p).resolve()) if not Path(p).is_absolute() else p for p in frame["image"]]
    synth = pd.read_csv(Path(table).parent.parent / "synth" / "cohort.csv", dtype={"participant_id": str}).set_index("participant_id")
    for col in ("age", "sex"):
        if col not in frame.columns:
            frame[col] = frame["participant_id"].map(synth[col])
    # the first n, taking the classes alternately (nested, balanced sizes)
    by_class = {c: list(g.index) for c, g in frame.groupby("label")}
    rows = []
    while len(rows) < n and any(by_class.values()):
        for c in sorted(by_class):
            if by_class[c] and len(rows) < n:
                rows.append(by_class[c].pop(0))
    sub = frame.loc[sorted(rows)]
    rng = np.random.default_rng(seed)
    test = []
    for _, g in sub.groupby("label"):
        ids = list(g["participant_id"])
        rng.shuffle(ids)
        test += ids[: int(round(0.3 * len(ids)))]
    is_test = sub["participant_id"].isin(test)
    folder.mkdir(parents=True, exist_ok=True)
    sub[~is_test].to_csv(folder / "train.csv", index=False)
    sub[is_test].to_csv(folder / "test.csv", index=False)
    return folder / "train.csv", folder / "test.csv"


def truth_on_grid(work: Path, shape, affine, folder: Path) -> dict:
    from neurointerp.atlases import resample_to_grid
    from neurointerp.io import load_image, save_image
    from neurointerp.synth.brain import SPACE

    out = {}
    truth = work / "synth" / "truth"
    for name in ("disease", "confounder"):
        path = folder / f"space-{SPACE}_desc-{name}_logjacobian.nii.gz"
        if not path.exists():
            src = load_image(truth / f"space-{SPACE}_desc-{name}_logjacobian.nii.gz", allow_empty=True)
            save_image(resample_to_grid(src.data, src.affine, shape, affine), affine, path, force=True)
        out[name] = path
    return out


def mean_abs(folder: Path, desc: str, ids) -> np.ndarray | None:
    from neurointerp.io import load_image

    maps = [np.abs(load_image(p, allow_empty=True).data) for pid in ids for p in folder.glob(f"sub-{pid}/anat/*_desc-{desc}_attribution.nii.gz")]
    return np.mean(maps, axis=0) if maps else None


def balanced(frame, k: int):
    """The first ``k`` rows of ``frame`` taking the classes in turn (order kept)."""
    if k >= len(frame):
        return frame
    groups = [list(g.index) for _, g in frame.groupby("label")]
    rows = []
    while len(rows) < k:
        for g in groups:
            if g and len(rows) < k:
                rows.append(g.pop(0))
    return frame.loc[sorted(rows)]


def run_size(args, work: Path, table: Path, n: int, results: dict, save) -> None:
    import pandas as pd
    import torch

    from neurointerp.attribution.names import METHOD_NAMES
    from neurointerp.attribution.pipeline import method_desc, run_saliency
    from neurointerp.confound.gate import GRADIENT_METHODS
    from neurointerp.confound.run import run_confound_test
    from neurointerp.evaluate.metrics import mass_in_mask, ncc
    from neurointerp.io import load_image
    from neurointerp.models.checkpoint import load_checkpoint
    from neurointerp.train.loop import train

    key = f"n{n}" + {None: "_auto", True: "_balanced", False: ""}[args.balance_confounders]
    res = results.setdefault(key, {})
    res.setdefault("run", {k: getattr(args, k) for k in ("balance_confounders", "methods", "saliency_subjects", "costly_subjects", "steps", "threads", "template_space", "seed")})
    folder = work / key
    train_csv, test_csv = split(table, n, args.seed, folder)
    test = pd.read_csv(test_csv, dtype={"participant_id": str})
    ids = list(test["participant_id"])

    def do_train():
        r = train(train_csv, folder / "train", folds=0, final=True, confounder=["age"], balance_confounders=args.balance_confounders,
                  seed=args.seed, threads=args.threads, resume=True,
                  **({} if args.steps is None else {"steps": args.steps}))
        ck = load_checkpoint(r.final_model)
        scores = ck.predict(np.stack([load_image(p).data for p in test["image"]]), batch_size=8)
        y = (test["label"].astype(str) == ck.classes[1]).to_numpy().astype(int)
        from neurointerp.train.evidence import heldout_evidence
        from neurointerp.train.baseline import baseline_scores, confounder_table

        both = pd.concat([pd.read_csv(train_csv), test], ignore_index=True)
        conf = confounder_table(both, ["age"], list(range(len(both))), "cohort")
        base = baseline_scores(conf, np.arange(len(both) - len(test)), np.arange(len(both) - len(test), len(both)),
                               np.r_[(pd.read_csv(train_csv)["label"].astype(str) == ck.classes[1]).to_numpy().astype(int), y], "binary", 2)
        ev = heldout_evidence(y, scores, "binary", ids, source="test split", description="the 30% test participants", baseline_scores=base, confounders=["age"], seed=args.seed)
        from neurointerp.errors import InputError
        from neurointerp.models.skill import require_skill

        try:
            require_skill(ck, command="validity")
            gate = "passed"
        except InputError as exc:
            gate = f"refused: {exc}"
        return {"model": str(r.final_model), "gate": gate, "confounder_weighting": ck.meta["training"].get("confounder_weighting"), "n_train": int(len(pd.read_csv(train_csv))), "n_test": len(ids),
                "test": ev, "validation": ck.meta["metrics"].get("evidence"), "training": {k: ck.meta["training"].get(k) for k in ("steps_budget", "steps_done", "stopped_early", "selected")}}

    tr = _stage(res, "train", do_train, save)
    if args.saliency_subjects is not None and args.saliency_subjects < len(test):
        # the maps of a class-balanced subset of the test participants (the first of each class)
        test = balanced(test, args.saliency_subjects)
        ids = list(test["participant_id"])
    test_csv = folder / "test_saliency.csv"
    test.to_csv(test_csv, index=False)
    res["saliency_participants"] = ids
    model = Path(tr["model"])
    ck = load_checkpoint(model)
    truth = truth_on_grid(work, ck.spec.shape, ck.spec.affine, folder / "truth")
    brain = np.mean([load_image(p).data for p in test["image"]], axis=0) != 0
    t_dis = np.abs(load_image(truth["disease"], allow_empty=True).data)
    t_age = np.abs(load_image(truth["confounder"], allow_empty=True).data)
    from neurointerp.synth.brain import MASK_THRESHOLD

    dmask = (t_dis > MASK_THRESHOLD) & brain
    torch.set_num_threads(args.threads)

    costly_test = balanced(test, args.costly_subjects)
    costly_test.to_csv(folder / "test_costly.csv", index=False)

    def one_method(m: str) -> dict:
        """One saliency run (one folder) per method: a method this model cannot be explained
        with is recorded as such and does not stop the others."""
        costly = m in COSTLY
        src = folder / "saliency" / m
        try:
            run_saliency(model, test_csv if not costly else folder / "test_costly.csv", src, method=[m], ground_truth=str(truth["disease"]),
                         seed=args.seed, threads=args.threads, allow_unvalidated=True)
        except Exception as exc:  # noqa: BLE001 - reported in the JSON, not hidden
            return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
        ids_m = list(costly_test["participant_id"]) if costly else ids
        g = mean_abs(src, method_desc(m), ids_m)
        if g is None:
            return {"error": "no maps written"}
        return {"n_subjects": len(ids_m), "ncc_disease": ncc(g, t_dis, brain), "mass_in_disease": mass_in_mask(g, dmask, brain),
                "ncc_age": ncc(g, t_age, brain), "mass_share_of_brain": float(dmask.sum() / brain.sum())}

    sal_res = res.setdefault("saliency", {"methods": {}})
    for m in args.methods or METHOD_NAMES:
        _stage(sal_res["methods"], m, lambda m=m: one_method(m), save)
    sal = {"methods": {m: v for m, v in sal_res["methods"].items() if "error" not in v}}

    def do_confound():
        mask = run_confound_test(model, train_csv, folder / "confound", confounder=["age"], layer=LAYER, threads=args.threads, allow_unvalidated=True, force=True)
        summary = json.loads((mask.parent / "summary.json").read_text())
        from neurointerp.confound.gate import check_gate_reaches
        from neurointerp.errors import InputError
        from neurointerp.io import read_cohort

        clf = load_checkpoint(model)
        x0 = clf.prepare(clf.spec.load_row(read_cohort(test_csv), 0).data[None])
        grads, refused = [], {}
        for m in (m for m in GRADIENT_METHODS if m in sal["methods"]):
            try:  # Grad-CAM/CAM read after the gated layer: the gate cannot change them (refused by saliency)
                check_gate_reaches(clf.model, x0, [m], None, LAYER)
                grads.append(m)
            except InputError as exc:
                refused[m] = str(exc)
        run_saliency(model, test_csv, folder / "saliency_cfree", method=grads, confounder_mask=mask, seed=args.seed, threads=args.threads, allow_unvalidated=True)
        rows = {m: {"refused": why} for m, why in refused.items()}
        for m in grads:
            full = mean_abs(folder / "saliency" / m, method_desc(m), ids)
            free = mean_abs(folder / "saliency_cfree", method_desc(m, True), ids)
            if full is None or free is None:
                continue
            rows[m] = {"ncc_age_before": ncc(full, t_age, brain), "ncc_age_after": ncc(free, t_age, brain),
                       "ncc_disease_before": ncc(full, t_dis, brain), "ncc_disease_after": ncc(free, t_dis, brain)}
        return {"n_confounded": summary.get("NConfounded"), "n_features": summary.get("NFeatures"), "layer": LAYER, "methods": rows}

    _stage(res, "confound", do_confound, save)

    def do_group():
        from neurointerp.atlases import resolve_atlas
        from neurointerp.group.api import group_map

        # the best method among those run on every test participant
        full = {m: v for m, v in sal["methods"].items() if v["n_subjects"] == len(ids) and v["ncc_disease"] is not None and v["ncc_disease"] == v["ncc_disease"]}
        best = max(full, key=lambda m: full[m]["ncc_disease"])
        d = method_desc(best)
        src = folder / "saliency" / best
        maps = sorted(str(p.resolve()) for pid in ids for p in src.glob(f"sub-{pid}/anat/*_desc-{d}_attribution.nii.gz"))
        pd.DataFrame({"participant_id": [Path(p).name.split("_")[0][4:] for p in maps], "map": maps}).to_csv(folder / "group_maps.csv", index=False)
        group_map(str(folder / "group_maps.csv"), folder / "group_map", atlas="AAL2", figures=False, force=True)
        roi = sorted((folder / "group_map" / "group").glob("*roi-table.tsv"))[0]
        table_roi = pd.read_csv(roi, sep="\t")
        lab, names, _ = resolve_atlas("AAL2", ck.spec.shape, ck.spec.affine)
        mass = {int(v): float(t_dis[lab == v].sum()) for v in np.unique(lab) if v != 0}
        total = sum(mass.values())
        planted = [names[v] for v, w in sorted(mass.items(), key=lambda kv: -kv[1]) if total and w / total >= 0.05]
        ranks = {p: int(table_roi.loc[table_roi["name"] == p, "rank"].iloc[0]) for p in planted if (table_roi["name"] == p).any()}
        top = list(table_roi.sort_values("rank")["name"].head(max(5, len(planted))))
        return {"method": best, "planted_regions": planted, "planted_ranks": ranks, "top_regions": top,
                "planted_in_top": sum(1 for p in planted if p in top[: len(planted)]), "n_planted": len(planted)}

    _stage(res, "group_map", do_group, save)


def table_text(results: dict) -> str:
    """The markdown table of one JSON result (for the note and README)."""
    lines = []
    for key, res in results.items():
        if not key.startswith("n") or "train" not in res:
            continue
        tr = res["train"]
        t = tr["test"]
        lines.append(f"### {key[1:]} subjects ({tr['n_train']} train / {tr['n_test']} test): test balanced accuracy "
                     f"{t.get('balanced_accuracy', float('nan')):.2f}, AUC {t.get('auc', float('nan')):.2f} "
                     f"(95% CI {t['ci'][0]:.2f}-{t['ci'][1]:.2f}), skill gate: {tr['gate'].split(':')[0]}\n")
        conf = res.get("confound", {}).get("methods", {})
        lines.append("| method | subjects | NCC disease | mass in disease | NCC age | age NCC before -> after cfree | disease NCC before -> after cfree |")
        lines.append("|---|---|---|---|---|---|---|")
        for m, v in res.get("saliency", {}).get("methods", {}).items():
            if "error" in v:
                lines.append(f"| {m} | - | {v['error'][:90]} | | | | |")
                continue
            c = conf.get(m)
            if c and "refused" in c:
                cf = ("refused: read after the gated layer", "")
            else:
                cf = (f"{c['ncc_age_before']:.3f} -> {c['ncc_age_after']:.3f}", f"{c['ncc_disease_before']:.3f} -> {c['ncc_disease_after']:.3f}") if c else ("", "")
            lines.append(f"| {m} | {v['n_subjects']} | {v['ncc_disease']:.3f} | {v['mass_in_disease']:.3f} (chance {v.get('mass_share_of_brain', float('nan')):.3f}) | {v['ncc_age']:.3f} | {cf[0]} | {cf[1]} |")
        g = res.get("group_map")
        if g:
            lines.append(f"\ngroup-map ({g['method']}, AAL2 mean |map|): planted regions ranked {g['planted_ranks']}; top regions {g['top_regions']}")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 400])
    ap.add_argument("--max-n", type=int, default=None, help="subjects generated (default: the largest size)")
    ap.add_argument("--voxel-size", type=float, default=3.0, help="synth brain voxel size (mm)")
    ap.add_argument("--shape", type=int, default=None, help="preprocess working grid (default: preprocess's, 64^3)")
    ap.add_argument("--template-space", action="store_true",
                    help="skip preprocess: train on each subject's anatomy on the synth template grid (--voxel-size; no pose, bias or noise)")
    ap.add_argument("--confound-strength", type=float, default=0.8)
    ap.add_argument("--confound-size", type=float, default=2.0)
    ap.add_argument("--saliency-subjects", type=int, default=None, help="test participants explained (class-balanced subset; default all)")
    ap.add_argument("--costly-subjects", type=int, default=8, help="test participants explained by the costly methods (%s)" % ", ".join(COSTLY))
    ap.add_argument("--steps", type=int, default=None, help="train --steps (default: train's default; smaller only for a smoke run)")
    ap.add_argument("--balance-confounders", action="store_true", default=None,
                    help="train --balance-confounders (results under n<N>_balanced): does confounder-balanced training find the disease?")
    ap.add_argument("--no-balance-confounders", dest="balance_confounders", action="store_false",
                    help="train --no-balance-confounders (results under n<N>; train's default before it weighted by itself)")
    ap.add_argument("--methods", nargs="+", default=None, help="saliency methods (default: every method)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--synth-jobs", type=int, default=1, help="synth brain --n-jobs (same images for any value)")
    ap.add_argument("--data-only", action="store_true", help="stop after synth brain + preprocess")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "validity.json")
    args = ap.parse_args(argv)
    args.max_n = args.max_n or max(args.sizes)
    args.work = args.work.resolve()

    import torch

    from neurointerp.progress import set_quiet

    set_quiet(True)
    torch.set_num_threads(args.threads)
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results["about"] = {
        "what": __doc__.split("\n\n")[1].strip(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
    }
    def save():
        _save(results, args.output)

    data = _stage(results, "data", lambda: make_data(args, args.work), save)
    if args.data_only:
        return 0
    for n in args.sizes:
        run_size(args, args.work, Path(data["table"]), n, results, save)
    print(table_text(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
