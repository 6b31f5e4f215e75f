"""Every command's output folder passes the BIDS validator with 0 errors (warnings allowed).

The validator is the ``bids-validator-deno`` package (the ``test`` extra installs it); where it
is missing the validator tests are skipped. The outputs are tiny runs on the session's ``world``
(tests/reliability/conftest.py), built once for the module; the validator takes ~0.5 s a folder.
A pybids check (skipped without pybids) reads the group files of two statistics and finds
different entities.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from neurointerp.cli.app import main


def _validator() -> list[str] | None:
    exe = shutil.which("bids-validator-deno") or str(Path(sys.executable).parent / "bids-validator-deno")
    if Path(exe).exists():
        return [exe]
    try:
        import bids_validator_deno  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-c", "import sys, bids_validator_deno as b; sys.argv[0] = 'bids-validator'; sys.exit(b.cli())"]


VALIDATOR = _validator()


def validate(folder: Path) -> tuple[list[dict], list[dict]]:
    """(errors, warnings) of the validator on ``folder``."""
    res = subprocess.run([*VALIDATOR, str(folder), "--format", "json", "--no-color"], capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(res.stdout)
    except ValueError:
        raise AssertionError(f"bids-validator gave no JSON (exit {res.returncode}): {res.stderr[-2000:]}") from None
    issues = report["issues"]["issues"]
    return [i for i in issues if i["severity"] == "error"], [i for i in issues if i["severity"] == "warning"]


def _s(*args):
    return [str(a) for a in args]


def _commands(world, tmp: Path) -> dict[str, list[str]]:
    w = world
    return {
        "synth-brain": _s("synth", "brain", tmp / "synth-brain", "--n-subjects", 4, "--voxel-size", 8, "--template-space"),
        "synth-gaussians": _s("synth", "gaussians", tmp / "synth-gaussians", "--n-per-group", 2),
        "synth-lesions": _s("synth", "lesions", tmp / "synth-lesions", "--n-per-group", 2, "--size", 24),
        "synth-rodent": _s("synth", "rodent", tmp / "synth-rodent", "--n-animals", 2, "--shape", "16,16,12", "--max-shift", 1),
        "synth-spikein": _s("synth", "spike-in", w.cohort, tmp / "synth-spikein", "--atlas", "AAL2", "--region", "Hippocampus L",
                            "--registration", "identity", "--shape", 16),
        "preprocess": _s("preprocess", w.native_cohort, tmp / "preprocess", "--shape", 16, "--brain-extraction", "none", "--no-n4",
                         "--no-qc", "--threads", 1, "--registration-resolution", 8),
        "train": _s("train", w.cohort, tmp / "train", "--folds", 0, "--final", "--epochs", 1, "--threads", 1),
        "saliency": _s("saliency", w.classifier, w.cohort, tmp / "saliency", "--threads", 1, "--batch-size", 4, "--allow-unvalidated"),
        "confound-test": _s("confound-test", w.classifier, w.cohort, tmp / "confound-test", "--confounder", "age", "--threads", 1, "--allow-unvalidated"),
        "simulate-apply": _s("simulate", "apply", w.cohort, w.simulator, w.classifier, tmp / "simulate-apply", "--threads", 1, "--allow-unvalidated"),
        "icam-apply": _s("simulate", "apply", w.lesions_cohort, w.icam, tmp / "icam-apply", "--method", "icam", "--n-samples", 2, "--threads", 1),
        "vagan-apply": _s("simulate", "apply", w.lesions_cohort, w.vagan, tmp / "vagan-apply", "--method", "vagan", "--threads", 1),
        "jacobian": _s("jacobian", w.fields_table, tmp / "jacobian"),
        "group-map": _s("group-map", w.maps_table, tmp / "group-map", "--design", "label,age", "--no-figures"),
        "segment-bg-apply": _s("segment-bg", "apply", w.segmenter, w.rodent_cohort, tmp / "segment-bg-apply", "--threads", 1),
        "evaluate": _s("evaluate", w.classifier, w.cohort, tmp / "evaluate", "--n-subjects", 2, "--samples", 2, "--sensitivity-samples", 2,
                       "--threads", 1, "--allow-unvalidated"),
    }


NAMES = ["synth-brain", "synth-gaussians", "synth-lesions", "synth-rodent", "synth-spikein", "preprocess", "saliency", "simulate-apply", "icam-apply",
         "vagan-apply", "jacobian", "group-map", "segment-bg-apply"]
# folders of files about a model or a cohort, not BIDS datasets: they claim none (no dataset_description.json)
NOT_BIDS = ["train", "confound-test", "evaluate"]
# folders that are BIDS datasets of their own besides the command's OUT
NESTED = {"synth-brain": ["derivatives/anatomy"]}


@pytest.fixture(scope="module")
def outputs(world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bids")
    done = {}
    for name, argv in _commands(world, tmp).items():
        code = main(["--quiet", *argv])
        done[name] = (code, tmp / name)
    return done


@pytest.mark.skipif(VALIDATOR is None, reason="bids-validator-deno is not installed (pip install bids-validator-deno; the test extra has it)")
@pytest.mark.parametrize("name", NAMES)
def test_command_output_validates(outputs, name):
    code, folder = outputs[name]
    assert code == 0, f"{name} failed"
    for sub in ["", *NESTED.get(name, [])]:
        errors, _ = validate(folder / sub)
        assert not errors, "\n".join(f"{e['code']} {e.get('subCode') or ''} {e.get('location')}" for e in errors)


@pytest.mark.parametrize("name", NOT_BIDS)
def test_non_bids_outputs_do_not_claim_to_be_bids(outputs, name):
    code, folder = outputs[name]
    assert code == 0, f"{name} failed"
    assert not (folder / "dataset_description.json").exists()


def test_group_files_get_distinct_entities_in_pybids(outputs):
    """pybids reads the statistic of a group file from desc-: no two files share their entities
    (with stat- it dropped the statistic, so a group's mean and mean |map| clashed)."""
    layout = pytest.importorskip("bids.layout", reason="pybids is not installed")
    seen = {}
    for name in ("group-map", "saliency"):
        files = sorted((outputs[name][1] / "group").glob("*.nii.gz"))
        assert len(files) >= 2, name
        for f in files:
            ents = layout.parse_file_entities(str(f), config=["bids", "derivatives"])
            key = (name, tuple(sorted((k, str(v)) for k, v in ents.items())))
            assert key not in seen, f"{f.name} and {seen[key]} get the same entities in pybids: {ents}"
            seen[key] = f.name
    mean = layout.parse_file_entities("space-MNI152NLin2009aSym_desc-patientMean_statmap.nii.gz", config=["bids", "derivatives"])
    assert mean["desc"] == "patientMean" and mean["suffix"] == "statmap"


@pytest.mark.parametrize("name,folder", [("preprocess", ""), ("synth-brain", "derivatives/anatomy")])
def test_template_space_images_off_the_template_grid_carry_res(outputs, name, folder):
    """BIDS res-: preprocess's 16^3 grid and synth brain's 8 mm grid are not the template's own; the
    label is the voxel size, the sidecar says what it means, and pybids reads it."""
    import nibabel as nib

    from neurointerp.io import res_of, resolution_label

    layout = pytest.importorskip("bids.layout", reason="pybids is not installed")
    images = sorted((outputs[name][1] / folder).glob("sub-*/anat/*_space-*.nii.gz"))
    assert images, name
    for img in images:
        label = resolution_label(nib.load(str(img)).affine)
        assert res_of(img) == label, img.name
        assert layout.parse_file_entities(str(img), config=["bids", "derivatives"])["res"] == label
        side = json.loads(img.with_name(img.name.replace(".nii.gz", ".json")).read_text())
        assert label in side["Resolution"], img.name
