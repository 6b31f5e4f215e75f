"""``synth lesions``: healthy vs lesion 2D phantoms with ground-truth masks (ICAM paper §4.2 in spirit)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from neurointerp.cli.app import main
from neurointerp.errors import InputError
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


def test_multiclass_variant_puts_each_class_at_its_own_sites():
    from neurointerp.synth.lesions import class_sites, make_lesion_classes

    c = make_lesion_classes(n_per_class=60, n_classes=3, size=32, seed=4)
    assert np.array_equal(np.bincount(c.labels), [60, 60, 60]) and c.frequency.shape == (3, 32, 32)
    table = class_sites(3)
    assert table.tolist() == [[False] * 6, [True, False, True, False, True, False], [False, True, False, True, False, True]]
    for k in range(3):
        rows = c.labels == k
        assert not (c.sites[rows] & ~table[k]).any()  # lesions only at the class's own sites
        if k:
            assert c.sites[rows].any(axis=1).all()  # every subject of a lesion class has a lesion
        assert np.allclose(c.frequency[k], c.masks[rows].mean(axis=0))
    assert not c.masks[c.labels == 0].any()
    # the two lesion classes' frequency maps do not overlap: their sites are apart
    assert (c.frequency[1] * c.frequency[2]).sum() == 0 and c.frequency[1].sum() > 0
    with pytest.raises(InputError, match="--n-classes 2"):
        make_lesion_classes(n_per_class=4, n_classes=2)


def test_regression_variant_lesion_load_grows_with_age():
    from neurointerp.synth.lesions import AGE_RANGE, make_lesion_ages, make_lesions

    a = make_lesion_ages(n=200, size=32, seed=5)
    assert a.labels.min() >= AGE_RANGE[0] and a.labels.max() <= AGE_RANGE[1] and a.sites.all()
    # brightness inside the own lesion masks, relative to the healthy phantoms' mean there, grows with age
    healthy = make_lesions(n_per_group=100, size=32, seed=6)
    ref = healthy.images[healthy.labels == 0].mean(axis=0)
    excess = np.array([(a.images[i] - ref)[a.masks[i]].mean() for i in range(200)])
    assert np.corrcoef(excess, a.labels)[0, 1] > 0.8
    young, old = a.labels < 50, a.labels > 75
    assert excess[old].mean() - excess[young].mean() > 0.4  # ~0.7 contrast over the range
    assert np.array_equal(make_lesion_ages(n=20, seed=1).images, make_lesion_ages(n=20, seed=1).images)


def test_synth_lesions_writes_the_variants(tmp_path):
    from neurointerp.synth.lesions import make_lesion_ages, synth_lesions

    table = synth_lesions(tmp_path / "rg", n_per_group=3, size=24, task="regression", seed=2)
    frame = pd.read_csv(table)
    ref = make_lesion_ages(n=6, size=24, seed=2)
    assert np.allclose(frame["label"], ref.labels) and frame["n_lesions"].eq(6).all()
    img = nib.load(str(tmp_path / "rg" / frame["image"][0]))
    assert np.allclose(img.get_fdata()[:, :, 0], ref.images[0], atol=1e-6)
    truth = json.loads((tmp_path / "rg" / "truth" / "truth.json").read_text())
    assert truth["Target"] == "age (years)" and truth["Parameters"]["task"] == "regression"
    with pytest.raises(InputError, match="--task ternary"):
        synth_lesions(tmp_path / "x", task="ternary")
    assert main(["synth", "lesions", str(tmp_path / "mc"), "--task", "multiclass", "--n-classes", "4", "--n-per-group", "2", "--size", "24"]) == 0
    assert sorted(pd.read_csv(tmp_path / "mc" / "cohort.csv")["label"]) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert (tmp_path / "mc" / "truth" / "desc-class3frequency_lesionmap.nii.gz").exists()
    assert main(["synth", "lesions", str(tmp_path / "mc8"), "--task", "multiclass", "--n-classes", "8"]) == 2 and not (tmp_path / "mc8").exists()
