""".nii.gz outputs gzipped by ISA-L: any gzip reader reads them, the same content gives the same bytes, and the
SHA-256 of files read or written whole is remembered without going stale."""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np
import SimpleITK as sitk
from conftest import write_image

from umedprotect import io


def test_a_written_nii_gz_is_plain_gzip_of_what_simpleitk_writes_and_reads_back_exactly(tmp_path):
    array = np.random.default_rng(0).integers(-1000, 2000, (5, 40, 30), dtype=np.int16)
    reference = sitk.ReadImage(str(write_image(array, tmp_path / "ref.nrrd")))
    out = io.write_like(array, reference, tmp_path / "out.nii.gz")
    again = io.write_like(array, reference, tmp_path / "again.nii.gz")
    sitk.WriteImage(reference, str(tmp_path / "plain.nii"))
    content = out.read_bytes()
    assert content[:4] == b"\x1f\x8b\x08\x00" and content[4:8] == b"\0\0\0\0"  # gzip, no name, no time
    assert gzip.decompress(content) == (tmp_path / "plain.nii").read_bytes()
    assert content == again.read_bytes()
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))), array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.nii.gz", "out.nii.gz", "plain.nii", "ref.nrrd"]
    io.write_gzip(tmp_path / "plain.nii", tmp_path / "pieces.nii.gz", chunk=1000)  # streamed a piece at a time
    assert gzip.decompress((tmp_path / "pieces.nii.gz").read_bytes()) == (tmp_path / "plain.nii").read_bytes()


def test_remembered_digests_are_those_of_the_bytes_and_follow_changes(tmp_path):
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    reference = sitk.GetImageFromArray(array)
    out = io.write_like(array, reference, tmp_path / "out.nii.gz")
    assert io.sha256(out) == hashlib.sha256(out.read_bytes()).hexdigest()
    stat = out.stat()
    out.write_bytes(gzip.compress(gzip.decompress(out.read_bytes()), mtime=0))  # same file, other bytes
    os.utime(out, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert io.sha256(out) == hashlib.sha256(out.read_bytes()).hexdigest()
    read = io.read_image(out)  # read whole: remembered
    assert np.array_equal(sitk.GetArrayFromImage(read), array)
    assert io.sha256(out) == hashlib.sha256(out.read_bytes()).hexdigest()
