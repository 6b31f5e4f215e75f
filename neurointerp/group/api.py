"""``group_map``: descriptive maps, voxelwise GLM with FDR and permutation FWE, atlas tables.

Everything streams over the maps (batches of ``batch_size``): per-group running moments,
``X'Y``/``Y'Y`` of the GLM, per-subject region means; memory is a few grid-sized vectors per
group and design column, not the number of maps. Permutations need further passes (one per
block of permutations that fits ``memory_mb``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError
from neurointerp.options.core import takes_options
from neurointerp.options.group_map import GroupMapOptions

DEFAULT_SPACE = "MNI152NLin2009aSym"


@takes_options(GroupMapOptions)
def group_map(o: GroupMapOptions) -> Path:
    """Group statistics of a set of maps (attribution, log-Jacobian, ...) in one space.

    Parameters
    ----------
    maps
        A folder of NIfTI maps, a glob pattern, or a CSV/TSV with ``participant_id`` and ``map``.
    out
        Output folder; results go to ``<out>/group/`` (BIDS-derivatives names, JSON sidecars).
    covariates
        CSV/TSV with ``participant_id``, the label and covariate columns (joined on the id).
    design
        ``label,age,sex`` (intercept added; numeric columns centred, others dummy-coded) or a
        patsy formula ``~ label + age + C(sex)``. Default: the label column when it exists, else
        descriptive maps only. ``none`` turns the GLM off.
    contrast
        ``patient-control``, a design column (``age``) or weights (``0,1,0,0``). Default: second
        class minus first class of the label column.
    mask
        Analysis mask on the maps' grid (default: voxels where any map is non-zero).
    atlas, labels
        Registry atlas name (see ``neurointerp.atlases.atlas_names()``) or a label image with
        its label table, for the region table.
    n_perm
        Permutations for max-statistic FWE p-values (0: none), drawn from ``seed``.
    alpha
        Level for the FDR and FWE counts and figure thresholds.
    one_sided
        Test ``contrast > 0`` only (default two-sided).
    mirror
        Show a one-hemisphere model's map on both sides: written maps and figures fill empty
        voxels from the mirror image across x = 0 (statistics are computed before mirroring).
    figures
        Write PNG slice mosaics and glass brains next to the NIfTI outputs.
    space
        Template space name used in the output file names.
    top
        Number of regions listed on the console.
    batch_size, threads
        Maps per streamed batch; threads reading maps ahead (``n_threads`` is the older name).
    memory_mb
        Memory budget of the permutation accumulators (more passes when exceeded).
    volumes
        Column (maps or covariates table) with preprocessed template-space T1 images: ANTs
        Atropos grey-matter segmentation, GM volume per ``atlas`` region, GLM of the contrast
        with the same design (table of t, p, q) and box plots of the top regions.
    force
        Redo an earlier group-map run with other maps or options in ``out``, or write beside
        another command's outputs (the same maps and options are simply redone).

    Returns
    -------
    Path of the summary JSON (``<out>/group/group_map.json``).
    """
    params = {k: v for k, v in o.as_dict().items() if k != "force"}
    maps, out, covariates, design, contrast, label_column, mask = o.maps, Path(o.out), o.covariates, o.design, o.contrast, o.label_column, o.mask
    atlas, labels, n_perm, seed, alpha, one_sided, mirror, figures = o.atlas, o.labels, o.n_perm, o.seed, o.alpha, o.one_sided, o.mirror, o.figures
    space, top, batch_size, n_threads, memory_mb, volumes, force = o.space, o.top, o.batch_size, o.threads, o.memory_mb, o.volumes, o.force
    from neurointerp.atlases import resolve_atlas
    from neurointerp.group.fdr import fdr_bh
    from neurointerp.group.glm import build_design, design_columns, parse_contrast, t_to_p, t_to_z
    from neurointerp.group.inputs import collect_maps, iter_batches, load_map
    from neurointerp.group.regions import RegionMeans, print_top_regions, region_table
    from neurointerp.io import add_bidsignore, bids_name, common_res, prepare_output_dir, provenance, save_image, write_dataset_description, write_json, write_sidecar, write_table
    from neurointerp.io.nifti import load_image
    from neurointerp.progress import info, track

    _check_params(n_perm, alpha, batch_size, n_threads, memory_mb, space)
    ms = collect_maps(maps, covariates)
    grid_res = common_res(ms.paths)  # the maps' grid label (res-), kept in the group files' names
    n = len(ms)
    frame = ms.frame
    use_glm = not (design is not None and str(design).strip().lower() == "none")
    if use_glm and design is None and label_column not in frame.columns:
        use_glm = False
        info(f"no '{label_column}' column: descriptive maps only (give --covariates or --design for a GLM)")
    has_groups = label_column in frame.columns
    needed = [label_column] if has_groups else []
    if use_glm:
        needed += [c for c in design_columns(design, label_column)[0] if c not in needed]
    if volumes is not None:
        if atlas is None:
            raise InputError("--volumes needs an atlas (--atlas) for the regional grey-matter volumes")
        if not use_glm:
            raise InputError("--volumes needs a GLM (a design with a contrast)")
        needed.append(volumes)
    from neurointerp.group.inputs import repeated_participants, subject_means

    sessions = o.sessions
    repeated = repeated_participants(frame)
    n_maps = n
    if repeated and sessions is None:
        pid, k = next(iter(repeated.items()))
        raise InputError(
            f"{ms.source}: participant '{pid}' has {k} maps ({len(repeated)} participant(s) have several sessions); sessions are not independent subjects: "
            "give --sessions mean (average each participant's sessions) or --sessions subject (a subject term, for within-subject effects)"
        )
    if sessions == "subject" and n_perm > 0:
        raise InputError("--n-perm with --sessions subject: permuting maps across participants is not valid for within-subject designs; use --sessions mean for permutations")
    if sessions == "subject" and volumes is not None:
        raise InputError("--volumes with --sessions subject is not supported; use --sessions mean")
    if sessions == "mean" and repeated:
        ms = subject_means(ms, needed)
        frame, n = ms.frame, len(ms)
        info(f"--sessions mean: {n_maps} maps of {n} participants averaged per participant")
    ms.check_covariates(needed)
    if has_groups:  # '1' and '1.0' (or 'Patient' and 'patient') must not become two groups
        from neurointerp.io.cohort import label_spelling_problems

        spelled = label_spelling_problems(list(frame[label_column]), list(ms.cov_where or ms.where), label_column)
        if spelled:
            raise InputError(spelled[0])
    groups = [str(g) for g in frame[label_column]] if has_groups else ["all"] * n
    from neurointerp.group.glm import _class_key

    group_order = sorted(dict.fromkeys(groups), key=_class_key)

    X = c = None
    dsg = None
    cname = None
    if use_glm:
        dsg = build_design(frame, design, label_column)
        c, cname = parse_contrast(contrast, dsg)
        if sessions == "subject":
            from neurointerp.group.glm import add_subject_term

            base_p = len(dsg.columns)
            dsg = add_subject_term(dsg, frame["participant_id"])
            c = np.concatenate([c, np.zeros(len(dsg.columns) - base_p)])
        X = dsg.matrix
    if n_perm > 0 and not use_glm:
        raise InputError("--n-perm needs a GLM (a design with a contrast)")

    shape, affine = ms.shape, ms.affine
    nvox = int(np.prod(shape))
    user_mask = None
    if mask is not None:
        from neurointerp.io.headers import load_mask_like

        user_mask = load_mask_like(mask, shape, affine, "--mask").reshape(-1)
    # voxels streamed: the user mask (everything outside stays 0), else the whole grid
    work = np.flatnonzero(user_mask) if user_mask is not None else None
    nwork = len(work) if work is not None else nvox

    def full(values, fill=0.0):
        values = np.asarray(values)
        if work is None:
            return values.reshape(-1)
        grid = np.full(nvox, fill, dtype=values.dtype)
        grid[work] = values
        return grid

    region_acc = None
    atlas_name = None
    if atlas is not None:
        lab, table, atlas_name = resolve_atlas(atlas, shape, affine, labels)
        region_acc = RegionMeans(lab.reshape(-1) if work is None else lab.reshape(-1)[work], table, n)
        if len(region_acc.region_ids) == 0:
            raise InputError(f"atlas '{atlas}': no region overlaps the maps' grid")

    from neurointerp.runs.folder import whole_run

    gdir = out / "group"
    spath = gdir / "group_map.json"
    all_maps = [Path(p) for m in ms.members for p in m] if ms.members else list(ms.paths)
    run_inputs = {"maps": all_maps, "covariates": covariates, "mask": mask, "labels": labels}
    if atlas is not None and Path(str(atlas)).is_file():
        run_inputs["atlas"] = Path(str(atlas))
    claim = dict(inputs=run_inputs, force=force)
    fingerprint = {k: v for k, v in o.affecting().items() if k != "maps"}
    whole_run(out, "group-map", fingerprint, dry_run=True, **claim)  # refusals now, nothing written
    with contextlib.ExitStack() as stack:
        # nothing is written (not even the run's bookkeeping) until every map has been read and checked
        # ---- pass 1: moments per group, GLM accumulators, region means --------------------------
        paths = ms.members if ms.members else ms.paths  # --sessions mean: each item is a participant's session maps

        def loader(p):
            y = load_map(p, shape)
            return y if work is None else y[work]

        def batches():
            return iter_batches(paths, batch_size=batch_size, loader=loader, n_threads=n_threads)

        n_batches = (n + batch_size - 1) // batch_size
        moments, glm = accumulate(track(batches(), description="group-map", total=n_batches), nwork, groups, group_order, X, region_acc)
        gidx = {g: np.asarray([i for i, x in enumerate(groups) if x == g]) for g in group_order}

        nonzero = sum(m.nonzero for m in moments.values())
        analysis_mask = np.ones(nwork, dtype=bool) if work is not None else nonzero > 0  # working voxels
        if not analysis_mask.any():
            raise InputError(f"{ms.source}: every map is zero everywhere (nothing to analyse)")

        # ---- outputs ----------------------------------------------------------------------------
        folder = whole_run(out, "group-map", fingerprint, checked=True, **claim)
        stack.enter_context(folder.writing())
        write_dataset_description(out, "neurointerp group-map", "Group statistics of maps", force=False)
        add_bidsignore(out, ["group"])
        record = provenance(
            "group-map", params, inputs=all_maps, seed=seed, Space=space,
            Sessions={"mode": sessions, "n_maps": n_maps, "n_participants": int(len(set(frame["participant_id"])))} if repeated else None,
            Design={"columns": dsg.columns, "formula": dsg.formula, "matrix_rank": dsg.rank} if dsg else None,
            Contrast={"name": cname, "weights": c} if c is not None else None,
            Groups={g: int(len(gidx[g])) for g in group_order},
            Mirrored=bool(mirror),
        )
        written: list[str] = []

        def put(data, desc, stat=None, suffix="statmap", meaning="", dtype=np.float32, fill=0.0, df=None):
            vol = full(data, fill).reshape(shape)
            if mirror and dtype is np.float32:
                from neurointerp.group.display import mirror_map

                vol = mirror_map(vol, affine)
            path = gdir / bids_name(None, suffix, space=space, res=grid_res, desc=desc, stat=stat)
            intent, intent_name = stat_intent(stat, df)
            save_image(vol, affine, path, force=True, dtype=dtype, intent=intent, intent_name=intent_name)
            write_sidecar(path, {**record, "Description": meaning}, force=True)
            written.append(str(path.relative_to(out)))
            return path

        put(analysis_mask, "analysis", suffix="mask", meaning="voxels analysed (user mask or any map non-zero)", dtype=np.uint8)
        figure_jobs = []
        for g in group_order:
            m = moments[g]
            d = _safe(g)
            p_mean = put(m.mean, d, "mean", meaning=f"mean of the {m.n} maps of group '{g}'")
            put(m.mean_abs, d, "meanabs", meaning=f"mean of |map| over group '{g}'")
            put(m.sd, d, "sd", meaning=f"standard deviation (ddof 1) over group '{g}'")
            put(m.nonzero.astype(np.float32), d, "count", meaning=f"number of maps of group '{g}' that are non-zero at the voxel (group size {m.n})")
            figure_jobs.append((p_mean, full(m.mean), f"mean {g} (n={m.n})", None, "mosaic"))

        summary: dict = {
            "n_maps": n_maps,
            "n_participants": int(len(set(frame["participant_id"]))),
            "sessions": sessions if repeated else None,
            "grid": {"shape": list(shape), "affine": affine.tolist()},
            "space": space,
            "groups": {g: int(moments[g].n) for g in group_order},
            "mask_voxels": int(analysis_mask.sum()),
        }
        t = None
        if glm is not None:
            res = glm.contrast(c, mask=analysis_mask)
            t = res.t
            two_sided = not one_sided
            pvals = t_to_p(t, res.df, two_sided)
            pvals = np.where(analysis_mask, pvals, np.nan)
            q = fdr_bh(pvals)
            z = np.where(analysis_mask, t_to_z(t, res.df), 0.0)
            put(np.where(analysis_mask, res.effect, 0.0), cname, "effect", meaning="contrast estimate c'beta")
            put(t, cname, "t", meaning=f"t statistic of contrast {cname}, df={res.df}", df=res.df)
            p_z = put(z, cname, "z", meaning="z score with the same tail probability as t")
            put(np.where(analysis_mask, pvals, 1.0), cname, "p", meaning=f"uncorrected {'two' if two_sided else 'one'}-sided p-value", fill=1.0)
            put(np.where(analysis_mask, q, 1.0), cname, "q", meaning="Benjamini-Hochberg FDR q-value over the mask", fill=1.0)
            sig = analysis_mask & (q <= alpha)
            summary["glm"] = {
                "design_columns": dsg.columns,
                "contrast": {"name": cname, "weights": c.tolist()},
                "df": int(res.df),
                "two_sided": two_sided,
                "alpha": alpha,
                "n_fdr_significant": int(sig.sum()),
                "fdr_p_threshold": float(np.nanmax(np.where(sig, pvals, np.nan))) if sig.any() else 0.0,
                "peak": _peak(full(t), full(analysis_mask), shape, affine, one_sided),
            }
            z_thr = float(np.min(np.abs(z[sig]))) if sig.any() else None
            figure_jobs.append((p_z, full(z), f"z {cname} (FDR q<{alpha:g} shown)" if z_thr else f"z {cname}", z_thr, "mosaic"))
            figure_jobs.append((p_z, full(z), f"z {cname} glass brain", z_thr, "glass"))
            if n_perm > 0:
                from neurointerp.group.permutation import max_stat_fwe

                info(f"{n_perm} permutations (seed {seed})")
                p_fwe_m, max_null, _ = max_stat_fwe(batches, X, c, analysis_mask, n_perm, seed=seed, two_sided=two_sided, memory_mb=memory_mb, observed_t=t[analysis_mask])
                p_fwe = np.ones(nwork)
                p_fwe[analysis_mask] = p_fwe_m
                put(p_fwe, cname, "pfwe", meaning=f"family-wise error p-value, max-statistic over {n_perm} permutations (seed {seed})", fill=1.0)
                thr = float(np.quantile(max_null, 1 - alpha))
                summary["glm"].update({"n_perm": n_perm, "seed": seed, "fwe_t_threshold": thr, "n_fwe_significant": int((analysis_mask & (p_fwe <= alpha)).sum())})

        if region_acc is not None:
            two = (dsg is not None and dsg.classes is not None and len(dsg.classes) == 2 and cname is not None and has_groups)
            cgroups = None
            if two:
                col = next((k for k in (f"{label_column}[{dsg.classes[1]}]", f"{label_column}[T.{dsg.classes[1]}]") if k in dsg.columns), None)
                sign = c[dsg.columns.index(col)] if col else 0.0
                if sign:
                    cgroups = (dsg.classes[1], dsg.classes[0]) if sign > 0 else (dsg.classes[0], dsg.classes[1])
            rt = region_table(region_acc, groups, group_order, X=X, contrast=c, contrast_groups=cgroups, t_map=t)
            rpath = gdir / bids_name(None, "roi-table", ext=".tsv", space=space, res=grid_res, desc=_safe(atlas_name) + (cname or ""))
            write_table(rpath, rt, force=True)
            write_sidecar(rpath, {**record, "Atlas": atlas_name, "Description": "per-region summaries; rank 1 = strongest"}, force=True)
            written.append(str(rpath.relative_to(out)))
            summary["regions"] = {"atlas": atlas_name, "table": str(rpath.relative_to(out)), "top": rt.head(top)[["rank", "name"]].to_dict(orient="records")}
            print_top_regions(rt, top, title=f"Top regions ({atlas_name}{', ' + cname if cname else ''})")

        if volumes is not None:
            summary["volumetry"] = _volumetry(ms, volumes, maps, covariates, atlas, labels, groups, group_order, X, c, cname, gdir, out, space, record, top, figures, force, written, grid_res)

        if figures:
            from neurointerp.group.display import map_figure, mirror_map

            for nii, data, title, thr, kind in figure_jobs:
                vol = np.asarray(data, dtype=np.float32).reshape(shape)
                if mirror:
                    vol = mirror_map(vol, affine)
                png = nii.with_name(nii.name.replace(".nii.gz", f"_{kind}.png"))
                map_figure(png, vol, affine, title, threshold=thr, kind=kind)
                written.append(str(png.relative_to(out)))

        summary["outputs"] = written
        summary["provenance"] = record
        write_json(spath, summary, force=True)
        folder.mark("complete")
        if glm is not None:
            g = summary["glm"]
            info(f"{cname}: {g['n_fdr_significant']} voxels with FDR q <= {alpha:g}" + (f", {g['n_fwe_significant']} with FWE p <= {alpha:g}" if n_perm > 0 else ""))
        return spath


#: NIfTI intent of each group statistic: (intent for save_image, 15-character intent name)
STAT_INTENTS = {
    "mean": ("estimate", "mean"),
    "meanabs": ("estimate", "mean abs"),
    "sd": ("estimate", "sd"),
    "effect": ("estimate", "contrast"),
    "z": ("z", "z"),
    "p": ("p", "p uncorrected"),
    "q": ("p", "FDR q"),
    "pfwe": ("p", "FWE p"),
}


def stat_intent(stat: str | None, df=None) -> tuple:
    """``(intent, intent_name)`` for a group map of statistic ``stat`` (``t`` needs ``df``)."""
    if stat == "t":
        if df is None:
            raise ValueError("a t map needs its degrees of freedom")
        return ("t", float(df)), "t"
    return STAT_INTENTS.get(stat, (None, ""))


def _volumetry(ms, column, maps, covariates, atlas, labels, groups, group_order, X, c, cname, gdir, out, space, record, top, figures, force, written, grid_res=None) -> dict:
    """Atropos GM volumes per atlas region and their GLM; writes tables (+ box plots)."""
    from neurointerp.atlases import resolve_atlas
    from neurointerp.group.inputs import check_grids
    from neurointerp.group.regions import print_top_regions
    from neurointerp.group.volumetry import boxplots, regional_volumes, volume_table
    from neurointerp.io import bids_name, write_sidecar, write_table

    bases = []
    if covariates is not None:
        bases.append(Path(covariates).parent)
    if Path(str(maps)).is_file():
        bases.append(Path(str(maps)).parent)
    images = []
    where = ms.cov_where or ms.where
    for w, value in zip(where, ms.frame[column]):
        p = Path(str(value))
        cands = [p] if p.is_absolute() else [b / p for b in bases] + [p]
        found = next((q for q in cands if q.is_file()), None)
        if found is None:
            raise InputError(f"{w}: {column} '{value}' not found")
        images.append(found.absolute())
    shape, affine, _ = check_grids(images)
    lab, table, atlas_name = resolve_atlas(atlas, shape, affine, labels)
    vols, total = regional_volumes(images, lab, table, affine, progress="atropos")
    vt = volume_table(vols, groups, group_order, X, c)
    desc = _safe(atlas_name) + "GM"
    per_subject = vols.copy()
    per_subject.insert(0, "participant_id", ms.participant_ids)
    per_subject["total_gm_mm3"] = total
    p1 = write_table(gdir / bids_name(None, "roi-volumes", ext=".tsv", space=space, res=grid_res, desc=desc), per_subject, force=True)
    p2 = write_table(gdir / bids_name(None, "roi-table", ext=".tsv", space=space, res=grid_res, desc=desc + (cname or "")), vt, force=True)
    for p, what in ((p1, "grey-matter volume (mm^3) per subject and atlas region, ANTs Atropos (Kmeans[3], MRF 0.2)"), (p2, "GLM of regional GM volume: contrast estimate, t, p, FDR q")):
        write_sidecar(p, {**record, "Atlas": atlas_name, "ImagesColumn": column, "Description": what}, force=True)
        written.append(str(p.relative_to(out)))
    print_top_regions(vt, top, title=f"Grey-matter volume ({atlas_name}, {cname})")
    result = {"table": str(p2.relative_to(out)), "volumes": str(p1.relative_to(out)), "top": vt.head(top)[["rank", "name", "t", "q_fdr"]].to_dict(orient="records")}
    if figures:
        png = boxplots(gdir / bids_name(None, "boxplots", ext=".png", space=space, res=grid_res, desc=desc + (cname or "")), vols, groups, group_order, list(vt["name"].head(4)), title=f"GM volume, top regions ({cname})")
        written.append(str(png.relative_to(out)))
        result["boxplots"] = str(png.relative_to(out))
    return result


def accumulate(batches, n_voxels: int, groups, group_order, X=None, regions=None):
    """One streamed pass: per-group :class:`RunningMoments`, a :class:`StreamingGLM` (when
    ``X`` is given) and region means (``regions``), from ``(indices, Y)`` batches.

    Holds one batch at a time; returns ``(moments by group, glm or None)``.
    """
    from neurointerp.group.glm import StreamingGLM
    from neurointerp.group.moments import RunningMoments

    moments = {g: RunningMoments(n_voxels) for g in group_order}
    member = np.asarray([list(group_order).index(g) for g in groups])
    glm = StreamingGLM(X, n_voxels) if X is not None else None
    for idx, Y in batches:
        Y = np.asarray(Y, dtype=np.float64)  # once per batch: exact float64 accumulators
        for k, g in enumerate(group_order):
            sel = member[idx] == k
            if sel.any():
                moments[g].update(Y[sel])
        if glm is not None:
            glm.update(idx, Y)
        if regions is not None:
            regions.update(idx, Y)
    return moments, glm


def _safe(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9]", "", str(text)) or "x"


def _peak(t, mask, shape, affine, one_sided: bool) -> dict:
    vals = np.where(mask, t if one_sided else np.abs(t), -np.inf)
    i = int(np.argmax(vals))
    ijk = np.unravel_index(i, shape)
    xyz = (affine[:3, :3] @ np.asarray(ijk, dtype=float) + affine[:3, 3]).tolist()
    return {"t": float(t[i]), "voxel": [int(v) for v in ijk], "mm": [round(v, 2) for v in xyz]}


def _check_params(n_perm, alpha, batch_size, n_threads, memory_mb, space) -> None:
    if n_perm < 0:
        raise InputError(f"n-perm must be 0 or more (got {n_perm})")
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1) (got {alpha})")
    if batch_size < 1:
        raise InputError(f"batch-size must be at least 1 (got {batch_size})")
    if n_threads < 1:
        raise InputError(f"n-threads must be at least 1 (got {n_threads})")
    if memory_mb <= 0:
        raise InputError(f"memory-mb must be positive (got {memory_mb})")
    if not space or not str(space).isalnum():
        raise InputError(f"space '{space}' must be letters and digits (a BIDS space label)")
