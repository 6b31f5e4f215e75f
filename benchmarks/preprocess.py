"""Seconds per subject and registration accuracy: ``neurointerp preprocess`` vs a Clinica-style reference.

Input: the real whole-head 1 mm mean T1 that the ``pydeface`` wheel ships
(``pydeface/data/mean_reg2mean.nii.gz``, 176x256x256), as is (``plain``) and re-posed by a
known rigid transform written into its affine (``posed``: 8/-6/5 degrees, 6/-8/5 mm; the
voxels are untouched, so nothing is lost to interpolation).

* ``neurointerp`` -- the default pipeline (RAS, N4 at 4 mm, deepbet, affine at 3 mm, 64^3 grid,
  z-scores, QC PNG, sidecar), all outputs written.
* ``reference`` -- Clinica ``t1-linear``'s recipe in antspyx: N4 on the full 1 mm image
  (antspyx defaults, shrink 4 -- faster than the ANTs CLI default shrink 1 that Clinica's
  nipype node uses) then ``antsRegistrationSyN[a]`` (rigid + affine, MI, 8x4x2x1 levels) of
  the whole head to the 1 mm template, no skull stripping. The only MNI 2009 template shipped
  offline is nilearn's skull-stripped one, so the head is registered to a stripped template.
* ``reference_stripped`` (``--stripped-reference``) -- the same with the deepbet brain as moving
  image: the reference given the brain extraction, to separate speed from skull stripping.

Accuracy, the same for every method: the subject's brain mask (deepbet, computed once on the
native image) and the native image are carried into template space by each method's
forward transform, at 1 mm and on the 64^3 working grid; reported: Dice with the template
brain mask, and NCC with the template inside it. Both methods start with ITK/torch at 2 threads.

Usage: ``python benchmarks/preprocess.py [--out results.json] [--threads 2] [--subjects plain posed]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/preprocess.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--subjects", nargs="+", default=["plain", "posed"], choices=["plain", "posed"])
    parser.add_argument("--stripped-reference", action="store_true", help="Also time the reference on the deepbet brain.")
    parser.add_argument("--keep", type=Path, default=None, help="Keep the work folder here.")
    args = parser.parse_args(argv)

    from neurointerp.preprocess.antsio import set_threads

    set_threads(args.threads)
    import nibabel as nib
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from neurointerp.atlases import load_template, resample_template, template_file, working_grid
    from neurointerp.preprocess import run_preprocess
    from neurointerp.preprocess.antsio import import_ants, to_ants
    from neurointerp.preprocess.brain_extraction import deepbet_mask
    from neurointerp.preprocess.intensity import reorient_ras
    from neurointerp.preprocess.registration import to_grid

    ants = import_ants(seed=0)
    import pydeface

    head_file = Path(pydeface.__file__).parent / "data" / "mean_reg2mean.nii.gz"
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ni-bench-pp-"))
    work.mkdir(parents=True, exist_ok=True)

    t1, tmask, taff = load_template()
    tpl_1mm = to_ants(t1, taff)
    shape, grid_aff = working_grid(shape=(64, 64, 64))
    tpl_grid, tmask_grid = resample_template(shape, grid_aff)

    def ncc(a, b, m):
        a, b = a[m].astype(np.float64), b[m].astype(np.float64)
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    def dice(a, b):
        return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))

    def accuracy(native, native_aff, brain_mask, transform):
        out = {}
        warped = ants.apply_transforms(tpl_1mm, to_ants(native, native_aff), [transform], interpolator="linear").numpy()
        wmask = ants.apply_transforms(tpl_1mm, to_ants(brain_mask.astype(np.float32), native_aff), [transform], interpolator="linear").numpy() > 0.5
        out["dice_1mm"] = round(dice(wmask, tmask), 4)
        out["ncc_1mm"] = round(ncc(warped, t1, tmask), 4)
        g = to_grid(native, native_aff, transform, shape, grid_aff)
        gm = to_grid(brain_mask.astype(np.float32), native_aff, transform, shape, grid_aff) > 0.5
        out["dice_64"] = round(dice(gm, tmask_grid), 4)
        out["ncc_64"] = round(ncc(g, tpl_grid, tmask_grid), 4)
        return out

    # the subjects
    base = nib.load(str(head_file))
    subjects = {}
    for name in args.subjects:
        affine = base.affine.copy()
        if name == "posed":
            from neurointerp.synth.deformation import rotation_matrix

            pose = np.eye(4)
            pose[:3, :3] = rotation_matrix([8.0, -6.0, 5.0])
            pose[:3, 3] = [6.0, -8.0, 5.0]
            affine = pose @ affine
        path = work / f"sub-{name}_T1w.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(base.dataobj, dtype=np.float32), affine), str(path))
        subjects[name] = path

    results = {"subjects": {}, "device": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(), "threads": args.threads}}
    for name, path in subjects.items():
        img = nib.load(str(path))
        native, native_aff = reorient_ras(img.get_fdata(dtype=np.float32), img.affine)
        eval_mask = deepbet_mask(native, native_aff)  # also warms deepbet up, outside the timings
        rec = {"input": str(head_file), "shape": list(img.shape), "brain_volume_ml": round(float(eval_mask.sum()) * float(abs(np.linalg.det(native_aff[:3, :3]))) / 1000, 1)}

        # ours: the whole default pipeline, all outputs written
        out = work / f"ours-{name}"
        shutil.rmtree(out, ignore_errors=True)
        t, c = time.perf_counter(), time.process_time()
        res = run_preprocess(path, out, threads=args.threads)
        ours_s, ours_cpu = time.perf_counter() - t, time.process_time() - c
        side = json.loads(next(out.rglob("*_desc-preproc_T1w.json")).read_text())
        fwd = str(next(out.rglob("*_from-T1w_to-*_xfm.h5")))
        rec["neurointerp"] = {"seconds": round(ours_s, 2), "cpu_seconds": round(ours_cpu, 2), "steps": side["Timings"], "brain_extraction": side["Parameters"]["brain_extraction"], **accuracy(native, native_aff, eval_mask, fwd)}
        assert res.done

        # reference: N4 at full resolution + antsRegistrationSyN[a] of the whole head
        n4_cache = {}

        def reference(moving_mask):
            t, c = time.perf_counter(), time.process_time()
            if "n4" not in n4_cache:  # the same N4 serves both reference variants (timed once)
                n4_cache["n4"] = ants.n4_bias_field_correction(to_ants(native, native_aff))
                n4_cache["seconds"], n4_cache["cpu"] = time.perf_counter() - t, time.process_time() - c
            n4 = n4_cache["n4"]
            t, c = time.perf_counter(), time.process_time()
            moving = n4 * to_ants(moving_mask.astype(np.float32), native_aff) if moving_mask is not None else n4
            prefix = str(work / f"ref-{name}-{'strip' if moving_mask is not None else 'head'}_")
            reg = ants.registration(tpl_1mm, moving, type_of_transform="antsRegistrationSyN[a]", outprefix=prefix)
            t_reg, c_reg = time.perf_counter() - t, time.process_time() - c
            return {
                "seconds": round(n4_cache["seconds"] + t_reg, 2),
                "cpu_seconds": round(n4_cache["cpu"] + c_reg, 2),
                "steps": {"n4": round(n4_cache["seconds"], 2), "registration": round(t_reg, 2)},
                **accuracy(native, native_aff, eval_mask, reg["fwdtransforms"][0]),
            }

        rec["reference"] = reference(None)
        if args.stripped_reference:
            rec["reference_stripped"] = reference(eval_mask)
        rec["speedup"] = round(rec["reference"]["seconds"] / rec["neurointerp"]["seconds"], 2)
        rec["speedup_cpu"] = round(rec["reference"]["cpu_seconds"] / rec["neurointerp"]["cpu_seconds"], 2)
        results["subjects"][name] = rec
        print(json.dumps({name: rec}, indent=1), file=sys.stderr)

    s_ours = [r["neurointerp"]["seconds"] for r in results["subjects"].values()]
    s_ref = [r["reference"]["seconds"] for r in results["subjects"].values()]
    results["summary"] = {
        "neurointerp_seconds_per_subject": round(float(np.mean(s_ours)), 2),
        "reference_seconds_per_subject": round(float(np.mean(s_ref)), 2),
        "speedup": round(float(np.mean(s_ref) / np.mean(s_ours)), 2),
        "speedup_cpu": round(float(np.mean([r["speedup_cpu"] for r in results["subjects"].values()])), 2),
        "load_average_at_end": os.getloadavg()[0],
        "neurointerp_dice_1mm": round(float(np.mean([r["neurointerp"]["dice_1mm"] for r in results["subjects"].values()])), 4),
        "reference_dice_1mm": round(float(np.mean([r["reference"]["dice_1mm"] for r in results["subjects"].values()])), 4),
        "neurointerp_ncc_1mm": round(float(np.mean([r["neurointerp"]["ncc_1mm"] for r in results["subjects"].values()])), 4),
        "reference_ncc_1mm": round(float(np.mean([r["reference"]["ncc_1mm"] for r in results["subjects"].values()])), 4),
    }
    results["template"] = str(template_file())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"], indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
