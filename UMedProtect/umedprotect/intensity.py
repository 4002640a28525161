"""Intensity conventions: the per-case window, the budget in native units, dtype rounding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Window:
    """Normalisation window [lo, hi] of a case, in native intensity units."""

    lo: float
    hi: float

    @property
    def width(self) -> float:
        return max(self.hi - self.lo, 1e-6)

    def budget(self, epsilon: float) -> float:
        """Largest allowed change in native units for a budget of ``epsilon``/255 of the window."""
        return epsilon / 255.0 * self.width


def intensity_window(image: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> Window:
    """Window from intensity percentiles of the whole case (falls back to min/max)."""
    values = np.asarray(image, dtype=np.float64).ravel()
    if values.size > 2_000_000:  # percentiles of a strided sample are accurate and much faster
        values = values[:: values.size // 1_000_000]
    lo, hi = np.percentile(values, percentiles)
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    return Window(float(lo), float(hi))


def normalize(image: np.ndarray, window: Window) -> np.ndarray:
    """Map native intensities to window units (lo -> 0, hi -> 1), float32, not clipped."""
    return ((np.asarray(image, dtype=np.float64) - window.lo) / window.width).astype(np.float32)


def apply_change(
    original: np.ndarray, change: np.ndarray, budget: float, value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Add ``change`` (native units) to ``original`` in its own dtype, keeping |result - original| <= budget.

    Integer images are rounded to the nearest level not beyond the budget; the result stays within
    the dtype's range and within ``value_range``, the whole image's [min, max] (default: that of
    ``original``; pass it when ``original`` is only a crop or a selection of the image's voxels).
    """
    original = np.asarray(original)
    change = np.clip(np.asarray(change, dtype=np.float64), -budget, budget)
    lo, hi = value_range if value_range is not None else (float(original.min()), float(original.max()))
    if np.issubdtype(original.dtype, np.integer):
        step = np.floor(budget)
        change = np.clip(np.rint(change), -step, step)
    result = np.clip(original.astype(np.float64) + change, lo, hi).astype(original.dtype)
    # Float rounding may overshoot by an ulp: keep those voxels unchanged.
    overshoot = np.abs(result.astype(np.float64) - original.astype(np.float64)) > budget
    if overshoot.any():
        result[overshoot] = original[overshoot]
    return result
