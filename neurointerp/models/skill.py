"""The skill gate: explain only models with held-out evidence that they beat chance.

Every checkpoint that ``neurointerp train`` writes records its held-out evidence
(``metrics.evidence``, see :mod:`neurointerp.train.evidence`): a fold model's own held-out
fold, the final model's pooled cross-validation, or, without cross-validation, its internal
validation split. Commands that explain a model (``saliency``, ``confound-test``,
``simulate``, ``evaluate``) call :func:`require_skill` first: a model without evidence, or
whose evidence does not beat chance, is refused with a one-line :class:`InputError` (exit code
2) that names the figure -- unless ``allow_unvalidated``, which turns the refusal into a warning.
Maps of a model that learned nothing explain noise, and look just like maps.

:func:`skill_record` gives the dict that the sidecar of every map carries
(``HeldOutSkill``), so a map never travels without the evidence behind its model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neurointerp.errors import InputError

OPT_OUT = "--allow-unvalidated"


def checkpoint_evidence(clf_or_meta: Any) -> dict[str, Any] | None:
    """The held-out evidence recorded in a loaded checkpoint (``LoadedClassifier`` or its
    ``meta`` / the raw checkpoint dict), or ``None`` (trained without held-out data, or by a
    neurointerp that did not record it)."""
    meta = getattr(clf_or_meta, "meta", clf_or_meta)
    if not isinstance(meta, dict):
        return None
    ev = (meta.get("metrics") or {}).get("evidence")
    return ev if isinstance(ev, dict) and ev.get("primary") else None


def _why_missing(meta: dict) -> str:
    tr = meta.get("training") or {}
    hyper = tr.get("hyperparameters") or {}
    if "steps_budget" not in tr:
        return "it was trained by an earlier neurointerp, which did not record held-out evidence; retrain it with `neurointerp train`"
    if tr.get("unit") == "final" and (tr.get("cv_folds") or 0) >= 2:
        return "its cross-validation folds have not all finished; run the same `neurointerp train` command again once they have"
    if not hyper.get("validation_fraction"):
        return "it was trained without cross-validation and without a validation split; retrain it with folds or --validation-fraction"
    return "no held-out predictions were recorded"


def skill_record(clf: Any, allowed_without: bool = False) -> dict[str, Any]:
    """``{"HeldOutSkill": {...}}`` for the sidecar of a map made with ``clf``: the held-out
    figures of its checkpoint (source, participants, primary figure with its 95 % CI, balanced
    accuracy / AUC / R^2, p-value against chance, confounder baseline if any), ``validated``
    (evidence that it beats chance) and ``allowed_unvalidated`` (the gate was overridden)."""
    ev = checkpoint_evidence(clf)
    if ev is None:
        return {"HeldOutSkill": {"validated": False, "evidence": None, "allowed_unvalidated": bool(allowed_without)}}
    keep = (
        "source", "description", "task", "n_participants", "n_images", "primary", "chance",
        "balanced_accuracy", "accuracy", "auc", "r2", "r", "mae", "ci", "r_ci", "p_value", "test",
        "alpha", "beats_chance", "selected_on_split", "baseline",
    )
    figures = {k: ev[k] for k in keep if k in ev}
    return {
        "HeldOutSkill": {
            "validated": bool(ev.get("beats_chance")),
            "allowed_unvalidated": bool(allowed_without and not ev.get("beats_chance")),
            **figures,
        }
    }


def require_skill(clf: Any, allow_unvalidated: bool = False, command: str = "this command", path: str | Path | None = None) -> dict[str, Any]:
    """The skill gate. Returns :func:`skill_record` of ``clf`` when its held-out evidence beats
    chance; otherwise raises :class:`InputError` naming the figure (or, with
    ``allow_unvalidated``, prints a one-line warning and returns the record)."""
    from neurointerp.progress import warn
    from neurointerp.train.evidence import describe, too_few_hint

    where = str(path if path is not None else getattr(clf, "path", None) or "model")
    ev = checkpoint_evidence(clf)
    if ev is None:
        meta = getattr(clf, "meta", clf) if isinstance(getattr(clf, "meta", clf), dict) else {}
        problem = f"{where}: no held-out evidence that this model has any skill ({_why_missing(meta)})"
    elif not ev.get("beats_chance"):
        problem = f"{where}: held-out {describe(ev)}: no evidence that the model beats chance, so its maps would explain noise{too_few_hint(ev)}"
    else:
        return skill_record(clf)
    if allow_unvalidated:
        warn(f"{problem}; {command} goes on because of {OPT_OUT}")
        return skill_record(clf, allowed_without=True)
    raise InputError(f"{problem}; {command} refuses it (pass {OPT_OUT} to go on anyway)")
