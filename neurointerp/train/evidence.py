"""Held-out evidence of skill: figures with confidence intervals, a test against chance, and
the comparison with a confounder-only baseline.

Everything is computed per participant (the mean score of a participant's held-out images, the
participant's most frequent label), so that sessions of one person do not count as independent
evidence.

* binary: balanced accuracy (threshold 0.5), AUC with a stratified bootstrap 95 % CI; the test
  against chance is the one-sided Mann-Whitney U test of AUC > 0.5 (the exact permutation
  distribution of the AUC for small samples without ties; :func:`scipy.stats.mannwhitneyu`).
* multi-class: balanced accuracy (argmax) with a bootstrap CI and the macro one-vs-rest AUC;
  the test is a permutation test of the balanced accuracy (labels shuffled, ``N_PERM`` times).
* regression: R^2 on the held-out subjects (1 - SS_res / SS_tot about their own mean), Pearson r
  (bootstrap CI), MAE; the test is a permutation test of r > 0.

``beats_chance`` is ``p < ALPHA``. With a confounder baseline (scores of a model fitted on the
confounders alone, same training rows, same held-out rows) the baseline's figures and the gain
of the model over it (AUC, balanced accuracy for multi-class, R^2 for regression) are added,
the gain with a paired bootstrap 95 % CI; ``beats_baseline`` is a CI that lies above 0,
``predictive`` a baseline that beats chance itself (same test as the model), and ``confounded``
(the warning of ``train``) a predictive baseline that the model does not beat.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

ALPHA = 0.05
N_BOOT = 2000
N_PERM = 5000

PRIMARY = {"binary": "auc", "multiclass": "balanced_accuracy", "regression": "r2"}
NAMES = {"auc": "AUC", "balanced_accuracy": "balanced accuracy", "r2": "R²", "r": "r"}


def per_participant(groups: Sequence[str], y: np.ndarray, scores: np.ndarray, task: str):
    """``(ids, y, scores)`` with one entry per participant: mean score, most frequent label."""
    groups = np.asarray([str(g) for g in groups])
    y = np.asarray(y)
    scores = np.asarray(scores, dtype=float)
    ids = list(dict.fromkeys(groups))
    if len(ids) == len(groups):
        return ids, y, scores
    ys, ss = [], []
    for g in ids:
        m = groups == g
        if task == "regression":
            ys.append(float(np.mean(y[m])))
        else:
            vals, counts = np.unique(y[m], return_counts=True)
            ys.append(vals[np.argmax(counts)])
        ss.append(scores[m].mean(axis=0))
    return ids, np.asarray(ys), np.asarray(ss)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    from scipy.stats import rankdata

    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = rankdata(np.r_[pos, neg])
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def _auc_rows(y: np.ndarray, s: np.ndarray) -> float:
    y = np.asarray(y).astype(bool)
    return _auc(s[y], s[~y])


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    classes = np.unique(y)
    if len(classes) == 0:
        return float("nan")
    return float(np.mean([np.mean(pred[y == c] == c) for c in classes]))


def _macro_auc(y: np.ndarray, s: np.ndarray) -> float:
    aucs = [_auc_rows(y == k, s[:, k]) for k in range(s.shape[1]) if np.any(y == k) and np.any(y != k)]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0:
        return float("nan")
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot


def _pearson(y: np.ndarray, pred: np.ndarray) -> float:
    if len(y) < 3 or np.std(y) == 0 or np.std(pred) == 0:
        return float("nan")
    return float(np.corrcoef(y, pred)[0, 1])


def figures(y: np.ndarray, s: np.ndarray, task: str) -> dict[str, float]:
    """The point figures of held-out predictions (one row per participant)."""
    y = np.asarray(y)
    s = np.asarray(s, dtype=float)
    if task == "binary":
        yi = y.astype(int)
        pred = (s >= 0.5).astype(int)
        return {
            "balanced_accuracy": _balanced_accuracy(yi, pred),
            "accuracy": float(np.mean(pred == yi)),
            "auc": _auc_rows(yi == 1, s),
        }
    if task == "multiclass":
        yi = y.astype(int)
        pred = np.argmax(s, axis=1)
        return {
            "balanced_accuracy": _balanced_accuracy(yi, pred),
            "accuracy": float(np.mean(pred == yi)),
            "auc": _macro_auc(yi, s),
        }
    y = y.astype(float)
    return {"r2": _r2(y, s), "r": _pearson(y, s), "mae": float(np.mean(np.abs(s - y)))}


def _boot_indices(y: np.ndarray, task: str, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """``(n_boot, n)`` resampled row indices; stratified by class for classification."""
    n = len(y)
    if task == "regression":
        return rng.integers(0, n, size=(n_boot, n))
    parts = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        parts.append(members[rng.integers(0, len(members), size=(n_boot, len(members)))])
    return np.concatenate(parts, axis=1)


def _primary_of(y: np.ndarray, s: np.ndarray, task: str) -> float:
    if task == "binary":
        return _auc_rows(y.astype(int) == 1, s)
    if task == "multiclass":
        return _balanced_accuracy(y.astype(int), np.argmax(s, axis=1))
    return _r2(y.astype(float), s)


def _ci(values: np.ndarray) -> list[float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(v, [2.5, 97.5])
    return [float(lo), float(hi)]


def chance_test(y: np.ndarray, s: np.ndarray, task: str, seed: int = 0) -> tuple[float, str]:
    """One-sided p-value that the held-out predictions beat chance, and the test's name."""
    from scipy import stats

    y = np.asarray(y)
    s = np.asarray(s, dtype=float)
    if task == "binary":
        yi = y.astype(int)
        pos, neg = s[yi == 1], s[yi == 0]
        if len(pos) == 0 or len(neg) == 0:
            return float("nan"), "Mann-Whitney U (needs both classes)"
        res = stats.mannwhitneyu(pos, neg, alternative="greater")
        return float(res.pvalue), "one-sided Mann-Whitney U test of AUC > 0.5"
    rng = np.random.default_rng(seed)
    if task == "multiclass":
        yi = y.astype(int)
        pred = np.argmax(s, axis=1)
        observed = _balanced_accuracy(yi, pred)
        perms = np.array([_balanced_accuracy(rng.permutation(yi), pred) for _ in range(N_PERM)])
        p = (1 + int(np.sum(perms >= observed - 1e-12))) / (N_PERM + 1)
        return float(p), f"permutation test of the balanced accuracy ({N_PERM} label permutations)"
    yf = y.astype(float)
    observed = _pearson(yf, s)
    if not math.isfinite(observed):
        return float("nan"), "permutation test of Pearson r > 0 (constant predictions)"
    sc = (s - s.mean()) / s.std()
    perm_y = np.stack([rng.permutation(yf) for _ in range(N_PERM)])
    perm_y = (perm_y - perm_y.mean(axis=1, keepdims=True)) / perm_y.std(axis=1, keepdims=True)
    perms = perm_y @ sc / len(sc)
    p = (1 + int(np.sum(perms >= observed - 1e-12))) / (N_PERM + 1)
    return float(p), f"permutation test of Pearson r > 0 ({N_PERM} permutations)"


def heldout_evidence(
    y: np.ndarray,
    scores: np.ndarray,
    task: str,
    groups: Sequence[str],
    *,
    source: str,
    description: str,
    baseline_scores: np.ndarray | None = None,
    confounders: Sequence[str] = (),
    selected_on_split: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """The evidence record of held-out predictions (see the module docstring).

    ``y``: class index or target per row; ``scores``: P(class 1) (binary), ``(N, K)``
    probabilities (multi-class) or predictions (regression); ``groups``: participant per row.
    ``source``: ``cross-validation``, ``held-out fold`` or ``validation split``;
    ``selected_on_split``: the split also chose the checkpoint (early stopping), so its figures
    are optimistic.
    """
    ids, yp, sp = per_participant(groups, np.asarray(y), np.asarray(scores, dtype=float), task)
    n = len(ids)
    rec: dict[str, Any] = {
        "source": source,
        "description": description,
        "task": task,
        "n_participants": n,
        "n_images": int(len(np.asarray(y))),
        "primary": PRIMARY[task],
        "selected_on_split": bool(selected_on_split),
        "alpha": ALPHA,
    }
    if task != "regression":
        rec["class_counts"] = [int(np.sum(yp.astype(int) == k)) for k in range(int(np.max(yp.astype(int))) + 1)] if n else []
        rec["chance"] = 0.5 if task == "binary" else 1.0 / max(2, (sp.shape[1] if sp.ndim == 2 else 2))
    else:
        rec["chance"] = 0.0
    if n < 2 or (task != "regression" and len(np.unique(yp)) < 2):
        rec.update(figures(yp, sp, task) if n else {})
        rec.update({"ci": [float("nan"), float("nan")], "p_value": float("nan"), "test": "not enough held-out participants of every class", "beats_chance": False})
        return _finite(rec)
    rec.update(figures(yp, sp, task))
    rng = np.random.default_rng([int(seed), 0xE71D])
    boot = _boot_indices(yp, task, rng, N_BOOT)
    stat = np.array([_primary_of(yp[b], sp[b], task) for b in boot])
    rec["ci"] = _ci(stat)
    if task == "regression":
        rec["r_ci"] = _ci(np.array([_pearson(yp[b].astype(float), sp[b]) for b in boot]))
    p, test = chance_test(yp, sp, task, seed=seed)
    rec["p_value"] = p
    rec["test"] = test
    rec["beats_chance"] = bool(math.isfinite(p) and p < ALPHA and (task != "regression" or rec.get("r", 0) > 0))
    if baseline_scores is not None:
        _, _, bp = per_participant(groups, np.asarray(y), np.asarray(baseline_scores, dtype=float), task)
        base = figures(yp, bp, task)
        bstat = np.array([_primary_of(yp[b], bp[b], task) for b in boot])
        bp_value, btest = chance_test(yp, bp, task, seed=seed)
        gain = stat - bstat
        primary = PRIMARY[task]
        ci = _ci(gain)
        predictive = bool(math.isfinite(bp_value) and bp_value < ALPHA)
        rec["baseline"] = {
            "confounders": list(confounders),
            "model": {"binary": "logistic regression", "multiclass": "multinomial logistic regression", "regression": "linear regression"}[task]
            + " on the confounders alone, fitted on the same training participants",
            **base,
            "ci": _ci(bstat),
            "p_value": bp_value,
            "test": btest,
            "gain": float(rec[primary] - base[primary]),
            "gain_ci": ci,
            "gain_of": primary,
            "predictive": predictive,
            "beats_baseline": bool(math.isfinite(ci[0]) and ci[0] > 0),
            # the warning of `train`: the confounders alone predict the label, and the model is
            # not clearly better than they are
            "confounded": bool(predictive and not (math.isfinite(ci[0]) and ci[0] > 0)),
        }
    return _finite(rec)


def _finite(v: Any) -> Any:
    """NaN -> None (JSON and the checkpoint hold plain values)."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _finite(v.item())
    return v


def _fmt(v: Any, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _fmt_p(p: Any) -> str:
    if p is None:
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def describe(ev: dict[str, Any]) -> str:
    """One line: ``AUC 0.81 (95% CI 0.70-0.90), balanced accuracy 0.75, p < 0.001 vs chance (40 participants, cross-validation)``."""
    primary = ev.get("primary", "auc")
    parts = [f"{NAMES.get(primary, primary)} {_fmt(ev.get(primary))} (95% CI {_fmt(ev.get('ci', [None])[0])}-{_fmt(ev.get('ci', [None, None])[1])})"]
    if ev.get("task") == "binary":
        parts.append(f"balanced accuracy {_fmt(ev.get('balanced_accuracy'))}")
    elif ev.get("task") == "multiclass":
        parts.append(f"AUC {_fmt(ev.get('auc'))}")
    else:
        parts.append(f"r {_fmt(ev.get('r'))}")
    text = ", ".join(parts) + f", {_fmt_p(ev.get('p_value'))} vs chance ({ev.get('n_participants')} participants, {ev.get('source')}"
    if ev.get("selected_on_split"):
        text += ", which also chose the checkpoint: optimistic"
    return text + ")"


def too_few_hint(ev: dict[str, Any]) -> str:
    """``""``, or a clause saying that no result on so few held-out participants could beat chance.

    Binary: the exact one-sided Mann-Whitney test on ``n1`` and ``n0`` participants cannot go
    below ``1 / C(n1 + n0, n1)`` (6 participants, 3 + 3: p >= 0.05), so a perfect AUC still fails
    the gate; the user needs more held-out participants, not another model.
    """
    import math

    counts = ev.get("class_counts")
    if ev.get("task") != "binary" or not counts or len(counts) != 2:
        return ""
    n1, n0 = (int(c) for c in counts)
    if min(n1, n0) < 1 or 1.0 / math.comb(n1 + n0, n1) < float(ev.get("alpha", 0.05)):
        return ""
    return (
        f"; with {n1} + {n0} held-out participants no result can reach p < {ev.get('alpha', 0.05):g}: "
        "train with cross-validation (--folds 5) or a larger --validation-fraction"
    )


def describe_baseline(ev: dict[str, Any]) -> str | None:
    """One line comparing the model with its confounder-only baseline, or ``None``."""
    b = ev.get("baseline")
    if not b:
        return None
    name = NAMES.get(b["gain_of"], b["gain_of"])
    ci = b.get("gain_ci") or [None, None]
    return (
        f"{'+'.join(b['confounders'])}-only baseline {name} {_fmt(b.get(b['gain_of']))}, model {_fmt(ev.get(b['gain_of']))}: "
        f"gain {_fmt(b.get('gain'))} (95% CI {_fmt(ci[0])} to {_fmt(ci[1])})"
    )
