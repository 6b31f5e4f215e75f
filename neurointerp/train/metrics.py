"""Held-out metrics: balanced accuracy, AUC (rank based), accuracy; MAE, RMSE and r for regression."""

from __future__ import annotations

import math

import numpy as np


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true``."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.size == 0:
        return float("nan")
    recalls = [float(np.mean(y_pred[y_true == c] == c)) for c in np.unique(y_true)]
    return float(np.mean(recalls))


def binary_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN with one class."""
    from scipy.stats import rankdata

    y_true = np.asarray(y_true).astype(bool)
    score = np.asarray(score, dtype=float)
    n_pos = int(y_true.sum())
    n_neg = int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    u = ranks[y_true].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, task: str) -> dict[str, float]:
    """``accuracy``, ``balanced_accuracy``, ``auc`` from class indices and scores.

    Binary: ``scores`` is P(class 1), the decision threshold 0.5. Multi-class: ``scores`` is
    ``(N, K)`` probabilities; the AUC is the macro average of one-vs-rest AUCs.
    """
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=float)
    if task == "binary":
        pred = (scores >= 0.5).astype(int)
        auc = binary_auc(y_true == 1, scores)
    else:
        pred = np.argmax(scores, axis=1)
        aucs = [binary_auc(y_true == k, scores[:, k]) for k in range(scores.shape[1]) if np.any(y_true == k)]
        aucs = [a for a in aucs if not math.isnan(a)]
        auc = float(np.mean(aucs)) if aucs else float("nan")
    return {
        "accuracy": float(np.mean(pred == y_true)) if y_true.size else float("nan"),
        "balanced_accuracy": balanced_accuracy(y_true, pred),
        "auc": auc,
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """``mae``, ``rmse`` and Pearson ``r`` (NaN when either side is constant)."""
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    if y_true.size == 0:
        return {"mae": float("nan"), "rmse": float("nan"), "r": float("nan")}
    err = y_pred - y_true
    if y_true.size > 1 and np.std(y_true) > 0 and np.std(y_pred) > 0:
        r = float(np.corrcoef(y_true, y_pred)[0, 1])
    else:
        r = float("nan")
    return {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2))), "r": r}
