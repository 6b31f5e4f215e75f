"""Speed of gradient and occlusion maps against MONAI, same model, same volumes, same run.

    python benchmarks/saliency.py [--n 8] [--size 64] [--window 8] [--stride 4] [--out benchmarks/results/saliency.json]

* gradient maps: neurointerp's batched ``gradient`` vs MONAI's ``VanillaGrad`` (batch 1 only,
  so one volume at a time);
* occlusion: neurointerp's batched, brain-mask-aware occlusion vs MONAI's
  ``OcclusionSensitivity`` at equal window and stride (MONAI occludes every window, inside the
  brain or not; we report both the masked run and an unmasked one for a fair comparison).

The model is the simulator paper's 3D classifier (simnet3d, 16/32/64/16 channels) on
``size``^3 volumes made of a brain-shaped ellipsoid with noise. MONAI is needed only here
(``pip install monai``). Targets (issue 5): >= 2x faster than MONAI for both on CPU at 64^3.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch


def volumes(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    grid = np.indices((size,) * 3).astype(np.float32)
    c = (size - 1) / 2
    r = ((grid[0] - c) / (0.42 * size)) ** 2 + ((grid[1] - c) / (0.48 * size)) ** 2 + ((grid[2] - c) / (0.40 * size)) ** 2
    brain = r < 1
    x = np.where(brain, 1.0 + 0.2 * rng.standard_normal((n, size, size, size)), 0.0).astype(np.float32)
    return torch.from_numpy(x[:, None]), brain


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--stride", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--occlusion-volumes", type=int, default=1, help="volumes for the (slow) occlusion comparison")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "saliency.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from monai.visualize import OcclusionSensitivity, VanillaGrad

    from neurointerp.attribution import attribute
    from neurointerp.models.classifier import ConvClassifier

    torch.manual_seed(0)
    model = ConvClassifier((args.size,) * 3, channels=(16, 32, 64, 16), kernel_size=3, hidden=(64,)).eval()
    x, brain = volumes(args.n, args.size)
    result = {"device": "cpu", "threads": args.threads, "platform": platform.platform(), "torch": torch.__version__, "size": args.size, "n_volumes": args.n}

    # warm-up
    attribute(model, x[:1], "gradient", target=1)
    t = time.perf_counter()
    ours, _ = attribute(model, x, "gradient", target=1, batch_size=args.n)
    t_ours = time.perf_counter() - t
    vg = VanillaGrad(model)
    t = time.perf_counter()
    theirs = [vg(x[i : i + 1], index=0) for i in range(args.n)]
    t_monai = time.perf_counter() - t
    diff = float(np.max(np.abs(ours - np.concatenate([g.detach().numpy()[:, 0] for g in theirs]))))
    result["gradient"] = {
        "neurointerp_maps_per_s": args.n / t_ours,
        "monai_vanillagrad_maps_per_s": args.n / t_monai,
        "speedup": t_monai / t_ours,
        "max_abs_difference": diff,
    }
    print(f"gradient: neurointerp {args.n / t_ours:.2f} maps/s, MONAI VanillaGrad {args.n / t_monai:.2f} maps/s -> {t_monai / t_ours:.1f}x (max |diff| {diff:.2e})")

    k = args.occlusion_volumes
    xo = x[:k]
    t = time.perf_counter()
    ours_masked, _ = attribute(model, xo, "occlusion", target=1, window=args.window, stride=args.stride, mask=brain, batch_size=64)
    t_masked = time.perf_counter() - t
    t = time.perf_counter()
    ours_full, _ = attribute(model, xo, "occlusion", target=1, window=args.window, stride=args.stride, batch_size=64)
    t_full = time.perf_counter() - t
    occ = OcclusionSensitivity(model, mask_size=args.window, overlap=1 - args.stride / args.window, n_batch=64, verbose=False, mode=0.0, activate=False)
    t = time.perf_counter()
    for i in range(k):
        occ(xo[i : i + 1])
    t_occ = time.perf_counter() - t
    result["occlusion"] = {
        "window": args.window,
        "stride": args.stride,
        "volumes": k,
        "neurointerp_masked_s_per_volume": t_masked / k,
        "neurointerp_unmasked_s_per_volume": t_full / k,
        "monai_occlusionsensitivity_s_per_volume": t_occ / k,
        "speedup_masked": t_occ / t_masked,
        "speedup_unmasked": t_occ / t_full,
    }
    print(f"occlusion {args.window}^3/{args.stride}: neurointerp {t_masked / k:.1f} s (brain mask) / {t_full / k:.1f} s (all windows), MONAI {t_occ / k:.1f} s per volume")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
