"""``neurointerp demo``: every available step, end to end, on a small synthetic brain cohort.

Each step writes into its own subfolder of ``out`` and adds a section to ``report.html``.
The planted ground truth of the cohort (disease and confounder log-Jacobians) is shown next
to what the steps recover, so a user sees at a glance whether a map can be trusted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from neurointerp.report.html import Section


def run_demo(
    out: str | os.PathLike = "neurointerp-demo",
    n_subjects: int = 24,
    voxel_size: float = 4.0,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Run the demo chain and return the path of ``report.html``. Same arguments as the CLI."""
    from neurointerp._version import __version__
    from neurointerp.io import prepare_output_dir
    from neurointerp.progress import info
    from neurointerp.report.html import write_report

    out = prepare_output_dir(out, force=force)
    sections: list[Section] = []
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    info("demo: synth brain")
    cohort = _step_synth(out, n_subjects, voxel_size, seed, force, sections)
    timings["synth brain"] = time.perf_counter() - t0

    summary = "\n".join(f"{k}: {v:.1f} s" for k, v in timings.items())
    sections.append(Section("Timings", summary))
    report = write_report(out / "report.html", "neurointerp demo", sections, footer=f"neurointerp {__version__}; cohort {cohort}")
    return report


def _step_synth(out: Path, n_subjects: int, voxel_size: float, seed: int, force: bool, sections: list[Section]) -> Path:
    import pandas as pd
    from scipy import stats

    from neurointerp.io import load_image, read_cohort
    from neurointerp.report.figures import ortho_figure
    from neurointerp.synth.brain import SPACE, synth_brain

    data = out / "synth"
    table = synth_brain(data, n_subjects=n_subjects, voxel_size=voxel_size, seed=seed, force=force)
    cohort = read_cohort(table, numeric=["age"])
    frame = cohort.frame
    truth = data / "truth"
    tpl = load_image(truth / f"space-{SPACE}_T1w.nii.gz")
    dis = load_image(truth / f"space-{SPACE}_desc-disease_logjacobian.nii.gz")
    age = load_image(truth / f"space-{SPACE}_desc-confounder_logjacobian.nii.gz")
    figs = out / "figures"
    truth_png = ortho_figure(
        [("disease (severity 1)", tpl.data, tpl.affine, dis.data), ("age (+1 SD)", tpl.data, tpl.affine, age.data)],
        figs / "truth.png",
        at_world=(-26.0, -18.0, 10.0),
        overlay_label="log-Jacobian",
    )
    first = [frame.index[frame["label"] == lab][0] for lab in sorted(frame["label"].unique())]
    panels = []
    for i in first:
        vol = load_image(cohort.images[i])
        panels.append((f"{frame.loc[i, 'participant_id']} ({frame.loc[i, 'label']})", vol.data, vol.affine, None))
    native_png = ortho_figure(panels, figs / "native_examples.png")
    groups = frame.groupby("label")["age"].agg(["count", "mean", "std"]).reset_index()
    is_patient = (frame["label"] == sorted(frame["label"].unique())[-1]).astype(float)
    r, p = stats.pearsonr(frame["age"], is_patient)
    text = (
        f"{len(frame)} subjects written to {data.name}/ in native (posed, LAS, bias field, Rician noise) space. "
        f"Planted disease effect: hippocampal atrophy and ventricle expansion; planted confounder: age "
        f"(frontal atrophy), correlated with diagnosis (r = {r:.2f}, p = {p:.2g}); sex is a null covariate.\n\n"
        f"Ground truth (template space {SPACE}) is in {data.name}/truth/."
    )
    sections.append(Section("Synthetic cohort (synth brain)", text, [truth_png, native_png], table=pd.DataFrame(groups)))
    return table
