"""``neurointerp saliency``: attribution maps for a cohort, saved in the model's space.

For every subject and method: ``sub-<id>/anat/sub-<id>_space-<space>_desc-<method>_attribution.nii.gz``
on the image's grid with its affine, and a JSON sidecar (method and parameters, target class,
score, checkpoint and input sha256). With a confounder mask from ``confound-test`` the maps are
confounder-free (partial back-propagation) and the difference to the full map is saved too.

Group outputs (once every subject of the cohort has its maps): per-class mean maps, signed and
absolute; a region table per atlas; PNG figures; and, with ``ground_truth``, per-subject NCC of
|map| with the truth and the share of attribution mass inside the truth mask (``scores.tsv``).

Subjects whose maps exist with the same inputs and parameters are skipped, so an interrupted
run or a SLURM array task can simply be resubmitted.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from neurointerp.errors import InputError

TRAINED_ON_MESSAGE = "{n} of the cohort's participants were used to train the model ({ids}); explaining training images shows what the model memorised -- pass --allow-train to do it anyway"


def method_desc(method: str, confounder_free: bool = False, suffix: str = "") -> str:
    """BIDS ``desc`` value of a method (letters and digits only)."""
    return re.sub(r"[^A-Za-z0-9]", "", method) + ("cfree" if confounder_free else "") + suffix


def load_confounder_mask(path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
    """Mask (and layer) written by ``confound-test`` (``mask.json``) or a plain ``.npy``/``.txt`` 0/1 vector."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: confounder mask not found")
    try:
        if path.suffix == ".json":
            obj = json.loads(path.read_text())
            return np.asarray(obj["mask"], dtype=np.uint8), obj.get("layer")
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False).astype(np.uint8).ravel(), None
        return np.loadtxt(path).astype(np.uint8).ravel(), None
    except (ValueError, KeyError, OSError) as exc:
        raise InputError(f"{path}: not a confounder mask ({exc})") from None


def check_not_trained(clf, table, allow_train: bool) -> None:
    """Refuse (or, with ``allow_train``, warn about) participants the model was trained on."""
    from neurointerp.progress import info

    trained = set(clf.participant_ids) & set(table.participant_ids)
    if trained and not allow_train:
        ids = ", ".join(sorted(trained)[:5]) + (", ..." if len(trained) > 5 else "")
        raise InputError(f"{table.path}: " + TRAINED_ON_MESSAGE.format(n=len(trained), ids=ids))
    if trained:
        info(f"warning: explaining {len(trained)} participants the model was trained on (--allow-train)")


def _truth_for(ground_truth, cohort, i: int, shape):
    from neurointerp.io import load_image

    if ground_truth is None:
        return None
    gt = str(ground_truth)
    if gt in cohort.frame.columns:
        p = Path(str(cohort.frame.loc[i, gt]))
        if not p.is_absolute():
            p = cohort.path.parent / p
        vol = load_image(p, ndim=len(shape), allow_empty=True)
    else:
        vol = _cached_truth(gt, len(shape))
    if vol.shape != tuple(shape):
        raise InputError(f"{vol.path}: ground truth grid {vol.shape} differs from the maps' grid {tuple(shape)}")
    return vol.data


_TRUTH_CACHE: dict[tuple[str, int], Any] = {}


def _cached_truth(path: str, ndim: int):
    from neurointerp.io import load_image

    key = (str(Path(path).resolve()), ndim)
    if key not in _TRUTH_CACHE:
        _TRUTH_CACHE[key] = load_image(path, ndim=ndim, allow_empty=True)
    return _TRUTH_CACHE[key]


def run_saliency(
    model: str | os.PathLike,
    cohort: str | os.PathLike,
    out: str | os.PathLike,
    method: Sequence[str] = ("gradient",),
    target: str | None = None,
    score: str = "logit",
    layer: str | None = None,
    baseline: str = "zeros",
    steps: int = 32,
    samples: int = 25,
    noise_level: float = 0.15,
    window: int = 8,
    stride: int = 4,
    fill: float = 0.0,
    epsilon: float = 0.01,
    confounder_mask: str | os.PathLike | None = None,
    ground_truth: str | None = None,
    truth_mask: str | os.PathLike | None = None,
    atlas: str | None = "auto",
    labels: str | os.PathLike | None = None,
    native: bool = False,
    resample_to: str | os.PathLike | None = None,
    allow_train: bool = False,
    allow_unvalidated: bool = False,
    batch_size: int = 8,
    device: str = "auto",
    threads: int | None = None,
    array_index: int | None = None,
    array_size: int | None = None,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Attribution maps for every subject of ``cohort``; returns the output folder.

    Same arguments as ``neurointerp saliency``. ``target`` is a class name of the model
    (default: each subject's predicted class). ``ground_truth`` is a NIfTI on the maps' grid or
    the name of a cohort column holding one per subject. ``atlas``: a registry atlas name or a
    label image (with ``labels``) for the region tables; ``auto`` is AAL2 for maps in MNI152
    space, none otherwise; ``none`` turns them off. ``native``: also write each map in the
    subject's native T1w space, through the inverse transform that ``preprocess`` saved next
    to the image. ``resample_to``: also write each map on the grid of that NIfTI file (e.g. the
    1 mm template), trilinear.
    """
    import torch

    from neurointerp.attribution.registry import attribute, get_method
    from neurointerp.cluster import array_share
    from neurointerp.confound.gate import GRADIENT_METHODS, feature_gate
    from neurointerp.io import (
        add_bidsignore,
        derivative_path,
        load_image,
        prepare_output_dir,
        provenance,
        read_cohort,
        save_image,
        sha256,
        sidecar_path,
        write_dataset_description,
        write_sidecar,
    )
    from neurointerp.models.checkpoint import load_checkpoint
    from neurointerp.progress import info, track
    from neurointerp.train.device import set_threads

    methods = list(dict.fromkeys(method))
    if not methods:
        raise InputError("give at least one --method")
    for m in methods:
        get_method(m)
    params_all = dict(layer=layer, baseline=baseline, steps=steps, samples=samples, noise_level=noise_level, window=window, stride=stride, fill=fill, epsilon=epsilon)
    set_threads(threads)
    torch.manual_seed(seed)
    clf = load_checkpoint(model, device=device)
    from neurointerp.models.skill import require_skill  # skill gate (issue #21)
    require_skill(clf, allow_unvalidated, command="saliency", path=model)
    spec = clf.spec
    if clf.task == "regression" and target is not None:
        raise InputError("--target is for classifiers; a regression model explains its output")
    target_index = None
    if target is not None:
        if target not in clf.classes:
            raise InputError(f"--target '{target}': the model's classes are {', '.join(clf.classes)}")
        target_index = clf.classes.index(target)
    gate_mask, gate_layer = (None, None)
    if confounder_mask is not None:
        gate_mask, gate_layer = load_confounder_mask(confounder_mask)
        bad = [m for m in methods if m not in GRADIENT_METHODS]
        if bad:
            raise InputError(f"--confounder-mask needs gradient-based methods; {', '.join(bad)} cannot be partially back-propagated")
    table = read_cohort(cohort, require_label=False)
    check_not_trained(clf, table, allow_train)
    atlas_data = None
    if atlas is not None and str(atlas).lower() != "none" and spec.ndim == 3:
        from neurointerp.atlases import resolve_atlas

        name = "AAL2" if str(atlas).lower() == "auto" else atlas
        if str(atlas).lower() != "auto" or spec.space.upper().startswith("MNI152"):
            atlas_data = resolve_atlas(name, spec.shape, spec.affine, labels=labels)
    if "region-perturbation" in methods and atlas_data is None:
        raise InputError("--method region-perturbation needs an atlas on the model's grid (--atlas NAME, or --atlas img.nii.gz --labels t.tsv)")
    target_grid = None
    if resample_to is not None:
        ref = load_image(resample_to, allow_empty=True)
        target_grid = (ref.shape, ref.affine)
    truth_mask_data = None
    if truth_mask is not None:
        truth_mask_data = load_image(truth_mask, ndim=spec.ndim).data > 0

    out = prepare_output_dir(out, force=force, marker="dataset_description.json")
    write_dataset_description(out, "neurointerp saliency", "attribution maps")
    add_bidsignore(out, ["*_attribution.nii.gz", "*_attribution.json", "group/"])
    ckpt_sha = sha256(model)
    has_ses = "session_id" in table.frame.columns
    share = array_share(len(table), array_index, array_size)
    method_params = {m: {k: v for k, v in params_all.items() if k in get_method(m).defaults} for m in methods}

    todo: list[tuple[int, str]] = []  # (row index, method)
    for i in share:
        for m in methods:
            path = _map_path(out, table, i, m, spec.space, gate_mask is not None, has_ses)
            if _complete(path, table.images[i], ckpt_sha, method_params[m], target, score, force):
                continue
            # a map without its sidecar is the leftover of a killed run (the sidecar is written
            # last): redo it; a finished map from other inputs or parameters is refused
            if path.exists() and not force and sidecar_path(path).exists():
                raise InputError(f"{path}: exists from a run with other inputs or parameters (use --force to replace it, or another output folder)")
            todo.append((i, m))
    todo_set = set(todo)
    rows = sorted({i for i, _ in todo})
    for start in track(range(0, len(rows), batch_size), description="saliency", total=(len(rows) + batch_size - 1) // batch_size):
        chunk = rows[start : start + batch_size]
        vols = []
        for i in chunk:
            vols.append(spec.load_row(table, i))
        x = clf.prepare(np.stack([v.data for v in vols]))
        for m in methods:
            idx = [k for k, i in enumerate(chunk) if (i, m) in todo_set]
            if not idx:
                continue
            xb = x[idx]
            kw = dict(method_params[m])
            if m == "occlusion":
                kw["mask"] = spec.crop_tensor(np.stack([vols[k].data != 0 for k in idx])).astype(bool)
            if m == "smoothgrad":
                kw["seed"] = seed
            if m == "region-perturbation":
                kw["regions"] = spec.crop_tensor(atlas_data[0])
            maps, record = attribute(clf.model, xb, m, target=target_index, task=clf.task, score=score, batch_size=batch_size, **kw)
            full = spec.uncrop(maps)
            cfree = None
            if gate_mask is not None:
                with feature_gate(clf.model, gate_mask, layer=gate_layer):
                    cmaps, _ = attribute(clf.model, xb, m, target=target_index, task=clf.task, score=score, batch_size=batch_size, **kw)
                cfree = spec.uncrop(cmaps)
            for j, k in enumerate(idx):
                i = chunk[k]
                vol = vols[k]
                tgt = record["Targets"][j]
                rec = provenance(
                    "saliency",
                    {"method": m, **record["Parameters"], "score": score, "target": target, "confounder_mask": confounder_mask},
                    inputs=[table.images[i]],
                    seed=seed,
                    Method=record["Description"],
                    TargetClass=clf.classes[tgt] if clf.task != "regression" else None,
                    TargetChoice=record["TargetChoice"],
                    Score=score,
                    Checkpoint={"path": str(Path(model).resolve()), "sha256": ckpt_sha},
                    Space=spec.space,
                    Signed=record["Signed"],
                    Baseline=record["Parameters"].get("baseline"),
                )
                ses = (str(table.frame.loc[i, "session_id"]) or None) if has_ses else None
                pid = table.participant_ids[i]
                if cfree is None:
                    path = derivative_path(out, pid, "attribution", session=ses, space=spec.space, desc=method_desc(m))
                    save_image(full[j], vol.affine, path, header=vol.header, force=True)
                    write_sidecar(path, rec, force=True)
                    main_map = full[j]
                else:
                    path = derivative_path(out, pid, "attribution", session=ses, space=spec.space, desc=method_desc(m, True))
                    diff_path = derivative_path(out, pid, "attribution", session=ses, space=spec.space, desc=method_desc(m, suffix="cdiff"))
                    rec["ConfounderMask"] = {"path": str(Path(confounder_mask).resolve()), "kept": int(gate_mask.sum()), "features": int(gate_mask.size)}
                    save_image(full[j] - cfree[j], vol.affine, diff_path, header=vol.header, force=True)
                    write_sidecar(diff_path, {**rec, "Map": "full minus confounder-free: where the confounder acted"}, force=True)
                    save_image(cfree[j], vol.affine, path, header=vol.header, force=True)
                    write_sidecar(path, rec, force=True)
                    main_map = cfree[j]
                desc = method_desc(m, cfree is not None)
                if resample_to is not None:
                    from neurointerp.atlases import resample_to_grid

                    tshape, taff = target_grid
                    res = f"{float(np.mean(np.sqrt((taff[:3, :3] ** 2).sum(axis=0)))):g}mm"
                    rpath = derivative_path(out, pid, "attribution", session=ses, space=spec.space, res=res, desc=desc)
                    save_image(resample_to_grid(main_map, vol.affine, tshape, taff), taff, rpath, force=True)
                    write_sidecar(rpath, {**rec, "ResampledTo": {"path": str(Path(resample_to).resolve()), "shape": list(tshape)}, "Interpolation": "trilinear"}, force=True)
                if native:
                    npath, nrec = _to_native(out, pid, ses, desc, main_map, vol, spec.space)
                    write_sidecar(npath, {**rec, **nrec}, force=True)
    missing = [i for i in range(len(table)) for m in methods if not _map_path(out, table, i, m, spec.space, gate_mask is not None, has_ses).exists()]
    if missing:
        info(f"saliency: {len(set(missing))} subjects of the cohort still lack maps (other array tasks); group outputs are written once all exist")
        return out
    from neurointerp.attribution.group import write_group_outputs

    write_group_outputs(out, table, methods, spec, clf, gate_mask is not None, has_ses, ground_truth, truth_mask_data, atlas=atlas_data)
    return out


def _to_native(out: Path, pid: str, ses, desc: str, data, vol, space: str):
    """Write a template-space map in native space with preprocess's inverse transform."""
    from neurointerp.io import derivative_path, load_image, save_image
    from neurointerp.preprocess.registration import to_native

    folder = vol.path.parent
    stem = f"sub-{pid}" + (f"_ses-{ses}" if ses else "")
    inverse = folder / f"{stem}_from-{space}_to-T1w_mode-image_xfm.h5"
    native_ref = folder / f"{stem}_desc-brain_mask.nii.gz"
    if not inverse.exists() or not native_ref.exists():
        raise InputError(f"{vol.path}: --native needs the transforms preprocess writes next to the image ({inverse.name} not found)")
    ref = load_image(native_ref, allow_empty=True)
    native_map = to_native(np.asarray(data, dtype=np.float32), vol.affine, str(inverse), ref.shape, ref.affine)
    path = derivative_path(out, pid, "attribution", session=ses, desc=desc)
    save_image(native_map, ref.affine, path, header=ref.header, force=True)
    return path, {"Space": "T1w (native)", "Transform": str(inverse), "NativeGrid": str(native_ref)}


def _map_path(out: Path, table, i: int, m: str, space: str, cfree: bool, has_ses: bool) -> Path:
    from neurointerp.io import derivative_path

    ses = (str(table.frame.loc[i, "session_id"]) or None) if has_ses else None
    return derivative_path(out, table.participant_ids[i], "attribution", session=ses, space=space, desc=method_desc(m, cfree))


def _complete(path: Path, image: Path, ckpt_sha: str, params: dict, target, score: str, force: bool) -> bool:
    """True if ``path`` exists with a sidecar made from the same inputs and parameters."""
    from neurointerp.io import sha256, sidecar_path

    if force or not path.exists():
        return False
    side = sidecar_path(path)
    try:
        rec = json.loads(side.read_text())
    except (OSError, ValueError):
        return False
    same_input = [r.get("sha256") for r in rec.get("Inputs", [])] == [sha256(image)]
    same_model = rec.get("Checkpoint", {}).get("sha256") == ckpt_sha
    p = rec.get("Parameters", {})
    same_params = all(p.get(k) == v for k, v in params.items() if k != "layer" or v is not None) and p.get("target") == target and p.get("score") == score
    return bool(same_input and same_model and same_params)
