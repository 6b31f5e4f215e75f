"""ICAM on synthetic lesions: the Table-4-style comparison (papers/icam-vae-gan-attribution.txt §4).

Trains ICAM on ``synth lesions`` phantoms (healthy vs 1-6 small bright lesions at variable
cortical sites) and scores, on a held-out set:

* attribute-space classification accuracy;
* NCC(-) (lesion -> healthy, own lesion mask) and NCC(+) (healthy -> lesion, class-1 lesion
  frequency map) of |mean FA map| vs the same for gradient and Grad-CAM of ICAM's own attribute
  encoder (via neurointerp.attribution.registry.attribute);
* variance maps: variance on the lesion sites over the variance elsewhere in the brain.

Larger than the tests (more images, more epochs, several seeds). Usage::

    OMP_NUM_THREADS=1 python benchmarks/icam.py --seeds 0 1 2 --jobs 3 --out benchmarks/results/icam.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def _run(job):
    """One seed: synth -> train -> evaluate (in its own process when --jobs > 1)."""
    args, seed = job
    import torch

    from neurointerp.simulate.icam.experiment import lesion_experiment

    torch.set_num_threads(args["threads"])
    t0 = time.perf_counter()
    r = lesion_experiment(n_per_group=args["n_per_group"], n_test_per_group=args["n_test_per_group"], size=args["size"], epochs=args["epochs"],
                          channels=args["channels"], n_samples=args["n_samples"], seed=seed)
    r["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-per-group", type=int, default=128)
    ap.add_argument("--n-test-per-group", type=int, default=100)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=120)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per seed")
    ap.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "icam.json")
    args = ap.parse_args(argv)

    import torch

    from neurointerp._version import __version__
    from neurointerp.simulate.icam.experiment import format_table

    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            runs = list(pool.map(_run, [(vars(args), s) for s in args.seeds]))
    else:
        runs = [_run((vars(args), s)) for s in args.seeds]
    for seed, r in zip(args.seeds, runs):
        print(f"seed {seed} ({r['wall_seconds']} s)\n{format_table(r)}\n", flush=True)

    def agg(get):
        v = np.array([get(r) for r in runs], dtype=float)
        return {"mean": float(v.mean()), "sd_over_seeds": float(v.std()), "per_seed": v.round(4).tolist()}

    methods = list(runs[0]["ncc"])
    summary = {
        "accuracy": agg(lambda r: r["accuracy"]),
        "ncc_minus": {m: agg(lambda r, m=m: r["ncc"][m]["ncc_minus"]["mean"]) for m in methods},
        "ncc_plus": {m: agg(lambda r, m=m: r["ncc"][m]["ncc_plus"]["mean"]) for m in methods},
        "variance_ratio_sites_vs_elsewhere": agg(lambda r: r["variance"]["ratio"]),
        "variance_ncc_with_frequency": agg(lambda r: r["variance"]["ncc_with_frequency"]),
        "icam_beats_baselines_ncc_minus": all(r["ncc"]["icam"]["ncc_minus"]["mean"] > max(r["ncc"][m]["ncc_minus"]["mean"] for m in methods if m != "icam") for r in runs),
        "icam_beats_baselines_ncc_plus": all(r["ncc"]["icam"]["ncc_plus"]["mean"] > max(r["ncc"][m]["ncc_plus"]["mean"] for m in methods if m != "icam") for r in runs),
    }
    result = {
        "benchmark": "icam-lesions",
        "tool_version": __version__,
        "machine": {"platform": platform.platform(), "threads": args.threads, "torch": torch.__version__},
        "config": vars(args) | {"out": str(args.out)},
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
