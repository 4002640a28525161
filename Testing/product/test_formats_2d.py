"""2D grey-level PNG and TIFF through ``umedprotect protect``: same format out, bit depth and pixel size kept."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import tifffile

from umedprotect import io, raster
from umedprotect.cli import main
from umedprotect.phantoms import phantom_slice


def grey_slice(dtype) -> tuple[np.ndarray, np.ndarray]:
    """A textured 64x64 phantom scaled to the dtype's range, and its lesion mask."""
    image, labels = phantom_slice((64, 64), n_lesions=2, rng=3)
    scaled = (image - image.min()) / (image.max() - image.min()) * (0.8 * np.iinfo(dtype).max) + 0.1 * np.iinfo(
        dtype
    ).max
    return scaled.astype(dtype), labels.astype(np.uint8)


def protect(tmp_path, image_path, mask_path, output, protector_file) -> np.ndarray:
    argv = ["protect", str(image_path), str(mask_path), "-o", str(output), "--protector", str(protector_file)]
    assert main([*argv, "--heatmap", str(tmp_path / "h.png")]) == 0
    return sitk.GetArrayFromImage(sitk.ReadImage(str(output)))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_in_png_out_keeps_bit_depth_and_pixel_size(tmp_path, protector_file, dtype):
    array, labels = grey_slice(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.25, 0.25))
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(image)
    sitk.WriteImage(image, str(tmp_path / "cells.png"))
    sitk.WriteImage(mask, str(tmp_path / "mask.png"))
    protected = protect(tmp_path, tmp_path / "cells.png", tmp_path / "mask.png", tmp_path / "out.png", protector_file)
    written = sitk.ReadImage(str(tmp_path / "out.png"))
    assert written.GetPixelID() == image.GetPixelID() and written.GetSpacing() == image.GetSpacing()
    assert protected.dtype == dtype and (protected != array).any()
    assert not (protected != array)[labels == 0].all()  # background mostly untouched


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("imagej", [False, True], ids=["tiff-resolution", "imagej-micron"])
def test_tiff_in_tiff_out_keeps_bit_depth_and_resolution_tags(tmp_path, protector_file, dtype, imagej):
    array, labels = grey_slice(dtype)
    if imagej:  # ImageJ stores the micron pixel size in its description, with no resolution unit
        pixel_size = {"imagej": True, "resolution": (4.0, 4.0), "metadata": {"unit": "um"}}
    else:  # 0.5 um pixels as a microscope writes them: pixels per centimetre
        pixel_size = {"resolution": (20000, 20000), "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(tmp_path / "cells.tif", array, **pixel_size)
    tifffile.imwrite(tmp_path / "mask.tif", labels)  # as labelling tools write it: no pixel size
    protected = protect(tmp_path, tmp_path / "cells.tif", tmp_path / "mask.tif", tmp_path / "out.tiff", protector_file)
    assert protected.dtype == dtype and (protected != array).any()
    with tifffile.TiffFile(tmp_path / "cells.tif") as source, tifffile.TiffFile(tmp_path / "out.tiff") as output:
        for name in raster.TIFF_KEPT_TAGS:
            assert (name in source.pages[0].tags) == (name in output.pages[0].tags), name
            if name in source.pages[0].tags:
                assert output.pages[0].tags[name].value == source.pages[0].tags[name].value, name
        assert output.pages[0].dtype == dtype


def test_a_2d_png_may_also_be_written_as_nrrd_but_a_volume_never_as_png(tmp_path, protector_file):
    array, labels = grey_slice(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / "cells.png"))
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "mask.png"))
    protected = protect(tmp_path, tmp_path / "cells.png", tmp_path / "mask.png", tmp_path / "out.nrrd", protector_file)
    assert protected.dtype == np.uint8
    assert raster.output_endings(tmp_path / "ct.nii.gz") == io.OUTPUT_ENDINGS
    assert raster.output_endings(tmp_path / "CELLS.TIF") == (*io.OUTPUT_ENDINGS, ".tif", ".tiff")


def test_a_raster_mask_with_its_own_pixel_size_must_match_the_image(tmp_path, protector_file, capsys):
    array, labels = grey_slice(np.uint8)
    tifffile.imwrite(tmp_path / "cells.tif", array, resolution=(20000, 20000), resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "mask.tif", labels, resolution=(10000, 10000), resolutionunit="CENTIMETER")
    argv = ["protect", str(tmp_path / "cells.tif"), str(tmp_path / "mask.tif"), "-o", str(tmp_path / "out.tif")]
    assert main([*argv, "--protector", str(protector_file)]) == 2
    assert "mask spacing (0.001, 0.001) differs from the image spacing (0.0005, 0.0005)" in capsys.readouterr().err
