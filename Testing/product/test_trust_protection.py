"""Trust in the protection itself: the numpy codes equal the torch module for any codes (fitted ones too), and
``protect_array`` picks, scales and reports what it says.

Small synthetic cases only; each test states the behaviour it holds, so a broken line of
``codes.py``, ``array_protection.py`` or ``protector.py`` fails one of them.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from umedprotect.codes import CodePerturbation, code_field
from umedprotect.protector import Protector, as_protector_file
from umedprotect.protector_file import CODE_INITS, GENERATOR_HEADS, ProtectorConfig


def _labels(shape=(2, 14, 18), seed=0) -> np.ndarray:
    """Labels 0..9 in blocks: more labels than codes, so label values wrap around."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int64)
    for b in range(shape[0]):
        for value in range(1, 10):
            r, c = rng.integers(0, shape[1] - 4), rng.integers(0, shape[2] - 4)
            labels[b, r : r + 4, c : c + 4] = value
    return labels


@pytest.mark.parametrize("code_init", CODE_INITS)
def test_numpy_code_field_equals_the_modules_for_any_codes_labels_origins_and_depths(code_init):
    """Fitted codes are arbitrary (the background's too); labels wrap around the code count; depths are fractional."""
    config = ProtectorConfig(code_init=code_init, code_classes=5, code_period=6, base_channels=4, levels=2)
    module = Protector(config)
    torch.manual_seed(1)
    with torch.no_grad():
        module.codes.copy_(torch.randn(module.codes.shape))
    codes = module.codes.detach().numpy()
    assert codes.shape == config.code_shape() and codes[0].any()
    labels = _labels()
    rng = np.random.default_rng(2)
    depth = (rng.random(labels.shape) * 20).astype(np.float32)
    owner = np.where(rng.random(labels.shape) < 0.5, rng.integers(0, 10, labels.shape), 0).astype(np.float32)
    origin = np.array([[3, 11], [7, 2]])
    with torch.no_grad():
        expected = module.code_field(*(torch.from_numpy(a) for a in (labels, origin, depth, owner))).numpy()
        without_owner = module.code_field(*(torch.from_numpy(a) for a in (labels, origin, depth))).numpy()
    found = code_field(codes, code_init, labels, origin, depth, owner)
    assert found.shape == (2, 1, 14, 18)
    np.testing.assert_allclose(found, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(code_field(codes, code_init, labels, origin, depth), without_owner, rtol=0, atol=1e-6)


def test_label_values_wrap_around_the_codes_and_the_background_keeps_its_own():
    codes = np.arange(4 * 2 * 2, dtype=np.float32).reshape(4, 2, 2)  # background + 3 label codes
    labels = np.array([[[0, 1, 2, 3, 4, 5, 6, 7]]])
    field = code_field(codes, "normal", labels, np.zeros((1, 2), np.int64), np.zeros(labels.shape, np.float32))
    np.testing.assert_array_equal(field[0, 0, 0], codes[[0, 1, 2, 3, 1, 2, 3, 1], 0, [0, 1, 0, 1, 0, 1, 0, 1]])


@pytest.mark.parametrize("code_init", ["fill", "dots"])
def test_fill_and_dot_codes_are_negated_only_on_the_band_outside_the_labels(code_init):
    codes = np.ones((3, 2, 2), np.float32) * np.array([5, 1, 2], np.float32)[:, None, None]
    labels = np.array([[[0, 0, 1, 2, 0, 0]]])
    owner = np.array([[[0, 1, 1, 2, 2, 0]]], np.float32)  # the band: owned pixels, inside and outside
    field = code_field(codes, code_init, labels, np.zeros((1, 2), np.int64), np.zeros(labels.shape, np.float32), owner)
    np.testing.assert_array_equal(field[0, 0, 0], [5, -1, 1, 2, -2, 5])


def test_rings_interpolate_their_profile_linearly_and_periodically_over_the_depth():
    codes = np.array([[0, 0, 0, 0], [1, 2, 4, 8]], np.float32)
    labels = np.ones((1, 1, 6), np.int64)
    depth = np.array([[[0.0, 0.25, 1.5, 3.0, 3.5, 7.75]]], np.float32)
    field = code_field(codes, "rings", labels, np.zeros((1, 2), np.int64), depth)
    np.testing.assert_allclose(field[0, 0, 0], [1, 1.25, 3, 8, 4.5, 8 * 0.25 + 0.75 * 1], rtol=1e-6)


def test_code_perturbation_puts_the_codes_tanh_on_the_band_and_under_the_texture_bound():
    config = ProtectorConfig(code_init="normal", code_classes=3, code_period=2)
    codes = np.array([[[0.0, 0.0], [0.0, 0.0]], [[0.5, -1.0], [2.0, 0.25]], [[-0.5, 1.0], [1.5, -2.0]]], np.float32)
    labels = np.array([[[1, 1, 2, 2]], [[2, 0, 1, 1]]])
    maps = np.zeros((2, 5, 1, 4), np.float32)
    maps[:, 1] = [[[1, 0, 0.5, 0]], [[0, 1, 1, 0]]]  # band
    maps[:, 2] = [[[0, 1, 0.5, 0.25]], [[1, 0, 0, 0]]]  # texture bound
    change = CodePerturbation(config, codes)(np.zeros(labels.shape, np.float32), maps, labels, (1, 1), 51.0)
    code = code_field(codes, "normal", labels, np.array([[1, 1], [1, 1]]), maps[:, 3], maps[:, 4])[:, 0]
    np.testing.assert_allclose(change, 0.2 * np.tanh(code) * (maps[:, 1] + maps[:, 2]), rtol=1e-6)
    assert change.shape == (2, 1, 4) and change.dtype == np.float32
    assert change[0, 0, 3] == pytest.approx(0.2 * 0.25 * np.tanh(1.5), rel=1e-6)  # origin (1, 1): row 1, column 0


def test_as_protector_file_gives_the_modules_float32_weights_on_the_cpu():
    module = Protector(ProtectorConfig(base_channels=4, levels=2))
    protector_file = as_protector_file(module, "mine")
    assert protector_file.source == "mine" and protector_file.config is module.config
    state = module.state_dict()
    assert sorted(protector_file.weights) == sorted(state)
    for key, value in protector_file.weights.items():
        assert value.dtype == np.float32 and np.array_equal(value, state[key].numpy())
    assert as_protector_file(module).source == "given"


def test_blob_codes_are_the_difference_of_gaussians_band_of_the_noise_scaled_per_label():
    from umedprotect.protector import BLOB_GAIN, BLOB_SIGMAS, blob_codes

    noise = np.random.default_rng(3).normal(size=(3, 8, 8)).astype(np.float32)
    noise[2] *= 5  # each label scaled on its own
    freq = np.fft.fftfreq(8)
    radius2 = freq[:, None] ** 2 + freq[None, :] ** 2
    gaussian = [np.exp(-2 * (np.pi * sigma) ** 2 * radius2) for sigma in BLOB_SIGMAS]  # Fourier transforms
    band = np.fft.ifft2(np.fft.fft2(noise) * (gaussian[0] - gaussian[1])).real
    expected = BLOB_GAIN * band / band.std(axis=(1, 2), ddof=1, keepdims=True)
    expected[0] = 0
    np.testing.assert_allclose(blob_codes(torch.from_numpy(noise)).numpy(), expected, rtol=0, atol=1e-5)


def test_ring_codes_are_a_sine_from_half_a_pixel_outside_the_edge():
    from umedprotect.protector import ring_codes

    profile = 3 * np.array([-0.5, 0.5, 1, 0.5, -0.5, -1])  # 3 sin(2 pi (k - 1/2) / 6)
    np.testing.assert_allclose(ring_codes(3, 6).numpy(), [np.zeros(6), profile, profile], atol=1e-6)


def test_fill_codes_are_checkerboard_row_and_column_stripes_of_half_period_blocks():
    from umedprotect.protector import fill_codes

    block = np.array([1, 1, -1, -1])  # period 4: blocks of 2 pixels
    checker, rows, cols = np.outer(block, block), np.repeat(block[:, None], 4, 1), np.repeat(block[None], 4, 0)
    np.testing.assert_array_equal(fill_codes(5, 4).numpy(), 3 * np.stack([0 * checker, checker, rows, cols, checker]))
    np.testing.assert_array_equal(fill_codes(2, 2).numpy(), 3 * np.array([[[0, 0], [0, 0]], [[1, -1], [-1, 1]]]))
    odd = fill_codes(4, 5).numpy()  # an odd period: blocks of 2, 2 and 1 pixels
    block = 3 * np.array([1, 1, -1, -1, 1])
    np.testing.assert_array_equal(odd[1], np.outer(block, block) / 3)
    np.testing.assert_array_equal(odd[2], np.repeat(block[:, None], 5, 1))
    np.testing.assert_array_equal(odd[3], np.repeat(block[None], 5, 0))
    np.testing.assert_array_equal(fill_codes(2, 1).numpy(), [[[0]], [[3]]])


def test_dot_codes_are_cosine_lattices_rows_and_columns_sampled_on_the_pixel_grid():
    from umedprotect.protector import dot_codes

    wave = np.array([1, 0, -1, 0])  # period 4: every other row or column, alternating in sign, zero between
    lattice, rows, cols = np.outer(wave, wave), np.repeat(wave[:, None], 4, 1), np.repeat(wave[None], 4, 0)
    np.testing.assert_array_equal(dot_codes(5, 4).numpy(), 3 * np.stack([0 * lattice, lattice, rows, cols, lattice]))
    six = 3 * np.cos(2 * np.pi * np.arange(6) / 6)  # another period: the cosine's samples (+-1, +-1/2)
    np.testing.assert_allclose(dot_codes(3, 6).numpy()[1], np.outer(six, six) / 3, atol=1e-5)
    np.testing.assert_allclose(dot_codes(3, 6).numpy()[2], np.repeat(six[:, None], 6, 1), atol=1e-5)


def test_a_module_keeps_its_config_and_starts_from_its_codes_alone():
    config = ProtectorConfig(code_init="blobs", code_classes=3, code_period=4, base_channels=4, levels=2, cdc_theta=0.3)
    module = Protector(config)
    assert module.config is config and module.generators_silent and module.codes.shape == (3, 4, 4)
    assert Protector().config == ProtectorConfig()


def _crops(batch=3, size=24, seed=0):
    from umedprotect.regions import region_maps

    rng = np.random.default_rng(seed)
    labels = np.zeros((batch, size, size), np.int64)
    labels[:, 6:18, 5:17] = 1
    labels[1, 8:12, 8:12] = 2
    image = rng.random((batch, size, size)).astype(np.float32)
    maps = np.stack([region_maps(i, lab, 2, 0.5) for i, lab in zip(image, labels)])
    return image, maps, labels


@pytest.mark.parametrize("live", ["weight", "bias"])
def test_a_generator_head_with_only_its_weight_or_only_its_bias_set_changes_the_output(live):
    image, maps, labels = _crops()
    module = Protector(ProtectorConfig(base_channels=4, levels=2)).eval()
    silent = module.perturb_crops(image, maps, labels, (0, 0), 8.0)
    with torch.no_grad():
        getattr(module.contour.head, live).fill_(0.7)
    assert not module.generators_silent
    assert np.abs(module.perturb_crops(image, maps, labels, (0, 0), 8.0) - silent).max() > 1e-3


def test_silent_generators_give_one_change_per_crop_without_gradients():
    image, maps, labels = _crops()
    module = Protector(ProtectorConfig(base_channels=4, levels=2)).eval()
    x, m, y = torch.from_numpy(image[:, None]), torch.from_numpy(maps), torch.from_numpy(labels)
    with torch.no_grad():
        out = module(x, m, y, epsilon=8.0)
    assert out.shape == (3, 1, 24, 24)
    np.testing.assert_allclose(out[:, 0].numpy(), module.perturb_crops(image, maps, labels, (0, 0), 8.0), atol=1e-7)


def test_weights_that_do_not_fit_the_networks_are_named_missing_unexpected_or_wrong_shape():
    from umedprotect.errors import InputError
    from umedprotect.protector import build_protector
    from umedprotect.protector_file import ProtectorFile

    weights = dict(as_protector_file(Protector(ProtectorConfig(base_channels=4, levels=2))).weights)
    names = sorted(k for k in weights if k not in ("codes", *GENERATOR_HEADS))
    weights["stray.weight"] = weights.pop(names[0])
    weights[names[1]] = weights[names[1]][:1]
    forged = ProtectorFile(ProtectorConfig(base_channels=4, levels=2), weights, "forged.safetensors")
    message = f"missing {[names[0]]}, unexpected ['stray.weight'], wrong shape {[names[1]]})"
    with pytest.raises(
        InputError, match=f"^forged.safetensors: protector weights do not match .*{re.escape(message)}$"
    ):
        build_protector(forged)


def test_a_protector_is_loaded_onto_the_device_asked_for(tmp_path):
    from umedprotect.protector import load_protector, save_protector

    config = ProtectorConfig(base_channels=4, levels=2, epsilon=5.0)
    path = save_protector(Protector(config), tmp_path / "p.safetensors")
    on_meta = load_protector(path, device="meta")
    assert on_meta.codes.device.type == "meta" and on_meta.config == config
    assert load_protector(path).codes.device.type == "cpu"


def test_a_read_file_with_live_generators_protects_as_its_module_does():
    from oracles import live_protector

    from umedprotect.array_protection import change_maker, protect_array
    from umedprotect.phantoms import phantom_slice

    module = live_protector(base_channels=4, levels=2)
    image, labels = phantom_slice((48, 48), n_lesions=2, rng=0)
    via_module = protect_array(image, labels, module, device="cpu").protected
    via_file = protect_array(image, labels, as_protector_file(module), device="cpu").protected
    assert np.array_equal(via_file, via_module) and not np.array_equal(via_module, image)
    assert change_maker(module) == module.perturb_crops  # the default device: "auto", the CPU here


def test_live_generators_run_on_the_default_device():
    from oracles import live_protector

    from umedprotect.array_protection import protect_array
    from umedprotect.phantoms import phantom_slice

    module = live_protector(base_channels=4, levels=2)
    image, labels = phantom_slice((40, 40), n_lesions=1, rng=2)
    by_default = protect_array(image, labels, module).protected  # device "auto": the CPU here
    assert np.array_equal(by_default, protect_array(image, labels, module, device="cpu").protected)


@pytest.mark.parametrize("option, value", [("epsilon", 0), ("band_radius", 99), ("min_psnr", 5)])
def test_protect_array_refuses_options_out_of_range(option, value):
    from umedprotect.array_protection import protect_array
    from umedprotect.errors import InputError
    from umedprotect.phantoms import phantom_slice

    image, labels = phantom_slice((32, 32), n_lesions=1, rng=0)
    with pytest.raises(InputError, match="out of range") as error:
        protect_array(image, labels, **{option: value})
    assert error.value.option == option


def test_the_result_reports_the_options_used_and_a_boolean_region():
    from umedprotect.array_protection import protect_array
    from umedprotect.phantoms import phantom_volume

    image, labels = phantom_volume((5, 40, 40), n_lesions=1, rng=1)
    result = protect_array(image, labels, epsilon=3, band_radius=2, min_psnr=40, spacing=(2.0, 1.0, 1.0))
    slices = int(np.count_nonzero(labels.any(axis=(1, 2))))
    assert (result.metrics["epsilon"], result.metrics["band_radius"], result.metrics["min_psnr"]) == (3.0, 2, 40.0)
    assert result.metrics["slices_protected"] == slices > 0
    assert result.region.dtype == bool and result.region.shape == image.shape


@pytest.mark.parametrize("setting", [{"texture_window": 15}, {"texture_floor": 1.0}])
def test_the_protectors_texture_settings_shape_the_change(setting):
    from umedprotect.array_protection import protect_array
    from umedprotect.phantoms import phantom_slice

    image, labels = phantom_slice((48, 48), n_lesions=2, rng=4)
    base = dict(code_init="fill", code_period=2, min_psnr=None, base_channels=4, levels=2)
    default = protect_array(image, labels, as_protector_file(Protector(ProtectorConfig(**base)))).change
    changed = protect_array(image, labels, as_protector_file(Protector(ProtectorConfig(**base, **setting)))).change
    assert not np.array_equal(changed, default)


def test_progress_is_reported_after_every_batch_of_sixteen_slices():
    from umedprotect.array_protection import protect_array

    image = np.random.default_rng(0).normal(100, 10, (20, 24, 24)).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[1:19, 8:16, 8:16] = 1
    seen = []
    protect_array(image, labels, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(16, 18), (18, 18)]


def test_the_generator_gain_soft_clips_each_generators_output_before_the_code_is_added():
    image, maps, labels = _crops(batch=2)
    gain, biases = 2.5, {"contour": -3.0, "texture": 1.2}
    module = Protector(ProtectorConfig(generator_gain=gain, code_classes=3, code_period=4, base_channels=4, levels=2))
    with torch.no_grad():
        for name, bias in biases.items():
            getattr(module, name).head.bias.fill_(bias)  # zero weights: the generator's output is its bias
        out = module(*(torch.from_numpy(a) for a in (image[:, None], maps, labels)), epsilon=8.0)[:, 0].numpy()
    code = code_field(module.codes.detach().numpy(), "normal", labels, np.zeros((2, 2), np.int64), maps[:, 3])[:, 0]
    clipped = {name: gain * np.tanh(bias / gain) for name, bias in biases.items()}
    expected = (
        8 / 255 * (np.tanh(clipped["contour"] + code) * maps[:, 1] + maps[:, 2] * np.tanh(clipped["texture"] + code))
    )
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_the_generators_see_the_image_clamped_to_minus_one_to_two_window_units():
    from oracles import live_protector

    image, maps, labels = _crops(batch=2)
    module = live_protector(base_channels=4, levels=2)
    even = np.arange(24) % 2 == 0

    def change(low, high):
        crop = image.copy()
        crop[(labels > 0) & even] = low  # outliers beyond the window, both ways
        crop[(labels > 0) & ~even] = high
        return module.perturb_crops(crop, maps, labels, (0, 0), 8.0)

    assert np.array_equal(change(-1.0, 2.0), change(-6.0, 9.0))
    assert not np.array_equal(change(-1.0, 2.0), change(-0.5, 1.5))


def test_maps_without_band_owners_leave_the_fill_codes_unnegated_outside_the_labels():
    image, maps, labels = _crops(batch=2)
    module = Protector(ProtectorConfig(code_init="fill", code_classes=3, code_period=4, base_channels=4, levels=2))
    with torch.no_grad():
        out = module(*(torch.from_numpy(a) for a in (image[:, None], maps[:, :4], labels)), epsilon=8.0)[:, 0]
    code = code_field(module.codes.detach().numpy(), "fill", labels, np.zeros((2, 2), np.int64), maps[:, 3])[:, 0]
    np.testing.assert_allclose(out.numpy(), 8 / 255 * np.tanh(code) * (maps[:, 1] + maps[:, 2]), rtol=0, atol=1e-7)


def test_normal_and_blob_codes_start_from_white_noise_seeded_by_the_module_not_the_caller():
    from umedprotect.protector import blob_codes

    noise = torch.randn(5, 6, 6, generator=torch.Generator().manual_seed(0))
    for code_init, expected in (("normal", noise), ("blobs", blob_codes(noise))):
        config = ProtectorConfig(code_init=code_init, code_classes=5, code_period=6, base_channels=4, levels=2)
        torch.manual_seed(123)  # the caller's random state does not matter
        codes = Protector(config).codes.detach()
        torch.manual_seed(7)
        assert torch.equal(codes, Protector(config).codes.detach()) and torch.allclose(codes, expected, atol=1e-6)


def test_the_contour_generator_uses_central_differences_weighted_by_the_configs_theta():
    from oracles import live_protector

    image, maps, labels = _crops(batch=2)
    first = live_protector(base_channels=4, levels=2, cdc_theta=0.1)
    second = Protector(ProtectorConfig(min_psnr=None, base_channels=4, levels=2, cdc_theta=0.9)).eval()
    second.load_state_dict(first.state_dict())
    changes = [m.perturb_crops(image, maps, labels, (0, 0), 8.0) for m in (first, second)]
    assert np.abs(changes[0] - changes[1]).max() > 1e-4


@pytest.mark.parametrize(
    "image, message",
    [
        (np.arange(64, dtype=np.complex64).reshape(8, 8), "pixel type complex64 is not supported"),
        (np.arange(64).reshape(8, 8).astype(object), "pixel type object is not supported"),
        (np.where(np.eye(8), np.nan, np.arange(64).reshape(8, 8)).astype(np.float32), "NaN or infinite"),
        (np.where(np.eye(8), np.inf, np.arange(64).reshape(8, 8)).astype(np.float16), "NaN or infinite"),
    ],
)
def test_images_of_unsupported_types_or_with_nan_are_refused(image, message):
    from umedprotect.array_protection import protect_array
    from umedprotect.errors import InputError

    labels = np.zeros((8, 8), np.uint8)
    labels[2:6, 2:6] = 1
    with pytest.raises(InputError, match=message):
        protect_array(image, labels)


def test_the_intensity_window_follows_the_protectors_percentiles():
    from umedprotect.array_protection import protect_array
    from umedprotect.intensity import intensity_window
    from umedprotect.phantoms import phantom_slice

    image, labels = phantom_slice((48, 48), n_lesions=2, rng=1)
    config = ProtectorConfig(percentiles=(10.0, 90.0), code_init="fill", code_period=2, base_channels=4, levels=2)
    result = protect_array(image, labels, as_protector_file(Protector(config)))
    window = intensity_window(image, (10.0, 90.0))
    assert result.metrics["window"] == [window.lo, window.hi] != list(np.percentile(image, [0.5, 99.5]))


def test_a_volume_with_more_slices_than_rows_is_protected_slab_by_slab_once_per_slice():
    from umedprotect.array_protection import protect_array

    image = np.random.default_rng(1).normal(100, 10, (30, 10, 24)).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[:, 3:7, 6:18] = 1
    seen = []
    slabbed = protect_array(image, labels, slab_slices=4, progress=lambda done, total: seen.append((done, total)))
    assert [done for done, _ in seen] == list(range(4, 30, 4)) + [30] and {total for _, total in seen} == {30}
    assert (slabbed.protected != image).any(axis=(1, 2)).all()  # every slice, the last ones too
    assert np.array_equal(slabbed.protected, protect_array(image, labels, slab_slices=1000).protected)
