"""protect-dataset --workers N: byte-identical outputs, one manifest writer, resume after SIGKILL."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from conftest import ROOT, write_nnunet_dataset
from scale_data import make_scale_data, outputs

from umedprotect import dataset_protection
from umedprotect.array_protection import ProtectionResult
from umedprotect.cli import main
from umedprotect.dataset_protection import MANIFEST_NAME, protect_dataset
from umedprotect.errors import InputError
from umedprotect.intensity import Window
from umedprotect.nnunet import read_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_scale_data(tmp_path_factory.mktemp("workers"), n_cases=6, shape=(10, 64, 64))


def finished(manifest_path) -> list[str]:
    try:
        cases = json.loads(manifest_path.read_text())["cases"]
    except (OSError, ValueError):  # not written yet
        return []
    return sorted(cid for cid, entry in cases.items() if entry["status"] == "protected")


def test_two_workers_write_the_bytes_of_one(tmp_path, data, capsys):
    out = tmp_path / "two"
    assert main(data.argv(out, "--workers", "2")) == 0
    assert outputs(out) == outputs(data.reference)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert list(manifest["cases"]) == sorted(manifest["cases"])  # case order, whichever worker finished first
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0


def test_sigkill_of_a_two_worker_run_then_resume(tmp_path, data, capsys):
    out = tmp_path / "killed"
    argv = data.argv(out, "--workers", "2")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "UMedProtect")}
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from umedprotect.cli import main; sys.exit(main())", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not finished(out / MANIFEST_NAME) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)  # the run and its workers, as a crash or scancel would
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, process.stderr.read()
    done_before = finished(out / MANIFEST_NAME)
    assert 1 <= len(done_before) < 6

    assert main(argv) == 0  # resume
    assert f"resuming: {len(done_before)} of 6" in capsys.readouterr().err
    assert json.loads((out / MANIFEST_NAME).read_text())["status"] == "complete"
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    assert outputs(out) == outputs(data.reference)
    assert main(["verify", str(out)]) == 0


def test_a_method_that_cannot_reach_the_workers_is_refused_before_writing(tmp_path, data):
    out = tmp_path / "never"

    def local_protector(image, labels, spacing=None) -> ProtectionResult:  # a closure does not pickle
        raise AssertionError("must not run")

    with pytest.raises(InputError, match="cannot be sent to worker processes") as error:
        protect_dataset(data.source, out, local_protector, "umed", {}, workers=2, progress=False)
    assert error.value.option == "workers"
    assert not out.exists()


def test_workers_must_be_positive(tmp_path, data, capsys):
    out = tmp_path / "never"
    assert main(data.argv(out, "--workers", "0")) == 2
    assert "--workers 0 must be at least 1" in capsys.readouterr().err
    assert not out.exists()


def unchanged(image, labels, spacing=None) -> ProtectionResult:
    """A case protector that changes nothing (module level: it pickles)."""
    metrics = dict(psnr_db=float("inf"), ssim=1.0, max_abs_change=0.0, fraction_changed=0.0)
    return ProtectionResult(image, image, labels != 0, Window(0.0, 1.0), 0.0, 0, metrics)


@pytest.mark.parametrize(
    "available, gpus, expected",
    [
        (False, 0, []),  # CPU only
        (False, 2, []),  # CUDA unusable: no device is chosen, whatever is counted
        (True, 1, []),  # one GPU: the default device
        (True, 2, [0, 1, 0, 1]),
        (True, 3, [0, 1, 2, 0]),
    ],
)
def test_each_worker_takes_its_share_of_threads_and_the_next_gpu_in_turn(monkeypatch, available, gpus, expected):
    """Worker set-up, run here with torch's device calls recorded: four workers started one after the other."""
    import torch

    threads, devices = [], []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_device", devices.append)
    monkeypatch.setattr(dataset_protection, "_worker_case_protector", None)
    started = multiprocessing.get_context("spawn").Value("i", 0)
    for _ in range(4):
        dataset_protection._start_worker(unchanged, 3, started)
    assert threads == [3] * 4 and devices == expected and started.value == 4
    assert dataset_protection._worker_case_protector is unchanged


def test_a_worker_protects_or_copies_a_case_as_this_process_does(tmp_path, monkeypatch):
    source = write_nnunet_dataset(tmp_path / "Dataset007_Worker", n_train=1, n_test=0, shape=(4, 24, 24))
    dataset = read_dataset(source)
    case = dataset.training[0]
    monkeypatch.setattr(dataset_protection, "_worker_case_protector", unchanged)
    for empty, status in ((False, "protected"), (True, "copied_empty")):
        in_worker = dataset_protection._protect_in_worker(dataset, case, tmp_path / f"worker{empty}", empty)
        here = dataset_protection._protect_case(dataset, case, tmp_path / f"here{empty}", unchanged, empty)
        assert in_worker.status == status and replace(in_worker, seconds=None) == replace(here, seconds=None)
        assert outputs(tmp_path / f"worker{empty}") == outputs(tmp_path / f"here{empty}")
