"""Synthetic per-subject log-Jacobian maps with known truth, for tests, benchmarks and demos.

Each subject's map is the exact log-Jacobian of ``severity * disease + age_z * age`` (the
analytic fields of :mod:`neurointerp.synth.brain`) on a template-space grid, plus Gaussian
noise, zero outside the template brain. Patients have severity ~ U(0.5, 1.5), controls 0;
``age_z`` correlates with diagnosis (``rho``), as in ``synth brain``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def synth_logjacobian_maps(
    out: str | os.PathLike,
    n_subjects: int = 30,
    voxel_size: float = 8.0,
    shape: tuple[int, int, int] | None = None,
    noise: float = 0.03,
    rho: float = 0.5,
    seed: int = 0,
    compress: bool = True,
) -> dict:
    """Write ``sub-<id>_space-..._desc-logjacobian.nii.gz`` maps and ``maps.tsv``.

    Returns a dict with ``table`` (path), ``shape``, ``affine``, ``disease_mask`` and
    ``brain_mask`` (boolean arrays on the grid).
    """
    import pandas as pd

    from neurointerp.atlases import grid_points, resample_template, working_grid
    from neurointerp.io import save_image
    from neurointerp.synth.brain import SPACE, age_field, disease_field

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grid_shape, affine = working_grid(voxel_size=voxel_size if shape is None else None, shape=shape)
    pts = grid_points(grid_shape, affine)
    _, brain = resample_template(grid_shape, affine)
    rng = np.random.default_rng(seed)
    disease, age = disease_field(), age_field()
    base_d = disease.log_jacobian(pts).reshape(grid_shape)
    rows = []
    ext = ".nii.gz" if compress else ".nii"
    for i in range(int(n_subjects)):
        patient = i % 2 == 1
        severity = float(rng.uniform(0.5, 1.5)) if patient else 0.0
        age_z = rho * (1.0 if patient else -1.0) + np.sqrt(1 - rho**2) * float(rng.standard_normal())
        field = disease.scaled(severity) + age.scaled(age_z) if severity else age.scaled(age_z)
        logj = field.log_jacobian(pts).reshape(grid_shape) + noise * rng.standard_normal(grid_shape)
        logj = np.where(brain, logj, 0.0).astype(np.float32)
        path = out / f"sub-{i:04d}_space-{SPACE}_desc-logjacobian{ext}"
        save_image(logj, affine, path, force=True)
        rows.append({"participant_id": f"{i:04d}", "map": path.name, "label": "patient" if patient else "control",
                     "age": round(70 + 8 * age_z, 3), "sex": "F" if rng.random() < 0.5 else "M", "severity": round(severity, 6)})
    table = out / "maps.tsv"
    pd.DataFrame(rows).to_csv(table, sep="\t", index=False)
    return {"table": table, "shape": grid_shape, "affine": affine, "disease_mask": (np.abs(base_d) > 0.05) & brain, "brain_mask": brain}
