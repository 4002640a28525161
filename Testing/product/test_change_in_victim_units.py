"""The change as a z-scoring victim sees it (``change_zscore``): RMS over the changed voxels in image stds."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import write_nnunet_dataset

from umedprotect import io
from umedprotect.array_protection import protect_array
from umedprotect.cli import main
from umedprotect.metrics import image_quality, zscore_change
from umedprotect.records import DatasetManifest


def case(shape: tuple[int, ...], dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """Noise around 100 with a brighter labelled rectangle in every slice."""
    image = np.random.default_rng(0).normal(100, 20, shape)
    labels = np.zeros(shape, np.uint8)
    labels[..., 16:40, 12:36] = 1
    image[labels > 0] += 50
    return image.astype(dtype), labels


@pytest.mark.parametrize("dtype", ["int16", "float32"])
@pytest.mark.parametrize("shape", [(64, 64), (4, 48, 56)])
def test_the_reported_zscore_change_is_the_rms_change_over_the_image_std(dtype, shape):
    image, labels = case(shape, dtype)
    result = protect_array(image, labels, device="cpu", min_psnr=45)
    change = result.protected.astype(np.float64) - image.astype(np.float64)
    expected = np.sqrt(np.mean(change[change != 0] ** 2)) / image.astype(np.float64).std()
    assert result.metrics["change_zscore"] == pytest.approx(expected, rel=1e-6)
    assert 0.01 < expected < 1


def test_no_change_is_zero_and_a_larger_image_spread_makes_it_smaller():
    image, labels = case((64, 64))
    assert zscore_change(image, image_quality(image, image)) == 0.0
    protected = image.copy()
    protected[labels > 0] += 3.0
    spread = image.copy()
    spread[labels == 0] *= 4  # same change, more contrast elsewhere: a z-scoring victim sees less of it
    assert zscore_change(spread, image_quality(spread, spread + (protected - image))) < zscore_change(
        image, image_quality(image, protected)
    )


def test_the_manifest_records_the_zscore_change_of_each_protected_image(tmp_path):
    source = write_nnunet_dataset(tmp_path / "Dataset001_Tiny")
    out = tmp_path / "out"
    assert main(["protect-dataset", str(source), "-o", str(out), "--device", "cpu", "--no-progress"]) == 0
    manifest = DatasetManifest.read(out / "umedprotect_manifest.json")
    for record in manifest.cases.values():
        for image in record.images:
            sitk_in, sitk_out = (io.read_image(p) for p in (source / image.input, out / image.output))
            original = sitk.GetArrayFromImage(sitk_in).astype(np.float64)
            change = sitk.GetArrayFromImage(sitk_out).astype(np.float64) - original
            expected = np.sqrt(np.mean(change[change != 0] ** 2)) / original.std()
            assert image.change_zscore == pytest.approx(expected, rel=1e-6)
