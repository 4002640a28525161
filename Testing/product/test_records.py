"""Typed records: version 1 manifests load as written before, records round-trip, a malformed file is one line."""

from __future__ import annotations

import copy
import json

import pytest

from umedprotect import io
from umedprotect.cli import main
from umedprotect.errors import InputError
from umedprotect.records import DatasetManifest, ProtectionReport

GEOMETRY = {
    "size": [32, 32, 6],
    "spacing": [0.8, 0.7, 2.5],
    "origin": [1.0, 11.0, 21.0],
    "direction": [-0.0, 1.0, 0.0, -1.0, -0.0, 0.0, 0.0, 0.0, 1.0],
    "pixel_type": "16-bit signed integer",
}
PROTECTED_IMAGE = {
    "input": "imagesTr/case000_0000.nii.gz",
    "output": "imagesTr/case000_0000.nii.gz",
    "input_sha256": "a" * 64,
    "output_sha256": "b" * 64,
    "budget_native": 12.5,
    "psnr_db": 65.7,
    "psnr_db_slice_min": 60.9,
    "psnr_db_slice_mean": 61.0,
    "ssim": 0.99999,
    "max_abs_change": 11.0,
    "fraction_changed": 0.0016,
    "geometry": GEOMETRY,
}
COPIED_IMAGE = {
    "input": "imagesTr/case001_0000.nii.gz",
    "output": "imagesTr/case001_0000.nii.gz",
    "input_sha256": "c" * 64,
    "output_sha256": "c" * 64,
    "budget_native": 0.0,
    "psnr_db": "inf",
    "ssim": 1.0,
    "max_abs_change": 0.0,
    "fraction_changed": 0.0,
    "geometry": GEOMETRY,
}
MANIFEST_V1 = {  # the layout written by the release before the typed records (format version 1)
    "format": "umedprotect-dataset-manifest",
    "format_version": 1,
    "status": "complete",
    "source": "/data/Dataset001_Tiny",
    "method": "umed",
    "parameters": {"epsilon": 4.0, "band_radius": 3, "labels": None, "min_psnr": None, "seed": 0},
    "allow_empty": True,
    "protector": {"path": "bundled default", "sha256": "d" * 64, "summary": {"epsilon": 4.0}},
    "versions": {"umedprotect": "0.1.0", "torch": "2.13.0+cpu"},
    "device": "cpu (CPU only (no CUDA GPU found))",
    "dataset_json": {"sha256": "e" * 64},
    "cases": {
        "case000": {
            "status": "protected",
            "images": [PROTECTED_IMAGE],
            "label": {"path": "labelsTr/case000.nii.gz", "sha256": "f" * 64},
            "seconds": 0.171,
        },
        "case001": {
            "status": "copied_empty",
            "images": [COPIED_IMAGE],
            "label": {"path": "labelsTr/case001.nii.gz", "sha256": "0" * 64},
            "seconds": 0.02,
        },
        "case002": {"status": "skipped_empty"},
    },
    "test": [{"case_id": "case003", "files": [{"path": "imagesTs/case003_0000.nii.gz", "sha256": "1" * 64}]}],
}


def test_a_version_1_manifest_loads_typed_and_writes_back_the_same_json(tmp_path):
    manifest = DatasetManifest.from_json(copy.deepcopy(MANIFEST_V1), "m.json")
    protected, copied, skipped = manifest.cases.values()
    assert protected.images[0].worst_psnr_db == 60.9 and protected.images[0].geometry.size == [32, 32, 6]
    assert copied.images[0].psnr_db == float("inf") and copied.images[0].worst_psnr_db == float("inf")
    assert (skipped.finished, skipped.images, manifest.protector_sha256) == (False, None, "d" * 64)
    manifest.write(tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == MANIFEST_V1
    assert list(json.loads((tmp_path / "m.json").read_text())["cases"]["case000"]["images"][0]) == list(PROTECTED_IMAGE)
    assert DatasetManifest.read(tmp_path / "m.json") == manifest


def test_a_protect_report_round_trips(tmp_path, protector_file):
    from conftest import write_image

    from umedprotect.phantoms import phantom_volume

    image, labels = phantom_volume((4, 24, 24), n_lesions=1, rng=0)
    paths = [write_image(a, tmp_path / name) for a, name in ((image.astype("int16"), "ct.nrrd"), (labels, "m.nrrd"))]
    out, report_path = tmp_path / "out.nrrd", tmp_path / "report.json"
    argv = [
        "protect",
        *map(str, paths),
        "-o",
        str(out),
        "--protector",
        str(protector_file),
        "--report",
        str(report_path),
    ]
    assert main(argv) == 0
    written = json.loads(report_path.read_text())
    assert (written["format"], written["format_version"]) == ("umedprotect-protection-report", 1)
    report = ProtectionReport.read(report_path)
    assert report.output.sha256 == io.sha256(out) and report.inputs.mask.labels == [1]
    assert report.inputs.image.size == [24, 24, 4] and report.parameters["epsilon"] == 4.0
    assert io.json_roundtrip(report.to_json()) == written
    with pytest.raises(InputError, match="not a UMedProtect dataset manifest"):
        DatasetManifest.read(report_path)


def edited(change) -> dict:
    manifest = copy.deepcopy(MANIFEST_V1)
    change(manifest)
    return manifest


MALFORMED = {
    "missing hash": (
        lambda m: m["cases"]["case000"]["images"][0].pop("output_sha256"),
        "cases.case000.images[0].output_sha256 is missing",
    ),
    "hash a number": (
        lambda m: m["cases"]["case000"]["label"].update(sha256=7),
        "cases.case000.label.sha256 must be a string, not 7",
    ),
    "unknown status": (
        lambda m: m["cases"]["case001"].update(status="done"),
        "cases.case001.status is 'done', not one of 'protected', 'copied_empty', 'skipped_empty'",
    ),
    "protected without images": (lambda m: m["cases"]["case000"].pop("images"), "cases.case000 is protected but lacks"),
    "cases a list": (lambda m: m.update(cases=[]), "cases must be a JSON object, not []"),
    "geometry size text": (
        lambda m: m["cases"]["case000"]["images"][0]["geometry"].update(size="32x32"),
        "cases.case000.images[0].geometry.size must be a list",
    ),
    "budget a boolean": (
        lambda m: m["cases"]["case000"]["images"][0].update(budget_native=True),
        "budget_native must be a number, not True",
    ),
    "unknown entry": (lambda m: m.update(comment="edited by hand"), "comment is not a known entry"),
    "complete without dataset.json hash": (
        lambda m: m.update(dataset_json={}),
        "is complete but lacks the dataset.json hash",
    ),
    "other format": (
        lambda m: m.update(format_version=2),
        "not a UMedProtect dataset manifest (or an unsupported version)",
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_manifest_is_one_input_error_naming_the_file_and_the_entry(name):
    change, message = MALFORMED[name]
    with pytest.raises(InputError) as error:
        DatasetManifest.from_json(edited(change), "out/umedprotect_manifest.json")
    text = str(error.value)
    assert text.startswith("out/umedprotect_manifest.json: ") and message in text and "\n" not in text


@pytest.mark.parametrize("name", ["hash a number", "unknown status", "cases a list"])
def test_verify_of_a_malformed_manifest_exits_2_with_one_line(tmp_path, capsys, name):
    change, message = MALFORMED[name]
    (tmp_path / "umedprotect_manifest.json").write_text(json.dumps(edited(change)))
    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "malformed dataset manifest" in err[0]
