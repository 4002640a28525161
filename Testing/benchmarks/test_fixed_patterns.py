"""The positive-control datasets of benchmarks/fixed_patterns.py: within budget, ROI only, labels untouched."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import write_nnunet_dataset

from benchmarks import fixed_patterns
from umedprotect.intensity import intensity_window


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.mark.parametrize("name", fixed_patterns.PATTERNS)
def test_pattern_copies_change_training_images_within_budget_only_where_stated(name, tmp_path):
    source = write_nnunet_dataset(tmp_path / "clean", n_train=2, n_test=1, shape=(3, 32, 32), n_lesions=1)
    assert fixed_patterns.main([str(source), str(tmp_path / "out"), "--patterns", name]) == 0
    out = tmp_path / "out" / name
    for image_path in sorted((source / "imagesTr").iterdir()):
        before, after = _array(image_path), _array(out / "imagesTr" / image_path.name)
        labels = _array(source / "labelsTr" / image_path.name.replace("_0000", ""))
        change = after.astype(np.float64) - before
        assert np.abs(change).max() <= intensity_window(before).budget(4.0)
        if name != "sparse-blobs":  # it leaves about half the ROI unchanged (a small ROI: maybe all)
            assert np.abs(change[labels > 0]).max() > 0  # the ROI is changed
        if name not in ("dim", "flat-dim", "dim-blobs", "dim-rings", "rings-out1", "rings-out3"):
            assert not change[labels == 0].any()  # nothing outside the ROI
        assert (_array(out / "labelsTr" / image_path.name.replace("_0000", "")) == labels).all()
    for test_image in (source / "imagesTs").iterdir():
        assert test_image.read_bytes() == (out / "imagesTs" / test_image.name).read_bytes()


def test_dim_lowers_the_roi_and_raises_a_ring_around_it():
    labels = np.zeros((1, 16, 16), np.uint8)
    labels[0, 6:10, 6:10] = 1
    unit = fixed_patterns.pattern("dim", labels, np.zeros(labels.shape))
    assert (unit[labels > 0] == -1).all()
    assert unit[0, 3, 8] == 1 and unit[0, 2, 8] == 0  # three pixels out, not four
    assert unit[:, 0].sum() == 0


def test_dim_rings_are_the_rings_at_half_amplitude_on_a_roi_lowered_by_half_the_budget():
    labels = np.zeros((1, 24, 24), np.uint8)
    labels[0, 4:20, 4:20] = 1
    image = np.zeros(labels.shape)
    unit = fixed_patterns.pattern("dim-rings", labels, image)
    rings = fixed_patterns.pattern("rings", labels, image)
    roi = labels > 0
    assert np.allclose(unit[roi], 0.5 * rings[roi] - 0.5) and unit[roi].max() <= 0 and unit[roi].min() < -0.9
    assert unit[0, 1, 12] == 1 and unit[0, 0, 12] == 0  # dim's ring, three pixels out


def test_flat_dim_pulls_the_roi_to_one_tone_below_its_mean():
    labels = np.zeros((1, 16, 16), np.uint8)
    labels[0, 4:12, 4:12] = 1
    image = np.random.default_rng(0).normal(10.0, 0.05, labels.shape)  # budget units
    unit = fixed_patterns.pattern("flat-dim", labels, image)
    flattened = (image + unit)[labels > 0]
    assert flattened.std() < 1e-9  # within the budget everywhere: one tone
    assert abs(flattened.mean() - (image[labels > 0].mean() - 0.75)) < 1e-6
    assert unit[0, 2, 8] == 1 and unit[0, 0, 8] == 0


def test_soft_blobs_are_the_blobs_less_saturated():
    labels = np.ones((1, 64, 64), np.uint8)
    hard = fixed_patterns.pattern("blobs", labels, np.zeros(labels.shape))
    soft = fixed_patterns.pattern("soft-blobs", labels, np.zeros(labels.shape))
    assert (np.sign(soft) == np.sign(hard)).all()
    assert (np.abs(soft) <= np.abs(hard)).all()
    assert (soft**2).mean() < 0.6 * (hard**2).mean()  # about half the energy


def test_swap_blobs_replace_the_roi_texture_within_the_budget():
    labels = np.zeros((1, 32, 32), np.uint8)
    labels[0, 8:24, 8:24] = 1
    rng = np.random.default_rng(0)
    image = rng.normal(10.0, 0.05, labels.shape)  # budget units: texture well inside the budget
    unit = fixed_patterns.pattern("swap-blobs", labels, image)
    roi = labels > 0
    blobs = fixed_patterns.blob_field(labels.shape[-2:])[None]
    reachable = roi & (np.abs(image[roi].mean() + blobs - image) <= 1.0)
    assert reachable.sum() > 0.8 * roi.sum()
    np.testing.assert_allclose((image + unit)[reachable], (image[roi].mean() + blobs)[reachable])
    assert np.abs(unit).max() <= 1.0 and not unit[~roi].any()


def test_sparse_blobs_leave_the_weak_band_pass_values_unchanged():
    labels = np.ones((1, 64, 64), np.uint8)
    z = fixed_patterns.band_noise(labels.shape[-2:])
    unit = fixed_patterns.pattern("sparse-blobs", labels, np.zeros(labels.shape))[0]
    weak = np.abs(z) <= fixed_patterns.SPARSE_THRESHOLD
    assert not unit[weak].any() and (np.sign(unit[~weak]) == np.sign(z[~weak])).all()
    assert 0.3 < weak.mean() < 0.7


def test_stretch_moves_each_roi_pixel_away_from_the_roi_mean():
    labels = np.zeros((1, 32, 32), np.uint8)
    labels[0, 8:24, 8:24] = 1
    image = np.random.default_rng(0).normal(10.0, 0.5, labels.shape)
    unit = fixed_patterns.pattern("stretch", labels, image)
    roi = labels > 0
    deviation = image[roi] - image[roi].mean()
    assert (np.sign(unit[roi]) == np.sign(deviation)).all()
    assert (image + unit)[roi].std() > 2 * image[roi].std()
    assert not unit[~roi].any()


def test_rings_alternate_with_the_distance_to_the_roi_edge():
    labels = np.zeros((1, 32, 32), np.uint8)
    labels[0, 4:28, 4:28] = 1
    unit = fixed_patterns.pattern("rings", labels, np.zeros(labels.shape))[0]
    half = int(fixed_patterns.RING_PERIOD / 2)
    row = unit[16, 4:16]  # from the edge to the centre
    expected = np.where(np.arange(len(row)) // half % 2 == 0, 1.0, -1.0)  # one band of each sign per period
    assert (np.sign(row) == expected).all() and (np.abs(row) > 0.5).all()
    np.testing.assert_allclose(unit, unit.T)  # follows the square's shape: symmetric
    assert not unit[labels[0] == 0].any()


def test_ring_variants_change_period_phase_and_reach_outside_the_roi():
    labels = np.zeros((1, 32, 32), np.uint8)
    labels[0, 8:24, 8:24] = 1

    def unit(name):
        return fixed_patterns.pattern(name, labels, np.zeros(labels.shape))[0]

    def row(name):  # six pixels outside, then edge to centre
        return np.sign(unit(name)[16, 2:16])

    np.testing.assert_array_equal(row("rings-dark"), -row("rings"))
    assert list(row("rings8")[6:]) == [1] * 4 + [-1] * 4
    depth = np.arange(1, 9)  # of row 16's pixels from the left edge to the centre
    np.testing.assert_allclose(unit("rings5")[16, 8:16], np.tanh(3 * np.sin(2 * np.pi * (depth - 0.5) / 5)), atol=1e-12)
    assert list(row("rings-out3")[:6]) == [0, 0, 0, -1, -1, -1] and list(row("rings-out1")[:6]) == [0] * 5 + [-1]
    assert list(row("rim")) == [0] * 6 + [1] * 3 + [0] * 5
    assert list(row("rim-pair")) == [0] * 6 + [1] * 3 + [-1] * 3 + [0] * 2
    edge, rings = unit("rings-edge")[16, 8:16], unit("rings")[16, 8:16]  # full first period, 0.6 below it
    np.testing.assert_allclose(edge, rings * np.where(depth > fixed_patterns.RING_PERIOD, 0.6, 1.0), atol=1e-12)


def test_fine_blobs_are_smaller_than_the_blobs():
    labels = np.ones((1, 128, 128), np.uint8)

    def crossings(name):
        pattern = fixed_patterns.pattern(name, labels, np.zeros(labels.shape))[0]
        return (np.diff(np.sign(pattern), axis=1) != 0).sum()

    assert crossings("blobs-fine") > 1.3 * crossings("blobs") > 1.3**2 * crossings("blobs-large")
