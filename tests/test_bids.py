"""BIDS input (BIDS-App style) and longitudinal data: selection, joins, resumable subsets, sessions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurointerp.cli.app import main
from neurointerp.errors import InputError

PIDS = ["01", "02", "03", "04", "05", "06"]


def make_bids(root: Path, synth_dir: Path | None = None, n_sessions: int = 2) -> Path:
    """A raw BIDS dataset: 6 participants x ``n_sessions`` sessions, participants.tsv (label, sex)
    and a sessions table per participant (age per session). Images are ``synth brain`` T1s
    (session 2: the same head with 2% more intensity and a little noise) or tiny boxes."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.9.0", "DatasetType": "raw"}))
    rng = np.random.default_rng(0)
    rows = []
    if synth_dir is not None:
        syn = pd.read_csv(synth_dir / "cohort.csv", dtype={"participant_id": str})
    for k, pid in enumerate(PIDS):
        if synth_dir is not None:
            img = nib.load(str(synth_dir / syn["image"][k]))
            data, affine = np.asarray(img.dataobj, dtype=np.float32), img.affine
            label, sex, age = syn["label"][k], syn["sex"][k], float(syn["age"][k])
        else:
            data, affine = np.zeros((8, 8, 8), np.float32), np.diag([4.0, 4.0, 4.0, 1.0])
            data[2:6, 2:6, 2:6] = 100.0
            label, sex, age = ("patient" if k % 2 else "control"), "MF"[k % 2], 60.0 + k
        rows.append({"participant_id": f"sub-{pid}", "label": label, "sex": sex})
        sessions = []
        for s in range(1, n_sessions + 1):
            ses = f"{s:02d}"
            anat = root / f"sub-{pid}" / f"ses-{ses}" / "anat"
            anat.mkdir(parents=True, exist_ok=True)
            vol = data * (1.0 + 0.02 * (s - 1)) + (s - 1) * rng.normal(0, 0.01 * float(data.max()), data.shape).astype(np.float32) * (data > 0)
            nib.save(nib.Nifti1Image(vol.astype(np.float32), affine), str(anat / f"sub-{pid}_ses-{ses}_T1w.nii.gz"))
            sessions.append({"session_id": f"ses-{ses}", "age": round(age + 2.0 * (s - 1), 1)})
        pd.DataFrame(sessions).to_csv(root / f"sub-{pid}" / f"sub-{pid}_sessions.tsv", sep="\t", index=False)
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    return root


@pytest.fixture()
def bids(tmp_path):
    return make_bids(tmp_path / "bids")


# --------------------------------------------------------------------------- the reader


def test_whole_dataset_joins_participants_and_sessions(bids):
    from neurointerp.io.bids import read_bids

    frame = read_bids(bids).frame
    assert list(frame.columns[:3]) == ["participant_id", "session_id", "image"]
    assert len(frame) == 12
    assert set(zip(frame["participant_id"], frame["session_id"])) == {(p, s) for p in PIDS for s in ("01", "02")}
    row = frame[(frame.participant_id == "03") & (frame.session_id == "02")].iloc[0]
    assert row["label"] == "control" and row["sex"] == "M" and float(row["age"]) == 64.0  # age of session 2
    assert Path(row["image"]).name == "sub-03_ses-02_T1w.nii.gz" and Path(row["image"]).is_absolute()


def test_selection_picks_exactly_the_labelled_participants_and_sessions(bids, tmp_path):
    from neurointerp.io.bids import read_bids

    frame = read_bids(bids, participant_label=["sub-02", "05"], session_label=["ses-02"]).frame
    assert list(zip(frame["participant_id"], frame["session_id"])) == [("02", "02"), ("05", "02")]
    spec = tmp_path / "filter.json"
    spec.write_text(json.dumps({"t1w": {"datatype": "anat", "suffix": "T1w", "session": ["01"]}, "bold": {"task": "rest"}}))
    frame = read_bids(bids, participant_label=["04"], filter_file=spec).frame
    assert list(zip(frame["participant_id"], frame["session_id"])) == [("04", "01")]
    # an acquisition that only one image has; run numbers compare as numbers
    src = bids / "sub-01" / "ses-01" / "anat" / "sub-01_ses-01_T1w.nii.gz"
    shutil.copy(src, src.with_name("sub-01_ses-01_acq-fast_run-01_T1w.nii.gz"))
    spec.write_text(json.dumps({"t1w": {"acquisition": "fast", "run": 1}}))
    frame = read_bids(bids, filter_file=spec).frame
    assert list(zip(frame["participant_id"], frame["session_id"])) == [("01", "01")]
    spec.write_text(json.dumps({"t1w": {"acquisition": None}}))
    assert len(read_bids(bids, filter_file=spec).frame) == 12


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["--participant-label", "07"], "participant '07' not found"),
        (None, ["--session-label", "03"], "session '03' not found"),
        ("filter_unknown", [], "t1w.task is not supported"),
        ("filter_json", [], "not valid JSON"),
        ("two_runs", [], "2 T1w images match"),
        ("participants_tsv", [], "missing column 'participant_id'"),
        ("sessions_dup", [], "duplicate session_id"),
    ],
)
def test_bad_bids_input_is_one_line_naming_the_file_and_nothing_written(bids, tmp_path, capsys, setup, args, message):
    spec = tmp_path / "filter.json"
    if setup == "filter_unknown":
        spec.write_text(json.dumps({"t1w": {"task": "rest"}}))
        args = ["--bids-filter-file", str(spec)]
    elif setup == "filter_json":
        spec.write_text('{"t1w": {"session": ["01"],}}')
        args = ["--bids-filter-file", str(spec)]
    elif setup == "two_runs":
        src = bids / "sub-02" / "ses-01" / "anat" / "sub-02_ses-01_T1w.nii.gz"
        shutil.copy(src, src.with_name("sub-02_ses-01_run-2_T1w.nii.gz"))
    elif setup == "participants_tsv":
        (bids / "participants.tsv").write_text("subject\tlabel\nsub-01\tcontrol\n")
    elif setup == "sessions_dup":
        (bids / "sub-03" / "sub-03_sessions.tsv").write_text("session_id\tage\nses-01\t60\nses-01\t61\n")
    out = tmp_path / "out"
    code = main(["preprocess", str(bids), str(out), "--brain-extraction", "none", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
    where = {"filter_unknown": "filter.json", "filter_json": "filter.json", "two_runs": "sub-02/ses-01/anat",
             "participants_tsv": "participants.tsv", "sessions_dup": "sub-03_sessions.tsv"}.get(setup, str(bids))
    assert where in err[0]
    assert not out.exists()


def test_bids_options_need_a_bids_folder(tmp_path, capsys):
    table = tmp_path / "c.csv"
    table.write_text("participant_id,image\n01,x.nii.gz\n")
    code = main(["preprocess", str(tmp_path / "c.csv"), str(tmp_path / "out"), "--participant-label", "01"])
    err = capsys.readouterr().err
    assert code == 2 and "needs a BIDS dataset folder" in err


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """6 participants x 2 sessions of synth brain T1s as a raw BIDS dataset, preprocessed in two
    invocations on disjoint participant subsets (the second also with --session-label) into one OUT."""
    from neurointerp.synth.brain import synth_brain

    root = tmp_path_factory.mktemp("bids_e2e")
    synth_brain(root / "syn", n_subjects=6, voxel_size=4.0, seed=3, max_rotation=5.0, max_translation=5.0, bias=0.1)
    bids = make_bids(root / "bids", synth_dir=root / "syn")
    fast = ["--brain-extraction", "none", "--threads", "2", "--voxel-size", "6", "--registration-resolution", "6", "--no-n4", "--no-qc"]
    pp = root / "pp"
    codes = [main(["preprocess", str(bids), str(pp), *fast, "--participant-label", "01", "--participant-label", "sub-02", "--participant-label", "03"])]
    # the BIDS-App form (fMRIPrep's): analysis level 'participant', space-separated labels
    codes.append(main(["preprocess", str(bids), str(pp), "participant", "--participant-label", "04", "05", "06", "--session-label", "01", *fast]))
    codes.append(main(["preprocess", str(bids), str(pp), "participant", *fast, "--participant-label", "04", "05", "sub-06", "--session-label", "ses-02"]))
    return root, bids, pp, codes


def test_e2e_preprocess_table_lists_every_finished_subject(e2e):
    root, bids, pp, codes = e2e
    assert codes == [0, 0, 0]
    table = pd.read_csv(pp / "cohort.csv", dtype={"participant_id": str, "session_id": str})
    assert list(zip(table["participant_id"], table["session_id"])) == [(p, s) for p in PIDS for s in ("01", "02")]
    assert list(table.columns[:3]) == ["participant_id", "session_id", "image"]
    assert set(table["label"]) == {"control", "patient"}
    truth = pd.read_csv(bids / "sub-04" / "sub-04_sessions.tsv", sep="\t")
    assert table[(table.participant_id == "04")]["age"].tolist() == truth["age"].tolist()  # per-session covariate
    for rel, pid, ses in zip(table["image"], table["participant_id"], table["session_id"]):
        assert (pp / rel).is_file() and f"sub-{pid}_ses-{ses}_" in rel


def test_e2e_train_saliency_group_map_count_participants(e2e, capsys):
    root, bids, pp, _ = e2e
    table = pp / "cohort.csv"
    assert main(["train", str(table), str(root / "train"), "--folds", "0", "--final", "--steps", "4", "--batch-size", "4", "--threads", "2"]) == 0
    # participant 01 keeps one session: a mean over maps would weight it half as much as the others
    cohort = pd.read_csv(table, dtype={"participant_id": str, "session_id": str})
    cohort = cohort[~((cohort.participant_id == "01") & (cohort.session_id == "02"))]
    cohort["image"] = [str(pp / p) for p in cohort["image"]]
    table = root / "explain.csv"
    cohort.to_csv(table, index=False)
    assert main(["saliency", str(root / "train" / "model.pt"), str(table), str(root / "sal"), "--method", "gradient", "--allow-unvalidated", "--allow-train"]) == 0
    # saliency's group mean weights participants: each participant's sessions averaged first
    maps = {}
    for pid, ses in zip(cohort["participant_id"], cohort["session_id"]):
        found = sorted((root / "sal" / f"sub-{pid}" / f"ses-{ses}").rglob(f"sub-{pid}_ses-{ses}_*desc-gradient_attribution.nii.gz"))
        assert len(found) == 1, found
        maps[(pid, ses)] = np.asarray(nib.load(str(found[0])).dataobj, dtype=np.float64)
    mean_file = sorted((root / "sal" / "group").glob("*label-all_desc-gradientMean_attribution.nii.gz"))
    assert len(mean_file) == 1
    got = np.asarray(nib.load(str(mean_file[0])).dataobj, dtype=np.float64)
    expected = np.mean([np.mean([v for (p2, _), v in maps.items() if p2 == p], axis=0) for p in PIDS], axis=0)
    per_map = np.mean(list(maps.values()), axis=0)
    tol = 1e-5 * np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=tol)
    assert np.abs(per_map - expected).max() > 100 * tol  # the test tells the two weightings apart
    side = json.loads(mean_file[0].with_name(mean_file[0].name.replace(".nii.gz", ".json")).read_text())
    assert side["NMaps"] == 11 and side["NParticipants"] == 6
    # group-map: sessions refused without a rule, averaged per participant with --sessions mean
    capsys.readouterr()
    code = main(["group-map", str(root / "sal"), str(root / "gm0"), "--covariates", str(table), "--no-figures"])
    assert code == 2 and "--sessions mean" in capsys.readouterr().err
    code = main(["group-map", str(root / "sal"), str(root / "gm"), "--covariates", str(table), "--sessions", "mean", "--design", "label,age", "--no-figures"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((root / "gm" / "group" / "group_map.json").read_text())
    assert summary["n_maps"] == 11 and summary["n_participants"] == 6
    assert summary["glm"]["df"] == 6 - 3  # participants - rank (intercept, label, age)
    assert sum(summary["groups"].values()) == 6


@pytest.mark.parametrize("argv, expected", [
    (["preprocess", "b", "o", "participant", "--participant-label", "01", "02"],
     ["preprocess", "b", "o", "--participant-label", "01", "--participant-label", "02"]),
    (["--quiet", "preprocess", "b", "o", "--participant-label=01", "--no-qc", "--session-label", "1", "2", "--threads", "2"],
     ["--quiet", "preprocess", "b", "o", "--participant-label=01", "--no-qc", "--session-label", "1", "--session-label", "2", "--threads", "2"]),
    # before INPUT and OUT a label flag takes one value: the list never swallows a positional
    (["preprocess", "--participant-label", "01", "b", "o"], ["preprocess", "--participant-label", "01", "b", "o"]),
    # other commands are left alone ('participant' could be a folder name there)
    (["group-map", "maps.csv", "participant"], ["group-map", "maps.csv", "participant"]),
    (["preprocess", "participant", "o"], ["preprocess", "participant", "o"]),
])
def test_bids_app_command_line_is_rewritten_into_ours(argv, expected):
    from neurointerp.cli.bidsapp import rewrite

    assert rewrite(argv) == expected


def test_bids_app_group_level_is_refused_in_one_line(tmp_path, capsys):
    code = main(["preprocess", str(tmp_path), str(tmp_path / "out"), "group"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "group-map" in err[0]
    assert not (tmp_path / "out").exists()
