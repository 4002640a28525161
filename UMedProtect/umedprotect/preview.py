"""Heatmap preview PNG a radiologist can read: original | |perturbation| over the anatomy | protected.

One slice (by default the most changed one), shown as 3D Slicer shows it: in a clinical display
window (the DICOM window, a CT preset, or intensity percentiles), oriented with R/L, A/P, S/I letters
and named by its anatomical plane and IJK index, zoomed on the protected region.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import atomic_path
from .errors import InputError
from .intensity import DEFAULT_PERCENTILES, intensity_window
from .metrics import psnr_text
from .settings import CT_PRESETS, WINDOW_CHOICES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CT_AIR_BELOW = -500.0  # a CT's air (about -1000 HU) reads below this; MR and other images do not go negative
LPS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # (negative, positive) end of the x, y, z axes in LPS
PLANES = ("sagittal", "coronal", "axial")  # the plane whose normal is the x, y, z axis
SCREEN_AXES = {  # LPS direction pointing to the screen's right and down, as in Slicer's views
    "axial": ((1, 0, 0), (0, 1, 0)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
}
PANEL_INCHES = 3.6  # width of one panel
PANEL_HEIGHT_RANGE = (1.2, 7.2)  # inches: very wide or tall images are letterboxed, never squeezed further
HEAT_ALPHA = 0.6


@dataclass(frozen=True)
class DisplayWindow:
    """Grey-level display window, as a viewer's level (centre) and width, with where it came from."""

    level: float
    width: float
    source: str  # e.g. "DICOM", "CT soft tissue", "percentiles 0.5-99.5"

    @property
    def lo(self) -> float:
        return self.level - self.width / 2

    @property
    def hi(self) -> float:
        return self.level + self.width / 2

    def describe(self) -> str:
        return f"window {self.source}: L {self.level:.4g} W {self.width:.4g}"


def parse_window(text: str) -> str | tuple[float, float]:
    """A ``--window`` value: one of :data:`WINDOW_CHOICES`, or ``LEVEL,WIDTH``."""
    if text in WINDOW_CHOICES:
        return text
    try:
        level, width = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(
            f"{text!r} is neither one of {', '.join(WINDOW_CHOICES)} nor LEVEL,WIDTH", option="window"
        ) from None
    if not (np.isfinite(level) and np.isfinite(width) and width > 0):
        raise InputError(f"{text!r}: LEVEL,WIDTH needs a finite level and a positive width", option="window")
    return level, width


def looks_like_ct(image: np.ndarray, modality: str | None = None) -> bool:
    """True for a CT in Hounsfield units: the modality says CT, or (unknown) air reads below -500."""
    if modality:
        return modality.strip().upper() == "CT"
    return bool(np.min(image) <= CT_AIR_BELOW and np.max(image) >= 0)


def intensity_units(image: np.ndarray, modality: str | None = None) -> str:
    """Name of the image's intensity unit: HU for a CT, else native units."""
    return "HU" if looks_like_ct(image, modality) else "native units"


def choose_window(
    image: np.ndarray,
    choice: str | tuple[float, float] = "auto",
    dicom_window: tuple[float, float] | None = None,
    modality: str | None = None,
) -> DisplayWindow:
    """The display window for ``choice`` (see :func:`parse_window`).

    ``auto``: the DICOM window centre/width when the file has one, else the CT soft-tissue preset
    for a CT (:func:`looks_like_ct`), else the 0.5-99.5 intensity percentiles.
    """
    if isinstance(choice, tuple):
        return DisplayWindow(*choice, source="given")
    if choice == "auto" and dicom_window is not None:
        return DisplayWindow(*dicom_window, source="DICOM")
    if choice == "auto" and looks_like_ct(image, modality):
        choice = "ct-soft-tissue"
    if choice in CT_PRESETS:
        return DisplayWindow(*CT_PRESETS[choice], source=choice.replace("-", " ").replace("ct", "CT", 1))
    if choice not in ("auto", "percentile"):
        raise InputError(
            f"unknown window {choice!r} (choose from {', '.join(WINDOW_CHOICES)} or LEVEL,WIDTH)", option="window"
        )
    window = intensity_window(image)
    lo, hi = DEFAULT_PERCENTILES
    return DisplayWindow((window.lo + window.hi) / 2, window.width, source=f"percentiles {lo:g}-{hi:g}")


def most_changed_slice(original: np.ndarray, protected: np.ndarray, axis: int | None) -> int | None:
    """Index along ``axis`` of the slice with the largest total |change| (the middle one if none changed)."""
    if axis is None:
        return None
    other = tuple(a for a in range(original.ndim) if a != axis)
    change = np.abs(np.asarray(protected, dtype=np.float64) - np.asarray(original, dtype=np.float64)).sum(axis=other)
    if not change.any():
        return original.shape[axis] // 2
    return int(np.argmax(change))


def check_slice_index(index: int, shape: Sequence[int], axis: int | None) -> None:
    """InputError unless ``index`` (``--slice``) is a slice of a volume along ``axis``."""
    if axis is None:
        raise InputError("applies to 3D volumes only; this image is 2D", option="slice")
    if not 0 <= index < shape[axis]:
        raise InputError(
            f"{index} is out of range: the volume has {shape[axis]} slices (0 to {shape[axis] - 1})", option="slice"
        )


@dataclass(frozen=True)
class SliceView:
    """How to show one slice as Slicer does: its name, orientation and pixel aspect."""

    name: str  # e.g. "axial slice 60 of 120 (K index)"
    transpose: bool
    flip_rows: bool
    flip_cols: bool
    letters: dict[str, str] | None  # edge -> patient direction (top, bottom, left, right); None for 2D images
    aspect: float  # height / width of a displayed pixel

    def orient(self, array: np.ndarray) -> np.ndarray:
        """The 2D slice (numpy order) as it is displayed."""
        array = array.T if self.transpose else array
        return array[:: -1 if self.flip_rows else 1, :: -1 if self.flip_cols else 1]


def slice_view(
    shape: Sequence[int],
    axis: int | None,
    index: int | None,
    spacing: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
) -> SliceView:
    """The :class:`SliceView` of slice ``index`` along numpy ``axis`` of an image of ``shape``.

    ``spacing`` is per numpy axis; ``direction`` is SimpleITK's (row-major, LPS; column j is the
    direction of index axis j, i.e. of numpy axis ndim-1-j). The plane is named after the LPS axis
    closest to the slicing axis; the slice is turned and flipped to Slicer's screen orientation.
    """
    spacing = tuple(spacing) if spacing is not None else (1.0,) * len(shape)
    if axis is None:
        return SliceView("2D image", False, False, False, None, spacing[0] / spacing[1])
    matrix = np.asarray(direction if direction is not None else np.eye(3).ravel(), dtype=float).reshape(3, 3)
    vector = {a: matrix[:, 2 - a] for a in range(3)}  # LPS direction of each numpy axis
    plane = PLANES[int(np.argmax(np.abs(vector[axis])))]
    rows, cols = (a for a in range(3) if a != axis)
    right, down = (np.asarray(v, dtype=float) for v in SCREEN_AXES[plane])
    transpose = abs(vector[rows] @ right) + abs(vector[cols] @ down) > abs(vector[cols] @ right) + abs(
        vector[rows] @ down
    )
    if transpose:
        rows, cols = cols, rows
    flip_rows, flip_cols = bool(vector[rows] @ down < 0), bool(vector[cols] @ right < 0)
    screen_down = -vector[rows] if flip_rows else vector[rows]
    screen_right = -vector[cols] if flip_cols else vector[cols]
    letters = {
        "top": _letter(-screen_down),
        "bottom": _letter(screen_down),
        "left": _letter(-screen_right),
        "right": _letter(screen_right),
    }
    name = f"{plane} slice {index} of {shape[axis]} ({'KJI'[axis]} index)"
    return SliceView(name, transpose, flip_rows, flip_cols, letters, spacing[rows] / spacing[cols])


def _letter(vector: np.ndarray) -> str:
    """Patient direction (R/L, A/P, I/S) an LPS vector points to most."""
    largest = int(np.argmax(np.abs(vector)))
    return LPS_LETTERS[largest][int(vector[largest] > 0)]


def zoom_box(region2d: np.ndarray, margin: int = 24, minimum: int = 96) -> tuple[slice, slice]:
    """Square-ish box around ``region2d`` (grown by ``margin``, at least ``minimum`` pixels a side)."""
    if not region2d.any():
        return slice(None), slice(None)
    box = []
    for axis, size in enumerate(region2d.shape):
        idx = np.nonzero(region2d.any(axis=1 - axis))[0]
        lo, hi = int(idx[0]) - margin, int(idx[-1]) + margin + 1
        grow = max(minimum - (hi - lo), 0)
        lo, hi = lo - grow // 2, hi + grow - grow // 2
        lo, hi = max(lo, 0), min(hi, size)
        box.append(slice(lo, hi))
    return box[0], box[1]


def save_heatmap_png(
    original: np.ndarray,
    protected: np.ndarray,
    region: np.ndarray,
    path: str | os.PathLike,
    metrics: dict,
    slice_axis: int | None,
    *,
    spacing: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
    window: DisplayWindow | None = None,
    units: str | None = None,
    slice_index: int | None = None,
    overwrite: bool = True,
) -> Path:
    """Write the three-panel preview of one slice, zoomed on ``region`` (ROI ∪ band) there.

    Panels: the original and the protected slice in ``window`` (default :func:`choose_window`),
    and |protected - original| over the original, with a colour bar in ``units`` (default
    :func:`intensity_units`). The slice is ``slice_index`` along ``slice_axis`` (default: the most
    changed one), oriented and named by :func:`slice_view` from ``spacing`` (numpy order) and
    ``direction`` (SimpleITK's). The title carries PSNR, SSIM and the max change from ``metrics``.
    """
    original, protected = np.asarray(original), np.asarray(protected)
    window = window or choose_window(original)
    units = units or intensity_units(original)
    index = most_changed_slice(original, protected, slice_axis) if slice_index is None else slice_index
    view = slice_view(original.shape, slice_axis, index, spacing, direction)

    def plane(array: np.ndarray) -> np.ndarray:
        return np.asarray(array) if index is None else np.take(np.asarray(array), index, axis=slice_axis)

    box = zoom_box(plane(region))
    before, after = (view.orient(plane(array)[box]).astype(np.float64) for array in (original, protected))
    change = np.abs(after - before)

    figure = _figure(before.shape, view.aspect)
    axes = figure.subplots(1, 3)
    grey = {"cmap": "gray", "vmin": window.lo, "vmax": window.hi, "interpolation": "nearest", "aspect": view.aspect}
    axes[0].imshow(before, **grey)
    axes[0].set_title("original")
    axes[1].imshow(before, **grey)
    heat = axes[1].imshow(
        np.ma.masked_equal(change, 0),
        cmap="autumn",
        vmin=0.0,
        vmax=max(float(change.max()), 1e-12),
        alpha=HEAT_ALPHA,
        interpolation="nearest",
        aspect=view.aspect,
    )
    axes[1].set_title("|perturbation| over the original")
    figure.colorbar(heat, ax=axes[1], shrink=0.9, label=f"|perturbation| ({units})")
    axes[2].imshow(after, **grey)
    axes[2].set_title("protected")
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
        _draw_letters(axis, view.letters)
    figure.suptitle(
        f"{view.name}, zoomed on the protected region\n{window.describe()} {units}   PSNR {psnr_text(metrics)}   "
        f"SSIM {metrics['ssim']:.4f}   max change {metrics['max_abs_change']:.4g} {units}",
        fontsize=10,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=overwrite) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})
    return path


def _figure(shape: tuple[int, int], aspect: float) -> Figure:
    """A figure sized to the panels' physical aspect, laid out so that nothing overlaps (constrained layout)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height = float(np.clip(PANEL_INCHES * shape[0] * aspect / shape[1], *PANEL_HEIGHT_RANGE))
    figure = Figure(figsize=(3 * PANEL_INCHES + 1.2, height + 1.3), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _draw_letters(axis, letters: dict[str, str] | None) -> None:
    """Orientation letters at the panel's edges, white with a dark outline (readable on any anatomy)."""
    if letters is None:
        return
    from matplotlib import patheffects

    places = {
        "top": (0.5, 0.99, "center", "top"),
        "bottom": (0.5, 0.01, "center", "bottom"),
        "left": (0.01, 0.5, "left", "center"),
        "right": (0.99, 0.5, "right", "center"),
    }
    outline = [patheffects.withStroke(linewidth=2, foreground="black")]
    for edge, (x, y, ha, va) in places.items():
        axis.text(
            x,
            y,
            letters[edge],
            transform=axis.transAxes,
            ha=ha,
            va=va,
            color="white",
            fontsize=9,
            fontweight="bold",
            path_effects=outline,
        )
