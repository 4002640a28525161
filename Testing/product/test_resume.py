"""protect-dataset survives SIGKILL and resumes; verify catches tampering."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import SimpleITK as sitk
from conftest import ROOT, write_nnunet_dataset

from umedprotect import io
from umedprotect.cli import main
from umedprotect.dataset_protection import LOCK_NAME, MANIFEST_NAME

N_CASES = 6


def finished(manifest_path) -> list[str]:
    if not manifest_path.is_file():
        return []
    cases = json.loads(manifest_path.read_text())["cases"]
    return sorted(cid for cid, entry in cases.items() if entry["status"] == "protected")


def outputs(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


@pytest.fixture
def source(tmp_path):
    return write_nnunet_dataset(tmp_path / "Dataset002_Kill", n_train=N_CASES, n_test=1, shape=(10, 64, 64))


@pytest.mark.slow
def test_sigkill_then_rerun_finishes_every_case_exactly_once(tmp_path, source, protector_file, capsys):
    out = tmp_path / "protected"
    argv = ["protect-dataset", str(source), "-o", str(out), "--protector", str(protector_file), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "UMedProtect"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from umedprotect.cli import main; sys.exit(main())", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not finished(out / MANIFEST_NAME) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, process.stderr.read()
    done_before = finished(out / MANIFEST_NAME)
    assert 1 <= len(done_before) < N_CASES
    kept = {cid: (out / "imagesTr" / f"{cid}_0000.nii.gz").stat().st_mtime_ns for cid in done_before}

    assert main(argv) == 0  # resume
    assert f"resuming: {len(done_before)} of {N_CASES}" in capsys.readouterr().err
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["status"] == "complete"
    assert sorted(manifest["cases"]) == [f"case{k:03d}" for k in range(N_CASES)]
    assert all(entry["status"] == "protected" for entry in manifest["cases"].values())
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"case{k:03d}_0000.nii.gz" for k in range(N_CASES)]
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    for cid, mtime in kept.items():  # finished cases were skipped, not redone
        assert (out / "imagesTr" / f"{cid}_0000.nii.gz").stat().st_mtime_ns == mtime
    for entry in manifest["cases"].values():
        assert io.sha256(out / entry["images"][0]["output"]) == entry["images"][0]["output_sha256"]
        assert io.sha256(out / entry["label"]["path"]) == entry["label"]["sha256"]

    clean = tmp_path / "uninterrupted"
    assert (
        main(["protect-dataset", str(source), "-o", str(clean), "--protector", str(protector_file), "--no-progress"])
        == 0
    )
    assert outputs(out) == outputs(clean)  # interruption changed nothing in the result
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    assert "no discrepancies" in capsys.readouterr().out


def test_rerun_redoes_a_case_whose_output_was_damaged(tmp_path, source, protector_file, capsys):
    out = tmp_path / "protected"
    argv = ["protect-dataset", str(source), "-o", str(out), "--protector", str(protector_file), "--no-progress"]
    assert main(argv) == 0
    good = (out / "imagesTr" / "case001_0000.nii.gz").read_bytes()
    (out / "imagesTr" / "case001_0000.nii.gz").write_bytes(b"damaged")
    (out / "imagesTr" / "case002_0000.nii.gz").unlink()
    assert main(argv) == 0
    assert (out / "imagesTr" / "case001_0000.nii.gz").read_bytes() == good
    assert (out / "imagesTr" / "case002_0000.nii.gz").is_file()
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0


def tamper_image_bytes(out, source):
    path = out / "imagesTr" / "case001_0000.nii.gz"
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    array[0, 0, 0] += 1
    io.write_like(array, image, path, overwrite=True)
    return "imagesTr/case001_0000.nii.gz: hash differs from the manifest"


def tamper_label(out, source):
    path = out / "labelsTr" / "case000.nii.gz"
    path.write_bytes(path.read_bytes()[:-3] + b"abc")
    return "labelsTr/case000.nii.gz: hash differs from the manifest"


def tamper_missing_case(out, source):
    (out / "imagesTr" / "case002_0000.nii.gz").unlink()
    return "imagesTr/case002_0000.nii.gz: missing"


def tamper_extra_case(out, source):
    (out / "imagesTr" / "case999_0000.nii.gz").write_bytes(b"x")
    return "imagesTr/case999_0000.nii.gz: file not listed in the manifest"


def tamper_beyond_budget_with_forged_manifest(out, source):
    """A change beyond ε whose hash is also forged into the manifest: only the ε check can catch it."""
    path = out / "imagesTr" / "case000_0000.nii.gz"
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    array[0, 0, 0] += 500
    io.write_like(array, image, path, overwrite=True)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["cases"]["case000"]["images"][0]["output_sha256"] = io.sha256(path)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    return "imagesTr/case000_0000.nii.gz: max change"


def forge_hash(out, case_id):
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    record = manifest["cases"][case_id]["images"][0]
    record["output_sha256"] = io.sha256(out / record["output"])
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    return record


def tamper_one_level_beyond_budget_with_forged_manifest(out, source):
    """The smallest change an integer image can have beyond ε: floor(budget) + 1 levels."""
    path = out / "imagesTr" / "case000_0000.nii.gz"
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    original = sitk.GetArrayFromImage(sitk.ReadImage(str(source / "imagesTr" / "case000_0000.nii.gz")))
    budget = json.loads((out / MANIFEST_NAME).read_text())["cases"]["case000"]["images"][0]["budget_native"]
    array[0, 0, 0] = original[0, 0, 0] + int(budget) + 1
    io.write_like(array, image, path, overwrite=True)
    forge_hash(out, "case000")
    return "imagesTr/case000_0000.nii.gz: max change"


def tamper_unreadable_with_forged_manifest(out, source):
    (out / "imagesTr" / "case001_0000.nii.gz").write_bytes(b"not an image")
    forge_hash(out, "case001")
    return "imagesTr/case001_0000.nii.gz: not a readable image"


def tamper_pixel_type_with_forged_manifest(out, source):
    path = out / "imagesTr" / "case001_0000.nii.gz"
    sitk.WriteImage(sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkInt32), str(path))
    forge_hash(out, "case001")
    return "size or pixel type differs from the source recorded in the manifest"


def tamper_origin_slightly_with_forged_manifest(out, source):
    path = out / "imagesTr" / "case001_0000.nii.gz"
    image = sitk.ReadImage(str(path))
    image.SetOrigin([x + 0.01 for x in image.GetOrigin()])
    sitk.WriteImage(image, str(path))
    forge_hash(out, "case001")
    return "origin differs from the source recorded in the manifest"


def tamper_source_label(out, source):
    path = source / "labelsTr" / "case001.nii.gz"
    labels = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(labels)
    array[0, 0, 0] = 1 - array[0, 0, 0]
    io.write_like(array, labels, path, overwrite=True)
    return "label differs from the source"


def tamper_geometry_with_forged_manifest(out, source):
    path = out / "imagesTr" / "case001_0000.nii.gz"
    image = sitk.ReadImage(str(path))
    image.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(image, str(path))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["cases"]["case001"]["images"][0]["output_sha256"] = io.sha256(path)
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    return "origin differs from the source recorded in the manifest"


@pytest.mark.parametrize(
    "tamper",
    [
        tamper_image_bytes,
        tamper_label,
        tamper_missing_case,
        tamper_extra_case,
        tamper_beyond_budget_with_forged_manifest,
        tamper_one_level_beyond_budget_with_forged_manifest,
        tamper_unreadable_with_forged_manifest,
        tamper_pixel_type_with_forged_manifest,
        tamper_origin_slightly_with_forged_manifest,
        tamper_source_label,
        tamper_geometry_with_forged_manifest,
    ],
)
def test_verify_catches_tampering(tmp_path, protector_file, capsys, tamper):
    source = write_nnunet_dataset(tmp_path / "Dataset003_Small", n_train=3, n_test=1, shape=(4, 24, 24))
    out = tmp_path / "protected"
    assert (
        main(["protect-dataset", str(source), "-o", str(out), "--protector", str(protector_file), "--no-progress"]) == 0
    )
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    expected = tamper(out, source)
    capsys.readouterr()
    assert main(["verify", str(out), "--source", str(source)]) == 3
    report = capsys.readouterr().out
    assert expected in report
    assert "discrepancy" in report.splitlines()[-1]


def test_verify_of_an_unfinished_run(tmp_path, protector_file, capsys):
    source = write_nnunet_dataset(tmp_path / "Dataset004_Small", n_train=2, n_test=0, shape=(4, 24, 24))
    out = tmp_path / "protected"
    assert (
        main(["protect-dataset", str(source), "-o", str(out), "--protector", str(protector_file), "--no-progress"]) == 0
    )
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    manifest["status"] = "running"
    del manifest["cases"]["case001"]
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["verify", str(out)]) == 3
    report = capsys.readouterr().out
    assert "manifest: the run did not finish (rerun protect-dataset to resume it)" in report.splitlines()
    assert "case001: in the source but not in the manifest" in report
    assert "imagesTr/case001_0000.nii.gz: file not listed in the manifest" in report


def test_a_second_concurrent_run_is_refused_and_a_stale_lock_is_taken_over(tmp_path, protector_file, capsys):
    source = write_nnunet_dataset(tmp_path / "Dataset005_Small", n_train=2, n_test=0, shape=(4, 24, 24))
    out = tmp_path / "protected"
    out.mkdir()
    sleeper_code = (
        "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_DFL); time.sleep(60)"  # even under nohup
    )
    sleeper = subprocess.Popen([sys.executable, "-c", sleeper_code])
    try:
        (out / LOCK_NAME).write_text(str(sleeper.pid))
        argv = ["protect-dataset", str(source), "-o", str(out), "--protector", str(protector_file), "--no-progress"]
        assert main(argv) == 2
        assert f"another protect-dataset run (pid {sleeper.pid})" in capsys.readouterr().err
        with pytest.raises(subprocess.TimeoutExpired):  # the running owner is probed, never signalled
            sleeper.wait(timeout=0.5)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert main(argv) == 0  # the lock of a dead process is stale
    assert not (out / LOCK_NAME).exists()


def test_a_lock_of_a_process_this_user_may_not_signal_is_respected(tmp_path, protector_file, capsys, monkeypatch):
    """A lock owner of another user answers the probe with EPERM: it is alive, its lock is not taken over."""
    source = write_nnunet_dataset(tmp_path / "Dataset006_Small", n_train=1, n_test=0, shape=(4, 24, 24))
    out = tmp_path / "protected"
    out.mkdir()
    (out / LOCK_NAME).write_text("1")

    def not_permitted(pid, signal_number):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", not_permitted)
    argv = ["protect-dataset", str(source), "-o", str(out), "--protector", str(protector_file), "--no-progress"]
    assert main(argv) == 2
    assert "another protect-dataset run (pid 1)" in capsys.readouterr().err
    assert (out / LOCK_NAME).read_text() == "1"


def test_verify_accepts_a_float_change_of_exactly_the_budget(tmp_path, protector_file, capsys):
    """The ε re-check allows only float rounding: a voxel changed by the whole budget is within it."""
    source = write_nnunet_dataset(
        tmp_path / "Dataset008_Float", n_train=1, n_test=0, shape=(4, 24, 24), dtype="float64"
    )
    out = tmp_path / "protected"
    argv = ["protect-dataset", str(source), "-o", str(out), "--protector", str(protector_file), "--no-progress"]
    assert main(argv) == 0
    path = out / "imagesTr" / "case000_0000.nii.gz"
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(source / "imagesTr" / "case000_0000.nii.gz")))
    budget = json.loads((out / MANIFEST_NAME).read_text())["cases"]["case000"]["images"][0]["budget_native"]
    array[0, 0, 0] += budget
    io.write_like(array, image, path, overwrite=True)
    forge_hash(out, "case000")
    capsys.readouterr()
    assert main(["verify", str(out), "--source", str(source)]) == 0, capsys.readouterr().out
