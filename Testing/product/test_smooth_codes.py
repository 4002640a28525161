"""The smooth code (``--codes smooth``): each label's noise smoothed away within it, chosen by name, recorded,
held to the floor, refused with options it does not take."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_nnunet_dataset
from scipy import ndimage

from umedprotect import smoothing
from umedprotect.caveats import SMOOTH_ELSEWHERE, SMOOTH_VISIBLE, ZSCORED, dataset_caveats
from umedprotect.cli import main
from umedprotect.errors import Cancelled, InputError
from umedprotect.methods import SMOOTH_ONLY, device_description, setup_method
from umedprotect.nnunet import read_dataset
from umedprotect.records import DatasetManifest
from umedprotect.settings import ProtectionSettings
from umedprotect.smoothing import protect_smoothed, smoothing_change, volume_sigmas


def _two_organs(size=64):
    """Noisy tissue (std 10) with two labels of different brightness beside each other, and air and bone in range."""
    image = np.random.default_rng(0).normal(40.0, 10.0, (size, size))
    labels = np.zeros((size, size), np.uint8)
    rows, middle = slice(size // 8, size * 5 // 8), size // 2
    labels[rows, size // 8 : middle], labels[rows, middle : size * 7 // 8] = 1, 2
    image[labels == 2] += 100.0
    image[0, :2] = -1000.0, 1000.0
    return image.astype(np.float32), labels


def _noise(image, mask):
    """The fine texture's std within ``mask``: what a 1-pixel Gaussian removes."""
    return float((image - ndimage.gaussian_filter(image.astype(np.float64), 1.0))[mask].std())


def test_each_label_loses_its_noise_and_keeps_its_level_without_its_neighbours_intensity():
    image, labels = _two_organs()
    change = smoothing_change(image, labels)
    smoothed = image + change
    assert not change[labels == 0].any()
    inner = [ndimage.binary_erosion(labels == v, iterations=3) for v in (1, 2)]
    for mask in inner:
        assert _noise(smoothed, mask) < 0.3 * _noise(image, mask)
        assert abs(smoothed[mask].mean() - image[mask].mean()) < 2.0
    edge = (labels == 1) & ndimage.binary_dilation(labels == 2)  # label 1's pixels next to the brighter label 2
    assert abs(change[edge].mean()) < 10.0  # a plain blur would pull them up by tens across the shared edge


def test_the_smoothing_is_capped_held_to_the_floor_and_leaves_the_rest_bit_identical():
    image, labels = _two_organs()
    free = protect_smoothed(image, labels, epsilon=64)
    capped = protect_smoothed(image, labels, epsilon=1)
    assert np.abs(capped.change).max() <= capped.budget + 1e-3 < np.abs(free.change).max()
    held = protect_smoothed(image, labels, epsilon=64, min_psnr=free.metrics["psnr_db"] + 6)
    assert held.metrics["psnr_db"] >= free.metrics["psnr_db"] + 6 - 1e-6 and held.metrics["change_scale"] < 0.6
    only_two = protect_smoothed(image, labels, epsilon=64, label_values=[2])
    for result in (free, capped, held, only_two):
        assert (result.protected[labels == 0] == image[labels == 0]).all()
    assert not only_two.change[labels == 1].any() and only_two.change[labels == 2].any()


def test_a_volume_is_smoothed_in_3d_the_same_millimetres_along_every_axis(monkeypatch):
    image, labels = _two_organs(32)
    noise = np.random.default_rng(1).normal(0.0, 10.0, (2, *image.shape)).astype(np.float32)
    volume = np.stack([image, image + noise[0], image + noise[1], np.zeros_like(image)])  # slices on axis 0
    volume_labels = np.stack([labels, labels, labels, np.zeros_like(labels)])
    assert volume_sigmas(1.0, (3.0, 1.0, 1.0), 3) == (1 / 3, 1.0, 1.0)
    isotropic = protect_smoothed(volume, volume_labels, spacing=(1.0, 1.0, 1.0), epsilon=255)
    np.testing.assert_allclose(isotropic.change, smoothing_change(volume, volume_labels, 1.0), atol=1e-3)
    thick = protect_smoothed(volume, volume_labels, spacing=(3.0, 1.0, 1.0), epsilon=255)  # sigma 1/3 across slices
    inner = ndimage.binary_erosion(labels == 1, iterations=3) | ndimage.binary_erosion(labels == 2, iterations=3)
    step = [float((r.protected[1] - r.protected[2])[inner].std()) for r in (isotropic, thick)]
    assert step[0] < 0.5 * step[1]  # from slice to slice too the label's noise is smoothed away
    assert not isotropic.change[3].any() and isotropic.metrics["slices_protected"] == 3
    monkeypatch.setattr(smoothing, "SLAB_SLICES", 1)  # slab by slab, each with its margin: the same as whole
    np.testing.assert_array_equal(
        protect_smoothed(volume, volume_labels, spacing=(1.0, 1.0, 1.0), epsilon=255).protected, isotropic.protected
    )
    held = protect_smoothed(volume, volume_labels, spacing=(3.0, 1.0, 1.0), min_psnr=65)
    assert held.metrics["psnr_db_slice_min"] >= 65 - 1e-6 and held.metrics["change_scale"] < 1
    with pytest.raises(Cancelled):
        protect_smoothed(volume, volume_labels, spacing=(3.0, 1.0, 1.0), cancel=lambda: True)


def test_smooth_is_chosen_by_name_recorded_and_refuses_options_it_does_not_take():
    settings = ProtectionSettings(codes="smooth", min_psnr=45, device="cpu")
    setup = setup_method("umed", settings)
    assert setup.protector_info["path"] == "bundled smooth" and setup.protector_info["sha256"]
    assert setup.parameters["codes"] == "smooth" and setup.parameters["min_psnr"] == 45
    assert setup.device == device_description("umed", settings) == SMOOTH_ONLY
    image, labels = _two_organs()
    np.testing.assert_array_equal(
        setup.case_protector(image, labels).protected, protect_smoothed(image, labels, min_psnr=45).protected
    )
    for option in ({"band_radius": 2}, {"strength": 0.6}):
        with pytest.raises(InputError, match="not to the smooth code") as error:
            ProtectionSettings(codes="smooth", **option)
        assert error.value.option == next(iter(option))


def test_protect_dataset_with_smooth_records_its_caveats_and_no_victim_grid(tmp_path, capsys):
    source = write_nnunet_dataset(tmp_path / "Dataset021_OneLabel", n_lesions=1)
    out = tmp_path / "out"
    assert main(["protect-dataset", str(source), "-o", str(out), "--no-progress", "--codes", "smooth"]) == 0
    manifest = DatasetManifest.read(out / "umedprotect_manifest.json")
    assert manifest.caveats == [SMOOTH_VISIBLE, ZSCORED] and manifest.parameters["smooth_sigma"] == 1.0
    assert "victim_spacing" not in manifest.parameters and SMOOTH_ONLY in capsys.readouterr().out
    two = write_nnunet_dataset(tmp_path / "Dataset024_TwoLabels", n_lesions=2)
    assert dataset_caveats(read_dataset(two), None, "bundled smooth") == [SMOOTH_VISIBLE, ZSCORED, SMOOTH_ELSEWHERE]
    assert dataset_caveats(read_dataset(two), [2], "bundled smooth") == [SMOOTH_VISIBLE, ZSCORED]
