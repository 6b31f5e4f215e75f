import gzip

import nibabel as nib
import numpy as np
import pytest

from neurointerp.errors import InputError
from neurointerp.io import load_image, save_image


def oblique_las_affine():
    rot = nib.eulerangles.euler2mat(0.1, -0.2, 0.05)
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-1.2, 1.0, 1.5])
    aff[:3, 3] = [91.3, -126.7, -72.25]
    return aff


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
def test_round_trip_keeps_affine_and_data_exactly(tmp_path, klass):
    data = np.random.default_rng(1).normal(size=(7, 8, 9)).astype(np.float32)
    src = tmp_path / "src.nii.gz"
    nib.save(klass(data, oblique_las_affine()), str(src))
    vol = load_image(src)
    out = save_image(vol.data, vol.affine, tmp_path / "out.nii.gz", header=vol.header)
    back = load_image(out)
    assert np.array_equal(back.affine, vol.affine)
    assert np.array_equal(back.data, data)
    img = nib.load(str(out))
    assert np.array_equal(img.get_sform(), vol.affine)
    assert int(img.header["sform_code"]) > 0 and int(img.header["qform_code"]) > 0
    assert isinstance(img, klass)


def test_save_without_header_never_identity(tmp_path):
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = [-76.5, -111.5, -76.0]
    out = save_image(np.ones((4, 4, 4)), aff, tmp_path / "x.nii.gz")
    assert np.array_equal(nib.load(str(out)).affine, aff)


def test_singleton_4d_is_squeezed(make_nifti):
    path = make_nifti(data=np.ones((5, 6, 7, 1), np.float32))
    assert load_image(path).shape == (5, 6, 7)


def test_2d_as_32x32x1_loads_with_ndim2(make_nifti):
    path = make_nifti(data=np.ones((32, 32, 1), np.float32))
    assert load_image(path, ndim=2).shape == (32, 32)
    with pytest.raises(InputError, match="is not 3D"):
        load_image(path)


@pytest.mark.parametrize(
    "data,message",
    [
        (np.ones((5, 6, 7, 3), np.float32), r"4D image of shape \(5, 6, 7, 3\)"),
        (np.zeros((5, 6, 7), np.float32), "image is empty"),
        (np.where(np.eye(5, 5)[:, :, None] > 0, np.nan, 1.0).repeat(3, 2).astype(np.float32), "5 voxels are NaN or Inf"),
    ],
)
def test_bad_volumes_are_refused_with_one_line(make_nifti, data, message):
    path = make_nifti(data=data)
    with pytest.raises(InputError, match=message) as exc:
        load_image(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_bad_files(tmp_path, make_nifti):
    with pytest.raises(InputError, match="file not found"):
        load_image(tmp_path / "missing.nii.gz")
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="0 bytes"):
        load_image(empty)
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"not a nifti header at all" * 20)
    with pytest.raises(InputError, match="not a readable NIfTI"):
        load_image(junk)
    good = make_nifti(shape=(20, 20, 20))
    raw = gzip.decompress(good.read_bytes())
    trunc = tmp_path / "trunc.nii.gz"
    trunc.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    with pytest.raises(InputError, match="trunc.nii.gz"):
        load_image(trunc)
    txt = tmp_path / "image.txt"
    txt.write_text("hello")
    with pytest.raises(InputError, match="not a NIfTI file name"):
        load_image(txt)


def test_degenerate_affine_refused(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4, 4, 4))
    hdr.set_data_dtype(np.float32)
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]  # zero y voxel size
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), None, header=hdr)
    path = tmp_path / "flat.nii.gz"
    nib.save(img, str(path))
    with pytest.raises(InputError, match="zero voxel size|singular"):
        load_image(path)


def test_no_overwrite_without_force_and_atomic(tmp_path):
    aff = np.eye(4)
    target = tmp_path / "a.nii.gz"
    save_image(np.ones((3, 3, 3)), aff, target)
    before = target.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        save_image(np.zeros((3, 3, 3)), aff, target)
    assert target.read_bytes() == before
    save_image(np.full((3, 3, 3), 2.0), aff, target, force=True)
    assert np.all(load_image(target).data == 2.0)
    # a failing write leaves neither a temp file nor a changed target
    with pytest.raises(Exception):
        save_image(np.full((3, 3, 3), np.array("x")), aff, target, force=True)
    assert np.all(load_image(target).data == 2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz"]
