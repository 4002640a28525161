"""Shared pytest setup: deterministic torch, small synthetic cases."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)

MISSING_TIER = "is not installed"  # how tests word a skip for want of an optional tier (slicer-core, eval, PySide6)


def _fail_missing_tier_in_ci(report) -> None:
    """In CI (``CI=true``, set by .ci/run) the tiers CI installs must run: a skip for a missing package fails."""
    if report.skipped and os.environ.get("CI", "").lower() == "true" and isinstance(report.longrepr, tuple):
        reason = report.longrepr[2]
        if MISSING_TIER in reason:
            report.outcome = "failed"
            report.longrepr = f"{reason} (CI=true: the tiers CI installs must not skip)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    _fail_missing_tier_in_ci((yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    _fail_missing_tier_in_ci((yield).get_result())


@pytest.fixture
def random_protector():
    """An untrained protector: generators at zero, so it draws its random (seeded) codes; not tuned."""
    from umedprotect.protector import Protector

    torch.manual_seed(0)
    return Protector().eval()


@pytest.fixture
def phantom2d():
    from umedprotect.phantoms import phantom_slice

    return phantom_slice((64, 64), n_lesions=2, rng=0)


@pytest.fixture
def phantom3d():
    from umedprotect.phantoms import phantom_volume

    return phantom_volume((10, 48, 40), n_lesions=2, rng=1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def weights_fingerprint(model: torch.nn.Module) -> tuple[float, float]:
    """(sum, index-weighted sum) of the L2 norms of ``model``'s tensors: the same on every CPU up to float rounding
    (about 1e-6 relative), where the weights' bits differ with the kernels torch picks for the processor."""
    norms = [float(value.double().norm()) for value in model.state_dict().values()]
    return sum(norms), sum(i * norm for i, norm in enumerate(norms, 1))


PINNED_TOLERANCE = {"rel": 1e-5, "abs": 1e-9}  # ten times the rounding differences measured between CPUs


def tiny_evaluate_argv(clean: str, protected: str, *options: str) -> list[str]:
    """``umedprotect evaluate`` on the CPU with one one-iteration epoch of two 32-pixel patches, then ``options``."""
    tiny = "--epochs 1 --iterations 1 --batch-size 2 --patch-size 32 --device cpu".split()
    return ["evaluate", clean, protected, *tiny, *options]


def write_nnunet_dataset(
    root: Path,
    n_train: int = 3,
    n_test: int = 1,
    shape: tuple[int, ...] = (6, 32, 32),
    n_lesions: int = 2,
    file_ending: str = ".nii.gz",
    dtype: str = "int16",
    seed: int = 0,
) -> Path:
    """Write a tiny nnU-Net v2 raw dataset of phantoms (anisotropic spacing, rotated direction)."""
    import json

    import SimpleITK as sitk

    from umedprotect.phantoms import phantom_slice, phantom_volume

    root = Path(root)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    spacing = (0.8, 0.7, 2.5)[: len(shape)]
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0) if len(shape) == 3 else (0.0, 1.0, -1.0, 0.0)

    def write(array, path):
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(spacing)
        img.SetOrigin(tuple(float(10 * i + 1) for i in range(len(shape))))
        img.SetDirection(direction)
        sitk.WriteImage(img, str(path), useCompression=True)

    for k in range(n_train + n_test):
        if len(shape) == 3:
            image, labels = phantom_volume(shape, n_lesions=n_lesions, rng=seed + k)
        else:
            image, labels = phantom_slice(shape, n_lesions=n_lesions, rng=seed + k)
        split = ("imagesTr", "labelsTr") if k < n_train else ("imagesTs", "labelsTs")
        case = f"case{k:03d}"
        write(image.astype(dtype), root / split[0] / f"{case}_0000{file_ending}")
        write(labels, root / split[1] / f"{case}{file_ending}")
    meta = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{f"lesion{i}": i for i in range(1, n_lesions + 1)}},
        "numTraining": n_train,
        "file_ending": file_ending,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


@pytest.fixture
def nnunet_dataset(tmp_path):
    """A tiny 3D nnU-Net v2 raw dataset: 3 training cases, 1 test case, int16 images."""
    return write_nnunet_dataset(tmp_path / "Dataset001_Tiny")


@pytest.fixture
def protector_file(tmp_path_factory):
    """Path of a saved protector with fixed random weights (fast; its output is not tuned)."""
    from umedprotect.protector import Protector, save_protector

    torch.manual_seed(0)
    return save_protector(Protector().eval(), tmp_path_factory.mktemp("protector") / "random.safetensors")


def write_image(array: np.ndarray, path: Path, spacing=None, origin=None, direction=None) -> Path:
    """Write ``array`` ((z,) y, x) with SimpleITK and the given geometry (defaults: anisotropic, rotated)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    n = array.ndim
    image.SetSpacing(spacing or (0.8, 0.7, 2.5)[:n])
    image.SetOrigin(origin or (-12.5, 30.25, 7.0)[:n])
    if direction is None:
        c, s = np.cos(0.3), np.sin(0.3)
        direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0) if n == 3 else (c, -s, s, c)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=True)
    return Path(path)


def write_dicom_series(volume: np.ndarray, folder: Path, series_uid: str, spacing=(0.7, 0.7, 2.0)) -> Path:
    """Write an int16 (z, y, x) volume as a minimal CT DICOM series (one file per slice)."""
    import SimpleITK as sitk

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(volume.shape[0]):
        image = sitk.GetImageFromArray(volume[z : z + 1].astype(np.int16))
        image.SetSpacing(spacing)
        image.SetOrigin((0.0, 0.0, z * spacing[2]))
        tags = {
            "0008|0060": "CT",
            "0010|0020": "PHANTOM",
            "0020|000d": series_uid.rsplit(".", 1)[0] + ".9",
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{z + 1}",
            "0020|0013": str(z + 1),
            "0020|0032": f"0\\0\\{z * spacing[2]}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": str(spacing[2]),
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{series_uid[-6:]}_{z:03d}.dcm"))
        writer.Execute(image)
    return folder


def write_ct_series(
    hu: np.ndarray,
    folder: Path,
    *,
    intercept: float = -1024.0,
    slope: float = 1.0,
    bits_stored: int = 12,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    spacing=(0.7, 0.8, 2.5),
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    frame_uid: str = "1.2.826.0.1.3680043.8.498.2",
) -> list[Path]:
    """Write a (z, y, x) volume of HU values as a CT series with pydicom: unsigned stored values
    ``(hu - intercept) / slope``, a full CT Image header, a private tag, and the given transfer syntax
    (compressed syntaxes are encoded by pydicom). ``spacing`` is (row, column, slice) spacing; slices are
    stacked along the normal of ``orientation``. Files are named in reverse slice order."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid(entropy_srcs=[str(folder), "series"])
    stored = np.rint((hu - intercept) / slope).astype(np.uint16)
    normal = np.cross(orientation[:3], orientation[3:])
    assert stored.max() < 2**bits_stored and np.array_equal(stored * slope + intercept, hu)
    paths = []
    for z, plane in enumerate(stored):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(z)])
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyDate, ds.StudyTime, ds.ContentDate, ds.ContentTime = "20240102", "101500", "20240102", "101600"
        ds.AccessionNumber, ds.Modality, ds.Manufacturer = "A123", "CT", "ACME"
        ds.ReferringPhysicianName, ds.StudyDescription, ds.SeriesDescription = "", "Abdomen", "CT Abdomen 2.5"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "PHANTOM^ONE", "PH001", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = "1", 3, z + 1, 1
        ds.PatientPosition, ds.Laterality, ds.PositionReferenceIndicator, ds.KVP = "HFS", "", "", 120
        ds.ImagePositionPatient = [float(v) for v in np.array([-40.0, -30.0, 100.0]) + z * spacing[2] * normal]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.SliceThickness, ds.PixelSpacing = spacing[2], [spacing[0], spacing[1]]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = plane.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = intercept, slope, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.SmallestImagePixelValue, ds.LargestImagePixelValue = int(plane.min()), int(plane.max())
        ds["SmallestImagePixelValue"].VR = ds["LargestImagePixelValue"].VR = "US"
        ds.add_new(0x00090010, "LO", "ACME")  # private creator
        ds.add_new(0x00091001, "LO", "vendor detail")
        ds.PixelData = plane.tobytes()
        ds["PixelData"].VR = "OW"
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax, generate_instance_uid=False)
        path = folder / f"slice{len(stored) - z:03d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def ct_series(tmp_path):
    """A small CT series (HU, unsigned 12-bit stored values, intercept -1024) and its lesion labels."""
    from umedprotect.phantoms import phantom_volume

    image, labels = phantom_volume((5, 32, 32), n_lesions=2, rng=3)
    hu = np.clip(np.rint(image), -1024, 3071)
    write_ct_series(hu, tmp_path / "ct")
    return tmp_path / "ct", hu, labels
