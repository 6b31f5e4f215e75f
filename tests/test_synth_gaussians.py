import json

import numpy as np
import pytest
from scipy import stats

from neurointerp.io import load_image, read_cohort
from neurointerp.synth.gaussians import BLOCK, block_masks, make_gaussians, synth_gaussians


def test_seeded_and_deterministic():
    a = make_gaussians("magnitude", n_per_group=16, seed=3)
    b = make_gaussians("magnitude", n_per_group=16, seed=3)
    c = make_gaussians("magnitude", n_per_group=16, seed=4)
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


def test_width_variant_follows_the_paper():
    c = make_gaussians("width", n_per_group=512, seed=0)
    assert c.images.shape == (1024, 32, 32)
    g0, g1 = c.sigma[c.labels == 0], c.sigma[c.labels == 1]
    assert g0.min() >= 2 and g0.max() <= 6 and g1.min() >= 4 and g1.max() <= 8
    assert abs(g0.mean() - 4) < 0.1 and abs(g1.mean() - 6) < 0.1
    # wider Gaussians put more mass in every block: the planted effect is in the image
    masks = block_masks()
    mass = (c.images * masks["offdiagonal"]).sum(axis=(1, 2))
    assert stats.ttest_ind(mass[c.labels == 1], mass[c.labels == 0]).statistic > 10
    centre_vals = c.images[:, 7:9, 7:9].max(axis=(1, 2))  # unit peaks (+ tails of wide neighbours)
    assert centre_vals.min() > 0.93 and centre_vals.max() < 1.3


def test_magnitude_variant_group_difference_is_off_diagonal_only():
    c = make_gaussians("magnitude", n_per_group=512, seed=1)
    # measure each Gaussian's magnitude from the image: the peak value inside its block
    peaks = np.stack(
        [c.images[:, r : r + BLOCK, q : q + BLOCK].max(axis=(1, 2)) for r, q in ((0, 0), (0, 16), (16, 0), (16, 16))], axis=1
    )
    # the sampled peak of a Gaussian centred between pixels is at least exp(-0.5**2/4) of it
    assert np.all(peaks <= c.magnitude + 0.01) and np.all(peaks >= 0.93 * c.magnitude - 0.01)
    diff = peaks[c.labels == 1].mean(axis=0) - peaks[c.labels == 0].mean(axis=0)
    assert np.allclose(diff[[1, 2]], 3.0 * 0.97, atol=0.25)  # U(4,8) - U(1,5)
    assert np.all(np.abs(diff[[0, 3]]) < 0.25)  # diagonal: U(1,6) for everyone
    assert stats.ttest_ind(peaks[c.labels == 1, 0], peaks[c.labels == 0, 0]).pvalue > 0.001
    # noise sd 0.002 in the empty corners
    corner = c.images[:, 0, 0] - 0  # Gaussian tails are < 1e-3 there
    assert 0.001 < np.std(c.images[:, 15, 15] - c.images[:, 15, 15].mean()) < 0.5
    assert np.std(corner) < 0.01
    # ground truth lives in the off-diagonal blocks only
    masks = block_masks()
    assert c.group_truth[masks["offdiagonal"]].sum() > 0.97 * c.group_truth.sum()


def test_written_cohort(tmp_path):
    table = synth_gaussians(tmp_path / "g", variant="width", n_per_group=6, seed=2)
    cohort = read_cohort(table, numeric=["sigma_B", "sigma_C"])
    assert len(cohort) == 12 and cohort.classes == ["0", "1"]
    mem = make_gaussians("width", n_per_group=6, seed=2)
    vol = load_image(cohort.images[7], ndim=2)
    assert np.array_equal(vol.data, mem.images[7])
    assert np.allclose(cohort.frame["sigma_B"], mem.sigma[:, 1], atol=1e-6)
    assert (tmp_path / "g" / "truth" / "subjects.tsv").exists()
    desc = json.loads((tmp_path / "g" / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "neurointerp"
    prov = json.loads((tmp_path / "g" / "truth" / "truth.json").read_text())
    assert prov["Seed"] == 2 and prov["Parameters"]["variant"] == "width"


def test_refuses_non_empty_output(tmp_path):
    from neurointerp.errors import InputError

    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        synth_gaussians(tmp_path / "g", n_per_group=2)
    assert (tmp_path / "g" / "keep.txt").read_text() == "mine"
