"""Protect a whole nnU-Net v2 raw dataset, resumably, with a manifest; and verify the result.

The output folder has the input's layout: protected training images, byte-identical labels,
dataset.json and test files, plus ``MANIFEST_NAME``. The manifest is rewritten atomically after
every case, so a run killed at any point can be rerun: finished cases whose output hashes still
match are skipped, the interrupted one is redone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from . import io
from .errors import InputError
from .nnunet import Case, NnUNetDataset, read_dataset
from .records import (
    CaseRecord,
    DatasetJsonRecord,
    DatasetManifest,
    FileRecord,
    ImageGeometry,
    ImageRecord,
    TestCaseRecord,
)

if TYPE_CHECKING:
    from .array_protection import ProtectionResult

MANIFEST_NAME = "umedprotect_manifest.json"
LOCK_NAME = ".umedprotect.lock"  # holds the pid of the run writing the folder
BUDGET_RTOL = 1e-6  # float rounding allowance when re-checking the ε bound

CaseProtector = Callable[..., "ProtectionResult"]  # called as case_protector(image, labels, spacing=spacing)
log = logging.getLogger("umedprotect")


def protect_dataset(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    case_protector: CaseProtector,
    method_name: str,
    parameters: dict,
    *,
    protector_info: dict | None = None,
    device: str = "cpu",
    allow_empty: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> DatasetManifest:
    """Protect every training case of ``in_dir`` into ``out_dir``; return the final manifest.

    ``case_protector(image, labels, spacing=spacing)`` protects one channel (numpy arrays in
    (z, y, x) order) and returns a :class:`protect.ProtectionResult`. ``parameters`` (JSON-able)
    and ``method_name`` are recorded; a rerun with other ones into the same folder is refused.
    Cases whose selected mask is empty are skipped with a warning, or copied unchanged with
    ``allow_empty``. Mask values not declared in dataset.json are an InputError.
    """
    dataset = read_dataset(in_dir)
    out = Path(out_dir)
    if out.resolve() == dataset.root or out.resolve().is_relative_to(dataset.root):
        raise InputError(f"{out}: output folder must not be inside the input dataset {dataset.root}")
    io.check_writable_dir(out)
    label_values = parameters.get("labels")
    empty = _validate_cases(dataset, label_values, allow_empty)  # before anything is written
    manifest = _start_manifest(dataset, out, method_name, parameters, protector_info, device, allow_empty, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        _remove_partial_files(out)
        dataset_json = io.copy_file(dataset.root / "dataset.json", out / "dataset.json", overwrite=True)
        manifest.dataset_json = DatasetJsonRecord(dataset_json)
        _save(manifest, out)
        bar = tqdm(dataset.training, desc="protect-dataset", unit="case", disable=None if progress else True)
        for case in bar:
            bar.set_postfix_str(case.case_id)
            if _is_finished(manifest.cases.get(case.case_id), dataset, case, out):
                continue
            if case.case_id in empty and not allow_empty:
                manifest.cases[case.case_id] = CaseRecord("skipped_empty")
            else:
                manifest.cases[case.case_id] = _protect_case(dataset, case, out, case_protector, case.case_id in empty)
            _save(manifest, out)
        manifest.test = [_copy_test_case(dataset, case, out) for case in dataset.test]
        manifest.status = "complete"
        _save(manifest, out)
    skipped = [cid for cid, entry in manifest.cases.items() if entry.status == "skipped_empty"]
    if skipped:
        log.warning(
            f"{len(skipped)} case(s) with an empty mask were not written ({', '.join(skipped)}); "
            "allow empty masks to copy them unchanged",
            extra={"option": "allow_empty"},
        )
    return manifest


def verify(out_dir: str | os.PathLike, source_dir: str | os.PathLike | None = None) -> list[str]:
    """Re-check a protected dataset against its manifest; return the discrepancies (empty = all good).

    Checks the manifest is complete, every output and label hash, that no case is missing or extra,
    and, with the source dataset (default: the one recorded in the manifest, when it still exists),
    that labels, dataset.json and test files are byte-identical to it, the source is unchanged,
    and every protected image has the source's geometry and pixel type and respects the ε bound.
    """
    out = Path(out_dir)
    manifest = _load_manifest(out)
    problems: list[str] = []
    if manifest.status != "complete":
        problems.append("manifest: the run did not finish (rerun protect-dataset to resume it)")
    source = Path(source_dir) if source_dir is not None else Path(manifest.source)
    if source_dir is not None or source.is_dir():
        source_dataset = read_dataset(source)
    else:
        source_dataset = None
        log.warning(
            f"{source}: source dataset not found; checking hashes only, not labels and ε", extra={"option": "source"}
        )
    problems += _check_file(out / "dataset.json", manifest.dataset_json.sha256)
    expected_files = {"dataset.json", MANIFEST_NAME, LOCK_NAME}
    for entry in manifest.cases.values():
        if not entry.finished:
            continue
        for image in entry.images:
            expected_files.add(image.output)
            output = out / image.output  # one line per file: its geometry is checked when its hash matches
            problems += _check_file(output, image.output_sha256) or _check_geometry(output, image.geometry)
        expected_files.add(entry.label.path)
        problems += _check_file(out / entry.label.path, entry.label.sha256)
    for item in manifest.test:
        for record in item.files:
            expected_files.add(record.path)
            problems += _check_file(out / record.path, record.sha256)
    extra = sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and str(p.relative_to(out)) not in expected_files
    )
    problems += [f"{name}: file not listed in the manifest" for name in extra]
    if source_dataset is not None:
        problems += _check_against_source(manifest, out, source_dataset)
    return problems


def _start_manifest(
    dataset: NnUNetDataset,
    out: Path,
    method: str,
    parameters: dict,
    protector_info: dict | None,
    device: str,
    allow_empty: bool,
    overwrite: bool,
) -> DatasetManifest:
    """A fresh manifest, or the one of an earlier run with the same settings (to resume)."""
    fresh = DatasetManifest(
        status="running",
        source=str(dataset.root),
        method=method,
        parameters=io.json_roundtrip(parameters),  # as it reads back, to compare with an earlier run's
        allow_empty=allow_empty,
        protector=None if protector_info is None else io.json_roundtrip(protector_info),
        versions=io.software_versions(),
        device=device,
    )
    existing_entries = [p for p in out.iterdir() if not p.name.startswith(".")] if out.is_dir() else []
    if overwrite or not existing_entries:
        return fresh
    if not (out / MANIFEST_NAME).is_file():
        raise InputError(
            f"{out}: output folder is not empty and has no {MANIFEST_NAME}; overwrite it or choose another folder",
            option="overwrite",
        )
    previous = _load_manifest(out)
    same = all(getattr(previous, k) == getattr(fresh, k) for k in ("source", "method", "parameters", "allow_empty"))
    if not same or previous.protector_sha256 != fresh.protector_sha256:
        raise InputError(
            f"{out}: holds a run with other settings (source, method, parameters or protector); "
            "start again or choose another folder",
            option="overwrite",
        )
    if previous.versions != fresh.versions:
        log.warning(f"{out}: resuming a run made with other software versions ({previous.versions})")
    fresh.cases = previous.cases
    n_done = sum(1 for entry in fresh.cases.values() if entry.finished)
    log.info(f"resuming: {n_done} of {len(dataset.training)} case(s) already finished in {out}")
    return fresh


def _validate_cases(dataset: NnUNetDataset, label_values: list[int] | None, allow_empty: bool) -> set[str]:
    """Check every training case's headers, mask grid and mask values; return the ids of empty ones.

    Runs before anything is written, so these problems never leave a partial output behind.
    """
    empty = set()
    for case in dataset.training:
        headers = [io.read_header(path) for path in case.images]
        for path, header in zip(case.images[1:], headers[1:]):
            problem = io.geometry_difference(header, headers[0])
            if problem:
                raise InputError(f"{path}: channel grid differs from {case.images[0].name} ({problem})")
        labels, _ = io.to_array(io.read_label(case.label, headers[0], hint=" (nnU-Net needs masks on the image grid)"))
        found = {int(v) for v in np.unique(labels)}
        undeclared = sorted(found - dataset.label_values)
        if undeclared:
            raise InputError(f"{case.label}: mask values {undeclared} are not declared in dataset.json labels")
        if not (found - {0} if label_values is None else found & set(label_values)):
            empty.add(case.case_id)
            action = "copied unchanged (empty masks allowed)" if allow_empty else "skipped, not copied unchanged"
            log.warning(
                f"{case.label}: mask is empty (no label to protect); case {case.case_id} will be {action}",
                extra={"option": None if allow_empty else "allow_empty"},
            )
    return empty


def _protect_case(
    dataset: NnUNetDataset, case: Case, out: Path, case_protector: CaseProtector, empty: bool
) -> CaseRecord:
    """Protect (or, for an empty mask, copy) every channel of ``case``, copy its label; the manifest entry."""
    started = time.perf_counter()
    images = [io.read_image(path) for path in case.images]
    labels, _ = io.to_array(io.read_label(case.label, images[0]))
    records = []
    for path, image in zip(case.images, images):
        relative = dataset.relative(path)
        paths = dict(input=str(relative), output=str(relative), input_sha256=io.sha256(path))
        if empty:
            output_sha256 = io.copy_file(path, out / relative, overwrite=True)
            quality = dict(budget_native=0.0, psnr_db=float("inf"), ssim=1.0, max_abs_change=0.0, fraction_changed=0.0)
        else:
            array, spacing = io.to_array(image)
            result = case_protector(array, labels, spacing=spacing)
            io.write_like(result.protected, image, out / relative, overwrite=True)
            output_sha256 = io.sha256(out / relative)
            metrics = result.metrics
            quality = dict(
                budget_native=float(result.budget),
                psnr_db=metrics["psnr_db"],
                psnr_db_slice_min=metrics.get("psnr_db_slice_min"),  # volumes only
                psnr_db_slice_mean=metrics.get("psnr_db_slice_mean"),
                ssim=metrics["ssim"],
                max_abs_change=metrics["max_abs_change"],
                fraction_changed=metrics["fraction_changed"],
            )
        records.append(ImageRecord(**paths, output_sha256=output_sha256, **quality, geometry=ImageGeometry.of(image)))
    label_relative = dataset.relative(case.label)
    label_hash = io.copy_file(case.label, out / label_relative, overwrite=True)
    return CaseRecord(
        status="copied_empty" if empty else "protected",
        images=records,
        label=FileRecord(str(label_relative), label_hash),
        seconds=round(time.perf_counter() - started, 3),
    )


def _is_finished(entry: CaseRecord | None, dataset: NnUNetDataset, case: Case, out: Path) -> bool:
    """True when an earlier run finished this case and its files still match (inputs included)."""
    if entry is None or not entry.finished:
        return False
    if [r.input for r in entry.images] != [str(dataset.relative(p)) for p in case.images]:
        return False
    try:
        for record, path in zip(entry.images, case.images):
            if io.sha256(path) != record.input_sha256 or io.sha256(out / record.output) != record.output_sha256:
                return False
        return io.sha256(case.label) == entry.label.sha256 == io.sha256(out / entry.label.path)
    except OSError:
        return False


def _copy_test_case(dataset: NnUNetDataset, case: Case, out: Path) -> TestCaseRecord:
    paths = [*case.images, *([case.label] if case.label else [])]
    files = []
    for path in paths:
        relative = dataset.relative(path)
        files.append(FileRecord(str(relative), io.copy_file(path, out / relative, overwrite=True)))
    return TestCaseRecord(case.case_id, files)


def _check_against_source(manifest: DatasetManifest, out: Path, source: NnUNetDataset) -> list[str]:
    """Outputs against the source; a missing output was already reported by the manifest checks."""
    source_json = io.sha256(source.root / "dataset.json")
    problems = _check_file(out / "dataset.json", source_json, "differs from the source", report_missing=False)
    cases = {c.case_id: c for c in source.training}
    missing = sorted(set(cases) - set(manifest.cases))
    problems += [f"case {cid}: in the source but not in the manifest" for cid in missing]
    for case_id, entry in manifest.cases.items():
        case = cases.get(case_id)
        if case is None:
            problems.append(f"case {case_id}: in the manifest but not in the source")
            continue
        if not entry.finished:
            problems.append(f"case {case_id}: skipped (empty mask), not in the output")
            continue
        label = out / entry.label.path
        problems += _check_file(label, io.sha256(case.label), "label differs from the source", report_missing=False)
        for record, path in zip(entry.images, case.images):
            problems += _check_image(out / record.output, path, record)
    for item in source.test:
        for path in [*item.images, *([item.label] if item.label else [])]:
            copy = out / source.relative(path)
            problems += _check_file(copy, io.sha256(path), "differs from the source", report_missing=False)
    return problems


def _check_image(output: Path, source: Path, record: ImageRecord) -> list[str]:
    """Source unchanged since protection; same geometry and pixel type; |change| within the budget."""
    if not output.is_file():
        return []  # already reported by the hash check
    problems = []
    if io.sha256(source) != record.input_sha256:
        problems.append(f"{source}: source image changed since it was protected")
    try:
        original, protected = sitk.ReadImage(str(source)), sitk.ReadImage(str(output))
    except RuntimeError:
        return problems  # an unreadable output is reported by the manifest checks
    difference = io.geometry_difference(protected, original)
    if difference or protected.GetPixelID() != original.GetPixelID():
        what = difference or "pixel type"
        problems.append(f"{record.output}: geometry or pixel type differs from the source ({what})")
        return problems
    change = np.abs(io.to_array(protected)[0].astype(np.float64) - io.to_array(original)[0].astype(np.float64))
    budget = record.budget_native
    if change.size and change.max() > budget * (1 + BUDGET_RTOL) + 1e-12:
        problems.append(f"{record.output}: max change {change.max():.6g} exceeds the budget {budget:.6g}")
    return problems


def _check_geometry(path: Path, recorded: ImageGeometry) -> list[str]:
    """Header of ``path`` against the geometry recorded for its source."""
    if not path.is_file():
        return []  # already reported by the hash check
    try:
        found = ImageGeometry.of(io.read_header(path))
    except InputError as exc:
        return [str(exc)]
    if found.size != recorded.size or found.pixel_type != recorded.pixel_type:
        return [f"{path}: size or pixel type differs from the source recorded in the manifest"]
    for key in ("spacing", "origin", "direction"):
        if not np.allclose(getattr(found, key), getattr(recorded, key), rtol=1e-6, atol=1e-6):
            return [f"{path}: {key} differs from the source recorded in the manifest"]
    return []


def _check_file(
    path: Path, expected_sha256: str | None, what: str = "hash differs from the manifest", report_missing: bool = True
) -> list[str]:
    """``path`` against a hash: one problem line, or none (a missing file only when ``report_missing``)."""
    if not path.is_file():
        return [f"{path}: missing"] if report_missing else []
    if io.sha256(path) != expected_sha256:
        return [f"{path}: {what}"]
    return []


def _load_manifest(out: Path) -> DatasetManifest:
    path = out / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{path}: manifest not found (is this a protect-dataset output folder?)")
    return DatasetManifest.read(path)


def _save(manifest: DatasetManifest, out: Path) -> None:
    manifest.write(out / MANIFEST_NAME)


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Refuse a second run writing into ``out`` at the same time; a lock left by a killed run is taken over."""
    lock = out / LOCK_NAME
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(lock.read_text() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _alive(owner):
                raise InputError(
                    f"{out}: another protect-dataset run (pid {owner}) is writing this folder "
                    f"(if there is none, delete {lock.name})"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its run was killed
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(str(os.getpid()))
        break
    else:
        raise InputError(f"{out}: cannot take the folder lock {lock}")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_partial_files(out: Path) -> None:
    """Delete temporary files an interrupted run left behind (they never carry a final name)."""
    for path in out.rglob(".*.partial*"):
        if path.is_file():
            path.unlink()
