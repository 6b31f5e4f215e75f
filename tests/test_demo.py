import pytest

from neurointerp.cli.app import main


@pytest.mark.slow
def test_demo_runs_the_whole_chain_and_writes_report(tmp_path):
    out = tmp_path / "demo"
    assert main(["--quiet", "demo", str(out), "--n-subjects", "16", "--voxel-size", "6"]) == 0
    html = (out / "report.html").read_text()
    for section in ("Synthetic cohort", "Preprocessing", "Classifier", "Attribution maps scored against the truth", "Confounders", "Group maps", "Attribution quality",
                    "Simulated disease and its Jacobian", "ICAM", "segment-bg", "Timings"):
        assert section in html, section
    # the classifier's held-out skill is reported before any map (issue #21)
    assert "Held-out skill first" in html and html.index("Held-out skill first") < html.index("saliency_vs_truth.png")
    assert "age-only baseline AUC" in html
    # and why the training draws were (not) weighted for age, as the checkpoint records it
    from neurointerp.models.checkpoint import read_checkpoint

    reason = read_checkpoint(out / "train" / "model.pt")["training"]["confounder_weighting"]["reason"]
    assert reason.startswith("training draws") and f"T{reason[1:60]}" in html, reason
    for png in ("truth.png", "native_examples.png", "preprocessed_example.png", "saliency_vs_truth.png"):
        assert (out / "figures" / png).stat().st_size > 1000
        assert f"figures/{png}" in html
    assert (out / "train" / "model.pt").exists() and (out / "saliency" / "group" / "scores_summary.tsv").exists()
    assert (out / "confound" / "mask.json").exists() and (out / "evaluate" / "metrics.tsv").exists()
    assert (out / "simulate_apply" / "logits.tsv").exists() and (out / "figures" / "simulated_jacobian.png").stat().st_size > 1000
    assert (out / "jacobian" / "jacobian.tsv").exists()
    # a second run refuses to overwrite
    assert main(["--quiet", "demo", str(out), "--n-subjects", "16"]) == 2
