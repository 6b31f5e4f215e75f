"""ICAM and VA-GAN on synthetic lesions: the ICAM paper's comparison (papers/icam-vae-gan-attribution.txt
§4, Tables 3-4) as one table.

Per seed, on the same ``synth lesions`` phantoms (healthy vs 1-6 small bright lesions at variable
cortical sites; training set seed ``s``, held-out set seed ``s + 1000``):

* ICAM: attribute-space classification accuracy; NCC(-) (lesion -> healthy, own lesion mask) and
  NCC(+) (healthy -> lesion, class-1 lesion frequency map) of |mean FA map|; the same for gradient
  and Grad-CAM of ICAM's own attribute encoder (Table 4); variance maps on the lesion sites;
* VA-GAN (Baumgartner et al.; Table 3's baseline): trained lesion -> healthy only (the paper's one
  direction), NCC(-) of |M(x)| with the own lesion mask; NCC(+) N/A (as in the paper's Table 3);
* chance level of NCC(-): the same maps scored against shuffled lesion masks of other subjects.

Each (seed, method) result is saved as it finishes (``<out>.partial.json``); a rerun with the same
arguments skips finished ones (resumable). Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/icam.py --seeds 0 1 2 --jobs 2 --out benchmarks/results/icam.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

METHODS = ("icam", "vagan")


def _run(job):
    """One (seed, method): synth -> train -> evaluate (in its own process when --jobs > 1)."""
    args, seed, method = job
    import torch

    torch.set_num_threads(args["threads"])
    t0 = time.perf_counter()
    if method == "icam":
        from neurointerp.simulate.icam.experiment import lesion_experiment

        r = lesion_experiment(n_per_group=args["n_per_group"], n_test_per_group=args["n_test_per_group"], size=args["size"], epochs=args["epochs"],
                              channels=args["channels"], n_samples=args["n_samples"], seed=seed)
    else:
        from neurointerp.simulate.vagan.experiment import lesion_experiment_vagan

        r = lesion_experiment_vagan(n_per_group=args["n_per_group"], n_test_per_group=args["n_test_per_group"], size=args["size"], epochs=args["vagan_epochs"],
                                    channels=args["vagan_channels"], lambdas={"map": args["vagan_lambda_map"]}, lr=args["vagan_lr"], seed=seed)
    r["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return seed, method, r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-per-group", type=int, default=128)
    ap.add_argument("--n-test-per-group", type=int, default=100)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=120, help="ICAM epochs")
    ap.add_argument("--channels", type=int, default=8, help="ICAM base width")
    ap.add_argument("--n-samples", type=int, default=32, help="ICAM attribute draws per image")
    ap.add_argument("--vagan-epochs", type=int, default=40)
    ap.add_argument("--vagan-channels", type=int, default=8)
    ap.add_argument("--vagan-lambda-map", type=float, default=100.0, help="VA-GAN L1 weight on the map (the authors': 100)")
    ap.add_argument("--vagan-lr", type=float, default=1e-3, help="VA-GAN Adam learning rate (the paper's 1e-3)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "icam.json")
    args = ap.parse_args(argv)

    import torch

    from neurointerp._version import __version__
    from neurointerp.simulate.icam.experiment import format_table

    config = {k: v for k, v in vars(args).items() if k not in ("out", "jobs", "threads", "seeds", "methods")}
    partial = args.out.with_suffix(".partial.json")
    done: dict = {}
    if partial.exists():
        saved = json.loads(partial.read_text())
        if saved.get("config") == config:
            done = saved["runs"]
    todo = [(vars(args), s, m) for s in args.seeds for m in args.methods if f"{s}/{m}" not in done]

    def keep(seed, method, r):
        done[f"{seed}/{method}"] = r
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"config": config, "runs": done}, default=float) + "\n")
        print(f"seed {seed} {method}: {r['wall_seconds']} s", flush=True)

    if args.jobs > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for fut in as_completed([pool.submit(_run, j) for j in todo]):
                keep(*fut.result())
    else:
        for j in todo:
            keep(*_run(j))

    runs = []
    for s in args.seeds:
        r = {"seed": s}
        if "icam" in args.methods:
            r.update(done[f"{s}/icam"])
            r["ncc"] = dict(r["ncc"])
        if "vagan" in args.methods:
            v = done[f"{s}/vagan"]
            r.setdefault("ncc", {})["vagan"] = v["ncc"]["vagan"]
            r["vagan"] = {k: v[k] for k in v if k != "ncc"}
        runs.append(r)
    for r in runs:
        if "icam" in args.methods:
            print(f"seed {r['seed']}\n{format_table(r)}\n", flush=True)

    def agg(get):
        v = np.array([get(r) for r in runs], dtype=float)
        ok = np.isfinite(v)
        return {"mean": float(v[ok].mean()) if ok.any() else float("nan"), "sd_over_seeds": float(v[ok].std()) if ok.any() else float("nan"),
                "per_seed": v.round(4).tolist(), "n_seeds": int(ok.sum())}

    methods = list(runs[0]["ncc"])
    summary = {
        "ncc_minus": {m: agg(lambda r, m=m: r["ncc"][m]["ncc_minus"]["mean"]) for m in methods},
        "ncc_plus": {m: agg(lambda r, m=m: r["ncc"][m]["ncc_plus"]["mean"]) for m in methods},
    }
    if "icam" in args.methods:
        summary.update({
            "accuracy": agg(lambda r: r["accuracy"]),
            "icam_ncc_minus_chance_shuffled_masks": agg(lambda r: r["ncc_minus_chance"]["mean"]),
            "variance_ratio_sites_vs_elsewhere": agg(lambda r: r["variance"]["ratio"]),
            "variance_ncc_with_frequency": agg(lambda r: r["variance"]["ncc_with_frequency"]),
            "icam_beats_others_ncc_minus": all(r["ncc"]["icam"]["ncc_minus"]["mean"] > max(r["ncc"][m]["ncc_minus"]["mean"] for m in methods if m != "icam") for r in runs),
            "icam_beats_baselines_ncc_plus": all(r["ncc"]["icam"]["ncc_plus"]["mean"] > max(r["ncc"][m]["ncc_plus"]["mean"] for m in methods if m not in ("icam", "vagan")) for r in runs),
        })
    if "vagan" in args.methods:
        summary["vagan_ncc_minus_chance_shuffled_masks"] = agg(lambda r: r["vagan"]["ncc_minus_chance"]["mean"])
        summary["vagan_map_l1_lesion_vs_healthy_images"] = {k: agg(lambda r, k=k: r["vagan"]["map_l1"][k]) for k in ("source", "other")}
    summary["wall_seconds"] = {m: agg(lambda r, m=m: (r["vagan"] if m == "vagan" else r)["wall_seconds"]) for m in args.methods}
    result = {
        "benchmark": "icam-vagan-lesions",
        "tool_version": __version__,
        "machine": {"platform": platform.platform(), "threads": args.threads, "jobs": args.jobs, "torch": torch.__version__},
        "config": vars(args) | {"out": str(args.out)},
        "summary": summary,
        "table_markdown": markdown(summary, methods),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(result["table_markdown"])
    print(json.dumps(summary, indent=1))
    return 0


def markdown(summary: dict, methods) -> str:
    """The paper-style table: mean ± sd over seeds of the per-seed mean NCC."""
    names = {"icam": "ICAM (mean FA map)", "icam-ea-gradient": "ICAM-E^a gradient", "icam-ea-gradcam": "ICAM-E^a Grad-CAM", "vagan": "VA-GAN (lesion -> healthy only)"}

    def cell(a):
        if not np.isfinite(a["mean"]):
            return "N/A"
        partial = f" ({a['n_seeds']} of {len(a['per_seed'])} seeds defined)" if a["n_seeds"] < len(a["per_seed"]) else ""
        return f"{a['mean']:.3f} ± {a['sd_over_seeds']:.3f}{partial}"

    lines = ["| method | NCC (-) lesion -> healthy | NCC (+) healthy -> lesion |", "|---|---|---|"]
    for m in methods:
        lines.append(f"| {names.get(m, m)} | {cell(summary['ncc_minus'][m])} | {cell(summary['ncc_plus'][m])} |")
    for key, label in (("icam_ncc_minus_chance_shuffled_masks", "ICAM maps vs shuffled masks (chance)"), ("vagan_ncc_minus_chance_shuffled_masks", "VA-GAN maps vs shuffled masks (chance)")):
        if key in summary:
            lines.append(f"| {label} | {cell(summary[key])} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
