"""Nipype interfaces: a real workflow (preprocess -> saliency -> group-map) under MultiProc, and
every interface's flags checked against the CLI they wrap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("nipype", reason="Nipype interface tests need the nipype extra")

from neurointerp import interfaces as ni  # noqa: E402

INTERFACES = {
    ("synth", "brain"): ni.SynthBrain,
    ("preprocess",): ni.Preprocess,
    ("train",): ni.Train,
    ("saliency",): ni.Saliency,
    ("confound-test",): ni.ConfoundTest,
    ("evaluate",): ni.Evaluate,
    ("simulate", "train"): ni.SimulateTrain,
    ("simulate", "apply"): ni.SimulateApply,
    ("jacobian",): ni.Jacobian,
    ("group-map",): ni.GroupMap,
    ("segment-bg", "train"): ni.SegmentBgTrain,
    ("segment-bg", "apply"): ni.SegmentBgApply,
}


def _click_command(path):
    import typer.main

    from neurointerp.cli.app import app

    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("path", list(INTERFACES), ids=["-".join(p) for p in INTERFACES])
def test_interface_flags_are_options_of_the_command(path):
    """Each interface runs `neurointerp <path>`; every flag it can write is an option of that command
    and every positional argument of the command has an input (mandatory or named by default)."""
    iface = INTERFACES[path]
    assert iface._cmd == "neurointerp " + " ".join(path)
    cmd = _click_command(path)
    options = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
    arguments = [p for p in cmd.params if not any(o.startswith("-") for o in p.opts)]
    spec = iface.input_spec()
    positions = set()
    for name, trait in spec.traits(argstr=lambda a: a is not None).items():
        for text in (trait.argstr, trait.neg_argstr):
            if text and text.startswith("-"):
                assert text.split()[0] in options, f"{iface.__name__}.{name}: {text.split()[0]} is not an option of neurointerp {' '.join(path)}"
        if trait.position is not None:
            positions.add(trait.position)
    if any(a.nargs == -1 for a in arguments):  # a variadic path list (simulate): contiguous positions
        assert positions == set(range(len(positions))) and positions
    else:
        assert positions == set(range(len(arguments))), f"{iface.__name__}: positional inputs {sorted(positions)} vs {len(arguments)} arguments"
    # threads and GPU never change the result: not hashed
    for name in ("num_threads", "use_gpu"):
        if name in spec.copyable_trait_names():
            assert spec.trait(name).nohash


def test_threads_and_gpu_are_not_hashed_and_outputs_named_from_inputs(tmp_path):
    table = tmp_path / "mycohort.csv"
    table.write_text("participant_id,image\n")
    a = ni.Preprocess(in_file=str(table), shape=16, num_threads=1)
    b = ni.Preprocess(in_file=str(table), shape=16, num_threads=8)
    c = ni.Preprocess(in_file=str(table), shape=32, num_threads=1)
    assert a.inputs.get_hashval()[1] == b.inputs.get_hashval()[1] != c.inputs.get_hashval()[1]
    s1 = ni.Saliency(model=str(table), cohort=str(table), use_gpu=True)
    s2 = ni.Saliency(model=str(table), cohort=str(table), use_gpu=False)
    assert s1.inputs.get_hashval()[1] == s2.inputs.get_hashval()[1]
    assert "--device cuda" in s1.cmdline and "--device cpu" in s2.cmdline
    # the output folder is named from the input; booleans give --x / --no-x
    assert a.cmdline.split()[2:4] == [str(table), "mycohort_preprocess"]
    assert "--no-qc" in ni.Preprocess(in_file=str(table), qc=False).cmdline
    assert "--threads 8" in b.cmdline


def test_import_error_without_nipype_is_clear():
    """Without nipype the package says what to install (a fresh interpreter with nipype hidden)."""
    code = "import sys; sys.modules['nipype'] = None\ntry:\n import neurointerp.interfaces\nexcept ImportError as e:\n print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "pip install 'neurointerp[nipype]'" in out


@pytest.mark.slow
def test_workflow_preprocess_saliency_group_map_multiproc(tmp_path, monkeypatch):
    """A real Nipype workflow on 3 synth-brain subjects: outputs on the model's grid, group means = hand means."""
    import torch
    from nipype import Node, Workflow

    from neurointerp.models.checkpoint import checkpoint_dict, save_checkpoint
    from neurointerp.models.classifier import ConvClassifier
    from neurointerp.models.inputs import InputSpec
    from neurointerp.preprocess.template import resolve_template
    from neurointerp.synth.brain import synth_brain

    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    synth_brain(tmp_path / "data", n_subjects=3, voxel_size=6.0, seed=5)
    # an (untrained) classifier on the grid preprocess will produce
    tpl = resolve_template(None)
    shape, affine = tpl.grid(shape=(16, 16, 16))
    spec = InputSpec(tuple(shape), affine, space=tpl.space)
    torch.manual_seed(0)
    model = ConvClassifier(spec.model_shape, channels=(4,), kernel_size=3, hidden=()).eval()
    save_checkpoint(tmp_path / "model.pt", checkpoint_dict(model, spec, "binary", ["control", "patient"], "nipype-test", {"participant_ids": []}, {}))

    prep = Node(ni.Preprocess(shape=16, brain_extraction="none", registration_resolution=6.0, qc=False, num_threads=1), name="preprocess")
    prep.inputs.in_file = str(tmp_path / "data" / "cohort.csv")
    sal = Node(ni.Saliency(model=str(tmp_path / "model.pt"), method=["gradient"], atlas="none", allow_unvalidated=True, num_threads=1, use_gpu=False), name="saliency")
    grp = Node(ni.GroupMap(figures=False, design="none", num_threads=1), name="group_map")
    wf = Workflow(name="neurointerp_wf", base_dir=str(tmp_path / "work"))
    # each command writes a whole derivatives folder: keep it (Nipype would delete unconnected files)
    wf.config["execution"].update({"remove_unnecessary_outputs": False, "crashdump_dir": str(tmp_path / "crash")})
    wf.connect([(prep, sal, [("cohort", "cohort")]), (sal, grp, [("maps", "in_files")]), (prep, grp, [("cohort", "covariates")])])
    graph = wf.run(plugin="MultiProc", plugin_args={"n_procs": 2, "poll_sleep_duration": 0.2})
    results = {n.name: n.result.outputs for n in graph.nodes()}

    prep_out = results["preprocess"]
    assert Path(prep_out.out_dir).name == "cohort_preprocess"  # named from the input
    assert len(prep_out.out_files) == 3 and Path(prep_out.cohort).exists()
    for path in prep_out.out_files:
        img = nib.load(path)
        assert img.shape == (16, 16, 16) and np.allclose(img.affine, affine)
    maps = results["saliency"].maps
    assert len(maps) == 3 and Path(results["saliency"].out_dir).name == "cohort_saliency"
    labels = pd.read_csv(prep_out.cohort).set_index("participant_id")["label"]
    by_label = {}
    for m in maps:
        pid = Path(m).name.split("_")[0][4:]
        by_label.setdefault(labels[pid], []).append(nib.load(m).get_fdata())
    grp_out = results["group_map"]
    assert Path(grp_out.summary).exists() and grp_out.stat_maps
    for label, arrays in by_label.items():
        from neurointerp.io import resolution_label

        mean = nib.load(str(Path(grp_out.group_dir) / f"space-{tpl.space}_res-{resolution_label(affine)}_desc-{label}Mean_statmap.nii.gz"))
        assert np.allclose(mean.affine, affine)
        expected = np.mean(arrays, axis=0)
        nz = expected != 0
        assert nz.sum() > 50 and np.allclose(mean.get_fdata()[nz], expected[nz], rtol=1e-4, atol=1e-6 * np.abs(expected).max())
