"""Model-level confound tests on ``synth brain``'s two confound scenarios (issue #25).

For each scenario (``age-confounded``: strong age effect, weak disease, age-diagnosis r = 0.8;
``unconfounded``: the same age effect independent of the diagnosis, a learnable disease) and
seed: synthesise the cohort (template space), hold out a stratified share of the subjects,
train a CNN on the rest, run ``confound-test --confounder age`` on the whole cohort (the
model-level tests pick the held-out subjects) and confounder-free saliency on the held-out
subjects. Records the held-out accuracy, the likelihood-ratio test of the score beyond age, the
within-class partial correlations of the score with age, the group-mean difference map's NCC
with the planted age and disease patterns and its top atlas regions, and the time of each step.

Usage::

    python benchmarks/confound_model.py --seeds 0 1 2 --output benchmarks/results/confound_model.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def one_run(root: Path, scenario: str, seed: int, args) -> dict:
    import pandas as pd

    from neurointerp.attribution.pipeline import run_saliency
    from neurointerp.confound.run import run_confound_test
    from neurointerp.evaluate.metrics import ncc
    from neurointerp.io import load_image, read_cohort
    from neurointerp.synth.brain import SPACE, synth_brain
    from neurointerp.train.loop import train

    times = {}
    t = time.time()
    synth_brain(root / "data", n_subjects=args.n, voxel_size=args.voxel_size, noise=0.0, template_space=True, seed=seed, scenario=scenario, force=True)
    frame = read_cohort(root / "data" / "cohort.csv").frame.copy()
    frame["image"] = [str(root / "data" / p) for p in frame["template_image"]]
    frame = frame.drop(columns=["template_image"])
    rng = np.random.default_rng(seed)
    test_ids = []
    for _, grp in frame.groupby("label"):
        ids = list(grp["participant_id"])
        rng.shuffle(ids)
        test_ids += ids[: int(round(args.test_fraction * len(ids)))]
    is_test = frame["participant_id"].isin(test_ids)
    frame[~is_test].to_csv(root / "train.csv", index=False)
    frame[is_test].to_csv(root / "test.csv", index=False)
    frame.to_csv(root / "all.csv", index=False)
    times["synth"] = time.time() - t

    t = time.time()
    model = train(root / "train.csv", root / "model", folds=0, final=True, epochs=args.epochs, batch_size=8, lr=1e-3, shift=0.0, rotation=0.0, normalize="zscore", seed=seed, threads=args.threads, force=True).final_model
    times["train"] = time.time() - t

    t = time.time()
    mask = run_confound_test(model, root / "all.csv", root / "confound", confounder=["age"], layer=args.layer, permutations=args.permutations, seed=seed, threads=args.threads, force=True)
    times["confound-test"] = time.time() - t
    summary = json.loads((mask.parent / "summary.json").read_text())
    tests = summary["ModelTests"]

    t = time.time()
    sal = run_saliency(model, root / "test.csv", root / "saliency", method=["gradient"], confounder_mask=mask, seed=seed, threads=args.threads, force=True)
    times["saliency"] = time.time() - t
    truth = root / "data" / "truth"
    brain = load_image(truth / f"space-{SPACE}_desc-brain_mask.nii.gz").data > 0
    from neurointerp.io import resolution_label

    stem = f"space-{SPACE}_res-{resolution_label(np.diag([args.voxel_size] * 3 + [1.0]))}_label-all"  # synth brain's grid label
    diff = load_image(sal / "group" / f"{stem}_desc-gradientcdiffMeanabs_attribution.nii.gz").data
    free = load_image(sal / "group" / f"{stem}_desc-gradientcfreeMeanabs_attribution.nii.gz").data
    truths = {n: np.abs(load_image(truth / f"space-{SPACE}_desc-{n}_logjacobian.nii.gz", allow_empty=True).data) for n in ("disease", "confounder")}
    side = json.loads((sal / "group" / f"{stem}_desc-gradientcdiffMeanabs_attribution.json").read_text())
    roi = pd.read_csv(sal / "group" / f"space-{SPACE}_desc-gradientcdiff_label-all_atlas-AAL2_roi-table.tsv", sep="\t")

    from neurointerp.models.checkpoint import load_checkpoint

    clf = load_checkpoint(model)
    test_table = read_cohort(root / "test.csv")
    x = np.stack([clf.spec.load_row(test_table, i).data for i in range(len(test_table))])
    pred = clf.predict(x)
    y = (test_table.frame["label"] == clf.classes[1]).to_numpy()
    age = frame["age"].to_numpy(float)
    beyond = tests["BeyondConfounders"] or {}
    within = {w["stratum"]: w for w in tests["WithinClass"]}
    return {
        "scenario": scenario,
        "seed": seed,
        "n_train": int((~is_test).sum()),
        "n_heldout": int(is_test.sum()),
        "r_age_diagnosis": float(np.corrcoef(age, (frame["label"] == "patient").to_numpy(float))[0, 1]),
        "heldout_accuracy": float(((pred > 0.5) == y).mean()),
        "model_test_subjects": tests["Subjects"]["kind"],
        "lr_beyond_age": beyond.get("lr"),
        "p_beyond_age": beyond.get("p"),
        "auc_score_heldout": beyond.get("auc_score"),
        "within": {c: {k: w.get(k) for k in ("n", "r", "p", "p_perm", "p_holm", "significant")} for c, w in within.items()},
        "conclusions": tests["Conclusions"],
        "glm_confounded_features": f"{summary['NConfounded']}/{summary['NFeatures']}",
        "cdiff_ncc_age": float(ncc(diff, truths["confounder"], brain)),
        "cdiff_ncc_disease": float(ncc(diff, truths["disease"], brain)),
        "cfree_ncc_age": float(ncc(free, truths["confounder"], brain)),
        "cfree_ncc_disease": float(ncc(free, truths["disease"], brain)),
        "cdiff_confounder_share": side.get("ConfounderShare"),
        "cdiff_top_regions": [f"{r.name} ({r.confounder_share:.2f})" for r in roi.head(4).itertuples()],
        "seconds": {k: round(v, 1) for k, v in times.items()},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", action="append", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--voxel-size", type=float, default=6.0)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--test-fraction", type=float, default=0.4)
    p.add_argument("--layer", default="encoder.stack2")
    p.add_argument("--permutations", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default=None)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="confmodel"))
    runs = []
    for scenario in args.scenario or ["age-confounded", "unconfounded"]:
        for seed in args.seeds:
            res = one_run(work / f"{scenario}-{seed}", scenario, seed, args)
            runs.append(res)
            print(json.dumps(res), flush=True)
            if args.output:  # resumable reading: every finished run is on disk
                Path(args.output).write_text(json.dumps({"settings": {k: v for k, v in vars(args).items() if k not in ("output", "work")}, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
