"""Run-level promises of ``protect_dataset``, each pinned so that breaking the code behind it fails a test.

What a call without options does (CPU recorded, empty masks skipped with a warning naming them, an earlier
run of other settings refused), the output folder (never inside the input, created with its parents), the
progress bar (on a terminal only when asked for, counting cases), workers (cases protected in other
processes, the manifest in case order whichever finished first) and what each manifest record copies
from the case protector (the spacing it is given, the metrics it returns, the time it took).
"""

from __future__ import annotations

import io as stdio
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import write_nnunet_dataset

from umedprotect import dataset_protection, io
from umedprotect.array_protection import ProtectionResult
from umedprotect.dataset_protection import MANIFEST_NAME, protect_dataset
from umedprotect.errors import InputError
from umedprotect.intensity import Window
from umedprotect.nnunet import read_dataset
from umedprotect.records import DatasetManifest

CASES = ("case000", "case001", "case002")
EMPTY_CASE = "case001"
SLOW_CASE = "case000"  # its mask marks voxel (0, 0, 0): the slow protector sleeps on it
PID_DIR = "UMEDPROTECT_TEST_PID_DIR"
METRICS = dict(
    psnr_db=61.5, psnr_db_slice_min=52.25, psnr_db_slice_mean=57.75, ssim=0.995, max_abs_change=1.0, change_zscore=0.125
)


def add_one_in_mask(image, labels, spacing=None) -> ProtectionResult:
    """Adds 1 inside the mask and reports :data:`METRICS` (values no real metric would give by chance)."""
    protected = image + (labels != 0).astype(image.dtype)
    metrics = dict(METRICS, fraction_changed=float((protected != image).mean()))
    return ProtectionResult(protected, image, labels != 0, Window(0.0, 1.0), 1.0, 0, metrics)


def slow_on_first_case(image, labels, spacing=None) -> ProtectionResult:
    """:func:`add_one_in_mask`, two seconds slower on :data:`SLOW_CASE`; notes its process id in ``$PID_DIR``."""
    Path(os.environ[PID_DIR], str(os.getpid())).touch()
    if labels[0, 0, 0]:
        time.sleep(2.0)
    return add_one_in_mask(image, labels, spacing)


@pytest.fixture
def source(tmp_path):
    """Three 3D cases; case001's mask is empty, case000's marks voxel (0, 0, 0)."""
    root = write_nnunet_dataset(tmp_path / "Dataset013_Run", n_train=len(CASES), n_test=1, shape=(4, 24, 24))
    for case_id in CASES:
        values = np.zeros((4, 24, 24), np.uint8)
        if case_id != EMPTY_CASE:
            values[1:3, 4:10, 4:10] = 1
        values[0, 0, 0] = case_id == SLOW_CASE
        path = root / "labelsTr" / f"{case_id}.nii.gz"
        io.write_like(values, sitk.ReadImage(str(path)), path, overwrite=True)
    return root


def run(source, out, protector=add_one_in_mask, parameters=None, **options) -> DatasetManifest:
    return protect_dataset(source, out, protector, protector.__name__, parameters or {"epsilon": 8.0}, **options)


class Terminal(stdio.StringIO):
    """stderr as a terminal: tqdm draws its bar only there (``disable=None``)."""

    def isatty(self) -> bool:
        return True


def test_a_call_without_options_records_the_cpu_skips_empty_masks_naming_them_and_refuses_other_settings(
    source, tmp_path
):
    warnings = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = logging.getLogger("umedprotect")
    logger.addHandler(handler)
    try:
        manifest = run(source, tmp_path / "out", progress=False)
    finally:
        logger.removeHandler(handler)
    assert manifest.device == "cpu"
    assert {case_id: entry.status for case_id, entry in manifest.cases.items()} == {
        "case000": "protected",
        "case001": "skipped_empty",
        "case002": "protected",
    }
    assert [w for w in warnings if "empty mask" in w] == [
        f"1 case(s) with an empty mask were not written ({EMPTY_CASE}); allow empty masks to copy them unchanged"
    ]
    with pytest.raises(InputError):
        run(source, tmp_path / "out", parameters={"epsilon": 4.0}, progress=False)
    assert DatasetManifest.read(tmp_path / "out" / MANIFEST_NAME).parameters == {"epsilon": 8.0}


def test_the_output_is_a_dataset_nnunet_reads_without_the_cases_skipped_for_an_empty_mask(source, tmp_path):
    run(source, tmp_path / "out", progress=False)
    written = read_dataset(tmp_path / "out")
    assert [case.case_id for case in written.training] == ["case000", "case002"]
    assert written.meta["numTraining"] == 2 and read_dataset(source).meta["numTraining"] == 3
    assert dataset_protection.verify(tmp_path / "out") == ["case case001: skipped (empty mask), not in the output"]
    run(source, tmp_path / "all", allow_empty=True, progress=False)
    assert (tmp_path / "all" / "dataset.json").read_bytes() == (source / "dataset.json").read_bytes()


def test_overwrite_replaces_an_earlier_run_of_other_settings(source, tmp_path):
    run(source, tmp_path / "out", progress=False)
    manifest = run(source, tmp_path / "out", parameters={"epsilon": 4.0}, overwrite=True, progress=False)
    assert manifest.parameters == {"epsilon": 4.0}
    assert DatasetManifest.read(tmp_path / "out" / MANIFEST_NAME).parameters == {"epsilon": 4.0}


def test_overwrite_removes_the_files_of_a_case_withdrawn_since_and_nothing_else(source, tmp_path, caplog):
    out = tmp_path / "out"
    run(source, out, progress=False)
    (out / "notes.txt").write_text("the user's own file")
    withdrawn = ("imagesTr/case002_0000.nii.gz", "labelsTr/case002.nii.gz")
    for relative in withdrawn:
        (source / relative).unlink()
    meta = json.loads((source / "dataset.json").read_text())
    (source / "dataset.json").write_text(json.dumps({**meta, "numTraining": meta["numTraining"] - 1}))
    with caplog.at_level(logging.WARNING, logger="umedprotect"):
        run(source, out, overwrite=True, progress=False)
    assert not any((out / relative).exists() for relative in withdrawn)
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert (out / "imagesTr/case000_0000.nii.gz").is_file() and (out / "imagesTs").is_dir()
    assert f"removed 2 case file(s) of an earlier run the dataset no longer has: {', '.join(withdrawn)}" in caplog.text


def test_an_output_folder_inside_the_input_dataset_is_refused_before_writing(source):
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    with pytest.raises(InputError, match="must not be inside the input dataset"):
        run(source, source / "protected", progress=False)
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == before


def test_the_output_folder_is_created_with_its_missing_parents(source, tmp_path):
    out = tmp_path / "not" / "yet" / "there"
    run(source, out, progress=False)
    assert (out / MANIFEST_NAME).is_file()


def bar_states(text: str) -> list[str]:
    """The states tqdm drew of the protect-dataset bar (warnings may be logged to the same stream)."""
    return [part for part in re.split(r"[\r\n]", text) if part.startswith("protect-dataset:")]


def test_the_progress_bar_counts_cases_on_a_terminal_and_only_when_asked_for(source, tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run(source, tmp_path / "quiet", progress=False)
    assert bar_states(terminal.getvalue()) == []
    run(source, tmp_path / "out")
    final = bar_states(terminal.getvalue())[-1]
    assert final.startswith("protect-dataset: 100%") and " 3/3 " in final
    assert "case/s" in final or "s/case" in final
    assert "case002" in final  # the last case protected, after the bar
    terminal.seek(0)
    terminal.truncate()
    run(source, tmp_path / "out")  # resumed: every case is done, the bar starts full
    assert " 3/3 " in bar_states(terminal.getvalue())[0]


def test_each_record_holds_the_protectors_metrics_the_spacing_it_was_given_and_its_time(source, tmp_path, monkeypatch):
    spacings = []

    def recording(image, labels, spacing=None):
        spacings.append(spacing)
        return add_one_in_mask(image, labels, spacing)

    clock = iter([100.0, 101.2345678, 200.0, 200.5])  # (start, end) of the two protected cases

    class Clock:
        perf_counter = staticmethod(lambda: next(clock))

    monkeypatch.setattr(dataset_protection, "time", Clock)
    manifest = run(source, tmp_path / "out", recording, progress=False)
    written = sitk.ReadImage(str(source / "imagesTr" / "case000_0000.nii.gz")).GetSpacing()  # (0.8, 0.7, 2.5)
    assert spacings == [tuple(reversed(written))] * 2  # in numpy's (z, y, x) order
    protected = [manifest.cases[case_id] for case_id in ("case000", "case002")]
    assert [entry.seconds for entry in protected] == [1.235, 0.5]
    for entry in protected:
        (record,) = entry.images
        assert record.psnr_db == METRICS["psnr_db"]
        assert record.psnr_db_slice_min == METRICS["psnr_db_slice_min"]
        assert record.psnr_db_slice_mean == METRICS["psnr_db_slice_mean"]
        assert record.change_zscore == METRICS["change_zscore"]
    on_disk = DatasetManifest.read(tmp_path / "out" / MANIFEST_NAME)
    assert on_disk.cases["case000"].images[0].psnr_db_slice_min == METRICS["psnr_db_slice_min"]


def test_workers_protect_in_other_processes_and_the_manifest_keeps_case_order(source, tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setenv(PID_DIR, str(pids))
    manifest = run(source, tmp_path / "out", slow_on_first_case, workers=2, progress=False, allow_empty=True)
    workers = {int(p.name) for p in pids.iterdir()}
    assert workers and os.getpid() not in workers
    assert list(manifest.cases) == list(CASES)  # case000 finished last
    assert list(DatasetManifest.read(tmp_path / "out" / MANIFEST_NAME).cases) == list(CASES)
