"""A report for every run (issue #22 item 4): each command's small run leaves ``report.html``
with its command line, a methods paragraph, its own sections, the failures of a run where one
subject fails, and images that resolve. With Debian's chromium installed, the pages are also
rendered headless (screenshot not blank, sections in the DOM).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from injection import inject_failure
from neurointerp.cli.app import main

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
PP = ["--shape", "16", "--brain-extraction", "none", "--threads", "1", "--registration-resolution", "8"]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.imgs, self.nav = [], [], []
        self._in_nav = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "nav":
            self._in_nav = True
        if tag == "a" and self._in_nav:
            self.nav.append(a.get("href", ""))

    def handle_endtag(self, tag):
        if tag == "nav":
            self._in_nav = False


def report_of(out: Path, command: str) -> tuple[Path, str, _Page]:
    """The run's report as its record lists it, checked for what every report holds."""
    slug = command.replace(" ", "-")
    written = (out / ".neurointerp" / slug / "written.txt").read_text().splitlines()
    reports = [w for w in written if w.endswith("report.html")]
    assert reports, f"no report listed in {slug}/written.txt"
    path = out / reports[0]
    text = path.read_text()
    page = _Page()
    page.feed(text)
    record = json.loads((out / ".neurointerp" / slug / "run.json").read_text())
    import html

    assert html.escape(" ".join(shlex.quote(a) for a in record["command_line"])) in text  # the exact command line
    for section in ("summary", "failures", "methods", "provenance"):
        assert section in page.ids and f"#{section}" in page.nav, section
    assert all(f"#{a}" in page.ids or a.startswith("#") and a[1:] in page.ids for a in page.nav)
    assert "Software: neurointerp" in text and "PyTorch" in text
    for src in page.imgs:  # no broken image links
        assert (path.parent / src).is_file(), src
    return path, text, page


def _inject_failure(monkeypatch, pid: str):
    return inject_failure(monkeypatch, pid)


def _three(world, tmp_path) -> Path:
    frame = pd.read_csv(world.native_cohort, dtype=str).iloc[:3].copy()
    frame["image"] = [str(world.native_cohort.parent / p) for p in frame["image"]]
    frame = frame.drop(columns=["template_image"])
    table = tmp_path / "three.csv"
    frame.to_csv(table, index=False)
    return table


def test_preprocess_report_has_the_qc_table_figures_and_failures(world, tmp_path, monkeypatch, capsys):
    table = _three(world, tmp_path)
    out = tmp_path / "pre"
    pid = pd.read_csv(table, dtype=str)["participant_id"][1]
    original = _inject_failure(monkeypatch, pid)
    assert main(["--quiet", "preprocess", str(table), str(out), *PP]) == 1
    path, text, page = report_of(out, "preprocess")
    assert path == out / "report.html"
    assert "injected failure" in text and "1 failed" in text  # failures.tsv in the page
    assert "Cohort QC" in text and "Dice" in text and "NCC" in text and "qc" in page.ids
    assert "Tustison et al. 2010" in text and "Avants et al. 2011" in text  # N4 and ANTs cited (methods)
    assert len(page.imgs) == 2  # the two finished subjects' QC figures
    monkeypatch.setattr("neurointerp.runs.subjects._process", original)
    assert main(["--quiet", "preprocess", str(table), str(out), *PP]) == 0  # the resubmission rebuilds it
    path, text, page = report_of(out, "preprocess")
    assert "injected failure" not in text and "3 done, 0 failed" in text and len(page.imgs) == 3
    assert "complete" in text


def test_preprocess_qc_flags_outliers():
    from neurointerp.report.sections import qc_flags

    frame = pd.DataFrame({"dice_brain_mask": [0.95, 0.96, 0.955, 0.70, 0.958], "ncc_template": [0.86, 0.87, 0.6, 0.85, 0.866]})
    flags = qc_flags(frame)
    assert flags[0] == flags[1] == flags[4] == ""
    assert "< 0.8" in flags[3] and "outlier" in flags[2]


def test_train_report_shows_the_held_out_evidence(world, tmp_path):
    out = tmp_path / "train"
    assert main(["--quiet", "train", str(world.cohort), str(out), "--folds", "2", "--final", "--steps", "4", "--batch-size", "4", "--threads", "1"]) == 0
    _, text, page = report_of(out, "train")
    assert "evidence" in page.ids and "balanced accuracy" in text and "p vs chance" in text and "fold-1" in text
    assert "subject-level stratified cross-validation" in text and page.imgs  # methods, learning curve


def test_saliency_report_shows_the_skill_before_any_map_and_failures(world, tmp_path, monkeypatch):
    out = tmp_path / "sal"
    pid = pd.read_csv(world.cohort, dtype=str)["participant_id"][0]
    original = _inject_failure(monkeypatch, pid)
    argv = ["--quiet", "saliency", str(world.classifier), str(world.cohort), str(out), "--method", "gradient", "--method", "integrated-gradients",
            "--steps", "4", "--atlas", "none", "--threads", "1", "--allow-unvalidated"]
    assert main(argv) == 1
    _, text, _ = report_of(out, "saliency")
    assert "injected failure" in text and "Group mean maps" not in text  # no group outputs from an incomplete cohort
    monkeypatch.setattr("neurointerp.runs.subjects._process", original)
    assert main(argv) == 0
    _, text, page = report_of(out, "saliency")
    assert "Held-out skill of the model" in text and "no held-out evidence" in text
    assert page.imgs and text.index("Held-out skill of the model") < text.index("<img")
    assert "Sundararajan et al. 2017" in text and "Simonyan et al. 2014" in text


def test_group_map_report(world, tmp_path):
    out = tmp_path / "gm"
    assert main(["--quiet", "group-map", str(world.maps_table), str(out), "--design", "none"]) == 0
    _, text, page = report_of(out, "group-map")
    assert "stats" in page.ids and "Maps" in text and page.imgs


def test_confound_and_evaluate_reports(world, tmp_path):
    out = tmp_path / "ct"
    assert main(["--quiet", "confound-test", str(world.classifier), str(world.cohort), str(out), "--confounder", "age", "--permutations", "99", "--allow-unvalidated"]) == 0
    _, text, page = report_of(out, "confound-test")
    assert "Is the model right for the wrong reason?" in text and "Per-feature GLM" in text and "Zhao et al. 2019" in text
    out = tmp_path / "ev"
    assert main(["--quiet", "evaluate", str(world.classifier), str(world.cohort), str(out), "--method", "gradient", "--n-subjects", "2",
                 "--samples", "2", "--sensitivity-samples", "2", "--allow-unvalidated"]) == 0
    _, text, page = report_of(out, "evaluate")
    assert "Attribution quality" in text and "infidelity" in text and "Adebayo et al. 2018" in text


def test_simulate_train_report(world):
    out = Path(world.simulator).parent  # trained through the library by the world fixture
    _, text, _ = report_of(out, "simulate train")
    assert "Liu et al. 2021" in text and "Simulator networks" in text


def test_a_report_that_cannot_be_built_warns_and_keeps_the_run(world, tmp_path, monkeypatch, capsys):
    import neurointerp.report.run_report as rr

    def boom(*a, **k):
        raise RuntimeError("no report today")

    monkeypatch.setattr(rr, "render_run_page", boom)
    out = tmp_path / "gm"
    assert main(["group-map", str(world.maps_table), str(out), "--design", "none", "--no-figures"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "no report today" in err and not (out / "report.html").exists()
    assert json.loads((out / ".neurointerp" / "group-map" / "run.json").read_text())["state"] == "complete"


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_reports_render_in_headless_chromium(world, tmp_path):
    out = tmp_path / "sal"
    assert main(["--quiet", "saliency", str(world.classifier), str(world.cohort), str(out), "--method", "gradient", "--atlas", "none",
                 "--threads", "1", "--allow-unvalidated"]) == 0
    path, _, page = report_of(out, "saliency")
    shot = tmp_path / "shot.png"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--user-data-dir=" + str(tmp_path / "profile")]
    proc = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,2000", path.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(str(shot))
    assert img.shape[0] == 2000 and img.shape[1] == 1280
    assert np.asarray(img[..., :3]).std() > 0.02  # not blank
    dom = subprocess.run([*base, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120).stdout
    for section in ("summary", "skill", "failures", "methods", "provenance"):
        assert f'id="{section}"' in dom, section
    assert dom.count("<img") == len(page.imgs) > 0


def test_report_name_beside_another_commands_run(tmp_path):
    from neurointerp.report.run_report import report_path

    out = tmp_path / "out"
    (out / ".neurointerp" / "train").mkdir(parents=True)
    assert report_path(out, "train") == out / "report.html"
    (out / ".neurointerp" / "train" / "run.json").write_text(json.dumps({"command": "train"}))
    (out / ".neurointerp" / "train" / "written.txt").write_text("report.html\n")
    (out / "report.html").write_text("train's")
    assert report_path(out, "train") == out / "report.html"  # its own: rebuilt in place
    assert report_path(out, "saliency") == out / "saliency_report.html"  # never over another run's page
    (out / ".neurointerp" / "train").rename(out / ".neurointerp" / "x")
    (out / "report.html").write_text("a user's file")
    assert report_path(out, "train") == out / "train_report.html"
