"""Array-level protection: confinement, budget after dtype rounding, multi-label, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from umedprotect.array_protection import protect_array, slice_axis_for
from umedprotect.errors import Cancelled, InputError
from umedprotect.regions import contour_band


def test_outside_roi_and_band_is_bit_identical(phantom3d, random_protector):
    image, labels = phantom3d
    result = protect_array(image, labels, random_protector, spacing=(3.0, 0.8, 0.8))
    outside = ~result.region
    assert np.array_equal(result.protected[outside], image[outside])
    assert np.count_nonzero(result.protected != image) > 0.3 * np.count_nonzero(labels)
    # region is exactly ROI ∪ per-slice contour band
    expected = np.stack([(labels[z] != 0) | contour_band(labels[z], 3) for z in range(labels.shape[0])])
    assert np.array_equal(result.region, expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("epsilon", [1.0, 4.0, 8.0])
def test_budget_holds_after_rounding_to_input_dtype(phantom2d, random_protector, dtype, epsilon):
    image, labels = phantom2d
    if dtype == np.uint8:
        image = image / image.max() * 255
    image = image.astype(dtype)
    result = protect_array(image, labels, random_protector, epsilon=epsilon)
    assert result.protected.dtype == image.dtype and result.protected.shape == image.shape
    change = np.abs(result.protected.astype(np.float64) - image.astype(np.float64))
    assert change.max() <= result.budget
    assert result.budget == pytest.approx(epsilon / 255 * (result.window.hi - result.window.lo))
    assert np.count_nonzero(change) > 0


def test_multi_label_every_label_and_its_contour_is_protected(random_protector):
    image = np.random.default_rng(0).normal(100, 20, (64, 64)).astype(np.float32)
    labels = np.zeros((64, 64), np.uint8)
    labels[10:25, 10:25] = 1
    labels[35:55, 30:50] = 2
    labels[20:30, 45:60] = 7
    result = protect_array(image, labels, random_protector)
    for value in (1, 2, 7):
        assert np.count_nonzero(result.change[labels == value]) > 0.5 * np.count_nonzero(labels == value)
    only_two = protect_array(image, labels, random_protector, label_values=[2])
    assert np.array_equal(only_two.protected[labels == 1], image[labels == 1])
    assert np.count_nonzero(only_two.change[labels == 2]) > 0


def test_deterministic(phantom3d, random_protector):
    image, labels = phantom3d
    a = protect_array(image, labels, random_protector, spacing=(2, 1, 1))
    b = protect_array(image, labels, random_protector, spacing=(2, 1, 1))
    assert a.protected.tobytes() == b.protected.tobytes()


def test_slices_follow_the_coarsest_axis(random_protector):
    assert slice_axis_for((1.0, 3.0, 1.0), 3) == 1
    assert slice_axis_for(None, 2) is None
    rng = np.random.default_rng(1)
    image = rng.normal(0, 1, (20, 8, 20)).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[5:15, 3:5, 5:15] = 1  # lesion spans slices 3..4 along axis 1
    result = protect_array(image, labels, random_protector, spacing=(1.0, 4.0, 1.0))
    assert result.slice_axis == 1 and result.metrics["slices_protected"] == 2
    assert np.array_equal(result.protected[:, :3], image[:, :3])


def test_epsilon_and_band_radius_overrides(phantom2d, random_protector):
    image, labels = phantom2d
    small = protect_array(image, labels, random_protector, epsilon=1)
    wide = protect_array(image, labels, random_protector, band_radius=6)
    assert np.abs(small.change).max() <= small.budget < wide.budget
    assert wide.region.sum() > small.region.sum()
    with pytest.raises(InputError):
        protect_array(image, labels, random_protector, epsilon=0)


def test_empty_mask_changes_nothing(phantom2d, random_protector):
    image, _ = phantom2d
    result = protect_array(image, np.zeros(image.shape, np.uint8), random_protector)
    assert np.array_equal(result.protected, image) and result.metrics["slices_protected"] == 0


@pytest.mark.parametrize(
    "image, labels, message",
    [
        (np.ones((8, 8), np.float32), np.ones((8, 8), np.uint8), "constant"),
        (np.arange(64.0).reshape(8, 8), np.ones((8, 9), np.uint8), "does not match"),
        (np.full((8, 8), np.nan), np.ones((8, 8), np.uint8), "NaN"),
        (np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2), np.uint8), "dimensions"),
    ],
)
def test_bad_arrays_raise_input_error(image, labels, message, random_protector):
    with pytest.raises(InputError, match=message):
        protect_array(image, labels, random_protector)


def test_progress_and_cancel(phantom3d, random_protector):
    image, labels = phantom3d
    seen = []
    protect_array(image, labels, random_protector, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] and len(seen) > 1
    with pytest.raises(Cancelled):
        protect_array(image, labels, random_protector, cancel=lambda: True)


def test_metrics_match_reference_formulas(phantom2d, random_protector):
    from skimage.metrics import structural_similarity

    image, labels = phantom2d
    image = image.astype(np.float64)
    result = protect_array(image, labels, random_protector, epsilon=8)
    m = result.metrics
    rng_ = image.max() - image.min()
    mse = np.mean((result.protected - image) ** 2)
    assert m["psnr_db"] == pytest.approx(10 * np.log10(rng_**2 / mse))
    ref = structural_similarity(image, result.protected, data_range=rng_, win_size=7)
    assert m["ssim"] == pytest.approx(ref, abs=2e-3)
    assert m["max_abs_change"] == pytest.approx(np.abs(result.protected - image).max())


def test_generator_output_respects_regions_and_texture_bound(random_protector):
    x = torch.rand(2, 1, 32, 32)
    maps = torch.zeros(2, 4, 32, 32)
    maps[:, 1, 8:12, 8:24] = 1  # band
    maps[:, 2, 14:20, 10:20] = 0.5  # interior with texture bound 0.5
    labels = (maps[:, 1] + maps[:, 2] > 0).long()
    delta = random_protector(x, maps, labels, epsilon=4)
    outside = (maps[:, 1:2] == 0) & (maps[:, 2:3] == 0)
    assert torch.all(delta[outside] == 0)
    assert delta.abs().max() <= 4 / 255
    assert delta[:, :, 14:20, 10:20].abs().max() <= 0.5 * 4 / 255 + 1e-7


def test_label_codes_are_tiled_on_the_image_grid(random_protector):
    period = random_protector.config.code_period
    labels = torch.tensor([[[0, 1, 2, 17]]]).expand(1, period * 2, 4).contiguous()
    depth = torch.zeros(labels.shape)
    full = random_protector.code_field(labels, torch.tensor([[0, 0]]), depth)
    shifted = random_protector.code_field(labels[:, period:], torch.tensor([[period, 0]]), depth[:, period:])
    assert torch.equal(full[:, :, period:], shifted)
    assert torch.equal(full[:, :, :period], full[:, :, period:])  # periodic along rows
    codes = random_protector.codes
    assert torch.equal(full[0, 0, 0, 0], codes[0, 0, 0])  # background code
    assert torch.equal(full[0, 0, 0, 1], codes[1, 0, 1]) and torch.equal(
        full[0, 0, 0, 3], codes[2, 0, 3]
    )  # 17 wraps to code 2


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_min_psnr_scales_the_perturbation_down_to_the_floor_and_keeps_its_shape(phantom2d, random_protector, dtype):
    image, labels = phantom2d
    image = (image / image.max() * 1000).astype(dtype)
    full = protect_array(image, labels, random_protector, epsilon=8.0, min_psnr=20.0)  # below any floor it reaches
    floor = full.metrics["psnr_db"] + 6.0
    capped = protect_array(image, labels, random_protector, epsilon=8.0, min_psnr=floor)
    assert floor <= capped.metrics["psnr_db"] < floor + 1.0
    assert 0.4 < capped.metrics["change_scale"] < 0.55  # 6 dB = half the amplitude
    assert np.array_equal(capped.change, capped.protected.astype(np.float64) - image.astype(np.float64))
    assert np.all(np.sign(capped.change) * np.sign(full.change) >= 0)  # same direction, never more
    assert np.all(np.abs(capped.change) <= np.abs(full.change))
    assert capped.protected.dtype == image.dtype
    above = protect_array(image, labels, random_protector, epsilon=8.0, min_psnr=full.metrics["psnr_db"] - 1)
    assert np.array_equal(above.protected, full.protected) and above.metrics["change_scale"] == 1.0


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("min_psnr", 5, r"5 is out of range \[20, 120\] dB"),
        ("epsilon", 0, r"0 is out of range \(0, 64\]"),
        ("band_radius", 33, r"33 is out of range \[0, 32\] pixels"),
    ],
)
def test_options_out_of_range_are_input_errors_naming_the_option(phantom2d, random_protector, option, value, message):
    with pytest.raises(InputError, match=message) as error:
        protect_array(*phantom2d, random_protector, **{option: value})
    assert error.value.option == option


def test_volumes_report_the_psnr_of_their_changed_slices(phantom3d, random_protector):
    image, labels = phantom3d
    image = (image / image.max() * 1000).astype(np.int16)
    result = protect_array(image, labels, random_protector, spacing=(3.0, 1.0, 1.0), epsilon=8)
    m = result.metrics
    value_range = float(image.max()) - float(image.min())
    expected = [
        10 * np.log10(value_range**2 / np.mean((p.astype(np.float64) - o) ** 2))
        for o, p in zip(image, result.protected)
        if (p != o).any()
    ]
    assert len(expected) == m["slices_protected"] > 1
    assert m["psnr_db_slice_min"] == pytest.approx(min(expected)) and m["psnr_db_slice_mean"] == pytest.approx(
        np.mean(expected)
    )
    assert m["psnr_db_slice_min"] < m["psnr_db"]  # the volume's PSNR also counts its unchanged slices
    assert (
        "psnr_db_slice_min" not in protect_array(image[4], labels[4], random_protector).metrics
    )  # 2D: the image is the slice


def test_min_psnr_holds_every_slice_of_a_volume(phantom3d, random_protector):
    from umedprotect.metrics import slice_psnrs

    image, labels = phantom3d
    image = (image / image.max() * 1000).astype(np.int16)
    full = protect_array(image, labels, random_protector, spacing=(3.0, 1.0, 1.0), epsilon=8)
    before = slice_psnrs(image, full.protected, axis=0)
    floor = (min(before) + max(before)) / 2
    capped = protect_array(image, labels, random_protector, spacing=(3.0, 1.0, 1.0), epsilon=8, min_psnr=floor)
    after = slice_psnrs(image, capped.protected, axis=0)
    assert min(after) >= floor > min(before) and capped.metrics["psnr_db_slice_min"] == pytest.approx(min(after))
    assert capped.metrics["change_scale"] < 1 and capped.metrics["psnr_db"] > full.metrics["psnr_db"]
    changed = [k for k in range(image.shape[0]) if (full.protected[k] != image[k]).any()]
    kept = [k for k, q in zip(changed, before) if q > floor]
    assert kept and all(np.array_equal(capped.protected[k], full.protected[k]) for k in kept)  # no need to scale them
    assert np.all(np.abs(capped.change) <= np.abs(full.change))


def test_a_crop_is_clipped_to_the_whole_images_range_not_its_own(random_protector):
    image = np.full((96, 96), 100, np.int16)
    image[2, 2] = 2000  # the image's maximum, far from the ROI
    image[40:56, 40:56] = 1000  # the ROI is the brightest tissue of its crop
    labels = np.zeros(image.shape, np.uint8)
    labels[40:56, 40:56] = 1
    result = protect_array(image, labels, random_protector, epsilon=8, min_psnr=20)
    roi = labels > 0
    assert (result.change[roi] > 0).any()  # brighter than the crop's maximum, within the image's range
    assert result.protected.max() <= 2000 and np.abs(result.change).max() <= result.budget


def test_generators_with_zero_heads_are_not_run_at_inference_and_change_nothing(random_protector):
    """The bundled protector's generators output zero: inference skips them, training still runs them."""
    from umedprotect.protector import _generate

    calls = []
    random_protector.contour.register_forward_hook(lambda *_: calls.append("run"))
    inputs = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        skipped = _generate(random_protector.contour, inputs)
    assert calls == [] and torch.equal(skipped, random_protector.contour(inputs)) and calls == ["run"]
    calls.clear()
    _generate(random_protector.contour, inputs)  # gradients on: the heads must learn
    assert calls == ["run"]
    with torch.no_grad():
        random_protector.contour.head.bias.fill_(0.1)
        _generate(random_protector.contour, inputs)
    assert calls == ["run", "run"]
