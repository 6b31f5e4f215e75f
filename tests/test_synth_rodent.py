"""synth rodent: tissue classes, masks, artefacts outside the brain, recorded translations, files."""

import numpy as np
import pandas as pd
import pytest

from neurointerp.errors import InputError
from neurointerp.synth.rodent import INTENSITY, grid_affine, make_animal, synth_rodent


def test_animal_classes_mask_and_artefacts():
    a = make_animal(np.random.default_rng(3), shape=(48, 48, 6), max_shift=4)
    assert set(np.unique(a.labels)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(a.mask, (a.labels > 0).astype(np.uint8))
    # artefacts are outside the brain and some are brighter than any tissue
    assert a.artefacts.any() and not np.any(a.artefacts & a.mask)
    assert a.image[a.artefacts > 0].max() > 1.05 * max(INTENSITY.values())
    # tissue contrast: CSF > GM > WM in the mean
    means = [a.image[a.labels == c].mean() for c in (1, 2, 3)]
    assert means[0] < means[1] < means[2]
    # CSF is a small class (the paper's hardest one)
    assert 0 < (a.labels == 3).mean() < (a.labels == 1).mean() < (a.labels == 2).mean()


def test_translation_moves_the_brain_by_the_recorded_shift():
    rng = np.random.default_rng(0)
    shape = (48, 48, 4)
    centres, shifts = [], []
    for _ in range(6):
        a = make_animal(rng, shape=shape, max_shift=5, artefacts=False)
        ii, jj = np.nonzero(a.mask.any(axis=2))
        centres.append([(ii.min() + ii.max()) / 2, (jj.min() + jj.max()) / 2])
        shifts.append(a.shift)
    centres, shifts = np.array(centres), np.array(shifts)
    # bounding-box centre = grid centre + shift, up to the outline's small harmonics
    assert np.all(np.abs(centres - ((np.array(shape[:2]) - 1) / 2 + shifts)) < 1.6)
    assert np.ptp(shifts[:, 0]) > 2 and np.ptp(shifts[:, 1]) > 2  # acquisitions really move


def test_no_artefacts_option_leaves_only_noise_outside():
    a = make_animal(np.random.default_rng(1), shape=(32, 32, 3), artefacts=False, noise=0.02)
    from scipy.ndimage import binary_dilation

    near = np.stack([binary_dilation(a.mask[:, :, k], iterations=2) for k in range(3)], axis=-1)
    assert a.image[~near].max() < 0.15  # outside the partial-volume rim: noise only
    assert not a.artefacts.any()


def test_synth_rodent_files_affine_split_and_determinism(tmp_path):
    import nibabel as nib

    t1 = synth_rodent(tmp_path / "a", n_animals=5, shape=(32, 32, 3), max_shift=3, seed=7)
    t2 = synth_rodent(tmp_path / "b", n_animals=5, shape=(32, 32, 3), max_shift=3, seed=7)
    f1, f2 = pd.read_csv(t1), pd.read_csv(t2)
    pd.testing.assert_frame_equal(f1, f2)
    assert len(pd.read_csv(tmp_path / "a" / "train.csv")) == 4 and len(pd.read_csv(tmp_path / "a" / "test.csv")) == 1
    row = f1.iloc[0]
    img = nib.load(str(tmp_path / "a" / row["image"]))
    masked = np.asarray(nib.load(str(tmp_path / "a" / row["masked"])).dataobj)
    labels = np.asarray(nib.load(str(tmp_path / "a" / row["labels"])).dataobj)
    mask = np.asarray(nib.load(str(tmp_path / "a" / row["mask"])).dataobj)
    np.testing.assert_allclose(img.affine, grid_affine((32, 32, 3)), atol=1e-6)
    np.testing.assert_allclose(img.header.get_zooms(), (0.375, 0.375, 0.5), atol=1e-6)
    np.testing.assert_array_equal(mask, labels > 0)
    np.testing.assert_allclose(masked, np.asarray(img.dataobj) * mask, rtol=1e-6)
    b = np.asarray(nib.load(str(tmp_path / "b" / row["image"])).dataobj)
    np.testing.assert_array_equal(np.asarray(img.dataobj), b)


def test_synth_rodent_refuses_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="n-animals"):
        synth_rodent(tmp_path / "x", n_animals=1)
    with pytest.raises(InputError, match="max-shift"):
        synth_rodent(tmp_path / "y", shape=(32, 32, 2), max_shift=10)


def test_cli_synth_rodent(tmp_path):
    from neurointerp.cli.app import main

    assert main(["--quiet", "synth", "rodent", str(tmp_path / "s"), "--n-animals", "3", "--shape", "24,24,2", "--max-shift", "2"]) == 0
    assert len(pd.read_csv(tmp_path / "s" / "cohort.csv")) == 3
    assert main(["--quiet", "synth", "rodent", str(tmp_path / "t"), "--shape", "24,24"]) == 2
