"""A 3D synthetic cohort built from the MNI152 template, with planted, known effects.

Every subject is the template (nilearn's ICBM 2009a symmetric, 1 mm, skull-stripped) warped
by a forward deformation ``psi(y) = y + v(y)`` from template space to the subject's anatomy::

    v = severity * v_disease + age_z * v_age + v_random

* ``v_disease`` -- the disease effect: bilateral hippocampal/medial-temporal atrophy and
  lateral-ventricle expansion (radial bumps), scaled by ``effect_size`` and a per-patient
  severity ~ U(0.5, 1.5) (0 for controls).
* ``v_age`` -- the confounder: a *different* pattern (bilateral frontal atrophy), scaled by the
  standardised age ``age_z`` and ``confound_size``. Age correlates with diagnosis with
  correlation ``confound_strength``: ``age_z = rho * d + sqrt(1 - rho^2) * eps`` with
  ``d = +1`` for patients and ``-1`` for controls.
* ``v_random`` -- smooth anatomical variability (random translation bumps, 20 mm radius).
* ``sex`` -- a nuisance column with no planted effect.

``scenario`` names a confound set-up (:data:`SCENARIOS`): ``age-confounded`` -- a strong age
effect (``confound_size`` 3), a weak disease effect (``effect_size`` 0.5) and age strongly
correlated with the diagnosis (0.8), so a classifier learns mostly age; ``unconfounded`` -- the
same age effect uncorrelated with the diagnosis and a learnable disease effect (3.0), the
control. Options given explicitly override the scenario's values.

The anatomy is then posed by a random rigid transform (rotation up to ``max_rotation``
degrees about each axis, translation up to ``max_translation`` mm) and written on a scanner
grid of orientation ``orientation`` with a smooth multiplicative bias field, a random gain
and Rician noise -- so ``preprocess`` has real work to do.

Ground truth is written in template space: the log-Jacobian ``log det(I + grad v)`` of the
disease field at severity 1 and of the age field at +1 SD, binary masks where
``|log-Jacobian| > mask_threshold`` inside the brain, the template and its brain mask on the
same grid, and per-subject severity, age_z and pose in ``truth/subjects.tsv``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError
from neurointerp.synth.deformation import BumpField, random_smooth_field, rotation_matrix
from neurointerp.runs.context import runs_as

SPACE = "MNI152NLin2009aSym"
MASK_THRESHOLD = 0.05


def disease_field(effect_size: float = 1.0) -> BumpField:
    """Disease pattern at severity 1: hippocampal atrophy and ventricular expansion (MNI mm)."""
    centres = [(-26, -22, -14), (26, -22, -14), (-12, -16, 22), (12, -16, 22)]
    radii = [7.0, 7.0, 9.0, 9.0]
    radial = np.array([-0.25, -0.25, 0.2, 0.2]) * effect_size
    return BumpField(centres, radii, radial)


def age_field(confound_size: float = 1.0) -> BumpField:
    """Confounder pattern at +1 SD of age: bilateral frontal atrophy (MNI mm)."""
    centres = [(-30, 38, 22), (30, 38, 22)]
    return BumpField(centres, [11.0, 11.0], np.array([-0.15, -0.15]) * confound_size)


DEFAULTS = {"effect_size": 1.0, "confound_strength": 0.5, "confound_size": 1.0}

# Named confound scenarios (issue #25). Each sets the disease effect, the age-diagnosis
# correlation and the age effect; options given explicitly override them.
SCENARIOS = {
    # age drives the images more than the disease and goes with the diagnosis (r = 0.8): a CNN
    # learns mostly age (measured at 6 mm, 100 subjects, 15 epochs: held-out accuracy 0.85,
    # score vs age within each class r ~ 0.8)
    "age-confounded": {"effect_size": 0.5, "confound_strength": 0.8, "confound_size": 3.0},
    # the same age effect in the images, but age independent of the diagnosis, and a disease
    # effect strong enough to learn: the control cohort, a CNN learns the disease
    "unconfounded": {"effect_size": 3.0, "confound_strength": 0.0, "confound_size": 3.0},
}


def resolve_scenario(scenario: str | None, effect_size=None, confound_strength=None, confound_size=None) -> tuple[float, float, float]:
    """``(effect_size, confound_strength, confound_size)``: explicit values, else the scenario's, else the defaults."""
    if scenario is not None and scenario not in SCENARIOS:
        raise InputError(f"scenario '{scenario}': use one of {', '.join(SCENARIOS)}")
    base = SCENARIOS[scenario] if scenario is not None else DEFAULTS
    given = {"effect_size": effect_size, "confound_strength": confound_strength, "confound_size": confound_size}
    return tuple(float(base[k]) if v is None else float(v) for k, v in given.items())  # type: ignore[return-value]


_AXIS_LETTERS = ({"R": 1.0, "L": -1.0}, {"A": 1.0, "P": -1.0}, {"S": 1.0, "I": -1.0})


def oriented_affine(shape, voxel_size: float, centre, orientation: str = "RAS") -> np.ndarray:
    """An axis-aligned scanner affine with the given orientation code, centred on ``centre``."""
    code = orientation.upper()
    if len(code) != 3 or any(c not in letters for c, letters in zip(code, _AXIS_LETTERS)):
        raise InputError(f"orientation '{orientation}' must be 3 letters like RAS, LAS or LPI (axes x, y, z)")
    signs = np.array([letters[c] for c, letters in zip(code, _AXIS_LETTERS)])
    aff = np.diag(np.r_[signs * voxel_size, 1.0])
    aff[:3, 3] = np.asarray(centre, dtype=float) - aff[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return aff


@dataclass
class SubjectSpec:
    participant_id: str
    label: str
    severity: float
    age: float
    age_z: float
    sex: str
    rotation: np.ndarray  # degrees about x, y, z
    translation: np.ndarray  # mm
    gain: float
    bias: np.ndarray  # 9 polynomial coefficients
    random_field: BumpField


def draw_subjects(
    n_subjects: int,
    rng: np.random.Generator,
    patient_fraction: float,
    confound_strength: float,
    age_mean: float,
    age_sd: float,
    max_rotation: float,
    max_translation: float,
    bias: float,
    box: tuple[np.ndarray, np.ndarray],
) -> list[SubjectSpec]:
    n_pat = int(round(n_subjects * patient_fraction))
    labels = np.array(["control"] * (n_subjects - n_pat) + ["patient"] * n_pat)
    rng.shuffle(labels)
    d = np.where(labels == "patient", 1.0, -1.0)
    d = (d - d.mean()) / (d.std() if d.std() > 0 else 1.0)
    rho = confound_strength
    age_z = rho * d + np.sqrt(1.0 - rho**2) * rng.standard_normal(n_subjects)
    width = max(3, len(str(n_subjects)))
    subjects = []
    for i in range(n_subjects):
        patient = labels[i] == "patient"
        subjects.append(
            SubjectSpec(
                participant_id=f"syn{i + 1:0{width}d}",
                label=str(labels[i]),
                severity=float(rng.uniform(0.5, 1.5)) if patient else 0.0,
                age=round(float(age_mean + age_sd * age_z[i]), 1),
                age_z=float(age_z[i]),
                sex=str(rng.choice(["F", "M"])),
                rotation=rng.uniform(-max_rotation, max_rotation, size=3),
                translation=rng.uniform(-max_translation, max_translation, size=3),
                gain=float(1000.0 * rng.uniform(0.8, 1.25)),
                bias=rng.normal(0.0, bias, size=9),
                random_field=random_smooth_field(rng, box[0], box[1]),
            )
        )
    return subjects


def _bias_field(points: np.ndarray, centre: np.ndarray, coef: np.ndarray) -> np.ndarray:
    q = (points - centre) / 100.0
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    terms = np.stack([x, y, z, x * x, y * y, z * z, x * y, x * z, y * z], axis=1)
    return np.exp(terms @ coef)


def render_subject(
    spec: SubjectSpec,
    disease: BumpField,
    age: BumpField,
    source: np.ndarray,
    source_affine: np.ndarray,
    points: np.ndarray,
    centre: np.ndarray,
    box: tuple[np.ndarray, np.ndarray],
    noise: float,
    rng: np.random.Generator,
    posed: bool = True,
) -> np.ndarray:
    """Intensities of one subject at world ``points`` (native scanner mm if ``posed``)."""
    from scipy import ndimage

    field = disease.scaled(spec.severity) + age.scaled(spec.age_z) + spec.random_field
    if posed:
        rot = rotation_matrix(spec.rotation)
        anatomy = (points - centre - spec.translation) @ rot + centre  # R^T (p - c - t) + c
    else:
        anatomy = points
    # only points near the brain can land on tissue: skip the rest of the field of view
    lo, hi = box
    near = np.flatnonzero(np.all((anatomy > lo - 25.0) & (anatomy < hi + 25.0), axis=1))
    template_pts = field.inverse(anatomy[near].astype(np.float32)).astype(np.float64)
    vox = np.linalg.solve(source_affine, np.c_[template_pts, np.ones(len(template_pts))].T)[:3]
    values = np.zeros(len(points), dtype=np.float64)
    values[near] = ndimage.map_coordinates(source, vox, order=1, mode="constant", cval=0.0)
    if not posed:
        return values.astype(np.float32)
    values = values * spec.gain * _bias_field(points, centre, spec.bias)
    if noise > 0:
        sd = noise * spec.gain
        values = np.hypot(values + rng.normal(0.0, sd, len(values)), rng.normal(0.0, sd, len(values)))
    return values.astype(np.float32)


#: what every render worker needs, set once per worker process (:func:`_init_renderer`)
_RENDERER: dict = {}


def _init_renderer(state: dict) -> None:
    _RENDERER.clear()
    _RENDERER.update(state)


def _render_pair(spec: SubjectSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """The native image of one subject and, with ``template_space``, its template-grid anatomy.

    Each subject draws its noise from its own generator (seeded by the run's seed and its
    number), so the images do not depend on which process renders them, or in which order."""
    r = _RENDERER
    sub_rng = np.random.default_rng([r["seed"], int(spec.participant_id[3:])])
    common = (r["disease"], r["age"], r["source"], r["source_affine"])
    values = render_subject(spec, *common, r["native_points"], r["centre"], r["box"], r["noise"], sub_rng)
    anat = None
    if r["tpl_points"] is not None:
        anat = render_subject(spec, *common, r["tpl_points"], r["centre"], r["box"], 0.0, sub_rng, posed=False)
    return values, anat


def _rendered(subjects: list, state: dict, n_jobs: int):
    """``(spec, native, anatomy)`` for each subject, in order; ``n_jobs`` > 1 renders in worker processes."""
    if n_jobs <= 1 or len(subjects) < 2:
        _init_renderer(state)
        try:
            for spec in subjects:
                yield (spec, *_render_pair(spec))
        finally:
            _RENDERER.clear()
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    workers = min(int(n_jobs), len(subjects))
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init_renderer, initargs=(state,)) as pool:
        for spec, pair in zip(subjects, pool.map(_render_pair, subjects, chunksize=1)):
            yield (spec, *pair)


@runs_as("synth brain")
def synth_brain(
    out: str | os.PathLike,
    n_subjects: int = 40,
    voxel_size: float = 3.0,
    effect_size: float | None = None,
    confound_strength: float | None = None,
    confound_size: float | None = None,
    patient_fraction: float = 0.5,
    age_mean: float = 70.0,
    age_sd: float = 8.0,
    noise: float = 0.03,
    bias: float = 0.15,
    max_rotation: float = 8.0,
    max_translation: float = 8.0,
    orientation: str = "LAS",
    template_space: bool = False,
    seed: int = 0,
    scenario: str | None = None,
    n_jobs: int = 1,
    force: bool = False,
) -> Path:
    """Write a synthetic 3D cohort with planted disease and confounder effects.

    Writes ``sub-<id>/anat/sub-<id>_T1w.nii.gz`` (native, posed), ``cohort.csv``
    (participant_id, image, label, age, sex), ``participants.tsv``/``.json`` (a raw BIDS dataset)
    and ``truth/`` (template-space ground truth, ``subjects.tsv``). With ``template_space`` also
    the unposed, bias- and noise-free anatomy of each subject on the template grid, a derivative
    dataset of its own (``derivatives/anatomy/sub-<id>/anat/..._space-<tpl>_desc-anatomy_T1w.nii.gz``).
    Returns the cohort table path. Same arguments as ``neurointerp synth brain``.

    ``effect_size``, ``confound_strength`` and ``confound_size`` left at ``None`` take their
    defaults (1.0, 0.5, 1.0) or, with ``scenario``, the scenario's values (:data:`SCENARIOS`);
    a value given explicitly always wins. ``n_jobs``: subjects rendered in parallel worker
    processes; the output is the same for any value.
    """
    effect_size, confound_strength, confound_size = resolve_scenario(scenario, effect_size, confound_strength, confound_size)
    params = {k: v for k, v in locals().items() if k not in ("out", "force", "n_jobs") and not (k == "scenario" and v is None)}
    import pandas as pd

    from neurointerp.atlases import grid_points, load_template, resample_template, smoothed_template, working_grid
    from neurointerp.io import (
        add_bidsignore,
        derivative_path,
        prepare_output_dir,
        provenance,
        resolution_label,
        save_image,
        write_cohort,
        write_dataset_description,
        write_json,
        write_participants,
        write_sidecar,
        write_table,
    )
    from neurointerp.progress import track

    _check_brain_params(n_subjects, voxel_size, confound_strength, patient_fraction, noise, bias, age_sd)
    rng = np.random.default_rng(seed)
    _, t_mask, t_aff = load_template()
    source = smoothed_template("MNI152NLin2009aSym", float(voxel_size))
    shape, grid_affine = working_grid(voxel_size=voxel_size)
    tpl_points = grid_points(shape, grid_affine)
    idx = np.array(np.nonzero(t_mask))
    box_world = (t_aff[:3, :3] @ np.array([idx.min(1), idx.max(1)]).T + t_aff[:3, 3:4]).T
    centre = box_world.mean(axis=0)
    box = (box_world.min(axis=0), box_world.max(axis=0))
    pad = int(np.ceil(max_translation / voxel_size + 0.12 * max(shape)))
    native_shape = tuple(int(s + 2 * pad) for s in shape)
    native_affine = oriented_affine(native_shape, voxel_size, centre, orientation)
    native_points = grid_points(native_shape, native_affine)

    disease = disease_field(effect_size)
    age = age_field(confound_size)
    subjects = draw_subjects(n_subjects, rng, patient_fraction, confound_strength, age_mean, age_sd, max_rotation, max_translation, bias, box)

    out = prepare_output_dir(out, force=force)
    # a raw BIDS dataset (the native images stand for acquisitions); the ground truth and the
    # cohort table are not BIDS; the template-space anatomy is a derivative under derivatives/anatomy
    write_dataset_description(out, "neurointerp synth brain", "3D synthetic cohort with planted disease and confounder effects", force=force, dataset_type="raw")
    add_bidsignore(out, ["truth", "cohort.*"])
    anatomy_root = out / "derivatives" / "anatomy"
    if template_space:
        write_dataset_description(anatomy_root, "neurointerp synth brain (template-space anatomy)", "each subject's unposed, bias- and noise-free anatomy on the template grid", force=force)
    rows, truth_rows = [], []
    state = {"seed": seed, "disease": disease, "age": age, "source": source, "source_affine": t_aff, "native_points": native_points,
             "centre": centre, "box": box, "noise": noise, "tpl_points": tpl_points if template_space else None}
    for spec, values, anat in track(_rendered(subjects, state, n_jobs), description="synth brain", total=len(subjects)):
        img_path = derivative_path(out, spec.participant_id, "T1w")
        save_image(values.reshape(native_shape), native_affine, img_path, force=force)
        row = {"participant_id": spec.participant_id, "image": str(img_path), "label": spec.label, "age": spec.age, "sex": spec.sex}
        if template_space:
            anat_path = derivative_path(anatomy_root, spec.participant_id, "T1w", space=SPACE, res=resolution_label(grid_affine), desc="anatomy")
            save_image(anat.reshape(shape), grid_affine, anat_path, force=force)
            write_sidecar(anat_path, {"Description": "unposed, bias- and noise-free anatomy of the subject on the template grid (ground truth of registration)"},
                          force=force, root=anatomy_root, sources=[img_path], skull_stripped=True)
            row["template_image"] = str(anat_path)
        rows.append(row)
        truth_rows.append(
            {
                "participant_id": spec.participant_id,
                "label": spec.label,
                "severity": round(spec.severity, 6),
                "age_z": round(spec.age_z, 6),
                **{f"rot_{a}_deg": round(float(r), 6) for a, r in zip("xyz", spec.rotation)},
                **{f"trans_{a}_mm": round(float(t), 6) for a, t in zip("xyz", spec.translation)},
                "gain": round(spec.gain, 4),
            }
        )

    truth = out / "truth"
    tpl_img, tpl_mask = resample_template(shape, grid_affine)
    stem = f"space-{SPACE}"
    save_image(tpl_img, grid_affine, truth / f"{stem}_T1w.nii.gz", force=force)
    save_image(tpl_mask, grid_affine, truth / f"{stem}_desc-brain_mask.nii.gz", force=force, dtype=None)
    maps = {}
    for name, fld in (("disease", disease), ("confounder", age)):
        logj = fld.log_jacobian(tpl_points).reshape(shape).astype(np.float32)
        maps[name] = logj
        path = truth / f"{stem}_desc-{name}_logjacobian.nii.gz"
        save_image(logj, grid_affine, path, force=force)
        save_image((np.abs(logj) > MASK_THRESHOLD) & tpl_mask, grid_affine, truth / f"{stem}_desc-{name}_mask.nii.gz", force=force, dtype=None)
    write_table(truth / "subjects.tsv", pd.DataFrame(truth_rows), force=force)
    frame = pd.DataFrame(rows)
    write_participants(out, frame, {
        "label": {"Description": "diagnosis", "Levels": {"control": "healthy control", "patient": "planted disease deformation"}},
        "age": {"Description": "age at scan (drives the planted age deformation)", "Units": "year"},
        "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
    }, force=force)
    table = write_cohort(out / "cohort.csv", frame, image_columns=("image", "template_image"), force=force)
    record = provenance(
        "synth brain",
        params,
        seed=seed,
        Space=SPACE,
        Template="nilearn ICBM 2009a nonlinear symmetric (1 mm), skull-stripped",
        NativeGrid={"shape": native_shape, "affine": native_affine, "orientation": orientation.upper()},
        TemplateGrid={"shape": shape, "affine": grid_affine},
        Disease={"centres_mm": disease.centres, "radii_mm": disease.radii, "radial_amplitude": disease.radial, "meaning": "log-Jacobian at severity 1; patients have severity ~ U(0.5, 1.5)"},
        Confounder={"column": "age", "centres_mm": age.centres, "radii_mm": age.radii, "radial_amplitude": age.radial, "meaning": "log-Jacobian at +1 SD of age (age_z = 1)"},
        MaskThreshold=MASK_THRESHOLD,
    )
    write_json(truth / "truth.json", record, force=force)
    write_sidecar(out / "cohort.csv", record, force=force)
    return table


def _check_brain_params(n_subjects, voxel_size, confound_strength, patient_fraction, noise, bias, age_sd) -> None:
    if n_subjects < 2:
        raise InputError(f"n-subjects must be at least 2 (got {n_subjects})")
    if not 0.5 <= voxel_size <= 10:
        raise InputError(f"voxel-size must be between 0.5 and 10 mm (got {voxel_size})")
    if not 0 <= confound_strength < 1:
        raise InputError(f"confound-strength must be in [0, 1) (got {confound_strength})")
    if not 0 < patient_fraction < 1:
        raise InputError(f"patient-fraction must be in (0, 1) (got {patient_fraction})")
    if noise < 0 or bias < 0 or age_sd <= 0:
        raise InputError("noise and bias must be >= 0 and age-sd > 0")
    if round(n_subjects * patient_fraction) in (0, n_subjects):
        raise InputError(f"n-subjects {n_subjects} with patient-fraction {patient_fraction} gives a single class")
