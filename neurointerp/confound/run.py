"""``neurointerp confound-test``: which learned features carry a confounder.

Features at the encoder -> predictor boundary (or ``layer``) of every image in the cohort
(normally the model's training images, as in papers/confounder-aware-saliency.txt §2.1), the
model's prediction score s (P(positive class) for a binary model, the prediction for a
regression), and the confounders go into :func:`~neurointerp.confound.glm.confound_glm`.
Writes ``confound_glm.tsv`` (coefficients, t and p per feature), ``mask.json`` (the binary mask
b for ``saliency --confounder-mask``, with its layer) and ``summary.json``.

With a ``label`` column (and unless ``model_tests=False``) the model-level tests of
:mod:`neurointerp.confound.model_tests` run too, on the cohort's subjects the model was not
trained on: does the score carry label information beyond the confounders, and does it depend
on a confounder within a class. They go to ``model_tests.tsv``, ``summary.json``
(``ModelTests``), the run's ``report.html`` and the console, in words.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from neurointerp.errors import InputError
from neurointerp.runs.context import runs_as


@runs_as("confound-test")
def run_confound_test(
    model: str | os.PathLike,
    cohort: str | os.PathLike,
    out: str | os.PathLike,
    confounder: Sequence[str] = (),
    layer: str | None = None,
    threshold: float = 0.05,
    fdr: bool = False,
    score: str = "probability",
    drop_missing: bool = False,
    batch_size: int = 16,
    device: str = "auto",
    threads: int | None = None,
    model_tests: bool = True,
    permutations: int = 5000,
    seed: int = 0,
    force: bool = False,
    allow_unvalidated: bool = False,
) -> Path:
    """Test every feature for confounding; returns the path of ``mask.json``. Same arguments as the CLI."""
    from neurointerp.confound.gate import layer_features
    from neurointerp.confound.glm import confound_glm
    from neurointerp.io import check_writable, prepare_output_dir, provenance, read_cohort, sha256, write_json, write_table
    from neurointerp.models.checkpoint import load_checkpoint
    from neurointerp.progress import info, track
    from neurointerp.train.device import set_threads

    if score not in ("probability", "logit"):
        raise InputError(f"--score {score}: use probability or logit")
    if not 99 <= permutations <= 1_000_000:
        raise InputError(f"--permutations {permutations}: use 99 to 1000000")
    names = list(dict.fromkeys(confounder))
    if not names:
        raise InputError("give at least one --confounder column")
    set_threads(threads)
    clf = load_checkpoint(model, device=device)
    from neurointerp.models.skill import require_skill  # skill gate (issue #21)
    require_skill(clf, allow_unvalidated, command="confound-test", path=model)
    if clf.task == "multiclass":
        raise InputError("confound-test needs a binary or regression model (the GLM has one prediction score)")
    table = read_cohort(cohort, require_label=False)
    frame = table.frame
    for name in names:
        if name not in frame.columns:
            raise InputError(f"{table.path}: confounder column '{name}' not found (columns: {', '.join(map(str, frame.columns))})")
    from neurointerp.io.cohort import mostly_numeric_outlier

    for name in names:
        typo = mostly_numeric_outlier(list(frame[name]), table.rows)
        if typo is not None:
            raise InputError(f"{table.path} row {typo[0]}: {name} '{typo[1]}' is not a number (the other values of '{name}' are numbers)")
    missing = [(table.rows[i], name) for name in names for i, v in enumerate(frame[name]) if _is_missing(v)]
    keep = np.ones(len(frame), dtype=bool)
    if missing:
        if not drop_missing:
            where = "; ".join(f"row {r}: {n}" for r, n in missing[:6]) + ("; ..." if len(missing) > 6 else "")
            raise InputError(f"{table.path}: {len(missing)} missing confounder value{'s' if len(missing) > 1 else ''} ({where}); fill them or pass --drop-missing")
        bad_rows = {r for r, _ in missing}
        keep = np.array([r not in bad_rows for r in table.rows])
        info(f"confound-test: dropped {len(bad_rows)} rows with missing confounders: {', '.join(map(str, sorted(bad_rows)))}")
    idx = np.flatnonzero(keep)
    table = table.subset(idx)
    labels = None
    if model_tests and table.has_label:
        from neurointerp.confound.model_tests import label_codes

        labels = label_codes(list(table.frame[table.label_column]), clf.task, list(clf.classes), table.rows, str(table.path))
    outputs = ["confound_glm.tsv", "mask.json", "summary.json"] + (["model_tests.tsv", "report.html"] if model_tests else [])
    out = prepare_output_dir(out, force=force, marker="mask.json")
    for name in outputs:
        check_writable(out / name, force=force)
    not_trained = sorted(set(table.participant_ids) - set(clf.participant_ids)) if clf.participant_ids else []
    if not_trained:
        info(f"note: {len(not_trained)} participants were not in the model's training set (the paper tests the training images)")

    feats, outs = [], []
    for start in track(range(0, len(table), batch_size), description="features", total=(len(table) + batch_size - 1) // batch_size):
        vols = []
        for i in range(start, min(start + batch_size, len(table))):
            vols.append(clf.spec.load_row(table, i).data)
        f, o = layer_features(clf.model, clf.prepare(np.stack(vols)), layer=layer, batch_size=batch_size)
        feats.append(f)
        outs.append(o)
    features = np.concatenate(feats)
    output = np.concatenate(outs)
    import torch

    from neurointerp.models.checkpoint import outputs_to_scores

    if score == "logit" and clf.task == "binary":
        # the logit keeps the severity a saturated classifier squeezes into P ~ 0 or 1
        s = output[:, 0].astype(float)
    else:
        s = np.asarray(outputs_to_scores(torch.from_numpy(output), clf.task, clf.target), dtype=float).ravel()
    result, mask, design = confound_glm(features, s, table.frame, names, threshold=threshold, fdr=fdr, where=str(table.path))
    n_conf = int(result["confounded"].sum())
    n_const = int(result["constant"].sum())
    tests = None
    if model_tests:
        from neurointerp.confound.model_tests import choose_subjects, run_model_tests

        if labels is None:
            tests_json = {"NotRun": f"{table.path} has no '{table.label_column}' column: the model-level tests need each subject's label"}
        else:
            # the model-level tests use the logit (binary): the probability saturates at 0/1
            m_score = output[:, 0].astype(float) if clf.task == "binary" else s
            m_name = f"logit of P({clf.classes[1]})" if clf.task == "binary" else "prediction"
            subjects = choose_subjects(table.participant_ids, clf.participant_ids)
            tests = run_model_tests(m_score, labels, clf.task, list(clf.classes), design, names, subjects, threshold=threshold, n_perm=permutations, seed=seed, score_name=m_name)
            tests_json = tests.to_json()
    params = dict(confounder=names, layer=layer, threshold=threshold, fdr=fdr, score=score, drop_missing=drop_missing)
    if model_tests:
        params.update(model_tests=True, permutations=permutations, seed=seed)
    record = provenance(
        "confound-test",
        params,
        inputs=list(table.images),
        Checkpoint={"path": str(Path(model).resolve()), "sha256": sha256(model)},
        Layer=layer or "encoder (encoder -> predictor boundary)",
        Score=("logit of the positive class" if score == "logit" else "P(positive class)") if clf.task == "binary" else "prediction",
        Design=design.columns,
        ConfounderKinds=design.kinds,
    )
    write_table(out / "confound_glm.tsv", result, force=force)
    summary = {**record, "NFeatures": int(mask.size), "NConfounded": n_conf, "NConstant": n_const, "NSubjects": len(table)}
    if model_tests:
        summary["ModelTests"] = tests_json
        _write_model_test_outputs(out, tests, tests_json, summary, layer, threshold, fdr, names, force)
    write_json(out / "summary.json", summary, force=force)
    path = write_json(out / "mask.json", {"mask": mask.tolist(), "layer": layer, "threshold": threshold, "fdr": fdr, "confounders": names, "Provenance": record}, force=force)
    info(f"confound-test: {n_conf} of {mask.size} features confounded by {', '.join(names)} ({n_const} constant) -> {path}")
    if model_tests:
        for line in (tests.conclusions if tests is not None else [f"model-level tests not run: {tests_json['NotRun']}"]):
            info(f"confound-test: {line}")
    return path


def _write_model_test_outputs(out: Path, tests, tests_json: dict, summary: dict, layer, threshold: float, fdr: bool, names, force: bool) -> None:
    """``model_tests.tsv``. The findings in words, the tests and the GLM counts go into the run's
    ``report.html`` (:mod:`neurointerp.report.sections`, written when the run completes)."""
    import pandas as pd

    from neurointerp.io import write_table

    table = tests.table() if tests is not None else pd.DataFrame(columns=["test", "stratum", "confounder", "n", "statistic", "value", "r", "p", "p_perm", "p_holm", "significant", "note"])
    write_table(out / "model_tests.tsv", table, force=force)


def _is_missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and np.isnan(v):
        return True
    return str(v).strip().lower() in ("", "na", "n/a", "nan", "none", "null")
