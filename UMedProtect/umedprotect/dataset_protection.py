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

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from . import io
from .errors import InputError
from .nnunet import Case, NnUNetDataset, read_dataset
from .array_protection import ProtectionResult

MANIFEST_NAME = "umedprotect_manifest.json"
LOCK_NAME = ".umedprotect.lock"  # holds the pid of the run writing the folder
MANIFEST_FORMAT = "umedprotect-dataset-manifest"
MANIFEST_VERSION = 1
BUDGET_RTOL = 1e-6  # float rounding allowance when re-checking the ε bound

CaseProtector = Callable[..., ProtectionResult]  # called as case_protector(image, labels, spacing=spacing)
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
) -> dict:
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
        manifest["dataset_json"] = {"sha256": dataset_json}
        _save(manifest, out)
        bar = tqdm(dataset.training, desc="protect-dataset", unit="case", disable=None if progress else True)
        for case in bar:
            bar.set_postfix_str(case.case_id)
            if _is_finished(manifest["cases"].get(case.case_id), dataset, case, out):
                continue
            if case.case_id in empty and not allow_empty:
                manifest["cases"][case.case_id] = {"status": "skipped_empty"}
            else:
                manifest["cases"][case.case_id] = _protect_case(dataset, case, out, case_protector, case.case_id in empty)
            _save(manifest, out)
        manifest["test"] = [_copy_test_case(dataset, case, out) for case in dataset.test]
        manifest["status"] = "complete"
        _save(manifest, out)
    skipped = [cid for cid, entry in manifest["cases"].items() if entry["status"] == "skipped_empty"]
    if skipped:
        log.warning(
            f"{len(skipped)} case(s) with an empty mask were not written ({', '.join(skipped)}); "
            "the output lacks them (use --allow-empty to copy them unchanged)"
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
    try:
        return _verify(out, manifest, source_dir)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{out / MANIFEST_NAME}: manifest is malformed ({type(exc).__name__}: {exc})") from None


def _verify(out: Path, manifest: dict, source_dir: str | os.PathLike | None) -> list[str]:
    problems: list[str] = []
    if manifest.get("status") != "complete":
        problems.append("manifest: the run did not finish (rerun protect-dataset to resume it)")
    source = Path(source_dir) if source_dir is not None else Path(manifest["source"])
    if source_dir is not None or source.is_dir():
        source_dataset = read_dataset(source)
    else:
        source_dataset = None
        log.warning(f"{source}: source dataset not found; checking hashes only (pass --source to check labels and ε)")
    problems += _check_file(out / "dataset.json", manifest["dataset_json"]["sha256"])
    expected_files = {"dataset.json", MANIFEST_NAME, LOCK_NAME}
    for case_id, entry in manifest["cases"].items():
        if entry["status"] == "skipped_empty":
            continue
        for image in entry["images"]:
            expected_files.add(image["output"])
            output = out / image["output"]  # one line per file: its geometry is checked when its hash matches
            problems += _check_file(output, image["output_sha256"]) or _check_geometry(output, image["geometry"])
        expected_files.add(entry["label"]["path"])
        problems += _check_file(out / entry["label"]["path"], entry["label"]["sha256"])
    for item in manifest.get("test", []):
        for record in item["files"]:
            expected_files.add(record["path"])
            problems += _check_file(out / record["path"], record["sha256"])
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
) -> dict:
    """A fresh manifest, or the one of an earlier run with the same settings (to resume)."""
    fresh = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "status": "running",
        "source": str(dataset.root),
        "method": method,
        "parameters": parameters,
        "allow_empty": allow_empty,
        "protector": protector_info,
        "versions": io.software_versions(),
        "device": device,
        "dataset_json": {},
        "cases": {},
        "test": [],
    }
    fresh = io.json_roundtrip(fresh)
    existing_entries = [p for p in out.iterdir() if not p.name.startswith(".")] if out.is_dir() else []
    if overwrite or not existing_entries:
        return fresh
    if not (out / MANIFEST_NAME).is_file():
        raise InputError(f"{out}: output folder is not empty and has no {MANIFEST_NAME} (use --overwrite or another folder)")
    previous = _load_manifest(out)
    same = all(previous.get(k) == fresh[k] for k in ("source", "method", "parameters", "allow_empty"))
    same = same and _protector_hash(previous) == _protector_hash(fresh)
    if not same:
        raise InputError(
            f"{out}: holds a run with other settings (source, method, parameters or protector); "
            "use --overwrite to start again or choose another folder"
        )
    if previous.get("versions") != fresh["versions"]:
        log.warning(f"{out}: resuming a run made with other software versions ({previous.get('versions')})")
    fresh["cases"] = previous.get("cases", {})
    n_done = sum(1 for e in fresh["cases"].values() if e.get("status") in ("protected", "copied_empty"))
    log.info(f"resuming: {n_done} of {len(dataset.training)} case(s) already finished in {out}")
    return fresh


def _protector_hash(manifest: dict) -> str | None:
    return (manifest.get("protector") or {}).get("sha256")


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
            action = "copied unchanged (--allow-empty)" if allow_empty else "skipped (use --allow-empty to copy it unchanged)"
            log.warning(f"{case.label}: mask is empty (no label to protect); case {case.case_id} will be {action}")
    return empty


def _protect_case(dataset: NnUNetDataset, case: Case, out: Path, case_protector: CaseProtector, empty: bool) -> dict:
    """Protect (or, for an empty mask, copy) every channel of ``case``, copy its label; the manifest entry."""
    started = time.perf_counter()
    images = [io.read_image(path) for path in case.images]
    labels, _ = io.to_array(io.read_label(case.label, images[0]))
    records = []
    for path, image in zip(case.images, images):
        relative = dataset.relative(path)
        record = {"input": str(relative), "output": str(relative), "input_sha256": io.sha256(path)}
        if empty:
            record["output_sha256"] = io.copy_file(path, out / relative, overwrite=True)
            record.update(budget_native=0.0, psnr_db=float("inf"), ssim=1.0, max_abs_change=0.0, fraction_changed=0.0)
        else:
            array, spacing = io.to_array(image)
            result = case_protector(array, labels, spacing=spacing)
            io.write_like(result.protected, image, out / relative, overwrite=True)
            record["output_sha256"] = io.sha256(out / relative)
            record["budget_native"] = float(result.budget)
            quality = ("psnr_db", "psnr_db_slice_min", "psnr_db_slice_mean", "ssim", "max_abs_change", "fraction_changed")
            record.update({k: result.metrics[k] for k in quality if k in result.metrics})  # slice PSNRs: volumes only
        record["geometry"] = io.image_info(image)
        records.append(record)
    label_relative = dataset.relative(case.label)
    label_hash = io.copy_file(case.label, out / label_relative, overwrite=True)
    return {
        "status": "copied_empty" if empty else "protected",
        "images": records,
        "label": {"path": str(label_relative), "sha256": label_hash},
        "seconds": round(time.perf_counter() - started, 3),
    }


def _is_finished(entry: dict | None, dataset: NnUNetDataset, case: Case, out: Path) -> bool:
    """True when an earlier run finished this case and its files still match (inputs included)."""
    if not entry or entry.get("status") not in ("protected", "copied_empty"):
        return False
    try:
        if [r["input"] for r in entry["images"]] != [str(dataset.relative(p)) for p in case.images]:
            return False
        for record, path in zip(entry["images"], case.images):
            if io.sha256(path) != record["input_sha256"] or io.sha256(out / record["output"]) != record["output_sha256"]:
                return False
        label = entry["label"]
        return io.sha256(case.label) == label["sha256"] == io.sha256(out / label["path"])
    except (OSError, KeyError, TypeError):
        return False


def _copy_test_case(dataset: NnUNetDataset, case: Case, out: Path) -> dict:
    paths = [*case.images, *([case.label] if case.label else [])]
    files = []
    for path in paths:
        relative = dataset.relative(path)
        files.append({"path": str(relative), "sha256": io.copy_file(path, out / relative, overwrite=True)})
    return {"case_id": case.case_id, "files": files}


def _check_against_source(manifest: dict, out: Path, source: NnUNetDataset) -> list[str]:
    """Outputs against the source; a missing output was already reported by the manifest checks."""
    source_json = io.sha256(source.root / "dataset.json")
    problems = _check_file(out / "dataset.json", source_json, "differs from the source", report_missing=False)
    cases = {c.case_id: c for c in source.training}
    missing = sorted(set(cases) - set(manifest["cases"]))
    problems += [f"case {cid}: in the source but not in the manifest" for cid in missing]
    for case_id, entry in manifest["cases"].items():
        case = cases.get(case_id)
        if case is None:
            problems.append(f"case {case_id}: in the manifest but not in the source")
            continue
        if entry["status"] == "skipped_empty":
            problems.append(f"case {case_id}: skipped (empty mask), not in the output")
            continue
        label = out / entry["label"]["path"]
        problems += _check_file(label, io.sha256(case.label), "label differs from the source", report_missing=False)
        for record, path in zip(entry["images"], case.images):
            problems += _check_image(out / record["output"], path, record)
    for item in source.test:
        for path in [*item.images, *([item.label] if item.label else [])]:
            copy = out / source.relative(path)
            problems += _check_file(copy, io.sha256(path), "differs from the source", report_missing=False)
    return problems


def _check_image(output: Path, source: Path, record: dict) -> list[str]:
    """Source unchanged since protection; same geometry and pixel type; |change| within the budget."""
    if not output.is_file():
        return []  # already reported by the hash check
    problems = []
    if io.sha256(source) != record["input_sha256"]:
        problems.append(f"{source}: source image changed since it was protected")
    try:
        original, protected = sitk.ReadImage(str(source)), sitk.ReadImage(str(output))
    except RuntimeError:
        return problems  # an unreadable output is reported by the manifest checks
    difference = io.geometry_difference(protected, original)
    if difference or protected.GetPixelID() != original.GetPixelID():
        problems.append(f"{record['output']}: geometry or pixel type differs from the source ({difference or 'pixel type'})")
        return problems
    change = np.abs(io.to_array(protected)[0].astype(np.float64) - io.to_array(original)[0].astype(np.float64))
    budget = float(record["budget_native"])
    if change.size and change.max() > budget * (1 + BUDGET_RTOL) + 1e-12:
        problems.append(f"{record['output']}: max change {change.max():.6g} exceeds the budget {budget:.6g}")
    return problems


def _check_geometry(path: Path, geometry: dict) -> list[str]:
    """Header of ``path`` against the geometry recorded for its source."""
    if not path.is_file():
        return []  # already reported by the hash check
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return [f"{path}: not a readable image"]
    found = {
        "size": list(reader.GetSize()),
        "spacing": list(reader.GetSpacing()),
        "origin": list(reader.GetOrigin()),
        "direction": list(reader.GetDirection()),
        "pixel_type": sitk.GetPixelIDValueAsString(reader.GetPixelID()),
    }
    if found["size"] != geometry["size"] or found["pixel_type"] != geometry["pixel_type"]:
        return [f"{path}: size or pixel type differs from the source recorded in the manifest"]
    for key in ("spacing", "origin", "direction"):
        if not np.allclose(found[key], geometry[key], rtol=1e-6, atol=1e-6):
            return [f"{path}: {key} differs from the source recorded in the manifest"]
    return []


def _check_file(
    path: Path, expected_sha256: str, what: str = "hash differs from the manifest", report_missing: bool = True
) -> list[str]:
    """``path`` against a hash: one problem line, or none (a missing file only when ``report_missing``)."""
    if not path.is_file():
        return [f"{path}: missing"] if report_missing else []
    if io.sha256(path) != expected_sha256:
        return [f"{path}: {what}"]
    return []


def _load_manifest(out: Path) -> dict:
    path = out / MANIFEST_NAME
    if not path.is_file():
        raise InputError(f"{path}: manifest not found (is this a protect-dataset output folder?)")
    manifest = io.read_json(path)
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("format_version") != MANIFEST_VERSION:
        raise InputError(f"{path}: not a UMedProtect dataset manifest (or an unsupported version)")
    for key in ("source", "cases", "dataset_json"):
        if key not in manifest:
            raise InputError(f"{path}: manifest lacks {key!r}")
    return manifest


def _save(manifest: dict, out: Path) -> None:
    io.write_json(manifest, out / MANIFEST_NAME)


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
