"""Family-wise error control by permutation of the max statistic, streamed over the maps.

The design is re-parameterised for a contrast ``c`` (Smith's / Beckmann's partition, as in
Winkler et al. 2014, NeuroImage 92:381): ``x = X (X'X)^-1 c / (c'(X'X)^-1 c)`` carries the
effect of interest and an orthonormal basis ``Z`` of ``X - x c'`` the nuisance, with
``x ⟂ Z``; the t of ``x`` in ``[x, Z]`` is the t of the contrast. Each permutation shuffles the
rows of ``x`` only and refits ``[x_pi, Z]`` (by Frisch-Waugh: ``r = x_pi - Z Z'x_pi``)::

    t_pi = r'Y / sqrt(r'r * (Y'Y - |Z'Y|^2 - (r'Y)^2 / r'r) / (N - p))

so a pass over the maps only has to accumulate ``Z'Y``, ``Y'Y`` and ``x_pi'Y`` for a block of
permutations -- memory ``(block + p) x V`` doubles, independent of the number of maps; more
permutations than fit the memory budget take more passes. The FWE p-value of a voxel is
``(1 + #{pi: max_v |t_pi| >= |t|}) / (1 + n_perm)``.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np


SUB = 32  # permutations whose t maps are formed at once (bounds the temporaries)


def partition_design(X: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x, Z)``: regressor of interest (N,) and orthonormal nuisance basis (N, p-1)."""
    X = np.asarray(X, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    D = np.linalg.inv(X.T @ X)
    x = X @ D @ c / float(c @ D @ c)
    Z = X - np.outer(x, c)
    u, s, _ = np.linalg.svd(Z, full_matrices=False)
    rank = int(np.sum(s > s.max() * 1e-10)) if s.size and s.max() > 0 else 0
    return x, u[:, :rank]


def permutation_t(x_perm: np.ndarray, Z: np.ndarray, G: np.ndarray, A: np.ndarray, yy: np.ndarray, df: int) -> np.ndarray:
    """t of each permuted regressor: ``x_perm`` (N, K), ``G = x_perm'Y`` (K, V), ``A = Z'Y``."""
    zx = Z.T @ x_perm  # (q, K)
    rr = np.einsum("nk,nk->k", x_perm, x_perm) - np.einsum("qk,qk->k", zx, zx)
    rY = G - zx.T @ A
    rss0 = yy - np.einsum("qv,qv->v", A, A)
    rss = rss0[None, :] - rY**2 / rr[:, None]
    scale = np.maximum(yy, 1e-300)[None, :]
    rss = np.where(rss < 1e-12 * scale, 0.0, rss)
    den = np.sqrt(rr[:, None] * rss / df)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, rY / den, 0.0)


def permutations(n: int, n_perm: int, seed: int) -> np.ndarray:
    """``(n_perm, n)`` row permutations from ``seed`` (the same whatever the block size)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(int(n_perm))]) if n_perm > 0 else np.zeros((0, n), dtype=int)


def max_stat_fwe(
    batches: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]],
    X: np.ndarray,
    c: np.ndarray,
    mask: np.ndarray,
    n_perm: int,
    seed: int = 0,
    two_sided: bool = True,
    memory_mb: float = 512.0,
    observed_t: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FWE-corrected p-values by the max statistic over ``mask``.

    Parameters
    ----------
    batches
        Called once per pass; returns an iterator of ``(indices, Y)`` with ``Y`` (B, V_grid).
    X, c
        Design (N, p) and contrast (p,).
    mask
        Boolean (V_grid,) of the voxels tested.
    observed_t
        The observed t on the mask (computed from the same partition when not given).

    Returns
    -------
    p_fwe (V_mask,), max_null (n_perm,), t_observed (V_mask,)
    """
    X = np.asarray(X, dtype=np.float64)
    n, p = X.shape
    df = n - p
    x, Z = partition_design(X, c)
    perms = permutations(n, n_perm, seed)
    vm = int(np.count_nonzero(mask))
    per_perm = 8.0 * vm  # one row of G; t is computed in sub-blocks of SUB permutations
    block = int(max(1, min(max(n_perm, 1), (memory_mb * 2**20 - 8.0 * vm * (Z.shape[1] + 2)) // per_perm)))
    max_null = np.zeros(n_perm)
    A = yy = None
    start = 0
    first = True
    while first or start < n_perm:
        stop = min(n_perm, start + block)
        xp = np.column_stack([x] + [x[perms[k]] for k in range(start, stop)])  # column 0: identity
        G = np.zeros((xp.shape[1], vm))
        if first:
            A = np.zeros((Z.shape[1], vm))
            yy = np.zeros(vm)
        for idx, Y in batches():
            Ym = np.asarray(Y, dtype=np.float64)[:, mask]
            G += xp[idx].T @ Ym
            if first:
                A += Z[idx].T @ Ym
                yy += np.einsum("ij,ij->j", Ym, Ym)
        maxima = np.zeros(xp.shape[1])
        for s0 in range(0, xp.shape[1], SUB):
            t = permutation_t(xp[:, s0 : s0 + SUB], Z, G[s0 : s0 + SUB], A, yy, df)
            if first and s0 == 0:
                t_obs = t[0].copy() if observed_t is None else np.asarray(observed_t, dtype=np.float64)
            stat = np.abs(t) if two_sided else t
            maxima[s0 : s0 + SUB] = stat.max(axis=1) if vm else 0.0
        max_null[start:stop] = maxima[1 : 1 + stop - start]
        first = False
        start = stop
    obs = np.abs(t_obs) if two_sided else t_obs
    sorted_null = np.sort(max_null)
    # number of null maxima >= observed, with a relative tolerance for ties
    count = n_perm - np.searchsorted(sorted_null, obs * (1 - 1e-9) - 1e-12, side="left")
    p_fwe = (1.0 + count) / (1.0 + n_perm)
    return p_fwe, max_null, t_obs
