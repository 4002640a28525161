"""The CLI's outputs, pinned by hash: a refactoring must leave every protected voxel and byte as it was.

The hashes were taken with the pinned CPU build of torch when the bundled default became the fill
codes with the 50 dB floor (benchmarks/make_default_protector.py); a change of method or defaults
must update them on purpose.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from conftest import ROOT, write_nnunet_dataset

from umedprotect.cli import main

SAMPLE = ROOT / "Resources" / "Sample"
SAMPLE_PROTECTED = "7c40b93b9885e8e0ae1ab6b915fb2ee7949bdb16b10f724c2327bfd140899e17"
DATASET_PROTECTED = {
    "imagesTr/case000_0000.nii.gz": "4877909cc3d0db096d48e552587cf0c4a66e9f3b9e4bb94b0d3bd28939a196fc",
    "imagesTr/case001_0000.nii.gz": "56cd930f6c16539b24ddc9bc34a0ab2166c278a20e6f8ca5d1f00301fe60a91f",
    "imagesTr/case002_0000.nii.gz": "1f2356c265179063275b66672d86dab3b0d7f9a5169fbafb7e8b6deb138910f7",
    "labelsTr/case000.nii.gz": "23669445765e2a3bb39b386cf2b808449d4e4c3b1e5a8e3ead778835a3dcf1fb",
    "imagesTs/case003_0000.nii.gz": "d6e5ce94558fe5ea83ffe5b9a692ebbd33bdb9710e7ebf34f689654e9e192764",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
