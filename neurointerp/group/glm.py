"""Voxelwise general linear model by streaming: accumulate X'Y and Y'Y, never hold all maps.

For maps ``Y`` (N x V) and a design ``X`` (N x p) of full column rank, ordinary least squares
needs only ``X'X`` (p x p, known up front), ``X'Y`` (p x V) and the column sums of squares
``Y'Y`` (V)::

    beta = (X'X)^-1 X'Y
    RSS  = Y'Y - sum_j beta_j * (X'Y)_j
    t    = c'beta / sqrt(RSS / (N - p) * c'(X'X)^-1 c)

Accumulators are float64, so the result equals a per-voxel OLS fit (statsmodels) to rounding.
Memory is ``(p + 1) x V`` doubles whatever the number of maps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from neurointerp.errors import InputError


# ---------------------------------------------------------------------------------------------
# design
# ---------------------------------------------------------------------------------------------


@dataclass
class Design:
    """A design matrix with named columns, and how categorical columns were coded."""

    matrix: np.ndarray  # (N, p) float64
    columns: list[str]
    label_column: str | None = None
    classes: list[str] | None = None  # levels of the label column (reference first)
    formula: str | None = None

    @property
    def rank(self) -> int:
        return int(np.linalg.matrix_rank(self.matrix))


def _is_numeric(values) -> bool:
    try:
        np.asarray([float(v) for v in values], dtype=float)
        return True
    except (TypeError, ValueError):
        return False


def _class_key(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def design_columns(design: str | None, label_column: str = "label") -> tuple[list[str], str | None]:
    """Columns a design needs: a comma list (``label,age,sex``) or a patsy formula (``~ label + age``)."""
    if design is None or not str(design).strip():
        return [label_column], None
    text = str(design).strip()
    if "~" in text or any(ch in text for ch in "+*:()"):
        formula = text if text.lstrip().startswith("~") else "~ " + text
        names = re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", formula.replace("~", " "))
        skip = {"C", "I", "np", "center", "standardize", "scale", "log", "Treatment", "Sum", "T", "Q", "bs", "cr", "cc"}
        return list(dict.fromkeys(n for n in names if n not in skip)), formula
    return [c.strip() for c in text.split(",") if c.strip()], None


def build_design(frame, design: str | None = None, label_column: str = "label") -> Design:
    """Design matrix from covariates.

    ``design`` is a comma-separated column list (default: the label column) -- an intercept is
    added, numeric columns enter as they are (centred), others are dummy-coded with the first
    level (sorted) as reference -- or a patsy formula such as ``~ label + age + C(sex)``.
    """
    cols, formula = design_columns(design, label_column)
    if formula is not None:
        return _formula_design(frame, formula, cols, label_column)
    n = len(frame)
    mats, names = [np.ones((n, 1))], ["Intercept"]
    classes = None
    for col in cols:
        if col not in frame.columns:
            raise InputError(f"design column '{col}' is not in the covariates (known: {', '.join(c for c in frame.columns if c not in ('map',))})")
        values = [str(v) for v in frame[col]]
        if col != label_column and _is_numeric(values):
            x = np.asarray([float(v) for v in values])
            mats.append((x - x.mean())[:, None])
            names.append(col)
            continue
        levels = sorted(dict.fromkeys(values), key=_class_key)
        if len(levels) < 2:
            raise InputError(f"design column '{col}' has a single value ('{levels[0]}'); nothing to compare")
        if col == label_column:
            classes = levels
        for lev in levels[1:]:
            mats.append(np.asarray([v == lev for v in values], dtype=float)[:, None])
            names.append(f"{col}[{lev}]")
    X = np.hstack(mats)
    _check_rank(X, names)
    return Design(X, names, label_column if classes else None, classes)


def _formula_design(frame, formula: str, cols: list[str], label_column: str) -> Design:
    try:
        import patsy
    except ImportError:  # pragma: no cover
        raise InputError("a formula design needs the 'patsy' package (pip install patsy); or give a column list") from None
    data = frame.copy()
    for col in cols:
        if col in data.columns:
            values = [str(v) for v in data[col]]
            data[col] = [float(v) for v in values] if col != label_column and _is_numeric(values) else values
    try:
        dm = patsy.dmatrix(formula, data, return_type="dataframe", NA_action="raise")
    except Exception as exc:
        raise InputError(f"design formula '{formula}': {str(exc).splitlines()[0]}") from None
    X = dm.to_numpy(dtype=float)
    names = [str(c) for c in dm.columns]
    _check_rank(X, names)
    classes = None
    if label_column in data.columns and any(n.startswith(f"{label_column}[") for n in names):
        classes = sorted(dict.fromkeys(str(v) for v in data[label_column]), key=_class_key)
    return Design(X, names, label_column if classes else None, classes, formula)


def add_subject_term(design: Design, participant_ids) -> Design:
    """The design with one dummy column per participant but the first (a subject term).

    Effects that do not vary within participants are absorbed by the term: such a design is
    refused in one line naming those columns (average the sessions instead: ``--sessions mean``).
    The residual degrees of freedom are then maps - participants - within-subject columns.
    """
    pids = [str(p) for p in participant_ids]
    levels = sorted(dict.fromkeys(pids))
    if len(levels) == len(pids):
        raise InputError("--sessions subject: every participant has one map; a subject term needs repeated sessions")
    X = design.matrix
    D = np.stack([np.asarray([p == lev for p in pids], dtype=float) for lev in levels[1:]], axis=1)
    full = np.hstack([X, D])
    names = design.columns + [f"subject[{lev}]" for lev in levels[1:]]
    if np.linalg.matrix_rank(full) < full.shape[1]:
        idx = {lev: [i for i, p in enumerate(pids) if p == lev] for lev in levels}
        between = [name for j, name in enumerate(design.columns) if name != "Intercept" and all(np.ptp(X[ix, j]) == 0 for ix in idx.values())]
        what = f"design column{'s' if len(between) > 1 else ''} {', '.join(between)} do{'' if len(between) > 1 else 'es'} not vary within participants" if between else "the design is collinear with the subject term"
        raise InputError(f"--sessions subject: {what} (a between-subject effect, absorbed by the subject term); use --sessions mean for it")
    _check_rank(full, names)
    return Design(full, names, design.label_column, design.classes, design.formula)


def _check_rank(X: np.ndarray, names: list[str]) -> None:
    n, p = X.shape
    if n <= p:
        raise InputError(f"design has {p} columns but only {n} maps; need more maps than columns")
    if np.linalg.matrix_rank(X) < p:
        raise InputError(f"design is rank deficient (columns {', '.join(names)} are collinear)")


def parse_contrast(spec: str | None, design: Design) -> tuple[np.ndarray, str]:
    """A contrast vector and a short name.

    ``spec``: ``patient-control`` (two classes of the label column), a design column name
    (``age``, ``label[patient]``), or comma-separated weights (``0,1,0``). Default: the second
    class minus the first (reference) class.
    """
    cols = design.columns
    p = len(cols)
    classes = design.classes or []
    lab = design.label_column

    def class_vec(name: str) -> np.ndarray:
        v = np.zeros(p)
        if name == classes[0]:
            return v
        key = f"{lab}[{name}]"
        if key not in cols:
            key = f"{lab}[T.{name}]"
        if key not in cols:
            raise InputError(f"contrast: class '{name}' is not coded in the design (columns: {', '.join(cols)})")
        v[cols.index(key)] = 1.0
        return v

    if spec is None or not str(spec).strip():
        if len(classes) != 2:
            raise InputError("give --contrast: the default (second class minus first) needs a two-class label column in the design")
        return class_vec(classes[1]) - class_vec(classes[0]), _safe_name(f"{classes[1]}VS{classes[0]}")
    text = str(spec).strip()
    if "," in text or re.fullmatch(r"[-+0-9.eE ]+", text):
        try:
            c = np.asarray([float(x) for x in text.split(",")])
        except ValueError:
            raise InputError(f"contrast '{text}': weights must be numbers") from None
        if c.size != p:
            raise InputError(f"contrast '{text}' has {c.size} weights but the design has {p} columns ({', '.join(cols)})")
        name = "".join(_safe_name(cols[i]) for i in np.flatnonzero(c)) or "contrast"
    elif text in cols:
        c = np.zeros(p)
        c[cols.index(text)] = 1.0
        name = _safe_name(text)
    elif "-" in text and classes:
        a, _, b = text.partition("-")
        a, b = a.strip(), b.strip()
        for k in (a, b):
            if k not in classes:
                raise InputError(f"contrast '{text}': '{k}' is not a class of '{lab}' (classes: {', '.join(classes)})")
        c = class_vec(a) - class_vec(b)
        name = _safe_name(f"{a}VS{b}")
    else:
        raise InputError(f"contrast '{text}': not a design column ({', '.join(cols)}), a 'classA-classB' difference or a weight list")
    if not np.any(c):
        raise InputError(f"contrast '{text}' is all zeros")
    return c, name


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text) or "contrast"


# ---------------------------------------------------------------------------------------------
# streaming OLS
# ---------------------------------------------------------------------------------------------


class StreamingGLM:
    """Accumulate ``X'Y`` and ``Y'Y`` over batches of maps; solve at the end.

    >>> glm = StreamingGLM(X, n_voxels)
    >>> for idx, Y in batches: glm.update(idx, Y)      # Y: (len(idx), n_voxels)
    >>> res = glm.contrast(c)                           # t, z, p, effect, df
    """

    def __init__(self, X: np.ndarray, n_voxels: int):
        self.X = np.asarray(X, dtype=np.float64)
        self.n, self.p = self.X.shape
        self.XtY = np.zeros((self.p, int(n_voxels)))
        self.YtY = np.zeros(int(n_voxels))
        self.seen = np.zeros(self.n, dtype=bool)

    def update(self, idx, Y: np.ndarray) -> None:
        idx = np.asarray(idx)
        Y64 = np.asarray(Y, dtype=np.float64)
        self.XtY += self.X[idx].T @ Y64
        self.YtY += np.einsum("ij,ij->j", Y64, Y64)
        self.seen[idx] = True

    def fit(self):
        """``(beta (p, V), rss (V), df)``."""
        if not self.seen.all():
            raise RuntimeError(f"{int((~self.seen).sum())} maps were not added")
        XtX = self.X.T @ self.X
        inv = np.linalg.inv(XtX)
        beta = inv @ self.XtY
        rss = self.YtY - np.einsum("pv,pv->v", beta, self.XtY)
        scale = np.maximum(self.YtY, 1e-300)
        rss = np.where(rss < 1e-12 * scale, 0.0, rss)  # exact fits: rounding noise -> 0
        return beta, rss, self.n - self.p

    def contrast(self, c, mask: np.ndarray | None = None) -> "ContrastResult":
        beta, rss, df = self.fit()
        c = np.asarray(c, dtype=np.float64)
        inv = np.linalg.inv(self.X.T @ self.X)
        effect = c @ beta
        var_c = float(c @ inv @ c)
        sigma2 = rss / df
        se = np.sqrt(sigma2 * var_c)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(se > 0, effect / se, 0.0)
        if mask is not None:
            t = np.where(mask, t, 0.0)
        return ContrastResult(effect=effect, t=t, df=df, sigma2=sigma2)


@dataclass
class ContrastResult:
    effect: np.ndarray
    t: np.ndarray
    df: int
    sigma2: np.ndarray

    def p_values(self, two_sided: bool = True) -> np.ndarray:
        return t_to_p(self.t, self.df, two_sided)

    def z(self) -> np.ndarray:
        return t_to_z(self.t, self.df)


def _log_t_sf(t, df) -> np.ndarray:
    """log P(T > t) for t >= 0 (Student t, ``df`` degrees of freedom), finite far in the tail."""
    from scipy import special

    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore"):
        out = np.log(special.stdtr(df, -t))
    far = ~np.isfinite(out)
    if far.any():  # sf ~ c * t^-df: leading term of the tail expansion
        v = float(df)
        logc = special.gammaln((v + 1) / 2) - special.gammaln(v / 2) - 0.5 * np.log(v * np.pi) + (v - 1) / 2 * np.log(v)
        out[far] = logc - v * np.log(t[far])
    return out


def t_to_p(t, df, two_sided: bool = True) -> np.ndarray:
    """p-values of t statistics (two-sided: ``2 P(T > |t|)``)."""
    from scipy import special

    t = np.asarray(t, dtype=np.float64)
    return np.minimum(1.0, 2.0 * special.stdtr(df, -np.abs(t))) if two_sided else special.stdtr(df, -t)


def t_to_z(t, df) -> np.ndarray:
    """z with the same one-sided tail probability as t (exact far in the tails via log-p)."""
    from scipy import special

    t = np.asarray(t, dtype=np.float64)
    z = -special.ndtri_exp(_log_t_sf(np.abs(t), df))
    return np.sign(t) * np.abs(z)


def ols_arrays(X: np.ndarray, Y: np.ndarray, c) -> ContrastResult:
    """Convenience: the streaming GLM on in-memory maps ``Y`` (N, V)."""
    glm = StreamingGLM(X, Y.shape[1])
    glm.update(np.arange(Y.shape[0]), Y)
    return glm.contrast(c)
