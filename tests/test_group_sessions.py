"""group-map with several sessions per participant: sessions are never counted as subjects.

--sessions mean: statistics of per-participant mean maps (df = participants - rank), equal to
statsmodels OLS on those means; --sessions subject: a subject term (paired design, df =
maps - participants - within columns), equal to a paired t-test; neither: refused.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from neurointerp.cli.app import main

N_SUB, N_SES, SHAPE = 6, 2, (5, 4, 3)


@pytest.fixture(scope="module")
def longi(tmp_path_factory):
    root = tmp_path_factory.mktemp("longi")
    rng = np.random.default_rng(7)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    rows, data = [], {}
    for k in range(N_SUB):
        pid = f"{k + 1:02d}"
        label = "patient" if k % 2 else "control"
        base = rng.normal(0, 1, SHAPE) + (0.8 if label == "patient" else 0.0)
        for s in range(N_SES):
            ses = f"{s + 1:02d}"
            y = base + 0.5 * s + rng.normal(0, 0.3, SHAPE)
            path = root / "maps" / f"sub-{pid}_ses-{ses}_desc-x_map.nii.gz"
            path.parent.mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(y.astype(np.float32), affine), str(path))
            data[(pid, ses)] = np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)
            rows.append({"participant_id": f"sub-{pid}", "session_id": f"ses-{ses}", "label": label,
                         "age": 60 + 3 * k + 1.5 * s + (0.7 if k == 2 else 0.0), "visit": s})
    cov = root / "covariates.tsv"
    pd.DataFrame(rows).to_csv(cov, sep="\t", index=False)
    return root, cov, data, pd.DataFrame(rows)


def _run(args, capsys):
    code = main(["group-map", *map(str, args), "--no-figures"])
    return code, capsys.readouterr().err


def _t(out):
    t = sorted((out / "group").glob("*T_statmap.nii.gz"))
    assert len(t) == 1
    return np.asarray(nib.load(str(t[0])).dataobj, dtype=np.float64), json.loads((out / "group" / "group_map.json").read_text())


def test_repeated_sessions_without_a_rule_are_refused(longi, tmp_path, capsys):
    root, cov, _, _ = longi
    code, err = _run([root / "maps", tmp_path / "o", "--covariates", cov], capsys)
    assert code == 2 and "has 2 maps" in err and "--sessions mean" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_subject_mean_df_counts_participants_and_matches_statsmodels(longi, tmp_path, capsys):
    import statsmodels.api as sm

    root, cov, data, table = longi
    code, err = _run([root / "maps", tmp_path / "o", "--covariates", cov, "--sessions", "mean", "--design", "label,age"], capsys)
    assert code == 0, err
    t, summary = _t(tmp_path / "o")
    assert summary["glm"]["df"] == N_SUB - 3  # participants - rank (intercept, label, age)
    assert summary["n_maps"] == N_SUB * N_SES and summary["n_participants"] == N_SUB
    # by hand: average each participant's sessions (maps and age), then OLS
    pids = [f"{k + 1:02d}" for k in range(N_SUB)]
    Y = np.stack([np.mean([data[(p, f"{s + 1:02d}")] for s in range(N_SES)], axis=0).ravel() for p in pids])
    table = table.assign(pid=[p[4:] for p in table["participant_id"]])
    age = np.array([table[table.pid == p]["age"].mean() for p in pids])
    patient = np.array([float(table[table.pid == p]["label"].iloc[0] == "patient") for p in pids])
    X = sm.add_constant(np.column_stack([patient, age - age.mean()]))
    expected = np.array([sm.OLS(Y[:, v], X).fit().tvalues[1] for v in range(Y.shape[1])])
    assert sm.OLS(Y[:, 0], X).fit().df_resid == summary["glm"]["df"]
    np.testing.assert_allclose(t.ravel(), expected, rtol=1e-4, atol=1e-4)


def test_subject_term_is_a_paired_test(longi, tmp_path, capsys):
    root, cov, data, _ = longi
    code, err = _run([root / "maps", tmp_path / "o", "--covariates", cov, "--sessions", "subject", "--design", "visit", "--contrast", "visit"], capsys)
    assert code == 0, err
    t, summary = _t(tmp_path / "o")
    assert summary["glm"]["df"] == N_SUB - 1  # 12 maps - 6 subject levels - 1 within column
    pids = [f"{k + 1:02d}" for k in range(N_SUB)]
    y2 = np.stack([data[(p, "02")].ravel() for p in pids])
    y1 = np.stack([data[(p, "01")].ravel() for p in pids])
    expected = stats.ttest_rel(y2, y1, axis=0).statistic
    np.testing.assert_allclose(t.ravel(), expected, rtol=1e-4, atol=1e-4)


def test_subject_term_refuses_a_between_subject_effect(longi, tmp_path, capsys):
    root, cov, _, _ = longi
    code, err = _run([root / "maps", tmp_path / "o", "--covariates", cov, "--sessions", "subject", "--design", "label"], capsys)
    assert code == 2 and "label" in err and "do not vary within participants" in err.replace("does not", "do not")


def test_subject_mean_refuses_a_label_that_changes_between_sessions(longi, tmp_path, capsys):
    root, cov, _, table = longi
    bad = table.copy()
    bad.loc[1, "label"] = "patient"  # participant 01, session 02
    path = tmp_path / "cov.tsv"
    bad.to_csv(path, sep="\t", index=False)
    code, err = _run([root / "maps", tmp_path / "o", "--covariates", path, "--sessions", "mean"], capsys)
    assert code == 2 and "differs between sessions" in err and "'01'" in err


def test_subject_mean_with_unequal_sessions_weights_participants(longi, tmp_path, capsys):
    """Participant 01 keeps one session: its mean is that map, and every participant counts once."""
    import shutil

    import statsmodels.api as sm

    root, cov, data, table = longi
    maps = tmp_path / "maps"
    shutil.copytree(root / "maps", maps)
    (maps / "sub-01_ses-02_desc-x_map.nii.gz").unlink()
    code, err = _run([maps, tmp_path / "o", "--covariates", cov, "--sessions", "mean"], capsys)
    assert code == 0, err
    t, summary = _t(tmp_path / "o")
    assert summary["n_maps"] == N_SUB * N_SES - 1 and summary["glm"]["df"] == N_SUB - 2
    assert summary["groups"] == {"control": 3, "patient": 3}
    pids = [f"{k + 1:02d}" for k in range(N_SUB)]
    Y = np.stack([np.mean([v for (p, s), v in data.items() if p == pid and (p, s) != ("01", "02")], axis=0).ravel() for pid in pids])
    X = sm.add_constant(np.array([float(k % 2) for k in range(N_SUB)]))
    expected = np.array([sm.OLS(Y[:, v], X).fit().tvalues[1] for v in range(Y.shape[1])])
    np.testing.assert_allclose(t.ravel(), expected, rtol=1e-4, atol=1e-4)
    mean = sorted((tmp_path / "o" / "group").glob("*desc-controlMean_statmap.nii.gz"))
    got = np.asarray(nib.load(str(mean[0])).dataobj, dtype=np.float64)
    np.testing.assert_allclose(got.ravel(), Y[[0, 2, 4]].mean(axis=0), rtol=1e-5, atol=1e-5)
