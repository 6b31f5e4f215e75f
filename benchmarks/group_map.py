"""Benchmark of ``group-map``: voxelwise GLM time vs nilearn's SecondLevelModel, and peak memory
for many vs few maps (streaming).

Same data, same run: N synthetic log-Jacobian maps on a 64^3 template-space grid (disease +
age pattern of ``synth brain`` -- exact log-Jacobians at severity 1 / age +1 SD, scaled per
subject -- plus noise), a design ``label + age``, contrast patient - control, the template
brain mask. Both tools read the same NIfTI files from disk.

* time (after imports; import times reported too): ``group_map`` (GLM only: no permutations, atlas or figures; includes reading, output
  writing and sidecars) vs ``SecondLevelModel(mask_img).fit(...)`` + ``compute_contrast`` (t).
  Each runs in a fresh subprocess; the files are in the page cache for both (one warm-up read).
* memory: peak RSS (``ru_maxrss``) and peak traced numpy/Python allocations (tracemalloc) of a
  ``group_map`` subprocess for ``--n-large`` vs ``--n-small`` maps.

Usage::

    python benchmarks/group_map.py --workdir /tmp/gm-bench --out benchmarks/results/group_map.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RUNNER = r"""
import json, resource, sys, time, tracemalloc
from pathlib import Path
which, table, out, mask, trace = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
t_start = time.perf_counter()
if which == "neurointerp":
    import numpy, pandas, nibabel, scipy.special
    from neurointerp.group import group_map
    from neurointerp.progress import set_quiet
    set_quiet(True)
else:
    import numpy as np, pandas as pd, nibabel as nib
    from nilearn.glm.second_level import SecondLevelModel
if trace:
    tracemalloc.start()
t0 = time.perf_counter()
if which == "neurointerp":
    group_map(table, Path(out), design="label,age", mask=Path(mask), figures=False, force=True)
else:
    tab = pd.read_csv(table, sep="\t")
    dm = pd.DataFrame({"intercept": 1.0, "patient": (tab["label"] == "patient").astype(float), "age": tab["age"] - tab["age"].mean()})
    imgs = [str(Path(table).parent / m) for m in tab["map"]]
    slm = SecondLevelModel(mask_img=mask, smoothing_fwhm=None, n_jobs=1).fit(imgs, design_matrix=dm)
    t = slm.compute_contrast("patient", output_type="stat")
    Path(out).mkdir(parents=True, exist_ok=True)
    t.to_filename(str(Path(out) / "nilearn_t.nii.gz"))
elapsed = time.perf_counter() - t0
traced = tracemalloc.get_traced_memory()[1] if trace else None
print(json.dumps({"seconds": elapsed, "import_seconds": t0 - t_start, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "traced_peak_mb": traced / 2**20 if traced else None}))
"""


def make_maps(folder: Path, n: int, shape=(64, 64, 64), seed: int = 0, noise: float = 0.05) -> tuple[Path, Path]:
    """N maps ``severity * disease + age_z * age + noise`` (uncompressed .nii) and a maps table."""
    import pandas as pd

    from neurointerp.atlases import grid_points, resample_template, working_grid
    from neurointerp.io import save_image
    from neurointerp.synth.brain import SPACE, age_field, disease_field

    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "maps.tsv"
    if table.exists() and len(pd.read_csv(table, sep="\t")) == n:
        return table, folder / "brain_mask.nii.gz"
    grid, aff = working_grid(shape=shape)
    pts = grid_points(grid, aff)
    _, brain = resample_template(grid, aff)
    dis = disease_field().log_jacobian(pts).reshape(grid).astype(np.float32)
    age = age_field().log_jacobian(pts).reshape(grid).astype(np.float32)
    mask_path = save_image(brain, aff, folder / "brain_mask.nii.gz", force=True, dtype=None)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        patient = i % 2 == 1
        sev = float(rng.uniform(0.5, 1.5)) if patient else 0.0
        az = 0.5 * (1 if patient else -1) + np.sqrt(0.75) * float(rng.standard_normal())
        m = sev * dis + az * age + noise * rng.standard_normal(grid, dtype=np.float32)
        name = f"sub-{i:05d}_space-{SPACE}_desc-logjacobian.nii"
        save_image(np.where(brain, m, 0).astype(np.float32), aff, folder / name, force=True)
        rows.append({"participant_id": f"{i:05d}", "map": name, "label": "patient" if patient else "control", "age": round(70 + 8 * az, 3)})
    pd.DataFrame(rows).to_csv(table, sep="\t", index=False)
    return table, mask_path


def run(which: str, table: Path, out: Path, mask: Path, trace: bool = False) -> dict:
    res = subprocess.run([sys.executable, "-c", RUNNER, which, str(table), str(out), str(mask), "1" if trace else "0"], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{which} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def warm(folder: Path) -> None:
    for p in folder.glob("*.nii"):
        p.read_bytes()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/neurointerp-bench-group-map"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "group_map.json")
    ap.add_argument("--n-small", type=int, default=200)
    ap.add_argument("--n-large", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64, help="grid size (size^3)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    shape = (args.size,) * 3

    t0 = time.perf_counter()
    small, mask = make_maps(args.workdir / f"n{args.n_small}", args.n_small, shape)
    large, _ = make_maps(args.workdir / f"n{args.n_large}", args.n_large, shape, seed=1)
    gen_s = time.perf_counter() - t0
    warm(small.parent)

    times = {"neurointerp": [], "nilearn": []}
    imports = {"neurointerp": [], "nilearn": []}
    for _ in range(args.repeats):
        for which in ("neurointerp", "nilearn"):
            r = run(which, small, args.workdir / f"out-{which}", mask)
            times[which].append(r["seconds"])
            imports[which].append(r["import_seconds"])
    # same t map?
    import nibabel as nib

    ours = nib.load(str(args.workdir / "out-neurointerp" / "group" / "space-MNI152NLin2009aSym_desc-patientVScontrolT_statmap.nii.gz")).get_fdata()
    ref = nib.load(str(args.workdir / "out-nilearn" / "nilearn_t.nii.gz")).get_fdata()
    m = nib.load(str(mask)).get_fdata() > 0
    max_diff = float(np.max(np.abs(ours[m] - ref[m])))

    mem_small = run("neurointerp", small, args.workdir / "out-mem-small", mask, trace=True)
    warm(large.parent)
    mem_large = run("neurointerp", large, args.workdir / "out-mem-large", mask, trace=True)

    best_ours, best_nl = min(times["neurointerp"]), min(times["nilearn"])
    result = {
        "benchmark": "group_map",
        "grid": list(shape),
        "mask_voxels": int(m.sum()),
        "design": "intercept + label + age; contrast patient - control",
        "time": {
            "n_maps": args.n_small,
            "neurointerp_group_map_s": times["neurointerp"],
            "nilearn_SecondLevelModel_s": times["nilearn"],
            "import_s": imports,
            "speedup_best": best_nl / best_ours,
            "speedup_best_including_imports": (best_nl + min(imports["nilearn"])) / (best_ours + min(imports["neurointerp"])),
            "target_speedup": 10.0,
            "max_abs_t_difference": max_diff,
        },
        "memory": {
            "n_small": args.n_small,
            "n_large": args.n_large,
            "small": mem_small,
            "large": mem_large,
            "rss_ratio": mem_large["maxrss_mb"] / mem_small["maxrss_mb"],
            "traced_ratio": mem_large["traced_peak_mb"] / mem_small["traced_peak_mb"],
            "target_ratio": 1.5,
        },
        "data_generation_s": gen_s,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
