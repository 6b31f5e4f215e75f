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
from neurointerp.io import add_bidsignore, derivative_path, provenance, save_image, sha256, sidecar_path, write_dataset_description, write_sidecar
from neurointerp.options.core import takes_options
from neurointerp.options.saliency import SaliencyOptions
from neurointerp.runs.subjects import Item

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


#: method parameters that the feature-map outputs use too
_FEATURE_PARAMETERS = ("layer",)


def unused_method_options(o: SaliencyOptions, methods: Sequence[str], feature_kinds: Sequence[str]) -> list[str]:
    """One warning line per method parameter set away from its default that no requested method uses.

    ``saliency --method integrated-gradients --samples 50`` would otherwise ignore ``--samples``
    (SmoothGrad's) without a word, and the user would believe the maps were made with it.
    """
    from neurointerp.attribution.names import METHOD_NAMES
    from neurointerp.attribution.registry import get_method

    lines = []
    takers: dict[str, list[str]] = {}
    for m in METHOD_NAMES:
        for key in get_method(m).defaults:
            takers.setdefault(key, []).append(m)
    used = {key for m in methods for key in get_method(m).defaults}
    if feature_kinds:
        used.update(_FEATURE_PARAMETERS)
    for info in o.infos():
        key = info.name
        if key not in takers or key in used or key == "seed":
            continue
        value = getattr(o, key)
        if value is None or value == info.default:
            continue
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        lines.append(f"{info.flag} {shown}: not used by --method {', '.join([*methods, *feature_kinds])} (it applies to {', '.join(takers[key])}); the maps are made without it")
    return lines


def check_not_trained(clf, table, allow_train: bool) -> None:
    """Refuse (or, with ``allow_train``, warn about) participants the model was trained on."""
    from neurointerp.progress import warn

    trained = set(clf.participant_ids) & set(table.participant_ids)
    if trained and not allow_train:
        ids = ", ".join(sorted(trained)[:5]) + (", ..." if len(trained) > 5 else "")
        raise InputError(f"{table.path}: " + TRAINED_ON_MESSAGE.format(n=len(trained), ids=ids))
    if trained:
        warn(f"explaining {len(trained)} participants the model was trained on (--allow-train)")


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


@takes_options(SaliencyOptions)
def run_saliency(o: SaliencyOptions) -> Path:
    """Attribution maps for every subject of ``cohort``; returns the output folder.

    Same arguments as ``neurointerp saliency``. ``target`` is a class name of the model
    (default: each subject's predicted class). ``ground_truth`` is a NIfTI on the maps' grid or
    the name of a cohort column holding one per subject. ``atlas``: a registry atlas name or a
    label image (with ``labels``) for the region tables; ``auto`` is AAL2 for maps in MNI152
    space, none otherwise; ``none`` turns them off. ``native``: also write each map in the
    subject's native T1w space, through the inverse transform that ``preprocess`` saved next
    to the image. ``resample_to``: also write each map on the grid of that NIfTI file (e.g. the
    1 mm template), trilinear.

    Runs through the per-subject runner (:mod:`neurointerp.runs`): subjects whose maps exist from
    the same inputs and options are skipped, a subject that fails is listed in ``failures.tsv``
    while the others finish, and the task that finishes the cohort writes the group outputs.
    """
    import torch

    from neurointerp.attribution.registry import get_method
    from neurointerp.confound.gate import GRADIENT_METHODS
    from neurointerp.io import load_image, read_cohort
    from neurointerp.models.checkpoint import load_checkpoint
    from neurointerp.runs import claim_folder, run_items
    from neurointerp.runs.subjects import pending_items
    from neurointerp.train.device import set_threads

    from neurointerp.attribution.names import FEATURE_OUTPUTS

    requested = list(dict.fromkeys(o.method))
    feature_kinds = [m for m in requested if m in FEATURE_OUTPUTS]  # another output kind (not attribution maps)
    methods = [m for m in requested if m not in FEATURE_OUTPUTS]
    for m in methods:
        get_method(m)
    params_all = dict(layer=o.layer, baseline=o.baseline, steps=o.steps, samples=o.samples, noise_level=o.noise_level, window=o.window, stride=o.stride, fill=o.fill, epsilon=o.epsilon)
    params_all.update(perturbation=o.perturbation, blur_sigma=o.blur_sigma, lambda1=o.lambda1, beta1=o.beta1, lambda2=o.lambda2, beta2=o.beta2,
                      iterations=o.iterations, mask_lr=o.mask_lr, mask_scale=o.mask_scale, jitter=o.jitter, swap_by=o.swap_by,
                      swap_references=o.swap_references, reference=None if o.reference is None else str(Path(o.reference).resolve()),
                      segments=o.segments, n_segments=o.n_segments, n_samples=o.n_samples, kernel_width=o.kernel_width, ridge=o.ridge, shap_noise=o.shap_noise)
    from neurointerp.progress import warn

    for line in unused_method_options(o, methods, feature_kinds):
        warn(line)
    set_threads(o.threads)
    torch.manual_seed(o.seed)
    clf = load_checkpoint(o.model, device=o.device)
    from neurointerp.models.skill import require_skill  # skill gate (issue #21)

    require_skill(clf, o.allow_unvalidated, command="saliency", path=o.model)
    spec = clf.spec
    from neurointerp.attribution.registry import check_score, needs_reference, needs_regions

    for m in methods:
        check_score(m, o.score, clf.task)
    if clf.task == "regression" and o.target is not None:
        raise InputError("--target is for classifiers; a regression model explains its output")
    target_index = None
    if o.target is not None:
        if o.target not in clf.classes:
            raise InputError(f"--target '{o.target}': the model's classes are {', '.join(clf.classes)}")
        target_index = clf.classes.index(o.target)
    gate_mask, gate_layer = (None, None)
    if o.confounder_mask is not None:
        gate_mask, gate_layer = load_confounder_mask(o.confounder_mask)
        bad = [m for m in methods if m not in GRADIENT_METHODS]
        if bad:
            raise InputError(f"--confounder-mask needs gradient-based methods; {', '.join(bad)} cannot be partially back-propagated")
    feature_options = dict(channels=None if o.channels is None else list(o.channels), steps=o.opt_steps, lr=o.opt_lr, l2=o.opt_l2,
                           tv=o.opt_tv, jitter=o.opt_jitter, blur_sigma=o.opt_blur)
    if feature_kinds:  # before any check that reads the cohort: a refused output kind is named first
        from neurointerp.attribution.featureoutputs import check_feature_request

        check_feature_request(clf, feature_kinds, layer=o.layer, options=feature_options, confounder_mask=o.confounder_mask)
    from neurointerp.attribution.applicability import check_methods_apply

    check_methods_apply(clf.model, methods, score=o.score, layer=o.layer)
    table = read_cohort(o.cohort, require_label=False)
    check_not_trained(clf, table, o.allow_train)
    if gate_mask is not None and len(table):  # Grad-CAM/CAM read at or after the gate: their maps would not change
        from neurointerp.confound.gate import check_gate_reaches, check_mask_fits

        x0 = clf.prepare(spec.load_row(table, 0).data[None])
        check_gate_reaches(clf.model, x0, methods, o.layer, gate_layer)
        check_mask_fits(clf.model, x0, gate_mask, gate_layer, o.confounder_mask, o.model)  # once, before any subject
    feature_layer = o.layer
    if feature_kinds:
        from neurointerp.attribution.featureoutputs import feature_map_path, region_table_path, write_feature_outputs

        if "feature-maps" in feature_kinds and feature_layer is None:
            from neurointerp.attribution.featuremaps import default_feature_layer

            feature_layer = default_feature_layer(clf.model, clf.prepare(spec.load_row(table, 0).data[None]))
    atlas_data = None
    if o.atlas is not None and str(o.atlas).lower() != "none" and spec.ndim == 3:
        from neurointerp.atlases import resolve_atlas

        name = "AAL2" if str(o.atlas).lower() == "auto" else o.atlas
        if str(o.atlas).lower() != "auto" or spec.space.upper().startswith("MNI152"):
            atlas_data = resolve_atlas(name, spec.shape, spec.affine, labels=o.labels)
    for m in methods:  # every method that works on atlas regions
        if needs_regions(m, params_all) and atlas_data is None:
            raise InputError(f"--method {m} needs an atlas on the model's grid (--atlas NAME, or --atlas img.nii.gz --labels t.tsv)")
    reference_set = None
    if any(needs_reference(m, params_all) for m in methods):
        from neurointerp.attribution.reference import load_reference

        reference_set = load_reference(clf, o.reference if o.reference is not None else table, seed=o.seed)
    target_grid = None
    if o.resample_to is not None:
        ref = load_image(o.resample_to, allow_empty=True)
        target_grid = (ref.shape, ref.affine)
    truth_mask_data = None
    if o.truth_mask is not None:
        from neurointerp.io.headers import load_mask_like  # unreadable / other grid -> one line, exit 2

        truth_mask_data = load_mask_like(o.truth_mask, spec.shape, spec.affine, "--truth-mask")
    truth_file = None
    if o.ground_truth is not None and o.ground_truth not in table.frame.columns:
        truth_file = Path(o.ground_truth)
        if not truth_file.is_file():
            raise InputError(f"--ground-truth {o.ground_truth}: neither a file nor a column of {table.path}")

    out = Path(o.out)
    cfree = gate_mask is not None
    has_ses = "session_id" in table.frame.columns
    # None (an option left unset) is the method's default, recorded as such
    method_params = {m: {k: (get_method(m).defaults[k] if v is None else v) for k, v in params_all.items() if k in get_method(m).defaults} for m in methods}
    res_entity = None  # --resample-to: the label of that grid (never the one of the model's grid)
    if target_grid is not None:
        from neurointerp.io import resolution_label

        res_entity = resolution_label(target_grid[1]) or ""
        if res_entity in {_res(table, i) for i in range(len(table))}:  # same voxel size, another grid: the names must differ
            res_entity += "x".join(str(int(k)) for k in target_grid[0])

    items = []
    for i in range(len(table)):
        pid = table.participant_ids[i]
        ses = (str(table.frame.loc[i, "session_id"]) or None) if has_ses else None
        outputs, maps = [], []
        for m in methods:
            main = _map_path(out, table, i, m, spec.space, cfree, has_ses)
            maps.append(main)
            outputs += [main, sidecar_path(main)]
            desc = method_desc(m, cfree)
            if cfree:
                diff = _derivative(out, pid, ses, spec.space, method_desc(m, suffix="cdiff"), res=_res(table, i))
                outputs += [diff, sidecar_path(diff)]
            if res_entity is not None:
                rp = _derivative(out, pid, ses, spec.space, desc, res=res_entity)
                outputs += [rp, sidecar_path(rp)]
            if o.native:
                npath = _derivative(out, pid, ses, None, desc)
                outputs += [npath, sidecar_path(npath)]
        if "feature-maps" in feature_kinds:
            fm = feature_map_path(out, pid, ses, spec.space, feature_layer, _res(table, i))
            outputs += [fm, sidecar_path(fm)] + ([region_table_path(fm, atlas_data[2])] if atlas_data is not None and spec.ndim == 3 else [])
        inputs = [table.images[i]]
        if o.ground_truth is not None and truth_file is None:
            inputs.append(_truth_path(o.ground_truth, table, i))
        key = f"sub-{pid}" + (f"_ses-{ses}" if ses else "")
        items.append(Item(key=key, inputs=inputs, outputs=outputs, maps=maps, share=i, participant_id=pid, session_id=ses or "",
                          where=f"{table.path} row {table.row_of(i)}", image=str(table.images[i]), payload=i))

    run_inputs = {"model": o.model, "confounder_mask": o.confounder_mask, "truth_mask": o.truth_mask, "labels": o.labels,
                  "resample_to": o.resample_to, "ground_truth": truth_file, "reference": o.reference}
    atlas_file = Path(str(o.atlas)) if o.atlas is not None and Path(str(o.atlas)).is_file() else None
    if atlas_file is not None:
        run_inputs["atlas"] = atlas_file
    protect = [o.cohort, *table.images]
    claim = dict(inputs=run_inputs, protect=protect, force=o.force)
    folder = claim_folder(out, "saliency", o.affecting(), dry_run=True, **claim)
    # bad input is refused before anything is written: every image this task will explain
    for it in pending_items(folder, items, o.array_index, o.array_size):
        spec.load_row(table, it.payload)
    folder = claim_folder(out, "saliency", o.affecting(), **claim)
    ckpt_sha = sha256(o.model)

    def process(batch: list[Item]) -> dict:
        from neurointerp.attribution.registry import attribute
        from neurointerp.confound.gate import feature_gate

        rows = [it.payload for it in batch]
        if "feature-maps" in feature_kinds:
            write_feature_outputs(out, clf, table, rows, ["feature-maps"], o.model, layer=feature_layer, atlas=atlas_data, target_index=target_index,
                                  options=feature_options, batch_size=o.batch_size, seed=o.seed, force=True)
        if not methods:
            return {}
        vols = [spec.load_row(table, i) for i in rows]
        x = clf.prepare(np.stack([v.data for v in vols]))
        for m in methods:
            kw = dict(method_params[m])
            if m == "occlusion":
                kw["mask"] = spec.crop_tensor(np.stack([v.data != 0 for v in vols])).astype(bool)
            if m == "smoothgrad":
                kw["seed"] = o.seed
            if m == "region-perturbation":
                kw["regions"] = spec.crop_tensor(atlas_data[0])
            spec_m = get_method(m)  # brain mask, atlas, seed, references
            if "mask" in spec_m.inputs:
                kw["mask"] = spec.crop_tensor(np.stack([v.data != 0 for v in vols])).astype(bool)
            if "regions" in spec_m.inputs and atlas_data is not None:
                kw["regions"] = spec.crop_tensor(atlas_data[0])
            if "seed" in spec_m.defaults:
                kw["seed"] = o.seed
            if reference_set is not None and "reference" in spec_m.inputs:
                kw["reference_set"] = reference_set
            maps, record = attribute(clf.model, x, m, target=target_index, task=clf.task, score=o.score, batch_size=o.batch_size, **kw)
            full = spec.uncrop(maps)
            cmaps = None
            if cfree:
                with feature_gate(clf.model, gate_mask, layer=gate_layer):
                    gated, _ = attribute(clf.model, x, m, target=target_index, task=clf.task, score=o.score, batch_size=o.batch_size, **kw)
                cmaps = spec.uncrop(gated)
            for j, i in enumerate(rows):
                _write_subject_maps(o, out, table, i, m, vols[j], full[j], None if cmaps is None else cmaps[j], record, j, clf, spec,
                                    ckpt_sha, gate_mask, target_grid, res_entity, has_ses, None if reference_set is None else reference_set.source)
        return {}

    def finalize(done: list[Item]) -> None:
        from neurointerp.attribution.group import write_group_outputs

        if methods:
            write_group_outputs(out, table, methods, spec, clf, cfree, has_ses, o.ground_truth, truth_mask_data, atlas=atlas_data)
        model_level = [k for k in feature_kinds if k != "feature-maps"]  # first-layer filters, input optimisation: once per run
        if model_level:
            write_feature_outputs(out, clf, table, [0], model_level, o.model, layer=o.layer, atlas=atlas_data, target_index=target_index,
                                  options=feature_options, batch_size=o.batch_size, seed=o.seed, force=True)

    with folder.writing():
        write_dataset_description(out, "neurointerp saliency", "attribution maps")
        add_bidsignore(out, ["*_attribution.nii.gz", "*_attribution.json", "group", "failures.tsv"])
    run_items(folder, items, process, batch_size=o.batch_size, array_index=o.array_index, array_size=o.array_size, finalize=finalize, label="saliency")
    return out


def _derivative(out: Path, pid: str, ses, space, desc: str, res: str | None = None) -> Path:
    return derivative_path(out, pid, "attribution", session=ses, space=space, res=res, desc=desc)


def _res(table, i: int) -> str | None:
    """The ``res-`` label of subject ``i``'s input image: its maps are on that grid and keep it."""
    from neurointerp.io import res_of

    return res_of(table.images[i])


def _truth_path(column: str, table, i: int) -> Path:
    p = Path(str(table.frame.loc[i, column]))
    return p if p.is_absolute() else table.path.parent / p


def _write_subject_maps(o, out, table, i, m, vol, full, cfree_map, record, j, clf, spec, ckpt_sha, gate_mask, target_grid, res_entity, has_ses, reference_source=None) -> None:
    """The maps of one subject and method (and their confounder-free, resampled and native versions)."""
    tgt = record["Targets"][j]
    rec = provenance(
        "saliency",
        {"method": m, **record["Parameters"], "score": o.score, "target": o.target, "confounder_mask": o.confounder_mask},
        inputs=[table.images[i]],
        seed=o.seed,
        Method=record["Description"],
        TargetClass=clf.classes[tgt] if clf.task != "regression" else None,
        TargetChoice=record["TargetChoice"],
        Score=record["Score"],  # what was explained
        Checkpoint={"path": str(Path(o.model).resolve()), "sha256": ckpt_sha},
        Space=spec.space,
        Signed=record["Signed"],
        Baseline=record["Parameters"].get("baseline"),
    )
    if "References" in record:  # the subjects swapped in
        rec["References"] = {"participants": record["References"][j], "table": reference_source}
    ses = (str(table.frame.loc[i, "session_id"]) or None) if has_ses else None
    pid = table.participant_ids[i]
    if cfree_map is None:
        path = _derivative(out, pid, ses, spec.space, method_desc(m), res=_res(table, i))
        save_image(full, vol.affine, path, header=vol.header, force=True)
        write_sidecar(path, rec, force=True)
        main_map = full
    else:
        path = _derivative(out, pid, ses, spec.space, method_desc(m, True), res=_res(table, i))
        diff_path = _derivative(out, pid, ses, spec.space, method_desc(m, suffix="cdiff"), res=_res(table, i))
        rec["ConfounderMask"] = {"path": str(Path(o.confounder_mask).resolve()), "kept": int(gate_mask.sum()), "features": int(gate_mask.size)}
        save_image(full - cfree_map, vol.affine, diff_path, header=vol.header, force=True)
        write_sidecar(diff_path, {**rec, "Map": "full minus confounder-free: where the confounder acted"}, force=True)
        save_image(cfree_map, vol.affine, path, header=vol.header, force=True)
        write_sidecar(path, rec, force=True)
        main_map = cfree_map
    desc = method_desc(m, cfree_map is not None)
    if target_grid is not None:
        from neurointerp.atlases import resample_to_grid

        tshape, taff = target_grid
        rpath = _derivative(out, pid, ses, spec.space, desc, res=res_entity)
        save_image(resample_to_grid(main_map, vol.affine, tshape, taff), taff, rpath, force=True)
        write_sidecar(rpath, {**rec, "ResampledTo": {"path": str(Path(o.resample_to).resolve()), "shape": list(tshape)}, "Interpolation": "trilinear"}, force=True)
    if o.native:
        npath, nrec = _to_native(out, pid, ses, desc, main_map, vol, spec.space)
        write_sidecar(npath, {**rec, **nrec}, force=True)


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
    return derivative_path(out, table.participant_ids[i], "attribution", session=ses, space=space, res=_res(table, i), desc=method_desc(m, cfree))
