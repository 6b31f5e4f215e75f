"""SLURM job arrays: which share of a cohort this task processes.

``--array-index`` defaults to ``$SLURM_ARRAY_TASK_ID`` (made zero-based with
``$SLURM_ARRAY_TASK_MIN``), ``--array-size`` to ``$SLURM_ARRAY_TASK_COUNT``; without SLURM a
run is task 0 of 1. Task ``k`` of ``n`` takes rows ``k, k + n, k + 2n, ...`` so every task gets
a similar mix of the cohort.
"""

from __future__ import annotations

import os

from neurointerp.errors import InputError


def resolve_array(array_index: int | None = None, array_size: int | None = None) -> tuple[int, int]:
    """``(index, size)`` from the arguments or the SLURM environment, validated."""
    if array_index is None:
        env = os.environ.get("SLURM_ARRAY_TASK_ID", "").strip()
        low = os.environ.get("SLURM_ARRAY_TASK_MIN", "0").strip()
        array_index = int(env) - (int(low) if low.isdigit() else 0) if env.isdigit() else 0
    if array_size is None:
        env = os.environ.get("SLURM_ARRAY_TASK_COUNT", "").strip()
        array_size = int(env) if env.isdigit() else 1
    if array_size < 1:
        raise InputError(f"--array-size must be at least 1 (got {array_size})")
    if not 0 <= array_index < array_size:
        raise InputError(f"--array-index {array_index} is outside 0..{array_size - 1}")
    return int(array_index), int(array_size)


def array_share(n_items: int, array_index: int | None = None, array_size: int | None = None) -> list[int]:
    """Indices of the items this array task processes."""
    index, size = resolve_array(array_index, array_size)
    return list(range(index, n_items, size))
