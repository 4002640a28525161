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
    lo, hi = exact_percentiles(image, percentiles)
    if hi <= lo:
        lo, hi = float(np.min(image)), float(np.max(image))
    return Window(lo, hi)


def exact_percentiles(values: np.ndarray, percentiles: tuple[float, ...]) -> tuple[float, ...]:
    """``np.percentile(values.astype(np.float64), percentiles)`` bit for bit, without its float64 copy and sort.

    Numpy's default linear interpolation between the two order statistics around each percentile;
    those come from a histogram for integer images (:func:`_order_statistics`), else from a partial sort.
    """
    values = np.asarray(values)
    n = values.size
    virtual = (n - 1) * np.true_divide(np.asarray(percentiles, dtype=np.float64), 100)
    lower = np.minimum(np.floor(virtual), n - 1).astype(np.intp)
    upper = np.minimum(lower + 1, n - 1)
    gamma = virtual - lower
    ranks = np.unique(np.concatenate([lower, upper]))
    statistics = dict(zip(ranks.tolist(), _order_statistics(values, ranks)))
    a = np.array([statistics[k] for k in lower.tolist()])
    b = np.array([statistics[k] for k in upper.tolist()])
    difference = b - a
    result = np.where(gamma >= 0.5, b - difference * (1 - gamma), a + difference * gamma)  # as numpy's _lerp
    return tuple(float(v) for v in result)


HISTOGRAM_LEVELS = 1 << 20  # integer images spanning at most this many levels are counted, not sorted
HISTOGRAM_CHUNK = 1 << 22  # voxels converted to indices at a time


def distinct_values(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)``, counted (:func:`histogram`) rather than sorted for integer arrays."""
    counted = histogram(values)
    if counted is None:
        return np.unique(values)
    low, counts = counted
    offsets = np.flatnonzero(counts).astype(values.dtype, casting="unsafe")  # low + offset, modulo the type's range
    return np.add(offsets, values.dtype.type(low), dtype=values.dtype)


def histogram(values: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(lowest value, count of every level from it) of an integer array spanning at most :data:`HISTOGRAM_LEVELS`
    levels, counted a chunk at a time; None for other arrays."""
    flat = values.reshape(-1)
    if not np.issubdtype(flat.dtype, np.integer) or not flat.size:
        return None
    low, high = int(flat.min()), int(flat.max())
    if high - low >= HISTOGRAM_LEVELS:
        return None
    counts = np.zeros(high - low + 1, dtype=np.int64)
    offsets = np.dtype(f"u{flat.dtype.itemsize}")  # value - low, modulo the type's range: exact here
    for start in range(0, flat.size, HISTOGRAM_CHUNK):
        chunk = np.subtract(flat[start : start + HISTOGRAM_CHUNK], flat.dtype.type(low), dtype=flat.dtype)
        counts += np.bincount(chunk.view(offsets), minlength=counts.size)
    return low, counts


def _order_statistics(values: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The ``ranks``-th smallest values (0-based, sorted ranks) as float64."""
    counted = histogram(values)
    if counted is not None:
        low, counts = counted
        levels = np.searchsorted(np.cumsum(counts), ranks, side="right")
        return np.array([float(low + int(level)) for level in levels])  # Python ints: no overflow
    return np.partition(values.reshape(-1), ranks)[ranks].astype(np.float64)


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
