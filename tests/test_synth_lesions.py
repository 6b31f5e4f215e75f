"""``synth lesions``: healthy vs lesion 2D phantoms with ground-truth masks (ICAM paper §4.2 in spirit)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd

from neurointerp.cli.app import main
from neurointerp.synth.lesions import SITES, make_lesions


def test_classes_masks_and_frequencies():
    a = make_lesions(n_per_group=300, size=32, seed=3)
    b = make_lesions(n_per_group=300, size=32, seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)  # deterministic
    healthy, lesion = a.labels == 0, a.labels == 1
    assert not a.masks[healthy].any() and not a.sites[healthy].any()
    assert a.sites[lesion].any(axis=1).all()  # every patient has at least one lesion
    per = a.masks[lesion].reshape(lesion.sum(), -1).sum(1)
    assert per.min() >= 4  # a lesion covers a few pixels
    # site frequencies as specified (the "at least one lesion" rule raises them a little)
    freq = a.sites[lesion].mean(axis=0)
    assert np.all(np.abs(freq - np.array([f for _, f in SITES])) < 0.12), freq
    assert np.allclose(a.frequency, a.masks[lesion].mean(axis=0))
    # bright lesions: inside the mask the patient is brighter than the healthy mean at the same pixels
    healthy_mean = a.images[healthy].mean(axis=0)
    diff = [(a.images[i] - healthy_mean)[a.masks[i]].mean() for i in np.flatnonzero(lesion)[:50]]
    assert np.mean(diff) > 0.3
    # dark lesions are darker
    d = make_lesions(n_per_group=50, size=32, seed=3, polarity="dark")
    hm = d.images[d.labels == 0].mean(axis=0)
    assert np.mean([(d.images[i] - hm)[d.masks[i]].mean() for i in np.flatnonzero(d.labels == 1)]) < -0.2
    # lesions vary in position: the union of masks is much larger than any single mask
    assert a.masks[lesion].any(axis=0).sum() > 3 * per.max()


def test_cli_writes_cohort_masks_and_truth(tmp_path):
    out = tmp_path / "les"
    assert main(["synth", "lesions", str(out), "--n-per-group", "6", "--size", "40", "--voxel-size", "2", "--seed", "1"]) == 0
    table = pd.read_csv(out / "cohort.csv")
    assert list(table["label"]) == [0] * 6 + [1] * 6
    ref = make_lesions(n_per_group=6, size=40, voxel_size=2.0, seed=1)
    for i, row in table.iterrows():
        img = nib.load(str(out / row["image"]))
        mask = nib.load(str(out / row["mask"]))
        assert img.shape == (40, 40, 1)
        assert np.allclose(img.affine, ref.affine) and np.allclose(img.affine[:3, 3], [-39.0, -39.0, 0.0])
        assert np.allclose(img.get_fdata()[:, :, 0], ref.images[i], atol=1e-6)
        assert np.array_equal(mask.get_fdata()[:, :, 0] > 0, ref.masks[i])
        assert row["n_lesions"] == ref.sites[i].sum()
    freq = nib.load(str(out / "truth" / "desc-frequency_lesionmap.nii.gz")).get_fdata()[:, :, 0]
    assert np.allclose(freq, ref.frequency, atol=1e-6)
    assert (out / "truth" / "truth.json").exists() and (out / "dataset_description.json").exists()
    # existing output is not overwritten without --force; bad options are one-line usage errors
    assert main(["synth", "lesions", str(out), "--n-per-group", "6"]) == 2
    assert main(["synth", "lesions", str(tmp_path / "x"), "--polarity", "grey"]) == 2
    assert main(["synth", "lesions", str(tmp_path / "y"), "--size", "16"]) == 2
