"""The grid an nnU-Net victim trains on, and changes made on it.

nnU-Net resamples every training case whose spacing differs from its target spacing (the median over
the training cases) to that spacing, in-plane with a cubic B-spline (skimage's ``resize``: order 3,
edge mode, no anti-aliasing, clipped to the input's range; label maps: each label's mask linearly,
kept where >= 0.5). A pixel-scale code made on a case's own grid becomes a moiré there.
:func:`map_back` turns a change made on the victim's grid into one on the case's grid that this
resampling turns back into it: the minimum-norm inverse of the (separable, linear) resampling, exact
for a case finer than the target spacing, and for a coarser one as close as its grid allows (a code
of period P on the victim's grid, for cases well under P/2 times coarser: within a few percent).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .nnunet import NnUNetDataset

SPACING_TOLERANCE = 1e-3  # relative; spacings read from headers differ in float32 rounding


def target_spacing(dataset: NnUNetDataset) -> tuple[float, ...] | None:
    """nnU-Net's target spacing for ``dataset``: the median of its training cases' spacings, per numpy axis
    (None when 2D and 3D cases are mixed: nnU-Net refuses such a dataset anyway)."""
    return _median_spacing(_training_grids(dataset))


def victim_spacing(dataset: NnUNetDataset) -> tuple[float, ...] | None:
    """The spacing to make ``dataset``'s changes at: nnU-Net's target spacing where it resamples some training
    case, else None (every case on its own grid)."""
    grids = _training_grids(dataset)
    return _median_spacing(grids) if _resampled(grids) else None


def resampled_cases(dataset: NnUNetDataset) -> list[str]:
    """The training cases nnU-Net's 2D configuration resamples: their in-plane grid, at the target spacing,
    would have another size (the slicing axis, the coarsest, is not resampled in 2D)."""
    return _resampled(_training_grids(dataset))


def _median_spacing(grids: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[float, ...] | None:
    spacings = [spacing for _, spacing in grids.values()]
    if len({s.size for s in spacings}) != 1:
        return None
    return tuple(float(v) for v in np.median(np.stack(spacings), axis=0))


def _resampled(grids: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[str]:
    target = _median_spacing(grids)
    if target is None:
        return []
    median = np.array(target)
    in_plane = np.arange(median.size) != np.argmax(median) if median.size == 3 else np.ones(median.size, bool)
    resampled = []
    for case_id, (size, spacing) in grids.items():
        off = np.abs(spacing / median - 1) > SPACING_TOLERANCE
        resized = np.round(size * spacing / median) != size
        if np.any(in_plane & off & resized):
            resampled.append(case_id)
    return resampled


def _training_grids(dataset: NnUNetDataset) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each training case's size and spacing per numpy axis, from its first image's header."""
    from . import io

    grids = {}
    for case in dataset.training:
        header = io.read_header(case.images[0])
        grids[case.case_id] = (np.array(header.GetSize()[::-1]), np.array(header.GetSpacing()[::-1]))
    return grids


def victim_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    """The size nnU-Net gives an array of ``shape`` and ``spacing`` at the ``target`` spacing (same axes)."""
    return tuple(int(round(n * s / t)) for n, s, t in zip(shape, spacing, target))


@lru_cache(maxsize=32)
def resampling_matrix(size: int, new_size: int) -> np.ndarray:
    """nnU-Net's cubic resampling of ``size`` samples to ``new_size``, as a (new_size, size) matrix."""
    return _zoom(np.eye(size), new_size / size, order=3)


@lru_cache(maxsize=32)
def _inverse_matrix(size: int, new_size: int) -> np.ndarray:
    return np.linalg.pinv(resampling_matrix(size, new_size))


def resample_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A 2D image resampled to ``shape`` as nnU-Net does it (float64; clipped to the image's range, as skimage
    clips)."""
    rows, cols = (resampling_matrix(n, m) for n, m in zip(image.shape, shape))
    return np.clip(rows @ image.astype(np.float64) @ cols.T, image.min(), image.max())


def resample_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A 2D label map resampled to ``shape`` as nnU-Net does it: each label's mask linearly, kept where >= 0.5."""
    factors = tuple(m / n for n, m in zip(labels.shape, shape))
    resampled = np.zeros(shape, dtype=labels.dtype)
    for value in np.unique(labels):
        if value != 0:
            resampled[_zoom((labels == value).astype(np.float64), factors, order=1) >= 0.5] = value
    return resampled


def map_back(change: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The least change on a 2D grid of ``shape`` that nnU-Net's resampling turns into ``change`` (as close as
    the grid allows)."""
    rows, cols = (_inverse_matrix(n, m) for n, m in zip(shape, change.shape))
    return rows @ change @ cols.T


def _zoom(array: np.ndarray, factors, order: int) -> np.ndarray:
    from scipy import ndimage  # here: protect-dataset's help and caveats need none of it

    factors = (factors, 1.0) if np.isscalar(factors) else factors
    return ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True)
