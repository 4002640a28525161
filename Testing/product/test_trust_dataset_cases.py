"""Case-level promises of protect-dataset, each pinned so that breaking the code behind it fails a test.

A mask off the image grid or with values dataset.json does not declare is refused before anything is
written; a case is empty when its mask holds none of the *selected* labels: skipped, or with empty masks
allowed copied unchanged, its manifest record saying so (hashes of the real files, no change at all),
and a rerun replaces an earlier copy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import write_nnunet_dataset

from umedprotect import io
from umedprotect.array_protection import ProtectionResult
from umedprotect.dataset_protection import MANIFEST_NAME, protect_dataset
from umedprotect.errors import InputError
from umedprotect.intensity import Window
from umedprotect.records import DatasetManifest
from umedprotect.settings import ProtectionSettings

CASES = ("case000", "case001", "case002")
EMPTY_CASE = "case001"
IMAGE = f"imagesTr/{EMPTY_CASE}_0000.nii.gz"
LABEL = f"labelsTr/{EMPTY_CASE}.nii.gz"


def raise_masked_voxels(image, labels, spacing=None) -> ProtectionResult:
    """A case protector that adds 1 to every voxel of the mask: a protected case differs from its source."""
    protected = image + (labels != 0).astype(image.dtype)
    changed = protected != image
    metrics = dict(psnr_db=60.0, ssim=0.99, max_abs_change=1.0, fraction_changed=float(changed.mean()))
    return ProtectionResult(protected, image, labels != 0, Window(0.0, 1.0), 1.0, 0, metrics)


@pytest.fixture
def source(tmp_path):
    """Three cases; every mask holds labels 1 and 2, except case001's, which holds label 1 only."""
    root = write_nnunet_dataset(tmp_path / "Dataset012_Cases", n_train=len(CASES), n_test=1, shape=(4, 24, 24))
    for case_id in CASES:
        values = np.zeros((4, 24, 24), np.uint8)
        values[1:3, 4:10, 4:10] = 1
        if case_id != EMPTY_CASE:
            values[1:3, 14:20, 14:20] = 2
        set_mask(root, case_id, values)
    return root


def set_mask(root, case_id: str, values: np.ndarray) -> None:
    path = root / "labelsTr" / f"{case_id}.nii.gz"
    io.write_like(values, sitk.ReadImage(str(path)), path, overwrite=True)


def protect(source, out, *, labels=None, allow_empty=False, overwrite=False) -> DatasetManifest:
    parameters = ProtectionSettings(labels=labels).recorded()
    return protect_dataset(
        source,
        out,
        raise_masked_voxels,
        "raise_masked_voxels",
        parameters,
        allow_empty=allow_empty,
        overwrite=overwrite,
        progress=False,
    )


def move_mask_origin(label: sitk.Image) -> sitk.Image:
    label.SetOrigin([x + 5.0 for x in label.GetOrigin()])
    return label


def crop_mask(label: sitk.Image) -> sitk.Image:
    return label[:, :, 1:]


@pytest.mark.parametrize("change, problem", [(move_mask_origin, "mask origin"), (crop_mask, "mask size")])
def test_a_mask_off_the_image_grid_is_refused_with_the_nnunet_hint_before_writing(tmp_path, source, change, problem):
    """Not the resample-mask advice of single images: nnU-Net needs masks on the image grid."""
    path = source / LABEL
    sitk.WriteImage(change(sitk.ReadImage(str(path))), str(path))
    out = tmp_path / "out"
    with pytest.raises(InputError) as refused:
        protect(source, out)
    message = str(refused.value)
    assert message.startswith(f"{path}: {problem}"), message
    assert message.endswith(" (nnU-Net needs masks on the image grid)"), message
    assert refused.value.option is None
    assert not out.exists()


def test_mask_values_not_declared_in_dataset_json_are_refused_before_writing(tmp_path, source):
    values = np.zeros((4, 24, 24), np.uint8)
    values[1:3, 4:10, 4:10] = 3  # dataset.json declares 0, 1 and 2
    set_mask(source, EMPTY_CASE, values)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"case001\.nii\.gz: mask values \[3\] are not declared in dataset.json"):
        protect(source, out)
    assert not out.exists()


def test_a_mask_without_the_selected_labels_is_empty_and_skipped(tmp_path, source, caplog):
    out = tmp_path / "out"
    manifest = protect(source, out, labels=(2,))
    assert [manifest.cases[case_id].status for case_id in CASES] == ["protected", "skipped_empty", "protected"]
    assert f"case {EMPTY_CASE} will be skipped, not copied unchanged" in caplog.text
    assert not (out / IMAGE).exists() and not (out / LABEL).exists()
    assert (out / "imagesTr/case000_0000.nii.gz").read_bytes() != (source / "imagesTr/case000_0000.nii.gz").read_bytes()


def test_a_mask_without_the_selected_labels_is_copied_unchanged_when_empty_masks_are_allowed(tmp_path, source):
    out = tmp_path / "out"
    manifest = protect(source, out, labels=(2,), allow_empty=True)
    assert [manifest.cases[case_id].status for case_id in CASES] == ["protected", "copied_empty", "protected"]
    assert (out / IMAGE).read_bytes() == (source / IMAGE).read_bytes()
    assert (out / LABEL).read_bytes() == (source / LABEL).read_bytes()


def test_every_nonzero_label_counts_when_no_labels_are_selected(tmp_path, source):
    manifest = protect(source, tmp_path / "out")
    assert [manifest.cases[case_id].status for case_id in CASES] == ["protected"] * 3


def assert_copied_unchanged(source, out) -> None:
    """The copy holds the source's voxels, and the manifest on disk records the real hashes and no change."""
    assert np.array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(out / IMAGE))),
        sitk.GetArrayFromImage(sitk.ReadImage(str(source / IMAGE))),
    )
    entry = DatasetManifest.read(out / MANIFEST_NAME).cases[EMPTY_CASE]
    assert entry.status == "copied_empty"
    [record] = entry.images
    assert record.input == record.output == IMAGE
    assert record.input_sha256 == io.sha256(source / IMAGE)
    assert record.output_sha256 == io.sha256(out / IMAGE) == record.input_sha256
    assert record.budget_native == 0.0
    assert math.isinf(record.psnr_db) and record.psnr_db > 0
    assert record.ssim == 1.0
    assert record.max_abs_change == 0.0
    assert record.fraction_changed == 0.0


def test_a_case_copied_for_its_empty_mask_is_recorded_with_its_hashes_and_no_change(tmp_path, source):
    set_mask(source, EMPTY_CASE, np.zeros((4, 24, 24), np.uint8))
    out = tmp_path / "out"
    protect(source, out, allow_empty=True)
    assert_copied_unchanged(source, out)


@pytest.mark.parametrize("overwrite", [True, False], ids=["overwrite", "resume"])
def test_a_rerun_replaces_an_earlier_copy_of_a_case_with_an_empty_mask(tmp_path, source, overwrite):
    """With overwrite every case is redone; a resume redoes the case whose copy was damaged."""
    set_mask(source, EMPTY_CASE, np.zeros((4, 24, 24), np.uint8))
    out = tmp_path / "out"
    protect(source, out, allow_empty=True)
    (out / IMAGE).write_bytes((source / "imagesTr/case000_0000.nii.gz").read_bytes())  # a stale copy
    protect(source, out, allow_empty=True, overwrite=overwrite)
    assert (out / IMAGE).read_bytes() == (source / IMAGE).read_bytes()
    assert_copied_unchanged(source, out)
