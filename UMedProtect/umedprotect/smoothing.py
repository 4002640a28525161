"""The smooth code (``--codes smooth``): each label's own fine texture, its image noise, removed.

A region without texture stays one under the rotations, scalings, blur and intensity changes of nnU-Net's
augmentation, so victims trained with it take the smoothness for the label, as those trained without it do;
it costs little energy where the labelled tissue's noise is small against the image's range (CT soft tissue),
and can be seen: the label is smoother than its surroundings. Measured in docs/results.md (``smooth-liver``).
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


def smoothing_change(image: np.ndarray, labels: np.ndarray, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """The change (float64) that replaces each label of a 2D ``image`` by its Gaussian smoothing within that label
    (normalised convolution: no intensity from outside the label enters it); zero outside the labels."""
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
    """``image`` with its labels (``label_values``, default all) smoothed slice by slice along the coarsest axis
    (of ``spacing``), each voxel's change capped at ``epsilon``/255 of the case's window and every 2D image or
    slice held to ``min_psnr``; voxels outside the labels are bit-identical."""
    check_inputs(image, labels)
    window = intensity_window(image)
    budget = window.budget(epsilon)
    value_range = (float(image.min()), float(image.max()))
    axis = slice_axis_for(spacing, image.ndim)
    region = roi_mask(labels, None if label_values is None else list(label_values))
    protected = image.copy()
    stack_image, stack_labels, stack_protected, stack_region = (
        a[None] if axis is None else np.moveaxis(a, axis, 0) for a in (image, labels, protected, region)
    )
    indices = [i for i, slice_region in enumerate(stack_region) if slice_region.any()]
    for done, i in enumerate(indices, 1):
        if cancel is not None and cancel():
            raise Cancelled("protection cancelled")
        selected = np.where(stack_region[i], stack_labels[i], 0)
        change = smoothing_change(stack_image[i], selected, sigma)
        stack_protected[i] = apply_change(stack_image[i], change, budget, value_range)
        if progress is not None:
            progress(done, len(indices))
    details = dict(epsilon=epsilon, smooth_sigma=sigma, band_radius=0, slices_protected=len(indices))
    if min_psnr is not None:
        details.update(min_psnr=min_psnr, change_scale=limit_visibility(image, protected, budget, min_psnr, axis))
    return make_result(image, protected, region, window, budget, axis, **details)
