"""The umedprotect CLI end to end: protect, protect-dataset, verify, help and version."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import write_dicom_series, write_image, write_nnunet_dataset

from umedprotect import __version__, io
from umedprotect.cli import main
from umedprotect.dataset_protection import MANIFEST_NAME
from umedprotect.methods import CODES_ONLY
from umedprotect.phantoms import phantom_slice, phantom_volume
from umedprotect.regions import disk


def read(path):
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def assert_same_geometry(a: sitk.Image, b: sitk.Image):
    """Identical grid; .nrrd stores spacing x direction, so its last floating-point digit may differ."""
    assert a.GetSize() == b.GetSize() and a.GetPixelID() == b.GetPixelID()
    for get in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(a, get)(), getattr(b, get)(), rtol=1e-13, atol=1e-15)


def dilate_in_plane(labels: np.ndarray, radius: int) -> np.ndarray:
    """ROI grown by ``radius`` in every slice: a superset of ROI ∪ contour band."""
    from scipy import ndimage

    roi = labels != 0
    if roi.ndim == 2:
        return ndimage.binary_dilation(roi, disk(radius))
    return np.stack([ndimage.binary_dilation(s, disk(radius)) for s in roi])


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd", ".mha"])
def test_protect_3d_end_to_end(tmp_path, protector_file, ending, capsys):
    image, labels = phantom_volume((10, 48, 40), n_lesions=2, rng=1)
    image_path = write_image(image.astype(np.int16), tmp_path / f"ct{ending}", spacing=(0.7, 0.8, 3.0))
    mask_path = write_image(labels, tmp_path / f"mask{ending}", spacing=(0.7, 0.8, 3.0))
    inputs = {p: io.sha256(p) for p in (image_path, mask_path)}
    out, heatmap, report = tmp_path / f"out{ending}", tmp_path / "h.png", tmp_path / "r.json"
    argv = ["protect", str(image_path), str(mask_path), "-o", str(out), "--protector", str(protector_file)]
    assert main([*argv, "--heatmap", str(heatmap), "--report", str(report)]) == 0
    assert re.search(r"PSNR [\d.]+ dB \(worst slice [\d.]+ dB\)", capsys.readouterr().out)

    original, before = read(image_path)
    protected, after = read(out)
    assert_same_geometry(protected, original)
    change = np.abs(after.astype(np.int64) - before.astype(np.int64))
    data = json.loads(report.read_text())
    assert change.max() <= data["metrics"]["budget_native"] and change.max() > 0
    assert not change[~dilate_in_plane(labels, 3)].any()  # nothing outside ROI ∪ band
    assert {p: io.sha256(p) for p in inputs} == inputs  # inputs untouched
    assert heatmap.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["inputs"]["image"]["sha256"] == inputs[image_path]
    assert data["inputs"]["mask"]["labels"] == [1, 2]
    assert data["output"]["sha256"] == io.sha256(out)
    assert data["protector"]["sha256"] == io.sha256(protector_file)
    assert data["parameters"] == {
        "epsilon": 4.0,
        "band_radius": 3,
        "labels": None,
        "min_psnr": 50.0,
        "strength": 0.15,
        "victim_normalisation": "zscore",
        "seed": 0,
    }  # the floor
    assert set(data["versions"]) >= {"umedprotect", "torch", "SimpleITK", "numpy"}
    assert data["device"] == CODES_ONLY and data["timing_s"]["total"] > 0  # silent generators: nothing to run
    assert (
        data["metrics"]["psnr_db"] > data["metrics"]["psnr_db_slice_mean"] >= data["metrics"]["psnr_db_slice_min"] > 30
    )


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "float32", "float64"])
def test_protect_2d_keeps_geometry_and_pixel_type(tmp_path, protector_file, dtype):
    image, labels = phantom_slice((48, 40), n_lesions=1, rng=3)
    image = image / 4 if dtype == "uint8" else image  # fit uint8
    image_path = write_image(image.astype(dtype), tmp_path / "x.mha", spacing=(0.6, 1.1))
    mask_path = write_image(labels, tmp_path / "m.nrrd", spacing=(0.6, 1.1))
    out = tmp_path / "out.nrrd"
    assert main(["protect", str(image_path), str(mask_path), "-o", str(out), "--protector", str(protector_file)]) == 0
    original, before = read(image_path)
    protected, after = read(out)
    assert protected.GetDimension() == 2 and after.dtype == np.dtype(dtype)
    assert_same_geometry(protected, original)
    assert (after != before).any()
    assert not (after != before)[~dilate_in_plane(labels, 3)].any()


def test_min_psnr_floor_is_applied_and_reported(tmp_path, protector_file):
    image, labels = phantom_slice((48, 40), n_lesions=1, rng=3)
    image_path = write_image(image.astype(np.int16), tmp_path / "x.nii.gz", spacing=(0.6, 1.1))
    mask_path = write_image(labels, tmp_path / "m.nii.gz", spacing=(0.6, 1.1))
    reports = {}
    for floor in (None, 60.0):
        out, report = tmp_path / f"out{floor}.nii.gz", tmp_path / f"r{floor}.json"
        extra = [] if floor is None else ["--min-psnr", str(floor)]
        argv = ["protect", str(image_path), str(mask_path), "-o", str(out), "--protector", str(protector_file)]
        assert main([*argv, "--report", str(report), "--epsilon", "8", *extra]) == 0
        reports[floor] = json.loads(report.read_text())
    assert reports[None]["metrics"]["psnr_db"] < 60 <= reports[60.0]["metrics"]["psnr_db"]
    assert reports[60.0]["parameters"]["min_psnr"] == 60.0 and reports[60.0]["metrics"]["change_scale"] < 1


def test_multi_label_selection(tmp_path, protector_file):
    image, labels = phantom_volume((8, 48, 48), n_lesions=2, rng=4)
    image_path = write_image(image, tmp_path / "x.nii.gz")
    mask_path = write_image(labels, tmp_path / "m.nii.gz")
    out_all, out_two = tmp_path / "all.nii.gz", tmp_path / "two.nii.gz"
    common = [str(image_path), str(mask_path), "--protector", str(protector_file)]
    assert main(["protect", *common, "-o", str(out_all)]) == 0
    assert main(["protect", *common, "-o", str(out_two), "--labels", "2"]) == 0
    before = read(image_path)[1]
    changed_all, changed_two = read(out_all)[1] != before, read(out_two)[1] != before
    assert changed_all[labels == 1].any() and changed_all[labels == 2].any()
    assert changed_two[labels == 2].any()
    assert not changed_two[
        dilate_in_plane(np.where(labels == 2, 0, labels), 3) & ~dilate_in_plane(labels == 2, 3)
    ].any()


def test_same_seed_gives_byte_identical_outputs(tmp_path, protector_file):
    image, labels = phantom_volume((8, 40, 40), n_lesions=2, rng=5)
    image_path = write_image(image.astype(np.int16), tmp_path / "x.nii.gz")
    mask_path = write_image(labels, tmp_path / "m.nii.gz")
    outputs = []
    for k in range(2):
        out = tmp_path / f"out{k}.nii.gz"
        argv = [
            "protect",
            str(image_path),
            str(mask_path),
            "-o",
            str(out),
            "--protector",
            str(protector_file),
            "--seed",
            "7",
        ]
        assert main(argv) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_seg_nrrd_mask_and_dicom_input(tmp_path, protector_file):
    import slicerio

    volume, labels = phantom_volume((6, 32, 32), n_lesions=1, rng=6)
    write_dicom_series(volume.astype(np.int16), tmp_path / "dicom", "1.2.826.0.1.3680043.2.1125.77")
    image = io.read_image(tmp_path / "dicom")
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    ijk_to_lps[:3, 3] = image.GetOrigin()
    segmentation = slicerio.create_segmentation(image.GetSize(), ijk_to_lps)
    slicerio.add_segment(segmentation, labels.transpose(2, 1, 0) > 0, {"id": "lesion"})
    slicerio.write_segmentation(str(tmp_path / "lesion.seg.nrrd"), segmentation)
    out = tmp_path / "out.nrrd"
    argv = [
        "protect",
        str(tmp_path / "dicom"),
        str(tmp_path / "lesion.seg.nrrd"),
        "-o",
        str(out),
        "--protector",
        str(protector_file),
    ]
    assert main(argv) == 0
    protected = sitk.ReadImage(str(out))
    assert protected.GetSize() == image.GetSize() and protected.GetPixelID() == image.GetPixelID()
    changed = sitk.GetArrayFromImage(protected) != volume.astype(np.int16)
    assert changed[labels > 0].any() and not changed[~dilate_in_plane(labels, 3)].any()


def test_resample_mask_and_allow_empty(tmp_path, protector_file, capsys):
    image, labels = phantom_slice((40, 40), n_lesions=1, rng=2)
    image_path = write_image(image, tmp_path / "x.mha", spacing=(1.0, 1.0))
    shifted = write_image(labels, tmp_path / "m.mha", spacing=(1.0, 1.0), origin=(-11.5, 30.25))
    argv = ["protect", str(image_path), str(shifted), "--protector", str(protector_file)]
    assert main([*argv, "-o", str(tmp_path / "a.mha")]) == 2
    assert main([*argv, "-o", str(tmp_path / "a.mha"), "--resample-mask"]) == 0
    empty = write_image(np.zeros_like(labels), tmp_path / "e.mha", spacing=(1.0, 1.0))
    capsys.readouterr()
    argv = ["protect", str(image_path), str(empty), "-o", str(tmp_path / "b.mha"), "--protector", str(protector_file)]
    assert main([*argv, "--allow-empty"]) == 0
    assert "warning: " in capsys.readouterr().err
    np.testing.assert_array_equal(read(tmp_path / "b.mha")[1], read(image_path)[1])


def test_protect_dataset_and_verify(tmp_path, protector_file, capsys):
    source = write_nnunet_dataset(tmp_path / "Dataset001_Tiny", n_train=3, n_test=1, file_ending=".nii.gz")
    out = tmp_path / "protected"
    argv = ["protect-dataset", str(source), "-o", str(out), "--protector", str(protector_file), "--no-progress"]
    assert main(argv) == 0
    assert "PSNR min" in capsys.readouterr().out
    assert main(argv) == 0  # rerun: everything already finished
    assert "resuming: 3 of 3" in capsys.readouterr().err
    for name in [
        "dataset.json",
        *(f"labelsTr/case00{k}.nii.gz" for k in range(3)),
        "imagesTs/case003_0000.nii.gz",
        "labelsTs/case003.nii.gz",
    ]:
        assert (out / name).read_bytes() == (source / name).read_bytes(), name
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["status"] == "complete" and manifest["method"] == "umed"
    assert manifest["protector"]["sha256"] == io.sha256(protector_file)
    assert set(manifest["versions"]) >= {"umedprotect", "torch", "SimpleITK", "numpy"} and manifest["device"]
    for entry in manifest["cases"].values():
        record = entry["images"][0]
        assert record["input_sha256"] == io.sha256(source / record["input"])
        assert record["output_sha256"] == io.sha256(out / record["output"])
        assert record["psnr_db"] > 40 and 0 < record["max_abs_change"] <= record["budget_native"]
        assert record["psnr_db_slice_min"] <= record["psnr_db_slice_mean"] < record["psnr_db"]  # volumes: per slice too
        original, before = read(source / record["input"])
        protected, after = read(out / record["output"])
        assert_same_geometry(protected, original)
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    assert "no discrepancies" in capsys.readouterr().out


def test_help_documents_every_command_and_option(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for word in ["protect", "protect-dataset", "verify", "exit codes", "2    bad input"]:
        assert word in text
    expected = {
        "protect": [
            "--output",
            "--protector",
            "--epsilon",
            "--band-radius",
            "--labels",
            "--device",
            "--heatmap",
            "--report",
            "--seed",
            "--overwrite",
            "--resample-mask",
            "--allow-empty",
            "--series-uid",
        ],
        "protect-dataset": [
            "--output",
            "--method",
            "--protector",
            "--epsilon",
            "--device",
            "--seed",
            "--overwrite",
            "--allow-empty",
        ],
        "verify": ["--source"],
    }
    for command, options in expected.items():
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert all(option in text for option in options), command


def test_command_with_a_missing_optional_dependency_fails_cleanly(monkeypatch, capsys):
    import importlib

    import umedprotect.cli as cli

    real = importlib.import_module

    def import_module(name, *args):
        if name.endswith(".verify"):
            raise ModuleNotFoundError("No module named 'monai'", name="monai")
        return real(name, *args)

    monkeypatch.setattr(cli.importlib, "import_module", import_module)
    assert main(["--help"]) == 0
    assert "unavailable: needs monai" in capsys.readouterr().out
    assert main(["verify", "somewhere"]) == 2
    assert "'verify' needs the Python package 'monai'" in capsys.readouterr().err
    assert main(["protect", "--help"]) == 0
