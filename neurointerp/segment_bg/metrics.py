"""Segmentation metrics of §4.4 (Tables 1-2): accuracy, specificity, sensitivity, Dice.

Counts (TP, FP, TN, FN) are kept per class so that they can be pooled over slices, animals
and array tasks before the scores are computed (the paper pools the 40 slices of an animal).

Note: the paper's "specificity" column (e.g. 87.9 % for WM at 98.4 % accuracy) is far below
its accuracy, which is impossible for TN / (TN + FP) when the background dominates; it reads
like the precision TP / (TP + FP). Both are reported here, under their own names.
"""

from __future__ import annotations

import numpy as np

from neurointerp.errors import InputError

CLASSES = ("background", "WM", "GM", "CSF")
SCORES = ("accuracy", "specificity", "sensitivity", "precision", "dice")


def confusion(pred, truth) -> dict[str, int]:
    """TP, FP, TN, FN of two boolean arrays of the same shape."""
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    if p.shape != t.shape:
        raise InputError(f"metrics: prediction {p.shape} and truth {t.shape} differ in shape")
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return {"tp": tp, "fp": fp, "tn": int(p.size) - tp - fp - fn, "fn": fn}


def scores(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """Accuracy, specificity, sensitivity, precision and Dice (NaN where undefined)."""

    def ratio(a, b):
        return float(a) / float(b) if b else float("nan")

    return {
        "accuracy": ratio(tp + tn, tp + fp + tn + fn),
        "specificity": ratio(tn, tn + fp),
        "sensitivity": ratio(tp, tp + fn),
        "precision": ratio(tp, tp + fp),
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
    }


def segmentation_counts(pred_labels, true_labels, pred_mask=None, true_mask=None) -> list[dict]:
    """Rows of counts: one per tissue class, ``brain`` (any tissue vs background) and, given the
    masks, ``brain_mask`` (positioned mask vs true brain mask)."""
    p = np.asarray(pred_labels)
    t = np.asarray(true_labels)
    rows = [{"class": CLASSES[c], **confusion(p == c, t == c)} for c in range(1, len(CLASSES))]
    rows.append({"class": "brain", **confusion(p > 0, t > 0)})
    if pred_mask is not None and true_mask is not None:
        rows.append({"class": "brain_mask", **confusion(np.asarray(pred_mask) > 0, np.asarray(true_mask) > 0)})
    return rows


def score_table(rows):
    """Pool count rows by every column other than the counts and add the scores (a DataFrame)."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    keys = [c for c in frame.columns if c not in ("tp", "fp", "tn", "fn")]
    pooled = frame.groupby(keys, sort=False, as_index=False)[["tp", "fp", "tn", "fn"]].sum()
    sc = pd.DataFrame([scores(r.tp, r.fp, r.tn, r.fn) for r in pooled.itertuples()])
    return pd.concat([pooled.reset_index(drop=True), sc], axis=1)
