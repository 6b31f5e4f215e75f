"""Unit tests of segment-bg: enhancement steps, cross-correlation, metrics, Dice loss, U-Net + guided backprop."""

import math

import numpy as np
import pytest

from neurointerp.errors import InputError
from neurointerp.segment_bg import enhance as E
from neurointerp.segment_bg import position as P
from neurointerp.segment_bg.metrics import confusion, score_table, scores, segmentation_counts


# ---- enhancement steps (§4.3), hand-computed on tiny arrays ----------------------------------

def test_linear_expansion_hand_values():
    x = np.array([[0.0, 1.0], [2.0, 4.0]])
    np.testing.assert_allclose(E.linear_expansion(x), [[0.0, 63.75], [127.5, 255.0]])
    np.testing.assert_allclose(E.linear_expansion(np.array([[2.0, 3.0], [4.0, 6.0]]), top=4.0), [[0.0, 1.0], [2.0, 4.0]])
    np.testing.assert_array_equal(E.linear_expansion(np.full((2, 3), 7.0)), np.zeros((2, 3)))


def test_log_compression_hand_values():
    x = np.array([[0.0, math.e - 1.0], [math.e**2 - 1.0, 255.0]])
    np.testing.assert_allclose(E.log_compression(x), [[0.0, 1.0], [2.0, math.log(256.0)]])
    with pytest.raises(InputError, match="non-negative"):
        E.log_compression(np.array([[-1.0, 0.0]]))


def test_z_normalise_hand_values():
    z = E.z_normalise(np.array([[1.0, 2.0], [3.0, 4.0]]))
    sd = math.sqrt(1.25)  # population sd of 1, 2, 3, 4
    np.testing.assert_allclose(z, [[-1.5 / sd, -0.5 / sd], [0.5 / sd, 1.5 / sd]])
    assert abs(z.mean()) < 1e-12 and abs(z.std() - 1.0) < 1e-12
    np.testing.assert_array_equal(E.z_normalise(np.ones((3, 3))), np.zeros((3, 3)))


def test_threshold_eq1_hand_values():
    z = np.array([[2.0, 2.5], [1.5, 3.0], [0.0, 100.0]])
    expected = [[1.0, math.exp(-1.0)], [math.exp(-1.0), math.exp(-4.0)], [math.exp(-16.0), 0.0]]
    np.testing.assert_allclose(E.threshold(z), expected, atol=1e-300)
    # high values (artefacts) fall off again: f is not monotone
    assert E.threshold(np.array([[4.0]]))[0, 0] < E.threshold(np.array([[2.2]]))[0, 0]


def test_enhance_chains_the_steps_and_returns_each():
    g = np.array([[-3.0, 0.0], [1.0, 7.0]])
    steps = E.enhance(g, steps=True)
    mag = np.array([[3.0, 0.0], [1.0, 7.0]])
    exp = 255.0 * mag / 7.0
    comp = np.log1p(exp)
    z = (comp - comp.mean()) / comp.std()
    np.testing.assert_allclose(steps["magnitude"], mag)
    np.testing.assert_allclose(steps["expanded"], exp)
    np.testing.assert_allclose(steps["compressed"], comp)
    np.testing.assert_allclose(steps["zscore"], z)
    np.testing.assert_allclose(steps["enhanced"], np.exp(-(((z - 2.0) / 0.5) ** 2)))
    np.testing.assert_allclose(E.enhance(g), steps["enhanced"])


@pytest.mark.parametrize("fn", [E.linear_expansion, E.log_compression, E.z_normalise, E.threshold, E.enhance])
def test_enhancement_refuses_a_volume_where_a_slice_is_expected(fn):
    with pytest.raises(InputError, match="expected a 2D slice"):
        fn(np.ones((2, 3, 4)))


# ---- cross-correlation and mask positioning --------------------------------------------------

def test_cross_correlation_hand_values():
    img = np.array([[1.0, 2.0], [3.0, 4.0]])
    tpl = np.array([[0.0, 1.0], [0.0, 0.0]])
    c = P.cross_correlation(img, tpl)  # c[d] = sum_p img[p + d] tpl[p] = img[(0, 1) + d]
    expected = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [3.0, 4.0, 0.0]])
    np.testing.assert_allclose(c, expected, atol=1e-12)


def test_cross_correlation_matches_direct_sum():
    rng = np.random.default_rng(0)
    a, t = rng.random((5, 7)), rng.random((5, 7))
    c = P.cross_correlation(a, t)
    for dy in range(-4, 5):
        for dx in range(-6, 7):
            direct = sum(a[y + dy, x + dx] * t[y, x] for y in range(5) for x in range(7) if 0 <= y + dy < 5 and 0 <= x + dx < 7)
            assert abs(c[4 + dy, 6 + dx] - direct) < 1e-9


def test_shift_image_no_wraparound():
    a = np.arange(12.0).reshape(3, 4)
    s = P.shift_image(a, (1, -2))
    np.testing.assert_array_equal(s, [[0, 0, 0, 0], [2, 3, 0, 0], [6, 7, 0, 0]])
    np.testing.assert_array_equal(P.shift_image(a, (5, 0)), np.zeros((3, 4)))


def _disk(shape, centre, r):
    y, x = np.ogrid[: shape[0], : shape[1]]
    return ((y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= r**2).astype(float)


def test_position_mask_recovers_a_planted_shift_despite_an_artefact():
    shape = (40, 40)
    mask = _disk(shape, (20, 20), 9)
    ring = mask - _disk(shape, (20, 20), 7)  # "edges the network looks at"
    template = P.shape_template(mask, ring)
    enhanced = P.shift_image(ring, (3, -4)) + _disk(shape, (5, 33), 3)  # moved brain + bright blob
    positioned, shift, corr = P.position_mask(enhanced, template, mask, max_shift=8)
    assert shift == (3, -4)
    np.testing.assert_array_equal(positioned, P.shift_image(mask, (3, -4)).astype(np.uint8))
    assert corr.shape == (79, 79)
    # the search window is respected
    assert max(abs(v) for v in P.best_shift(corr, max_shift=2)) <= 2


def test_position_refuses_mismatched_or_3d_inputs():
    with pytest.raises(InputError, match="differ in shape"):
        P.cross_correlation(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(InputError, match="2D slice"):
        P.cross_correlation(np.ones((2, 4, 4)), np.ones((2, 4, 4)))


# ---- metrics (§4.4) ---------------------------------------------------------------------------

def test_confusion_and_scores_hand_values():
    pred = np.array([1, 1, 0, 0, 1, 0, 0, 0], bool)
    truth = np.array([1, 0, 1, 0, 1, 0, 0, 0], bool)
    c = confusion(pred, truth)
    assert c == {"tp": 2, "fp": 1, "tn": 4, "fn": 1}
    s = scores(**c)
    assert s["accuracy"] == pytest.approx(6 / 8)
    assert s["specificity"] == pytest.approx(4 / 5)
    assert s["sensitivity"] == pytest.approx(2 / 3)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["dice"] == pytest.approx(4 / 6)


def test_segmentation_counts_per_class_brain_and_mask_pooled():
    truth = np.array([[0, 1, 2], [3, 2, 0]])
    pred = np.array([[0, 1, 1], [3, 2, 2]])
    rows = segmentation_counts(pred, truth, pred_mask=pred > 0, true_mask=truth > 0)
    by = {r["class"]: r for r in rows}
    assert by["WM"]["tp"] == 1 and by["WM"]["fp"] == 1 and by["WM"]["fn"] == 0
    assert by["GM"]["tp"] == 1 and by["GM"]["fp"] == 1 and by["GM"]["fn"] == 1
    assert by["brain"] == {"class": "brain", "tp": 4, "fp": 1, "tn": 1, "fn": 0}
    per_animal = score_table([dict(r, animal=a) for a in ("a", "b") for r in rows])
    assert len(per_animal) == 2 * len(rows)  # grouped by animal and class
    table = score_table(rows + rows).set_index("class")
    assert table.loc["GM", "tp"] == 2  # pooled over the two copies
    assert table.loc["GM", "dice"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))


# ---- Dice loss, U-Net and guided backprop -----------------------------------------------------

def test_dice_loss_hand_value_and_perfect_prediction():
    import torch

    from neurointerp.segment_bg.losses import dice_loss, soft_dice

    labels = torch.tensor([[[0, 1], [1, 0]]])
    perfect = torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).float() * 50.0
    assert float(dice_loss(perfect, labels)) < 1e-6
    probs = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]]])
    onehot = torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).float()
    # per class: 2 * (0.5 * 2) + 1 over (2 + 2) + 1 = 3 / 5
    np.testing.assert_allclose(soft_dice(probs, onehot).numpy(), [0.6, 0.6], rtol=1e-6)


def test_unet_shapes_and_guided_backprop_hooks_its_relus():
    import torch

    from neurointerp.segment_bg.core import gradient_image, predict
    from neurointerp.segment_bg.unet import UNet2D

    torch.manual_seed(0)
    model = UNet2D(1, 4, base=8, depth=2).eval()
    x = np.random.default_rng(0).random((3, 13, 10)).astype(np.float32)  # not a multiple of 4: padded
    probs = predict(model, x)
    assert probs.shape == (3, 4, 13, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    g = gradient_image(model, x)
    assert g.shape == (3, 13, 10) and np.any(g != 0)
    # guided: differs from the plain input gradient of the same score
    xt = torch.from_numpy(np.pad(x, ((0, 0), (0, 3), (0, 2)))[:, None]).requires_grad_(True)
    model(xt)[:, 1:].sum().backward()
    plain = xt.grad[:, 0, :13, :10].numpy()
    assert not np.allclose(plain, g)
    with pytest.raises(InputError, match="stack of 2D slices"):
        predict(model, x[0])


def test_check_labels_refuses_unknown_classes():
    from neurointerp.segment_bg.train import check_labels

    assert check_labels(np.array([0, 1, 2, 3.0]), "x").dtype == np.uint8
    with pytest.raises(InputError, match="unknown classes 4, 7"):
        check_labels(np.array([0, 4, 7, 1]), "lab.nii.gz")
    with pytest.raises(InputError, match="non-integer"):
        check_labels(np.array([0, 1.5]), "lab.nii.gz")


def test_slice_map_nearest_reference_slice():
    from neurointerp.segment_bg.core import slice_map

    np.testing.assert_array_equal(slice_map(4, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(slice_map(2, 4), [1, 3])
    np.testing.assert_array_equal(slice_map(4, 2), [0, 0, 1, 1])
