"""The bad-input corpus and the command table (see test_bad_inputs.py).

Two tables, one product:

* ``BAD_INPUTS``: each entry builds one bad file (image, cohort table or checkpoint) from the
  session's good inputs, says which *slot* it goes into and which strings the one-line error
  must contain (the culprit: file name, row, column).
* ``COMMANDS``: each entry says how a command is fed (which slots it has, its cohort table and
  image column, whether it needs a label or numeric covariates) and builds its argv.

Adding a command (``segment-bg``, ``simulate --method icam``) is one ``Command`` entry; adding a
bad input is one ``Bad`` entry.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

# ----------------------------------------------------------------------------- helpers


def _save(data, affine, path: Path) -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.asarray(affine, dtype=float))
    _keep_vector_intent(img.header, img.shape)
    nib.save(img, str(path))
    return path


def _keep_vector_intent(hdr, shape) -> None:
    """An ``X x Y x Z x 1 x 3`` array (a displacement field's layout) is saved as the ITK vector
    image it came from, so that a bad field is refused for its own fault, not for lacking the intent."""
    if len(shape) == 5 and shape[3] == 1 and shape[4] in (2, 3):
        hdr.set_intent("vector")


class Evil:
    """Unpickling this creates ``marker`` (a stand-in for running arbitrary code)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ----------------------------------------------------------------------------- images
# makers: (src, d) -> path; ``src`` is a good image of the slot (a T1w, a map or a displacement field)


def _load(src: Path):
    import nibabel as nib

    img = nib.load(str(src))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=float)


def img_truncated(src: Path, d: Path) -> Path:
    raw = src.read_bytes()
    p = d / "truncated.nii.gz"
    p.write_bytes(raw[: int(len(raw) * 0.6)])
    return p


def img_bad_magic(src: Path, d: Path) -> Path:
    p = _save(*_load(src), d / "badmagic.nii")
    raw = bytearray(p.read_bytes())
    raw[344:348] = b"xyz\0"  # NIfTI-1 magic 'n+1\0'
    p.write_bytes(bytes(raw))
    return p


def img_not_gzip(src: Path, d: Path) -> Path:
    p = d / "notgzip.nii.gz"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    return p


def img_zero_size(src: Path, d: Path) -> Path:
    p = d / "zerosize.nii.gz"
    p.write_bytes(b"")
    return p


def img_4d(src: Path, d: Path) -> Path:
    x, aff = _load(src)
    return _save(np.stack([x, x], axis=-1), aff, d / "fourd.nii.gz")


def img_2d(src: Path, d: Path) -> Path:
    x, aff = _load(src)
    return _save(x[:, :, 10], aff, d / "twod.nii.gz")


def _at(x, *index):
    """``index`` clipped into ``x`` (2D images are stored ``S x S x 1``)."""
    return tuple(min(i, s - 1) for i, s in zip(index, x.shape))


def img_nan(src: Path, d: Path) -> Path:
    x, aff = _load(src)
    x[_at(x, 5, 5, 5)] = np.nan
    return _save(x, aff, d / "nanvoxel.nii.gz")


def img_inf(src: Path, d: Path) -> Path:
    x, aff = _load(src)
    x[_at(x, 5, 5, 5)] = np.inf
    x[_at(x, 6, 6, 6)] = -np.inf
    return _save(x, aff, d / "infvoxel.nii.gz")


def img_3d_slab(src: Path, d: Path) -> Path:
    """A 3D volume (four copies of the slice) where a 2D ``S x S x 1`` image is expected."""
    x, aff = _load(src)
    return _save(np.repeat(x.reshape(x.shape[0], x.shape[1], -1)[:, :, :1], 4, axis=2), aff, d / "threed.nii.gz")


def img_all_zero(src: Path, d: Path) -> Path:
    x, aff = _load(src)
    return _save(np.zeros_like(x), aff, d / "allzero.nii.gz")


def img_singular_affine(src: Path, d: Path) -> Path:
    x, aff = _load(src)
    aff[:3, 1] = aff[:3, 0]  # two voxel axes along the same world direction
    return _save(x, aff, d / "singular.nii.gz")


def img_zero_voxel(src: Path, d: Path) -> Path:
    import nibabel as nib

    x, aff = _load(src)
    bad = aff.copy()
    bad[:3, 2] = 0.0  # the third voxel axis has no extent (nibabel cannot store it as a qform)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_sform(bad, code=2)
    hdr["qform_code"] = 0
    _keep_vector_intent(hdr, x.shape)
    img = nib.Nifti1Image(x, None, header=hdr)
    p = d / "zerovoxel.nii.gz"
    nib.save(img, str(p))
    assert not np.any(nib.load(str(p)).affine[:3, 2])
    return p


# ----------------------------------------------------------------------------- headers, dtypes, sizes
# (issue 20) the source image of the slot (T1w, map or displacement field) with one header field
# changed; every reader must refuse it through neurointerp.io.headers before anything is written


def _edit(name: str, fn):
    """A maker: ``src`` saved again as ``name`` after ``fn(hdr, data) -> data | None`` changed it."""

    def make(src: Path, d: Path) -> Path:
        import nibabel as nib

        img = nib.load(str(src))
        hdr = img.header.copy()
        data = np.asanyarray(img.dataobj)
        out = fn(hdr, data)
        p = d / name
        nib.save(nib.Nifti1Image(data if out is None else out, None, header=hdr), str(p))
        return p

    return make


def _patch(name: str, offset: int, fmt: str, *values):
    """A maker: ``src`` as ``name`` with raw header bytes at ``offset`` replaced (nibabel would fix them on save)."""

    def make(src: Path, d: Path) -> Path:
        import gzip
        import struct

        import nibabel as nib

        raw = bytearray(nib.load(str(src)).to_bytes())
        raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
        p = d / name
        p.write_bytes(gzip.compress(bytes(raw)))
        return p

    return make


def _no_orientation(hdr, data):
    hdr["qform_code"] = 0
    hdr["sform_code"] = 0


def _mirrored_sform(hdr, data):
    """qform as it was, sform mirrored left-right (codes 1 and 2: ITK reads the qform, nibabel/FSL the sform)."""
    aff = hdr.get_best_affine()
    flip = aff.copy()
    flip[:3, 0] = -aff[:3, 0]
    flip[:3, 3] = aff[:3, 3] + aff[:3, 0] * (data.shape[0] - 1)
    hdr.set_qform(aff, code=1)
    hdr.set_sform(flip, code=2)


def _sheared_sform(hdr, data):
    aff = hdr.get_best_affine()
    aff[0, 1] += 0.3 * abs(aff[1, 1])  # the second voxel axis leans 17 degrees
    hdr.set_sform(aff, code=2)
    hdr["qform_code"] = 0


def _metres(hdr, data):
    hdr.set_xyzt_units("meter")


def _complex(hdr, data):
    hdr.set_data_dtype(np.complex64)
    return data.astype(np.complex64) * (1 + 1j)


def _rgb(hdr, data):
    hdr.set_data_dtype("RGB")
    rgb = np.zeros(data.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.clip(np.abs(data) * 10, 0, 255).astype(np.uint8)
    return rgb


def _as_vector_image(hdr, data):
    """A scalar image stored as an ITK vector image (what a displacement field looks like)."""
    hdr.set_intent("vector")
    return np.repeat(data.reshape(data.shape[:3] + (1, 1)), 3, axis=4)


def _stack_of_three(hdr, data):
    """A displacement field's three components saved as a plain 4D stack of images (no vector intent)."""
    hdr.set_intent("none")
    return np.ascontiguousarray(data.reshape(data.shape[:3] + (data.shape[-1],)))


def img_huge_claim(src: Path, d: Path) -> Path:
    """About 100 bytes of .nii.gz whose header claims 700^3 float32 voxels (1.4 GB): must fail fast."""
    import gzip

    import nibabel as nib

    hdr = nib.load(str(src)).header.copy()
    shape = (700, 700, 700) + tuple(int(s) for s in hdr.get_data_shape()[3:])
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\0" * 4 + bytes(16)
    p = d / "hugeclaim.nii.gz"
    p.write_bytes(gzip.compress(raw, compresslevel=9))
    return p


def img_truncated_nii(src: Path, d: Path) -> Path:
    """An uncompressed .nii with the last tenth of its voxel data cut off."""
    import nibabel as nib

    raw = nib.load(str(src)).to_bytes()
    p = d / "truncated.nii"
    p.write_bytes(raw[: len(raw) - max(8, (len(raw) - 352) // 10)])
    return p


def _scalar_slot(cmd) -> bool:
    return cmd.image_is_volume


def _field_slot(cmd) -> bool:
    return not cmd.image_is_volume


# ----------------------------------------------------------------------------- cohort tables


def _frame(table: Path):
    import pandas as pd

    sep = "\t" if table.suffix == ".tsv" else ","
    frame = pd.read_csv(table, sep=sep, dtype=str, keep_default_na=False)
    # absolute paths: the bad table lives in another folder
    for col in ("image", "map", "field", "labels", "mask", "masked"):
        if col in frame.columns:
            frame[col] = [v if os.path.isabs(v) else str((table.parent / v).resolve()) for v in frame[col]]
    return frame, sep


def _write(frame, d: Path, name: str, sep: str) -> Path:
    p = d / name
    frame.to_csv(p, sep=sep, index=False)
    return p


def _mut(fn):
    """Wrap ``fn(frame, cmd) -> frame`` into a maker that writes ``bad.<ext>``."""

    def make(world, d: Path, cmd) -> Path:
        frame, sep = _frame(cmd.table(world))
        frame = fn(frame.copy(), cmd)
        return _write(frame, d, "bad" + cmd.table(world).suffix, sep)

    return make


def _set(row: int, column_attr: str | None = None, column: str | None = None, value: str = ""):
    def fn(frame, cmd):
        col = column or getattr(cmd, column_attr)
        frame.loc[row - 2, col] = value
        return frame

    return fn


def tab_duplicate_id(frame, cmd):
    frame.loc[2, "participant_id"] = frame.loc[0, "participant_id"]
    return frame


def tab_drop(column_attr: str | None = None, column: str | None = None):
    def fn(frame, cmd):
        return frame.drop(columns=[column or getattr(cmd, column_attr)])

    return fn


def tab_wrong_delimiter(world, d: Path, cmd) -> Path:
    frame, _ = _frame(cmd.table(world))
    return _write(frame, d, "bad" + cmd.table(world).suffix, ";")


def tab_ragged(world, d: Path, cmd) -> Path:
    frame, sep = _frame(cmd.table(world))
    p = _write(frame, d, "bad" + cmd.table(world).suffix, sep)
    lines = p.read_text().splitlines()
    lines[2] = lines[2] + sep + "extra"
    p.write_text("\n".join(lines) + "\n")
    return p


def tab_header_only(world, d: Path, cmd) -> Path:
    frame, sep = _frame(cmd.table(world))
    return _write(frame.iloc[:0], d, "bad" + cmd.table(world).suffix, sep)


def tab_zero_size(world, d: Path, cmd) -> Path:
    p = d / ("bad" + cmd.table(world).suffix)
    p.write_bytes(b"")
    return p


def tab_latin1(world, d: Path, cmd) -> Path:
    frame, sep = _frame(cmd.table(world))
    p = _write(frame, d, "bad" + cmd.table(world).suffix, sep)
    raw = p.read_bytes().splitlines(keepends=True)
    # a Latin-1 byte (0xe9, e-acute) inside the second subject's image path
    raw[2] = raw[2].replace(b".nii", b"\xe9.nii", 1)
    p.write_bytes(b"".join(raw))
    return p


def _other_spelling(value: str) -> str:
    """The same class written another way: ``1`` -> ``1.0``, ``1.0`` -> ``1``, ``patient`` -> ``PATIENT``."""
    try:
        num = float(value)
    except ValueError:
        return value.upper() if value != value.upper() else value.lower()
    return f"{num:.1f}" if "." not in value else f"{num:g}"


def tab_label_two_spellings(frame, cmd):
    """Row 2's class spelled differently in a later row ('1' and '1.0' must not be two classes)."""
    col = cmd.label_column
    first = frame.loc[0, col]
    later = next(k for k in range(1, len(frame)) if frame.loc[k, col] == first)
    frame.loc[later, col] = _other_spelling(first)
    return frame


def tab_long_id(frame, cmd):
    frame.loc[1, "participant_id"] = "x" * 80  # letters only, but too long for the output file names
    return frame


def _label_volume(fn, name: str):
    """A table whose row 2 points at a label volume derived from row 2's by ``fn(labels, affine)``."""

    def make(world, d: Path, cmd) -> Path:
        frame, sep = _frame(cmd.table(world))
        data, aff = fn(*_load(Path(frame.loc[0, cmd.label_column])))
        frame.loc[0, cmd.label_column] = str(_save(data, aff, d / name))
        return _write(frame, d, "bad" + cmd.table(world).suffix, sep)

    return make


def _unknown_class(lab, aff):
    lab[lab.shape[0] // 2, lab.shape[1] // 2, 0] = 7  # a class the segmenter does not have
    return lab, aff


def _fractional(lab, aff):
    return lab * 0.5, aff


def _other_label_grid(lab, aff):
    return lab[:-2], aff


def tab_bom_then_missing_image(world, d: Path, cmd) -> Path:
    """A UTF-8 BOM is accepted: the first column is still read as participant_id, so the error
    is about row 3's missing image, not about a missing participant_id column."""
    frame, sep = _frame(cmd.table(world))
    frame.loc[1, cmd.image_column] = str(d / "nope.nii.gz")
    p = d / ("bad" + cmd.table(world).suffix)
    p.write_bytes(b"\xef\xbb\xbf" + frame.to_csv(sep=sep, index=False).encode("utf-8"))
    return p


# ----------------------------------------------------------------------------- checkpoints


def ck_other_grid(world, d: Path) -> Path:
    return Path(shutil.copy(world.classifier_other_grid, d / "othergrid.pt"))


def ck_copy(attr: str, name: str):
    """A copy of the world's checkpoint ``attr`` (another kind or another grid) named ``name``."""

    def make(world, d: Path) -> Path:
        return Path(shutil.copy(getattr(world, attr), d / name))

    return make


def ck_truncated(world, d: Path, attr: str = "classifier") -> Path:
    raw = getattr(world, attr).read_bytes()
    p = d / "truncated.pt"
    p.write_bytes(raw[: len(raw) // 2])
    return p


def ck_truncated_of(attr: str):
    return lambda world, d: ck_truncated(world, d, attr)


def ck_garbage(world, d: Path) -> Path:
    p = d / "garbage.pt"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    return p


def ck_zero_size(world, d: Path) -> Path:
    p = d / "zerosize.pt"
    p.write_bytes(b"")
    return p


def ck_pickle_exec_raw(world, d: Path) -> Path:
    p = d / "evilraw.pt"
    p.write_bytes(pickle.dumps({"format": "neurointerp-classifier", "x": Evil(str(d.parent / "PWNED-raw"))}, protocol=2))
    return p


def ck_pickle_exec_torch(world, d: Path) -> Path:
    import torch

    from neurointerp.models.checkpoint import read_checkpoint

    good = read_checkpoint(world.classifier)
    good["state_dict"] = {"w": Evil(str(d.parent / "PWNED-torch"))}
    p = d / "eviltorch.pt"
    torch.save(good, str(p))
    return p


def ck_wrong_kind_classifier(world, d: Path) -> Path:
    """A simulator checkpoint where a classifier is expected."""
    return Path(shutil.copy(world.simulator, d / "wrongkind.pt"))


def ck_wrong_kind_simulator(world, d: Path) -> Path:
    """A classifier checkpoint where a simulator is expected."""
    return Path(shutil.copy(world.classifier, d / "wrongkind.pt"))


# ----------------------------------------------------------------------------- the tables


@dataclass
class Bad:
    id: str
    slot: str  # image | table | classifier | simulator | segmenter | icam | vagan
    make: Callable  # images/checkpoints: (world, dir); tables: (world, dir, command)
    expect: tuple = ()  # substrings of the error line; a tuple inside = any of these
    only: Callable | None = None  # (command) -> bool: applies to this command
    names_file: bool = True  # the error names the bad file
    pwned: str | None = None  # marker file that must NOT exist afterwards


def _needs_label(cmd) -> bool:
    return cmd.needs_label


def _numeric_age(cmd) -> bool:
    return "age" in cmd.numeric


def _volume(cmd) -> bool:
    return cmd.image_is_volume and cmd.image_ndim == 3


def _label_volumes(cmd) -> bool:
    return cmd.label_volumes


BAD_INPUTS: list[Bad] = [
    # images
    Bad("truncated-gz", "image", img_truncated, (("truncated", "corrupt", "not a readable"),)),
    Bad("wrong-magic", "image", img_bad_magic, (("not a readable", "magic", "NIfTI"),)),
    Bad("not-gzip", "image", img_not_gzip, (("not a readable", "corrupt", "gzip"),)),
    Bad("zero-size-image", "image", img_zero_size, (("empty", "Empty"),)),
    Bad("4d-image", "image", img_4d, (("4D", "not a 3D", "x2 ", "neither 2D nor 3D"),), only=lambda c: c.image_is_volume),
    Bad("2d-image", "image", img_2d, (("not 3D", "2D", "20x25 ", "20x25;"),), only=_volume),
    Bad("3d-image-for-2d-model", "image", img_3d_slab, (("not 2D", "3D", "x4"),), only=lambda c: c.image_ndim == 2),
    Bad("nan-voxel", "image", img_nan, ("NaN",)),
    Bad("inf-voxel", "image", img_inf, ("Inf",)),
    Bad("all-zero-image", "image", img_all_zero, ("zero",), only=lambda c: not c.maps_may_be_zero),
    Bad("singular-affine", "image", img_singular_affine, ("singular",)),
    Bad("zero-voxel-size", "image", img_zero_voxel, ("zero voxel size",)),
    # headers (issue 20): orientation, qform/sform, shear, units, scaling
    Bad("orientation-unknown", "image", _edit("noorient.nii.gz", _no_orientation), ("orientation unknown", "--assume-orientation")),
    Bad("qform-sform-disagree", "image", _edit("disagree.nii.gz", _mirrored_sform), ("qform", "sform", "disagree")),
    Bad("sheared-sform", "image", _edit("shear.nii.gz", _sheared_sform), ("shear",)),
    Bad("units-metres", "image", _edit("metres.nii.gz", _metres), ("meter",)),
    Bad("scl-slope-zero-with-offset", "image", _patch("sclzero.nii.gz", 112, "<ff", 0.0, 5.0), ("scl_slope", "scl_inter")),
    Bad("scl-inter-nan", "image", _patch("sclnan.nii.gz", 112, "<ff", 2.0, float("nan")), ("scl_inter",)),
    # data types
    Bad("complex-dtype", "image", _edit("complex.nii.gz", _complex), ("complex",)),
    Bad("rgb-dtype", "image", _edit("rgb.nii.gz", _rgb), ("RGB",)),
    Bad("vector-image-as-scalar", "image", _edit("vector.nii.gz", _as_vector_image), ("vector", "not a scalar"), only=_scalar_slot),
    Bad("stack-as-field", "image", _edit("stack.nii.gz", _stack_of_three), ("not a displacement field", "intent 0"), only=_field_slot),
    # sizes: the claim is checked against the file before anything is allocated
    Bad("huge-claim-tiny-gz", "image", img_huge_claim, ("truncated", "700x700x700")),
    Bad("truncated-nii", "image", img_truncated_nii, ("truncated",)),
    # cohort tables
    Bad("empty-id", "table", _mut(_set(3, column="participant_id", value="")), ("row 3", "participant_id")),
    Bad("duplicate-id", "table", _mut(tab_duplicate_id), ("row 4", ("duplicate", "twice"))),
    Bad("dotdot-id", "table", _mut(_set(3, column="participant_id", value="../x")), ("row 3", "'../x'")),
    Bad("path-id", "table", _mut(_set(3, column="participant_id", value="x/../../../escaped")), ("row 3", "escaped")),
    Bad("space-id", "table", _mut(_set(3, column="participant_id", value="a b")), ("row 3", "'a b'")),
    Bad("no-id-column", "table", _mut(tab_drop(column="participant_id")), ("participant_id",)),
    Bad("wrong-delimiter", "table", tab_wrong_delimiter, (("semicolon", "participant_id;"),)),
    Bad("ragged-row", "table", tab_ragged, (("row 3", "line 3"),)),
    Bad("header-only", "table", tab_header_only, (("no rows", "no fields", "no maps", "lists no"),)),
    Bad("zero-size-table", "table", tab_zero_size, (("empty", "No columns"),)),
    Bad("latin1-table", "table", tab_latin1, (("UTF-8", "utf-8"),)),
    Bad("bom-accepted", "table", tab_bom_then_missing_image, ("row 3", "nope.nii.gz")),
    Bad("no-image-column", "table", _mut(tab_drop(column_attr="image_column")), ("{image_column}",)),
    Bad("image-not-found", "table", _mut(_set(3, column_attr="image_column", value="nope.nii.gz")), ("row 3", "nope.nii.gz")),
    Bad("image-not-nifti", "table", _mut(_set(3, column_attr="image_column", value="scan.png")), ("row 3", "scan.png")),
    Bad("no-label-column", "table", _mut(tab_drop(column_attr="label_column")), ("label",), only=_needs_label),
    Bad("missing-label", "table", _mut(_set(3, column_attr="label_column", value="")), ("row 3", "label"), only=_needs_label),
    # label volumes (segment-bg: tissue classes 0..3 on the image's grid); the error names the volume
    Bad("unknown-class-labels", "table", _label_volume(_unknown_class, "unknownclass.nii.gz"), ("unknownclass.nii.gz", "7"),
        only=_label_volumes, names_file=False),
    Bad("fractional-labels", "table", _label_volume(_fractional, "fractional.nii.gz"), ("fractional.nii.gz", "non-integer"),
        only=_label_volumes, names_file=False),
    Bad("label-grid-mismatch", "table", _label_volume(_other_label_grid, "othergridlabels.nii.gz"), ("othergridlabels.nii.gz", "grid"),
        only=_label_volumes, names_file=False),
    Bad("label-file-not-found", "table", _mut(_set(3, column_attr="label_column", value="nolabels.nii.gz")), ("row 3", "nolabels.nii.gz"),
        only=_label_volumes, names_file=False),
    # (issue 20) one spelling per class; ids that cannot become file names, refused up front
    Bad("label-two-spellings", "table", _mut(tab_label_two_spellings), ("row 2", "spelled"), only=lambda c: c.needs_label and not c.label_volumes),
    Bad("id-too-long", "table", _mut(tab_long_id), ("row 3", "80 characters"), only=lambda c: c.name != "group-map"),
    Bad("non-numeric-covariate", "table", _mut(_set(3, column="age", value="old")), ("row 3", "age", "old"), only=_numeric_age),
    Bad("missing-covariate", "table", _mut(_set(3, column="age", value="")), ("row 3", "age"), only=_numeric_age),
    # checkpoints
    Bad("other-grid", "classifier", ck_other_grid, ("grid",), names_file=False),
    Bad("truncated-checkpoint", "classifier", ck_truncated, ("checkpoint",)),
    Bad("garbage-checkpoint", "classifier", ck_garbage, ("checkpoint",)),
    Bad("zero-size-checkpoint", "classifier", ck_zero_size, ("checkpoint",)),
    Bad("pickle-exec-raw", "classifier", ck_pickle_exec_raw, ("refused",), pwned="PWNED-raw"),
    Bad("pickle-exec-torch", "classifier", ck_pickle_exec_torch, ("refused",), pwned="PWNED-torch"),
    Bad("simulator-as-classifier", "classifier", ck_wrong_kind_classifier, ("not a neurointerp classifier",)),
    Bad("truncated-simulator", "simulator", ck_truncated, ("checkpoint",)),
    Bad("pickle-exec-simulator", "simulator", ck_pickle_exec_torch, ("refused",), pwned="PWNED-torch"),
    Bad("classifier-as-simulator", "simulator", ck_wrong_kind_simulator, ("not a neurointerp simulator",)),
    # segment-bg segmenters
    Bad("other-grid-segmenter", "segmenter", ck_copy("segmenter_other_grid", "othergrid.pt"), (("grid", "differ"),), names_file=False),
    Bad("truncated-segmenter", "segmenter", ck_truncated_of("segmenter"), ("checkpoint",)),
    Bad("garbage-segmenter", "segmenter", ck_garbage, ("checkpoint",)),
    Bad("pickle-exec-raw-segmenter", "segmenter", ck_pickle_exec_raw, ("refused",), pwned="PWNED-raw"),
    Bad("pickle-exec-segmenter", "segmenter", ck_pickle_exec_torch, ("refused",), pwned="PWNED-torch"),
    Bad("classifier-as-segmenter", "segmenter", ck_copy("classifier", "classifier.pt"), ("not a neurointerp segment-bg",)),
    Bad("icam-as-segmenter", "segmenter", ck_copy("icam", "icam.pt"), ("not a neurointerp segment-bg",)),
    # ICAM models
    Bad("other-grid-icam", "icam", ck_copy("icam_other_grid", "othergrid.pt"), ("grid",), names_file=False),
    Bad("truncated-icam", "icam", ck_truncated_of("icam"), ("checkpoint",)),
    Bad("zero-size-icam", "icam", ck_zero_size, ("checkpoint",)),
    Bad("pickle-exec-raw-icam", "icam", ck_pickle_exec_raw, ("refused",), pwned="PWNED-raw"),
    Bad("pickle-exec-icam", "icam", ck_pickle_exec_torch, ("refused",), pwned="PWNED-torch"),
    Bad("classifier-as-icam", "icam", ck_copy("classifier", "classifier.pt"), ("not a neurointerp ICAM",)),
    Bad("simulator-as-icam", "icam", ck_copy("simulator", "simulator.pt"), ("not a neurointerp ICAM",)),
    Bad("segmenter-as-icam", "icam", ck_copy("segmenter", "segmenter.pt"), ("not a neurointerp ICAM",)),
    Bad("vagan-as-icam", "icam", ck_copy("vagan", "vagan.pt"), ("not a neurointerp ICAM",)),
    Bad("other-grid-vagan", "vagan", ck_copy("vagan_other_grid", "othergrid.pt"), ("grid",), names_file=False),
    Bad("truncated-vagan", "vagan", ck_truncated_of("vagan"), ("checkpoint",)),
    Bad("zero-size-vagan", "vagan", ck_zero_size, ("checkpoint",)),
    Bad("pickle-exec-raw-vagan", "vagan", ck_pickle_exec_raw, ("refused",), pwned="PWNED-raw"),
    Bad("pickle-exec-vagan", "vagan", ck_pickle_exec_torch, ("refused",), pwned="PWNED-torch"),
    Bad("icam-as-vagan", "vagan", ck_copy("icam", "icam.pt"), ("not a neurointerp VA-GAN",)),
    Bad("classifier-as-vagan", "vagan", ck_copy("classifier", "classifier.pt"), ("not a neurointerp VA-GAN",)),
]


@dataclass
class Command:
    name: str
    slots: tuple
    table: Callable  # world -> the command's good table
    image_column: str
    build: Callable  # (world, inputs: dict, out: Path) -> argv (without 'neurointerp')
    columns: tuple = ("participant_id", "image", "label", "age", "sex")
    needs_label: bool = False
    numeric: tuple = ()
    maps_may_be_zero: bool = False  # an all-zero map is valid input (attribution/Jacobian maps)
    image_as_argument: bool = False  # a bad image is passed as the input itself, not in a table
    image_is_volume: bool = True  # the image slot holds a 3D volume (not a vector field)
    image_ndim: int = 3  # spatial dimensions of the good images (2: S x S x 1 slices)
    label_column: str = "label"
    label_volumes: bool = False  # the label column holds tissue label volumes (segment-bg)
    # files a failed run may leave (bookkeeping of batch commands, never outputs; the report lists the failures)
    bookkeeping: tuple = ()
    summary_line: bool = False  # a batch command ends with one more line pointing at failures.tsv


# folder metadata written before the inputs are read (valid, idempotent; never outputs)
DERIVATIVES_METADATA = ("dataset_description.json", ".bidsignore")


def _s(*args):
    return [str(a) for a in args]


def _tpl_table(world):
    return world.cohort


COMMANDS: list[Command] = [
    Command(
        "preprocess", ("image", "table"), lambda w: w.native_cohort, "image",
        lambda w, i, out: _s("preprocess", i.get("image") or i["table"], out, "--shape", 16, "--brain-extraction", "none", "--no-n4",
                             "--no-qc", "--threads", 1, "--registration-resolution", 8, "--force"),
        columns=("participant_id", "image", "label", "age", "sex", "template_image"),
        image_as_argument=True,
        bookkeeping=("dataset_description.json", ".bidsignore", "preprocess.json", "failures.tsv", "report.html", ".neurointerp/*"),
        summary_line=True,
    ),
    Command(
        "train", ("image", "table"), _tpl_table, "image",
        lambda w, i, out: _s("train", i["table"], out, "--folds", 0, "--final", "--epochs", 1, "--threads", 1, "--force"),
        needs_label=True,
    ),
    Command(
        "saliency", ("image", "table", "classifier"), _tpl_table, "image",
        lambda w, i, out: _s("saliency", i["classifier"], i["table"], out, "--atlas", "none", "--threads", 1, "--force", "--allow-unvalidated"),
        bookkeeping=DERIVATIVES_METADATA,
    ),
    Command(
        "confound-test", ("image", "table", "classifier"), _tpl_table, "image",
        lambda w, i, out: _s("confound-test", i["classifier"], i["table"], out, "--confounder", "age", "--threads", 1, "--force", "--allow-unvalidated"),
        numeric=("age",),
    ),
    Command(
        "simulate-train", ("image", "table", "classifier"), _tpl_table, "image",
        lambda w, i, out: _s("simulate", "train", i["table"], i["classifier"], out, "--epochs", 1, "--channels", "2,4", "--fc", 8,
                             "--batch-size", 4, "--threads", 1, "--force", "--allow-unvalidated"),
        needs_label=True,
    ),
    Command(
        "simulate-apply", ("image", "table", "classifier", "simulator"), _tpl_table, "image",
        lambda w, i, out: _s("simulate", "apply", i["table"], i["simulator"], i["classifier"], out, "--threads", 1, "--force", "--allow-unvalidated"),
        needs_label=True,
    ),
    Command(
        "jacobian", ("image", "table"), lambda w: w.fields_table, "field",
        lambda w, i, out: _s("jacobian", i.get("image") or i["table"], out, "--force"),
        columns=("participant_id", "field"),
        maps_may_be_zero=True,
        image_is_volume=False,
        bookkeeping=DERIVATIVES_METADATA + ("jacobian.json",),  # the run marker, written first for array tasks
        image_as_argument=True,
    ),
    Command(
        "group-map", ("image", "table"), lambda w: w.maps_table, "map",
        lambda w, i, out: _s("group-map", i["table"], out, "--design", "label,age", "--no-figures", "--force"),
        columns=("participant_id", "map", "label", "age", "sex"),
        needs_label=True,
        numeric=("age",),
        maps_may_be_zero=True,
        bookkeeping=DERIVATIVES_METADATA,
    ),
    Command(
        "evaluate", ("image", "table", "classifier"), _tpl_table, "image",
        lambda w, i, out: _s("evaluate", i["classifier"], i["table"], out, "--n-subjects", 2, "--samples", 2,
                             "--sensitivity-samples", 2, "--threads", 1, "--force", "--allow-unvalidated"),
    ),
    Command(
        "segment-bg-train", ("image", "table"), lambda w: w.rodent_cohort, "image",
        lambda w, i, out: _s("segment-bg", "train", i["table"], out, "--epochs", 1, "--base", 4, "--depth", 2, "--batch-size", 4,
                             "--threads", 1, "--force"),
        columns=("participant_id", "image", "masked", "labels", "mask"),
        needs_label=True,
        label_column="labels",
        label_volumes=True,
    ),
    Command(
        "segment-bg-apply", ("image", "table", "segmenter"), lambda w: w.rodent_cohort, "image",
        lambda w, i, out: _s("segment-bg", "apply", i.get("segmenter") or w.segmenter, i["table"], out, "--threads", 1, "--force"),
        columns=("participant_id", "image", "masked", "labels", "mask"),
        label_column="labels",
        label_volumes=True,  # truth for the metrics: checked like training labels
        bookkeeping=DERIVATIVES_METADATA + ("desc-*_dseg.tsv",),  # the label look-up tables, beside the description
    ),
    Command(
        "icam-train", ("image", "table"), lambda w: w.lesions_cohort, "image",
        lambda w, i, out: _s("simulate", "train", i["table"], out, "--method", "icam", "--epochs", 1, "--batch-size", 4, "--channels", 2,
                             "--threads", 1, "--force"),
        columns=("participant_id", "image", "label", "mask"),
        needs_label=True,
        image_ndim=2,
    ),
    Command(
        "icam-apply", ("image", "table", "icam"), lambda w: w.lesions_cohort, "image",
        lambda w, i, out: _s("simulate", "apply", i["table"], i.get("icam") or w.icam, out, "--method", "icam", "--n-samples", 2,
                             "--threads", 1, "--force"),
        columns=("participant_id", "image", "label", "mask"),
        image_ndim=2,
        bookkeeping=DERIVATIVES_METADATA,
    ),
    Command(
        "vagan-train", ("image", "table"), lambda w: w.lesions_cohort, "image",
        lambda w, i, out: _s("simulate", "train", i["table"], out, "--method", "vagan", "--epochs", 1, "--batch-size", 2, "--channels", 2,
                             "--critic-iters", 1, "--threads", 1, "--force"),
        columns=("participant_id", "image", "label", "mask"),
        needs_label=True,
        image_ndim=2,
    ),
    Command(
        "vagan-apply", ("image", "table", "vagan"), lambda w: w.lesions_cohort, "image",
        lambda w, i, out: _s("simulate", "apply", i["table"], i.get("vagan") or w.vagan, out, "--method", "vagan", "--threads", 1, "--force"),
        columns=("participant_id", "image", "label", "mask"),
        image_ndim=2,
        bookkeeping=DERIVATIVES_METADATA,
    ),
]


def applies(bad: Bad, cmd: Command) -> bool:
    if bad.slot not in cmd.slots:
        return False
    return bad.only is None or bool(bad.only(cmd))


def cases():
    return [(b, c) for c in COMMANDS for b in BAD_INPUTS if applies(b, c)]


# Known bugs (strict xfail: flips when fixed); none open.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (hidden ones included)."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
