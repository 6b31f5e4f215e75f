"""antspyx plumbing: thread set-up before import, RAS arrays <-> ANTs images, seeds.

ANTs works in LPS physical coordinates; our arrays carry RAS affines (nibabel). The conversion
here is exact (a sign flip of x and y), so transforms written by ANTs apply to the original
NIfTI files with ``antsApplyTransforms`` as well.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
THREAD_VARIABLES = ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity; all CPUs where that is not known)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_threads(n_jobs: int = 1) -> int:
    """``$SLURM_CPUS_PER_TASK`` when set, else the CPUs of this machine shared by ``n_jobs``."""
    env = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, available_cpus() // max(1, n_jobs))


def set_threads(threads: int) -> None:
    """Set ITK/OpenMP/BLAS/torch threads. ITK reads its variable when ``ants`` is first imported."""
    threads = max(1, int(threads))
    for var in THREAD_VARIABLES:
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def caller_threads_kept():
    """Inside: set threads freely; on leaving, the thread variables and torch's thread count are
    put back as they were (a library call of preprocess must not leave the rest of the process on
    its ITK threads)."""
    saved = {var: os.environ.get(var) for var in THREAD_VARIABLES}
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)


_IMPORTED_WITH: list[str | None] = []  # ITK's thread variable when ants was first imported by us


def itk_threads_fixed_otherwise(threads: int) -> bool:
    """True when ``ants`` is already imported in this process with another ITK thread count.

    ITK reads its thread count once, when ``ants`` is imported: a later ``--threads`` cannot change
    it in this process, and a multi-threaded registration is not repeatable run to run (the thread
    pool splits the metric's work by timing). Callers then run each subject in a fresh process.
    """
    if "ants" not in sys.modules:
        return False
    if not _IMPORTED_WITH:  # imported by someone else: its thread count is unknown
        return True
    return _IMPORTED_WITH[0] != str(max(1, int(threads)))


def import_ants(seed: int | None = None):
    """Import antspyx (after :func:`set_threads`) and fix the seed of its random sampling."""
    if "ants" not in sys.modules and not _IMPORTED_WITH:
        _IMPORTED_WITH.append(os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"))
    import ants

    if seed is not None:
        # ants.registration appends --random-seed when this is set; set_ants_deterministic
        # would also force one thread and refuse the non-"Repro" registrations.
        ants.config._random_seed = ants_seed(seed)
    return ants


def ants_seed(seed: int) -> int:
    """The ``--random-seed`` given to antsRegistration for our ``seed``.

    antsRegistration treats a seed of 0 as *no seed* (the sampling then changes from run to run),
    so seeds are shifted by one: ``--seed 0`` (the default) is ANTs seed 1 and repeatable.
    """
    seed = int(seed)
    return seed + 1 if seed >= 0 else seed


def to_ants(data: np.ndarray, affine: np.ndarray):
    """An ANTs image of ``data`` on the grid of the RAS ``affine`` (any voxel orientation)."""
    import ants

    lps = _LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    direction = lps[:3, :3] / spacing
    return ants.from_numpy(
        np.ascontiguousarray(data, dtype=np.float32),
        origin=tuple(float(v) for v in lps[:3, 3]),
        spacing=tuple(float(v) for v in spacing),
        direction=direction,
    )


def ants_affine(image) -> np.ndarray:
    """The RAS affine of an ANTs image."""
    direction = np.asarray(image.direction, dtype=np.float64)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.spacing, dtype=np.float64)
    lps[:3, 3] = image.origin
    return _LPS @ lps


def from_ants(image) -> tuple[np.ndarray, np.ndarray]:
    """``(data float32, RAS affine)`` of an ANTs image."""
    return np.asarray(image.numpy(), dtype=np.float32), ants_affine(image)


def empty_grid(shape, affine):
    """An all-zero ANTs image on a grid, used as the reference of a resampling."""
    return to_ants(np.zeros(tuple(int(s) for s in shape), dtype=np.float32), affine)


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def smooth_for(image, target_voxel: float):
    """Low-pass an ANTs image before sampling it at ``target_voxel`` mm (anti-aliasing)."""
    import ants

    src = float(np.max(voxel_sizes(ants_affine(image))))
    if target_voxel <= src * 1.2:
        return image
    sigma_mm = np.sqrt(target_voxel**2 - src**2) / 2.3548
    return ants.smooth_image(image, float(sigma_mm), sigma_in_physical_coordinates=True)


def resample_to(image, voxel: float, interpolation: str = "linear"):
    """Anti-aliased resampling of an ANTs image to an isotropic ``voxel`` mm grid."""
    import ants

    src = voxel_sizes(ants_affine(image))
    if np.allclose(src, voxel, rtol=0.02):
        return image
    interp = 0 if interpolation == "linear" else 1
    return ants.resample_image(smooth_for(image, voxel), (voxel, voxel, voxel), False, interp)
