"""The bundled default: one fill code, a checkerboard, inside every label (negated on a band outside where one is
asked for), the three tiles a protector may give the labels instead, and the 50 dB floor."""

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from umedprotect.array_protection import protect_array
from umedprotect.metrics import slice_psnrs
from umedprotect.protector import Protector, fill_codes, load_protector, save_protector
from umedprotect.protector_file import DEFAULT_MIN_PSNR, ProtectorConfig
from umedprotect.regions import signed_edge_distance


def _phantom(shape=(48, 56), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(300.0, 40.0, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[12:36, 10:30] = 1
    labels[16:30, 34:46] = 2
    image[labels == 1] += 80
    image[labels == 2] -= 60
    return image, labels


def test_the_bundled_protector_uses_fill_codes_and_holds_every_image_to_the_floor():
    protector = load_protector()
    assert protector.config.code_init == "fill" and protector.config.min_psnr == DEFAULT_MIN_PSNR
    image, labels = _phantom()
    result = protect_array(image, labels, device="cpu")
    assert result.metrics["min_psnr"] == DEFAULT_MIN_PSNR
    assert DEFAULT_MIN_PSNR <= result.metrics["psnr_db"] < DEFAULT_MIN_PSNR + 1  # the floor is what is spent


def test_every_changed_slice_of_a_volume_keeps_the_floor_and_a_higher_floor_is_kept_too():
    image, labels = _phantom()
    volume = np.stack([image, image[::-1], image * 0.5 + 100])
    masks = np.stack([labels, labels[::-1], labels])
    for floor in (None, 56.0):
        result = protect_array(volume, masks, spacing=(3.0, 1.0, 1.0), min_psnr=floor, device="cpu")
        assert min(slice_psnrs(volume, result.protected, 0)) >= (floor or DEFAULT_MIN_PSNR) - 1e-6


def test_the_default_changes_the_labels_and_the_band_outside_them_and_nothing_beyond():
    image, labels = _phantom()
    distance, _ = signed_edge_distance(labels)
    for radius in (1, 2, 3):
        change = protect_array(image, labels, band_radius=radius, device="cpu").change
        changed = change != 0
        assert changed[distance < 0].any() and changed[distance > 0].any()
        assert not changed[distance < -(radius + 0.5)].any()


def test_the_band_radius_changes_the_output():
    image, labels = _phantom()
    narrow, wide = (protect_array(image, labels, band_radius=r, device="cpu").change for r in (1, 3))
    assert np.count_nonzero(wide[labels == 0]) > 2 * np.count_nonzero(narrow[labels == 0]) > 0


def test_the_bundled_default_gives_every_label_the_same_checkerboard():
    image, labels = _phantom()
    change = protect_array(image, labels, min_psnr=20, device="cpu").change
    rows, cols = np.indices(labels.shape)
    signs = np.sign(change) * np.where((rows + cols) % 2 == 0, 1.0, -1.0)
    for label in (1, 2):  # the same phase too (a voxel at the window's edge may keep no change)
        assert signs[labels == label].min() >= 0 and np.mean(signs[labels == label] == 1) > 0.99


def test_the_three_fill_tiles_stay_distinct_under_the_victims_scaling():
    tiles = [np.tile(torch.tanh(code).numpy(), (16, 16)) for code in fill_codes(4, 2)[1:]]
    assert len(tiles) == 3
    for scale in np.linspace(0.7, 1.4, 8):  # image and mask are scaled together: every label's code alike
        scaled = [ndimage.zoom(tile, scale, order=1)[4:-4, 4:-4] for tile in tiles]
        for a, b in itertools.combinations(range(len(tiles)), 2):
            for shift in itertools.product((0, 1), repeat=2):  # and at any phase
                moved = np.roll(scaled[b], shift, axis=(0, 1))
                assert abs(np.corrcoef(scaled[a].ravel(), moved.ravel())[0, 1]) < 0.5


def test_the_default_changes_only_the_labels_and_a_band_carries_the_code_negated():
    image, labels = _phantom()
    inside = protect_array(image, labels, min_psnr=20, device="cpu")
    assert np.array_equal(inside.region, labels > 0) and not inside.change[labels == 0].any()
    change = protect_array(image, labels, min_psnr=20, band_radius=2, device="cpu").change
    row = np.sign(change[20, 7:14])  # label 1 (a checkerboard) starts at column 10: its phase flips there
    assert row[0] == 0 and row[1] == -row[2] and row[2] == row[3] and np.all(row[3:6] == -row[4:7])


def test_protector_files_from_before_the_floor_keep_having_none(tmp_path):
    path = save_protector(Protector(ProtectorConfig(base_channels=4, levels=2)), tmp_path / "old.safetensors")
    text = ProtectorConfig(base_channels=4, levels=2).to_json().replace(', "min_psnr": 50.0', "")
    assert '"min_psnr"' not in text and ProtectorConfig.from_json(text, "old").min_psnr is None
    assert load_protector(path).config.min_psnr == DEFAULT_MIN_PSNR


@pytest.mark.parametrize("labels_dtype", [np.uint8, np.int32])
def test_signed_edge_distance_is_half_a_pixel_either_side_of_the_edge(labels_dtype):
    labels = np.zeros((9, 9), labels_dtype)
    labels[2:7, 2:5] = 1
    labels[2:7, 6:8] = 2
    distance, owner = signed_edge_distance(labels)
    assert distance[4, 2] == 0.5 and distance[4, 1] == -0.5 and distance[4, 0] == -1.5
    assert owner[4, 1] == 1 and owner[4, 8] == 2 and owner[4, 3] == 1 and owner[4, 6] == 2
