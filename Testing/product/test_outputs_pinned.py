"""The CLI's outputs, pinned by hash: a refactoring must leave every protected voxel and byte as it was.

The hashes were taken with the pinned CPU build of torch when the bundled default became the fill
codes with the 50 dB floor (benchmarks/make_default_protector.py), and for the cases with two labels
again when it gave every label the same checkerboard, and for the sample (an MR) when the strength for
z-scored images became 0.15; a change of method or defaults must update them on purpose. A
``.nii.gz`` is pinned by its uncompressed content (the NIfTI header and voxels), which the compressor
does not change.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from conftest import ROOT, write_nnunet_dataset

from umedprotect.cli import main

SAMPLE = ROOT / "Resources" / "Sample"
SAMPLE_PROTECTED = "12345a17bc1b6b278f21fb2ef254748333b36a2adfc12574fdd67261fab42869"
DATASET_PROTECTED = {
    "imagesTr/case000_0000.nii.gz": "77c1bff70c53bf98f7ece6dfe969ec340fa2c760ac16ebc62ef4359d4ef9ab9c",
    "imagesTr/case001_0000.nii.gz": "5b86bf2f10abdecdc8358a587322e648492765e051ad5186e63da0566263996d",
    "imagesTr/case002_0000.nii.gz": "a969568171fd7e8885f9784a6b70c6c84728abfc4c222cbea96b016a83750ab1",
    "labelsTr/case000.nii.gz": "c75c64ea8608b4d432d4be316ab1a67cf052a3fafa1eff71ec9a3a5fbab9597f",
    "imagesTs/case003_0000.nii.gz": "6eda7ad84510f8ef4ef2053a62d6b6b5f9fdd77de7ce40d91ca22d2312ee3365",
}


def sha256(path: Path) -> str:
    """SHA-256 of a file's content (uncompressed for a .nii.gz)."""
    content = path.read_bytes()
    return hashlib.sha256(gzip.decompress(content) if path.name.endswith(".gz") else content).hexdigest()


def test_protect_on_the_bundled_sample_writes_the_pinned_bytes(tmp_path):
    out = tmp_path / "protected.nrrd"
    argv = [
        "protect",
        str(SAMPLE / "brain1_image.nrrd"),
        str(SAMPLE / "brain1_label.nrrd"),
        "-o",
        str(out),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    assert sha256(out) == SAMPLE_PROTECTED


def test_protect_dataset_on_a_small_dataset_writes_the_pinned_bytes(tmp_path):
    source = write_nnunet_dataset(tmp_path / "Dataset001_Tiny")
    out = tmp_path / "out"
    assert main(["protect-dataset", str(source), "-o", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert {name: sha256(out / name) for name in DATASET_PROTECTED} == DATASET_PROTECTED
