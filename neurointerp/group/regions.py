"""Atlas region summaries of map sets: per-subject region means, then per-group tables.

Per map only the mean (and mean |value|) inside each region is kept -- an ``N x R`` table, a
few kB per subject -- so region tables stream with the voxelwise statistics.
"""

from __future__ import annotations

import numpy as np


class RegionMeans:
    """Accumulates each map's mean and mean |value| per atlas region (``labels``: int, grid-flat)."""

    def __init__(self, labels: np.ndarray, table, n_maps: int, mask: np.ndarray | None = None):
        lab = np.asarray(labels).reshape(-1).astype(np.int64)
        if mask is not None:
            lab = np.where(np.asarray(mask).reshape(-1), lab, 0)
        present = [int(i) for i in table.index if np.any(lab == i)]
        self.region_ids = np.asarray(present, dtype=np.int64)
        self.names = [str(table.loc[i]) for i in present]
        lookup = np.zeros(max(int(lab.max()), int(self.region_ids.max()) if present else 0) + 1, dtype=np.int64)
        lookup[self.region_ids] = np.arange(1, len(present) + 1)
        self.code = lookup[lab]  # 0 = outside any region, k = k-th region
        self.sizes = np.bincount(self.code, minlength=len(present) + 1)[1:]
        self.means = np.zeros((n_maps, len(present)))
        self.abs_means = np.zeros((n_maps, len(present)))

    def update(self, idx, Y: np.ndarray) -> None:
        R = len(self.region_ids)
        sel = self.code > 0
        code = self.code[sel] - 1
        for row, y in zip(np.asarray(idx), np.asarray(Y, dtype=np.float64)):
            v = y[sel]
            self.means[row] = np.bincount(code, weights=v, minlength=R) / self.sizes
            self.abs_means[row] = np.bincount(code, weights=np.abs(v), minlength=R) / self.sizes


def region_table(
    regions: RegionMeans,
    groups: list[str],
    group_order: list[str],
    X: np.ndarray | None = None,
    contrast: np.ndarray | None = None,
    contrast_groups: tuple[str, str] | None = None,
    t_map: np.ndarray | None = None,
):
    """One row per region: size, per-group mean / median / mean |x| / rank, the effect size
    (Cohen's d of the contrast groups), the region-level GLM t/p/q of the contrast on the
    subjects' region means (same design as the voxelwise model) and the mean voxel t.

    ``rank`` orders regions by |t| of the contrast (by overall mean |x| without one);
    ``rank_<group>`` orders them by the group's mean |x| (importance of an attribution map).
    """
    import pandas as pd

    from neurointerp.group.fdr import fdr_bh
    from neurointerp.group.glm import ols_arrays, t_to_p

    groups = np.asarray(groups)
    out = pd.DataFrame({"index": regions.region_ids, "name": regions.names, "n_voxels": regions.sizes})
    for g in group_order:
        sel = groups == g
        m = regions.means[sel]
        out[f"mean_{g}"] = m.mean(axis=0)
        out[f"median_{g}"] = np.median(m, axis=0)
        out[f"sd_{g}"] = m.std(axis=0, ddof=1) if sel.sum() > 1 else 0.0
        out[f"meanabs_{g}"] = regions.abs_means[sel].mean(axis=0)
        out[f"rank_{g}"] = _rank(out[f"meanabs_{g}"].to_numpy())
    if contrast_groups is not None:
        a, b = contrast_groups
        ma, mb = regions.means[groups == a], regions.means[groups == b]
        na, nb = len(ma), len(mb)
        pooled = np.sqrt(((na - 1) * ma.var(axis=0, ddof=1) + (nb - 1) * mb.var(axis=0, ddof=1)) / max(na + nb - 2, 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            out["effect_size_d"] = np.where(pooled > 0, (ma.mean(axis=0) - mb.mean(axis=0)) / pooled, 0.0)
    if X is not None and contrast is not None:
        res = ols_arrays(X, regions.means, contrast)
        out["estimate"] = res.effect
        out["t"] = res.t
        out["p"] = t_to_p(res.t, res.df)
        out["q_fdr"] = fdr_bh(out["p"].to_numpy())
        out["rank"] = _rank(np.abs(res.t))
    else:
        out["rank"] = _rank(regions.abs_means.mean(axis=0))
    if t_map is not None:
        t = np.asarray(t_map, dtype=np.float64).reshape(-1)
        sel = regions.code > 0
        out["mean_voxel_t"] = np.bincount(regions.code[sel] - 1, weights=t[sel], minlength=len(regions.region_ids)) / regions.sizes
    return out.sort_values("rank", kind="mergesort").reset_index(drop=True)


def _rank(values: np.ndarray) -> np.ndarray:
    """1 = largest value (ties broken by order)."""
    order = np.argsort(-np.asarray(values, dtype=np.float64), kind="mergesort")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    return rank


def print_top_regions(table, n: int = 10, title: str = "Top regions") -> None:
    """Print the top ``n`` rows of a region table on stderr with rich (silenced by --quiet)."""
    from neurointerp.progress import is_quiet

    if is_quiet() or n <= 0 or len(table) == 0:
        return
    from rich.console import Console
    from rich.table import Table

    cols = ["rank", "name", "n_voxels"] + [c for c in ("effect_size_d", "t", "q_fdr") if c in table.columns]
    if "t" not in table.columns:
        cols += [c for c in table.columns if c.startswith("meanabs_")]
    rich_table = Table(title=title)
    for c in cols:
        rich_table.add_column(c, justify="left" if c == "name" else "right")
    for _, row in table.head(n).iterrows():
        rich_table.add_row(*[_fmt(row[c]) for c in cols])
    Console(stderr=True, width=max(100, Console(stderr=True).width)).print(rich_table)


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.3g}"
    return str(v)
