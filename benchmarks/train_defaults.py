"""How the training defaults of ``neurointerp train`` were chosen: held-out skill on ``synth brain``.

Every run trains one model with the production loop (:func:`neurointerp.train.loop._train_unit`,
the code behind ``neurointerp train``) on the first N subjects of a ``synth brain`` cohort
(default effect size, default age confound) and scores it, at every check, on the last
``--n-test`` subjects of that cohort (the external test set: never used for training, early
stopping or selection). Configurations differ in the optimiser budget, learning rate and
schedule, batch size, augmentation and early stopping; ``legacy`` is the previous default
(30 epochs of batch 32, constant learning rate). Sizes are nested and class-balanced.

Images: a column of the cohort table (``--image-column``): ``template_image`` (``synth brain
--template-space``: each subject's anatomy on the template grid, no pose, bias or noise) or the
``image`` column of a ``preprocess`` output table. ``--downsample`` block-averages every image
2x2x2 first. Each image is z-scored inside the brain (``--normalize zscore``, as ``preprocess``
leaves them).

Resumable: each finished (config, size, seed) is stored in the JSON at once and skipped when the
script runs again. Usage::

    neurointerp synth brain s6 --n-subjects 240 --voxel-size 6 --template-space --seed 21
    python benchmarks/train_defaults.py --cohort s6/cohort.csv --image-column template_image --n-test 80 \
        --sizes 40 80 160 --configs legacy steps-600 --work /tmp/td --output benchmarks/results/train_defaults.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

# every configuration is a set of overrides of the current defaults (neurointerp.train.defaults)
CONFIGS: dict[str, dict] = {
    # the defaults before issue #21: 30 epochs of batch 32, constant learning rate, no validation
    "legacy": dict(epochs=30, batch_size=32, lr=1e-3, lr_schedule="constant", warmup=0.0, validation_fraction=0.0),
    # learning curves: a long constant-rate run, scored at every check
    "curve-1200": dict(steps=1200, lr_schedule="constant", warmup=0.0, validation_fraction=0.0, eval_every=60),
    "steps-150": dict(steps=150, validation_fraction=0.0),
    "steps-300": dict(steps=300, validation_fraction=0.0),
    "steps-600": dict(steps=600, validation_fraction=0.0),
    "steps-1200": dict(steps=1200, validation_fraction=0.0),
    "steps-600-constant": dict(steps=600, lr_schedule="constant", warmup=0.0, validation_fraction=0.0),
    "steps-600-lr3e-4": dict(steps=600, lr=3e-4, validation_fraction=0.0),
    "steps-600-lr3e-3": dict(steps=600, lr=3e-3, validation_fraction=0.0),
    "steps-300-batch32": dict(steps=300, batch_size=32, validation_fraction=0.0),
    "steps-300-batch32-rot1": dict(steps=300, batch_size=32, shift=0.0, rotation=1.0, validation_fraction=0.0),
    "steps-600-noaug": dict(steps=600, shift=0.0, rotation=0.0, validation_fraction=0.0),
    "steps-300-noaug": dict(steps=300, shift=0.0, rotation=0.0, validation_fraction=0.0),
    "steps-1200-noaug": dict(steps=1200, shift=0.0, rotation=0.0, validation_fraction=0.0),
    "steps-600-noaug-lr3e-4": dict(steps=600, lr=3e-4, shift=0.0, rotation=0.0, validation_fraction=0.0),
    "steps-600-noaug-earlystop": dict(steps=600, shift=0.0, rotation=0.0, validation_fraction=0.2),
    "steps-600-rot1": dict(steps=600, shift=0.0, rotation=1.0, validation_fraction=0.0),
    # the chosen defaults, on the --folds 0 --final path: a validation split for the evidence, no selection
    "default-folds0": dict(steps=600, shift=0.0, rotation=1.0, validation_fraction=0.2),
    # ... with early stopping and best-check selection on the validation AUC (--patience 5)
    "earlystop-auc": dict(steps=600, shift=0.0, rotation=1.0, validation_fraction=0.2, patience=5),
    # the --folds 0 --final path: validation split, early stopping, best checkpoint
    "steps-600-earlystop": dict(steps=600, validation_fraction=0.2),
}


def downsample_cohort(table: Path, folder: Path) -> Path:
    """Copy of a cohort table whose images are block-averaged 2x2x2 (affine scaled to match)."""
    import nibabel as nib
    import pandas as pd

    from neurointerp.io import save_image

    folder.mkdir(parents=True, exist_ok=True)
    out_table = folder / "cohort.csv"
    if out_table.exists():
        return out_table
    frame = pd.read_csv(table, dtype={"participant_id": str})
    paths = []
    for p in frame["image"]:
        src = Path(p) if Path(p).is_absolute() else table.parent / p
        dst = folder / Path(src).name
        if not dst.exists():
            img = nib.load(str(src))
            a = np.asarray(img.dataobj, dtype=np.float32)
            s = [d // 2 * 2 for d in a.shape]
            a = a[: s[0], : s[1], : s[2]].reshape(s[0] // 2, 2, s[1] // 2, 2, s[2] // 2, 2).mean(axis=(1, 3, 5))
            aff = img.affine.copy()
            aff[:3, :3] = img.affine[:3, :3] * 2.0
            aff[:3, 3] = img.affine[:3, 3] + img.affine[:3, :3] @ np.array([0.5, 0.5, 0.5])
            save_image(a.astype(np.float32), aff, dst)
        paths.append(str(dst))
    frame["image"] = paths
    frame.to_csv(out_table, index=False)
    return out_table


def prepare_cohort(table: Path, image_column: str, folder: Path, downsample: bool) -> Path:
    """A training table (participant_id, image, label, age, sex) with absolute image paths."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    f = pd.read_csv(table, dtype={"participant_id": str})
    f["image"] = [str(Path(p) if Path(p).is_absolute() else (table.parent / p).resolve()) for p in f[image_column]]
    out = folder / "cohort.csv"
    f[["participant_id", "image", "label", "age", "sex"]].to_csv(out, index=False)
    return downsample_cohort(out, folder / "down") if downsample else out


def first_balanced(labels: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` rows, taking classes alternately (so every size is balanced and nested)."""
    by_class = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    rows = []
    while len(rows) < n:
        for members in by_class:
            if members and len(rows) < n:
                rows.append(members.pop(0))
    return np.sort(np.asarray(rows))


def run_one(data, train_rows: np.ndarray, test_rows: np.ndarray, cfg: dict, seed: int, workdir: Path, conf_table) -> dict:
    import hashlib

    from neurointerp.models.classifier import architecture_params
    from neurointerp.train import loop
    from neurointerp.train.defaults import DEFAULT_BATCH_SIZE, DEFAULT_LR, DEFAULT_PATIENCE, DEFAULT_WARMUP
    from neurointerp.train.distributed import init_distributed

    hyper = dict(
        task=data.task, architecture="simnet3d", normalize="zscore", steps=cfg.get("steps"), epochs=cfg.get("epochs"),
        batch_size=cfg.get("batch_size", DEFAULT_BATCH_SIZE), lr=cfg.get("lr", DEFAULT_LR),
        lr_schedule=cfg.get("lr_schedule", "cosine"), warmup=cfg.get("warmup", DEFAULT_WARMUP),
        validation_fraction=cfg.get("validation_fraction", 0.0), patience=cfg.get("patience", DEFAULT_PATIENCE),  # None: off
        eval_every=cfg.get("eval_every"), shift=cfg.get("shift", 1.0), rotation=cfg.get("rotation", 1.0), flip=False,
        balance=0, seed=seed,
    )
    arch = architecture_params("simnet3d", ndim=3)
    settings = dict(hyper=hyper, arch_params=arch, config_hash=hashlib.sha256(json.dumps(hyper, sort_keys=True).encode()).hexdigest()[:16],
                    n_folds=1, checkpoint_every=10**6, confounders=conf_table)
    fit_idx, val_idx = loop._validation_split(data, train_rows, hyper["validation_fraction"], seed, 1)
    d = workdir
    unit = loop.Unit("run", 1, train_rows, test_rows, d, d / "model.pt", d / "state.pt", fit_idx, val_idx)
    dev = __import__("torch").device("cpu")
    t0 = time.perf_counter()
    loop._train_unit(unit, data, settings, dev, init_distributed(dev), resume=False, force=True)
    seconds = time.perf_counter() - t0
    from neurointerp.models.checkpoint import read_checkpoint

    ck = read_checkpoint(unit.model_path)
    ev = ck["metrics"]["evidence"]
    curve = [{k: h.get(k) for k in ("step", "train_loss", "heldout_auc", "heldout_balanced_accuracy", "val_loss", "val_auc")} for h in ck["metrics"]["history"]]
    return {
        "test_auc": ev.get("auc"), "test_auc_ci": ev.get("ci"), "test_balanced_accuracy": ev.get("balanced_accuracy"),
        "test_p": ev.get("p_value"), "beats_chance": ev.get("beats_chance"), "baseline": ev.get("baseline"),
        "validation": ck["metrics"].get("validation"),
        "steps_done": ck["training"]["steps_done"], "selected": ck["training"].get("selected"),
        "samples_seen": int(ck["training"]["steps_done"]) * hyper["batch_size"], "seconds": round(seconds, 1), "curve": curve,
    }


def markdown_table(results: dict) -> str:
    """Markdown: test AUC / balanced accuracy per configuration (rows) and size (columns)."""
    runs = results["runs"]
    sizes = sorted({v["n"] for v in runs.values()})
    names = list(dict.fromkeys(v["config"] for v in runs.values()))
    lines = ["| configuration | " + " | ".join(f"N = {n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for name in names:
        cells = []
        for n in sizes:
            v = [r for r in runs.values() if r["config"] == name and r["n"] == n]
            cells.append("; ".join(f"{r['test_auc']:.2f} / {r['test_balanced_accuracy']:.2f} ({r['steps_done']} steps)" for r in v) or "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", type=Path, help="synth brain (or preprocess) cohort table")
    ap.add_argument("--table", action="store_true", help="print the results in --output as a markdown table and stop")
    ap.add_argument("--merge", type=Path, nargs="*", default=[], help="JSON files of other runs to merge into --output first")
    ap.add_argument("--image-column", default="template_image")
    ap.add_argument("--n-test", type=int, default=80, help="the last rows: the external test set")
    ap.add_argument("--downsample", action="store_true", help="block-average the images 2x2x2 first")
    ap.add_argument("--tag", default="", help="prefix of the run keys (e.g. the grid)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[40, 80, 160])
    ap.add_argument("--configs", nargs="+", default=["legacy", "steps-600"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--confounder", default="age")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "train_defaults.json")
    args = ap.parse_args(argv)
    if args.merge or args.table:
        results = json.loads(args.output.read_text()) if args.output.exists() else {"runs": {}}
        for other in args.merge:
            o = json.loads(other.read_text())
            results.setdefault("about", o.get("about"))
            results["runs"].update(o.get("runs", {}))
        if args.merge:
            args.output.write_text(json.dumps(results, indent=1))
        print(markdown_table(results))
        return 0

    import torch

    from neurointerp.progress import set_quiet
    from neurointerp.train.baseline import confounder_table
    from neurointerp.train.data import load_training_data

    set_quiet(True)
    torch.set_num_threads(args.threads)
    table = prepare_cohort(args.cohort.resolve(), args.image_column, args.work / "cohort", args.downsample)
    data = load_training_data(table, normalize="zscore", preload=True)
    conf = confounder_table(data.cohort.frame, [args.confounder], data.cohort.rows, str(table)) if args.confounder else None
    n_train_pool = len(data) - args.n_test
    test_rows = np.arange(n_train_pool, len(data))
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results.setdefault("runs", {})
    results["about"] = {
        "what": "held-out skill of one simnet3d model per run on an external synth-brain test cohort (other seed)",
        "cohort": str(args.cohort), "image_column": args.image_column, "downsample": args.downsample,
        "grid": list(data.spec.shape), "n_test": int(len(test_rows)),
        "platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__, "threads": args.threads,
        "configs": CONFIGS,
    }
    for seed in args.seeds:
        for n in args.sizes:
            rows = first_balanced(data.targets[:n_train_pool], n)
            for name in args.configs:
                key = f"{args.tag}{name}/n{n}/seed{seed}"
                if key in results["runs"]:
                    continue
                print(f"{key} ...", flush=True)
                res = run_one(data, rows, test_rows, CONFIGS[name], seed, args.work / "runs" / key.replace("/", "_"), conf)
                res.update(config=name, n=n, seed=seed, grid=list(data.spec.shape))
                results["runs"][key] = res
                args.output.parent.mkdir(parents=True, exist_ok=True)
                tmp = args.output.with_suffix(".tmp")
                tmp.write_text(json.dumps(results, indent=1))
                tmp.replace(args.output)
                print(f"{key}: test AUC {res['test_auc']:.3f} BA {res['test_balanced_accuracy']:.3f} "
                      f"({res['steps_done']} steps, {res['seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
