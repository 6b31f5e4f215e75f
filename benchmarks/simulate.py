"""Simulator experiments of papers/simulator-networks-jacobian.txt, bigger than the tests allow.

* ``gaussians`` -- §4.1 / Fig. 3e: NCC with the planted pattern of the simulator's difference
  image X - X_hat (CondConv, and with ``--ablation`` the conventional-convolution pair) and of
  gradient, guided backprop, Grad-CAM and guided Grad-CAM of the same classifier.
* ``brain`` -- §4.2 on ``synth brain`` (template-space anatomy): classifier, warp simulator,
  ``simulate apply``, ``jacobian --inverse``; reports the correlation of the group-mean
  log-Jacobian of injection (and of minus removal) with the planted disease log-Jacobian inside
  the brain mask, the share of subjects whose logit moved by >= delta and the cycle-back error.
  Two calibrations of the same classifier sit beside it: ``first_order_r`` (its steepest smooth
  deformation) and ``direct_field`` -- the paper's objective (hinge logit loss + lambda_phi
  diffusion) minimised over one free displacement field per control by Adam, no network: how far
  the objective itself gets. ``--no-population-field`` runs the paper's U-Net alone; the
  ``translation_share`` of the fields (energy of their mean vector) shows where it goes instead.

Usage::

    python benchmarks/simulate.py gaussians [--n-per-group 512] [--ablation]
    python benchmarks/simulate.py brain [--n 48] [--voxel-size 6] [--epochs 20] [--delta 5] [--lambda-smooth 10] \\
        [--classifier tiny|simnet3d] [--no-population-field] [--interpolation cubic] [--output benchmarks/results/simulate_brain.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from neurointerp.train.arrays import fit_binary_on_arrays


def gaussians(args) -> dict:
    from neurointerp.simulate.synthetic import gaussian_experiment

    t = time.time()
    res = gaussian_experiment(n_per_group=args.n_per_group, seed=args.seed, classifier_epochs=args.classifier_epochs, simulator_epochs=args.epochs, ablation=args.ablation)
    for v in res.values():
        if isinstance(v, dict) and "history" in v:
            v["history"] = v["history"][-1]
    res["seconds"] = time.time() - t
    return res


def brain(args) -> dict:
    import nibabel as nib
    import pandas as pd
    import torch

    from neurointerp.io import load_image, read_cohort
    from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
    from neurointerp.models.classifier import ConvClassifier
    from neurointerp.models.inputs import InputSpec
    from neurointerp.simulate.apply import apply_simulator
    from neurointerp.simulate.jacobian import jacobian_maps
    from neurointerp.simulate.train import train_simulator
    from neurointerp.synth.brain import SPACE, synth_brain

    root = Path(args.work or tempfile.mkdtemp(prefix="simbench"))
    times = {}
    t = time.time()
    synth_brain(root / "data", n_subjects=args.n, voxel_size=args.voxel_size, effect_size=args.effect_size, confound_strength=0.0, confound_size=0.0, noise=args.noise, template_space=True, seed=args.seed, force=True)
    frame = read_cohort(root / "data" / "cohort.csv").frame.copy()
    frame["image"] = [str(root / "data" / p) for p in frame["template_image"]]
    frame = frame.drop(columns=["template_image"])
    clf_frame = frame
    if args.holdout:  # the classifier learns from one half; the simulator is trained and applied on the other
        second = frame.groupby("label").cumcount() % 2 == 1
        clf_frame, frame = frame[~second].reset_index(drop=True), frame[second].reset_index(drop=True)
    frame.to_csv(root / "cohort.csv", index=False)
    clf_frame.to_csv(root / "classifier_cohort.csv", index=False)
    vols = [load_image(p) for p in frame["image"]]
    clf_vols = vols if clf_frame is frame else [load_image(p) for p in clf_frame["image"]]
    if args.classifier == "tiny":
        spec = InputSpec(vols[0].shape, vols[0].affine, space=SPACE, normalize="zscore")
        x = spec.prepare(np.stack([v.data for v in clf_vols]))
        y = torch.tensor((clf_frame["label"] == "patient").to_numpy(np.float32))
        torch.manual_seed(args.seed)
        model = ConvClassifier(spec.model_shape, channels=(4,), hidden=())
        fit_binary_on_arrays(model, x, y, epochs=args.classifier_epochs, batch_size=8, lr=3e-3, weight_decay=args.classifier_wd)
        save_checkpoint(root / "clf.pt", checkpoint_dict(model, spec, "binary", ["control", "patient"], "simnet3d", {"participant_ids": list(clf_frame["participant_id"])}, {}))
    else:  # the classifier `neurointerp train` gives (simnet3d of §4.2, with shift/rotation augmentation)
        import shutil

        from neurointerp.train.loop import train

        result = train(root / "classifier_cohort.csv", root / "clf_train", architecture=args.classifier, folds=0, final=True, epochs=args.classifier_epochs, batch_size=8, lr=1e-3, normalize="zscore", seed=args.seed, threads=args.threads, force=True)
        shutil.copy(result.final_model, root / "clf.pt")
        from neurointerp.models.checkpoint import load_checkpoint

        spec = load_checkpoint(root / "clf.pt").spec
    times["data+classifier"] = time.time() - t
    t = time.time()
    ck = train_simulator(root / "cohort.csv", root / "clf.pt", root / "sim", mode="warp", delta=args.delta, lambda_smooth=args.lambda_smooth, channels=args.sim_channels, fc=32, epochs=args.epochs, batch_size=8, lr=args.lr, population_field=args.population_field, interpolation=args.interpolation, seed=args.seed, force=True)
    times["simulate train"] = time.time() - t
    t = time.time()
    apply_simulator(root / "cohort.csv", ck, root / "clf.pt", root / "apply", force=True)
    times["simulate apply"] = time.time() - t
    t = time.time()
    jacobian_maps(root / "apply" / "fields.tsv", root / "jac", inverse=True, force=True)
    times["jacobian"] = time.time() - t
    logits = pd.read_csv(root / "apply" / "logits.tsv", sep="\t")
    fields = pd.read_csv(root / "apply" / "fields.tsv", sep="\t")
    first_order = _first_order_logjacobian(root, frame, vols)
    truth = nib.load(str(root / "data" / "truth" / f"space-{SPACE}_desc-disease_logjacobian.nii.gz")).get_fdata()
    mask = nib.load(str(root / "data" / "truth" / f"space-{SPACE}_desc-brain_mask.nii.gz")).get_fdata() > 0
    # the classifier's own steepest local deformation (first order, smoothed): how far a perfect
    # simulator of *this* classifier could get -- a diagnostic, not part of the method
    first_order_r = float(np.corrcoef(first_order[mask], truth[mask])[0, 1])
    t = time.time()
    direct_mean, direct_shift = _direct_field(root, frame, vols, args.delta, args.lambda_smooth)
    times["direct field"] = time.time() - t
    res = {"first_order_r_with_planted_logjacobian": first_order_r,
           "direct_field": {"r_with_planted_logjacobian": float(np.corrcoef(direct_mean[mask], truth[mask])[0, 1]), "share_shift_ge_delta": float((direct_shift >= args.delta).mean())},
           "population_field": args.population_field, "interpolation": args.interpolation, "grid": list(spec.shape), "n": args.n, "classifier": args.classifier, "holdout": args.holdout, "classifier_wd": args.classifier_wd, "epochs": args.epochs, "lr": args.lr, "effect_size": args.effect_size, "noise": args.noise, "voxel_size": args.voxel_size, "delta": args.delta, "lambda_smooth": args.lambda_smooth, "seconds": times, "work": str(root)}
    for d, sign in (("inject", 1.0), ("remove", -1.0)):
        sub = logits[logits["direction"] == d]
        res[d] = {
            "n": int(len(sub)),
            "share_shift_ge_delta": float((sub["shift"] >= args.delta).mean()),
            "median_shift": float(sub["shift"].median()),
            "cycle_logit_mae": float((sub["logit_cycle"] - sub["logit_raw"]).abs().mean()),
            "raw_logit_mean": float(sub["logit_raw"].mean()),
            **_field_sizes(fields.loc[fields["direction"] == d, "field"]),
        }
        found = sorted((root / "jac" / "group").glob(f"space-{SPACE}*_desc-{d}mean_logjacobian.nii.gz"))  # [_res-<grid>]
        if len(sub) and len(found) != 1:
            raise SystemExit(f"{root / 'jac' / 'group'}: expected one {d} mean log-Jacobian, found {len(found)}")
        path = found[0] if len(found) == 1 else None
        if path is not None:
            m = nib.load(str(path)).get_fdata()
            res[d]["r_with_planted_logjacobian"] = float(np.corrcoef(sign * m[mask], truth[mask])[0, 1])
            # mean simulated log-Jacobian where the disease shrinks / expands tissue and elsewhere
            # (injection should follow the truth's signs, removal the opposite)
            atrophy, expansion = mask & (truth < -0.05), mask & (truth > 0.05)
            res[d]["mean_logjacobian"] = {
                "planted_atrophy": float(m[atrophy].mean()),
                "planted_expansion": float(m[expansion].mean()),
                "elsewhere": float(m[mask & ~atrophy & ~expansion].mean()),
                "elsewhere_sd": float(m[mask & ~atrophy & ~expansion].std()),
            }
    return res


def _field_sizes(paths) -> dict:
    """Mean over fields of the RMS displacement (mm) and of ``translation_share`` =
    |mean displacement|^2 / mean |displacement|^2 (1: a pure shift)."""
    import nibabel as nib

    rms, shares = [], []
    for p in paths:
        u = nib.load(str(p)).get_fdata().reshape(-1, 3)
        power = (u**2).sum(1).mean()
        rms.append(float(np.sqrt(power)))
        shares.append(float((u.mean(0) ** 2).sum() / max(power, 1e-12)))
    return {"field_rms_mm": float(np.mean(rms)), "translation_share": float(np.mean(shares))}


def _direct_field(root: Path, frame, vols, delta: float, lambda_smooth: float, steps: int = 400, lr: float = 0.01):
    """The paper's injection objective minimised over one free field per control (no network).

    Returns the controls' mean inverse log-Jacobian on the template grid and their logit shifts.
    """
    import torch

    from neurointerp.models.checkpoint import load_checkpoint
    from neurointerp.simulate.jacobian import jacobian_determinant
    from neurointerp.simulate.losses import logit_shift_loss, smoothness_loss
    from neurointerp.simulate.warp import warp

    clf = load_checkpoint(root / "clf.pt")
    model = clf.model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    controls = np.flatnonzero((frame["label"] != "patient").to_numpy())
    x = clf.prepare(np.stack([vols[i].data for i in controls]))
    raw = model(x)[:, 0].detach()
    u = torch.zeros((len(x), x.dim() - 2) + tuple(x.shape[2:]), requires_grad=True)
    opt = torch.optim.Adam([u], lr=lr)
    zeros = torch.zeros(len(x))
    for _ in range(steps):
        # the per-subject objectives summed: each field is its own problem
        loss = logit_shift_loss(raw, model(warp(x, u))[:, 0], zeros, delta) * len(x)
        loss = loss + lambda_smooth * sum(smoothness_loss(u[i : i + 1]) for i in range(len(x)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        shift = (model(warp(x, u))[:, 0] - raw).numpy()
    fields = u.detach().numpy()
    return clf.spec.uncrop(np.mean([-jacobian_determinant(f, log=True) for f in fields], axis=0)), shift


def _first_order_logjacobian(root: Path, frame, vols, sigma: float = 1.0):
    """Mean over controls of -div(G_sigma * (dlogit/dX * grad X)): the log-Jacobian of the classifier's
    steepest smooth pull-back deformation at each control image (what injection should follow)."""
    import torch
    from scipy import ndimage

    from neurointerp.models.checkpoint import load_checkpoint

    clf = load_checkpoint(root / "clf.pt")
    x = clf.prepare(np.stack([v.data for v in vols]))
    x.requires_grad_(True)
    clf.model(x)[:, 0].sum().backward()
    g, img = x.grad[:, 0].numpy(), x.detach()[:, 0].numpy()
    controls = np.flatnonzero((frame["label"] != "patient").to_numpy())
    acc = []
    for i in controls:
        u = [ndimage.gaussian_filter(g[i] * d, sigma) for d in np.gradient(img[i])]
        acc.append(-sum(np.gradient(u[k], axis=k) for k in range(img.ndim - 1)))
    return clf.spec.uncrop(np.mean(acc, axis=0))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", choices=["gaussians", "brain"])
    p.add_argument("--n-per-group", type=int, default=512)
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--voxel-size", type=float, default=6.0)
    p.add_argument("--classifier-epochs", type=int, default=30)
    p.add_argument("--classifier", default="tiny", help="tiny (one conv layer, linear read-out) or an architecture of `train` (simnet3d, cas3d)")
    p.add_argument("--effect-size", type=float, default=3.0)
    p.add_argument("--noise", type=float, default=0.0, help="Rician noise of synth brain (its default: 0.03)")
    p.add_argument("--lr", type=float, default=1e-3, help="simulator learning rate (Adam)")
    p.add_argument("--holdout", action="store_true", help="train the classifier on half of the subjects and the simulator on the other half")
    p.add_argument("--classifier-wd", type=float, default=1e-3, help="weight decay of the tiny classifier")
    p.add_argument("--sim-channels", type=lambda v: [int(c) for c in v.split(",")], default=[4, 8, 16])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--no-population-field", dest="population_field", action="store_false", help="the paper's U-Net alone")
    p.add_argument("--interpolation", default="linear", choices=["linear", "cubic"])
    p.add_argument("--delta", type=float, default=5.0)
    p.add_argument("--lambda-smooth", type=float, default=10.0)
    p.add_argument("--ablation", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default=None)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    res = gaussians(args) if args.experiment == "gaussians" else brain(args)
    text = json.dumps(res, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
