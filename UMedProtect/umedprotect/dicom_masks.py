"""Masks from DICOM: Segmentation (SEG) objects and RT Structure Sets (RTSTRUCT) as label maps.

A SEG is read with highdicom: each selected segment becomes the label of its segment number.
An RTSTRUCT is read with pydicom; its closed planar contours are mapped from patient coordinates
to voxel indices with the image's geometry and filled on their slice with OpenCV's polygon filling
(the convention of rt-utils: vertices to the nearest pixel, boundary pixels inside): each selected
ROI becomes the label of its ROI number. Later ROIs in the selection win where ROIs overlap;
unselected ROIs without a contour on the image (markers, other scans) are left out.
Either is refused when its FrameOfReferenceUID differs from a DICOM image's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
KINDS = {SEG_STORAGE: "SEG", RTSTRUCT_STORAGE: "RTSTRUCT"}
DICOM_MAGIC_OFFSET = 128  # a DICOM file: 128-byte preamble, then b"DICM"
SLICE_TOLERANCE = 0.25  # how far (in slices) a contour's plane may lie from the nearest slice centre


def mask_kind(path: str | os.PathLike) -> str | None:
    """``"SEG"`` or ``"RTSTRUCT"`` for a DICOM Segmentation or RT Structure Set file, else None (cheap)."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as handle:
        if handle.read(DICOM_MAGIC_OFFSET + 4)[DICOM_MAGIC_OFFSET:] != b"DICM":
            return None
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - not a DICOM mask; the label-map reader reports the problem
        return None
    return KINDS.get(str(header.get("SOPClassUID", "")))


def read_mask(
    path: str | os.PathLike,
    kind: str,
    reference: sitk.Image,
    frame_of_reference: str | None,
    segments: Sequence[str] | None,
) -> sitk.Image:
    """A SEG or RTSTRUCT file (``kind``, see :func:`mask_kind`) as a label map: a SEG on its own grid,
    an RTSTRUCT on ``reference``'s grid.

    ``segments`` selects segments or ROIs by name (case-insensitive) or number; None takes all of them.
    ``frame_of_reference`` is the image's FrameOfReferenceUID when it was read from DICOM.
    """
    reader = {"SEG": _read_seg, "RTSTRUCT": _read_rtstruct}[kind]
    return reader(Path(path), reference, frame_of_reference, segments)


def _select(path: Path, kind: str, available: dict[int, str], requested: Sequence[str] | None) -> list[int]:
    """Numbers of the requested segments or ROIs (by name or number), in the order given."""
    if requested is None:
        return sorted(available)
    by_name = {name.strip().lower(): number for number, name in available.items()}
    chosen = []
    for item in requested:
        number = by_name.get(item.strip().lower())
        if number is None and item.strip().isdigit() and int(item) in available:
            number = int(item)
        if number is None:
            listing = ", ".join(f"{n} {name!r}" for n, name in sorted(available.items()))
            raise InputError(f"{path}: {kind} {item!r} not found (it holds {listing or 'none'})", option="segments")
        chosen.append(number)
    return chosen


def _check_frame(path: Path, mask_frame: str | None, image_frame: str | None) -> None:
    if image_frame and mask_frame and mask_frame != image_frame:
        raise InputError(
            f"{path}: FrameOfReferenceUID {mask_frame} differs from the image's {image_frame}; "
            "the mask was not drawn on this image's patient coordinates"
        )


def _label_dtype(numbers: Sequence[int]) -> np.dtype:
    return np.dtype(np.uint8 if max(numbers, default=0) <= 255 else np.uint16)


def _read_seg(path: Path, reference: sitk.Image, image_frame: str | None, segments: Sequence[str] | None) -> sitk.Image:
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001 - highdicom/pydicom raise many types for malformed files
        raise InputError(f"{path}: not a readable DICOM SEG ({type(exc).__name__})") from None
    _check_frame(path, str(seg.get("FrameOfReferenceUID", "")) or None, image_frame)
    if seg.segmentation_type != hd.seg.SegmentationTypeValues.BINARY:
        raise InputError(f"{path}: a {seg.segmentation_type.value} SEG holds no labels; threshold it into a BINARY SEG")
    available = {n: seg.get_segment_description(n).segment_label for n in seg.segment_numbers}
    numbers = _select(path, "segment", available, segments)
    try:
        volume = seg.get_volume(
            segment_numbers=numbers, combine_segments=True, skip_overlap_checks=True, dtype=_label_dtype(numbers)
        )
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: the SEG frames do not form a regular volume ({exc})") from None
    return volume.to_simpleitk()


def _read_rtstruct(
    path: Path, reference: sitk.Image, image_frame: str | None, segments: Sequence[str] | None
) -> sitk.Image:
    import cv2
    import pydicom

    try:
        structure_set = pydicom.dcmread(path)
        rois = {int(roi.ROINumber): roi for roi in structure_set.StructureSetROISequence}
        contours = {
            int(item.ReferencedROINumber): item.get("ContourSequence", []) for item in structure_set.ROIContourSequence
        }
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for malformed files
        raise InputError(f"{path}: not a readable RT Structure Set ({type(exc).__name__})") from None
    numbers = _select(path, "ROI", {n: str(roi.ROIName) for n, roi in rois.items()}, segments)
    size = reference.GetSize()
    if reference.GetDimension() != 3:
        raise InputError(f"{path}: an RT Structure Set needs a 3D image")
    labels = np.zeros(tuple(reversed(size)), dtype=_label_dtype(numbers))
    index_to_point = np.array(reference.GetDirection()).reshape(3, 3) * np.array(reference.GetSpacing())
    point_to_index, origin = np.linalg.inv(index_to_point), np.array(reference.GetOrigin())
    for number in numbers:
        _check_frame(path, str(rois[number].get("ReferencedFrameOfReferenceUID", "")) or None, image_frame)
        drawn = np.zeros_like(labels, dtype=np.uint8)
        polygons: dict[int, list[np.ndarray]] = {}
        for contour in contours.get(number, []):
            if contour.get("ContourGeometricType", "CLOSED_PLANAR") != "CLOSED_PLANAR":
                continue  # points and open polylines enclose no area
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            indices = (points - origin) @ point_to_index.T  # continuous (i, j, k) voxel indices
            k = float(np.mean(indices[:, 2]))
            if abs(k - round(k)) > SLICE_TOLERANCE or not 0 <= round(k) < size[2]:
                continue  # between slices or outside the image
            polygons.setdefault(round(k), []).append(np.round(indices[:, :2]).astype(np.int32))
        if not polygons:
            if segments is None:
                continue  # markers and structures of other scans in an unselected RTSTRUCT
            raise InputError(f"{path}: ROI {rois[number].ROIName!r} has no contour on this image's slices")
        for k, slice_polygons in polygons.items():
            cv2.fillPoly(drawn[k], slice_polygons, 1)
        labels[drawn > 0] = number
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(reference)
    return label_image
