"""Speed of the issue-23 attribution methods per subject at 64^3, with their default parameters.

    python benchmarks/attribution_methods.py [--size 64] [--n 2] [--threads 2] [--only lime ...]
                                             [--out benchmarks/results/attribution_methods.json]

Model: the simulator paper's 3D classifier (simnet3d, 16/32/64/16 channels, random weights --
speed does not depend on training) on ``size``^3 brain-shaped ellipsoids with noise (the volumes
of ``benchmarks/saliency.py``). Each method runs on ``n`` subjects in one call (batched as
``saliency`` batches them) with the brain mask; seconds per subject are reported next to
``gradient`` and ``occlusion`` (8^3 window, stride 4) for scale. LIME/KernelSHAP use a
120-region atlas (nearest of 120 random seeds inside the brain, the size of AAL2); the swap test
swaps in 4 references per subject from 8 reference volumes, windows 8^3 with stride 4.
Results are written after every method, so an interrupted run keeps what it measured
(``--only`` re-measures some methods and keeps the others' entries).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from saliency import volumes  # noqa: E402

METHODS = [
    ("gradient", {}),
    ("occlusion", {}),
    ("optimised-perturbation", {}),
    ("swap-test", {}),
    ("lime", {}),
    ("kernel-shap", {}),
    ("deeplift", {}),
    ("gradient-shap", {}),
]


def voronoi_atlas(brain: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = np.argwhere(brain)
    seeds = pts[rng.choice(len(pts), n, replace=False)]
    d = ((pts[:, None, :] - seeds[None]) ** 2).sum(-1)
    lab = np.zeros(brain.shape, int)
    lab[tuple(pts.T)] = d.argmin(1) + 1
    return lab


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "attribution_methods.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from neurointerp.attribution import attribute
    from neurointerp.attribution.reference import ReferenceSet
    from neurointerp.models.classifier import ConvClassifier

    torch.manual_seed(0)
    model = ConvClassifier((args.size,) * 3, channels=(16, 32, 64, 16), kernel_size=3, hidden=(64,)).eval()
    x, brain = volumes(args.n, args.size)
    refs, _ = volumes(8, args.size, seed=1)
    reference = ReferenceSet(refs, torch.zeros(8, dtype=torch.long), [f"ref{i}" for i in range(8)])
    atlas = voronoi_atlas(brain, 120)
    result = json.loads(args.out.read_text()) if args.out.exists() else {}
    result.update({"device": "cpu", "threads": args.threads, "platform": platform.platform(), "torch": torch.__version__, "size": args.size, "n_subjects": args.n, "model": "simnet3d (16/32/64/16, hidden 64), random weights"})
    result.setdefault("methods", {})
    attribute(model, x[:1], "gradient", target=1)  # warm-up
    for name, params in METHODS:
        if args.only and name not in args.only:
            continue
        t = time.perf_counter()
        choice = [[0, 1, 2, 3]] * args.n if name == "swap-test" else None  # random weights: any 4 partners
        maps, rec = attribute(model, x, name, target=1, mask=np.broadcast_to(brain, (args.n, *brain.shape)).copy(), regions=atlas, reference_set=reference, reference_choice=choice, batch_size=8, **params)
        dt = time.perf_counter() - t
        result["methods"][name] = {"s_per_subject": dt / args.n, "parameters": rec["Parameters"], "finite": bool(np.isfinite(maps).all())}
        print(f"{name}: {dt / args.n:.1f} s per subject ({rec['Parameters']})", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
