"""neurointerp.io.headers: the header rules, checked against ANTs/ITK's own reading of the file."""

from __future__ import annotations

import errno
import gzip
import itertools
import struct
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from neurointerp.errors import InputError, NeurointerpError
from neurointerp.io import load_image, save_image
from neurointerp.io.headers import axcodes, load_mask_like, read_array, read_header

SHAPE = (10, 12, 14)
RAS = np.array([[2.0, 0, 0, -10], [0, 2.0, 0, -12], [0, 0, 2.0, -14], [0, 0, 0, 1]])
LAS = np.array([[-2.0, 0, 0, 10], [0, 2.0, 0, -12], [0, 0, 2.0, -14], [0, 0, 0, 1]])  # RAS mirrored left-right


def _ants():
    import os

    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    import ants

    return ants


def _itk_affine(path: Path) -> np.ndarray:
    """The RAS affine ANTs/ITK reads from ``path``."""
    from neurointerp.preprocess.antsio import ants_affine

    return ants_affine(_ants().image_read(str(path)))


def _write(path: Path, data, qform, qcode: int, sform, scode: int, units: str = "mm") -> Path:
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.asarray(data).dtype)
    hdr.set_xyzt_units(units)
    img = nib.Nifti1Image(data, None, header=hdr)
    img.header.set_qform(qform, code=max(qcode, 1))
    img.header.set_sform(sform, code=max(scode, 1))
    img.header["qform_code"], img.header["sform_code"] = qcode, scode
    nib.save(img, str(path))
    return path


def _data(dtype=np.float32):
    rng = np.random.default_rng(0)
    return (rng.random(SHAPE) * 100).astype(dtype)


@pytest.mark.parametrize("qcode, scode, agree", [(q, s, a) for q, s in itertools.product((0, 1, 2), (0, 1, 2)) for a in ((True, False) if q and s else (True,))])
def test_the_affine_is_the_one_itk_reads_or_the_image_is_refused(tmp_path, qcode, scode, agree):
    """Every code combination: our affine equals ANTs/ITK's (so our outputs and the transforms
    ANTs writes agree), or the header is refused: orientation unknown, or qform and sform that
    disagree (ITK would take the qform here, nibabel the sform)."""
    p = _write(tmp_path / "x.nii.gz", _data(), RAS, qcode, RAS if agree else LAS, scode)
    if qcode == 0 and scode == 0:
        with pytest.raises(InputError, match=r"x\.nii\.gz: orientation unknown .*--assume-orientation"):
            read_header(p)
        assert not np.allclose(_itk_affine(p), nib.load(str(p)).affine)  # ITK (LPS) and nibabel (LAS) differ
        return
    if not agree:
        with pytest.raises(InputError, match=r"x\.nii\.gz: qform \(RAS, code \d\) and sform \(LAS, code \d\) disagree by up to 20 mm"):
            read_header(p)
        return
    head = read_header(p)
    assert np.allclose(head.affine, _itk_affine(p), atol=1e-4)
    assert np.allclose(head.affine, RAS, atol=1e-4)


def test_a_form_whose_code_is_zero_is_ignored_as_itk_does(tmp_path):
    for q, s, want in ((1, 0, RAS), (0, 2, LAS)):
        p = _write(tmp_path / f"q{q}s{s}.nii.gz", _data(), RAS, q, LAS, s)
        assert np.allclose(read_header(p).affine, want) and np.allclose(_itk_affine(p), want, atol=1e-4)


@pytest.mark.parametrize("code", ["LAS", "RAS", "PIR", "lpi"])
def test_assumed_orientation_is_used_only_for_headers_without_one(tmp_path, code):
    p = _write(tmp_path / "x.nii.gz", _data(), RAS, 0, RAS, 0)
    head = read_header(p, assume_orientation=code)
    assert axcodes(head.affine) == code.upper() and head.source == f"assumed {code.upper()}"
    assert np.allclose(np.abs(head.affine[:3, :3]).sum(axis=0), 2.0)  # the header's voxel sizes
    assert np.allclose(head.affine @ np.r_[(np.array(SHAPE) - 1) / 2, 1], [0, 0, 0, 1])  # centred
    good = _write(tmp_path / "good.nii.gz", _data(), RAS, 1, RAS, 1)
    assert np.allclose(read_header(good, assume_orientation=code).affine, RAS)


@pytest.mark.parametrize("code", ["XYZ", "RRS", "RA", "RASL", ""])
def test_bad_assumed_orientation_is_refused(tmp_path, code):
    p = _write(tmp_path / "x.nii.gz", _data(), RAS, 0, RAS, 0)
    with pytest.raises(InputError, match="--assume-orientation"):
        read_header(p, assume_orientation=code)


def test_sheared_sform_is_refused(tmp_path):
    sheared = RAS.copy()
    sheared[0, 1] = 0.5
    with pytest.raises(InputError, match="shear"):
        read_header(_write(tmp_path / "s.nii.gz", _data(), RAS, 0, sheared, 2))


@pytest.mark.parametrize("units, factor", [("unknown", 1.0), ("mm", 1.0), ("meter", 1000.0), ("micron", 1e-3)])
def test_spatial_units_are_converted_to_mm_as_itk_does(tmp_path, units, factor):
    big = RAS.copy()
    big[:3] *= 0.01 if units == "meter" else (1000.0 if units == "micron" else 1.0)  # 2 mm voxels after conversion... or 20 um
    p = _write(tmp_path / "u.nii.gz", _data(), big, 1, big, 1, units=units)
    head = read_header(p)
    assert np.allclose(head.affine, _itk_affine(p), rtol=1e-5, atol=1e-6)
    assert np.allclose(head.affine[:3], big[:3] * factor)


def test_implausible_voxel_size_after_conversion_is_refused(tmp_path):
    p = _write(tmp_path / "m.nii.gz", _data(), RAS, 1, RAS, 1, units="meter")  # 2 m voxels
    with pytest.raises(InputError, match=r"m\.nii\.gz: voxel size 2000 x 2000 x 2000 mm \(header unit 'meter'\)"):
        read_header(p)


def _with_scaling(path: Path, data, slope: float, inter: float) -> Path:
    raw = bytearray(nib.Nifti1Image(data, RAS).to_bytes())
    raw[112:120] = struct.pack("<ff", slope, inter)  # nibabel would reset the scaling on save
    path.write_bytes(gzip.compress(bytes(raw)))
    return path


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32])
def test_scaled_integers_keep_background_zeros_and_match_itk(tmp_path, dtype):
    data = np.zeros(SHAPE, dtype=dtype)
    data[3:7, 3:8, 4:9] = 100
    data[5, 5, 5] = 3
    p = _with_scaling(tmp_path / "s.nii.gz", data, 0.0123, 0.0)
    vol = load_image(p)
    assert np.count_nonzero(vol.data) == np.count_nonzero(data)  # the background is exactly zero
    assert np.allclose(vol.data[data != 0], data[data != 0] * np.float32(0.0123), rtol=1e-6)
    itk = _ants().image_read(str(p)).numpy()
    assert np.allclose(vol.data, itk, rtol=1e-6, atol=1e-7)
    q = _with_scaling(tmp_path / "o.nii.gz", data, 2.0, -5.0)  # an offset moves the background, in both readers
    assert np.allclose(load_image(q).data, _ants().image_read(str(q)).numpy())


def test_ambiguous_or_broken_scaling_is_refused(tmp_path):
    data = np.ones(SHAPE, dtype=np.int16)
    # slope 0: unscaled by the NIfTI standard (nibabel), but ITK adds the offset
    p = _with_scaling(tmp_path / "zero.nii.gz", data, 0.0, 5.0)
    assert float(_ants().image_read(str(p)).numpy().max()) == 6.0 and float(np.asarray(nib.load(str(p)).dataobj).max()) == 1.0
    with pytest.raises(InputError, match=r"zero\.nii\.gz: scl_slope is 0 with scl_inter 5"):
        read_header(p)
    with pytest.raises(InputError, match=r"nan\.nii\.gz: scl_slope is 2 but scl_inter is nan"):
        read_header(_with_scaling(tmp_path / "nan.nii.gz", data, 2.0, float("nan")))
    assert np.allclose(load_image(_with_scaling(tmp_path / "ok.nii.gz", data, 0.0, 0.0)).data, 1.0)  # no scaling at all


@pytest.mark.parametrize("dtype, message", [(np.complex64, "complex-valued"), (np.complex128, "complex-valued"), ("RGB", "RGB"), ("RGBA", "RGB")])
def test_non_scalar_data_types_are_refused(tmp_path, dtype, message):
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    np_dtype = hdr.get_data_dtype()
    data = np.zeros(SHAPE, dtype=np_dtype)
    nib.save(nib.Nifti1Image(data, RAS, header=hdr), str(tmp_path / "c.nii.gz"))
    with pytest.raises(InputError, match=rf"c\.nii\.gz: .*{message}"):
        load_image(tmp_path / "c.nii.gz")


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int64, np.float64, np.uint32])
def test_real_scalar_types_are_read(tmp_path, dtype):
    data = (np.arange(np.prod(SHAPE)) % 50).reshape(SHAPE).astype(dtype)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    nib.save(nib.Nifti1Image(data, RAS, header=hdr), str(tmp_path / "r.nii.gz"))
    vol = load_image(tmp_path / "r.nii.gz")
    assert vol.data.dtype == np.float32 and np.array_equal(vol.data, data.astype(np.float32))


def test_huge_claim_in_a_tiny_file_fails_fast_without_allocating(tmp_path):
    """101 bytes of .nii.gz claiming 700^3 float32 voxels (1.4 GB): one line, at once, no big buffer."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((700, 700, 700))
    hdr.set_data_dtype(np.float32)
    hdr.set_qform(RAS, code=1)
    hdr.set_sform(RAS, code=1)
    hdr["vox_offset"] = 352
    p = tmp_path / "huge.nii.gz"
    p.write_bytes(gzip.compress(hdr.binaryblock + bytes(20), compresslevel=9))
    assert p.stat().st_size < 200
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"huge\.nii\.gz: truncated: the header claims 700x700x700 voxels of float32 \(1\.4 GB\)"):
        load_image(p)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 2.0 and peak < 20e6, (seconds, peak)


def test_truncated_data_is_found_by_a_bounded_read(tmp_path):
    """A gzip file that could hold the claim but does not: the read stops at what exists."""
    data = np.random.default_rng(1).random((60, 60, 60)).astype(np.float32)  # incompressible: 864 kB
    raw = nib.Nifti1Image(data, RAS).to_bytes()
    p = tmp_path / "cut.nii.gz"
    p.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    head = read_header(p)  # the header itself is whole, and 430 kB of gzip could hold 864 kB
    tracemalloc.start()
    with pytest.raises(InputError, match=r"cut\.nii\.gz: truncated"):
        read_array(head)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2.5 * len(raw) // 2 + 1e6
    q = tmp_path / "cut.nii"
    q.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(InputError, match=r"cut\.nii: truncated: the header claims 60x60x60 voxels of float32 \(864\.0 kB\) from byte 352"):
        read_header(q)


def test_unreadable_file_is_named(tmp_path):
    import os

    p = _write(tmp_path / "locked.nii.gz", _data(), RAS, 1, RAS, 1)
    p.chmod(0)
    try:
        if os.access(p, os.R_OK):  # root reads anything
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(InputError, match=r"locked\.nii\.gz: not readable"):
            read_header(p)
    finally:
        p.chmod(0o644)


def test_displacement_field_must_look_like_one(tmp_path):
    from neurointerp.simulate.warp import load_field, save_field

    save_field(np.zeros((3, *SHAPE)), RAS, tmp_path / "f.nii.gz")
    u, aff = load_field(tmp_path / "f.nii.gz", 3, shape=SHAPE)
    assert u.shape == (3, *SHAPE) and np.allclose(aff, RAS)
    # three images stacked in 4D (no vector intent) are not a field, nor is a 5D image without the intent
    nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 3), np.float32), RAS), str(tmp_path / "stack.nii.gz"))
    with pytest.raises(InputError, match=r"stack\.nii\.gz: shape 10x12x14x3 with intent 0 \(none\) is not a displacement field"):
        load_field(tmp_path / "stack.nii.gz", 3)
    nib.save(nib.Nifti1Image(np.zeros((*SHAPE, 1, 3), np.float32), RAS), str(tmp_path / "nointent.nii.gz"))
    with pytest.raises(InputError, match="is not a displacement field"):
        load_field(tmp_path / "nointent.nii.gz", 3)
    # and a field is not an image
    with pytest.raises(InputError, match=r"f\.nii\.gz: a vector image \(intent 1007"):
        load_image(tmp_path / "f.nii.gz")


def test_outputs_carry_nothing_of_the_input_header(tmp_path):
    """Extensions, descrip, aux_file, intent and display range of the input stay behind; the
    affine and the sform/qform codes (the space) are kept; a statistical intent is ours to set."""
    hdr = nib.Nifti1Header()
    hdr.extensions.append(nib.nifti1.Nifti1Extension("comment", b"PatientName=Jane Doe; PatientBirthDate=19700101"))
    hdr["descrip"], hdr["aux_file"] = b"Jane Doe 1970", b"jane.lut"
    hdr["cal_min"], hdr["cal_max"] = 1.0, 9.0
    hdr.set_intent("z score", name="Jane")
    img = nib.Nifti1Image(_data(), RAS, header=hdr)
    img.set_sform(RAS, code=4)
    img.set_qform(RAS, code=1)
    nib.save(img, str(tmp_path / "in.nii.gz"))
    vol = load_image(tmp_path / "in.nii.gz")
    save_image(vol.data, vol.affine, tmp_path / "map.nii.gz", header=vol.header)
    save_image(vol.data, vol.affine, tmp_path / "t.nii.gz", header=vol.header, intent=("t", 17), intent_name="t")
    out = nib.load(str(tmp_path / "map.nii.gz")).header
    assert not list(out.extensions) and b"Jane" not in out.binaryblock
    assert out["descrip"] == b"" and out["aux_file"] == b"" and float(out["cal_min"]) == float(out["cal_max"]) == 0.0
    assert int(out["intent_code"]) == 0 and (int(out["sform_code"]), int(out["qform_code"])) == (4, 1)
    assert np.array_equal(load_image(tmp_path / "map.nii.gz").affine, vol.affine)
    t = nib.load(str(tmp_path / "t.nii.gz")).header
    assert int(t["intent_code"]) == 3 and float(t["intent_p1"]) == 17.0 and t.get_intent()[2] == "t"
    with pytest.raises(ValueError, match="takes 1 parameter"):
        save_image(vol.data, vol.affine, tmp_path / "t2.nii.gz", intent="t")


def test_mask_on_another_grid_names_the_option_and_the_file(tmp_path):
    good = _write(tmp_path / "m.nii.gz", (_data() > 50).astype(np.uint8), RAS, 1, RAS, 1)
    assert load_mask_like(good, SHAPE, RAS, "--mask").sum() > 0
    shifted = RAS.copy()
    shifted[0, 3] += 2.0
    with pytest.raises(InputError, match=r"^--mask: .*m\.nii\.gz: mask is on another grid \(affine differs by up to 2 mm\)"):
        load_mask_like(good, SHAPE, shifted, "--mask")
    with pytest.raises(InputError, match=r"^--truth-mask: .*m\.nii\.gz: mask is on another grid \(grid 10x12x14, expected 10x12x13\)"):
        load_mask_like(good, (10, 12, 13), RAS, "--truth-mask")
    with pytest.raises(InputError, match=r"^--mask: .*nope\.nii\.gz: file not found"):
        load_mask_like(tmp_path / "nope.nii.gz", SHAPE, RAS, "--mask")


@pytest.mark.parametrize("code, kind, exit_code", [(errno.ENOSPC, "no space left", 1), (errno.EDQUOT, "disk quota exceeded", 1), (errno.EACCES, "permission denied", 2)])
def test_write_failures_are_one_line_naming_the_path_and_leave_nothing(tmp_path, monkeypatch, code, kind, exit_code):
    """ENOSPC/EDQUOT during an atomic write: exit 1, one line naming the output; the earlier file
    under that name is untouched and no temporary file is left."""
    from neurointerp.io.atomic import write_text

    target = tmp_path / "result.tsv"
    target.write_text("earlier\n")

    def failing_write(self, *args, **kwargs):
        raise OSError(code, "simulated")

    monkeypatch.setattr(Path, "write_text", failing_write)
    with pytest.raises(NeurointerpError) as info:
        write_text(target, "new\n", force=True)
    monkeypatch.undo()
    message = str(info.value)
    assert info.value.exit_code == exit_code and "\n" not in message
    assert message.startswith(f"{target}: cannot write: ") and kind in message
    assert target.read_text() == "earlier\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.tsv"]


def test_checkpoints_are_serialised_before_the_write(tmp_path, monkeypatch):
    """torch.save onto a full disk says 'unexpected pos'; a checkpoint is serialised first, so
    the failure is the one-line disk-full error naming the file."""
    from neurointerp.io.atomic import DiskFullError
    from neurointerp.models.checkpoint import save_checkpoint

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(DiskFullError, match=r"model\.pt: cannot write: no space left on the device"):
        save_checkpoint(tmp_path / "model.pt", {"format": "x", "w": np.zeros(3).tolist()})
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_nifti2_is_read_and_written_with_the_same_rules(tmp_path):
    img = nib.Nifti2Image(_data(), LAS)
    img.header.set_qform(LAS, code=1)
    nib.save(img, str(tmp_path / "n2.nii.gz"))
    vol = load_image(tmp_path / "n2.nii.gz")
    assert np.allclose(vol.affine, LAS) and np.allclose(vol.data, _data())
    save_image(vol.data, vol.affine, tmp_path / "out.nii.gz", header=vol.header)
    assert isinstance(nib.load(str(tmp_path / "out.nii.gz")), nib.Nifti2Image)
    bad = nib.Nifti2Image(_data(), LAS)
    bad.header.set_qform(RAS, code=1)
    bad.header.set_sform(LAS, code=2)
    nib.save(bad, str(tmp_path / "bad2.nii.gz"))
    with pytest.raises(InputError, match="disagree"):
        load_image(tmp_path / "bad2.nii.gz")
