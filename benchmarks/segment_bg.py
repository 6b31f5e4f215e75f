"""Guided-backprop background removal on ``synth rodent`` (papers/gbp-background-removal-segmentation.txt, issue #9).

A 2D U-Net is trained on sectioned (masked) slices of the training animals (80 %), then applied
to the held-out acquisitions (20 %) as they are -- bright artefacts outside the brain, random
translations. Reported, pooled over the held-out animals (as the paper's Tables 1-2):

* ``without``: segmentation of the raw acquisition;
* ``with``: segmentation after GBP background removal (per-slice and per-volume positioning);
* ``true mask``: segmentation after removing the background with the true brain mask (the
  paper's "manual" Table 2);
* ``brain_mask``: the positioned mask against the true brain mask;
* translation check: each held-out acquisition shifted by known whole-voxel offsets; the error
  between the change of the found mask shift and the applied offset.

Usage::

    python benchmarks/segment_bg.py [--n-animals 20] [--shape 64,64,16] [--epochs 40] [--optimizer adam --lr 1e-3]
                                    [--output benchmarks/results/segment_bg.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run(args) -> dict:
    import pandas as pd
    import torch

    from neurointerp.io import load_image, read_cohort
    from neurointerp.segment_bg.apply import run_apply
    from neurointerp.segment_bg.checkpoint import load_segmenter
    from neurointerp.segment_bg.core import predict, remove_background, to_slices
    from neurointerp.segment_bg.metrics import score_table, segmentation_counts
    from neurointerp.segment_bg.position import shift_image
    from neurointerp.segment_bg.train import run_train
    from neurointerp.synth.rodent import synth_rodent

    torch.set_num_threads(args.threads)
    root = Path(args.work or tempfile.mkdtemp(prefix="segbgbench"))
    shape = tuple(int(s) for s in args.shape.split(","))
    times = {}
    t = time.time()
    synth_rodent(root / "data", n_animals=args.n_animals, shape=shape, max_shift=args.max_shift, seed=args.seed, force=True)
    times["synth_s"] = time.time() - t
    t = time.time()
    model = run_train(root / "data" / "train.csv", root / "model", epochs=args.epochs, optimizer=args.optimizer, lr=args.lr, base=args.base, depth=3, batch_size=5, seed=args.seed, threads=args.threads, force=True)
    times["train_s"] = time.time() - t
    result: dict = {"settings": vars(args), "tables": {}}
    for positioning in ("slice", "volume"):
        t = time.time()
        out = run_apply(model, root / "data" / "test.csv", root / f"apply-{positioning}", positioning=positioning, threads=args.threads, force=True)
        times[f"apply_{positioning}_s"] = time.time() - t
        summary = pd.read_csv(out / "metrics_summary.tsv", sep="\t")
        result["tables"][positioning] = summary.to_dict("records")
        per = pd.read_csv(out / "metrics.tsv", sep="\t")
        result.setdefault("per_animal_dice", {})[positioning] = per[per["class"].isin(["brain", "brain_mask"])][["participant_id", "condition", "class", "dice"]].to_dict("records")
    # oracle: background removed with the true brain mask (the paper's Table 2, "manually")
    seg = load_segmenter(model)
    test = read_cohort(root / "data" / "test.csv", require_label=False)
    base = test.path.parent
    rows, trans = [], []
    for i, pid in enumerate(test.participant_ids):
        img = to_slices(load_image(test.images[i]).data)
        lab = to_slices(load_image(base / test.frame.loc[i, "labels"]).data).astype(np.uint8)
        msk = to_slices(load_image(base / test.frame.loc[i, "mask"]).data) > 0
        pred = predict(seg.model, img * msk).argmax(1)
        pred[~msk] = 0
        rows += [dict(r, condition="true mask") for r in segmentation_counts(pred, lab)]
        ref = seg.reference
        s0 = remove_background(seg.model, img, ref["template"], ref["mask"])["shifts"]
        rng = np.random.default_rng(args.seed + i)
        for _ in range(args.n_translations):
            d = tuple(int(v) for v in rng.integers(-args.max_shift, args.max_shift + 1, size=2))
            moved = np.stack([shift_image(s, d) for s in img])
            s1 = remove_background(seg.model, moved, ref["template"], ref["mask"])["shifts"]
            err = np.abs(s1 - s0 - np.array(d))
            trans.append({"participant_id": pid, "offset": list(d), "median_abs_error": float(np.median(err)), "max_abs_error": int(err.max()), "share_exact": float(np.mean(np.all(err == 0, axis=1)))})
    result["tables"]["true_mask"] = score_table(rows).to_dict("records")
    tr = pd.DataFrame(trans)
    result["translation"] = {
        "n": len(tr),
        "share_of_slices_exact": float(tr["share_exact"].mean()),
        "max_abs_error_voxels": int(tr["max_abs_error"].max()),
        "mean_median_abs_error": float(tr["median_abs_error"].mean()),
        "cases": trans,
    }
    result["timings"] = {k: round(v, 1) for k, v in times.items()}
    hist = pd.read_csv(root / "model" / "history.tsv", sep="\t")
    result["training"] = {"best_epoch": int(hist["val_loss"].idxmin() + 1) if "val_loss" in hist else None, "last": hist.iloc[-1].to_dict()}
    result["work"] = str(root)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-animals", type=int, default=20)
    p.add_argument("--shape", default="64,64,16")
    p.add_argument("--max-shift", type=int, default=6)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--n-translations", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None)
    p.add_argument("--output", default="benchmarks/results/segment_bg.json")
    args = p.parse_args(argv)
    res = run(args)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=float) + "\n")
    for name, table in res["tables"].items():
        print(f"\n[{name}]")
        for r in table:
            print(f"  {r['condition']:<9} {r['class']:<10} acc {100 * r['accuracy']:6.2f} spec {100 * r['specificity']:6.2f} sens {100 * r['sensitivity']:6.2f} prec {100 * r['precision']:6.2f} dice {100 * r['dice']:6.2f}")
    print("\ntranslation:", {k: v for k, v in res["translation"].items() if k != "cases"})
    print("timings:", res["timings"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
