"""Image and mask I/O: formats, DICOM series, .seg.nrrd, validation, exact atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import write_dicom_series, write_image

from umedprotect import io
from umedprotect.errors import InputError

UID_A, UID_B = "1.2.826.0.1.3680043.2.1125.11", "1.2.826.0.1.3680043.2.1125.22"


def ramp(shape, dtype):
    values = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 200
    return values.astype(dtype)


@pytest.mark.parametrize("ending", io.OUTPUT_ENDINGS)
@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "float32", "float64"])
def test_write_like_keeps_voxels_geometry_and_pixel_type(tmp_path, ending, dtype):
    source = write_image(ramp((5, 9, 7), dtype), tmp_path / f"in{ending}")
    image = io.read_image(source)
    array, spacing = io.to_array(image)
    assert spacing == tuple(reversed(image.GetSpacing()))
    out = io.write_like(array, image, tmp_path / f"out{ending}")
    back = sitk.ReadImage(str(out))
    assert back.GetPixelID() == image.GetPixelID()
    assert back.GetSize() == image.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), array)
    # .nrrd stores spacing x direction, so the last bits may differ; the others are exact
    tolerance = 1e-12 if ending == ".nrrd" else 0
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), rtol=tolerance, atol=0)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), rtol=tolerance, atol=0)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), rtol=0, atol=tolerance)


def test_write_like_refuses_existing_output_and_leaves_no_partial_file(tmp_path):
    image = io.read_image(write_image(ramp((6, 5), "int16"), tmp_path / "in.mha"))
    out = io.write_like(io.to_array(image)[0], image, tmp_path / "out.mha")
    before = io.sha256(out)
    with pytest.raises(InputError, match="already exists"):
        io.write_like(io.to_array(image)[0] + 1, image, out)
    assert io.sha256(out) == before
    io.write_like(io.to_array(image)[0] + 1, image, out, overwrite=True)
    assert io.sha256(out) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mha", "out.mha"]


def test_write_like_rejects_wrong_shape_or_dtype(tmp_path):
    image = io.read_image(write_image(ramp((6, 5), "int16"), tmp_path / "in.mha"))
    with pytest.raises(ValueError, match="shape"):
        io.write_like(np.zeros((5, 6), np.int16), image, tmp_path / "a.mha")
    with pytest.raises(ValueError, match="dtype"):
        io.write_like(np.zeros((6, 5), np.float32), image, tmp_path / "b.mha")
    assert not (tmp_path / "a.mha").exists() and not (tmp_path / "b.mha").exists()


@pytest.mark.parametrize("name", ["out.png", "out.txt", "out.mhd", "out"])
def test_output_formats_that_cannot_be_written_atomically_are_refused(tmp_path, name):
    with pytest.raises(InputError, match="unsupported output format"):
        io.check_output_path(tmp_path / name)


def test_dicom_series_folder_and_series_choice(tmp_path):
    volume = ramp((4, 16, 12), "int16")
    write_dicom_series(volume, tmp_path / "dcm", UID_A)
    image = io.read_image(tmp_path / "dcm")
    assert image.GetSize() == (12, 16, 4)
    np.testing.assert_allclose(image.GetSpacing(), (0.7, 0.7, 2.0))
    np.testing.assert_array_equal(io.to_array(image)[0], volume)

    write_dicom_series(volume + 5, tmp_path / "dcm", UID_B)
    with pytest.raises(InputError, match=f"must name one of the 2 DICOM series.*{UID_A}.*{UID_B}") as error:
        io.read_image(tmp_path / "dcm")
    assert error.value.option == "series_uid"
    np.testing.assert_array_equal(io.to_array(io.read_image(tmp_path / "dcm", UID_B))[0], volume + 5)
    with pytest.raises(InputError, match="no DICOM series '9.9'"):
        io.read_image(tmp_path / "dcm", "9.9")


def test_seg_nrrd_segments_become_labels_on_the_image_grid(tmp_path):
    import slicerio

    image = io.read_image(write_image(ramp((6, 20, 16), "int16"), tmp_path / "img.nrrd"))
    ijk_to_lps = np.eye(4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    ijk_to_lps[:3, :3] = direction * np.array(image.GetSpacing())
    ijk_to_lps[:3, 3] = image.GetOrigin()
    shape_ijk = image.GetSize()
    segmentation = slicerio.create_segmentation(shape_ijk, ijk_to_lps)
    first = np.zeros(shape_ijk, bool)
    first[2:6, 3:9, 1:4] = True
    second = np.zeros(shape_ijk, bool)
    second[4:10, 5:12, 2:5] = True  # overlaps the first: slicerio puts it in a second layer
    slicerio.add_segment(segmentation, first, {"id": "tumour"})
    slicerio.add_segment(segmentation, second, {"id": "organ"})
    slicerio.write_segmentation(str(tmp_path / "mask.seg.nrrd"), segmentation)

    labels, _ = io.to_array(io.read_label(tmp_path / "mask.seg.nrrd", image))
    expected = np.zeros(shape_ijk, np.uint8)
    expected[first] = 1
    expected[second] = 2
    np.testing.assert_array_equal(labels, expected.transpose(2, 1, 0))


def test_mask_within_tolerance_takes_the_image_geometry(tmp_path):
    image = io.read_image(write_image(ramp((4, 6, 5), "int16"), tmp_path / "img.mha"))
    labels = np.zeros((4, 6, 5), np.uint8)
    labels[1:3, 2:4, 1:3] = 1
    c, s = np.cos(0.3), np.sin(0.3)
    nudged = write_image(
        labels,
        tmp_path / "mask.mha",
        spacing=(0.8 * (1 + 1e-6), 0.7, 2.5),
        origin=(-12.5 + 1e-6, 30.25, 7.0),
        direction=(c, -s, 0, s, c, 0, 0, 0, 1),
    )
    label = io.read_label(nudged, image)
    assert label.GetSpacing() == image.GetSpacing() and label.GetOrigin() == image.GetOrigin()
    np.testing.assert_array_equal(io.to_array(label)[0], labels)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"spacing": (0.9, 0.7, 2.5)}, "spacing"),
        ({"origin": (-10.0, 30.25, 7.0)}, "origin"),
        ({"direction": (1.0, 0, 0, 0, 1, 0, 0, 0, 1)}, "direction"),
    ],
)
def test_geometry_mismatch_is_refused_or_resampled(tmp_path, change, message):
    image = io.read_image(write_image(ramp((4, 12, 10), "int16"), tmp_path / "img.mha"))
    labels = np.zeros((4, 12, 10), np.uint8)
    labels[1:3, 3:9, 2:8] = 1
    mask = write_image(labels, tmp_path / "mask.mha", **change)
    with pytest.raises(InputError, match=message) as error:
        io.read_label(mask, image)
    assert error.value.option == "resample_mask"
    resampled = io.read_label(mask, image, resample=True)
    assert resampled.GetSize() == image.GetSize()
    assert resampled.GetSpacing() == image.GetSpacing() and resampled.GetDirection() == image.GetDirection()
    assert set(np.unique(io.to_array(resampled)[0])) <= {0, 1}


def test_size_mismatch_and_resampling_a_coarser_mask(tmp_path):
    image = io.read_image(write_image(ramp((12, 16), "int16"), tmp_path / "img.mha", spacing=(1.0, 1.0)))
    coarse = np.zeros((6, 8), np.uint8)
    coarse[2:4, 2:6] = 3
    mask = write_image(coarse, tmp_path / "mask.mha", spacing=(2.0, 2.0), origin=(-12.5 + 0.5, 30.25 + 0.5))
    with pytest.raises(InputError, match=r"mask size \(8, 6\) does not match image size \(16, 12\)"):
        io.read_label(mask, image)
    labels = io.to_array(io.read_label(mask, image, resample=True))[0]
    assert labels.shape == (12, 16)
    np.testing.assert_array_equal(labels[::2, ::2], coarse)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((5, 6), 7, np.int16), "constant"),
        (np.where(np.eye(6)[:5] > 0, np.nan, 1.0).astype(np.float32), "NaN or infinite"),
        (np.where(np.eye(6)[:5] > 0, np.inf, 1.0), "NaN or infinite"),
        (ramp((2, 3, 4, 5), "int16"), "4D images are not supported"),
    ],
)
def test_bad_image_content(tmp_path, array, message):
    path = tmp_path / "img.mha"
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=False), str(path))
    with pytest.raises(InputError, match=message):
        io.read_image(path)


def test_rgb_and_complex_images_are_refused(tmp_path):
    rgb = sitk.GetImageFromArray(ramp((6, 7, 3), "uint8"), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    with pytest.raises(InputError, match="3 components per voxel"):
        io.read_image(tmp_path / "rgb.mha")
    sitk.WriteImage(sitk.Image([5, 6], sitk.sitkComplexFloat32), str(tmp_path / "complex.mha"))
    with pytest.raises(InputError, match="2 components per voxel"):
        io.read_image(tmp_path / "complex.mha")


def test_memory_estimate_refuses_before_reading_voxels(tmp_path, monkeypatch):
    header = (
        "ObjectType = Image\nNDims = 3\nDimSize = 4000 4000 4000\nElementType = MET_SHORT\nElementDataFile = LOCAL\n"
    )
    (tmp_path / "huge.mha").write_bytes(header.encode() + b"\0" * 64)  # claims 128 GB, holds 64 bytes
    with pytest.raises(InputError, match=r"needs about \d+.* GiB of memory"):
        io.read_image(tmp_path / "huge.mha")
    monkeypatch.setenv(io.MEMORY_ENV, "1")
    small = write_image(ramp((64, 64, 64), "int16"), tmp_path / "small.mha")
    with pytest.raises(InputError, match="GiB available"):
        io.read_image(small)


def test_corrupt_and_non_image_files(tmp_path):
    good = write_image(ramp((8, 9, 10), "int16"), tmp_path / "good.nii.gz")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(InputError, match="truncated.nii.gz: "):
        io.read_image(truncated)
    (tmp_path / "notes.nii.gz").write_text("not an image")
    with pytest.raises(InputError, match="notes.nii.gz: not a readable image"):
        io.read_image(tmp_path / "notes.nii.gz")
    with pytest.raises(InputError, match="file not found"):
        io.read_image(tmp_path / "missing.nrrd")


def test_mask_values_must_be_non_negative_integers(tmp_path):
    image = io.read_image(write_image(ramp((6, 5), "int16"), tmp_path / "img.mha"))
    with pytest.raises(InputError, match="non-integer"):
        io.read_label(write_image(np.full((6, 5), 0.5, np.float32), tmp_path / "f.mha"), image)
    with pytest.raises(InputError, match="negative"):
        io.read_label(write_image(np.full((6, 5), -1, np.int16), tmp_path / "n.mha"), image)


def test_sha256_copy_and_json(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    assert io.sha256(tmp_path / "a.bin") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert io.copy_file(tmp_path / "a.bin", tmp_path / "sub" / "b.bin") == io.sha256(tmp_path / "a.bin")
    with pytest.raises(InputError, match="already exists"):
        io.copy_file(tmp_path / "a.bin", tmp_path / "sub" / "b.bin")
    io.write_json({"psnr": float("inf"), "x": np.float32(1.5), "t": (1, 2)}, tmp_path / "r.json")
    assert io.read_json(tmp_path / "r.json") == {"psnr": "inf", "x": 1.5, "t": [1, 2]}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="bad.json: not valid JSON"):
        io.read_json(tmp_path / "bad.json")
