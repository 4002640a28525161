"""Confinement: only ROI ∪ contour band may change, checked against a region this test builds itself.

The oracle region comes from Euclidean distance transforms (see ``oracles.band_2d``), not from
``umedprotect.regions``; the protectors have live (random, seeded) generator heads.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracles import allowed_region, band_2d, live_protector, promised_budget
from scipy import ndimage

from umedprotect.array_protection import protect_array
from umedprotect.phantoms import phantom_slice, phantom_volume
from umedprotect.protector import Protector


@pytest.fixture(scope="module")
def protector():
    return live_protector()


def changed(result, image) -> np.ndarray:
    return result.protected.astype(np.float64) != image.astype(np.float64)


@pytest.mark.parametrize("radius", [0, 1, 3, 6])
def test_a_slice_changes_inside_its_roi_and_contour_band_only(protector, radius):
    image, labels = phantom_slice((80, 72), n_lesions=3, rng=4)
    result = protect_array(image, labels, protector, band_radius=radius, device="cpu")
    allowed = allowed_region(labels, radius, axis=None)
    moved = changed(result, image)
    assert not moved[~allowed].any()
    assert moved[labels != 0].mean() > 0.9  # the ROI is protected
    if radius:
        assert moved[allowed & (labels == 0)].mean() > 0.5  # and so is the band outside it
    np.testing.assert_array_equal(result.region, allowed)


@pytest.mark.parametrize("spacing, axis", [((3.0, 0.8, 0.8), 0), ((0.8, 0.8, 3.0), 2), ((0.7, 2.5, 0.7), 1)])
def test_a_volume_is_confined_slice_by_slice_along_its_coarsest_axis(protector, spacing, axis):
    image, labels = phantom_volume((12, 40, 36), n_lesions=2, rng=2)
    result = protect_array(image, labels, protector, spacing=spacing, band_radius=3, device="cpu")
    allowed = allowed_region(labels, 3, axis=axis)
    moved = changed(result, image)
    assert result.slice_axis == axis
    assert not moved[~allowed].any()
    assert moved[allowed].mean() > 0.5
    np.testing.assert_array_equal(result.region, allowed)


def test_selected_labels_confine_the_change_to_their_own_region(protector):
    image, labels = phantom_slice((80, 80), n_lesions=3, rng=5)
    values = [int(v) for v in np.unique(labels) if v]
    assert len(values) >= 2
    chosen = values[:1]
    result = protect_array(image, labels, protector, band_radius=2, label_values=chosen, device="cpu")
    allowed = allowed_region(labels, 2, axis=None, label_values=chosen)
    moved = changed(result, image)
    assert not moved[~allowed].any()
    assert moved[labels == chosen[0]].mean() > 0.9
    assert allowed.sum() < allowed_region(labels, 2, axis=None).sum()


def test_untouched_voxels_are_bit_identical_even_for_float_images(protector):
    image, labels = phantom_slice((64, 64), n_lesions=2, rng=6)
    image = (image.astype(np.float64) * np.pi).astype(np.float32)
    result = protect_array(image, labels, protector, band_radius=3, device="cpu")
    outside = ~allowed_region(labels, 3, axis=None)
    assert result.protected[outside].tobytes() == image[outside].tobytes()


def test_live_generators_change_the_result_of_the_fixed_pattern(protector):
    """The fixed code pattern alone (zero heads) differs from what live generators make: they are really used."""
    image, labels = phantom_slice((64, 64), n_lesions=2, rng=7)
    torch.manual_seed(1)
    fixed = protect_array(image, labels, Protector().eval(), device="cpu")
    live = protect_array(image, labels, protector, device="cpu")
    assert not np.array_equal(fixed.protected, live.protected)
    budget = promised_budget(image, protector.config.epsilon)
    assert np.abs(live.protected.astype(np.float64) - image).max() <= budget * (1 + 1e-12)


@pytest.mark.parametrize("radius", [1, 2, 5])
def test_the_contour_band_the_generators_see_is_the_distance_band(radius):
    from umedprotect.regions import contour_band

    _, labels = phantom_slice((72, 64), n_lesions=3, rng=8)
    labels[30:40, 0:6] = 1  # a label touching the image border
    np.testing.assert_array_equal(contour_band(labels, radius), band_2d(labels, radius))


def test_a_fitted_protector_keeps_the_promises_and_protects_differently_from_its_start():
    from umedprotect.fitting import FitSettings, fit_protector
    from umedprotect.protector import ProtectorConfig
    from umedprotect.slices import case_slices

    samples = []
    for k in range(3):
        samples += case_slices(*phantom_slice((48, 48), 1, k), None, f"case{k}")
    config = ProtectorConfig(base_channels=4, levels=2, epsilon=6.0)
    torch.manual_seed(0)
    unfitted = Protector(config).eval()
    settings = FitSettings(steps=4, batch_size=2, patch_size=32, min_steps=2, surrogate_channels=4, device="cpu")
    fitted, _ = fit_protector(samples, config, settings)
    image, labels = phantom_slice((64, 64), n_lesions=2, rng=9)
    before = protect_array(image, labels, unfitted, device="cpu")
    after = protect_array(image, labels, fitted.eval(), device="cpu")
    change = after.protected.astype(np.float64) - image
    assert not np.array_equal(after.protected, before.protected)
    assert not change[~allowed_region(labels, config.band_radius, axis=None)].any()
    assert 0.5 * promised_budget(image, 6.0) <= np.abs(change).max() <= promised_budget(image, 6.0) * (1 + 1e-12)


@pytest.mark.parametrize("margin", [None, 0, 2, 50])
def test_the_crop_around_the_roi_is_its_bounding_box_grown_by_the_margin(margin):
    from umedprotect.regions import bounding_box

    mask = np.zeros((7, 30, 40), dtype=bool)
    mask[2, 5, 12] = mask[4, 20, 31] = True
    grow = margin or 0
    expected = tuple(
        slice(max(lo - grow, 0), min(hi + grow + 1, size)) for lo, hi, size in [(2, 4, 7), (5, 20, 30), (12, 31, 40)]
    )
    assert (bounding_box(mask) if margin is None else bounding_box(mask, margin)) == expected
    assert bounding_box(np.zeros((3, 3), dtype=bool), 1) is None


def texture_oracle(image: np.ndarray, interior: np.ndarray, floor: float, window: int) -> np.ndarray:
    """Each pixel's standard deviation over its window (mirrored at the border), divided by the 90th percentile
    of those inside the interior, clipped to [floor, 1] there; zero elsewhere."""
    from numpy.lib.stride_tricks import sliding_window_view

    half = window // 2
    deviation = sliding_window_view(np.pad(image, half, mode="symmetric"), (window, window)).std(axis=(-2, -1))
    expected = np.zeros(image.shape)
    expected[interior] = np.clip(deviation[interior] / np.percentile(deviation[interior], 90), floor, 1.0)
    return expected


def textured_slice():
    image, labels = phantom_slice((48, 40), n_lesions=2, rng=10)
    return image.astype(np.float64) / 100 + np.linspace(0, 1, 40), labels  # a gradient: non-zero mean everywhere


@pytest.mark.parametrize("floor, window", [(0.25, 5), (0.5, 3)])
def test_the_texture_bound_is_the_local_deviation_relative_to_the_interiors_90th_percentile(floor, window):
    from umedprotect.regions import texture_bound

    image, labels = textured_slice()
    interior = (labels != 0) & ~band_2d(labels, 2)
    bound = texture_bound(image, interior, floor, window)
    np.testing.assert_allclose(bound, texture_oracle(image, interior, floor, window), atol=1e-5)
    assert (bound[interior] == 1).any() and (bound[interior] < 1).any()
    flat = texture_bound(np.ones_like(image), interior, floor, window)
    np.testing.assert_array_equal(flat, np.where(interior, 1.0, 0.0))  # no texture anywhere: the full budget


def test_the_maps_the_generators_see_are_roi_band_texture_depth_and_band_owner():
    from umedprotect.regions import region_maps

    image, labels = textured_slice()
    roi, band, texture, depth, owner = region_maps(image, labels, band_radius=2, texture_floor=0.4, texture_window=3)
    np.testing.assert_array_equal(roi, labels != 0)
    np.testing.assert_array_equal(band, band_2d(labels, 2))
    interior = (labels != 0) & ~band_2d(labels, 2)
    np.testing.assert_allclose(texture, texture_oracle(image, interior, 0.4, 3), atol=1e-5)
    expected_depth = np.zeros(labels.shape)
    for value in np.unique(labels[labels != 0]):
        region = labels == value
        expected_depth[region] = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1][region]
    np.testing.assert_allclose(depth, expected_depth, atol=1e-5)
    values = [v for v in np.unique(labels) if v != 0]
    to_edge = np.stack(  # each pixel's distance to each label's edge, from inside or outside
        [
            np.where(
                labels == v, ndimage.distance_transform_edt(labels == v), ndimage.distance_transform_edt(labels != v)
            )
            for v in values
        ]
    )
    on_band = band > 0
    assert not owner[~on_band].any() and set(np.unique(owner[on_band])) <= set(values)
    owned = np.take_along_axis(to_edge, np.searchsorted(values, owner)[None].clip(0, len(values) - 1), 0)[0]
    assert (owned[on_band] <= to_edge.min(axis=0)[on_band] + 1).all()  # the owner's edge is (one of) the nearest
