"""The ε budget in native units, checked against a window this test computes itself, for every supported pixel type.

The oracle: |protected - original| <= ε/255 · (P99.5 - P0.5) of the case's intensities (numpy percentiles),
integer images change by whole levels no larger than the budget's floor, nothing but rounding is lost.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from oracles import live_protector, promised_budget

from umedprotect import io
from umedprotect.array_protection import protect_array
from umedprotect.phantoms import phantom_slice, phantom_volume

# (offset, span) of the test image per pixel type: inside the type's range, wide enough for several ε levels.
INTENSITIES = {
    "uint8": (0, 250),
    "int8": (-120, 240),
    "uint16": (100, 4000),
    "int16": (-1024, 3000),
    "uint32": (70_000, 9_000),
    "int32": (-50_000, 120_000),
    "uint64": (2**40, 5_000),
    "int64": (-(2**40), 7_000),
    "float32": (-1000.0, 2500.0),
    "float64": (0.0, 1.0),
}
EPSILONS = (1.0, 4.0, 16.0)


def test_every_supported_pixel_type_is_covered():
    supported = {sitk.GetArrayFromImage(sitk.Image(1, 1, pixel_id)).dtype.name for pixel_id in io.SUPPORTED_PIXEL_TYPES}
    assert supported == set(INTENSITIES)


def typed_image(dtype: str, shape=(64, 64), rng=0) -> tuple[np.ndarray, np.ndarray]:
    image, labels = phantom_slice(shape, n_lesions=2, rng=rng) if len(shape) == 2 else phantom_volume(shape, 2, rng=rng)
    unit = (image - image.min()) / (image.max() - image.min())
    offset, span = INTENSITIES[dtype]
    values = offset + unit.astype(np.float64) * span
    if np.issubdtype(np.dtype(dtype), np.integer):
        values = np.rint(values)
    return values.astype(dtype), labels


@pytest.fixture(scope="module")
def protector():
    return live_protector()


@pytest.mark.parametrize("epsilon", EPSILONS)
@pytest.mark.parametrize("dtype", sorted(INTENSITIES))
def test_change_stays_within_the_promised_budget_and_uses_it(protector, dtype, epsilon):
    image, labels = typed_image(dtype)
    result = protect_array(image, labels, protector, epsilon=epsilon, device="cpu")
    budget = promised_budget(image, epsilon)
    change = result.protected.astype(np.float64) - image.astype(np.float64)
    assert result.protected.dtype == image.dtype
    assert np.abs(change).max() <= budget * (1 + 1e-12)
    if np.issubdtype(image.dtype, np.integer):
        assert np.array_equal(change, np.rint(change))
        reachable = np.floor(budget)  # whole levels only
    else:
        reachable = budget
    assert np.abs(change).max() >= 0.9 * reachable  # the budget is used, not silently shrunk
    assert result.budget == pytest.approx(budget, rel=1e-12)


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "int32"])
@pytest.mark.parametrize("epsilon", [2.5, 8.0])
def test_integer_images_get_the_float_change_rounded_to_the_nearest_level_within_the_budget(protector, dtype, epsilon):
    """The same case as float64 gives the exact change; as integers it must be rint of it, capped at floor(budget)."""
    image, labels = typed_image(dtype)
    exact = protect_array(image.astype(np.float64), labels, protector, epsilon=epsilon, device="cpu")
    result = protect_array(image, labels, protector, epsilon=epsilon, device="cpu")
    step = np.floor(promised_budget(image, epsilon))
    expected = np.clip(np.rint(exact.protected - image), -step, step)
    expected = np.clip(image + expected, image.min(), image.max()) - image
    change = result.protected.astype(np.float64) - image.astype(np.float64)
    assert step >= 1
    assert np.abs(expected).max() == step  # the cap is reached: rounding up beyond it would show
    np.testing.assert_array_equal(change, expected)


def test_the_window_of_a_nearly_constant_image_falls_back_to_its_range(protector):
    """Fewer than 0.5 % of the voxels differ from the background: the percentile window is empty, use min/max."""
    _, labels = typed_image("float32", shape=(64, 64))
    image = np.full(labels.shape, 100.0, dtype=np.float32)
    image[0, :8], image[-1, :8] = 900.0, 0.0
    assert np.percentile(image, 0.5) == np.percentile(image, 99.5)
    budget = promised_budget(image, 8.0)
    assert budget == pytest.approx(8.0 / 255 * 900)
    result = protect_array(image, labels, protector, epsilon=8.0, device="cpu")
    change = np.abs(result.protected.astype(np.float64) - image)
    assert 0.9 * budget <= change.max() <= budget * (1 + 1e-12)


def test_a_volume_stays_within_the_budget_of_its_whole_window(protector):
    image, labels = typed_image("int16", shape=(6, 40, 40))
    result = protect_array(image, labels, protector, spacing=(3.0, 0.8, 0.8), epsilon=6.0, device="cpu")
    change = np.abs(result.protected.astype(np.float64) - image)
    assert 1 <= change.max() <= promised_budget(image, 6.0)


def test_protection_is_deterministic_with_live_generators(protector):
    image, labels = typed_image("int16", shape=(6, 40, 40))
    first = protect_array(image, labels, protector, spacing=(3.0, 0.8, 0.8), device="cpu")
    second = protect_array(image, labels, live_protector(), spacing=(3.0, 0.8, 0.8), device="cpu")
    np.testing.assert_array_equal(first.protected, second.protected)
    other = protect_array(image, labels, live_protector(seed=2), spacing=(3.0, 0.8, 0.8), device="cpu")
    assert not np.array_equal(first.protected, other.protected)


def slice_psnr_db(before: np.ndarray, after: np.ndarray, value_range: float) -> float:
    mse = np.mean((after.astype(np.float64) - before.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(value_range**2 / mse)


@pytest.mark.parametrize(
    "dtype, epsilon, lift_db, overshoot_db",
    [
        ("float32", 16.0, 4.0, 0.1),
        ("float64", 16.0, 4.0, 0.1),
        ("int16", 16.0, 4.0, 1.0),
        ("uint8", 16.0, 4.0, 1.0),
        ("uint8", 4.0, 12.0, None),  # a few levels scaled far down: rounding may zero a slice's change
    ],
)
def test_a_psnr_floor_holds_on_every_slice_and_scales_each_slice_uniformly(
    protector, dtype, epsilon, lift_db, overshoot_db
):
    """PSNRs computed here with the volume's range: each slice meets the floor, just, by one scale factor."""
    image, labels = typed_image(dtype, shape=(6, 40, 40))
    spacing = (3.0, 0.8, 0.8)
    free = protect_array(image, labels, protector, spacing=spacing, epsilon=epsilon, device="cpu")
    value_range = float(image.max()) - float(image.min())
    free_db = [slice_psnr_db(image[z], free.protected[z], value_range) for z in range(image.shape[0])]
    floor_db = min(free_db) + lift_db
    held = protect_array(image, labels, protector, spacing=spacing, epsilon=epsilon, min_psnr=floor_db, device="cpu")
    free_change = free.protected.astype(np.float64) - image
    held_change = held.protected.astype(np.float64) - image
    assert np.abs(held_change).max() <= promised_budget(image, epsilon)
    assert not held_change[free_change == 0].any()
    for z, before_db in enumerate(free_db):
        after_db = slice_psnr_db(image[z], held.protected[z], value_range)
        assert after_db >= floor_db
        if before_db < floor_db:
            assert overshoot_db is None or after_db <= floor_db + overshoot_db  # scaled just enough
            moved = free_change[z] != 0
            if np.issubdtype(image.dtype, np.integer):  # rounded: the scaled change still grows with the free one
                order = np.argsort(free_change[z][moved], kind="stable")
                assert (np.diff(held_change[z][moved][order]) >= 0).all()
            else:
                ratio = held_change[z][moved] / free_change[z][moved]
                np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-4)  # the pattern is kept, only smaller
        else:
            np.testing.assert_array_equal(held.protected[z], free.protected[z])
    assert held.metrics["change_scale"] < 1


def test_the_window_of_a_large_volume_matches_the_percentiles_of_all_its_voxels():
    """Large volumes get the exact window too (no sampling): the percentiles of every voxel."""
    from umedprotect.intensity import intensity_window

    rng = np.random.default_rng(3)
    volume = rng.gamma(2.0, 300.0, (40, 256, 256)).astype(np.float32) - 1000  # skewed, like CT
    lo, hi = np.percentile(volume.astype(np.float64), [0.5, 99.5])
    window = intensity_window(volume)
    assert (window.lo, window.hi) == (lo, hi)


@pytest.mark.parametrize(
    "dtype, value_range, expected",
    [
        ("int16", None, [0, 13, 17, 32, 40]),  # rint, capped at floor(3.5) = 3, kept in the image's own range
        ("int16", (-10, 50), [-3, 13, 17, 32, 43]),
        ("float64", None, [0.0, 13.5, 16.5, 32.4, 40.0]),  # capped at the budget, not dropped
        ("float64", (-10, 50), [-3.5, 13.5, 16.5, 32.4, 43.5]),
    ],
)
def test_apply_change_caps_each_change_at_the_budget_and_keeps_the_range(dtype, value_range, expected):
    from umedprotect.intensity import apply_change

    original = np.array([0, 10, 20, 30, 40], dtype=dtype)
    result = apply_change(original, np.array([-5.0, 7.6, -7.6, 2.4, 9.0]), 3.5, value_range)
    assert result.dtype == original.dtype
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-12)


def test_a_float32_change_beyond_the_budget_is_capped_at_the_budget_not_dropped():
    """The generators' float32 change is capped in float64: float32(0.1) > 0.1 would overshoot and be undone."""
    from umedprotect.intensity import apply_change

    result = apply_change(np.zeros(3), np.array([1.0, -1.0, 0.05], dtype=np.float32), 0.1, value_range=(-1.0, 1.0))
    np.testing.assert_array_equal(result, [0.1, -0.1, np.float64(np.float32(0.05))])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_change_follows_an_affine_rescaling_of_the_intensities(protector, dtype):
    """The generators see window units: scaling the intensities by 4 and shifting them scales the change by 4."""
    image, labels = typed_image(dtype)
    first = protect_array(image, labels, protector, device="cpu")
    rescaled = (image.astype(np.float64) * 4 + 1024).astype(dtype)
    second = protect_array(rescaled, labels, protector, device="cpu")
    first_change = first.protected.astype(np.float64) - image
    second_change = second.protected.astype(np.float64) - rescaled
    assert np.abs(first_change).max() > 0
    np.testing.assert_allclose(second_change, 4 * first_change, rtol=1e-3, atol=1e-3 * np.abs(first_change).max())


def test_a_volume_without_a_selected_label_comes_back_unchanged_with_infinite_psnrs(protector):
    image, labels = typed_image("int16", shape=(4, 32, 32))
    result = protect_array(image, labels, protector, spacing=(3.0, 0.8, 0.8), label_values=[99], device="cpu")
    assert result.protected.tobytes() == image.tobytes()
    assert not result.region.any() and not result.change.any()
    assert result.metrics["psnr_db_slice_min"] == result.metrics["psnr_db_slice_mean"] == float("inf")
    assert result.metrics["slices_protected"] == 0


def test_the_reported_window_budget_and_region_size_match_the_oracles(protector):
    from oracles import allowed_region

    image, labels = typed_image("int16", shape=(6, 40, 40))
    result = protect_array(image, labels, protector, spacing=(3.0, 0.8, 0.8), epsilon=5.0, device="cpu")
    assert result.metrics["window"] == pytest.approx(list(np.percentile(image.astype(np.float64), [0.5, 99.5])))
    assert result.metrics["budget_native"] == pytest.approx(promised_budget(image, 5.0), rel=1e-12)
    assert result.metrics["region_voxels"] == allowed_region(labels, protector.config.band_radius, axis=0).sum()


@pytest.mark.parametrize("labels_dtype", [bool, np.float32, np.float64, np.uint8])
def test_masks_of_booleans_integral_floats_or_integers_are_accepted_and_fractions_refused(protector, labels_dtype):
    from umedprotect.errors import InputError

    image, labels = typed_image("float32")
    mask = (labels != 0).astype(labels_dtype)
    assert protect_array(image, mask, protector, device="cpu").change.any()
    if np.issubdtype(labels_dtype, np.floating):
        with pytest.raises(InputError, match="non-integer"):
            protect_array(image, mask * 0.5, protector, device="cpu")
