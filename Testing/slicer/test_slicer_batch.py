"""The Slicer batch-mode script: argument parsing, case discovery, exit codes, and a full run on slicer-core."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from umedprotect.errors import InputError

SCRIPT = Path(__file__).resolve().parents[2] / "UMedProtect" / "Scripts" / "protect_batch.py"


@pytest.fixture(scope="module")
def batch():
    spec = importlib.util.spec_from_file_location("protect_batch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_arguments_after_slicers_double_dash(batch, tmp_path):
    args = batch.parse_args(["--", str(tmp_path), "-o", "out", "--epsilon", "2", "--device", "cpu"])
    assert (args.input, args.output, args.epsilon, args.device) == (tmp_path, Path("out"), 2.0, "cpu")
    assert (args.protector, args.band_radius, args.overwrite) == (None, None, False)
    assert batch.main(["--help"]) == 0
    assert batch.main([str(tmp_path)]) == 2  # -o missing: usage error, no exception


def test_image_mask_pairs_by_name(batch, tmp_path):
    folder = touch(
        tmp_path / "cases", "ct.nii.gz", "ct.seg.nrrd", "brain1_image.nrrd", "brain1_label.nrrd",
        "mr.mha", "mr-mask.nii", "notes.txt", ".hidden.nrrd",
    )  # fmt: skip
    cases = batch.find_pairs(folder)
    assert [(c.image.name, c.mask.name, str(c.output)) for c in cases] == [
        ("brain1_image.nrrd", "brain1_label.nrrd", "brain1_image.nrrd"),
        ("ct.nii.gz", "ct.seg.nrrd", "ct.nii.gz"),
        ("mr.mha", "mr-mask.nii", "mr.mha"),
    ]


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        (["a.nrrd", "a_label.nrrd", "b.nrrd"], "no mask found for b.nrrd"),
        (["a.nrrd", "a.nii.gz", "a_label.nrrd"], "exactly one image"),
        (["a_label.nrrd"], "exactly one image for this mask, found none"),
        (["notes.txt"], "no image/mask pairs"),
    ],
)
def test_unpaired_files_are_input_errors(batch, tmp_path, names, problem):
    with pytest.raises(InputError, match=problem):
        batch.find_pairs(touch(tmp_path / "cases", *names))


def test_nnunet_dataset_cases_and_unchanged_files(batch, nnunet_dataset):
    cases, unchanged = batch.find_cases(nnunet_dataset)
    assert [str(c.output) for c in cases] == [f"imagesTr/case{k:03d}_0000.nii.gz" for k in range(3)]
    assert [c.mask.name for c in cases] == [f"case{k:03d}.nii.gz" for k in range(3)]
    assert sorted(map(str, unchanged)) == sorted(
        ["dataset.json", "imagesTs/case003_0000.nii.gz", "labelsTs/case003.nii.gz"]
        + [f"labelsTr/case{k:03d}.nii.gz" for k in range(3)]
    )


def test_errors_become_exit_codes(batch, tmp_path, monkeypatch):
    assert batch.main([str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == 2

    def boom(args):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(batch, "run", boom)
    assert batch.main([str(tmp_path), "-o", str(tmp_path / "out")]) == 1


def test_full_run_on_an_nnunet_dataset_with_slicer_core(batch, tmp_path, random_protector, capsys):
    import slicer_shim

    slicer_shim.import_module_with_slicer_core()
    slicer_shim.bootstrap_scene()
    from conftest import write_nnunet_dataset
    from umedprotect.protector import save_protector

    source = write_nnunet_dataset(tmp_path / "Dataset002_Tiny", n_train=2, n_test=1, shape=(5, 28, 28))
    protector = save_protector(random_protector, tmp_path / "random.safetensors")
    out = tmp_path / "protected"
    argv = ["--", str(source), "-o", str(out), "--protector", str(protector), "--device", "cpu", "--band-radius", "2"]
    assert batch.main(argv) == 0
    printed = capsys.readouterr().out
    assert "[2/2] case001 channel 0: PSNR" in printed and "done: 2 image(s) protected" in printed

    for k in range(2):
        original = sitk.ReadImage(str(source / "imagesTr" / f"case{k:03d}_0000.nii.gz"))
        protected = sitk.ReadImage(str(out / "imagesTr" / f"case{k:03d}_0000.nii.gz"))
        assert protected.GetPixelID() == original.GetPixelID() == sitk.sitkInt16
        np.testing.assert_allclose(protected.GetSpacing(), original.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(protected.GetOrigin(), original.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(protected.GetDirection(), original.GetDirection(), atol=1e-6)
        before, after = sitk.GetArrayFromImage(original), sitk.GetArrayFromImage(protected)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(source / "labelsTr" / f"case{k:03d}.nii.gz")))
        assert (before != after).any() and not (before != after)[labels == 0].all()
        label = Path("labelsTr") / f"case{k:03d}.nii.gz"
        assert (out / label).read_bytes() == (source / label).read_bytes()
    assert json.loads((out / "dataset.json").read_text()) == json.loads((source / "dataset.json").read_text())
    assert (out / "imagesTs" / "case002_0000.nii.gz").read_bytes() == (source / "imagesTs" / "case002_0000.nii.gz").read_bytes()

    assert batch.main(argv) == 2  # outputs exist and no --overwrite
    assert "output already exists" in capsys.readouterr().err
    assert batch.main(argv + ["--overwrite"]) == 0
