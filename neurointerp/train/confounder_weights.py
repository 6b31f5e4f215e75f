"""Confounder-balanced sampling: training draws in which the confounders no longer predict the class.

``train --confounder age --balance-confounders`` draws each class's training samples in proportion
to *overlap weights* (Li, Morgan & Zaslavsky 2018, *Balancing covariates via propensity score
weighting*, JASA 113:390-400; for more than two classes the generalised overlap weights of Li & Li
2019, Ann Appl Stat 13:2389-2415): participant ``i`` of class ``y_i`` gets

    w_i = (1 / p(y_i | c_i)) / sum_k (1 / p(k | c_i))       (binary: 1 - p(y_i | c_i))

with ``p(k | c)`` a logistic (multinomial logistic) model of the class on the confounders ``c``,
fitted on the model's training rows (:func:`neurointerp.train.baseline.fit_logistic`). With
that model, the weighted mean of every confounder column is the same in both classes (exactly,
for the maximum-likelihood fit of two classes; to about 1e-4 SD with the tiny ridge penalty here;
within a few percent of the raw difference for more classes), so a network trained on the
class-balanced draws cannot lower its loss by reading the confounders' means. The weights are
bounded (at most 1), so, unlike inverse-probability weights (Linn et al. 2016), a participant
almost unique to its class given its confounders gets a small weight instead of a huge one: the
draws concentrate on the participants whose confounders both classes share.

The effective number of participants per class, ``(sum w)^2 / sum w^2``, and each confounder's
standardised difference between the classes before and after weighting are recorded with the
model; ``train`` warns in one line when a difference stays above ``MAX_DIFFERENCE`` or fewer than
``MIN_EFFECTIVE`` effective participants of a class remain.
"""

from __future__ import annotations

import numpy as np

from neurointerp.errors import InputError

#: ridge penalty of the propensity model: small enough that the weighted means balance (the exact
#: balance of overlap weights holds for the maximum-likelihood fit), large enough to stay finite
#: when the confounders separate the classes
PROPENSITY_PENALTY = 1e-6
#: effective participants per class below which train warns
MIN_EFFECTIVE = 10
#: standardised difference of a confounder between the classes, after weighting, above which train
#: warns (0.25: the usual limit of "balanced" in propensity-score practice, Stuart 2010)
MAX_DIFFERENCE = 0.25


def propensity_weights(table, fit_idx: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, dict]:
    """Sampling weights of the rows ``fit_idx`` (same order) and a record of them.

    ``table``: :class:`neurointerp.train.baseline.ConfounderTable` of the whole cohort (rows =
    data indices); ``targets``: class indices of every row.
    """
    from neurointerp.train.baseline import _standardise, fit_logistic, predict_logistic

    fit_idx = np.asarray(fit_idx, dtype=int)
    y = targets[fit_idx].astype(int)
    present = np.unique(y)
    if len(present) < 2:
        raise InputError("--balance-confounders: the training rows hold a single class")
    x, _ = _standardise(table.matrix[fit_idx], table.matrix[fit_idx[:1]], table.numeric)
    remap = {c: i for i, c in enumerate(present)}
    yk = np.array([remap[c] for c in y])
    w = fit_logistic(x, yk, len(present), penalty=PROPENSITY_PENALTY)
    prob = predict_logistic(w, x)
    inv = 1.0 / np.clip(np.c_[1.0 - prob, prob] if prob.ndim == 1 else prob, 1e-12, None)  # (N, K) 1 / p(k | c_i)
    weights = inv[np.arange(len(yk)), yk] / inv.sum(axis=1)
    effective = {int(c): float(weights[y == c].sum() ** 2 / np.sum(weights[y == c] ** 2)) for c in present}
    record = {
        "method": "overlap weights of a logistic propensity model of the class on the confounders (Li, Morgan & Zaslavsky 2018), class-balanced draws",
        "confounders": list(table.names),
        "effective_participants": effective,
        "participants": {int(c): int(np.sum(y == c)) for c in present},
    }
    return weights, record


def weighted_draws(members: np.ndarray, weights: np.ndarray, need: int, generator) -> np.ndarray:
    """``need`` draws (with replacement) from ``members`` in proportion to ``weights``."""
    import torch

    p = torch.as_tensor(weights / weights.sum(), dtype=torch.float64)
    pick = torch.multinomial(p, need, replacement=True, generator=generator).numpy()
    return members[pick]


def balance_check(table, idx: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> dict:
    """Standardised difference of each numeric confounder between the classes, before and after
    weighting (rows ``idx``; binary: class 1 vs class 0; multi-class: the largest pair)."""
    out = {}
    y = targets[idx].astype(int)
    classes = np.unique(y)
    for j, col in enumerate(table.columns):
        v = table.matrix[idx, j]
        sd = v.std() or 1.0
        raw, wtd = [], []
        for c in classes:
            m = y == c
            raw.append(v[m].mean())
            wtd.append(np.average(v[m], weights=weights[m]))
        out[col] = {"before": float((max(raw) - min(raw)) / sd), "after": float((max(wtd) - min(wtd)) / sd)}
    return out
