"""The nnU-Net v2 raw dataset layout: ``dataset.json``, ``imagesTr``, ``labelsTr``, ``imagesTs``.

Cases are found either from the folders (``imagesTr/CASE_0000<ending>`` with one file per channel,
``labelsTr/CASE<ending>``) or from the optional ``"dataset"`` entry of dataset.json
(``{"CASE": {"images": [...], "label": "..."}}``, paths relative to the dataset root).
Every path must stay inside the dataset root, symlinks included.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = "imagesTr", "labelsTr", "imagesTs", "labelsTs"


@dataclass
class Case:
    """One case: one image file per channel (in channel order) and its label file, if any."""

    case_id: str
    images: list[Path]
    label: Path | None = None


@dataclass
class NnUNetDataset:
    """A validated nnU-Net v2 raw dataset."""

    root: Path
    meta: dict
    training: list[Case]
    test: list[Case] = field(default_factory=list)
    file_ending: str = ".nii.gz"
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def is_ct(self) -> bool:
        """True when the first channel is named CT (nnU-Net then normalises it with fixed statistics)."""
        return str(self.meta["channel_names"]["0"]).strip().upper() == "CT"

    @property
    def label_values(self) -> set[int]:
        """Every label value dataset.json declares (background included)."""
        return set(self.labels.values())

    @property
    def channels(self) -> int:
        return len(self.meta["channel_names"])

    def relative(self, path: Path) -> Path:
        """``path`` relative to the dataset root (to mirror the layout in an output folder)."""
        return path.relative_to(self.root)


def read_dataset(root: str | Path) -> NnUNetDataset:
    """Read and validate ``root/dataset.json`` and the case files; raise InputError on any problem."""
    given = Path(root)
    if not given.is_dir():
        raise InputError(f"{given}: dataset folder not found")
    root = given.resolve()
    meta = _read_meta(root / "dataset.json")
    ending = meta["file_ending"]
    labels = _label_map(meta["labels"], root / "dataset.json")
    n_channels = len(meta["channel_names"])
    if "dataset" in meta:
        training = _cases_from_entries(root, meta["dataset"], n_channels)
    else:
        training = _cases_from_folder(root, TRAIN_IMAGES, TRAIN_LABELS, ending, n_channels, labels_required=True)
    if not training:
        raise InputError(f"{root}: no training cases found in {TRAIN_IMAGES}/ (file ending {ending!r})")
    if meta["numTraining"] != len(training):
        raise InputError(
            f"{root / 'dataset.json'}: numTraining is {meta['numTraining']} "
            f"but {len(training)} training cases were found"
        )
    test = _cases_from_folder(root, TEST_IMAGES, TEST_LABELS, ending, n_channels, labels_required=False)
    return NnUNetDataset(root, meta, training, test, ending, labels)


def _read_meta(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: dataset.json not found (an nnU-Net v2 raw dataset is expected)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: dataset.json is not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: dataset.json must be a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise InputError(f"{path}: dataset.json lacks required keys {missing}")
    channels = meta["channel_names"]
    if not isinstance(channels, dict) or not channels or sorted(channels) != [str(i) for i in range(len(channels))]:
        raise InputError(f"{path}: channel_names must map '0', '1', ... to channel names")
    ending = meta["file_ending"]
    if not isinstance(ending, str) or not re.fullmatch(r"(\.[A-Za-z0-9]+)+", ending):
        raise InputError(f"{path}: file_ending {ending!r} is not a file extension like '.nii.gz'")
    if not isinstance(meta["numTraining"], int) or isinstance(meta["numTraining"], bool) or meta["numTraining"] < 0:
        raise InputError(f"{path}: numTraining must be a non-negative integer")
    return meta


def _label_map(raw: object, source: Path) -> dict[str, int]:
    if not isinstance(raw, dict) or not raw:
        raise InputError(f"{source}: labels must map label names to integer values")
    labels: dict[str, int] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise InputError(
                f"{source}: label {name!r} has value {value!r}; integer values 0..65535 are supported "
                "(region-based labels are not)"
            )
        labels[name] = value
    if 0 not in labels.values():
        raise InputError(f"{source}: labels must declare background as 0")
    if len(set(labels.values())) != len(labels):
        raise InputError(f"{source}: labels has duplicate values")
    return labels


def _inside(root: Path, path: Path, source: str) -> Path:
    """``path`` with symlinks resolved; InputError when it points outside ``root``."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise InputError(f"{source}: {path} points outside the dataset folder {root}")
    return path


def _entry_path(root: Path, value: object, source: str) -> Path:
    if not isinstance(value, str) or not value:
        raise InputError(f"{source}: case paths must be non-empty strings, got {value!r}")
    relative = Path(value)
    if relative.is_absolute() or ".." in relative.parts:
        raise InputError(f"{source}: case path {value!r} escapes the dataset folder")
    path = _inside(root, root / relative, source)
    if not path.is_file():
        raise InputError(f"{source}: case file {value!r} not found")
    return path


def _cases_from_entries(root: Path, entries: object, n_channels: int) -> list[Case]:
    source = str(root / "dataset.json")
    if not isinstance(entries, dict):
        raise InputError(f"{source}: 'dataset' must map case ids to {{'images': [...], 'label': ...}}")
    cases = []
    for case_id, entry in sorted(entries.items()):
        if not isinstance(entry, dict) or not isinstance(entry.get("images"), list) or "label" not in entry:
            raise InputError(f"{source}: case {case_id!r} needs 'images' (a list) and 'label'")
        if len(entry["images"]) != n_channels:
            raise InputError(f"{source}: case {case_id!r} has {len(entry['images'])} images for {n_channels} channels")
        images = [_entry_path(root, p, source) for p in entry["images"]]
        cases.append(Case(str(case_id), images, _entry_path(root, entry["label"], source)))
    return cases


def _cases_from_folder(
    root: Path, image_dir: str, label_dir: str, ending: str, n_channels: int, labels_required: bool
) -> list[Case]:
    folder = root / image_dir
    if not folder.exists():
        if labels_required:
            raise InputError(f"{folder}: folder not found (an nnU-Net v2 raw dataset is expected)")
        return []
    _inside(root, folder, str(folder))
    pattern = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(ending)}$")
    channels: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue  # hidden files, including our own partial writes
        match = pattern.match(path.name)
        if match is None or not path.is_file():
            raise InputError(f"{path}: unexpected entry; expected CASE_XXXX{ending} image files")
        _inside(root, path, str(path))
        channels.setdefault(match["case"], {})[int(match["channel"])] = path
    label_folder = root / label_dir
    if label_folder.exists():
        _inside(root, label_folder, str(label_folder))
    cases = []
    for case_id, found in sorted(channels.items()):
        if sorted(found) != list(range(n_channels)):
            raise InputError(
                f"{folder}: case {case_id!r} has channels {sorted(found)}, expected {list(range(n_channels))}"
            )
        label = label_folder / f"{case_id}{ending}"
        if label.is_file():
            _inside(root, label, str(label))
        elif labels_required:
            raise InputError(f"{label}: label file for case {case_id!r} not found")
        else:
            label = None
        cases.append(Case(case_id, [found[i] for i in range(n_channels)], label))
    return cases
