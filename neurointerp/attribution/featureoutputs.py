"""The feature-map output kinds of ``neurointerp saliency`` (not attribution maps).

``--method feature-maps``, ``input-optimisation`` and ``first-layer-filters`` show what the
model computes (review §2.1, §2.2) rather than how much each voxel counts for a class, so they
are written under their own suffixes, never ``_attribution``, and no group mean, region
ranking or ground-truth score of attribution maps is computed from them:

Per subject (next to the attribution maps; ``<layer>`` is the layer's module name with
everything but letters and digits removed, e.g. ``encoderstack2act``)::

    sub-<id>/[ses-<s>/]anat/sub-<id>[_ses-<s>]_space-<tpl>_desc-<layer>_featuremaps.nii.gz
        4D float32 (x, y, z, channel) on the model's grid and affine: the layer's channel
        activations, (tri)linearly upsampled from the layer's grid (as Grad-CAM maps); a 2D
        model's maps are (x, y, 1, channel)
    ..._desc-<layer>_featuremaps.json                 sidecar (layer, its grid, channels, checkpoint, inputs)
    ..._desc-<layer>_atlas-<atlas>_featuremaps.tsv    with an atlas: per channel the mean
        activation in every region, ranked (channel, rank, atlas, index, name, n_voxels,
        mean_activation, relative_activation)

Model level (one set per model, written by the array task that processes the cohort's first
row; in ``group/``)::

    group/space-<tpl>_desc-<layer>_optimisedinput.nii.gz      4D: one optimised image per channel
    group/space-<tpl>_desc-classscore_optimisedinput.nii.gz   4D: one per class (without --layer)
    group/space-<tpl>_desc-start_optimisedinput.nii.gz        the start: the brain-masked cohort mean
    (each with a .json sidecar: objective at start and end, regularisers, optimiser, seed)
    group/desc-<layer>_filters.nii.gz    4D (kx, ky, kz, filter): the first convolution's kernels;
        the affine maps a kernel voxel to its offset in mm from the voxel the filter writes to
    group/desc-<layer>_filters.tsv       one row per filter (l2_norm, sum, centre_weight, min, max)

Maps are on the model's input grid after normalisation (z-scores where the model was trained
on z-scored images). Everything is skipped when its sidecar shows the same inputs, checkpoint
and parameters, and refused (``--force`` to replace) when made from others.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from neurointerp.errors import InputError
from neurointerp.io.derivatives import common_res, res_of

BIDSIGNORE = ["*_featuremaps.nii.gz", "*_featuremaps.json", "*_featuremaps.tsv"]


def layer_desc(layer: str | None) -> str:
    """BIDS ``desc`` value of a layer (letters and digits), ``classscore`` for the class scores."""
    if layer is None:
        return "classscore"
    return re.sub(r"[^A-Za-z0-9]", "", str(layer)) or "layer"


def feature_map_path(out: Path, pid: str, session: str | None, space: str, layer: str, res: str | None = None) -> Path:
    """``res``: the input image's ``res-`` label (the maps are on its grid)."""
    from neurointerp.io import derivative_path

    return derivative_path(out, pid, "featuremaps", session=session, space=space, res=res, desc=layer_desc(layer))


def region_table_path(fm_path: Path, atlas_name: str) -> Path:
    """``..._desc-<layer>_featuremaps.nii.gz`` -> ``..._desc-<layer>_atlas-<name>_featuremaps.tsv``."""
    atlas = re.sub(r"[^A-Za-z0-9]", "", atlas_name) or "atlas"
    return fm_path.with_name(fm_path.name.replace("_featuremaps.nii.gz", f"_atlas-{atlas}_featuremaps.tsv"))


def _to_nifti_4d(maps: np.ndarray, ndim: int) -> np.ndarray:
    """``(C, *spatial)`` -> ``(*spatial, C)``; a 2D grid gets a singleton third axis."""
    vol = np.moveaxis(np.asarray(maps, dtype=np.float32), 0, -1)
    if ndim == 2:
        vol = vol[:, :, None, :]
    return vol


def _done(path: Path, record_keys: dict[str, Any], force: bool) -> bool:
    """True if ``path`` and its sidecar exist with the same ``record_keys`` values; a finished
    output from other inputs or parameters is refused unless ``force``."""
    from neurointerp.io import sidecar_path

    side = sidecar_path(path)
    if force or not path.exists() or not side.exists():
        return False
    try:
        rec = json.loads(side.read_text())
    except (OSError, ValueError):
        return False
    if all(rec.get("Key", {}).get(k) == v for k, v in record_keys.items()):
        return True
    raise InputError(f"{path}: exists from a run with other inputs or parameters (use --force to replace it, or another output folder)")


def write_feature_outputs(
    out: Path,
    clf,
    table,
    rows: Sequence[int],
    kinds: Sequence[str],
    checkpoint,
    layer: str | None = None,
    atlas=None,
    target_index: int | None = None,
    options: dict[str, Any] | None = None,
    batch_size: int = 8,
    seed: int = 0,
    force: bool = False,
) -> list[Path]:
    """Write the feature-map output kinds ``kinds`` for the cohort ``rows`` this task owns.

    ``clf``: a loaded checkpoint (:func:`~neurointerp.models.checkpoint.load_checkpoint`);
    ``table``: the cohort; ``checkpoint``: its path (sha256 in the sidecars); ``atlas``:
    ``(labels on the model's full grid, names, atlas name)`` or None; ``options``: ``channels``
    (list, default all) and the input optimisation parameters (``steps``, ``lr``, ``l2``, ``tv``,
    ``jitter``, ``blur_sigma``, ``blur_every``; see :mod:`neurointerp.attribution.inputopt`).
    Returns the paths written.
    """
    from neurointerp.attribution.names import FEATURE_OUTPUTS
    from neurointerp.io import add_bidsignore, sha256

    unknown = [k for k in kinds if k not in FEATURE_OUTPUTS]
    if unknown:
        raise InputError(f"unknown feature output '{unknown[0]}' (choose {', '.join(FEATURE_OUTPUTS)})")
    options = dict(options or {})
    add_bidsignore(out, BIDSIGNORE + ["*_optimisedinput.nii.gz", "*_optimisedinput.json", "*_filters.nii.gz", "*_filters.json", "*_filters.tsv"])
    ckpt_sha = sha256(checkpoint)
    written: list[Path] = []
    if "feature-maps" in kinds:
        written += _subject_feature_maps(out, clf, table, rows, checkpoint, ckpt_sha, layer, atlas, options.get("channels"), batch_size, force)
    if 0 in set(rows):  # model-level outputs: the task holding the cohort's first row
        written += write_model_outputs(out, clf, table, kinds, checkpoint, layer=layer, target_index=target_index, options=options, batch_size=batch_size, seed=seed, force=force)
    return written


def _subject_feature_maps(out, clf, table, rows, checkpoint, ckpt_sha, layer, atlas, channels, batch_size, force) -> list[Path]:
    from neurointerp.attribution.featuremaps import default_feature_layer
    from neurointerp.io import sha256
    from neurointerp.progress import track

    spec = clf.spec
    has_ses = "session_id" in table.frame.columns
    rows = list(rows)
    if not rows:
        return []
    resolved = layer or default_feature_layer(clf.model, clf.prepare(spec.load_row(table, rows[0]).data[None]))
    pending, keys = [], {}
    for i in rows:
        ses = (str(table.frame.loc[i, "session_id"]) or None) if has_ses else None
        path = feature_map_path(out, table.participant_ids[i], ses, spec.space, resolved, res_of(table.images[i]))
        key = {"input_sha256": sha256(table.images[i]), "checkpoint_sha256": ckpt_sha, "layer": resolved, "channels": None if channels is None else [int(c) for c in channels]}
        if not _done(path, key, force):
            pending.append(i)
            keys[i] = key
    written: list[Path] = []
    for start in track(range(0, len(pending), batch_size), description="feature maps", total=(len(pending) + batch_size - 1) // batch_size):
        chunk = pending[start : start + batch_size]
        vols = [spec.load_row(table, i) for i in chunk]
        written += write_feature_maps_batch(out, clf, table, chunk, vols, resolved, channels, atlas, checkpoint, ckpt_sha, keys=keys)
    return written


def feature_map_outputs(out: Path, table, i: int, space: str, layer: str, atlas_name: str | None = None) -> list[Path]:
    """Every file ``feature-maps`` writes for cohort row ``i`` (for a runner's item outputs)."""
    from neurointerp.io import sidecar_path

    has_ses = "session_id" in table.frame.columns
    ses = (str(table.frame.loc[i, "session_id"]) or None) if has_ses else None
    path = feature_map_path(out, table.participant_ids[i], ses, space, layer, res_of(table.images[i]))
    return [path, sidecar_path(path)] + ([region_table_path(path, atlas_name)] if atlas_name else [])


def write_feature_maps_batch(out, clf, table, rows, vols, layer: str, channels, atlas, checkpoint, ckpt_sha: str, keys=None) -> list[Path]:
    """Write the feature maps (and region tables) of cohort ``rows`` whose volumes ``vols`` are
    loaded (``clf.spec.load_row``); no skipping: the caller decides what is due. The sidecar is
    written last. ``keys``: optional ``{row: dict}`` stored as the sidecar's ``Key``."""
    from neurointerp.attribution.featuremaps import channel_region_table, channel_subset, layer_activations
    from neurointerp.attribution.layers import to_input_grid
    from neurointerp.io import provenance, save_image, write_sidecar, write_table

    spec = clf.spec
    has_ses = "session_id" in table.frame.columns
    x = clf.prepare(np.stack([v.data for v in vols]))
    acts = layer_activations(clf.model, x, layer, batch_size=len(rows))
    chans = channel_subset(acts.shape[1], channels)
    written: list[Path] = []
    for j, i in enumerate(rows):
        ses = (str(table.frame.loc[i, "session_id"]) or None) if has_ses else None
        path = feature_map_path(out, table.participant_ids[i], ses, spec.space, layer, res_of(table.images[i]))
        full = spec.uncrop(to_input_grid(acts[j : j + 1, chans], x.shape[2:])[0].numpy())  # (C, *grid)
        vol = vols[j]
        rec = provenance(
            "saliency feature-maps",
            {"method": "feature-maps", "layer": layer, "channels": chans},
            inputs=[table.images[i]],
            Kind="feature maps (channel activations of a layer; not an attribution map)",
            Layer=layer,
            LayerGrid=list(acts.shape[2:]),
            Channels=chans,
            Axis4="channel",
            Interpolation="(tri)linear from the layer's grid, align_corners=False (as Grad-CAM)",
            Intensity="the model's input after its normalisation",
            Checkpoint={"path": str(Path(checkpoint).resolve()), "sha256": ckpt_sha},
            Space=spec.space,
            **({"Key": keys[i]} if keys and i in keys else {}),
        )
        save_image(_to_nifti_4d(full, spec.ndim), vol.affine, path, header=vol.header, force=True)
        written.append(path)
        if atlas is not None and spec.ndim == 3:
            labels_vol, names, atlas_name = atlas
            tpath = region_table_path(path, atlas_name)
            write_table(tpath, channel_region_table(full, labels_vol, names, atlas_name, channels=chans), force=True)
            written.append(tpath)
        write_sidecar(path, rec, force=True)  # last: marks the subject complete
    return written


def _optimised_input(group: Path, space: str, res: str | None, desc: str) -> Path:
    from neurointerp.io import bids_name

    return group / bids_name(None, "optimisedinput", space=space, res=res, desc=desc)


def model_level_outputs(out: Path, space: str, kinds: Sequence[str], layer: str | None, first_conv_layer: str, res: str | None = None) -> list[Path]:
    """Files the model-level kinds write (``group/``), for a runner's finalize outputs; ``res``: the inputs' grid label."""
    paths: list[Path] = []
    group = Path(out) / "group"
    if "first-layer-filters" in kinds:
        stem = f"desc-{layer_desc(first_conv_layer)}_filters"
        paths += [group / f"{stem}.nii.gz", group / f"{stem}.tsv", group / f"{stem}.json"]
    if "input-optimisation" in kinds:
        for d in (layer_desc(layer), "start"):
            img = _optimised_input(group, space, res, d)
            paths += [img, img.with_name(img.name.replace(".nii.gz", ".json"))]
    return paths


def write_model_outputs(out: Path, clf, table, kinds: Sequence[str], checkpoint, layer: str | None = None, target_index: int | None = None, options: dict[str, Any] | None = None, batch_size: int = 8, seed: int = 0, force: bool = False) -> list[Path]:
    """The model-level kinds (first-layer filters, input optimisation) -- once per run, e.g. in
    the runner's finalize step; skipped when done from the same checkpoint and parameters."""
    from neurointerp.io import sha256

    ckpt_sha = sha256(checkpoint)
    written: list[Path] = []
    if "first-layer-filters" in kinds:
        written += _filters(out, clf, checkpoint, ckpt_sha, force)
    if "input-optimisation" in kinds:
        written += _input_optimisation(out, clf, table, checkpoint, ckpt_sha, layer, target_index, dict(options or {}), batch_size, seed, force)
    return written


def _filters(out, clf, checkpoint, ckpt_sha, force) -> list[Path]:
    from neurointerp.attribution.featuremaps import filter_table, first_layer_filters
    from neurointerp.io import provenance, save_image, write_sidecar, write_table

    filters, affine, layer = first_layer_filters(clf.model, clf.spec.affine)
    path = out / "group" / f"desc-{layer_desc(layer)}_filters.nii.gz"
    key = {"checkpoint_sha256": ckpt_sha, "layer": layer}
    if _done(path, key, force):
        return []
    vol = np.moveaxis(filters, 0, -1)
    if clf.spec.ndim == 2:
        vol = vol[:, :, None, :]
    save_image(vol, affine, path, force=True)
    tpath = path.with_name(path.name.replace(".nii.gz", ".tsv"))
    write_table(tpath, filter_table(filters, layer), force=True)
    rec = provenance(
        "saliency first-layer-filters",
        {"method": "first-layer-filters"},
        Kind="first-layer convolution kernels (weight visualisation; not an attribution map)",
        Layer=layer,
        Axis4="filter (output channel major, then input channel)",
        Affine="kernel voxel o -> offset in mm from the output voxel: conv(x)[p] = bias + sum_o w[o] x[p + o - padding]",
        Checkpoint={"path": str(Path(checkpoint).resolve()), "sha256": ckpt_sha},
        Key=key,
    )
    write_sidecar(path, rec, force=True)
    return [path, tpath]


def cohort_start_image(clf, table, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Brain-masked mean of the cohort's images as model input ``(1, *model_shape)`` and the
    brain mask (voxels non-zero in at least ``threshold`` of the images), streaming."""
    total = None
    nonzero = None
    for i in range(len(table)):
        data = clf.spec.load_row(table, i).data
        x = clf.spec.crop_tensor(clf.spec.normalise_array(data[None]))[0].astype(np.float64)
        nz = clf.spec.crop_tensor(data != 0)
        total = x if total is None else total + x
        nonzero = nz.astype(np.int64) if nonzero is None else nonzero + nz
    mask = nonzero >= threshold * len(table)
    mean = np.where(mask, total / len(table), 0.0).astype(np.float32)
    return mean[None], mask


def _input_optimisation(out, clf, table, checkpoint, ckpt_sha, layer, target_index, options, batch_size, seed, force) -> list[Path]:
    from neurointerp.attribution.featuremaps import channel_subset
    from neurointerp.attribution.inputopt import DEFAULTS, input_optimisation
    from neurointerp.attribution.layers import capture, require_spatial
    from neurointerp.io import provenance, save_image, sha256, write_sidecar

    spec = clf.spec
    params = {k: options[k] if options.get(k) is not None else v for k, v in DEFAULTS.items()}
    res = common_res(table.images)  # on the model's (the inputs') grid
    path = _optimised_input(out / "group", spec.space, res, layer_desc(layer))
    start_path = _optimised_input(out / "group", spec.space, res, "start")
    inputs_sha = [sha256(p) for p in table.images]
    channels = options.get("channels")
    key = {"checkpoint_sha256": ckpt_sha, "layer": layer, "target": target_index, "channels": None if channels is None else [int(c) for c in channels], "inputs_sha256": inputs_sha, "seed": int(seed), **params}
    if _done(path, key, force):
        return []
    start, mask = cohort_start_image(clf, table)
    if layer is None:
        if clf.task == "regression":
            units = [0]
        elif target_index is not None:
            units = [int(target_index)]
        else:
            units = list(range(len(clf.classes)))
        names = [clf.classes[u] for u in units] if clf.task != "regression" else ["output"]
    else:
        import torch

        x0 = torch.from_numpy(start[None]).to(next(clf.model.parameters()).device)  # already normalised and cropped
        a = capture(clf.model, layer, x0)
        require_spatial(a, x0, layer)
        units = channel_subset(a.shape[1], channels)
        names = [f"channel {c}" for c in units]
    images, record = input_optimisation(clf.model, start, units, layer=layer, mask=mask, task=clf.task, seed=seed, batch_size=batch_size, **params)
    full = spec.uncrop(images[:, 0])  # (K, *grid)
    affine = spec.affine
    save_image(spec.uncrop(start[0]), affine, start_path, force=True)
    write_sidecar(start_path, provenance("saliency input-optimisation", {"method": "input-optimisation"}, inputs=list(table.images), Kind="start image of input optimisation: mean of the cohort's (normalised) images, zero outside the voxels non-zero in at least half of them", Space=spec.space), force=True)
    save_image(_to_nifti_4d(full, spec.ndim), affine, path, force=True)
    rec = provenance(
        "saliency input-optimisation",
        {"method": "input-optimisation", "layer": layer, "target": target_index, **params},
        inputs=list(table.images),
        seed=seed,
        Kind="input optimisation (activation maximisation; not an attribution map): images that maximise a unit, from the brain-masked cohort mean",
        Volumes=names,
        Axis4="channel" if layer else "class",
        StartImage=str(start_path.name),
        Checkpoint={"path": str(Path(checkpoint).resolve()), "sha256": ckpt_sha},
        Space=spec.space,
        **record,
        Key=key,
    )
    write_sidecar(path, rec, force=True)
    return [start_path, path]


def check_feature_request(clf, kinds: Sequence[str], layer: str | None = None, options: dict[str, Any] | None = None, confounder_mask=None) -> None:
    """Refuse a bad feature-output request in one line, before anything is written: an unknown
    or non-spatial layer, a channel the layer lacks, bad optimisation parameters, a confounder
    mask (these outputs involve no gradient to gate)."""
    import torch

    from neurointerp.attribution.featuremaps import channel_subset
    from neurointerp.attribution.inputopt import DEFAULTS, _check
    from neurointerp.attribution.layers import capture, get_layer, require_spatial

    if not kinds:
        return
    if confounder_mask is not None:
        raise InputError(f"--confounder-mask applies to gradient attribution maps; {', '.join(kinds)} cannot be made confounder-free")
    options = dict(options or {})
    params = {k: options.get(k) if options.get(k) is not None else v for k, v in DEFAULTS.items()}
    _check(**params)
    channels = options.get("channels")
    needs_layer = "feature-maps" in kinds or ("input-optimisation" in kinds and layer is not None)
    if layer is not None and needs_layer:
        get_layer(clf.model, layer)
        x = torch.zeros((1, 1, *clf.spec.model_shape), device=next(clf.model.parameters()).device)
        a = capture(clf.model, layer, x)
        require_spatial(a, x, layer)
        if channels:
            channel_subset(a.shape[1], channels)
    elif channels and "input-optimisation" in kinds and layer is None and "feature-maps" not in kinds:
        raise InputError("--channels picks channels of --layer; without --layer input optimisation maximises the class scores")


def parse_channels(text: str | None) -> list[int] | None:
    """``"0,3,5"`` -> ``[0, 3, 5]`` (``--channels``); None or blank -> None (all channels)."""
    if text is None or not str(text).strip():
        return None
    try:
        values = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError(f"--channels {text}: expected comma-separated channel numbers from 0, e.g. 0,3,5") from None
    if not values or any(v < 0 for v in values):
        raise InputError(f"--channels {text}: channel numbers start at 0")
    return list(dict.fromkeys(values))
