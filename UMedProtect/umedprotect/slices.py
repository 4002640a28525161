"""2D training slices from cases, and random training patches (used by fitting and evaluation)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .array_protection import slice_axis_for
from .intensity import Window, intensity_window
from .victim_grid import resample_image, resample_labels, victim_shape


@dataclass
class SliceSample:
    """One 2D slice with its case-level intensity statistics (native units)."""

    image: np.ndarray  # float32 (H, W)
    labels: np.ndarray  # int64 (H, W)
    case_id: str
    index: int
    window: Window
    mean: float
    std: float
    clip: tuple[float, float] | None = None  # the victim's clipping range before its z-score, if any


def case_slices(
    image: np.ndarray,
    labels: np.ndarray,
    spacing: Sequence[float] | None,
    case_id: str,
    roi_only: bool = True,
    target_spacing: Sequence[float] | None = None,
) -> list[SliceSample]:
    """Slices of one case along its coarsest axis (the axis protection works on); with ``target_spacing``
    (per numpy axis, and ``spacing``) resampled in-plane to it as nnU-Net does (:mod:`victim_grid`). The
    intensity statistics are the case's own, as nnU-Net normalises before it resamples."""
    axis = slice_axis_for(spacing, image.ndim)
    stack = image[None] if axis is None else np.moveaxis(image, axis, 0)
    stack_labels = labels[None] if axis is None else np.moveaxis(labels, axis, 0)
    window = intensity_window(image)
    mean, std = float(image.mean()), float(image.std()) or 1.0
    grid = stack.shape[1:]
    if target_spacing is not None and spacing is not None:
        in_plane = [i for i in range(image.ndim) if i != axis]
        grid = victim_shape(grid, [spacing[i] for i in in_plane], [target_spacing[i] for i in in_plane])

    def pair(i: int) -> tuple[np.ndarray, np.ndarray]:
        if grid == stack.shape[1:]:
            return stack[i], stack_labels[i]
        return resample_image(stack[i], grid), resample_labels(stack_labels[i], grid)

    return [
        SliceSample(slice_image.astype(np.float32), slice_labels.astype(np.int64), case_id, i, window, mean, std)
        for i in range(stack.shape[0])
        if not roi_only or stack_labels[i].any()
        for slice_image, slice_labels in [pair(i)]
    ]


def load_slices(
    cases: Sequence, roi_only: bool = True, target_spacing: Sequence[float] | None = None
) -> list[SliceSample]:
    """Slices of nnU-Net ``Case`` entries (first channel), read and validated by :mod:`io` (``target_spacing``:
    see :func:`case_slices`)."""
    from . import io

    samples: list[SliceSample] = []
    for case in cases:
        image = io.read_image(case.images[0])
        labels = io.read_label(case.label, image)
        array, spacing = io.to_array(image)
        label_array, _ = io.to_array(labels)
        samples += case_slices(array, label_array, spacing, case.case_id, roi_only, target_spacing)
    return samples


def crop_or_pad(array: np.ndarray, top: int, left: int, size: int, fill: float) -> np.ndarray:
    """``size``×``size`` window of ``array`` (leading axes kept) starting at (top, left), padded with ``fill``."""
    h, w = array.shape[-2:]
    out = np.full(array.shape[:-2] + (size, size), fill, dtype=array.dtype)
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + size, h), min(left + size, w)
    if t1 > t0 and l1 > l0:
        out[..., t0 - top : t1 - top, l0 - left : l1 - left] = array[..., t0:t1, l0:l1]
    return out


def patch_origin(labels: np.ndarray, size: int, rng: np.random.Generator, foreground: bool) -> tuple[int, int]:
    """Top-left corner of a random patch; centred on a random foreground pixel when ``foreground``."""
    h, w = labels.shape
    if foreground and labels.any():
        ys, xs = np.nonzero(labels)
        k = rng.integers(len(ys))
        cy, cx = int(ys[k]), int(xs[k])
        cy += int(rng.integers(-size // 4, size // 4 + 1))
        cx += int(rng.integers(-size // 4, size // 4 + 1))
    else:
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
    return cy - size // 2, cx - size // 2


def ct_statistics(train: Sequence[SliceSample]) -> tuple[float, float, float, float]:
    """nnU-Net's CT statistics: the 0.5/99.5 percentiles of the training foreground, and its clipped mean and std."""
    foreground = np.concatenate([s.image[s.labels > 0] for s in train]).astype(np.float64)
    if not foreground.size:
        foreground = np.concatenate([s.image.ravel() for s in train]).astype(np.float64)
    lo, hi = np.percentile(foreground, (0.5, 99.5))
    clipped = np.clip(foreground, lo, hi)
    return float(lo), float(hi), float(clipped.mean()), float(clipped.std()) or 1.0
