"""Per-feature GLM tests for confounding (papers/confounder-aware-saliency.txt §2.1).

For every feature j the model ``f_j = b0 + b1 * s + sum_k bk * z_k`` is fitted by ordinary least
squares, with ``s`` the model's prediction score and ``z_k`` the confounders. A numeric
confounder is tested with the t-test of its coefficient; a categorical one (one-hot, first level
dropped) with the F-test of its dummy columns (the t-test squared for two levels). Feature j is
*confounded* when any confounder is significant (p, or the Benjamini-Hochberg q across features
with ``fdr=True``, below ``threshold``), giving the binary mask ``b_j = 0``.

All M features are fitted at once (one QR of the shared design); the numbers equal statsmodels'
OLS per feature (tested to 1e-8). Features that do not vary (dead units) cannot be confounded
and are reported as constant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from neurointerp.errors import InputError
from neurointerp.group.fdr import fdr_bh


@dataclass
class Design:
    matrix: np.ndarray  # (N, P)
    columns: list[str]  # column names
    terms: dict[str, list[int]] = field(default_factory=dict)  # confounder -> its columns
    kinds: dict[str, str] = field(default_factory=dict)  # confounder -> numeric | categorical


def build_design(score: np.ndarray, confounders, names: list[str], where: str = "cohort") -> Design:
    """Design ``[1, s, z...]`` from a pandas frame of confounder columns (validated)."""
    import pandas as pd

    n = len(score)
    cols = [np.ones(n), np.asarray(score, dtype=float)]
    columns = ["intercept", "score"]
    terms: dict[str, list[int]] = {}
    kinds: dict[str, str] = {}
    for name in names:
        if name not in confounders.columns:
            raise InputError(f"{where}: confounder column '{name}' not found (columns: {', '.join(map(str, confounders.columns))})")
        values = confounders[name]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all():
            v = numeric.to_numpy(dtype=float)
            if np.ptp(v) == 0:
                raise InputError(f"{where}: confounder '{name}' is constant ({v[0]:g}); it cannot be tested")
            terms[name] = [len(cols)]
            kinds[name] = "numeric"
            cols.append(v)
            columns.append(name)
        else:
            levels = sorted(values.astype(str).unique())
            if len(levels) < 2:
                raise InputError(f"{where}: confounder '{name}' has a single level ('{levels[0]}'); it cannot be tested")
            terms[name] = []
            kinds[name] = "categorical"
            for level in levels[1:]:
                terms[name].append(len(cols))
                cols.append((values.astype(str) == level).to_numpy(dtype=float))
                columns.append(f"{name}[{level}]")
    x = np.column_stack(cols)
    if n <= x.shape[1]:
        raise InputError(f"{where}: {n} subjects for a GLM with {x.shape[1]} parameters; need more subjects than parameters")
    rank = np.linalg.matrix_rank(x)
    if rank < x.shape[1]:
        raise InputError(f"{where}: the confounders are collinear with each other or with the prediction score (design rank {rank} < {x.shape[1]})")
    return Design(x, columns, terms, kinds)


def fit_ols(x: np.ndarray, y: np.ndarray):
    """OLS of every column of ``y`` on ``x``: (beta (P, M), residual variance (M,), (X'X)^-1, df)."""
    n, p = x.shape
    q, r = np.linalg.qr(x)
    beta = np.linalg.solve(r, q.T @ y)
    resid = y - x @ beta
    df = n - p
    sigma2 = (resid * resid).sum(axis=0) / df
    rinv = np.linalg.solve(r, np.eye(p))
    xtx_inv = rinv @ rinv.T
    return beta, sigma2, xtx_inv, df


def confound_glm(features: np.ndarray, score: np.ndarray, confounders, names: list[str], threshold: float = 0.05, fdr: bool = False, where: str = "cohort"):
    """Test every feature; returns ``(table, mask)``.

    ``table`` (pandas) has one row per feature: coefficients, t and p of the score and of every
    confounder column, the p-value (t- or F-test) of every confounder, ``constant`` and
    ``confounded``; ``mask`` is ``b`` (1 = keep the feature, 0 = confounded).
    """
    import pandas as pd

    if not 0 < threshold < 1:
        raise InputError(f"threshold must be in (0, 1) (got {threshold})")
    f = np.asarray(features, dtype=float)
    if f.ndim != 2 or f.shape[0] != len(score):
        raise InputError(f"features {f.shape} do not match {len(score)} scores")
    design = build_design(score, confounders, names, where=where)
    x = design.matrix
    beta, sigma2, xtx_inv, df = fit_ols(x, f)
    constant = np.ptp(f, axis=0) <= 1e-12 * np.maximum(1.0, np.abs(f).max(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(np.outer(np.diag(xtx_inv), sigma2))
        t = beta / se
        p = 2.0 * stats.t.sf(np.abs(t), df)
    t[:, constant] = np.nan
    p[:, constant] = np.nan
    table = {"feature": np.arange(f.shape[1])}
    for i, col in enumerate(design.columns):
        table[f"beta_{col}"] = beta[i]
        if col != "intercept":
            table[f"t_{col}"] = t[i]
            table[f"p_{col}"] = p[i]
    significant = np.zeros(f.shape[1], dtype=bool)
    for name, idx in design.terms.items():
        if len(idx) == 1:
            pt = p[idx[0]]
        else:  # F-test of the dummy columns: (C b)' (C (X'X)^-1 C')^-1 (C b) / (k sigma2)
            k = len(idx)
            sub = np.linalg.inv(xtx_inv[np.ix_(idx, idx)])
            b = beta[idx]
            with np.errstate(divide="ignore", invalid="ignore"):
                fstat = np.einsum("im,ij,jm->m", b, sub, b) / (k * sigma2)
                pt = stats.f.sf(fstat, k, df)
            pt[constant] = np.nan
            table[f"F_{name}"] = fstat
        table[f"ptest_{name}"] = pt
        if fdr:
            qv = fdr_bh(pt)
            table[f"q_{name}"] = qv
            pt = qv
        significant |= np.nan_to_num(pt, nan=1.0) < threshold
    table["constant"] = constant
    table["confounded"] = significant
    mask = (~significant).astype(np.uint8)
    return pd.DataFrame(table), mask, design
