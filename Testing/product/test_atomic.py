"""Atomic writes: the final name holds the complete old content or the complete new one, never a partial file,
and no temporary file survives a failure the process lives through."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import ROOT

from umedprotect import io
from umedprotect.atomic import atomic_path
from umedprotect.dataset_protection import _remove_partial_files
from umedprotect.errors import InputError

OLD = b"old complete content\n" * 1000


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "result.nii.gz"
    path.write_bytes(OLD)
    return path


def test_the_final_name_keeps_the_old_content_until_the_block_succeeds(target):
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
        assert target.read_bytes() == OLD  # written beside, not in place
        assert tmp.parent == target.parent  # same file system: the rename is atomic
        assert tmp.name.startswith(".") and ".partial" in tmp.name and tmp.name.endswith(".nii.gz")
    assert target.read_bytes() == b"new"
    assert leftovers(target.parent) == []


def test_the_result_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == 0o644


def test_an_exception_in_the_block_leaves_the_old_content_and_no_temporary_file(target):
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == OLD
    assert leftovers(target.parent) == []


def test_a_failed_rename_leaves_the_old_content_and_no_temporary_file(target, monkeypatch):
    def failing_replace(source, destination):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new")
    assert target.read_bytes() == OLD
    assert leftovers(target.parent) == []


def test_an_existing_file_is_kept_without_overwrite_and_no_temporary_file_is_left(target):
    with pytest.raises(FileExistsError):
        with atomic_path(target, overwrite=False) as tmp:
            tmp.write_bytes(b"new")
    assert target.read_bytes() == OLD
    assert leftovers(target.parent) == []


def test_a_file_created_during_the_write_is_not_overwritten_without_overwrite(tmp_path):
    path = tmp_path / "late.txt"
    with pytest.raises(FileExistsError):
        with atomic_path(path, overwrite=False) as tmp:
            tmp.write_bytes(b"new")
            path.write_bytes(b"someone else's")
    assert path.read_bytes() == b"someone else's"
    assert leftovers(tmp_path) == []


def test_a_writer_failure_in_write_like_leaves_no_temporary_file(tmp_path, monkeypatch):
    def failing_writer(image, name, useCompression=False):
        with open(name, "wb") as handle:
            handle.write(b"half an image")
        raise RuntimeError("ITK cannot write this")

    monkeypatch.setattr(sitk, "WriteImage", failing_writer)
    reference = sitk.GetImageFromArray(np.zeros((4, 4), dtype=np.int16))
    with pytest.raises(InputError, match="cannot be written"):
        io.write_like(np.zeros((4, 4), dtype=np.int16), reference, tmp_path / "image.nii.gz")
    assert list(tmp_path.iterdir()) == []


WRITER = """
import sys, time
from pathlib import Path
from umedprotect.atomic import atomic_path
with atomic_path(Path(sys.argv[1])) as tmp:
    with open(tmp, "wb") as handle:
        for _ in range(4000):
            handle.write(b"N" * 65536)
            handle.flush()
            time.sleep(0.001)
"""

IMAGE_WRITER = """
import sys
import numpy as np, SimpleITK as sitk
from umedprotect import io
reference = sitk.ReadImage(sys.argv[1])
array = np.random.default_rng(0).integers(-1000, 3000, (200, 256, 256)).astype(np.int16)
io.write_like(array, reference, sys.argv[1], overwrite=True)
"""


def kill_while_writing(script: str, target, *args) -> None:
    """Run ``script`` in a subprocess and SIGKILL it as soon as its temporary file has grown."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "UMedProtect"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", script, str(target), *args], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and process.poll() is None:
            partial = [p for p in target.parent.iterdir() if ".partial" in p.name]
            if partial and partial[0].stat().st_size > 1 << 20:
                break
            time.sleep(0.002)
        assert process.poll() is None, f"the writer finished before it could be killed: {process.stderr.read()}"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def test_a_writer_killed_mid_write_leaves_the_complete_old_content(target):
    kill_while_writing(WRITER, target)
    assert target.read_bytes() == OLD
    assert len(leftovers(target.parent)) == 1  # the killed process could not clean up: a hidden .partial file
    _remove_partial_files(target.parent, [Path(target.name)])  # which the next protect-dataset run deletes
    assert leftovers(target.parent) == []


def test_an_image_writer_killed_mid_write_leaves_the_complete_old_image(tmp_path):
    path = tmp_path / "volume.nii.gz"
    old = np.arange(200 * 256 * 256, dtype=np.int64).reshape(200, 256, 256).astype(np.int16) % 977
    sitk.WriteImage(sitk.GetImageFromArray(old), str(path), useCompression=True)
    old_bytes = path.read_bytes()
    kill_while_writing(IMAGE_WRITER, path)
    assert path.read_bytes() == old_bytes
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), old)


def test_a_writer_that_finishes_leaves_the_complete_new_content(target):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "UMedProtect")}
    script = WRITER.replace("range(4000)", "range(40)").replace("time.sleep(0.001)", "pass")
    subprocess.run([sys.executable, "-c", script, str(target)], env=env, check=True)
    assert target.read_bytes() == b"N" * 65536 * 40
    assert leftovers(target.parent) == []
