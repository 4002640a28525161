"""Protect a whole nnU-Net v2 raw dataset, resumably, with a manifest; and verify the result.

The output folder has the input's layout: protected training images, byte-identical labels,
dataset.json and test files, plus ``MANIFEST_NAME``. The manifest is rewritten atomically after
every case, so a run killed at any point can be rerun: finished cases whose output hashes still
match are skipped, the interrupted one is redone.

Two ways to spread the work, which combine and leave byte-identical outputs:

- ``workers``: cases are protected in that many spawned processes on this machine (each with its
  share of the CPU threads, and its GPU in turn when there are several); only the calling process
  writes the manifest, after each finished case.
- ``shard``: shard K of N protects the training cases at positions K, K + N, ... in case-id order,
  so N runs (on N machines sharing the output folder) split a dataset without talking to each
  other. Each writes its own manifest part (:attr:`Shard.manifest_name`) and lock; shard 0 alone
  copies dataset.json and the test cases. :func:`verify` merges the parts and reports missing ones.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from . import io
from .caveats import dataset_caveats
from .errors import InputError
from .nnunet import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, Case, NnUNetDataset, read_dataset
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

SHARD_MANIFEST = re.compile(r"umedprotect_manifest\.shard-(\d+)-of-(\d+)\.json")  # a shard's manifest part

CaseProtector = Callable[..., "ProtectionResult"]  # called as case_protector(image, labels, spacing=spacing)
log = logging.getLogger("umedprotect")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): the training cases at positions index, index + count, ...
    in case-id order. ``Shard(0, 1)`` is the whole dataset, with the plain manifest and lock names."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InputError(f"{self.index}/{self.count}: a shard is K/N with 0 <= K < N", option="shard")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` (as SLURM's ``$SLURM_ARRAY_TASK_ID/N``) -> ``Shard(K, N)``."""
        match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
        if match is None:
            raise InputError(f"{text!r} is not K/N (shard K of N, 0 <= K < N)", option="shard")
        return cls(int(match[1]), int(match[2]))

    def cases(self, cases: Sequence[Case]) -> list[Case]:
        """This shard's cases, in case-id order."""
        return sorted(cases, key=lambda case: case.case_id)[self.index :: self.count]

    @property
    def manifest_name(self) -> str:
        return MANIFEST_NAME if self.count == 1 else f"umedprotect_manifest.shard-{self.index}-of-{self.count}.json"

    @property
    def lock_name(self) -> str:
        return LOCK_NAME if self.count == 1 else f".umedprotect.shard-{self.index}-of-{self.count}.lock"

    @property
    def writes_shared_files(self) -> bool:
        """Shard 0 copies dataset.json and the test cases, so that no two shards write the same file."""
        return self.index == 0


WHOLE_DATASET = Shard(0, 1)


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
    workers: int = 1,
    shard: Shard = WHOLE_DATASET,
) -> DatasetManifest:
    """Protect every training case of ``in_dir`` (of ``shard``) into ``out_dir``; return the final manifest.

    ``case_protector(image, labels, spacing=spacing)`` protects one channel (numpy arrays in
    (z, y, x) order) and returns a :class:`protect.ProtectionResult`. ``parameters`` (JSON-able)
    and ``method_name`` are recorded; a rerun with other ones into the same folder is refused.
    Cases whose selected mask is empty are skipped with a warning, or copied unchanged with
    ``allow_empty``. Mask values not declared in dataset.json are an InputError. ``workers`` > 1
    protects cases in that many processes (``case_protector`` must pickle); ``shard`` protects one
    shard of the training cases (see the module's description).
    """
    dataset = read_dataset(in_dir)
    out = Path(out_dir)
    if out.resolve() == dataset.root or out.resolve().is_relative_to(dataset.root):
        raise InputError(f"{out}: output folder must not be inside the input dataset {dataset.root}")
    if workers < 1:
        raise InputError(f"{workers} must be at least 1", option="workers")
    io.check_writable_dir(out)
    cases = shard.cases(dataset.training)
    with _worker_pool(case_protector, workers) as pool:
        empty = _validate_cases(dataset, cases, parameters.get("labels"), allow_empty, pool)  # before any writing
        manifest = _start_manifest(
            dataset, out, shard, method_name, parameters, protector_info, device, allow_empty, overwrite
        )
        from .protector_file import BUNDLED_NAMES  # scipy

        bundled = (protector_info or {}).get("path")
        if bundled in BUNDLED_NAMES:
            manifest.caveats = dataset_caveats(
                dataset, parameters.get("labels"), bundled, parameters.get("min_psnr"), parameters.get("epsilon")
            )
            for caveat in manifest.caveats:
                log.warning(caveat)
        out.mkdir(parents=True, exist_ok=True)
        with _exclusive(out / shard.lock_name):
            _remove_partial_files(out, _output_paths(dataset, cases, shard))
            if overwrite:
                _remove_stale_cases(dataset, out)
            manifest.dataset_json = DatasetJsonRecord(io.sha256(dataset.root / "dataset.json"))
            _save(manifest, out, shard)  # first: a shard starting later sees a run of the same settings here
            todo = []
            for case in cases:
                if _is_finished(manifest.cases.get(case.case_id), dataset, case, out):
                    continue
                if case.case_id in empty and not allow_empty:
                    manifest.cases[case.case_id] = CaseRecord("skipped_empty")
                else:
                    todo.append(case)
            if shard.writes_shared_files:
                skipped = manifest.skipped_empty
                manifest.dataset_json = DatasetJsonRecord(_write_dataset_json(dataset, out, shard, skipped))
            _save(manifest, out, shard)
            bar = tqdm(
                total=len(cases),
                initial=len(cases) - len(todo),
                desc="protect-dataset",
                unit="case",
                disable=None if progress else True,
            )
            for case_id, record in _protect_cases(dataset, todo, out, case_protector, empty, pool):
                manifest.cases[case_id] = record
                _save(manifest, out, shard)
                bar.set_postfix_str(case_id)
                bar.update()
            bar.close()
            in_order = {case.case_id: manifest.cases[case.case_id] for case in cases if case.case_id in manifest.cases}
            manifest.cases = {**in_order, **manifest.cases}  # case-id order, whichever worker finished first
            if shard.writes_shared_files:
                manifest.test = [_copy_test_case(dataset, case, out) for case in dataset.test]
            manifest.status = "complete"
            _save(manifest, out, shard)
    skipped = manifest.skipped_empty
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
    A sharded run's manifest parts are merged: a missing or unfinished shard is a discrepancy.
    """
    out = Path(out_dir)
    manifest, bookkeeping, problems = _merged_manifest(out)
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
    expected_files = {"dataset.json", *bookkeeping}
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
    shard: Shard,
    method: str,
    parameters: dict,
    protector_info: dict | None,
    device: str,
    allow_empty: bool,
    overwrite: bool,
) -> DatasetManifest:
    """A fresh manifest, or the one of an earlier run with the same settings (to resume).

    A shard may also start in a folder where other shards of the same count and settings run.
    """
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
    own = out / shard.manifest_name
    siblings = sorted(out.glob(f"umedprotect_manifest.shard-*-of-{shard.count}.json")) if shard.count > 1 else []
    earlier = own if own.is_file() else next(iter(siblings), None)
    if earlier is None:
        raise InputError(
            f"{out}: output folder is not empty and has no {shard.manifest_name}; "
            "overwrite it or choose another folder",
            option="overwrite",
        )
    previous = DatasetManifest.read(earlier)
    same = all(getattr(previous, k) == getattr(fresh, k) for k in ("source", "method", "parameters", "allow_empty"))
    if not same or previous.protector_sha256 != fresh.protector_sha256:
        raise InputError(
            f"{out}: holds a run with other settings (source, method, parameters or protector); "
            "start again or choose another folder",
            option="overwrite",
        )
    if earlier != own:
        return fresh  # another shard's part: this shard starts afresh beside it
    if previous.versions != fresh.versions:
        log.warning(f"{out}: resuming a run made with other software versions ({previous.versions})")
    fresh.cases = previous.cases
    n_done = sum(1 for entry in fresh.cases.values() if entry.finished)
    total = len(shard.cases(dataset.training))
    log.info(f"resuming: {n_done} of {total} case(s) recorded as finished in {out} (redone if their files changed)")
    return fresh


def _validate_cases(
    dataset: NnUNetDataset,
    cases: Sequence[Case],
    label_values: list[int] | None,
    allow_empty: bool,
    pool: Executor | None,
) -> set[str]:
    """Check each case's headers, mask grid and mask values (in ``pool`` if any); return the ids of empty ones.

    Runs before anything is written, so these problems never leave a partial output behind.
    """
    arguments = (cases, repeat(dataset.label_values), repeat(label_values))
    found_empty = (pool.map if pool else map)(_validate_case, *arguments)
    empty = set()
    for case, is_empty in zip(cases, found_empty):
        if is_empty:
            empty.add(case.case_id)
            action = "copied unchanged (empty masks allowed)" if allow_empty else "skipped, not copied unchanged"
            log.warning(
                f"{case.label}: mask is empty (no label to protect); case {case.case_id} will be {action}",
                extra={"option": None if allow_empty else "allow_empty"},
            )
    return empty


def _validate_case(case: Case, declared: set[int], label_values: list[int] | None) -> bool:
    """Check one case (InputError on a problem); whether its selected mask is empty."""
    headers = [io.read_header(path) for path in case.images]
    for path, header in zip(case.images[1:], headers[1:]):
        problem = io.geometry_difference(header, headers[0])
        if problem:
            raise InputError(f"{path}: channel grid differs from {case.images[0].name} ({problem})")
    labels, _ = io.to_array(io.read_label(case.label, headers[0], hint=" (nnU-Net needs masks on the image grid)"))
    found = {int(v) for v in np.unique(labels)}
    undeclared = sorted(found - declared)
    if undeclared:
        raise InputError(f"{case.label}: mask values {undeclared} are not declared in dataset.json labels")
    return not (found - {0} if label_values is None else found & set(label_values))


def _protect_cases(
    dataset: NnUNetDataset,
    cases: Sequence[Case],
    out: Path,
    case_protector: CaseProtector,
    empty: set[str],
    pool: Executor | None,
) -> Iterator[tuple[str, CaseRecord]]:
    """(case id, manifest entry) of each case as it finishes: here in turn, or in ``pool`` in any order."""
    if pool is None:
        for case in cases:
            yield case.case_id, _protect_case(dataset, case, out, case_protector, case.case_id in empty)
        return
    futures = {pool.submit(_protect_in_worker, dataset, case, out, case.case_id in empty): case for case in cases}
    for future in as_completed(futures):
        yield futures[future].case_id, future.result()


@contextlib.contextmanager
def _worker_pool(case_protector: CaseProtector, workers: int) -> Iterator[Executor | None]:
    """``workers`` spawned processes holding ``case_protector`` (None for one worker: this process)."""
    if workers == 1:
        yield None
        return
    try:
        pickle.dumps(case_protector)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        message = f"{workers}: this method cannot be sent to worker processes ({exc}); use 1 worker"
        raise InputError(message, option="workers") from None
    context = multiprocessing.get_context("spawn")  # no fork of a process holding threads or a CUDA context
    threads = max(1, (os.cpu_count() or 1) // workers)
    started = context.Value("i", 0)
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(case_protector, threads, started)
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_worker_case_protector: CaseProtector | None = None  # set in each worker process by _start_worker


def _start_worker(case_protector: CaseProtector, threads: int, started) -> None:
    """A worker's set-up: its share of the CPU threads, the next GPU in turn when there are several."""
    global _worker_case_protector
    import torch

    torch.set_num_threads(threads)
    with started.get_lock():
        index = started.value
        started.value += 1
    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        torch.cuda.set_device(index % torch.cuda.device_count())  # "cuda" is then this worker's GPU
    _worker_case_protector = case_protector


def _protect_in_worker(dataset: NnUNetDataset, case: Case, out: Path, empty: bool) -> CaseRecord:
    return _protect_case(dataset, case, out, _worker_case_protector, empty)


def _output_paths(dataset: NnUNetDataset, cases: Iterable[Case], shard: Shard) -> list[Path]:
    """The files a run of ``shard`` writes in its output folder, relative to it."""
    paths = [Path(shard.manifest_name)]
    paths += [dataset.relative(path) for case in cases for path in (*case.images, case.label)]
    if shard.writes_shared_files:
        paths.append(Path("dataset.json"))
        test_files = [path for case in dataset.test for path in (*case.images, *([case.label] if case.label else []))]
        paths += [dataset.relative(path) for path in test_files]
    return paths


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
                change_zscore=metrics.get("change_zscore"),  # baselines of add-ons may not report it
                change_victim_units=metrics.get("change_victim_units"),
                min_psnr_for_strength=metrics.get("min_psnr_for_strength"),
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
    skipped = manifest.skipped_empty
    written, problems = out / "dataset.json", []
    if written.is_file() and io.sha256(written) != io.sha256(source.root / "dataset.json"):  # copied, or ...
        if not skipped or io.read_json(written) != _without_cases(source.meta, skipped):  # ... less the skipped
            problems.append(f"{written}: differs from the source")
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


def _merged_manifest(out: Path) -> tuple[DatasetManifest, set[str], list[str]]:
    """The manifest of ``out``, its shards' parts merged; the names of the run's own files; problems found."""
    path = out / MANIFEST_NAME
    if path.is_file():
        return DatasetManifest.read(path), {MANIFEST_NAME, LOCK_NAME}, []
    found = [(SHARD_MANIFEST.fullmatch(p.name), p) for p in sorted(out.glob("umedprotect_manifest.shard-*.json"))]
    parts = {Shard(int(match[1]), int(match[2])): p for match, p in found if match}
    if not parts:
        raise InputError(f"{path}: manifest not found (is this a protect-dataset output folder?)")
    manifests = {shard: DatasetManifest.read(p) for shard, p in sorted(parts.items(), key=lambda i: i[0].index)}
    first = next(iter(manifests.values()))
    counts = sorted({shard.count for shard in parts})
    problems = []
    if len(counts) > 1:
        problems.append(f"{out}: manifest parts of runs with different shard counts ({', '.join(map(str, counts))})")
    for k in range(counts[-1]):
        if Shard(k, counts[-1]) not in parts:
            missing = Shard(k, counts[-1]).manifest_name
            problems.append(f"{out / missing}: missing (protect shard {k} of {counts[-1]})")
    cases: dict[str, CaseRecord] = {}
    for shard, manifest in manifests.items():
        settings = ("source", "method", "parameters", "allow_empty", "protector_sha256")
        if any(getattr(manifest, key) != getattr(first, key) for key in settings):
            problems.append(f"{parts[shard]}: made with other settings than the other shards")
        twice = sorted(set(manifest.cases) & set(cases))
        problems += [f"case {case_id}: in more than one shard's manifest" for case_id in twice]
        cases.update(manifest.cases)
    done = not problems and all(manifest.status == "complete" for manifest in manifests.values())
    merged = replace(
        first,
        status="complete" if done else "running",
        cases=dict(sorted(cases.items())),
        test=[item for manifest in manifests.values() for item in manifest.test],
    )
    return merged, {name for shard in parts for name in (shard.manifest_name, shard.lock_name)}, problems


def _save(manifest: DatasetManifest, out: Path, shard: Shard) -> None:
    manifest.write(out / shard.manifest_name)


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Refuse a second run holding ``lock`` at the same time; a lock left by a killed run is taken over."""
    out = lock.parent
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


def _write_dataset_json(dataset: NnUNetDataset, out: Path, shard: Shard, skipped: list[str]) -> str:
    """Copy dataset.json into ``out``; in a run over the whole dataset, without the cases skipped for an empty
    mask (numTraining and any "dataset" entry), so that the output is a dataset nnU-Net reads. Its sha256."""
    if not skipped or shard.count > 1:
        return io.copy_file(dataset.root / "dataset.json", out / "dataset.json", overwrite=True)
    return io.sha256(io.write_json(_without_cases(dataset.meta, skipped), out / "dataset.json"))


def _without_cases(meta: dict, case_ids: Sequence[str]) -> dict:
    """dataset.json's content without these training cases (numTraining and any "dataset" entry)."""
    meta = {**meta, "numTraining": meta["numTraining"] - len(case_ids)}
    if "dataset" in meta:
        meta["dataset"] = {case_id: entry for case_id, entry in meta["dataset"].items() if case_id not in case_ids}
    return meta


def _remove_stale_cases(dataset: NnUNetDataset, out: Path) -> None:
    """Delete the case files an earlier run left in ``out`` that ``dataset`` no longer has (a case withdrawn
    since must not stay in a folder that is about to be shared); other files are left alone."""
    keep = set(_output_paths(dataset, dataset.training, WHOLE_DATASET))  # every shard's case files
    folders = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
    stale = [
        path
        for folder in folders
        for path in sorted((out / folder).glob("[!.]*"))
        if path.is_file() and path.relative_to(out) not in keep
    ]
    for path in stale:
        path.unlink()
    if stale:
        names = ", ".join(str(path.relative_to(out)) for path in stale)
        log.warning(f"{out}: removed {len(stale)} case file(s) of an earlier run the dataset no longer has: {names}")


def _remove_partial_files(out: Path, outputs: Iterable[Path]) -> None:
    """Delete the temporary files an interrupted run left behind of ``outputs`` (never those of other shards)."""
    for output in outputs:
        for path in (out / output).parent.glob(f".{output.name}.*.partial*"):
            if path.is_file():
                path.unlink()
