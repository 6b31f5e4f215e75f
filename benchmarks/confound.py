"""Confounder-aware saliency on ``synth brain`` (papers/confounder-aware-saliency.txt §2, issue #6).

A cohort whose diagnosis is strongly confounded by age (frontal atrophy, a pattern apart from
the disease's hippocampal/ventricular one) trains a classifier that leans on both patterns.
``confound-test`` flags the features that carry age; partial back-propagation through the
others gives confounder-free maps. The group-mean |map| of the held-out subjects is scored
against the planted age and disease log-Jacobians (NCC inside the brain) before and after.

Usage::

    python benchmarks/confound.py --n 120 --effect-size 3 --confound-size 2 --confound-strength 0.8 \\
        --output benchmarks/results/confound.json

``--layer`` (repeatable) chooses where confound-test looks: the encoder output (the paper's
encoder -> predictor boundary) and, by default, also the outputs of the 3rd and 2nd conv stacks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def brain(args) -> dict:
    import pandas as pd

    from neurointerp.attribution.pipeline import run_saliency
    from neurointerp.confound.run import run_confound_test
    from neurointerp.evaluate.metrics import ncc
    from neurointerp.io import load_image, read_cohort
    from neurointerp.synth.brain import SPACE, synth_brain
    from neurointerp.train.loop import train

    root = Path(args.work or tempfile.mkdtemp(prefix="confbench"))
    times = {}
    t = time.time()
    if not (args.reuse_data and (root / "data" / "cohort.csv").exists()):
      synth_brain(
        root / "data", n_subjects=args.n, voxel_size=args.voxel_size, effect_size=args.effect_size,
        confound_strength=args.confound_strength, confound_size=args.confound_size, noise=0.0,
        template_space=True, seed=args.seed, force=True,
      )
    frame = read_cohort(root / "data" / "cohort.csv").frame.copy()
    frame["image"] = [str(root / "data" / p) for p in frame["template_image"]]
    frame = frame.drop(columns=["template_image"])
    rng = np.random.default_rng(args.seed)
    test_ids = []
    for _, grp in frame.groupby("label"):
        ids = list(grp["participant_id"])
        rng.shuffle(ids)
        test_ids += ids[: int(round(args.test_fraction * len(ids)))]
    is_test = frame["participant_id"].isin(test_ids)
    frame[~is_test].to_csv(root / "train.csv", index=False)
    frame[is_test].to_csv(root / "test.csv", index=False)
    times["synth"] = time.time() - t

    t = time.time()
    model = root / "train" / "model.pt"
    if not (args.reuse_model and model.exists()):
      result = train(root / "train.csv", root / "train", folds=0, final=True, architecture=args.architecture, epochs=args.epochs, batch_size=8, lr=1e-3, shift=0.0, rotation=0.0, normalize="zscore", seed=args.seed, threads=args.threads, force=True)
      model = result.final_model
    times["train"] = time.time() - t

    truth_dir = root / "data" / "truth"
    brain_mask = load_image(truth_dir / f"space-{SPACE}_desc-brain_mask.nii.gz").data > 0
    truths = {name: np.abs(load_image(truth_dir / f"space-{SPACE}_desc-{name}_logjacobian.nii.gz", allow_empty=True).data) for name in ("disease", "confounder")}
    test = frame[is_test]
    methods = list(args.method)

    def mean_abs(folder, desc):
        vols = [load_image(next(Path(folder).glob(f"sub-{pid}/**/*_desc-{desc}_attribution.nii.gz"))).data for pid in test["participant_id"]]
        return np.mean(np.abs(np.stack(vols)), axis=0)

    t = time.time()
    full_dir = run_saliency(model, root / "test.csv", root / "saliency", method=methods, seed=args.seed, threads=args.threads, force=True)
    full = {m: mean_abs(full_dir, m.replace("-", "")) for m in methods}
    times["saliency"] = time.time() - t
    layers = []
    for layer in args.layer:
        name = layer or "encoder"
        t = time.time()
        mask_path = run_confound_test(model, root / "train.csv", root / f"confound-{name}-{args.score}", confounder=["age"], layer=layer or None, score=args.score, threshold=args.threshold, fdr=args.fdr, threads=args.threads, force=True)
        summary = json.loads((mask_path.parent / "summary.json").read_text())
        free_dir = run_saliency(model, root / "test.csv", root / f"saliency_cfree-{name}-{args.score}", method=methods, confounder_mask=mask_path, seed=args.seed, threads=args.threads, force=True)
        times[f"confound-test + saliency, {name}"] = time.time() - t
        scores = {}
        for m in methods:
            maps = {"full": full[m], "confounder_free": mean_abs(free_dir, m.replace("-", "") + "cfree")}
            sc = {f"ncc_{truth}_{kind}": float(ncc(maps[kind], truths[truth], brain_mask)) for truth in truths for kind in maps}
            sc["confounder_ncc_ratio"] = sc["ncc_confounder_confounder_free"] / sc["ncc_confounder_full"] if sc["ncc_confounder_full"] else None
            sc["disease_ncc_ratio"] = sc["ncc_disease_confounder_free"] / sc["ncc_disease_full"] if sc["ncc_disease_full"] else None
            scores[m] = sc
        layers.append({"layer": name, "confound_test": {k: summary[k] for k in ("NFeatures", "NConfounded", "NConstant")}, "scores": scores})
    age = frame["age"].to_numpy(float)
    patient = (frame["label"] == sorted(frame["label"].unique())[-1]).to_numpy(float)
    return {
        "experiment": "synth brain, template space",
        "n_subjects": args.n, "n_train": int((~is_test).sum()), "n_test": int(is_test.sum()),
        "voxel_size": args.voxel_size, "effect_size": args.effect_size, "confound_strength": args.confound_strength,
        "confound_size": args.confound_size, "r_age_diagnosis": float(np.corrcoef(age, patient)[0, 1]),
        "architecture": args.architecture, "epochs": args.epochs,
        "score": args.score, "threshold": args.threshold, "fdr": args.fdr,
        "layers": layers,
        "seconds": times,
        "work": str(root),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=120)
    p.add_argument("--voxel-size", type=float, default=4.0)
    p.add_argument("--effect-size", type=float, default=3.0)
    p.add_argument("--confound-strength", type=float, default=0.8)
    p.add_argument("--confound-size", type=float, default=2.0)
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--architecture", default="auto")
    p.add_argument("--reuse-data", action="store_true")
    p.add_argument("--reuse-model", action="store_true")
    p.add_argument("--score", default="probability")
    p.add_argument("--layer", action="append", default=None, help="layers of confound-test (repeatable; '' or 'encoder': the encoder output)")
    p.add_argument("--threshold", type=float, default=0.05)
    p.add_argument("--fdr", action="store_true")
    p.add_argument("--method", action="append", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default=None)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    args.method = args.method or ["gradient"]
    args.layer = [None if v in ("", "encoder") else v for v in (args.layer or ["encoder", "encoder.stack3", "encoder.stack2"])]
    res = brain(args)
    text = json.dumps(res, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
