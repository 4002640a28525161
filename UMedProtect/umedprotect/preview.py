"""Heatmap preview PNG: original | |perturbation| | protected on the ROI's central slice, zoomed on the ROI."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .atomic import atomic_path
from .intensity import intensity_window
from .metrics import psnr_text


def central_slice(region: np.ndarray, slice_axis: int | None) -> int | None:
    """Index along ``slice_axis`` of the middle slice touching ``region`` (middle of the volume if empty)."""
    if slice_axis is None:
        return None
    other = tuple(a for a in range(region.ndim) if a != slice_axis)
    touched = np.nonzero(np.asarray(region).any(axis=other))[0]
    if touched.size == 0:
        return region.shape[slice_axis] // 2
    return int(touched[touched.size // 2])


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
    overwrite: bool = True,
) -> Path:
    """Write the three-panel preview for the central slice of ``region`` (ROI ∪ band, or the labels).

    The heatmap is |protected - original| in native intensity units with a colour bar; the title
    carries PSNR, SSIM and the max change from ``metrics`` (as from :func:`metrics.image_quality`).
    """
    index = central_slice(region, slice_axis)
    take = (lambda a: np.asarray(a)) if index is None else (lambda a: np.take(np.asarray(a), index, axis=slice_axis))
    box = zoom_box(take(region))
    before = take(original)[box].astype(np.float64)
    after = take(protected)[box].astype(np.float64)
    change = np.abs(after - before)
    window = intensity_window(np.asarray(original))

    figure = Figure(figsize=(12, 4.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    grey = {"cmap": "gray", "vmin": window.lo, "vmax": window.hi, "interpolation": "nearest"}
    axes[0].imshow(before, **grey)
    axes[0].set_title("original")
    heat = axes[1].imshow(change, cmap="hot", vmin=0.0, vmax=max(float(change.max()), 1e-12), interpolation="nearest")
    axes[1].set_title("|perturbation|")
    figure.colorbar(heat, ax=axes[1], fraction=0.046, pad=0.04, label="native intensity units")
    axes[2].imshow(after, **grey)
    axes[2].set_title("protected")
    for axis in axes:
        axis.set_axis_off()
    where = ("" if index is None else f"slice {index} along axis {slice_axis}, ") + "zoomed on the ROI   "
    figure.suptitle(
        f"{where}PSNR {psnr_text(metrics)}   SSIM {metrics['ssim']:.4f}   "
        f"max change {metrics['max_abs_change']:.4g}"
    )
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})
    return path
