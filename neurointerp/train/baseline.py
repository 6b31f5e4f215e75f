"""Confounder-only baselines: how far the confounders alone predict the label.

``train --confounder age --confounder sex`` fits, for every model it trains, a logistic
(binary), multinomial logistic (multi-class) or linear (regression) model on the confounder
columns of the same training participants and predicts the same held-out participants (CV fold
or validation split). A model that does no better than this baseline may have learned the
confounder rather than the disease (papers/confounder-aware-saliency.txt §1).

Numeric columns are standardised with the training rows' mean and sd; a categorical column
becomes one indicator per level except the first (levels of the whole cohort, so held-out rows
never meet an unknown level). The logistic models carry a small ridge penalty
(``PENALTY`` on the standardised coefficients, intercepts free) so that a perfectly separating
confounder still gives finite, usable scores; with ``penalty=0`` they are the maximum-likelihood
fits (equal to statsmodels' ``Logit``/``MNLogit``, tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from neurointerp.errors import InputError

PENALTY = 1e-3


@dataclass
class ConfounderTable:
    """The confounders of a cohort: raw numeric matrix before standardisation."""

    names: list[str]
    columns: list[str]
    matrix: np.ndarray  # (N, P), numeric columns raw, categorical as 0/1 indicators
    numeric: np.ndarray  # (P,) bool: standardise this column
    kinds: dict[str, str] = field(default_factory=dict)


def confounder_table(frame, names: Sequence[str], rows: Sequence[int], where: str) -> ConfounderTable:
    """Validate and encode the confounder columns of a cohort frame (one line naming the row on error)."""
    import pandas as pd

    from neurointerp.io.cohort import MISSING, mostly_numeric_outlier

    names = list(dict.fromkeys(names))
    cols, columns, numeric, kinds = [], [], [], {}
    for name in names:
        if name not in frame.columns:
            raise InputError(f"{where}: confounder column '{name}' not found (columns: {', '.join(map(str, frame.columns))})")
        values = frame[name]
        missing = [rows[i] for i, v in enumerate(values) if v is None or str(v).strip().lower() in MISSING]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise InputError(f"{where} row {missing[0]}: confounder '{name}' is missing{more}; the confounder baseline needs every value")
        typo = mostly_numeric_outlier(list(values), list(rows))
        if typo is not None:
            raise InputError(f"{where} row {typo[0]}: {name} '{typo[1]}' is not a number (the other values of '{name}' are numbers)")
        num = pd.to_numeric(values, errors="coerce")
        if num.notna().all():
            v = num.to_numpy(dtype=float)
            if np.ptp(v) == 0:
                raise InputError(f"{where}: confounder '{name}' is constant ({v[0]:g}); it cannot predict anything")
            cols.append(v)
            columns.append(name)
            numeric.append(True)
            kinds[name] = "numeric"
        else:
            levels = sorted(values.astype(str).unique())
            if len(levels) < 2:
                raise InputError(f"{where}: confounder '{name}' has a single level ('{levels[0]}'); it cannot predict anything")
            kinds[name] = "categorical"
            for level in levels[1:]:
                cols.append((values.astype(str) == level).to_numpy(dtype=float))
                columns.append(f"{name}[{level}]")
                numeric.append(False)
    return ConfounderTable(names, columns, np.column_stack(cols), np.asarray(numeric), kinds)


def _standardise(x_train: np.ndarray, x_test: np.ndarray, numeric: np.ndarray):
    mean = np.where(numeric, x_train.mean(axis=0), 0.0)
    sd = np.where(numeric, x_train.std(axis=0), 1.0)
    sd = np.where(sd > 0, sd, 1.0)
    return (x_train - mean) / sd, (x_test - mean) / sd


def fit_logistic(x: np.ndarray, y: np.ndarray, n_classes: int, penalty: float = PENALTY) -> np.ndarray:
    """Multinomial (``n_classes`` > 2) or binary logistic regression; returns ``(P + 1, K')`` weights
    (first row: intercepts; ``K' = 1`` for binary). Loss: mean negative log-likelihood + ``penalty``/2 * |w|^2."""
    from scipy.optimize import minimize
    from scipy.special import expit, log_softmax

    n, p = x.shape
    xa = np.c_[np.ones(n), x]
    k = 1 if n_classes == 2 else n_classes
    reg = np.r_[0.0, np.ones(p)][:, None]

    def loss_grad(w_flat):
        w = w_flat.reshape(p + 1, k)
        z = xa @ w
        if k == 1:
            z = z[:, 0]
            nll = np.mean(np.logaddexp(0.0, z) - y * z)
            g = xa.T @ (expit(z) - y) / n
            g = g[:, None]
        else:
            lp = log_softmax(z, axis=1)
            nll = -np.mean(lp[np.arange(n), y])
            prob = np.exp(lp)
            prob[np.arange(n), y] -= 1.0
            g = xa.T @ prob / n
        nll += 0.5 * penalty * float(np.sum(reg * w**2))
        g = g + penalty * reg * w
        return nll, g.ravel()

    res = minimize(loss_grad, np.zeros((p + 1) * k), jac=True, method="L-BFGS-B", options={"maxiter": 2000, "gtol": 1e-10, "ftol": 1e-14})
    return res.x.reshape(p + 1, k)


def predict_logistic(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    from scipy.special import expit, softmax

    z = np.c_[np.ones(len(x)), x] @ w
    return expit(z[:, 0]) if w.shape[1] == 1 else softmax(z, axis=1)


def baseline_scores(table: ConfounderTable, train_idx: np.ndarray, test_idx: np.ndarray, targets: np.ndarray, task: str, n_classes: int, penalty: float = PENALTY) -> np.ndarray:
    """Scores of the confounder-only model for ``test_idx``, fitted on ``train_idx``: P(class 1)
    (binary), class probabilities (multi-class) or predictions (regression)."""
    x_tr, x_te = _standardise(table.matrix[train_idx], table.matrix[test_idx], table.numeric)
    if task == "regression":
        y = targets[train_idx].astype(float)
        xa = np.c_[np.ones(len(x_tr)), x_tr]
        beta, *_ = np.linalg.lstsq(xa, y, rcond=None)
        return np.c_[np.ones(len(x_te)), x_te] @ beta
    y = targets[train_idx].astype(int)
    if task == "multiclass" and len(np.unique(y)) < n_classes:
        # a class absent from the training rows: fit the classes present, give the others 0
        present = np.unique(y)
        remap = {c: i for i, c in enumerate(present)}
        w = fit_logistic(x_tr, np.array([remap[v] for v in y]), max(len(present), 2), penalty)
        sub = predict_logistic(w, x_te)
        out = np.zeros((len(x_te), n_classes))
        if sub.ndim == 1:
            out[:, present[0]], out[:, present[1]] = 1 - sub, sub
        else:
            out[:, present] = sub
        return out
    w = fit_logistic(x_tr, y, n_classes if task == "multiclass" else 2, penalty)
    return predict_logistic(w, x_te)
