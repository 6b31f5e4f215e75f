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
``MIN_EFFECTIVE`` effective participants of a class remain, and when fewer than ``FEW_EFFECTIVE``
remain (with how many times as many participants a cohort like it would need).

When to weight (:func:`choose_balancing`): ``--balance-confounders`` always, ``--no-balance-confounders``
never; by default (a classification task with ``--confounder``) exactly when every model of the run
(each fold's and the final model's training participants) keeps at least ``MIN_EFFECTIVE`` effective
participants per class and the weights bring every confounder within ``MAX_DIFFERENCE`` SD.
Measured on the strongly age-confounded ``synth brain`` validity cohorts
(``benchmarks/validity.py``), unweighted draws gave models that read age (disease NCC of the maps
<= 0.12) and weighted draws with 20-29 effective participants per class maps that find the disease
(0.27-0.48) at the same held-out accuracy, while with 12.6 (a second seed) the weighted model learned
little (balanced accuracy 0.72): the threshold keeps a model off age, it does not promise one that
learns. Unweighted, that cohort gave an age detector (balanced accuracy 0.95, maps of age, disease
NCC <= 0.02), so raising the threshold above 12.6 would have hidden the failure rather than avoided
it; a third seed (12.9 effective participants) failed like the second (balanced accuracy 0.62). On
the demo's 28 training participants (seed 0) the weights would leave 9.6 effective participants of
one class, so there the draws stay unweighted and train says so in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neurointerp.errors import InputError

#: ridge penalty of the propensity model: small enough that the weighted means balance (the exact
#: balance of overlap weights holds for the maximum-likelihood fit), large enough to stay finite
#: when the confounders separate the classes
PROPENSITY_PENALTY = 1e-6
#: effective participants per class below which the default does not weight, and
#: ``--balance-confounders`` warns
MIN_EFFECTIVE = 10
#: effective participants per class below which train warns that a weighted model has few to learn
#: from. On the strongly age-confounded validity cohorts at 600 steps (the budget before 1500),
#: weighted models with 12.6 and 12.9 learned little (test balanced accuracy 0.72, 0.62); at the
#: default 1500 steps (benchmarks/results/confounded_training.jsonl) eight models with 11-17 reached
#: 0.82-0.93 (best disease NCC 0.08-0.47) and three with 20-21 0.88-0.98 (0.20-0.45): 20 marks
#: thin data, not a line between models that learn and models that do not
FEW_EFFECTIVE = 20
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


@dataclass
class WeightingPlan:
    """What :func:`choose_balancing` decided for a run, and each model's weights.

    ``weighted``: train draws confounder-weighted samples; ``reason``: one sentence saying what the
    default chose and why (``None`` when the user chose); ``message``: that sentence as train prints
    it (prefixed by ``--confounder NAMES:``), a warning when ``is_warning``; ``fits``: model name ->
    ``(weights, record)`` of every model when ``weighted`` (the record holds the effective participants
    per class and each confounder's standardised difference before and after weighting);
    ``chosen_by``: who chose, as the checkpoint records it (``None`` without confounders).
    """

    weighted: bool
    reason: str | None = None
    message: str | None = None
    is_warning: bool = False
    fits: dict = field(default_factory=dict)
    chosen_by: str | None = None

    def choice(self) -> dict | None:
        """The checkpoint's record of the choice (``training.confounder_weighting`` without the
        weights' own record): ``chosen_by``, and the printed line (``note``) and its ``reason`` when
        the default chose; ``None`` without confounders."""
        if self.chosen_by is None:
            return None
        return {"chosen_by": self.chosen_by, **({"note": self.message, "reason": self.reason} if self.reason else {})}

    def warnings(self, classes, names=None) -> list[str]:
        """One line per model (``names``: those trained; default all) and problem: weights that leave
        fewer than ``MIN_EFFECTIVE`` effective participants of a class, or a confounder more than
        ``MAX_DIFFERENCE`` SD apart between the classes (both only possible with
        ``--balance-confounders``: the default weights only when neither happens); weights that leave
        fewer than ``FEW_EFFECTIVE`` (with the default too), with how many times as many participants a
        cohort drawn like this one would need (the effective number grows in proportion)."""
        def listed(counts: dict) -> str:
            return ", ".join(f"{v} effective participants of class {k}" for k, v in counts.items())

        lines = []
        for name, (_, record) in self.fits.items():
            if names is not None and name not in names:
                continue
            eff = record["effective_participants"]
            low = {classes[c]: round(e, 1) for c, e in eff.items() if e < MIN_EFFECTIVE}
            if low:
                lines.append(
                    f"{name}: --balance-confounders leaves about {listed(low)}: "
                    "the classes hardly overlap in their confounders, and the model learns from few participants"
                )
            few = {classes[c]: round(e, 1) for c, e in eff.items() if MIN_EFFECTIVE <= e < FEW_EFFECTIVE}
            if few and not low:
                lines.append(
                    f"{name}: the confounder weights leave about {listed(few)} "
                    f"(fewer than {FEW_EFFECTIVE}), few to learn from: on the validity cohorts (README) eight such models reached balanced "
                    f"accuracy 0.82-0.93 and disease NCC 0.08-0.47 at the default budget; a cohort drawn like this one would need about "
                    f"{FEW_EFFECTIVE / min(few.values()):.1f} times as many participants"
                )
            left = {k: v["after"] for k, v in record["standardised_difference"].items() if abs(v["after"]) > MAX_DIFFERENCE}
            if left:
                lines.append(
                    f"{name}: --balance-confounders could not balance {', '.join(left)}: the classes still differ by "
                    f"{', '.join(f'{v:.2f}' for v in left.values())} SD after weighting (too little overlap between the classes); the model can still learn "
                    + ("it" if len(left) == 1 else "them")
                )
        return lines


def fit_weights(table, idx: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, dict]:
    """:func:`propensity_weights` of the rows ``idx`` with the balance they reach in the record
    (``standardised_difference``: :func:`balance_check`)."""
    weights, record = propensity_weights(table, idx, targets)
    record["standardised_difference"] = balance_check(table, np.asarray(idx, dtype=int), targets, weights)
    return weights, record


def choose_balancing(table, fit_sets: dict, targets: np.ndarray, classes, requested: bool | None) -> WeightingPlan:
    """Whether train draws confounder-weighted samples, and with which weights.

    ``requested``: ``True`` / ``False`` (``--balance-confounders`` / ``--no-balance-confounders``)
    is obeyed as given (no message); ``None`` (the default) weights when, for every model's training
    rows (``fit_sets``: model name -> row indices), the weights keep at least ``MIN_EFFECTIVE``
    effective participants per class *and* bring every confounder within ``MAX_DIFFERENCE`` SD
    between the classes (classes that do not overlap can keep many effective participants, all on
    their own side, and stay apart); one decision for the whole run, so that fold models and the
    final model are trained alike. The message says what the default chose and why; it is a
    warning when it did not weight and a confounder differs by more than ``MAX_DIFFERENCE`` SD
    between the classes of a model. Each model's weights are fitted here, once.
    """
    if table is None:
        return WeightingPlan(False)
    if requested is False:
        return WeightingPlan(False, chosen_by="--no-balance-confounders")
    names = ", ".join(table.names)
    chosen_by = ("--balance-confounders" if requested else
                 f"default: weighted when, in every model, the weights keep at least {MIN_EFFECTIVE} effective participants per class "
                 f"and bring each confounder within {MAX_DIFFERENCE} SD between the classes")

    def plan(weighted: bool, reason: str | None = None, loud: bool = False, fits: dict | None = None) -> WeightingPlan:
        return WeightingPlan(weighted, reason, None if reason is None else f"--confounder {names}: {reason}", loud, fits or {}, chosen_by)

    fits = {}
    for name, idx in fit_sets.items():
        idx = np.asarray(idx, dtype=int)
        if requested is None and len(np.unique(targets[idx])) < 2:
            return plan(False, f"training draws not weighted for {names} ({name} holds a single class)")
        fits[name] = fit_weights(table, idx, targets)
    if requested:
        return plan(True, fits=fits)
    # (effective participants, class, model): the fewest; (difference after weighting, model): the worst
    e, cls, model = min((e, str(classes[c]), name) for name, (_, r) in fits.items() for c, e in r["effective_participants"].items())
    worst = max([(0.0, "")] + [(abs(v["after"]), name) for name, (_, r) in fits.items() for v in r["standardised_difference"].values()])
    apart = max([0.0] + [abs(v["before"]) for _, r in fits.values() for v in r["standardised_difference"].values()])
    if e >= MIN_EFFECTIVE and worst[0] <= MAX_DIFFERENCE:
        return plan(True, f"training draws weighted so that {names} no longer predicts the class (overlap weights; "
                          f"at least {e:.1f} effective participants per class; --no-balance-confounders turns this off)", fits=fits)
    why = (f"the weights would leave about {e:.1f} effective participants of class {cls} in {model} (fewer than {MIN_EFFECTIVE})"
           if e < MIN_EFFECTIVE else
           f"even weighted, the classes of {worst[1]} would differ by {worst[0]:.2f} SD (more than {MAX_DIFFERENCE}: they hardly overlap)")
    return plan(False, f"training draws not weighted for {names}: {why}"
                + (f"; the classes differ by {apart:.2f} SD in {names}, so the model may learn it (--balance-confounders weights anyway)"
                   if apart > MAX_DIFFERENCE else ""), loud=apart > MAX_DIFFERENCE)
