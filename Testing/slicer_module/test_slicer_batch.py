"""The Slicer batch script: protect-dataset's pipeline (manifest, resume, lock, verify) inside Slicer.

Runs on slicer-core; the budget and the confinement of the changes are checked against a window and
a region this test computes itself.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer_shim
from scipy import ndimage

SCRIPT = Path(__file__).resolve().parents[2] / "UMedProtect" / "Scripts" / "protect_batch.py"
EPSILON, BAND = 4.0, 2
PERCENTILES = (0.5, 99.5)  # the intensity window of the protector's budget


@pytest.fixture(scope="module")
def batch():
    slicer_shim.import_module()
    slicer_shim.bootstrap_scene()
    spec = importlib.util.spec_from_file_location("protect_batch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture
def dataset(tmp_path, random_protector):
    from conftest import write_nnunet_dataset  # Testing/conftest.py

    from umedprotect.protector import save_protector

    source = write_nnunet_dataset(tmp_path / "Dataset002_Tiny", n_train=2, n_test=1, shape=(5, 28, 28))
    protector = save_protector(random_protector, tmp_path / "random.safetensors")
    return source, protector


def arguments(source: Path, out: Path, protector: Path, *extra: str) -> list[str]:
    return [
        "--",
        str(source),
        "-o",
        str(out),
        "--protector",
        str(protector),
        "--device",
        "cpu",
        "--epsilon",
        str(EPSILON),
        "--band-radius",
        str(BAND),
        "--no-progress",
        *extra,
    ]


def allowed_region(labels: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """ROI grown by BAND pixels within each slice along the coarsest axis (a superset of ROI ∪ contour band)."""
    axis = int(np.argmax(spacing))
    square = np.ones((2 * BAND + 1, 2 * BAND + 1), bool)
    slices = [ndimage.binary_dilation(s > 0, square) for s in np.moveaxis(labels, axis, 0)]
    return np.moveaxis(np.stack(slices), 0, axis)


def test_arguments_after_slicers_double_dash_and_usage_errors(batch, tmp_path):
    args = batch.parse_args(["--", str(tmp_path), "-o", "out", "--epsilon", "6.3", "--device", "cpu"])
    assert (args.input, args.output, args.epsilon, args.device) == (tmp_path, Path("out"), 6.3, "cpu")
    assert (args.protector, args.band_radius, args.overwrite) == (None, None, False)
    assert batch.main(["--help"]) == 0
    assert batch.main([str(tmp_path)]) == 2  # -o missing: usage error, no exception


def test_bad_input_is_one_line_and_exit_2_with_nothing_written(batch, dataset, tmp_path, capsys):
    source, protector = dataset
    out = tmp_path / "protected"
    assert batch.main(arguments(tmp_path / "missing", out, protector)) == 2
    assert batch.main(arguments(source, out, protector, "--epsilon", "65")) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("protect_batch: error: --epsilon 65 is out of range")
    assert not out.exists()


def test_unexpected_errors_are_exit_1(batch, tmp_path, monkeypatch):
    def boom(args):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(batch, "run", boom)
    assert batch.main([str(tmp_path), "-o", str(tmp_path / "out")]) == 1


def test_protects_within_budget_and_region_then_resumes_and_verifies(batch, dataset, tmp_path, capsys):
    from umedprotect.dataset_protection import MANIFEST_NAME, verify

    source, protector = dataset
    out = tmp_path / "protected"
    argv = arguments(source, out, protector)
    assert batch.main(argv) == 0
    printed = capsys.readouterr().out
    assert "imagesTr/case001_0000.nii.gz: protected, PSNR" in printed and "verified against" in printed

    for k in range(2):
        original = sitk.ReadImage(str(source / "imagesTr" / f"case{k:03d}_0000.nii.gz"))
        protected = sitk.ReadImage(str(out / "imagesTr" / f"case{k:03d}_0000.nii.gz"))
        assert protected.GetPixelID() == original.GetPixelID()
        np.testing.assert_allclose(protected.GetSpacing(), original.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(protected.GetOrigin(), original.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(protected.GetDirection(), original.GetDirection(), atol=1e-6)
        before = sitk.GetArrayFromImage(original).astype(np.float64)
        change = np.abs(sitk.GetArrayFromImage(protected) - before)
        lo, hi = np.percentile(before, PERCENTILES)
        assert 0 < change.max() <= EPSILON / 255 * (hi - lo) * (1 + 1e-6)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(source / "labelsTr" / f"case{k:03d}.nii.gz")))
        assert not change[~allowed_region(labels, tuple(reversed(original.GetSpacing())))].any()
        assert change[labels > 0].any()
        label = Path("labelsTr") / f"case{k:03d}.nii.gz"
        assert (out / label).read_bytes() == (source / label).read_bytes()
    assert (out / "imagesTs" / "case002_0000.nii.gz").read_bytes() == (
        source / "imagesTs" / "case002_0000.nii.gz"
    ).read_bytes()
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["status"] == "complete" and sorted(manifest["cases"]) == ["case000", "case001"]
    assert manifest["parameters"]["epsilon"] == EPSILON and manifest["parameters"]["band_radius"] == BAND

    written = {p: p.stat().st_mtime_ns for p in (out / "imagesTr").iterdir()}
    assert batch.main(argv) == 0  # a rerun finds every case finished and rewrites none
    assert "protect_batch: info: resuming: 2 of 2 case(s) recorded as finished" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (out / "imagesTr").iterdir()} == written

    redo = out / "imagesTr" / "case001_0000.nii.gz"
    kept = out / "imagesTr" / "case000_0000.nii.gz"
    expected = redo.read_bytes()
    redo.unlink()  # as if the run had been killed while writing it
    assert batch.main(argv) == 0
    assert redo.read_bytes() == expected and kept.stat().st_mtime_ns == written[kept]
    assert verify(out, source) == []

    capsys.readouterr()
    assert batch.main(arguments(source, out, protector, "--epsilon", "6")) == 2  # other settings: refused
    assert "holds a run with other settings" in capsys.readouterr().err


def test_a_folder_being_written_by_another_run_is_refused(batch, dataset, tmp_path, capsys):
    from umedprotect.dataset_protection import LOCK_NAME

    source, protector = dataset
    out = tmp_path / "protected"
    out.mkdir()
    (out / LOCK_NAME).write_text("1")  # pid 1 is alive
    assert batch.main(arguments(source, out, protector)) == 2
    assert "another protect-dataset run (pid 1)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


def test_cases_off_the_median_spacing_are_made_on_nnunets_grid_as_by_the_cli(batch, dataset, tmp_path, capsys):
    from umedprotect.dataset_protection import MANIFEST_NAME

    source, _ = dataset
    for path in (source / "imagesTr" / "case001_0000.nii.gz", source / "labelsTr" / "case001.nii.gz"):
        image = sitk.ReadImage(str(path))
        image.SetSpacing((0.6, 0.7, 2.5))  # x 0.6 against the others' 0.8: nnU-Net resamples it
        sitk.WriteImage(image, str(path))
    argv = ["--", str(source), "-o", str(tmp_path / "grid"), "--device", "cpu", "--no-progress"]
    assert batch.main(argv) == 0
    assert "victim grid: nnU-Net resamples the cases to" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "grid" / MANIFEST_NAME).read_text())
    assert manifest["protector"]["path"] == "bundled victim grid" and len(manifest["parameters"]["victim_spacing"]) == 3
    assert batch.main([*argv[:3], str(tmp_path / "own"), *argv[4:], "--victim-grid", "off"]) == 0
    assert "victim_spacing" not in json.loads((tmp_path / "own" / MANIFEST_NAME).read_text())["parameters"]
