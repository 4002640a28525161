"""Typed, versioned records of a run: the ``protect`` report and the dataset manifest.

Each record is written as a JSON object that starts with its format name and version, and is read
back with every entry's type checked: a malformed file is one :class:`InputError` naming the file
and the entry at fault (``cases.case000.images[0].output_sha256 is missing``). The manifest's JSON
layout is the one of format version 1, so the manifests of earlier runs load and resume.
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import ClassVar, Literal

from . import io
from .errors import InputError

OMIT_NONE = {"omit_none": True}  # field metadata: the key is left out while the value is None
NON_FINITE = ("inf", "-inf", "nan")  # how io.write_json stores non-finite floats

CaseStatus = Literal["protected", "copied_empty", "skipped_empty"]
FINISHED = ("protected", "copied_empty")  # case statuses whose files are in the output


@dataclass(frozen=True)
class ImageGeometry:
    """Grid and pixel type of an image, as :func:`io.image_info` gives them."""

    size: list[int]
    spacing: list[float]
    origin: list[float]
    direction: list[float]
    pixel_type: str

    @classmethod
    def of(cls, image) -> ImageGeometry:
        """The geometry of an image or of an image header (``sitk.ImageFileReader``)."""
        return cls(**io.image_info(image))


@dataclass(frozen=True)
class FileRecord:
    """A file by its path and SHA-256."""

    path: str
    sha256: str


@dataclass(frozen=True, kw_only=True)
class ImageRecord:
    """One protected (or copied) channel of a dataset case: paths relative to the dataset roots, hashes, metrics."""

    input: str
    output: str
    input_sha256: str
    output_sha256: str
    budget_native: float  # max allowed |change|, native units
    psnr_db: float
    psnr_db_slice_min: float | None = field(default=None, metadata=OMIT_NONE)  # volumes only
    psnr_db_slice_mean: float | None = field(default=None, metadata=OMIT_NONE)
    ssim: float
    max_abs_change: float
    fraction_changed: float
    # RMS change over the changed voxels in stds of the image, as a victim that z-scores each case sees it
    change_zscore: float | None = field(default=None, metadata=OMIT_NONE)
    # the same in the victim's units (umedprotect.victim_units), where protection aimed at a strength, and the
    # PSNR floor that would have let it reach that strength, where the floor held it below
    change_victim_units: float | None = field(default=None, metadata=OMIT_NONE)
    min_psnr_for_strength: float | None = field(default=None, metadata=OMIT_NONE)
    geometry: ImageGeometry

    @property
    def worst_psnr_db(self) -> float:
        """A volume's worst slice PSNR, a 2D image's PSNR."""
        return self.psnr_db if self.psnr_db_slice_min is None else self.psnr_db_slice_min


@dataclass
class CaseRecord:
    """One training case of a dataset run; a skipped case has its status only."""

    status: CaseStatus
    images: list[ImageRecord] | None = field(default=None, metadata=OMIT_NONE)
    label: FileRecord | None = field(default=None, metadata=OMIT_NONE)
    seconds: float | None = field(default=None, metadata=OMIT_NONE)

    @property
    def finished(self) -> bool:
        """Its files are in the output (protected, or copied with an empty mask)."""
        return self.status in FINISHED

    def problem(self) -> str | None:
        if self.finished and (self.images is None or self.label is None):
            return f"is {self.status} but lacks 'images' or 'label'"
        return None


@dataclass(frozen=True)
class TestCaseRecord:
    """A test case copied unchanged."""

    case_id: str
    files: list[FileRecord]


@dataclass(frozen=True)
class DatasetJsonRecord:
    """The copied dataset.json (no hash before the run copied it)."""

    sha256: str | None = field(default=None, metadata=OMIT_NONE)


class _Record:
    """A record with a format name and version: JSON object in and out, one clear error for a malformed file."""

    FORMAT: ClassVar[str]
    VERSION: ClassVar[int]
    DESCRIPTION: ClassVar[str]  # what the file is, in messages

    def to_json(self) -> dict:
        """The JSON object written to the file (format and version first)."""
        return {"format": self.FORMAT, "format_version": self.VERSION, **_dump(self)}

    @classmethod
    def from_json(cls, data: object, source: str | os.PathLike):
        """The record in ``data`` (a parsed JSON file); InputError naming ``source`` and the entry at fault."""
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT or data.get("format_version") != cls.VERSION:
            raise InputError(f"{source}: not a UMedProtect {cls.DESCRIPTION} (or an unsupported version)")
        body = {k: v for k, v in data.items() if k not in ("format", "format_version")}
        try:
            return _parse_record(cls, body, "")
        except _Malformed as exc:
            raise InputError(f"{source}: malformed {cls.DESCRIPTION}: {exc}") from None

    @classmethod
    def read(cls, path: str | os.PathLike):
        """Read and check a record file."""
        return cls.from_json(io.read_json(path), path)

    def write(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the record atomically as indented JSON."""
        return io.write_json(self.to_json(), path, overwrite=overwrite)


@dataclass
class DatasetManifest(_Record):
    """What ``protect_dataset`` did to a dataset: settings, provenance, and every case's files and metrics."""

    FORMAT: ClassVar[str] = "umedprotect-dataset-manifest"
    VERSION: ClassVar[int] = 1
    DESCRIPTION: ClassVar[str] = "dataset manifest"

    status: Literal["running", "complete"]
    source: str  # the source dataset folder
    method: str
    parameters: dict  # the method's settings (JSON object)
    allow_empty: bool
    protector: dict | None  # UMed's protector file: path, SHA-256, summary
    versions: dict[str, str]
    device: str
    dataset_json: DatasetJsonRecord = field(default_factory=DatasetJsonRecord)
    cases: dict[str, CaseRecord] = field(default_factory=dict)
    test: list[TestCaseRecord] = field(default_factory=list)
    # where the bundled protector was measured not to protect, for this dataset (caveats.py); None: another
    # protector or method, for which nothing was measured
    caveats: list[str] | None = field(default=None, metadata=OMIT_NONE)

    @property
    def protector_sha256(self) -> str | None:
        return (self.protector or {}).get("sha256")

    @property
    def skipped_empty(self) -> list[str]:
        """The training cases skipped for an empty mask (not in the output)."""
        return [case_id for case_id, entry in self.cases.items() if entry.status == "skipped_empty"]

    def problem(self) -> str | None:
        if self.status == "complete" and self.dataset_json.sha256 is None:
            return "is complete but lacks the dataset.json hash"
        return None


@dataclass(frozen=True)
class InputImageRecord:
    """The input image of a ``protect`` run: path, hash (of a DICOM folder's files), geometry."""

    path: str
    sha256: str
    size: list[int]
    spacing: list[float]
    origin: list[float]
    direction: list[float]
    pixel_type: str


@dataclass(frozen=True)
class InputMaskRecord:
    path: str
    sha256: str
    labels: list[int]  # the label values present
    resampled: bool


@dataclass(frozen=True)
class ReportInputs:
    image: InputImageRecord
    mask: InputMaskRecord


@dataclass(frozen=True, kw_only=True)
class ProtectionReport(_Record):
    """What ``umedprotect protect`` did to one image: inputs, output, settings, provenance, metrics, timing."""

    FORMAT: ClassVar[str] = "umedprotect-protection-report"
    VERSION: ClassVar[int] = 1
    DESCRIPTION: ClassVar[str] = "protection report"

    command: str = "umedprotect protect"
    inputs: ReportInputs
    output: FileRecord
    heatmap: str | None
    parameters: dict
    protector: dict | None
    metrics: dict
    versions: dict[str, str]
    device: str
    timing_s: dict[str, float]


class _Malformed(Exception):
    """An entry of a record file that does not fit its type: ``where`` and ``what``."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(f"{where or 'the file'} {what}")


def _dump(value):
    """A record as JSON values (keys in field order; OMIT_NONE fields left out while None)."""
    if is_dataclass(value):
        return {
            f.name: _dump(getattr(value, f.name))
            for f in fields(value)
            if not (f.metadata.get("omit_none") and getattr(value, f.name) is None)
        }
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _parse_record(cls, data: object, where: str):
    if not isinstance(data, dict):
        raise _Malformed(where, "must be a JSON object")
    hints = typing.get_type_hints(cls)
    known = [f for f in fields(cls) if f.init]
    unknown = sorted(set(data) - {f.name for f in known})
    if unknown:
        raise _Malformed(_join(where, unknown[0]), "is not a known entry")
    values = {}
    for f in known:
        if f.name in data:
            values[f.name] = _parse(hints[f.name], data[f.name], _join(where, f.name))
        elif f.default is MISSING and f.default_factory is MISSING:
            raise _Malformed(_join(where, f.name), "is missing")
    record = cls(**values)
    problem = record.problem() if hasattr(record, "problem") else None
    if problem:
        raise _Malformed(where, problem)
    return record


def _parse(kind, value: object, where: str):
    """``value`` checked against the type hint ``kind`` (and converted: "inf" to float, objects to records)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse(inner, value, where)
    if origin is Literal:
        if value not in args:
            raise _Malformed(where, f"is {_short(value)}, not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _Malformed(where, f"must be a list, not {_short(value)}")
        return [_parse(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Malformed(where, f"must be a JSON object, not {_short(value)}")
        return {k: _parse(args[1], v, _join(where, k)) for k, v in value.items()}
    if is_dataclass(kind):
        return _parse_record(kind, value, where)
    if kind is float and value in NON_FINITE:
        return float(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value
    raise _Malformed(where, f"must be {'an' if kind is int else 'a'} {_TYPE_NAMES[kind]}, not {_short(value)}")


_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "JSON object"}


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
