"""Input and output safety (issue 20): where a left-hemisphere marker lands for every
orientation-code combination, what output headers carry, masks given as options, a full disk.

The bad headers, data types, sizes and tables themselves are entries of ``corpus.BAD_INPUTS``
(tried on every command by ``test_bad_inputs.py``); this file holds what does not fit that
product: end-to-end placement through ``preprocess`` and its ANTs transforms, the privacy of
every command's output headers, option values naming a file, and write failures.
"""

from __future__ import annotations

import contextlib
import fnmatch
import resource
import shutil
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from corpus import COMMANDS, _frame, snapshot

from neurointerp.cli.app import main

PREPROCESS = ["--shape", "16", "--brain-extraction", "none", "--no-n4", "--no-qc", "--threads", "1", "--registration-resolution", "8"]
MARKER_X = -45.0  # mm: the marker sits in the left hemisphere (RAS: x < 0 is left)


def _one_line(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("warning: ")]  # warnings print even with --quiet


def _assert_refused(code: int, err: str, culprit: str, *wanted: str, summary_ok: bool = False) -> str:
    lines = _one_line(err)
    assert code == 2, err
    assert "Traceback" not in err
    assert lines and all(ln.startswith("error: ") for ln in lines), err
    assert len(lines) == 1 or (summary_ok and len(lines) == 2 and "failures.tsv" in lines[1]), err
    assert culprit in lines[0], lines[0]
    for w in wanted:
        assert w in lines[0], lines[0]
    return lines[0]


def _earlier(world, out: Path) -> dict:
    """Outputs of an earlier run that a refused run must leave byte-identical."""
    (out / "earlier").mkdir(parents=True)
    shutil.copy(world.field, out / "earlier" / "sub-earlier_xfm.nii.gz")
    (out / "earlier" / "notes.tsv").write_text("participant_id\tnote\nearlier\tkeep me\n")
    return snapshot(out)


def _untouched(out: Path, before: dict, allowed=()) -> None:
    after = snapshot(out)
    for name, digest in before.items():
        assert after.get(name) == digest, f"{name} changed or vanished"
    new = [n for n in sorted(set(after) - set(before)) if not any(fnmatch.fnmatch(n, pat) for pat in allowed)]
    assert not new, f"a refused run wrote {new}"


# ----------------------------------------------------------------------------- orientation


def _mirror(aff: np.ndarray, n0: int) -> np.ndarray:
    """The same grid read left-right mirrored (the first voxel axis reversed in the world)."""
    m = aff.copy()
    m[:3, 0] = -aff[:3, 0]
    m[:3, 3] = aff[:3, 3] + aff[:3, 0] * (n0 - 1)
    return m


def _variant(data, true_aff, path: Path, qcode: int, scode: int, qform, sform) -> Path:
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_xyzt_units("mm")
    img = nib.Nifti1Image(data, None, header=hdr)
    img.header.set_qform(qform, code=max(qcode, 1))
    img.header.set_sform(sform, code=max(scode, 1))
    img.header["qform_code"] = qcode
    img.header["sform_code"] = scode
    nib.save(img, str(path))
    back = nib.load(str(path)).header
    assert (int(back["qform_code"]), int(back["sform_code"])) == (qcode, scode)
    return path


#: (participant id, qform_code, sform_code, which form holds the true affine, expected)
#: the other form holds the mirrored affine: with its code 0 it must be ignored; with both codes
#: set they disagree and the image is refused
ORIENTATION_CASES = [
    ("q0s0", 0, 0, "both", "orientation unknown"),
    ("q0s1", 0, 1, "sform", "left"),
    ("q0s2", 0, 2, "sform", "left"),
    ("q1s0", 1, 0, "qform", "left"),
    ("q2s0", 2, 0, "qform", "left"),
    ("q1s1agree", 1, 1, "both", "left"),
    ("q1s2agree", 1, 2, "both", "left"),
    ("q2s1agree", 2, 1, "both", "left"),
    ("q2s2agree", 2, 2, "both", "left"),
    ("q1s1disagree", 1, 1, "qform", "disagree"),
    ("q1s2disagree", 1, 2, "qform", "disagree"),
    ("q2s1disagree", 2, 1, "sform", "disagree"),
    ("q2s2disagree", 2, 2, "sform", "disagree"),
]


def _marked_native(world, d: Path):
    """Row 2's native T1w (LAS, 8 mm) with a bright 3^3 marker at world x = -45 mm (left)."""
    frame = pd.read_csv(world.native_cohort, dtype=str)
    src = nib.load(str(world.native_cohort.parent / frame["image"].iloc[0]))
    data = np.asarray(src.dataobj, dtype=np.float32).copy()
    aff = np.asarray(src.affine, dtype=float)
    brain = np.argwhere(data > 0.2 * data.max())
    centre = aff[:3, :3] @ brain.mean(axis=0) + aff[:3, 3]
    vox = np.round(np.linalg.solve(aff[:3, :3], np.array([MARKER_X, centre[1], centre[2]]) - aff[:3, 3])).astype(int)
    data[tuple(slice(v - 1, v + 2) for v in vox)] = 3.0 * data.max()
    return data, aff


def _marker_world_x(img_data: np.ndarray, affine: np.ndarray) -> float:
    peak = np.unravel_index(int(np.argmax(img_data)), img_data.shape)
    return float((affine @ np.r_[np.asarray(peak, float), 1.0])[0])


@pytest.mark.slow
def test_left_marker_lands_left_for_every_orientation_code_combination_or_is_refused(world, tmp_path, capsys):
    """qform/sform codes 0/1/2 x agree/disagree: the marker lands in the left hemisphere of
    template space, both in our output and through the saved ANTs transform applied by ITK to
    the original file (so our output and our transforms agree); unknown or contradictory
    orientations are refused per subject, naming the file. ``--assume-orientation`` reads an
    unknown orientation as told (LAS: left; the wrong RAS: right, which is why it is not guessed)."""
    import ants

    from neurointerp.preprocess.antsio import ants_affine

    d = tmp_path / "inputs"
    d.mkdir()
    data, aff = _marked_native(world, d)
    mirror = _mirror(aff, data.shape[0])
    rows = []
    for pid, q, s, true_in, _ in ORIENTATION_CASES:
        qform = aff if true_in in ("qform", "both") else mirror
        sform = aff if true_in in ("sform", "both") else mirror
        rows.append({"participant_id": pid, "image": str(_variant(data, aff, d / f"{pid}.nii.gz", q, s, qform, sform))})
    pd.DataFrame(rows).to_csv(d / "cohort.csv", index=False)

    out = tmp_path / "out"
    code = main(["--quiet", "preprocess", str(d / "cohort.csv"), str(out), *PREPROCESS])
    err = capsys.readouterr().err
    assert code == 2, err  # the refused subjects are bad inputs; the others finished
    failures = pd.read_csv(out / "failures.tsv", sep="\t", dtype=str)
    failed = dict(zip(failures["participant_id"], failures["message"]))
    for pid, q, s, _, expect in ORIENTATION_CASES:
        anat = out / f"sub-{pid}" / "anat"
        if expect != "left":
            assert pid in failed and expect in failed[pid] and f"{pid}.nii.gz" in failed[pid], (pid, failed.get(pid))
            assert not anat.exists() or not list(anat.glob("*.nii.gz")), pid
            continue
        assert pid not in failed, failed.get(pid)
        ours = nib.load(str(next(anat.glob("*_desc-preproc_T1w.nii.gz"))))
        x_ours = _marker_world_x(np.asarray(ours.dataobj), ours.affine)
        assert x_ours < -20.0, (pid, x_ours)
        # the forward transform, applied by ITK to the original file (ITK's own header reading)
        fixed = ants.image_read(str(next(anat.glob("*_desc-preproc_T1w.nii.gz"))))
        moving = ants.image_read(str(d / f"{pid}.nii.gz"))
        warped = ants.apply_transforms(fixed=fixed, moving=moving, transformlist=[str(next(anat.glob("*_from-T1w_to-*_xfm.h5")))])
        x_ants = _marker_world_x(warped.numpy(), ants_affine(warped))
        assert x_ants < -20.0 and abs(x_ants - x_ours) <= 1.01 * float(abs(ours.affine[0, 0])), (pid, x_ours, x_ants)

    # orientation unknown: read as told when the user names it
    for code_name, side in (("LAS", -1.0), ("RAS", 1.0)):
        out2 = tmp_path / f"assumed-{code_name}"
        one = d / f"one-{code_name}.csv"
        pd.DataFrame([{"participant_id": "q0s0", "image": str(d / "q0s0.nii.gz")}]).to_csv(one, index=False)
        code = main(["--quiet", "preprocess", str(one), str(out2), *PREPROCESS, "--assume-orientation", code_name])
        assert code == 0, capsys.readouterr().err
        img = nib.load(str(next((out2 / "sub-q0s0" / "anat").glob("*_desc-preproc_T1w.nii.gz"))))
        x = _marker_world_x(np.asarray(img.dataobj), img.affine)
        assert side * x > 20.0, (code_name, x)


def test_assume_orientation_option_is_checked_before_anything_is_written(world, tmp_path, capsys):
    out = tmp_path / "out"
    before = _earlier(world, out)
    code = main(["--quiet", "preprocess", str(world.native_cohort), str(out), *PREPROCESS, "--force", "--assume-orientation", "LAX"])
    _assert_refused(code, capsys.readouterr().err, "--assume-orientation", "'LAX'")
    _untouched(out, before)


# ----------------------------------------------------------------------------- privacy

PRIVATE = b"Jane Doe"


def _taint(src: Path, dst: Path) -> Path:
    """``src`` with a patient's name and birth date in a header extension, ``descrip``,
    ``aux_file`` and ``intent_name``, plus a display range and a z-score intent."""
    img = nib.load(str(src))
    hdr = img.header.copy()
    hdr.extensions.append(nib.nifti1.Nifti1Extension("comment", b"PatientName=Jane Doe^; PatientBirthDate=19700101"))
    hdr["descrip"] = b"Jane Doe 1970-01-01 scan 3"
    hdr["aux_file"] = b"Jane Doe lut"
    hdr["cal_min"], hdr["cal_max"] = -3.0, 7.0
    if int(hdr["intent_code"]) == 0:  # a displacement field keeps its vector intent
        hdr.set_intent("z score", name="Jane Doe")
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), None, header=hdr), str(dst))
    return dst


def _tainted_table(world, cmd, d: Path, rows: int | None = None) -> Path:
    frame, sep = _frame(cmd.table(world))
    if rows is not None:
        frame = frame.iloc[:rows].copy()
    for col in ("image", "map", "field", "masked", "mask"):
        if col in frame.columns and not (col == "mask" and cmd.name.startswith("icam")):
            frame[col] = [str(_taint(Path(p), d / f"{col}-{i}-{Path(p).name}")) for i, p in enumerate(frame[col])]
    table = d / ("tainted" + cmd.table(world).suffix)
    frame.to_csv(table, sep=sep, index=False)
    return table


PRIVACY_COMMANDS = ["preprocess", "saliency", "simulate-apply", "jacobian", "group-map", "segment-bg-apply", "icam-apply"]


@pytest.mark.parametrize("name", PRIVACY_COMMANDS)
def test_no_output_header_carries_an_input_extension_or_description(world, name, tmp_path, capsys):
    """Every NIfTI a command writes from inputs full of a patient's data carries none of it:
    no extension, no descrip/aux_file/intent_name text, no display range, no inherited intent
    (only the statistical intents the tool sets on group maps)."""
    cmd = next(c for c in COMMANDS if c.name == name)
    d = tmp_path / "inputs"
    d.mkdir()
    table = _tainted_table(world, cmd, d, rows=1 if name == "preprocess" else None)
    out = tmp_path / "out"
    code = main(["--quiet", *cmd.build(world, {"table": table, "classifier": world.classifier, "simulator": world.simulator}, out)])
    assert code == 0, capsys.readouterr().err
    written = [p for p in out.rglob("*") if p.is_file() and p.name.endswith((".nii", ".nii.gz"))]
    assert written, f"{name} wrote no NIfTI"
    for p in written:
        hdr = nib.load(str(p)).header
        assert not list(hdr.extensions), f"{p.name} carries a header extension"
        assert PRIVATE not in hdr.binaryblock, f"{p.name} carries the input's private text"
        assert float(hdr["cal_min"]) == 0.0 and float(hdr["cal_max"]) == 0.0, f"{p.name} carries a display range"
        assert hdr.get_xyzt_units()[0] == "mm", p.name
        intent = int(hdr["intent_code"])
        if p.name.endswith("_xfm.nii.gz"):
            assert intent == 1007, p.name  # a displacement field says it is one
        elif "/group/" in str(p) and (p.name.endswith("_attribution.nii.gz") or "_statmap" in p.name):
            assert intent in (0, 2, 3, 5, 22, 1001), (p.name, intent)  # ours: t, z, p, estimate
        else:
            assert intent == 0, (p.name, intent)
    # the provenance lives in the sidecars instead
    assert list(out.rglob("*.json"))


def test_group_statistics_carry_their_nifti_intents(world, tmp_path, capsys):
    """group-map: t maps say 't test' with their degrees of freedom, z 'z score', p 'p value',
    effects and means 'estimate'; the analysis mask none."""
    out = tmp_path / "out"
    assert main(["--quiet", "group-map", str(world.maps_table), str(out), "--design", "label,age", "--no-figures"]) == 0, capsys.readouterr().err
    group = out / "group"
    summary = __import__("json").loads((group / "group_map.json").read_text())
    df = summary["glm"]["df"]

    def header(stat):
        return nib.load(str(next(group.glob(f"*_desc-*{stat[:1].upper()}{stat[1:]}_statmap.nii.gz")))).header

    t = header("t")
    assert int(t["intent_code"]) == 3 and float(t["intent_p1"]) == float(df) == len(pd.read_csv(world.maps_table)) - 3
    assert int(header("z")["intent_code"]) == 5
    assert int(header("p")["intent_code"]) == 22 and int(header("q")["intent_code"]) == 22
    assert int(header("effect")["intent_code"]) == 1001 and int(header("mean")["intent_code"]) == 1001
    assert int(nib.load(str(next(group.glob("*_mask.nii.gz")))).header["intent_code"]) == 0


# ----------------------------------------------------------------------------- masks given as options


def _mask_bad(kind: str, world, d: Path) -> Path:
    good = Path(_frame(world.maps_table)[0]["map"].iloc[0])
    if kind == "missing":
        return d / "nomask.nii.gz"
    if kind == "folder":
        (d / "maskdir.nii.gz").mkdir()
        return d / "maskdir.nii.gz"
    if kind == "not-nifti":
        p = d / "mask.png"
        p.write_bytes(b"\x89PNG\r\n\x1a\n")
        return p
    if kind == "corrupt":
        p = d / "corrupt.nii.gz"
        p.write_bytes(good.read_bytes()[:200])
        return p
    img = nib.load(str(good))
    data = (np.asarray(img.dataobj) != 0).astype(np.uint8)
    if kind == "other-grid":
        p = d / "othergrid.nii.gz"
        nib.save(nib.Nifti1Image(data[:-2], img.affine), str(p))
        return p
    if kind == "shifted":
        p = d / "shifted.nii.gz"
        aff = img.affine.copy()
        aff[0, 3] += 8.0  # one voxel to the right: same shape, another grid
        nib.save(nib.Nifti1Image(data, aff), str(p))
        return p
    if kind == "no-orientation":
        p = d / "noorient.nii.gz"
        hdr = img.header.copy()
        hdr["qform_code"] = 0
        hdr["sform_code"] = 0
        hdr.set_data_dtype(np.uint8)
        nib.save(nib.Nifti1Image(data, None, header=hdr), str(p))
        assert int(nib.load(str(p)).header["sform_code"]) == 0
        return p
    raise AssertionError(kind)


MASK_KINDS = ["missing", "folder", "not-nifti", "corrupt", "other-grid", "shifted", "no-orientation"]
MASK_OPTIONS = {
    "saliency": lambda w, m, out: ["saliency", w.classifier, w.cohort, out, "--atlas", "none", "--threads", 1, "--force", "--truth-mask", m, "--allow-unvalidated"],
    "evaluate": lambda w, m, out: ["evaluate", "--allow-unvalidated", w.classifier, w.cohort, out, "--n-subjects", 2, "--samples", 2, "--sensitivity-samples", 2,
                                   "--threads", 1, "--force", "--truth-mask", m],
    "group-map": lambda w, m, out: ["group-map", w.maps_table, out, "--design", "label,age", "--no-figures", "--force", "--mask", m],
}


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("command", list(MASK_OPTIONS))
def test_bad_mask_option_is_refused_before_anything_is_written(world, command, kind, tmp_path, capsys):
    """--truth-mask (saliency, evaluate) and --mask (group-map): a mask that is missing, a folder,
    not a NIfTI, corrupt, on another grid (shape or affine) or without orientation: one line
    naming the option and the file, exit 2, the output folder untouched."""
    d = tmp_path / "inputs"
    d.mkdir()
    mask = _mask_bad(kind, world, d)
    out = tmp_path / "out"
    before = _earlier(world, out)
    code = main(["--quiet", *map(str, MASK_OPTIONS[command](world, mask, out))])
    option = "--mask" if command == "group-map" else "--truth-mask"
    _assert_refused(code, capsys.readouterr().err, mask.name, option)
    _untouched(out, before)


# ----------------------------------------------------------------------------- a full disk


@contextlib.contextmanager
def _file_size_limit(nbytes: int):
    """Files larger than ``nbytes`` cannot be written (EFBIG, as on a full disk: ENOSPC)."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


FULL_DISK = {
    "saliency": lambda w, out: ["saliency", w.classifier, w.cohort, out, "--atlas", "none", "--threads", 1, "--allow-unvalidated"],
    "train": lambda w, out: ["train", w.cohort, out, "--folds", 0, "--final", "--epochs", 1, "--threads", 1],
    "group-map": lambda w, out: ["group-map", w.maps_table, out, "--design", "label,age", "--no-figures"],
    "simulate-apply": lambda w, out: ["simulate", "apply", w.cohort, w.simulator, w.classifier, out, "--threads", 1, "--allow-unvalidated"],
}


@pytest.mark.parametrize("command", list(FULL_DISK))
def test_full_disk_is_one_line_naming_the_file_and_leaves_no_partial_file(world, command, tmp_path, capsys):
    """A write that does not fit (RLIMIT_FSIZE: EFBIG, the same path as ENOSPC and EDQUOT):
    exit 1, one line naming the output that could not be written (a batch command: its one
    summary line, and failures.tsv names each file), no file under that name, no temporary left."""
    out = tmp_path / "out"
    with _file_size_limit(4096):
        code = main(["--quiet", *map(str, FULL_DISK[command](world, out))])
    lines = _one_line(capsys.readouterr().err)
    assert code == 1, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    messages = [lines[0][len("error: "):]]
    if "failures.tsv" in lines[0]:  # per-subject failures of a batch command
        failures = pd.read_csv(out / "failures.tsv", sep="\t", dtype=str)
        messages = list(failures["message" if "message" in failures.columns else "error"])
    for message in messages:
        assert ": cannot write: " in message, message
        target = Path(message.split(": cannot write")[0].split(": ")[-1])
        assert str(target).startswith(str(out)), message
        assert not target.exists(), f"{target} was left half-written"
    leftovers = [p for p in out.rglob(".*") if p.is_file() and (".tmp" in p.name or p.name.endswith(".part"))]
    assert not leftovers, leftovers
