"""Shared pytest setup: import path, deterministic torch, small synthetic cases."""

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
