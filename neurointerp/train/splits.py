"""Subject-level, stratified k-fold cross-validation.

All rows (sessions) of one participant go to the same fold. Participants are stratified by
their label (classification; a participant whose sessions carry different labels counts under
the most frequent one) or by quantile bins of their mean target (regression), and dealt to the
folds so that every fold holds about the same number of rows of every stratum.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from neurointerp.errors import InputError


def stratified_group_kfold(
    groups: Sequence[str],
    strata: Sequence,
    n_folds: int,
    seed: int = 0,
) -> np.ndarray:
    """Fold number (0..n_folds-1) of every row.

    Parameters
    ----------
    groups
        Participant id of every row; rows of one participant share a fold.
    strata
        Stratum of every row (class label, or a target bin).
    n_folds
        Number of folds (at least 2, at most the number of participants).
    seed
        Shuffles participants within strata (same seed, same folds).
    """
    groups = np.asarray([str(g) for g in groups])
    strata = np.asarray([str(s) for s in strata])
    if n_folds < 2:
        raise InputError(f"--folds {n_folds}: need at least 2 folds for cross-validation")
    uniq, inverse = np.unique(groups, return_inverse=True)
    if len(uniq) < n_folds:
        raise InputError(f"--folds {n_folds}: only {len(uniq)} participants, fewer than the folds")
    # one stratum and one row count per participant
    g_stratum = []
    g_rows = np.bincount(inverse)
    for g in range(len(uniq)):
        vals, counts = np.unique(strata[inverse == g], return_counts=True)
        g_stratum.append(vals[np.argmax(counts)])
    g_stratum = np.asarray(g_stratum)
    rng = np.random.default_rng(seed)
    g_fold = np.full(len(uniq), -1)
    total = np.zeros(n_folds, dtype=int)
    for s in sorted(set(g_stratum)):
        members = np.flatnonzero(g_stratum == s)
        members = members[rng.permutation(len(members))]
        # biggest participants first (stable, so the shuffle decides among equals)
        members = members[np.argsort(-g_rows[members], kind="stable")]
        per = np.zeros(n_folds, dtype=int)
        for g in members:
            f = min(range(n_folds), key=lambda k: (per[k], total[k], k))
            g_fold[g] = f
            per[f] += g_rows[g]
            total[f] += g_rows[g]
    return g_fold[inverse]


def regression_strata(values: Sequence[float], groups: Sequence[str], n_bins: int) -> np.ndarray:
    """Quantile bin (0..n_bins-1) of each participant's mean target, per row."""
    values = np.asarray(values, dtype=float)
    groups = np.asarray([str(g) for g in groups])
    uniq, inverse = np.unique(groups, return_inverse=True)
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    n_bins = max(1, min(n_bins, len(uniq)))
    order = np.argsort(np.argsort(means, kind="stable"), kind="stable")
    bins = (order * n_bins) // len(uniq)
    return bins[inverse]


def stratified_group_split(groups: Sequence[str], strata: Sequence, fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of the rows in a subject-level, stratified validation split.

    In every stratum, ``round(fraction * participants)`` participants (at least one when the
    stratum has two or more, never all) are drawn at random (``seed``); all rows of a drawn
    participant are in the split.
    """
    groups = np.asarray([str(g) for g in groups])
    strata = np.asarray([str(s) for s in strata])
    uniq, inverse = np.unique(groups, return_inverse=True)
    g_stratum = []
    for g in range(len(uniq)):
        vals, counts = np.unique(strata[inverse == g], return_counts=True)
        g_stratum.append(vals[np.argmax(counts)])
    g_stratum = np.asarray(g_stratum)
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(uniq), dtype=bool)
    for s in sorted(set(g_stratum)):
        members = np.flatnonzero(g_stratum == s)
        members = members[rng.permutation(len(members))]
        k = int(round(fraction * len(members)))
        if len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        else:
            k = 0
        chosen[members[:k]] = True
    return chosen[inverse]
