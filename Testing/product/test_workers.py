"""protect-dataset --workers N: byte-identical outputs, one manifest writer, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from scale_data import make_scale_data, outputs

from umedprotect.array_protection import ProtectionResult
from umedprotect.cli import main
from umedprotect.dataset_protection import MANIFEST_NAME, protect_dataset
from umedprotect.errors import InputError


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
