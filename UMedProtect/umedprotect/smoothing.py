"""The smooth code (``--codes smooth``): each label's own fine texture, its image noise, removed.

A region without texture stays one under the rotations, scalings, blur and intensity changes of nnU-Net's
augmentation, so victims trained with it take the smoothness for the label, as those trained without it do;
it costs little energy where the labelled tissue's noise is small against the image's range (CT soft tissue),
and can be seen: the label is smoother than its surroundings. A volume is smoothed in 3D (the same millimetres
along every axis), so that a 3D victim finds no noise from slice to slice either. Measured in docs/results.md
(``smooth-liver``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from .array_protection import (
    ProgressCallback,
    ProtectionResult,
    check_inputs,
    limit_visibility,
    make_result,
    slice_axis_for,
)
from .errors import Cancelled
from .intensity import apply_change, intensity_window
from .regions import roi_mask

SMOOTH_SIGMA = 1.0  # pixels: the Gaussian that removes the noise, within each label
SMOOTH_EPSILON = 8.0  # 1/255 of the window: the cap per voxel, above what removing CT noise needs
SLAB_SLICES = 32  # a volume is smoothed this many slices at a time (with a margin the Gaussian reaches): bounded memory


def smoothing_change(
    image: np.ndarray, labels: np.ndarray, sigma: float | Sequence[float] = SMOOTH_SIGMA
) -> np.ndarray:
    """The change (float64) that replaces each label of ``image`` (2D, or a volume with ``sigma`` per axis) by its
    Gaussian smoothing within that label (normalised convolution: no intensity from outside the label enters it);
    zero outside the labels."""
    values = image.astype(np.float64)
    change = np.zeros(values.shape)
    for label in np.unique(labels[labels != 0]):
        inside = (labels == label).astype(np.float64)
        weight = ndimage.gaussian_filter(inside, sigma)
        smoothed = ndimage.gaussian_filter(values * inside, sigma) / np.maximum(weight, 1e-12)
        change += (smoothed - values) * inside
    return change


def protect_smoothed(
    image: np.ndarray,
    labels: np.ndarray,
    spacing: Sequence[float] | None = None,
    *,
    epsilon: float = SMOOTH_EPSILON,
    min_psnr: float | None = None,
    label_values: Sequence[int] | None = None,
    sigma: float = SMOOTH_SIGMA,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ProtectionResult:
    """``image`` with its labels (``label_values``, default all) smoothed, each voxel's change capped at
    ``epsilon``/255 of the case's window and every 2D image or slice (along the coarsest axis of ``spacing``) held
    to ``min_psnr``; voxels outside the labels are bit-identical. A volume is smoothed in 3D, ``sigma`` pixels of
    its finest spacing in millimetres along every axis, so that 2D and 3D victims see the same smooth label."""
    check_inputs(image, labels)
    window = intensity_window(image)
    budget = window.budget(epsilon)
    value_range = (float(image.min()), float(image.max()))
    axis = slice_axis_for(spacing, image.ndim)
    region = roi_mask(labels, None if label_values is None else list(label_values))
    selected = np.where(region, labels, 0)
    if axis is None:
        if cancel is not None and cancel():
            raise Cancelled("protection cancelled")
        protected = apply_change(image, smoothing_change(image, selected, sigma), budget, value_range)
        slices = int(region.any())
        if progress is not None and slices:
            progress(1, 1)
    else:
        protected = image.copy()
        sigmas = volume_sigmas(sigma, spacing, image.ndim)
        stacks = [np.moveaxis(a, axis, 0) for a in (image, selected, protected)]
        stack_sigmas = (sigmas[axis], *(s for i, s in enumerate(sigmas) if i != axis))
        slices = _smooth_slabs(*stacks, stack_sigmas, budget, value_range, progress, cancel)
    details = dict(epsilon=epsilon, smooth_sigma=sigma, band_radius=0, slices_protected=slices)
    if min_psnr is not None:
        details.update(min_psnr=min_psnr, change_scale=limit_visibility(image, protected, budget, min_psnr, axis))
    return make_result(image, protected, region, window, budget, axis, **details)


def volume_sigmas(sigma: float, spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """The Gaussian's sigma per axis (pixels): ``sigma`` pixels of the finest spacing, the same length in
    millimetres along every axis (isotropic pixels without ``spacing``)."""
    if spacing is None:
        return (sigma,) * ndim
    finest = min(float(s) for s in spacing)
    return tuple(sigma * finest / float(s) for s in spacing)


def _smooth_slabs(
    stack_image: np.ndarray,
    stack_labels: np.ndarray,
    stack_protected: np.ndarray,
    sigmas: tuple[float, ...],
    budget: float,
    value_range: tuple[float, float],
    progress: ProgressCallback | None,
    cancel: Callable[[], bool] | None,
) -> int:
    """Smooth a volume (slices on axis 0) into ``stack_protected``, :data:`SLAB_SLICES` slices at a time with a
    margin as deep as the Gaussian reaches (the result as if smoothed whole); returns the slices changed."""
    margin = int(4.0 * sigmas[0] + 0.5)  # scipy's Gaussian reaches 4 sigma (truncate=4.0)
    labelled = np.flatnonzero(stack_labels.reshape(len(stack_labels), -1).any(axis=1))
    starts = sorted({int(i) // SLAB_SLICES * SLAB_SLICES for i in labelled})
    for done, start in enumerate(starts, 1):
        if cancel is not None and cancel():
            raise Cancelled("protection cancelled")
        stop = min(start + SLAB_SLICES, len(stack_image))
        lo, hi = max(start - margin, 0), min(stop + margin, len(stack_image))
        change = smoothing_change(stack_image[lo:hi], stack_labels[lo:hi], sigmas)[start - lo : stop - lo]
        stack_protected[start:stop] = apply_change(stack_image[start:stop], change, budget, value_range)
        if progress is not None:
            progress(done, len(starts))
    return len(labelled)
