"""Model-level confound tests: is the model right for the wrong reason? (issue #25)

The per-feature GLM (:mod:`neurointerp.confound.glm`) says *which features* carry a confounder.
These two tests ask the question a user needs answered first, about the model's score ``s``
(the logit of P(positive class) for a binary model -- the probability saturates at 0 and 1 and
hides the within-class variation these tests look at -- and the prediction for a regression):

(a) **Does the score carry label information beyond the confounders?** Nested models
    ``label ~ 1 + z`` and ``label ~ 1 + z + s`` (logistic for a binary label, Gaussian linear for
    a regression target; ``z`` the confounders, coded as in the GLM) compared by the
    likelihood-ratio test ``LR = 2 (l1 - l0) ~ chi2(1)``. When the score separates the classes
    completely the maximum likelihood is reached only at an infinite coefficient: the limit
    ``l1`` is used and the result says so.
(b) **Does the score depend on each confounder within each class?** Among the subjects of one
    class (for a regression model: all subjects, with the target as a covariate), the partial
    correlation of ``s`` with the confounder given the other confounders: ``r`` for a numeric
    or two-level confounder, the partial R^2 of its dummy columns for a categorical one with more
    levels. Its p-value comes from Freedman-Lane permutations (the residuals of
    ``s ~ other confounders`` are permuted), with the parametric t/F p-value beside it; the
    family of (class, confounder) tests is Holm-corrected.

Both are computed on subjects the model was not trained on when the checkpoint lists its
training participants and the cohort has others (see :func:`choose_subjects`): a training
subject's score shows what the model memorised. Numbers equal statsmodels' ``Logit``/``OLS``
and a slow explicit permutation loop (tests/test_confound_model.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import special, stats

from neurointerp.errors import InputError

MIN_PER_CLASS = 3  # fewer subjects of a class than this: the test is not run (said so)


# ---------------------------------------------------------------- fits
@dataclass
class LogitFit:
    beta: np.ndarray
    loglik: float
    converged: bool
    separated: bool  # fitted probabilities reach 0/1: the MLE is at infinity, loglik is its limit


def logistic_loglik(x: np.ndarray, y: np.ndarray, beta: np.ndarray) -> float:
    eta = x @ beta
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def fit_logistic(x: np.ndarray, y: np.ndarray, max_iter: int = 200, tol: float = 1e-11) -> LogitFit:
    """Maximum-likelihood logistic regression by Newton-Raphson with step halving.

    Under (quasi-)complete separation the likelihood increases towards its supremum as the
    coefficients diverge; the iterations stop when the log-likelihood no longer changes and the
    fit is flagged ``separated`` (its ``loglik`` is then the supremum to within ``tol``).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    beta = np.zeros(x.shape[1])
    ll = logistic_loglik(x, y, beta)
    converged = False
    for _ in range(max_iter):
        eta = x @ beta
        p = special.expit(eta)
        grad = x.T @ (y - p)
        hess = x.T @ (x * (p * (1.0 - p))[:, None])
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        t = 1.0
        while True:
            new = beta + t * step
            ll_new = logistic_loglik(x, y, new)
            if ll_new >= ll - 1e-12 or t < 1e-8:
                break
            t *= 0.5
        change = ll_new - ll
        beta, ll = new, max(ll, ll_new)
        if abs(change) <= tol * max(1.0, abs(ll)) and np.max(np.abs(t * step)) < 1e-6 * max(1.0, np.max(np.abs(beta))):
            converged = True
            break
        if abs(change) <= tol * max(1.0, abs(ll)) and np.max(np.abs(x @ beta)) > 25:
            break  # separation: the likelihood has reached its supremum, the coefficients run away
    separated = bool(np.max(np.abs(x @ beta)) > 25)
    return LogitFit(beta, ll, converged and not separated, separated)


def gaussian_loglik(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Maximised Gaussian log-likelihood of OLS ``y ~ x`` (variance RSS / n, as statsmodels)."""
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    resid = y - x @ beta
    n = len(y)
    rss = float(resid @ resid)
    return -0.5 * n * (np.log(2.0 * np.pi * rss / n) + 1.0), beta


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n1 n0), ties counted half)."""
    pos = np.asarray(positive, dtype=bool)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = stats.rankdata(score)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


# ---------------------------------------------------------------- (a) beyond the confounders
def score_beyond_confounders(label, score, confounders: np.ndarray, task: str) -> dict:
    """Likelihood-ratio test of ``label ~ 1 + z + s`` against ``label ~ 1 + z``.

    ``label`` is 0/1 (binary) or the numeric target (regression); ``confounders`` the columns
    of ``z`` (no intercept). Returns the log-likelihoods, ``lr``, ``df`` (1), ``p``, the score's
    coefficient and, for a binary label, the score's AUC on these subjects.
    """
    y = np.asarray(label, dtype=float)
    s = np.asarray(score, dtype=float)
    z = np.asarray(confounders, dtype=float).reshape(len(y), -1)
    x0 = np.column_stack([np.ones(len(y)), z])
    x1 = np.column_stack([x0, s])
    if task == "binary":
        f0, f1 = fit_logistic(x0, y), fit_logistic(x1, y)
        ll0, ll1 = f0.loglik, f1.loglik
        beta = float(f1.beta[-1])
        separated = f1.separated
        extra = {"auc_score": auc(s, y > 0.5), "confounders_separate": bool(f0.separated)}
    else:
        ll0, _ = gaussian_loglik(x0, y)
        ll1, b1 = gaussian_loglik(x1, y)
        beta = float(b1[-1])
        separated = False
        extra = {}
    lr = max(0.0, 2.0 * (ll1 - ll0))
    return {
        "n": int(len(y)),
        "loglik_confounders": ll0,
        "loglik_confounders_score": ll1,
        "lr": lr,
        "df": 1,
        "p": float(stats.chi2.sf(lr, 1)),
        "beta_score": beta,
        "separated": bool(separated),
        **extra,
    }


# ---------------------------------------------------------------- (b) within class
def permutations(n: int, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """``n_perm`` random permutations of ``range(n)``, one a row."""
    return rng.permuted(np.broadcast_to(np.arange(n), (n_perm, n)), axis=1)


def _basis(x: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis of the column space of ``x`` (rank-revealing, via SVD)."""
    if x.shape[1] == 0:
        return np.zeros((x.shape[0], 0))
    u, sv, _ = np.linalg.svd(x, full_matrices=False)
    keep = sv > tol * max(1.0, sv[0] if sv.size else 0.0)
    return u[:, keep]


def partial_correlation(score, columns: np.ndarray, covariates: np.ndarray, n_perm: int = 5000, rng: np.random.Generator | None = None, perms: np.ndarray | None = None) -> dict:
    """Partial association of ``score`` with ``columns`` given ``covariates`` (+ an intercept).

    ``stat`` is the partial R^2 ``||P_D e||^2 / ||e||^2`` (``e``: the residuals of the score on
    ``[1, covariates]``, ``D``: the columns residualised the same way); ``r`` its signed square
    root for a single column (the partial correlation). ``p`` is the parametric F (= t^2) test,
    ``p_perm`` the Freedman-Lane permutation p-value ``(1 + #{stat* >= stat}) / (1 + n_perm)``
    from permuting ``e``.
    """
    s = np.asarray(score, dtype=float)
    n = len(s)
    cov = np.column_stack([np.ones(n), np.asarray(covariates, dtype=float).reshape(n, -1)])
    qz = _basis(cov)
    e = s - qz @ (qz.T @ s)
    d = np.asarray(columns, dtype=float).reshape(n, -1)
    d = d - qz @ (qz.T @ d)
    qd = _basis(d)
    k = qd.shape[1]
    df2 = n - qz.shape[1] - k
    ee = float(e @ e)
    out = {"n": n, "k": k, "df": df2, "stat": float("nan"), "r": float("nan"), "p": float("nan"), "p_perm": float("nan")}
    if k == 0 or df2 < 1 or ee <= 1e-24 * max(1.0, float(s @ s)):
        return out
    stat = float(np.sum((qd.T @ e) ** 2) / ee)
    out["stat"] = stat
    if d.shape[1] == 1 and k == 1:
        out["r"] = float(np.sign(d[:, 0] @ e) * np.sqrt(stat))
    fstat = (stat / k) / (max(1.0 - stat, 1e-300) / df2)
    out["p"] = float(stats.f.sf(fstat, k, df2))
    if perms is None:
        if rng is None:
            raise ValueError("give rng or perms")
        perms = permutations(n, n_perm, rng) if n_perm > 0 else np.zeros((0, n), dtype=int)
    count = 0
    for start in range(0, len(perms), 2000):
        ep = e[perms[start : start + 2000]]  # (B, n) permuted residuals
        # Freedman-Lane: y* = fitted + e*; residualising y* on [1, covariates] gives R e*, and
        # the D basis is orthogonal to that space, so D' R e* = D' e*
        num = np.sum((ep @ qd) ** 2, axis=1)
        den = np.sum(ep * ep, axis=1) - np.sum((ep @ qz) ** 2, axis=1)
        count += int(np.sum(num / den >= stat * (1.0 - 1e-10)))
    out["p_perm"] = float((1 + count) / (1 + len(perms))) if len(perms) else float("nan")
    out["n_perm"] = int(len(perms))
    return out


def holm(p) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN entries stay NaN and do not count)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


# ---------------------------------------------------------------- subjects and the whole run
@dataclass
class Subjects:
    rows: np.ndarray  # indices into the cohort rows given to the tests
    kind: str  # heldout | training | unknown
    note: str


def choose_subjects(participant_ids, trained_ids) -> Subjects:
    """The subjects of the model-level tests: those the model was not trained on, if any."""
    ids = [str(p) for p in participant_ids]
    chosen = _choose(ids, trained_ids)
    repeated = len(chosen.rows) - len({ids[i] for i in chosen.rows})
    if repeated:
        chosen.note += f"; {repeated} rows are further sessions of a participant and are treated as independent subjects"
    return chosen


def _choose(ids: list[str], trained_ids) -> Subjects:
    all_rows = np.arange(len(ids))
    if not trained_ids:
        return Subjects(all_rows, "unknown", "the checkpoint does not list its training participants, so these subjects may include training subjects (whose scores show what the model memorised)")
    trained = set(map(str, trained_ids))
    held = np.array([i for i, p in enumerate(ids) if p not in trained], dtype=int)
    if len(held):
        n_tr = len(ids) - len(held)
        extra = f"; the other {n_tr} given participants trained the model and were left out" if n_tr else ""
        return Subjects(held, "heldout", f"{len(held)} subjects the model was not trained on{extra}")
    return Subjects(
        all_rows,
        "training",
        f"all {len(ids)} given subjects were used to TRAIN the model: a training subject's score shows what the model memorised, "
        "so the score looks informative beyond the confounders almost by construction; give a cohort of held-out subjects "
        "(e.g. a fold model with the fold's held-out participants) for a fair answer",
    )


@dataclass
class ModelTests:
    score: str
    subjects: Subjects
    beyond: dict | None
    within: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    conclusions: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """Plain JSON (NaN -> null)."""
        return _clean({
            "Score": self.score,
            "Subjects": {"kind": self.subjects.kind, "n": int(len(self.subjects.rows)), "note": self.subjects.note},
            "BeyondConfounders": self.beyond,
            "WithinClass": self.within,
            "NotRun": self.skipped,
            "Conclusions": self.conclusions,
        })

    def table(self):
        """One row per test (pandas), for ``model_tests.tsv`` and the report."""
        import pandas as pd

        rows = []
        if self.beyond is not None:
            b = self.beyond
            rows.append({"test": "score beyond confounders (LR)", "stratum": b["subjects"], "confounder": "+".join(b["confounders"]), "n": b["n"], "statistic": "LR chi2(1)", "value": b["lr"], "r": np.nan, "p": b["p"], "p_perm": np.nan, "p_holm": np.nan, "significant": b["significant"], "note": "; ".join(x for x in ("confounders alone separate the classes: not testable" if b.get("confounders_separate") else "", "separation" if b["separated"] else "", b.get("note", "")) if x)})
        for w in self.within:
            rows.append({"test": "score vs confounder within class", "stratum": w["stratum"], "confounder": w["confounder"], "n": w["n"], "statistic": "partial r" if np.isfinite(w["r"]) else "partial R2", "value": w["r"] if np.isfinite(w["r"]) else w["stat"], "r": w["r"], "p": w["p"], "p_perm": w["p_perm"], "p_holm": w["p_holm"], "significant": w["significant"], "note": w.get("note", "")})
        return pd.DataFrame(rows, columns=["test", "stratum", "confounder", "n", "statistic", "value", "r", "p", "p_perm", "p_holm", "significant", "note"])


def _clean(v):
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def _usable(x: np.ndarray) -> np.ndarray:
    """Indices of columns of ``x`` that vary, greedily kept only if linearly independent (with an intercept)."""
    keep: list[int] = []
    base = np.ones((x.shape[0], 1))
    for j in range(x.shape[1]):
        col = x[:, j]
        if np.ptp(col) <= 1e-12 * max(1.0, np.abs(col).max()):
            continue
        trial = np.column_stack([base, col])
        if np.linalg.matrix_rank(trial) == trial.shape[1]:
            keep.append(j)
            base = trial
    return np.array(keep, dtype=int)


def run_model_tests(
    score,
    label,
    task: str,
    classes: list[str],
    design,
    names: list[str],
    subjects: Subjects,
    threshold: float = 0.05,
    n_perm: int = 5000,
    seed: int = 0,
    score_name: str = "logit",
) -> ModelTests:
    """Both model-level tests on ``subjects``.

    ``score``: the model's score per cohort row; ``label``: class index (binary: 0 = negative,
    1 = positive; NaN where unknown) or the numeric target; ``design``: the GLM design of the
    same rows (:func:`neurointerp.confound.glm.build_design`), whose confounder columns are used;
    ``names``: the confounders.
    """
    s_all = np.asarray(score, dtype=float)
    y_all = np.asarray(label, dtype=float)
    rows = subjects.rows[np.isfinite(y_all[subjects.rows])]
    result = ModelTests(score=score_name, subjects=subjects, beyond=None)
    if len(rows) < len(subjects.rows):
        result.skipped.append(f"{len(subjects.rows) - len(rows)} subjects without a label were left out of the model-level tests")
    s, y = s_all[rows], y_all[rows]
    zcols = {name: np.asarray(design.terms[name]) for name in names}
    zmat = design.matrix[rows]
    strata: list[tuple[str, np.ndarray]]
    if task == "binary":
        strata = [(classes[c], np.flatnonzero(y == c)) for c in (0, 1)]
        small = [f"{name} ({len(idx)})" for name, idx in strata if len(idx) < MIN_PER_CLASS]
    else:
        strata = [("all (given the target)", np.arange(len(rows)))]
        small = [] if len(rows) >= 2 * MIN_PER_CLASS else [f"all ({len(rows)})"]

    # (a) beyond the confounders
    all_conf = np.concatenate([zcols[n] for n in names])
    keep = all_conf[_usable(zmat[:, all_conf])]
    dropped = [n for n in names if not set(zcols[n]) & set(keep)]
    if small:
        result.skipped.append(f"score beyond confounders: too few subjects ({', '.join(small)}; need {MIN_PER_CLASS} per class)")
    elif len(rows) <= len(keep) + 3:
        result.skipped.append(f"score beyond confounders: {len(rows)} subjects for {len(keep) + 2} parameters")
    else:
        b = score_beyond_confounders(y, s, zmat[:, keep], task)
        b.update({"confounders": [n for n in names if n not in dropped], "subjects": subjects.kind, "significant": bool(b["p"] < threshold and not b.get("confounders_separate"))})
        if dropped:
            b["note"] = f"{', '.join(dropped)} constant or collinear among these subjects: left out"
        result.beyond = b

    # (b) within class
    for si, (stratum, idx) in enumerate(strata):
        for ci, name in enumerate(names):
            rec = {"stratum": stratum, "confounder": name, "n": int(len(idx)), "k": 0, "df": 0, "stat": np.nan, "r": np.nan, "p": np.nan, "p_perm": np.nan}
            if len(idx) < MIN_PER_CLASS:
                rec["note"] = f"too few subjects ({len(idx)})"
                result.within.append(rec)
                continue
            zs = zmat[idx]
            own = zcols[name][_usable(zs[:, zcols[name]])]
            others = np.concatenate([zcols[o] for o in names if o != name] or [np.zeros(0, dtype=int)]).astype(int)
            cov = zs[:, others[_usable(zs[:, others])]] if len(others) else np.zeros((len(idx), 0))
            if task != "binary":
                cov = np.column_stack([cov, y[idx]])
            if len(own) == 0:
                rec["note"] = f"{name} is constant within {stratum}"
                result.within.append(rec)
                continue
            rng = np.random.default_rng([seed, si, ci])
            pc = partial_correlation(s[idx], zs[:, own], cov, n_perm=n_perm, rng=rng)
            rec.update({k: pc[k] for k in ("n", "k", "df", "stat", "r", "p", "p_perm")})
            rec["n_perm"] = int(pc.get("n_perm", 0))
            if not np.isfinite(pc["stat"]):
                rec["note"] = "the score does not vary within this class" if pc["k"] else f"{name} is collinear with the other confounders here"
            result.within.append(rec)
    padj = holm([w["p_perm"] for w in result.within])
    for w, pa in zip(result.within, padj):
        w["p_holm"] = float(pa)
        w["significant"] = bool(np.isfinite(pa) and pa < threshold)
    result.conclusions = conclusions(result, task, classes, names, y, zmat, zcols, threshold)
    return result


def conclusions(result: ModelTests, task: str, classes, names, y, zmat, zcols, threshold: float) -> list[str]:
    """The findings in words a user can act on (one line each)."""
    lines: list[str] = []
    sub = result.subjects
    where = {"heldout": "held-out subjects", "training": "TRAINING subjects", "unknown": "subjects (training status unknown)"}[sub.kind]
    b = result.beyond
    conf = " + ".join(names)
    if b is not None:
        sep = "; the score separates the classes completely, so LR is the limit of the likelihood" if b["separated"] else ""
        if b.get("note"):
            sep += f"; {b['note']}"
        figs = f"LR chi2={b['lr']:.2f}, p={_fmt_p(b['p'])}, n={b['n']} {where}{sep}"
        what = "the diagnosis" if task == "binary" else "the target"
        if b.get("confounders_separate"):
            alone = f"{conf} alone separates" if len(names) == 1 else f"{conf} together separate"
            lines.append(f"Whether the model's score carries information about {what} beyond {conf} cannot be tested on these subjects: {alone} the classes completely ({figs}).")
        elif b["significant"]:
            lines.append(f"The model's score carries information about {what} beyond {conf} ({figs}): the model knows more than the confounders.")
        else:
            lines.append(f"The model's score adds no significant information about {what} beyond {conf} ({figs}): on these subjects the model may know no more than the confounders.")
    pos = classes[1] if task == "binary" and len(classes) > 1 else None
    for w in result.within:
        name, stratum = w["confounder"], w["stratum"]
        within = f"within class '{stratum}'" if task == "binary" else "given the target"
        if not np.isfinite(w["stat"]):
            continue
        figs = (f"r={w['r']:.2f}" if np.isfinite(w["r"]) else f"partial R2={w['stat']:.2f}") + f", p={_fmt_p(w['p_perm'])}" + (f", Holm p={_fmt_p(w['p_holm'])}" if len(result.within) > 1 else "")
        if w["significant"]:
            line = f"The model's score depends on {name} {within} ({figs}): the model uses {name}."
            if pos is not None and np.isfinite(w["r"]) and len(zcols[name]) == 1:
                z = zmat[:, zcols[name][0]]
                assoc = np.corrcoef(z, y)[0, 1] if np.ptp(z) > 0 and np.ptp(y) > 0 else 0.0
                if abs(assoc) >= 0.1 and np.sign(assoc) == np.sign(w["r"]):
                    hi = "higher" if assoc > 0 else "lower"
                    line += f" Subjects with {hi} {name} score more like '{pos}', as {name} goes with '{pos}' in this cohort (r={assoc:.2f}): {name} is a stand-in for the diagnosis."
            lines.append(line)
        else:
            lines.append(f"No detectable dependence of the score on {name} {within} ({figs}).")
    if any(w["significant"] for w in result.within):
        lines.append("What to do: see where the confounder acts (saliency --confounder-mask writes confounder-free maps and their difference, desc-<method>cdiff, with a group mean and region table); retrain on a cohort matched for it or stratify by it, and compare with the confounder-only baseline.")
    if sub.kind != "heldout":
        lines.append(f"Caution: {sub.note}.")
    for s in result.skipped:
        lines.append(f"Not run: {s}.")
    return lines


def label_codes(values, task: str, classes: list[str], rows, where: str) -> np.ndarray:
    """Class index (binary) or numeric target per row; NaN where the label is missing."""
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        text = "" if v is None else str(v).strip()
        if text.lower() in ("", "na", "n/a", "nan", "none", "null"):
            continue
        if task == "binary":
            if text not in classes:
                raise InputError(f"{where} row {rows[i]}: label '{text}' is not a class of the model ({', '.join(classes)}); pass --no-model-tests to test the features only")
            out[i] = classes.index(text)
        else:
            try:
                out[i] = float(text)
            except ValueError:
                raise InputError(f"{where} row {rows[i]}: label '{text}' is not a number (the model is a regression)") from None
    return out
