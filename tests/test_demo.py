import pytest

from neurointerp.cli.app import main


@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_report(tmp_path):
    out = tmp_path / "demo"
    assert main(["--quiet", "demo", str(out), "--n-subjects", "8", "--voxel-size", "6"]) == 0
    html = (out / "report.html").read_text()
    assert "Synthetic cohort" in html
    for png in ("truth.png", "native_examples.png"):
        assert (out / "figures" / png).stat().st_size > 1000
        assert f"figures/{png}" in html
    # a second run refuses to overwrite, --force re-runs
    assert main(["--quiet", "demo", str(out), "--n-subjects", "8", "--voxel-size", "6"]) == 2
