"""DICOM series in and out: compressed series decoded for reading, protected series written with the source's tags.

A protected series keeps every attribute of its source except the pixel data and what must change
for a derived series: new Series and SOP Instance UIDs (same study, same frame of reference),
ImageType DERIVED, a DerivationDescription, UMedProtect in the ContributingEquipmentSequence and a
suffixed SeriesDescription. Stored values keep the source's pixel representation, bits and
rescale, so the protected values must map back to stored integers exactly; anything else is refused.
pydicom is imported at the point of use.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

SERIES_SUFFIX = " [UMedProtect]"
OUTPUT_FILE_PATTERN = "IM{:05d}.dcm"
MANUFACTURER = "UMedProtect"
PROCESSING_EQUIPMENT = ("109102", "DCM", "Processing Equipment")  # purpose of reference (CID 7005)
GREY_LEVELS = ("MONOCHROME1", "MONOCHROME2")
REMOVED_ATTRIBUTES = (
    "IconImageSequence",  # a thumbnail of the unprotected pixels
    "SmallestImagePixelValue",  # set again from the protected pixels when present
    "LargestImagePixelValue",
)
LONG_STRING_MAX = 64  # characters of a LO value (SeriesDescription)
SHORT_TEXT_MAX = 1024  # characters of an ST value (DerivationDescription)


@contextlib.contextmanager
def decoded_files(files: Sequence[str]) -> Iterator[list[str]]:
    """The files of a series as SimpleITK reads them: compressed files decoded by pydicom into a temporary folder.

    pydicom (with pylibjpeg, pyjpegls and its RLE decoder) decodes every compressed transfer syntax the same
    way for every front end; a file it cannot decode is an InputError naming the file and its syntax.
    """
    import pydicom

    readable, temporary = list(files), None
    try:
        for index, name in enumerate(files):
            syntax = read_header(name).file_meta.get("TransferSyntaxUID")
            if syntax is None or not syntax.is_compressed:
                continue
            dataset = pydicom.dcmread(name)
            try:
                dataset.decompress(generate_instance_uid=False)
            except Exception as exc:  # noqa: BLE001 - pydicom's plugins raise many types for undecodable data
                reason = str(exc).strip().splitlines()[-1].strip()[:160]  # pydicom: one line per decoder tried
                raise InputError(f"{name}: cannot decode its {syntax.name} pixel data ({reason})") from None
            temporary = temporary or Path(tempfile.mkdtemp(prefix="umedprotect-decoded-"))
            readable[index] = str(temporary / f"{index:05d}.dcm")
            dataset.save_as(readable[index], enforce_file_format=True)
        yield readable
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def read_header(name: str):
    """A DICOM file's attributes without its pixel data (files without a preamble or file meta too)."""
    import pydicom

    try:
        return pydicom.dcmread(name, stop_before_pixels=True, force=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for malformed files
        raise InputError(f"{name}: not a readable DICOM file ({type(exc).__name__})") from None


@dataclass(frozen=True)
class SeriesSource:
    """The files of a source series in SimpleITK's slice order, and their headers (no pixel data)."""

    files: list[str]
    headers: list


def read_source(folder: str | os.PathLike, series_uid: str | None = None) -> SeriesSource:
    """The series a protected series is derived from, checked before any work: single-frame grey-level slices
    whose protected values can be stored back (integer rescale, 8, 16 or 32 bits allocated)."""
    from .io import dicom_series_files

    files = dicom_series_files(Path(folder), series_uid)
    headers = [read_header(name) for name in files]
    for name, header in zip(files, headers):
        problem = _storage_problem(header)
        if problem:
            raise InputError(f"{name}: {problem}; write a file output (.nrrd, .nii.gz) instead of a DICOM series")
    return SeriesSource(files, headers)


def check_output_folder(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Validate a DICOM output folder before any work: new or empty, or (with ``overwrite``) holding only .dcm files."""
    from .io import check_writable_dir

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: exists and is not a folder; a DICOM series is written into a folder")
    if path.is_dir():
        entries = list(path.iterdir())
        if entries and not overwrite:
            raise InputError(
                f"{path}: output folder is not empty (only its DICOM files are replaced)", option="overwrite"
            )
        if any(not (entry.is_file() and entry.suffix.lower() == ".dcm") for entry in entries):
            raise InputError(f"{path}: output folder holds files other than a DICOM series; choose an empty or new one")
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"{path}: output folder is not writable")
    check_writable_dir(path.parent)
    return path


def derivation_description(method: str, parameters: dict, protector_sha256: str | None) -> str:
    """The DerivationDescription of a protected series: software, method, budget and protector."""
    from . import __version__

    text = f"Protected against unauthorised AI training by UMedProtect {__version__}: method {method}"
    text += f", epsilon {parameters['epsilon']:g}"
    if parameters.get("band_radius") is not None:
        text += f", band radius {parameters['band_radius']}"
    if protector_sha256:
        text += f", protector sha256 {protector_sha256}"
    return text


def write_series(
    protected: np.ndarray,
    reference: sitk.Image,
    source: SeriesSource,
    folder: str | os.PathLike,
    description: str,
    overwrite: bool = False,
) -> Path:
    """Write ``protected`` (the voxels of ``reference``, read from ``source``) as a derived DICOM series in ``folder``.

    Files are written to a temporary folder, read back with SimpleITK and compared with ``protected``
    and the geometry of ``reference`` before the folder is moved into place.
    """
    import pydicom

    from .io import geometry_difference

    folder = check_output_folder(folder, overwrite)
    slices = protected.reshape(len(source.files), -1, protected.shape[-1])
    identity = f"{description}; voxels sha256 {hashlib.sha256(np.ascontiguousarray(protected).tobytes()).hexdigest()}"
    series_uid = _uid(source.headers[0].SeriesInstanceUID, identity)  # another protection gets other UIDs
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        for number, (name, header, values) in enumerate(zip(source.files, source.headers, slices), start=1):
            dataset = _derived(header, _stored_values(values, header, name), series_uid, description, identity)
            pydicom.dcmwrite(
                staging / OUTPUT_FILE_PATTERN.format(number),
                dataset,
                enforce_file_format=True,
                little_endian=True,
                implicit_vr=False,
            )
        written = _read_back(staging)
        problem = geometry_difference(written, reference)
        if problem or not np.array_equal(sitk.GetArrayViewFromImage(written).reshape(protected.shape), protected):
            problem = problem or "voxels differ"
            raise RuntimeError(f"{folder}: the written series does not read back as the protected image ({problem})")
        _move_into_place(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _storage_problem(header) -> str | None:
    """Why protected values could not be stored back in this slice's pixel format, or None."""
    if int(header.get("NumberOfFrames", 1) or 1) != 1:
        return "multi-frame (enhanced) DICOM cannot be written back"
    if int(header.get("SamplesPerPixel", 1)) != 1 or header.get("PhotometricInterpretation") not in GREY_LEVELS:
        return "only grey-level (MONOCHROME) DICOM can be written back"
    if int(header.get("BitsAllocated", 0)) not in (8, 16, 32):
        return f"BitsAllocated {header.get('BitsAllocated')} cannot be written back"
    slope, intercept = _rescale(header)
    if slope != round(slope) or intercept != round(intercept) or slope == 0:
        return (
            f"rescale slope {slope:g} and intercept {intercept:g} are not integers, "
            "so protected values cannot be stored exactly"
        )
    return None


def _rescale(header) -> tuple[float, float]:
    slope = header.get("RescaleSlope")
    intercept = header.get("RescaleIntercept")
    return float(1 if slope in (None, "") else slope), float(0 if intercept in (None, "") else intercept)


def _stored_values(values: np.ndarray, header, name: str) -> np.ndarray:
    """Stored pixel values ``(value - intercept) / slope`` in the source's pixel format; InputError unless exact."""
    slope, intercept = _rescale(header)
    stored = (values.astype(np.float64) - intercept) / slope
    bits, signed = int(header.BitsStored), int(header.PixelRepresentation) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if not np.array_equal(stored, np.round(stored)) or stored.min() < low or stored.max() > high:
        raise InputError(
            f"{name}: the protected values do not map back exactly to {bits}-bit stored values "
            f"(rescale slope {slope:g}, intercept {intercept:g}); write a file output (.nrrd, .nii.gz) instead"
        )
    dtype = np.dtype(f"{'i' if signed else 'u'}{int(header.BitsAllocated) // 8}")
    return stored.astype(dtype).reshape(int(header.Rows), int(header.Columns))


def _derived(header, stored: np.ndarray, series_uid: str, description: str, identity: str):
    """A copy of the source header with the protected pixels and the attributes of a derived instance.

    ``identity`` (the description and the protected voxels' hash) seeds the new instance UIDs.
    """
    import copy

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    from . import __version__

    dataset = copy.deepcopy(header)
    for keyword in REMOVED_ATTRIBUTES:
        if keyword in dataset:
            del dataset[keyword]
    if "SmallestImagePixelValue" in header:
        dataset.SmallestImagePixelValue, dataset.LargestImagePixelValue = int(stored.min()), int(stored.max())
        for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
            dataset[keyword].VR = "SS" if stored.dtype.kind == "i" else "US"
    dataset.PixelData = stored.tobytes()
    dataset["PixelData"].VR = "OB" if stored.dtype.itemsize == 1 else "OW"
    dataset.SeriesInstanceUID = series_uid
    meta = header.file_meta  # some anonymisers leave the SOP UIDs in the file meta only
    dataset.SOPClassUID = header.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID")
    dataset.SOPInstanceUID = _uid(header.get("SOPInstanceUID") or meta.get("MediaStorageSOPInstanceUID"), identity)
    image_type = header.get("ImageType", ["DERIVED", "SECONDARY"])
    dataset.ImageType = ["DERIVED", *([] if isinstance(image_type, str) else list(image_type)[1:])]
    previous = header.get("DerivationDescription")
    dataset.DerivationDescription = (f"{previous}; {description}" if previous else description)[-SHORT_TEXT_MAX:]
    base = str(header.get("SeriesDescription", "") or "")
    dataset.SeriesDescription = (base[: LONG_STRING_MAX - len(SERIES_SUFFIX)] + SERIES_SUFFIX).strip()
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = PROCESSING_EQUIPMENT
    equipment = Dataset()
    equipment.Manufacturer = MANUFACTURER
    equipment.ManufacturerModelName = "umedprotect"
    equipment.SoftwareVersions = __version__
    equipment.ContributionDescription = description[:SHORT_TEXT_MAX]
    equipment.PurposeOfReferenceCodeSequence = [purpose]
    dataset.ContributingEquipmentSequence = [*header.get("ContributingEquipmentSequence", []), equipment]
    dataset.file_meta = FileMetaDataset()  # written by this software: nothing of the source's file meta applies
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    dataset.file_meta.ImplementationVersionName = f"UMEDPROTECT{__version__}"[:16]
    return dataset


def _uid(source_uid: str, description: str) -> str:
    """A new UID derived from a source UID and the protection: the same input and settings give the same UID."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(source_uid), description])


def _read_back(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _move_into_place(staging: Path, folder: Path) -> None:
    """Rename the staging folder to ``folder``, replacing an empty or previous output folder."""
    previous = None
    if folder.exists():
        previous = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".previous", dir=folder.parent))
        os.replace(folder, previous)
    os.replace(staging, folder)
    if previous is not None:
        shutil.rmtree(previous)
