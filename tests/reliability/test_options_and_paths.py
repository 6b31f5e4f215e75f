"""synth's bad options, outputs that never leave the output folder, a UTF-8 BOM read transparently."""

from __future__ import annotations

import pandas as pd
import pytest

from corpus import snapshot

from neurointerp.cli.app import main
from neurointerp.errors import InputError
from neurointerp.io.derivatives import derivative_path, prepare_output_dir

SYNTH_BAD = [
    (["brain", "--voxel-size", "0"], "voxel-size"),
    (["brain", "--n-subjects", "0"], "n-subjects"),
    (["brain", "--orientation", "XYZ"], "orientation"),
    (["brain", "--confound-strength", "1.5"], "confound-strength"),
    (["brain", "--patient-fraction", "0"], "patient-fraction"),
    (["brain", "--noise", "-1"], "noise"),
    (["brain", "--age-sd", "-2"], "age-sd"),
    (["gaussians", "--variant", "foo"], "variant"),
    (["gaussians", "--n-per-group", "0"], "n-per-group"),
]


@pytest.mark.parametrize("args, culprit", SYNTH_BAD, ids=[" ".join(a[1:]) for a, _ in SYNTH_BAD])
def test_synth_bad_option_one_line_exit_2_nothing_written(tmp_path, capsys, args, culprit):
    out = tmp_path / "out"
    code = main(["-q", "synth", args[0], str(out), *args[1:]])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and culprit in lines[0], lines
    assert not out.exists()


def test_synth_output_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep")
    assert main(["-q", "synth", "gaussians", str(target), "--n-per-group", "2"]) == 2
    assert "taken" in capsys.readouterr().err and target.read_text() == "keep"


@pytest.mark.parametrize("pid", ["../x", "x/../../y", "a b", "", "sub-01", "..", "x\\y"])
def test_derivative_paths_refuse_ids_that_are_not_plain_names(tmp_path, pid):
    with pytest.raises(InputError):
        derivative_path(tmp_path, pid, "T1w", desc="preproc")
    with pytest.raises(InputError):
        derivative_path(tmp_path, "01", "T1w", session=pid or "../s", desc="preproc")


def test_derivative_path_stays_inside_the_folder(tmp_path):
    p = derivative_path(tmp_path, "01", "attribution", session="2", space="MNI152NLin2009aSym", desc="gradient")
    assert p.resolve().is_relative_to(tmp_path.resolve())
    assert p.relative_to(tmp_path).parts == ("sub-01", "ses-2", "anat", "sub-01_ses-2_space-MNI152NLin2009aSym_desc-gradient_attribution.nii.gz")


def test_preprocess_space_option_cannot_name_a_path(world, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["-q", "preprocess", str(world.native_cohort), str(out), "--space", "../../evil", "--shape", "16",
                 "--brain-extraction", "none", "--no-n4", "--no-qc", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "evil" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] or not out.exists()
    assert not list(tmp_path.parent.glob("evil*")) and not [p for p in snapshot(out) if p.endswith(".nii.gz")]


def test_folder_with_only_hidden_entries_counts_as_empty(tmp_path):
    out = tmp_path / "out"
    (out / ".work").mkdir(parents=True)
    (out / ".x.tmp.json").write_text("{")
    assert prepare_output_dir(out) == out  # array tasks starting together: no false 'not empty'
    (out / "result.tsv").write_text("a\n")
    with pytest.raises(InputError, match="not empty"):
        prepare_output_dir(out)
    assert prepare_output_dir(out, marker="result.tsv") == out


def test_utf8_bom_table_gives_the_same_results_as_without(world, tmp_path, capsys):
    """Spreadsheet programs write a byte-order mark; it must not turn 'participant_id' into
    '\\ufeffparticipant_id'. The same confound test with and without it gives identical tables."""
    plain = pd.read_csv(world.cohort)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.to_csv(index=False).encode("utf-8"))
    results = []
    for name, table in (("plain", world.cohort), ("bom", bom)):
        out = tmp_path / name
        code = main(["-q", "confound-test", str(world.classifier), str(table), str(out), "--confounder", "age", "--threads", "1", "--allow-unvalidated"])
        assert code == 0, capsys.readouterr().err
        results.append(pd.read_csv(out / "confound_glm.tsv", sep="\t"))
    pd.testing.assert_frame_equal(results[0], results[1])
    assert len(results[0]) > 0
