"""The victim's grid: nnU-Net's resampling reproduced, and changes made on its grid reaching it intact."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import resize

from umedprotect import victim_grid
from umedprotect.array_protection import protect_array
from umedprotect.metrics import slice_psnrs
from umedprotect.phantoms import phantom_slice, phantom_volume
from umedprotect.protector import Protector, as_protector_file
from umedprotect.protector_file import ProtectorConfig
from umedprotect.regions import contour_band

SHAPES = [(80, 96), (112, 134), (96, 115)]  # the case's grid finer than, coarser than, and off the victim's


@pytest.fixture(scope="module")
def dots():
    """A protector of period-4 dots, silent generators (what the victim grid is for)."""
    config = ProtectorConfig(epsilon=16.0, band_radius=2, texture_floor=1.0, code_init="dots", code_period=4)
    return as_protector_file(Protector(config))


def nnunet_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """nnU-Net's resize_segmentation: each label's mask resized linearly, kept where >= 0.5."""
    out = np.zeros(shape, dtype=labels.dtype)
    for value in np.unique(labels)[1:]:
        mask = resize((labels == value).astype(float), shape, order=1, mode="edge", clip=True, anti_aliasing=False)
        out[mask >= 0.5] = value
    return out


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


@pytest.mark.parametrize("shape", SHAPES)
def test_resampling_is_nnunets(shape):
    image, labels = phantom_slice((96, 115), n_lesions=3, rng=1)
    expected = resize(image.astype(np.float64), shape, order=3, mode="edge", anti_aliasing=False, preserve_range=True)
    np.testing.assert_allclose(victim_grid.resample_image(image, shape), expected, atol=1e-6)
    np.testing.assert_array_equal(victim_grid.resample_labels(labels, shape), nnunet_labels(labels, shape))


def test_victim_shape_rounds_as_nnunet():
    assert victim_grid.victim_shape((101, 122), (0.85, 0.85), (1.0, 1.0)) == (86, 104)
    assert victim_grid.victim_shape((101, 122), (1.15, 1.0), (1.0, 1.0)) == (116, 122)


@pytest.mark.parametrize(
    ("shape", "period", "error"), [((120, 140), 2, 1e-6), ((120, 140), 4, 1e-6), ((88, 100), 4, 0.06)]
)
def test_map_back_gives_the_victim_the_code(shape, period, error):
    """Exact from a finer case; from a coarser one (1.14x, 1.2x) close for a code of period 4."""
    victim = (100, 120)
    rows, cols = np.indices(victim)
    code = np.cos(2 * np.pi * rows / period) * np.cos(2 * np.pi * cols / period)
    back = victim_grid.map_back(code, shape)
    np.testing.assert_allclose(victim_grid.resample_image(back, victim), code, atol=error)


def test_a_checkerboard_cannot_be_made_on_a_finer_grid_than_the_case():
    victim, rows, cols = (100, 120), *np.indices((100, 120))
    code = np.where((rows + cols) % 2 == 0, 1.0, -1.0)
    back = victim_grid.map_back(code, (88, 100))
    assert correlation(victim_grid.resample_image(back, victim), code) < 0.8


@pytest.mark.parametrize(("spacing", "floor"), [(0.85, 0.98), (1.15, 0.9)])  # finer: exact but for the band's edge
def test_the_victim_sees_the_code_made_on_its_grid(dots, spacing, floor):
    image, labels = phantom_slice((101, 122), n_lesions=2, rng=3)
    result = protect_array(image, labels, dots, spacing=(spacing, spacing), victim_spacing=(1.0, 1.0), device="cpu")
    grid = victim_grid.victim_shape(image.shape, (spacing, spacing), (1.0, 1.0))
    assert result.metrics["victim_shape"] == list(grid) and result.metrics["victim_spacing"] == [1.0, 1.0]
    seen = victim_grid.resample_image(result.protected, grid) - victim_grid.resample_image(image, grid)
    on_grid = victim_grid.resample_image(image, grid).astype(np.float32)
    made = protect_array(on_grid, victim_grid.resample_labels(labels, grid), dots, min_psnr=None, device="cpu")
    near = made.region  # where the change on the victim's grid lives
    assert correlation(seen[near], made.change[near]) > floor
    native = protect_array(image, labels, dots, device="cpu")  # made on the case's own grid: not what it sees
    seen_native = victim_grid.resample_image(native.protected, grid) - victim_grid.resample_image(image, grid)
    assert correlation(seen_native[near], made.change[near]) < 0.6


def test_victim_grid_keeps_the_guarantees(dots):
    image, labels = phantom_slice((101, 122), n_lesions=2, rng=4)
    result = protect_array(image, labels, dots, spacing=(0.85, 0.85), victim_spacing=(1.0, 1.0), device="cpu")
    region = (labels > 0) | contour_band(labels, dots.config.band_radius + 1)
    np.testing.assert_array_equal(result.region, region)
    assert np.array_equal(result.protected[~region], image[~region]) and np.any(result.change[region] != 0)
    assert np.abs(result.change).max() <= result.budget + 1e-3
    assert result.metrics["psnr_db"] >= 50.0 - 1e-6


def test_on_the_victims_own_grid_nothing_changes(dots):
    image, labels = phantom_slice((101, 122), n_lesions=2, rng=5)
    plain = protect_array(image, labels, dots, device="cpu")
    same = protect_array(image, labels, dots, spacing=(1.0, 1.0), victim_spacing=(1.0, 1.0), device="cpu")
    assert plain.protected.tobytes() == same.protected.tobytes()


def test_a_volume_is_made_on_the_victims_grid_slice_by_slice(dots):
    image, labels = phantom_volume((8, 64, 72), n_lesions=2, rng=6)
    spacing, victim = (3.0, 0.8, 0.8), (3.0, 1.0, 1.0)
    result = protect_array(image, labels, dots, spacing=spacing, victim_spacing=victim, device="cpu")
    grid = victim_grid.victim_shape(image.shape[1:], spacing[1:], victim[1:])
    assert result.metrics["victim_shape"] == list(grid)
    assert min(slice_psnrs(image, result.protected, 0)) >= 50.0 - 1e-6
    for z in np.flatnonzero(labels.any(axis=(1, 2))):
        seen = victim_grid.resample_image(result.protected[z], grid) - victim_grid.resample_image(image[z], grid)
        on_grid = victim_grid.resample_image(image[z], grid).astype(np.float32)
        made = protect_array(on_grid, victim_grid.resample_labels(labels[z], grid), dots, min_psnr=None, device="cpu")
        assert correlation(seen[made.region], made.change[made.region]) > 0.95


def test_a_roi_too_small_for_the_victims_grid_is_left_unchanged(dots):
    image, _ = phantom_slice((101, 122), n_lesions=1, rng=7)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[50, 60] = 1  # one pixel: under half a pixel of the coarser victim grid's mask
    result = protect_array(image, labels, dots, spacing=(0.7, 0.7), victim_spacing=(1.0, 1.0), device="cpu")
    assert not victim_grid.resample_labels(labels, tuple(result.metrics["victim_shape"])).any()
    assert result.protected.tobytes() == image.tobytes()
