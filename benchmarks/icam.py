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

``--vagan-lambda-map`` takes several L1 weights (one VA-GAN row each): the authors' 100 was set for
their data; the map's L1 weight decides how much of a lesion the map may remove.

Each run is saved as it finishes (``<out stem>-runs/seed<s>-<row>-<hash of its settings>.json``); a
rerun skips finished ones (resumable; several invocations may share the cache). Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/icam.py --seeds 0 1 2 --jobs 2 --vagan-lambda-map 100 20
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

METHODS = ("icam", "vagan")
DATA_KEYS = ("n_per_group", "n_test_per_group", "size")
METHOD_KEYS = {"icam": ("epochs", "channels", "n_samples"), "vagan": ("vagan_epochs", "vagan_channels", "vagan_lr")}


def _row(method: str, lam: float | None) -> str:
    return method if lam is None else f"vagan-l{lam:g}"


def _key(args: dict, seed: int, method: str, lam: float | None) -> dict:
    """Everything one run depends on (its cache key)."""
    key = {"seed": seed, "method": method, **{k: args[k] for k in DATA_KEYS + METHOD_KEYS[method]}}
    if lam is not None:
        key["vagan_lambda_map"] = lam
    return key


def _run(job):
    """One (seed, method[, lambda]): synth -> train -> evaluate (in its own process when --jobs > 1)."""
    args, seed, method, lam = job
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
                                    channels=args["vagan_channels"], lambdas={"map": lam}, lr=args["vagan_lr"], seed=seed)
    r["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return args, seed, method, lam, r


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
    ap.add_argument("--vagan-lambda-map", type=float, nargs="+", default=[100.0], help="VA-GAN L1 weights on the map, one row each (the authors': 100)")
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

    # one file per finished run, named by what it depends on: reruns skip them (resumable) and
    # several invocations may fill the same cache
    cache = args.out.with_name(args.out.stem + "-runs")
    cache.mkdir(parents=True, exist_ok=True)
    a = vars(args)
    jobs = [(a, s, m, lam) for s in args.seeds for m in args.methods for lam in ([None] if m == "icam" else args.vagan_lambda_map)]

    def path_of(s, m, lam):
        import hashlib

        key = _key(a, s, m, lam)
        return cache / f"seed{s}-{_row(m, lam)}-{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]}.json"

    todo = [j for j in jobs if not path_of(*j[1:]).exists()]

    def keep(args_, seed, method, lam, r):
        p = path_of(seed, method, lam)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": _key(a, seed, method, lam), "result": r}, default=float) + "\n")
        tmp.replace(p)
        print(f"seed {seed} {_row(method, lam)}: {r['wall_seconds']} s", flush=True)

    if args.jobs > 1 and len(todo) > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for fut in as_completed([pool.submit(_run, j) for j in todo]):
                keep(*fut.result())
    else:
        for j in todo:
            keep(*_run(j))

    done = {(s, _row(m, lam)): json.loads(path_of(s, m, lam).read_text())["result"] for _, s, m, lam in jobs}
    rows = [_row(m, lam) for m in args.methods for lam in ([None] if m == "icam" else args.vagan_lambda_map)]
    runs = []
    for s in args.seeds:
        r = {"seed": s}
        if "icam" in args.methods:
            r.update(done[(s, "icam")])
            r["ncc"] = dict(r["ncc"])
        for row in rows:
            if row.startswith("vagan"):
                v = done[(s, row)]
                r.setdefault("ncc", {})[row] = v["ncc"]["vagan"]
                r[row] = {k: v[k] for k in v if k != "ncc"}
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
        "ncc_minus_chance_shuffled_masks": {},
    }
    if "icam" in args.methods:
        summary["ncc_minus_chance_shuffled_masks"]["icam"] = agg(lambda r: r["ncc_minus_chance"]["mean"])
        summary.update({
            "accuracy": agg(lambda r: r["accuracy"]),
            "variance_ratio_sites_vs_elsewhere": agg(lambda r: r["variance"]["ratio"]),
            "variance_ncc_with_frequency": agg(lambda r: r["variance"]["ncc_with_frequency"]),
            "icam_beats_e_a_baselines_ncc_minus": all(r["ncc"]["icam"]["ncc_minus"]["mean"] > max(r["ncc"][m]["ncc_minus"]["mean"] for m in methods if m.startswith("icam-ea")) for r in runs),
            "icam_beats_e_a_baselines_ncc_plus": all(r["ncc"]["icam"]["ncc_plus"]["mean"] > max(r["ncc"][m]["ncc_plus"]["mean"] for m in methods if m.startswith("icam-ea")) for r in runs),
        })
    for row in rows:
        if row.startswith("vagan"):
            summary["ncc_minus_chance_shuffled_masks"][row] = agg(lambda r, row=row: r[row]["ncc_minus_chance"]["mean"])
            summary[f"{row}_map_l1_lesion_vs_healthy_images"] = {k: agg(lambda r, k=k, row=row: r[row]["map_l1"][k]) for k in ("source", "other")}
            if "icam" in args.methods:
                summary[f"icam_beats_{row}_ncc_minus_seeds"] = int(sum(r["ncc"]["icam"]["ncc_minus"]["mean"] > r["ncc"][row]["ncc_minus"]["mean"] for r in runs))
    summary["wall_seconds"] = {row: agg(lambda r, row=row: (r[row] if row.startswith("vagan") else r)["wall_seconds"]) for row in rows}
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
    names = {"icam": "ICAM (mean FA map)", "icam-ea-gradient": "ICAM-E^a gradient", "icam-ea-gradcam": "ICAM-E^a Grad-CAM"}

    def cell(a):
        if not np.isfinite(a["mean"]):
            return "N/A"
        partial = f" ({a['n_seeds']} of {len(a['per_seed'])} seeds defined)" if a["n_seeds"] < len(a["per_seed"]) else ""
        return f"{a['mean']:.3f} ± {a['sd_over_seeds']:.3f}{partial}"

    lines = ["| method | NCC (-) lesion -> healthy | NCC (+) healthy -> lesion |", "|---|---|---|"]
    def name(m):
        return f"VA-GAN, L1 weight {m[len('vagan-l'):]} (lesion -> healthy only)" if m.startswith("vagan-l") else names.get(m, m)

    for m in methods:
        lines.append(f"| {name(m)} | {cell(summary['ncc_minus'][m])} | {cell(summary['ncc_plus'][m])} |")
    for m, a in summary["ncc_minus_chance_shuffled_masks"].items():
        lines.append(f"| chance: {name(m)} maps vs other subjects' masks | {cell(a)} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
