"""The fast paths give exactly what the plain ones gave: percentiles, NIfTI reading."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import SimpleITK as sitk

from umedprotect import intensity, io
from umedprotect.errors import InputError
from umedprotect.intensity import HISTOGRAM_LEVELS, distinct_values, exact_percentiles, histogram, intensity_window

INTEGER_TYPES = ("uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64")
FLOAT_TYPES = ("float32", "float64")


def random_values(rng: np.random.Generator, dtype: str, n: int) -> np.ndarray:
    if dtype in FLOAT_TYPES:
        values = rng.normal(0, rng.choice([1e-3, 1.0, 1e4]), n).astype(dtype)
        return np.round(values) if rng.random() < 0.3 else values  # with ties
    info = np.iinfo(dtype)
    span = int(rng.choice([1, 50, 4000, 1 << 21, 1 << 40]))  # histogram and partial-sort paths
    low = int(rng.integers(info.min, max(info.max - span, info.min), endpoint=True, dtype=dtype))
    return rng.integers(low, min(low + span, info.max), n, endpoint=True, dtype=dtype)


@pytest.mark.parametrize("dtype", INTEGER_TYPES + FLOAT_TYPES)
def test_exact_percentiles_equal_numpys_percentile_of_the_float64_values(dtype):
    rng = np.random.default_rng(sum(map(ord, dtype)))
    for _ in range(150):
        values = random_values(rng, dtype, int(rng.integers(1, 5000)))
        percentiles = (0.5, 99.5) if rng.random() < 0.5 else tuple(np.sort(rng.uniform(0, 100, 2)))
        expected = np.percentile(values.astype(np.float64), percentiles)
        assert exact_percentiles(values, percentiles) == tuple(expected)  # == : -0.0 and 0.0 tie in a sort


@pytest.mark.parametrize("dtype", INTEGER_TYPES + FLOAT_TYPES)
def test_distinct_values_equal_numpys_unique(dtype):
    rng = np.random.default_rng(7)
    for _ in range(20):
        values = random_values(rng, dtype, int(rng.integers(1, 3000)))
        found = distinct_values(values)
        assert found.dtype == values.dtype and np.array_equal(found, np.unique(values))


@pytest.mark.parametrize(
    "values, percentiles",
    [
        ([0.1, 0.4], (0.5, 99.5)),  # numpy interpolates down from the upper value when past halfway
        ([0.0] * 99 + [0.1, 0.5], (0.5, 99.5)),  # exactly halfway (99.5 of 101 values): from the upper value too
        ([7.25], (0.0, 100.0)),  # a single voxel
        ([3.0, -1.5, 2.0], (0.0, 100.0)),  # the extremes: min and max
    ],
)
def test_exact_percentiles_round_as_numpy_and_reach_the_extremes(values, percentiles):
    values = np.array(values)
    assert exact_percentiles(values, percentiles) == tuple(np.percentile(values, percentiles))


def test_integer_values_of_at_most_histogram_levels_are_counted_not_sorted(monkeypatch):
    """Counting replaces sorting up to HISTOGRAM_LEVELS levels, beyond that the values are sorted."""
    counted = np.array([5, 5 + HISTOGRAM_LEVELS - 1, 9, 9, 100], dtype=np.int32)
    expected_unique, expected_percentiles = np.unique(counted), np.percentile(counted.astype(np.float64), (10, 90))

    def no_sorting(*args, **kwargs):
        raise AssertionError("sorted instead of counted")

    with monkeypatch.context() as patch:
        patch.setattr(np, "unique", no_sorting)
        assert np.array_equal(distinct_values(counted), expected_unique)
    with monkeypatch.context() as patch:
        patch.setattr(np, "partition", no_sorting)
        assert exact_percentiles(counted, (10, 90)) == tuple(expected_percentiles)
    assert histogram(counted)[0] == 5 and histogram(counted)[1].size == HISTOGRAM_LEVELS
    assert histogram(np.array([5, 5 + HISTOGRAM_LEVELS], dtype=np.int32)) is None
    assert histogram(np.array([1.0, 2.0])) is None


def test_counting_a_chunk_at_a_time_counts_every_chunk(monkeypatch):
    """Volumes larger than one chunk: every chunk adds to the counts, whichever levels it holds."""
    monkeypatch.setattr(intensity, "HISTOGRAM_CHUNK", 7)
    values = np.random.default_rng(5).integers(-300, 300, 1000).astype(np.int16)
    values[0] = 400  # the highest level in the first chunk only
    assert np.array_equal(histogram(values)[1], np.bincount(values.astype(np.int64) - values.min()))
    assert np.array_equal(distinct_values(values), np.unique(values))
    assert exact_percentiles(values, (0.5, 99.5)) == tuple(np.percentile(values.astype(np.float64), (0.5, 99.5)))


def test_distinct_values_of_an_empty_integer_array_are_empty():
    found = distinct_values(np.zeros((0, 4), dtype=np.int16))
    assert found.dtype == np.int16 and found.size == 0


def test_intensity_window_of_a_large_volume_is_exact_not_sampled():
    volume = np.random.default_rng(3).normal(40, 300, (24, 320, 320)).astype(np.int16)  # 2.5 M voxels
    window = intensity_window(volume)
    assert (window.lo, window.hi) == tuple(np.percentile(volume.astype(np.float64), (0.5, 99.5)))


def write_volume(path, dtype: str, shape: tuple[int, ...], rng) -> sitk.Image:
    image = sitk.GetImageFromArray((rng.integers(0, 100, shape) + (0.5 if dtype in FLOAT_TYPES else 0)).astype(dtype))
    image.SetSpacing([0.5, 0.7, 2.5][: len(shape)])
    image.SetOrigin([1.0, -2.0, 3.0][: len(shape)])
    sitk.WriteImage(image, str(path))
    return image


def assert_same_image(found: sitk.Image, expected: sitk.Image) -> None:
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection", "GetPixelID"):
        assert getattr(found, getter)() == getattr(expected, getter)()
    assert np.array_equal(sitk.GetArrayViewFromImage(found), sitk.GetArrayViewFromImage(expected))
    keys = [k for k in expected.GetMetaDataKeys() if not k.startswith(io.ITK_READER_KEYS)]
    assert {k: found.GetMetaData(k) for k in keys} == {k: expected.GetMetaData(k) for k in keys}


@pytest.mark.parametrize("ending", [".nii", ".nii.gz"])
@pytest.mark.parametrize("shape", [(7, 9), (3, 7, 9), (1, 5, 6)])
def test_a_nifti_is_read_once_and_as_simpleitk_reads_it(tmp_path, monkeypatch, ending, shape):
    rng = np.random.default_rng(len(shape))
    paths = {dtype: tmp_path / f"{dtype}{ending}" for dtype in INTEGER_TYPES + FLOAT_TYPES}
    for dtype, path in paths.items():
        write_volume(path, dtype, shape, rng)
    expected = {dtype: sitk.ReadImage(str(path)) for dtype, path in paths.items()}
    monkeypatch.setattr(io.sitk, "ReadImage", None)  # the voxels are not decoded a second time
    for dtype, path in paths.items():
        assert_same_image(io.read_image(path), expected[dtype])
        if dtype.startswith("uint"):  # a label map
            assert_same_image(io.read_label(path, expected[dtype]), expected[dtype])


def test_a_scaled_nifti_is_read_by_simpleitk(tmp_path):
    path = tmp_path / "scaled.nii"
    write_volume(path, "int16", (3, 7, 9), np.random.default_rng(0))
    content = bytearray(path.read_bytes())
    content[112:120] = struct.pack("<2f", 2.0, -5.0)  # scl_slope, scl_inter
    path.write_bytes(bytes(content))
    image = io.read_image(path)
    assert_same_image(image, sitk.ReadImage(str(path)))
    assert image.GetPixelID() == sitk.sitkFloat32


def test_a_nifti_gz_beside_a_nifti_of_the_same_name_reads_its_own_voxels(tmp_path):
    rng = np.random.default_rng(1)
    write_volume(tmp_path / "case.nii", "int16", (3, 7, 9), rng)
    written = write_volume(tmp_path / "case.nii.gz", "int16", (3, 7, 9), rng)
    assert np.array_equal(
        sitk.GetArrayFromImage(io.read_image(tmp_path / "case.nii.gz")), sitk.GetArrayFromImage(written)
    )


@pytest.mark.parametrize("ending", [".nii", ".nii.gz"])
def test_a_truncated_nifti_is_refused_by_the_single_read(tmp_path, ending):
    good = tmp_path / f"good{ending}"
    write_volume(good, "int16", (3, 16, 16), np.random.default_rng(2))
    truncated = tmp_path / f"truncated{ending}"
    truncated.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(InputError, match="truncated"):
        io.read_image(truncated)
