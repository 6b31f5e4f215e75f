"""Training throughput on CPU: samples/second at 64^3, and what data handling adds to an epoch.

Measures, for the 3D classifier of simulator-networks §4.2 (simnet3d) on 64^3 volumes:

* ``pure``: forward + backward + optimiser step over preloaded tensor slices (no indexing,
  no augmentation, no bookkeeping) -- the floor for one epoch;
* ``loop``: the epoch time that ``neurointerp train`` itself records (cohort preloaded, random
  sample order, gathering, targets, loss bookkeeping, training-state checkpoint), without
  augmentation and with the default augmentation (whole-voxel shifts, 1 degree rotations, flips);
* the overhead of each over ``pure`` (target: data handling adds < 20%), both as the ratio of
  the best epoch times (``*_vs_pure_pct``; noisy on a shared machine) and as the time the loop
  itself spends on data handling relative to its forward/backward/step time, measured inside the
  same epochs (``*_data_over_compute_pct``).

Usage::

    python benchmarks/train.py [--n 32] [--batch-size 8] [--threads N] [--output results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_cohort(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    import pandas as pd
    from scipy.ndimage import gaussian_filter

    from neurointerp.io import save_image

    rng = np.random.default_rng(seed)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -size
    rows = []
    for i in range(n):
        vol = gaussian_filter(rng.random((size, size, size)), 2).astype(np.float32) + 0.1
        path = save_image(vol, affine, folder / f"sub-b{i:03d}_space-bench_T1w.nii.gz")
        rows.append({"participant_id": f"b{i:03d}", "image": path.name, "label": "ab"[i % 2]})
    table = folder / "cohort.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


class PureEpoch:
    """Forward/backward/step over preloaded tensor slices; ``run()`` returns the seconds of one epoch."""

    def __init__(self, n: int, size: int, batch_size: int):
        import torch

        from neurointerp.models.classifier import build_classifier

        torch.manual_seed(0)
        self.torch = torch
        self.model = build_classifier("simnet3d", (size, size, size), 1)
        self.opt = torch.optim.Adam(self.model.parameters(), 1e-3)
        self.crit = torch.nn.BCEWithLogitsLoss()
        self.x = torch.randn(n, 1, size, size, size)
        self.y = (torch.arange(n) % 2).float()[:, None]
        self.n, self.bs = n, batch_size
        self.times: list[float] = []
        self._step(0)  # warm-up

    def _step(self, i: int) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = self.crit(self.model(self.x[i : i + self.bs]), self.y[i : i + self.bs])
        loss.backward()
        self.opt.step()

    def run(self, repeats: int = 1) -> float:
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, self.n, self.bs):
                self._step(i)
            self.times.append(time.perf_counter() - t0)
        return min(self.times)


def loop_epoch(table: Path, out: Path, batch_size: int, threads: int | None, augment: bool, epochs: int = 4) -> dict:
    """Epoch times recorded by ``neurointerp train`` (the fastest epoch after the first)."""
    import pandas as pd

    from neurointerp.progress import set_quiet
    from neurointerp.train.loop import train

    set_quiet(True)
    aug = dict(shift=1.0, rotation=1.0, flip=True) if augment else dict(shift=0.0, rotation=0.0, flip=False)
    # no validation split: the epoch times measure the training pass alone
    train(table, out, folds=0, final=True, epochs=epochs, batch_size=batch_size, validation_fraction=0.0, threads=threads, preload=True, device="cpu", **aug)
    hist = pd.read_csv(out / "final-metrics.tsv", sep="\t").iloc[1:]
    best = hist.loc[hist["train_seconds"].idxmin()]
    return {
        "epoch_s": float(best["train_seconds"]),
        "data_s": float(best["data_seconds"]),
        # measured inside the same epochs, so other load on the machine affects both alike
        "data_over_compute_pct": float(np.median(100 * hist["data_seconds"] / (hist["train_seconds"] - hist["data_seconds"]))),
        "all_epochs_s": [round(float(v), 3) for v in hist["train_seconds"]],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="images in the cohort (one epoch)")
    parser.add_argument("--size", type=int, default=64, help="grid size (size^3)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="epochs measured per variant (the best counts)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = parser.parse_args(argv)

    import torch

    from neurointerp.train.device import set_threads

    threads = set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = make_cohort(tmp / "cohort", args.n, args.size)
        # interleaved, best of several epochs each: robust to other load on a shared machine
        pure = PureEpoch(args.n, args.size, args.batch_size)
        pure.run(args.repeats)
        t_loop = loop_epoch(table, tmp / "noaug", args.batch_size, threads, augment=False, epochs=args.repeats + 1)
        pure.run(args.repeats)
        t_aug = loop_epoch(table, tmp / "aug", args.batch_size, threads, augment=True, epochs=args.repeats + 1)
        t_pure = pure.run(args.repeats)
    result = {
        "benchmark": "train",
        "model": "simnet3d (16/32/64/16, MLP 64)",
        "grid": [args.size] * 3,
        "n_samples_per_epoch": args.n,
        "batch_size": args.batch_size,
        "threads": threads,
        "device": "cpu",
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor(),
        "pure_epoch_s": round(t_pure, 3),
        "pure_epoch_all_s": [round(t, 3) for t in pure.times],
        "pure_samples_per_s": round(args.n / t_pure, 3),
        "loop_epoch_s": round(t_loop["epoch_s"], 3),
        "loop_epoch_all_s": t_loop["all_epochs_s"],
        "loop_samples_per_s": round(args.n / t_loop["epoch_s"], 3),
        "loop_vs_pure_pct": round(100 * (t_loop["epoch_s"] / t_pure - 1), 1),
        "loop_data_over_compute_pct": round(t_loop["data_over_compute_pct"], 1),
        "augmented_epoch_s": round(t_aug["epoch_s"], 3),
        "augmented_epoch_all_s": t_aug["all_epochs_s"],
        "augmented_samples_per_s": round(args.n / t_aug["epoch_s"], 3),
        "augmented_vs_pure_pct": round(100 * (t_aug["epoch_s"] / t_pure - 1), 1),
        "augmented_data_over_compute_pct": round(t_aug["data_over_compute_pct"], 1),
        "target": "data handling adds < 20% to the pure forward/backward time",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
