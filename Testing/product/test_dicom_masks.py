"""Masks from DICOM SEG (written with highdicom) and RTSTRUCT (written with rt-utils) read back as known label maps."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import write_ct_series
from scipy.ndimage import binary_dilation

from umedprotect import io
from umedprotect.cli import main
from umedprotect.errors import InputError


def source_datasets(series: Path) -> list[pydicom.Dataset]:
    """The series' datasets in SimpleITK's slice order (the order of the label arrays)."""
    return [pydicom.dcmread(f) for f in io.dicom_series_files(series, None)]


def write_seg(series: Path, labels: np.ndarray, names: list[str], path: Path, frame_uid: str | None = None) -> Path:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    descriptions = [
        hd.seg.SegmentDescription(number, name, codes.SCT.Tissue, codes.SCT.Tissue, algorithm_type="MANUAL")
        for number, name in enumerate(names, start=1)
    ]
    sources = source_datasets(series)
    if frame_uid:
        for ds in sources:
            ds.FrameOfReferenceUID = frame_uid
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=labels.astype(np.uint8),
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(path)
    return path


def write_rtstruct(series: Path, masks: dict[str, np.ndarray], path: Path) -> Path:
    from rt_utils import RTStructBuilder

    with warnings.catch_warnings():  # rt-utils sets attributes that pydicom 3 deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        structure_set = RTStructBuilder.create_new(dicom_series_path=str(series))
        for name, mask in masks.items():
            structure_set.add_roi(mask=mask.transpose(1, 2, 0).astype(bool), name=name)  # (rows, columns, slices)
        structure_set.save(str(path))
    return path


def label_array(mask_path: Path, series: Path, segments=None) -> np.ndarray:
    return sitk.GetArrayFromImage(io.read_label(mask_path, io.read_image(series), segments=segments))


@pytest.fixture
def two_structures(ct_series):
    """The CT series and two non-overlapping structures: a block ("Liver") and the phantom's lesions ("Tumor")."""
    series, _, lesions = ct_series
    liver = np.zeros_like(lesions, dtype=bool)
    liver[1:4, 3:12, 18:29] = True
    tumor = (lesions > 0) & ~liver
    return series, liver, tumor


def test_seg_segments_become_their_numbers_on_the_image_grid(two_structures, tmp_path):
    series, liver, tumor = two_structures
    seg = write_seg(series, liver * 1 + tumor * 2, ["Liver", "Tumor"], tmp_path / "seg.dcm")
    assert np.array_equal(label_array(seg, series), liver * 1 + tumor * 2)
    assert np.array_equal(label_array(seg, series, ["tumor"]), tumor * 2)
    assert np.array_equal(label_array(seg, series, ["1"]), liver * 1)


def test_seg_of_a_subset_of_slices_lands_on_those_slices(two_structures, tmp_path):
    series, liver, _ = two_structures
    only_middle = np.zeros_like(liver)
    only_middle[2] = liver[2]
    seg = write_seg(series, only_middle, ["Liver"], tmp_path / "seg.dcm")  # highdicom omits the empty frames
    assert np.array_equal(label_array(seg, series), only_middle)


def test_seg_on_another_frame_of_reference_is_refused(two_structures, tmp_path):
    series, liver, _ = two_structures
    seg = write_seg(series, liver, ["Liver"], tmp_path / "seg.dcm", frame_uid="1.2.826.0.1.3680043.8.498.77")
    with pytest.raises(InputError, match="FrameOfReferenceUID 1.2.826.0.1.3680043.8.498.77 differs"):
        label_array(seg, series)


def test_unknown_segment_names_list_what_the_seg_holds(two_structures, tmp_path):
    series, liver, tumor = two_structures
    seg = write_seg(series, liver * 1 + tumor * 2, ["Liver", "Tumor"], tmp_path / "seg.dcm")
    with pytest.raises(InputError, match="segment 'Spleen' not found \\(it holds 1 'Liver', 2 'Tumor'\\)"):
        label_array(seg, series, ["Spleen"])


def test_rtstruct_rois_are_rasterised_back_to_the_drawn_masks(two_structures, tmp_path):
    """rt-utils writes contours through the centres of boundary pixels (on square pixels only: it takes the row
    spacing for the column step), and the product fills them back to the same pixels."""
    _, liver, tumor = two_structures
    series = tmp_path / "square_pixels"
    write_ct_series(np.zeros(liver.shape) + np.arange(liver.shape[2]), series, spacing=(0.7, 0.7, 2.5))
    rtstruct = write_rtstruct(series, {"Liver": liver, "Tumor": tumor}, tmp_path / "rt.dcm")
    assert np.array_equal(label_array(rtstruct, series), liver * 1 + tumor * 2)
    assert np.array_equal(label_array(rtstruct, series, ["Tumor"]), tumor * 2)


def test_seg_and_rtstruct_on_an_oblique_series(two_structures, tmp_path):
    _, liver, tumor = two_structures
    c, s = np.cos(0.4), np.sin(0.4)
    series = tmp_path / "oblique"
    write_ct_series(
        np.zeros(liver.shape) + np.arange(liver.shape[2]),
        series,
        spacing=(0.7, 0.7, 2.5),
        orientation=(c, s, 0.0, -s * 0.8, c * 0.8, 0.6),
    )
    assert not np.allclose(io.read_image(series).GetDirection(), np.eye(3).ravel())
    expected = liver * 1 + tumor * 2
    seg = write_seg(series, expected, ["Liver", "Tumor"], tmp_path / "seg.dcm")
    rtstruct = write_rtstruct(series, {"Liver": liver, "Tumor": tumor}, tmp_path / "rt.dcm")
    assert np.array_equal(label_array(seg, series), expected)
    assert np.array_equal(label_array(rtstruct, series), expected)


def test_rtstruct_on_a_non_square_grid_with_unequal_pixel_spacing(tmp_path):
    """Contours in patient millimetres around pixel centres (rows 2-5, columns 3-10) fill exactly those pixels."""
    write_ct_series(np.zeros((3, 12, 20)) + np.arange(20), tmp_path / "ct", spacing=(0.6, 1.5, 2.0))
    origin, row_step, column_step = np.array([-40.0, -30.0, 102.0]), 0.6, 1.5  # slice 1; PixelSpacing (row, column)
    corners = [(3, 2), (10, 2), (10, 5), (3, 5)]  # (column, row)
    contour = [float(v) for c, r in corners for v in origin + [c * column_step, r * row_step, 0.0]]
    structure_set = pydicom.dcmread(write_rtstruct(tmp_path / "ct", {"Box": np.ones((3, 12, 20))}, tmp_path / "rt.dcm"))
    item = structure_set.ROIContourSequence[0]
    item.ContourSequence = item.ContourSequence[:1]
    item.ContourSequence[0].ContourData = contour
    item.ContourSequence[0].NumberOfContourPoints = len(corners)
    structure_set.save_as(tmp_path / "box.dcm")
    expected = np.zeros((3, 12, 20), np.uint8)
    expected[1, 2:6, 3:11] = 1
    assert np.array_equal(label_array(tmp_path / "box.dcm", tmp_path / "ct"), expected)


def test_protect_a_series_with_a_seg_into_a_dicom_series(two_structures, tmp_path, protector_file):
    series, liver, tumor = two_structures
    seg = write_seg(series, liver * 1 + tumor * 2, ["Liver", "Tumor"], tmp_path / "seg.dcm")
    out = tmp_path / "out"
    argv = ["protect", str(series), str(seg), "-o", f"{out}/", "--protector", str(protector_file)]
    argv += ["--segments", "Tumor"]
    assert main(argv) == 0
    protected = sitk.GetArrayFromImage(io.read_image(out))
    changed = protected != sitk.GetArrayFromImage(io.read_image(series))
    near_tumor = binary_dilation(tumor, iterations=5)  # the ROI and its contour band
    assert changed.any() and not (changed & ~near_tumor).any()  # the liver segment was not selected


def test_segments_apply_to_dicom_masks_only(ct_series, tmp_path, capsys):
    series, _, labels = ct_series
    mask = sitk.GetImageFromArray(labels.astype(np.uint8))
    mask.CopyInformation(io.read_image(series))
    sitk.WriteImage(mask, str(tmp_path / "mask.nii.gz"))
    assert (
        main(
            [
                "protect",
                str(series),
                str(tmp_path / "mask.nii.gz"),
                "-o",
                str(tmp_path / "p.nii.gz"),
                "--segments",
                "Liver",
            ]
        )
        == 2
    )
    assert "--segments applies to DICOM SEG and RTSTRUCT masks only, not to" in capsys.readouterr().err
