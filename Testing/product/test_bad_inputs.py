"""Battery of bad inputs through the CLI: exit code 2, one line naming the problem, nothing written or changed."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from conftest import ROOT, write_ct_series, write_dicom_series, write_image, write_nnunet_dataset

from umedprotect import cli
from umedprotect.cli import main, option_message
from umedprotect.phantoms import phantom_slice, phantom_volume

CASES = {}


def bad(message: str):
    """Register a setup ``(tmp_path, protector) -> argv`` whose run must fail with ``message``."""

    def register(setup):
        CASES[setup.__name__] = (setup, message)
        return setup

    return register


def base(tmp_path: Path, image=None, labels=None, ending=".nii.gz") -> tuple[Path, Path, Path]:
    """A valid image and mask in tmp/in (or the given arrays), and tmp/out as the output folder."""
    default_image, default_labels = phantom_volume((6, 32, 32), n_lesions=1, rng=0)
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "out").mkdir(exist_ok=True)
    image_path = write_image(
        default_image.astype(np.int16) if image is None else image, tmp_path / "in" / f"ct{ending}"
    )
    mask_path = write_image(default_labels if labels is None else labels, tmp_path / "in" / f"mask{ending}")
    return image_path, mask_path, tmp_path / "out" / f"protected{ending}"


def protect_argv(image, mask, out, protector, *extra) -> list[str]:
    return ["protect", str(image), str(mask), "-o", str(out), "--protector", str(protector), *map(str, extra)]


def labels_like(shape=(6, 32, 32)):
    return phantom_volume(shape, n_lesions=1, rng=0)[1]


# --- files that are missing, not images, or damaged --------------------------------------------


@bad("file not found")
def missing_image(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(tmp / "in" / "nope.nii.gz", mask, out, protector)


@bad("file not found")
def missing_mask(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, tmp / "in" / "nope.nii.gz", out, protector)


@bad("not a readable image")
def text_file_as_image(tmp, protector):
    image, mask, out = base(tmp)
    (tmp / "in" / "notes.nrrd").write_text("patient notes, not an image\n")
    return protect_argv(tmp / "in" / "notes.nrrd", mask, out, protector)


@bad("truncated or corrupt")
def truncated_nifti_gz(tmp, protector):
    image, mask, out = base(tmp)
    data = image.read_bytes()
    image.write_bytes(data[: len(data) * 2 // 3])
    return protect_argv(image, mask, out, protector)


@bad("file is truncated")
def truncated_nifti(tmp, protector):
    image, mask, out = base(tmp, ending=".nii")
    data = image.read_bytes()
    image.write_bytes(data[: len(data) - 100])
    return protect_argv(image, mask, out, protector)


@bad("cannot read the image data")
def truncated_nrrd(tmp, protector):
    image, mask, out = base(tmp, ending=".nrrd")
    data = image.read_bytes()
    image.write_bytes(data[: len(data) - 50])
    return protect_argv(image, mask, out, protector)


@bad("is a folder")
def folder_as_mask(tmp, protector):
    image, mask, out = base(tmp)
    (tmp / "in" / "masks").mkdir()
    return protect_argv(image, tmp / "in" / "masks", out, protector)


# --- image content ---------------------------------------------------------------------------


@bad("NaN or infinite")
def nan_voxels(tmp, protector):
    volume = phantom_volume((6, 32, 32), n_lesions=1, rng=0)[0]
    volume[3, 10, 10] = np.nan
    image, mask, out = base(tmp, image=volume, ending=".nrrd")
    return protect_argv(image, mask, out, protector)


@bad("NaN or infinite")
def infinite_voxels(tmp, protector):
    volume = phantom_volume((6, 32, 32), n_lesions=1, rng=0)[0].astype(np.float64)
    volume[0, 0, 0] = -np.inf
    image, mask, out = base(tmp, image=volume, ending=".mha")
    return protect_argv(image, mask, out, protector)


@bad("NaN or infinite")
def nan_voxels_in_nifti(tmp, protector):  # ITK's NIfTI reader silently turns NaN into 0
    volume = phantom_volume((6, 32, 32), n_lesions=1, rng=0)[0]
    volume[2, 5, 5] = np.nan
    image, mask, out = base(tmp, image=volume, ending=".nii")
    return protect_argv(image, mask, out, protector)


@bad("image is constant")
def constant_image(tmp, protector):
    image, mask, out = base(tmp, image=np.full((6, 32, 32), 40, np.int16))
    return protect_argv(image, mask, out, protector)


@bad("4D images are not supported")
def four_d_image(tmp, protector):
    image, mask, out = base(tmp)
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(image)))
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([volume, volume]), isVector=False), str(tmp / "in" / "ct4d.nii.gz"))
    return protect_argv(tmp / "in" / "ct4d.nii.gz", mask, out, protector)


@bad("3 components per voxel")
def rgb_image(tmp, protector):
    image, mask, out = base(tmp)
    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp / "in" / "photo.png"))
    return protect_argv(tmp / "in" / "photo.png", mask, out, protector)


@bad("GiB of memory")
def too_large_for_memory(tmp, protector):
    image, mask, out = base(tmp)
    header = (
        "ObjectType = Image\nNDims = 3\nDimSize = 5000 5000 5000\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n"
    )
    (tmp / "in" / "huge.mha").write_bytes(header.encode() + bytes(128))
    return protect_argv(tmp / "in" / "huge.mha", mask, out, protector)


# --- mask problems ---------------------------------------------------------------------------


@bad("does not match image size")
def mask_size_mismatch(tmp, protector):
    image, mask, out = base(tmp, labels=labels_like((6, 32, 30)))
    return protect_argv(image, mask, out, protector)


@bad("spacing")
def mask_spacing_mismatch(tmp, protector):
    image, mask, out = base(tmp)
    write_image(labels_like(), mask, spacing=(0.8, 0.7, 3.0))
    return protect_argv(image, mask, out, protector)


@bad("origin")
def mask_origin_mismatch(tmp, protector):
    image, mask, out = base(tmp)
    write_image(labels_like(), mask, origin=(0.0, 0.0, 0.0))
    return protect_argv(image, mask, out, protector)


@bad("direction differs")
def mask_direction_mismatch(tmp, protector):
    image, mask, out = base(tmp)
    write_image(labels_like(), mask, direction=(1.0, 0, 0, 0, 1, 0, 0, 0, 1))
    return protect_argv(image, mask, out, protector)


@bad("does not match image size")
def mask_2d_for_3d_image(tmp, protector):
    image, mask, out = base(tmp)
    write_image(labels_like()[3], tmp / "in" / "slice.nii.gz")
    return protect_argv(image, tmp / "in" / "slice.nii.gz", out, protector)


@bad("non-integer values")
def mask_with_fractions(tmp, protector):
    image, mask, out = base(tmp, labels=labels_like().astype(np.float32) * 0.5)
    return protect_argv(image, mask, out, protector)


@bad("negative values")
def mask_with_negative_values(tmp, protector):
    image, mask, out = base(tmp, labels=-labels_like().astype(np.int16))
    return protect_argv(image, mask, out, protector)


@bad("mask is empty")
def empty_mask(tmp, protector):
    image, mask, out = base(tmp, labels=np.zeros((6, 32, 32), np.uint8))
    return protect_argv(image, mask, out, protector)


@bad("labels [5] not in the mask")
def labels_not_in_mask(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, out, protector, "--labels", "1,5")


# --- options ----------------------------------------------------------------------------------


@bad("is not a comma-separated list")
def labels_not_numbers(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, out, protector, "--labels", "liver")


@bad("--epsilon 0 is out of range")
def epsilon_zero(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, out, protector, "--epsilon", "0")


@bad("--band-radius 99 is out of range")
def band_radius_too_large(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, out, protector, "--band-radius", "99")


@bad("--min-psnr 5 is out of range")
def min_psnr_too_low(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, out, protector, "--min-psnr", "5")


@bad("invalid choice: 'tpu'")
def unknown_device(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, out, protector, "--device", "tpu")


@bad("no CUDA GPU is available")
def cuda_without_gpu(tmp, protector):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    image, mask, out = base(tmp)
    return protect_argv(image, mask, out, protector, "--device", "cuda")


@bad("unrecognized arguments: --strenght")
def unknown_option(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, out, protector, "--strenght", "3")


@bad("the following arguments are required: -o/--output")
def missing_output_option(tmp, protector):
    image, mask, out = base(tmp)
    return ["protect", str(image), str(mask)]


# --- outputs ----------------------------------------------------------------------------------


@bad("output already exists (use --overwrite")
def output_exists(tmp, protector):
    image, mask, out = base(tmp)
    out.write_bytes(b"an earlier result")
    return protect_argv(image, mask, out, protector)


@bad("would overwrite an input")
def output_is_the_input(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, image, protector, "--overwrite")


@bad("unsupported output format")
def output_format_unknown(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, tmp / "out" / "protected.jpg", protector)


@bad("unsupported output format; use one of .png")
def heatmap_not_png(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, out, protector, "--heatmap", tmp / "out" / "preview.pdf")


@bad("output folder is not writable")
def output_folder_is_a_file(tmp, protector):
    image, mask, out = base(tmp)
    (tmp / "out" / "blocker").write_text("a file where a folder is expected")
    return protect_argv(image, mask, tmp / "out" / "blocker" / "protected.nii.gz", protector)


@bad("output folder is not writable")
def output_folder_read_only(tmp, protector):
    if os.geteuid() == 0:
        pytest.skip("root can write to read-only folders")
    image, mask, out = base(tmp)
    (tmp / "out").chmod(0o555)
    return protect_argv(image, mask, out, protector)


@bad("output folder is not writable")
def output_folder_takes_no_files(tmp, protector):
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc: a folder that takes no files even from root")
    image, mask, out = base(tmp)
    return protect_argv(image, mask, "/proc/umedprotect-test/protected.nii.gz", protector)


# --- protector files ----------------------------------------------------------------------------


@bad("protector file not found")
def protector_missing(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, out, tmp / "in" / "nope.safetensors")


@bad("pickle/zip-based PyTorch files are refused")
def protector_is_a_pickle(tmp, protector):
    image, mask, out = base(tmp)
    (tmp / "in" / "model.safetensors").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    return protect_argv(image, mask, out, tmp / "in" / "model.safetensors")


@bad("not a valid safetensors protector file")
def protector_truncated(tmp, protector):
    image, mask, out = base(tmp)
    data = Path(protector).read_bytes()
    (tmp / "in" / "cut.safetensors").write_bytes(data[: len(data) // 2])
    return protect_argv(image, mask, out, tmp / "in" / "cut.safetensors")


# --- DICOM folders ------------------------------------------------------------------------------


@bad("--series-uid must name one of the 2 DICOM series (1.2.826.0.1.3680043.2.1125.1, 1.2.826.0.1.3680043.2.1125.2)")
def dicom_folder_with_two_series(tmp, protector):
    image, mask, out = base(tmp)
    volume = phantom_volume((6, 32, 32), n_lesions=1, rng=0)[0].astype(np.int16)
    for uid in ("1.2.826.0.1.3680043.2.1125.1", "1.2.826.0.1.3680043.2.1125.2"):
        write_dicom_series(volume, tmp / "in" / "dicom", uid)
    return protect_argv(tmp / "in" / "dicom", mask, out, protector)


@bad("no DICOM series '1.2.3'")
def dicom_unknown_series_uid(tmp, protector):
    image, mask, out = base(tmp)
    volume = phantom_volume((6, 32, 32), n_lesions=1, rng=0)[0].astype(np.int16)
    write_dicom_series(volume, tmp / "in" / "dicom", "1.2.826.0.1.3680043.2.1125.1")
    return protect_argv(tmp / "in" / "dicom", mask, out, protector, "--series-uid", "1.2.3")


@bad("folder holds no DICOM series")
def folder_without_dicom(tmp, protector):
    image, mask, out = base(tmp)
    (tmp / "in" / "empty").mkdir()
    return protect_argv(tmp / "in" / "empty", mask, out, protector)


@bad("--series-uid applies to DICOM folders only")
def series_uid_for_a_file(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, out, protector, "--series-uid", "1.2.3")


# --- datasets ------------------------------------------------------------------------------------


def dataset_argv(tmp, protector, *extra, out_name="out/protected"):
    return [
        "protect-dataset",
        str(tmp / "in" / "Dataset001"),
        "-o",
        str(tmp / out_name),
        "--protector",
        str(protector),
        *extra,
    ]


def dataset(tmp) -> Path:
    (tmp / "out").mkdir(exist_ok=True)
    return write_nnunet_dataset(tmp / "in" / "Dataset001", n_train=2, n_test=1, shape=(4, 24, 24))


@bad("dataset.json not found")
def dataset_json_missing(tmp, protector):
    (dataset(tmp) / "dataset.json").unlink()
    return dataset_argv(tmp, protector)


@bad("dataset.json is not valid JSON")
def dataset_json_malformed(tmp, protector):
    (dataset(tmp) / "dataset.json").write_text('{"channel_names": {"0": "CT"},')
    return dataset_argv(tmp, protector)


@bad("numTraining is 7 but 2")
def dataset_num_training_wrong(tmp, protector):
    root = dataset(tmp)
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "numTraining": 7}))
    return dataset_argv(tmp, protector)


@bad("mask values [2] are not declared in dataset.json labels")
def dataset_undeclared_label(tmp, protector):
    root = dataset(tmp)
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "labels": {"background": 0, "lesion1": 1}}))
    return dataset_argv(tmp, protector)


@bad("escapes the dataset folder")
def dataset_path_traversal(tmp, protector):
    root = dataset(tmp)
    meta = json.loads((root / "dataset.json").read_text())
    entries = {"x": {"images": ["../../secret_0000.nii.gz"], "label": "labelsTr/case000.nii.gz"}}
    (root / "dataset.json").write_text(json.dumps({**meta, "numTraining": 1, "dataset": entries}))
    return dataset_argv(tmp, protector)


@bad("points outside the dataset folder")
def dataset_symlink_outside(tmp, protector):
    root = dataset(tmp)
    label = root / "labelsTr" / "case001.nii.gz"
    label.rename(tmp / "in" / "elsewhere.nii.gz")
    label.symlink_to(tmp / "in" / "elsewhere.nii.gz")
    return dataset_argv(tmp, protector)


@bad("origin")
def dataset_mask_off_grid(tmp, protector):
    root = dataset(tmp)
    write_image(np.ones((4, 24, 24), np.uint8), root / "labelsTr" / "case001.nii.gz", origin=(5.0, 5.0, 5.0))
    return dataset_argv(tmp, protector)


@bad("output folder must not be inside the input dataset")
def dataset_output_inside_input(tmp, protector):
    dataset(tmp)
    return dataset_argv(tmp, protector, out_name="in/Dataset001/protected")


@bad("is not empty and has no umedprotect_manifest.json")
def dataset_output_not_empty(tmp, protector):
    dataset(tmp)
    (tmp / "out" / "protected").mkdir()
    (tmp / "out" / "protected" / "other.txt").write_text("someone else's files")
    return dataset_argv(tmp, protector)


@bad("holds a run with other settings")
def dataset_resume_with_other_settings(tmp, protector):
    dataset(tmp)
    assert main(dataset_argv(tmp, protector, "--no-progress")) == 0
    return dataset_argv(tmp, protector, "--no-progress", "--epsilon", "2")


@bad("--protector applies to the umed method only")
def dataset_baseline_with_a_protector(tmp, protector):
    from umedprotect.methods import method_names

    if "random" not in method_names():
        pytest.skip("baselines not installed")
    dataset(tmp)
    return dataset_argv(tmp, protector, "--method", "random")


@bad("manifest not found")
def verify_without_manifest(tmp, protector):
    (tmp / "out").mkdir()
    return ["verify", str(tmp / "out")]


@bad("umedprotect_manifest.json: not valid JSON")
def verify_with_corrupt_manifest(tmp, protector):
    (tmp / "out").mkdir()
    (tmp / "out" / "umedprotect_manifest.json").write_text('{"format": ')
    return ["verify", str(tmp / "out")]


@bad("umedprotect_manifest.json: malformed dataset manifest: cases.case000.images[0].output_sha256 is missing")
def verify_with_edited_manifest(tmp, protector):
    dataset(tmp)
    assert main(dataset_argv(tmp, protector, "--no-progress")) == 0
    manifest_path = tmp / "out" / "protected" / "umedprotect_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["cases"]["case000"]["images"][0]["output_sha256"]
    manifest_path.write_text(json.dumps(manifest))
    return ["verify", str(tmp / "out" / "protected")]


# --- the unauthorised-training check -------------------------------------------------------------


@bad("--learning-rate 0.0 is out of range")
def evaluate_learning_rate_zero(tmp, protector):
    source = dataset(tmp)
    return ["evaluate", str(source), str(source), "--learning-rate", "0", "-o", str(tmp / "out" / "report.json")]


@bad("--epochs must be at least 1")
def evaluate_no_epochs(tmp, protector):
    source = dataset(tmp)
    return ["evaluate", str(source), str(source), "--epochs", "0", "--optimizer", "adam"]


# --- clinical inputs: roles, 2D formats, heatmap options, outputs ------------------------


@bad("mask has 1535 labels, more than a label map has (are IMAGE and MASK swapped?")
def image_and_mask_swapped(tmp, protector):
    volume = np.arange(6 * 16 * 16, dtype=np.int16).reshape(6, 16, 16)
    labels = np.zeros((6, 16, 16), np.uint8)
    labels[2:4, 4:10, 4:10] = 1
    image, mask, out = base(tmp, image=volume, labels=labels)
    return protect_argv(mask, image, out, protector)


@bad("image has no more distinct values than the mask has labels; it looks like a label map")
def image_is_a_label_map(tmp, protector):
    labels = labels_like()
    image, mask, out = base(tmp, image=(labels * 100).astype(np.int16), labels=labels)
    return protect_argv(image, mask, out, protector)


@bad("protection changed no voxel")
def protection_changes_nothing(tmp, protector):
    volume = phantom_volume((6, 32, 32), n_lesions=1, rng=0)[0]
    scaled = ((volume - volume.min()) / np.ptp(volume) * 200).astype(np.uint8)
    image, mask, out = base(tmp, image=scaled)
    return protect_argv(image, mask, out, protector, "--epsilon", "0.5", "--heatmap", tmp / "out" / "h.png")


@bad("does not overlap the image")
def mask_does_not_overlap_after_resampling(tmp, protector):
    image, mask, out = base(tmp)
    write_image(labels_like(), mask, origin=(500.0, 500.0, 500.0))
    return protect_argv(image, mask, out, protector, "--resample-mask")


@bad("output folder is not writable")
def heatmap_folder_is_a_file(tmp, protector):
    image, mask, out = base(tmp)
    (tmp / "out" / "blocker").write_text("a file where a folder is expected")
    return protect_argv(image, mask, out, protector, "--heatmap", tmp / "out" / "blocker" / "h.png")


@bad("output folder is not writable")
def report_folder_is_a_file(tmp, protector):
    image, mask, out = base(tmp)
    (tmp / "out" / "blocker").write_text("a file where a folder is expected")
    return protect_argv(
        image, mask, out, protector, "--heatmap", tmp / "new" / "h.png", "--report", tmp / "out" / "blocker" / "r.json"
    )


@bad("output folder is not writable")
def report_folder_read_only(tmp, protector):
    if os.geteuid() == 0:
        pytest.skip("root can write to read-only folders")
    image, mask, out = base(tmp)
    (tmp / "reports").mkdir()
    (tmp / "reports").chmod(0o555)
    return protect_argv(image, mask, out, protector, "--report", tmp / "reports" / "r.json")


@bad("--slice 99 is out of range: the volume has 6 slices (0 to 5)")
def heatmap_slice_out_of_range(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, out, protector, "--heatmap", tmp / "out" / "h.png", "--slice", "99")


@bad("--slice applies to the --heatmap preview")
def slice_without_heatmap(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, out, protector, "--slice", "2")


@bad("argument --window: 'soft' is neither one of auto, ct-soft-tissue")
def heatmap_window_unknown(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, out, protector, "--heatmap", tmp / "out" / "h.png", "--window", "soft")


@bad("--slice applies to 3D volumes only")
def heatmap_slice_of_a_2d_image(tmp, protector):
    image_2d, labels_2d = phantom_slice((32, 32), n_lesions=1, rng=0)
    image, mask, out = base(tmp, image=image_2d.astype(np.int16), labels=labels_2d)
    return protect_argv(image, mask, out, protector, "--heatmap", tmp / "out" / "h.png", "--slice", "0")


@bad("unsupported output format; use one of .nii.gz, .nii, .nrrd, .mha")
def png_output_for_a_volume(tmp, protector):
    image, mask, out = base(tmp)
    return protect_argv(image, mask, tmp / "out" / "protected.png", protector)


@bad("has 3 components per voxel (RGB")
def rgb_png(tmp, protector):
    image_2d, labels_2d = phantom_slice((32, 32), n_lesions=1, rng=0)
    (tmp / "in").mkdir()
    (tmp / "out").mkdir()
    grey = ((image_2d - image_2d.min()) / np.ptp(image_2d) * 255).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(np.stack([grey] * 3, axis=-1), isVector=True), str(tmp / "in" / "photo.png"))
    sitk.WriteImage(sitk.GetImageFromArray(labels_2d.astype(np.uint8)), str(tmp / "in" / "mask.png"))
    return protect_argv(tmp / "in" / "photo.png", tmp / "in" / "mask.png", tmp / "out" / "protected.png", protector)


@bad("PNG and TIFF outputs hold 2D images only; this image is 3D")
def tiff_stack_to_tiff(tmp, protector):
    image, mask, out = base(tmp)
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(image))).astype(np.uint16)
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp / "in" / "stack.tif"))
    return protect_argv(tmp / "in" / "stack.tif", mask, tmp / "out" / "protected.tif", protector, "--resample-mask")


# --- DICOM outputs and DICOM masks --------------------------------------------------------------


def ct_series_and_mask(tmp) -> tuple[Path, Path]:
    """A small CT series in tmp/in/ct, its lesion mask as NIfTI, and the tmp/out folder."""
    image, labels = phantom_volume((4, 32, 32), n_lesions=1, rng=0)
    (tmp / "out").mkdir(exist_ok=True)
    series = tmp / "in" / "ct"
    write_ct_series(np.rint(image), series)
    mask = sitk.GetImageFromArray(labels.astype(np.uint8))
    mask.CopyInformation(sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series))))
    sitk.WriteImage(mask, str(tmp / "in" / "mask.nii.gz"))
    return series, tmp / "in" / "mask.nii.gz"


@bad("output folder is not empty (only its DICOM files are replaced) (use --overwrite)")
def dicom_output_folder_not_empty(tmp, protector):
    series, mask = ct_series_and_mask(tmp)
    (tmp / "out" / "notes.txt").write_text("someone else's file")
    return protect_argv(series, mask, tmp / "out", protector, "--output-format", "dicom")


@bad("FrameOfReferenceUID 1.2.826.0.1.3680043.8.498.77 differs from the image's")
def seg_on_another_frame_of_reference(tmp, protector):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    series, mask = ct_series_and_mask(tmp)
    sources = [pydicom.dcmread(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series))]
    for ds in sources:
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.77"
    segment = hd.seg.SegmentDescription(1, "Liver", codes.SCT.Tissue, codes.SCT.Tissue, "MANUAL")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))
    hd.seg.Segmentation(
        sources, labels, "BINARY", [segment], hd.UID(), 9, hd.UID(), 1, "test", "test", "1", "1"
    ).save_as(tmp / "in" / "seg.dcm")
    return protect_argv(series, tmp / "in" / "seg.dcm", f"{tmp / 'out' / 'protected'}/", protector)


@bad("ROI 'Spleen' not found (it holds 1 'Liver')")
def rtstruct_roi_name_not_found(tmp, protector):
    from rt_utils import RTStructBuilder

    series, mask = ct_series_and_mask(tmp)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))
    with warnings.catch_warnings():  # rt-utils sets attributes that pydicom 3 deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        structure_set = RTStructBuilder.create_new(dicom_series_path=str(series))
        structure_set.add_roi(mask=labels.transpose(1, 2, 0) > 0, name="Liver")
        structure_set.save(str(tmp / "in" / "rt.dcm"))
    return protect_argv(series, tmp / "in" / "rt.dcm", tmp / "out" / "p.nii.gz", protector, "--segments", "Spleen")


@bad("cannot decode its JPEG Extended (Process 2 and 4) pixel data")
def dicom_compressed_pixel_data_undecodable(tmp, protector):
    _, mask, out = base(tmp)
    (tmp / "in" / "jpeg").mkdir()
    corrupt_jpeg = Path(pydicom.__file__).parent / "data" / "test_files" / "JPEG-lossy.dcm"  # pydicom's own test file
    (tmp / "in" / "jpeg" / "slice.dcm").write_bytes(corrupt_jpeg.read_bytes())
    return protect_argv(tmp / "in" / "jpeg", mask, out, protector)


@bad("--output-format dicom: nnU-Net datasets hold image files")
def dataset_dicom_output(tmp, protector):
    dataset(tmp)
    return dataset_argv(tmp, protector, "--output-format", "dicom")


def snapshot(folder: Path) -> dict[str, str | None]:
    """Every entry under ``folder``: files by content, folders and links by name."""
    state = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            state[key] = f"-> {os.readlink(path)}"
        elif path.is_file():
            state[key] = path.read_bytes()
        else:
            state[key] = None
    return state


def test_battery_is_large_enough():
    assert len(CASES) >= 30


def raised_outside_the_cli(error: BaseException) -> bool:
    """Whether ``error`` was raised by a library module (not by a command-line module)."""
    frame = error.__traceback__
    while frame.tb_next is not None:
        frame = frame.tb_next
    path = Path(frame.tb_frame.f_code.co_filename)
    return path.parent.name != "cli" and path.name != "cli.py"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_exits_2_with_one_line_and_touches_nothing(name, tmp_path, protector_file, capsys, monkeypatch):
    setup, message = CASES[name]
    argv = setup(tmp_path, protector_file)
    before = snapshot(tmp_path)
    errors = []
    monkeypatch.setattr(cli, "option_message", lambda error: errors.append(error) or option_message(error))
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    for error in errors:  # library messages name options; only the command line words them as flags
        assert not (raised_outside_the_cli(error) and "--" in str(error)), str(error)
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("umedprotect") and "error:" in lines[0]
    assert message in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert snapshot(tmp_path) == before  # no output created, inputs byte-identical


@pytest.mark.parametrize("name", ["missing_image", "mask_size_mismatch", "protector_is_a_pickle"])
@pytest.mark.slow
def test_bad_input_in_a_real_process(name, tmp_path, protector_file):
    setup, message = CASES[name]
    argv = setup(tmp_path, protector_file)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "UMedProtect"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", "import sys; from umedprotect.cli import main; sys.exit(main())", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and message in run.stderr and "Traceback" not in run.stderr
