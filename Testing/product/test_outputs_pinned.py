"""The CLI's outputs, pinned by hash: a refactoring must leave every protected voxel and byte as it was.

The hashes were taken from the release before the product/evaluation split (commit a784dcc) with
the pinned CPU build of torch; a change of method or defaults must update them on purpose.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from conftest import ROOT, write_nnunet_dataset

from umedprotect.cli import main

SAMPLE = ROOT / "Resources" / "Sample"
SAMPLE_PROTECTED = "53c454af837abb87f53325097902c2ad75f1d9cf5b021fc77f7bf97f76bafff3"
DATASET_PROTECTED = {
    "imagesTr/case000_0000.nii.gz": "b594e5a9ad62178d16d1a2733da6ca62f81f9630b9806ea72cacf2c8a682c297",
    "imagesTr/case001_0000.nii.gz": "9e26aaeeadcda6f5d82d9f31738e1bdaab041bbc8331206568565f5075196d30",
    "imagesTr/case002_0000.nii.gz": "5aa4693b81b92ce2eab42508c3c12c774659c2a81a18bb2ad1612abf138396d8",
    "labelsTr/case000.nii.gz": "23669445765e2a3bb39b386cf2b808449d4e4c3b1e5a8e3ead778835a3dcf1fb",
    "imagesTs/case003_0000.nii.gz": "d6e5ce94558fe5ea83ffe5b9a692ebbd33bdb9710e7ebf34f689654e9e192764",
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_protect_on_the_bundled_sample_writes_the_pinned_bytes(tmp_path):
    out = tmp_path / "protected.nrrd"
    argv = ["protect", str(SAMPLE / "brain1_image.nrrd"), str(SAMPLE / "brain1_label.nrrd"), "-o", str(out), "--device", "cpu"]
    assert main(argv) == 0
    assert sha256(out) == SAMPLE_PROTECTED


def test_protect_dataset_on_a_small_dataset_writes_the_pinned_bytes(tmp_path):
    source = write_nnunet_dataset(tmp_path / "Dataset001_Tiny")
    out = tmp_path / "out"
    assert main(["protect-dataset", str(source), "-o", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert {name: sha256(out / name) for name in DATASET_PROTECTED} == DATASET_PROTECTED
