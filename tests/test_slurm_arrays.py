"""``jacobian`` shares a table of fields across SLURM array tasks and finishes only what is missing."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd

from neurointerp.cli.app import main
from neurointerp.simulate.jacobian import jacobian_maps
from neurointerp.simulate.warp import save_field

SHAPE = (8, 9, 7)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _table(folder):
    """Four subjects, one direction: x-scalings 1.05 .. 1.20 (det known in the interior)."""
    g = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")).astype(float)
    rows = []
    for k, s in enumerate((1.05, 1.10, 1.15, 1.20)):
        name = f"sub-s{k}_space-tpl_desc-inject_xfm.nii.gz"
        save_field(np.stack([(s - 1.0) * g[0], 0 * g[1], 0 * g[2]]), AFFINE, folder / name)
        rows.append({"participant_id": f"s{k}", "direction": "inject", "field": name})
    pd.DataFrame(rows).to_csv(folder / "fields.tsv", sep="\t", index=False)
    return folder / "fields.tsv"


def _log_map(out, k):
    return out / f"sub-s{k}" / "anat" / f"sub-s{k}_space-tpl_desc-inject_logjacobian.nii.gz"


GROUP = "group/space-tpl_desc-injectmean_logjacobian.nii.gz"


def test_array_tasks_share_rows_and_last_task_writes_group(tmp_path):
    table = _table(tmp_path)
    out = tmp_path / "arr"
    jacobian_maps(table, out, array_index=0, array_size=2)
    assert [k for k in range(4) if _log_map(out, k).exists()] == [0, 2]  # rows 0 and 2 only
    assert not (out / "jacobian.tsv").exists() and not (out / GROUP).exists()
    jacobian_maps(table, out, array_index=1, array_size=2)  # the task that completes the cohort
    assert all(_log_map(out, k).exists() for k in range(4))
    mean = nib.load(str(out / GROUP))
    inner = (slice(2, -2),) * 3
    assert np.allclose(mean.get_fdata()[inner], np.mean(np.log([1.05, 1.10, 1.15, 1.20])), atol=1e-5)
    assert np.allclose(mean.affine, AFFINE)
    summary = pd.read_csv(out / "jacobian.tsv", sep="\t")
    assert list(summary["participant_id"]) == ["s0", "s1", "s2", "s3"]
    # the same maps as one task over everything
    whole = jacobian_maps(table, tmp_path / "whole")
    assert np.array_equal(nib.load(str(whole / GROUP)).get_fdata(), mean.get_fdata())


def test_resubmission_redoes_only_missing_or_changed_subjects(tmp_path, monkeypatch):
    table = _table(tmp_path)
    out = jacobian_maps(table, tmp_path / "out")
    stamp = {k: _log_map(out, k).stat().st_mtime_ns for k in range(4)}
    # SLURM environment: task 1 of 2 (rows 1 and 3), ids from SLURM_ARRAY_TASK_ID/COUNT
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    _log_map(out, 3).unlink()
    assert main(["jacobian", str(table), str(out)]) == 0
    after = {k: _log_map(out, k).stat().st_mtime_ns for k in range(4)}
    assert after[3] != stamp[3] and all(after[k] == stamp[k] for k in (0, 1, 2))
    # a field whose content changed is redone too, under its own task only
    g = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")).astype(float)
    save_field(np.stack([0.3 * g[0], 0 * g[1], 0 * g[2]]), AFFINE, tmp_path / "sub-s1_space-tpl_desc-inject_xfm.nii.gz", force=True)
    assert main(["jacobian", str(table), str(out)]) == 0
    redone = nib.load(str(_log_map(out, 1))).get_fdata()
    assert np.allclose(redone[(slice(2, -2),) * 3], np.log(1.3), atol=1e-5)
    assert _log_map(out, 3).stat().st_mtime_ns == after[3]
    # the group mean follows the new field
    inner = (slice(2, -2),) * 3
    assert np.allclose(nib.load(str(out / GROUP)).get_fdata()[inner], np.mean(np.log([1.05, 1.30, 1.15, 1.20])), atol=1e-5)


def test_bad_array_index_is_one_line(tmp_path, capsys):
    table = _table(tmp_path)
    assert main(["jacobian", str(table), str(tmp_path / "o"), "--array-index", "2", "--array-size", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--array-index 2" in err[0]


def test_simulate_apply_folder_with_array_parts(tmp_path, monkeypatch):
    """An older `simulate apply` array left fields-part<k>of<n>.tsv: jacobian reads the folder as one
    table; relative field paths resolve from the table's folder, never from the working directory."""
    table = _table(tmp_path)
    frame = pd.read_csv(table, sep="\t")
    sim = tmp_path / "sim"
    sim.mkdir()
    monkeypatch.chdir(sim)
    frame["field"] = ["../" + f for f in frame["field"]]  # relative to the tables' folder
    frame.iloc[[0, 2]].to_csv(sim / "fields-part0of2.tsv", sep="\t", index=False)
    frame.iloc[[3, 1]].to_csv(sim / "fields-part1of2.tsv", sep="\t", index=False)
    out = jacobian_maps(sim, tmp_path / "jac")
    summary = pd.read_csv(out / "jacobian.tsv", sep="\t")
    assert list(summary["participant_id"]) == ["s0", "s1", "s2", "s3"]
    inner = (slice(2, -2),) * 3
    assert np.allclose(nib.load(str(out / GROUP)).get_fdata()[inner], np.mean(np.log([1.05, 1.10, 1.15, 1.20])), atol=1e-5)
