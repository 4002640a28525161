"""Protection of one image or volume (numpy arrays in, numpy arrays out)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .codes import CodePerturbation
from .errors import Cancelled, InputError
from .intensity import Window, apply_change, intensity_window, normalize
from .metrics import data_range, image_quality, psnr, slab_slices_for, slice_psnrs
from .protector_file import ProtectorConfig, ProtectorFile, read_protector_file
from .regions import bounding_box, contour_band, region_maps, roi_mask
from .settings import OPTIONS
from .victim_grid import map_back, resample_image, resample_labels, victim_shape
from .victim_units import change_in_units, floor_for_strength, rms_in_units, short_of_strength, victim_unit

if TYPE_CHECKING:
    from .protector import Protector

CONTEXT_MARGIN = 16  # pixels of image context the generators see around the ROI

ProgressCallback = Callable[[int, int], None]
ChangeMaker = Callable[[np.ndarray, np.ndarray, np.ndarray, tuple[int, int], float], np.ndarray]


@dataclass
class ProtectionResult:
    """Protected array (input dtype and shape), the original it was made from, and its visibility metrics."""

    protected: np.ndarray
    original: np.ndarray
    region: np.ndarray  # bool, ROI ∪ contour band: the only voxels that may change
    window: Window
    budget: float  # max allowed |change|, native units
    slice_axis: int | None  # None for 2D images
    metrics: dict

    @property
    def change(self) -> np.ndarray:
        """protected - original in native units (float32), computed on request: a whole volume's worth of floats."""
        return (self.protected.astype(np.float64) - self.original.astype(np.float64)).astype(np.float32)


def slice_axis_for(spacing: Sequence[float] | None, ndim: int) -> int | None:
    """Axis of coarsest spacing for 3D arrays (first such axis on ties); None for 2D."""
    if ndim == 2:
        return None
    if spacing is None:
        return 0
    return int(np.argmax(np.asarray(spacing, dtype=float)))


def check_inputs(image: np.ndarray, labels: np.ndarray) -> None:
    """Raise InputError for arrays the protector cannot handle."""
    if image.ndim not in (2, 3):
        raise InputError(f"image has {image.ndim} dimensions; only 2D images and 3D volumes are supported")
    if labels.shape != image.shape:
        raise InputError(f"mask size {labels.shape} does not match image size {image.shape}")
    if not np.issubdtype(labels.dtype, np.integer) and not np.issubdtype(labels.dtype, np.bool_):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise InputError("mask has non-integer values; a label map is expected")
    if np.issubdtype(image.dtype, np.complexfloating) or not np.issubdtype(image.dtype, np.number):
        raise InputError(f"pixel type {image.dtype} is not supported")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise InputError("image contains NaN or infinite voxels")
    if image.size and image.min() == image.max():
        raise InputError("image is constant; there is nothing to protect")


def protect_array(
    image: np.ndarray,
    labels: np.ndarray,
    protector: Protector | ProtectorFile | None = None,
    *,
    spacing: Sequence[float] | None = None,
    victim_spacing: Sequence[float] | None = None,
    epsilon: float | None = None,
    band_radius: int | None = None,
    label_values: Sequence[int] | None = None,
    device: str = "auto",
    min_psnr: float | None = None,
    strength: float | None = None,
    victim_normalisation: str = "zscore",
    batch_size: int = 16,
    slab_slices: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ProtectionResult:
    """Protect ``image`` inside the ROI of ``labels`` and its contour band.

    ``protector``: a module or a read file (default: the bundled protector); when its generators are
    silent, its codes are applied in numpy and torch is not imported (``device`` is then unused);
    ``spacing`` is per numpy axis (3D volumes are processed slice-wise along the coarsest one);
    ``victim_spacing`` (per numpy axis, with ``spacing``): the spacing an nnU-Net victim resamples the case to
    (its target spacing); where that changes the slices' size, the change is made on the victim's grid and
    mapped back so that nnU-Net's resampling gives it back (:mod:`victim_grid`), within ROI ∪ a band one
    pixel wider;
    ``epsilon`` (in 1/255 of the window) and ``band_radius`` override the protector's config;
    ``label_values`` restricts the ROI to these labels (default: every non-zero label);
    ``strength`` (:mod:`victim_units`): the budget is raised (never lowered, at most to the largest epsilon)
    until the change's RMS reaches this many victim units, as nnU-Net's ``victim_normalisation`` (``ct`` or
    ``zscore``) sees the case (:func:`victim_units.victim_unit`);
    ``min_psnr`` (dB, default: the protector's floor) scales the perturbation down where it would be more
    visible than that (the metrics then give the floor that would let it reach ``strength``).
    Voxels outside ROI ∪ band are bit-identical to the input.

    Beyond the protected copy and the region mask, memory does not grow with the volume: slices are
    protected on their own, in batches that never cross a slab of ``slab_slices`` slices (default:
    :func:`metrics.slab_slices_for`), and the metrics are accumulated slab by slab. The intensity window
    is the whole volume's.
    """
    check_inputs(image, labels)
    protector = read_protector_file() if protector is None else protector
    config = protector.config
    epsilon = config.epsilon if epsilon is None else float(epsilon)
    band_radius = config.band_radius if band_radius is None else int(band_radius)
    min_psnr = config.min_psnr if min_psnr is None else float(min_psnr)
    for name, value in (("epsilon", epsilon), ("band_radius", band_radius), ("min_psnr", min_psnr)):
        OPTIONS[name].check(value)

    window = intensity_window(image, config.percentiles)
    value_range = (float(image.min()), float(image.max()))  # crops are clipped to the image's range, not their own
    axis = slice_axis_for(spacing, image.ndim)
    protected = image.copy()
    region = np.zeros(image.shape, dtype=bool)
    stack_image, stack_labels, stack_protected, stack_region = (
        a[None] if axis is None else np.moveaxis(a, axis, 0) for a in (image, labels, protected, region)
    )
    slab = slab_slices or slab_slices_for(stack_image.shape)

    indices, roi_union = _roi_slices(stack_labels, label_values)
    details = dict(band_radius=band_radius, slices_protected=len(indices))
    in_plane = [i for i in range(image.ndim) if i != axis]
    grid = None
    if victim_spacing is not None and spacing is not None:
        grid = victim_shape(stack_image.shape[1:], *([s[i] for i in in_plane] for s in (spacing, victim_spacing)))
        details.update(victim_spacing=[float(v) for v in victim_spacing], victim_shape=list(grid))
    unit = None
    if indices:
        make_change = change_maker(protector, device)
        protect = _SliceProtection(make_change, config, window, epsilon, value_range, band_radius, label_values)
        stacks = (stack_image, stack_labels, stack_protected, stack_region)
        on_grid = grid is not None and grid != stack_image.shape[1:]

        def run(protect: _SliceProtection) -> None:
            if on_grid:
                _protect_on_victim_grid(protect, grid, *stacks, indices, progress, cancel)
            else:
                protect(*stacks, indices, roi_union, batch_size, slab, progress, cancel)

        run(protect)
        if strength:
            unit = victim_unit(image, roi_mask(labels), victim_normalisation)
            # a budget under one level of an integer type changes nothing: the codes would have spent about all of it
            reached = _units_changed(image, protected, region, unit) or window.budget(epsilon) / unit
            raised = min(epsilon * strength / reached, OPTIONS["epsilon"].high)
            if raised > epsilon:
                epsilon, protect = raised, dataclasses.replace(protect, epsilon=raised)
                protected[...] = image
                run(protect)
            details.update(strength=strength, victim_normalisation=victim_normalisation, victim_unit=unit)
    budget = window.budget(epsilon)
    unfloored = None  # (worst PSNR, victim units) before the floor, which can round an integer image's change away
    if min_psnr is not None:
        if unit is not None and np.issubdtype(image.dtype, np.integer):
            unfloored = _worst_psnr(image, protected, axis), _units_changed(image, protected, region, unit)
        details.update(min_psnr=min_psnr, change_scale=limit_visibility(image, protected, budget, min_psnr, axis))
    result = make_result(image, protected, region, window, budget, axis, slab_slices=slab, epsilon=epsilon, **details)
    if unit is not None:
        reached = change_in_units(image, result.metrics, unit)
        result.metrics["change_victim_units"] = reached
        if min_psnr is not None and 0 < reached and short_of_strength(reached, strength, victim_normalisation):
            result.metrics["min_psnr_for_strength"] = floor_for_strength(min_psnr, reached, strength)
        elif unfloored and unfloored[1] and not reached:  # the floor left under one level of the integer type
            result.metrics["min_psnr_for_strength"] = floor_for_strength(*unfloored, strength)
    return result


def _units_changed(image: np.ndarray, protected: np.ndarray, region: np.ndarray, unit: float) -> float:
    """RMS of the change within ``region``, over the voxels it changes, in victim units."""
    return rms_in_units(protected[region] - image[region].astype(np.float64), unit)


def _worst_psnr(image: np.ndarray, protected: np.ndarray, axis: int | None) -> float:
    """PSNR of a 2D image, or of a volume's most changed slice along ``axis``."""
    return psnr(image, protected) if axis is None else min(slice_psnrs(image, protected, axis), default=math.inf)


@dataclass(frozen=True)
class _SliceProtection:
    """Protects the ROI slices of a stack (slices on axis 0) in batches that never cross a slab."""

    make_change: ChangeMaker
    config: ProtectorConfig
    window: Window
    epsilon: float
    value_range: tuple[float, float]  # crops are clipped to the image's range, not their own
    band_radius: int
    label_values: Sequence[int] | None

    @property
    def budget(self) -> float:
        return self.window.budget(self.epsilon)

    def __call__(
        self,
        stack_image: np.ndarray,
        stack_labels: np.ndarray,
        stack_protected: np.ndarray,
        stack_region: np.ndarray,
        indices: list[int],
        roi_union: np.ndarray,
        batch_size: int,
        slab: int,
        progress: ProgressCallback | None,
        cancel: Callable[[], bool] | None,
    ) -> None:
        """Write the protected ``indices`` slices into ``stack_protected`` and their region into ``stack_region``."""
        crop = bounding_box(roi_union, self.band_radius + CONTEXT_MARGIN)
        batches = [
            part[start : start + batch_size]
            for first in range(0, stack_image.shape[0], slab)
            if (part := [i for i in indices if first <= i < first + slab])
            for start in range(0, len(part), batch_size)
        ]
        done = 0
        for batch in batches:
            if cancel is not None and cancel():
                raise Cancelled("protection cancelled")
            original = stack_image[batch][(slice(None), *crop)]
            labels_crop = stack_labels[batch][(slice(None), *crop)]
            labels_crop = np.where(roi_mask(labels_crop, self.label_values), labels_crop, 0).astype(np.int32)
            origin = (crop[0].start, crop[1].start)
            image_norm = normalize(original, self.window)
            maps = np.stack(
                [
                    region_maps(img, lab, self.band_radius, self.config.texture_floor, self.config.texture_window)
                    for img, lab in zip(image_norm, labels_crop)
                ]
            )
            delta = self.make_change(image_norm, maps, labels_crop, origin, self.epsilon)
            new = apply_change(original, delta * self.window.width, self.budget, self.value_range)
            for k, i in enumerate(batch):
                stack_protected[i][crop] = new[k]
                stack_region[i][crop] = (labels_crop[k] != 0) | contour_band(labels_crop[k], self.band_radius)
            done += len(batch)
            if progress is not None:
                progress(done, len(indices))


def _protect_on_victim_grid(
    protect: _SliceProtection,
    grid: tuple[int, int],
    stack_image: np.ndarray,
    stack_labels: np.ndarray,
    stack_protected: np.ndarray,
    stack_region: np.ndarray,
    indices: list[int],
    progress: ProgressCallback | None,
    cancel: Callable[[], bool] | None,
) -> None:
    """Make each ROI slice's change on the victim's ``grid`` and map it back onto the slice's own grid, scaled down
    where the mapping raised its peak above the budget."""
    for n, i in enumerate(indices):
        image = resample_image(stack_image[i], grid)[None]
        labels = resample_labels(stack_labels[i], grid)[None]
        protected = image.copy()
        roi_union = roi_mask(labels[0], protect.label_values)
        if roi_union.any():  # else the ROI is too small to survive the resampling: the victim never sees it
            protect(image, labels, protected, np.zeros(labels.shape, dtype=bool), [0], roi_union, 1, 1, None, cancel)
        roi = roi_mask(stack_labels[i], protect.label_values)
        region = roi | contour_band(np.where(roi, stack_labels[i], 0), protect.band_radius + 1)
        change = map_back(protected[0] - image[0], stack_image.shape[1:]) * region
        peak = float(np.abs(change).max())
        scale = min(1.0, protect.budget / peak) if peak > 0 else 1.0  # scaled, not clipped: the victim sees its shape
        stack_protected[i] = apply_change(stack_image[i], change * scale, protect.budget, protect.value_range)
        stack_region[i] = region
        if progress is not None:
            progress(n + 1, len(indices))


def _roi_slices(stack_labels: np.ndarray, label_values: Sequence[int] | None) -> tuple[list[int], np.ndarray]:
    """Indices of the slices holding ROI, and the union of their ROIs (2D), one slice at a time."""
    indices, union = [], np.zeros(stack_labels.shape[1:], dtype=bool)
    for i, slice_labels in enumerate(stack_labels):
        roi = roi_mask(slice_labels, label_values)
        if roi.any():
            indices.append(i)
            union |= roi
    return indices, union


def limit_visibility(
    image: np.ndarray, protected: np.ndarray, budget: float, min_psnr: float, axis: int | None = None
) -> float:
    """Scale the change down (in ``protected``) until PSNR >= ``min_psnr``; returns the smallest scale.

    A 2D image is held to the floor as a whole, a volume slice by slice along ``axis`` (with the
    volume's range, as :func:`metrics.slice_psnrs`): a reader sees slices, and a volume's own PSNR
    also counts its unchanged ones. The scaled change is rounded to the dtype again, so the budget
    bound still holds.
    """
    peak = data_range(image) ** 2 / 10 ** (min_psnr / 10)
    stacks = [a[None] if axis is None else np.moveaxis(a, axis, 0) for a in (image, protected)]
    value_range = (float(image.min()), float(image.max()))
    scales = (_scale_down(*views, budget, peak * views[0].size, value_range) for views in zip(*stacks))
    return min(scales, default=1.0)


def hold_to_floor(result: ProtectionResult, min_psnr: float) -> ProtectionResult:
    """``result`` with its change scaled down as :func:`limit_visibility` does (in place), metrics recomputed."""
    scale = limit_visibility(result.original, result.protected, result.budget, min_psnr, result.slice_axis)
    held = make_result(
        result.original, result.protected, result.region, result.window, result.budget, result.slice_axis
    )
    held.metrics = {**result.metrics, **held.metrics, "min_psnr": min_psnr, "change_scale": scale}
    return held


def combine_protections(parts: Sequence[ProtectionResult], min_psnr: float, **details) -> ProtectionResult:
    """The changes of ``parts`` (protections of one image, e.g. by two protectors) added up, within the sum of
    their budgets and the image's range, then held to ``min_psnr`` as :func:`limit_visibility` does.

    ``details`` join the metrics. Voxels outside the union of the parts' regions stay bit-identical.
    """
    first = parts[0]
    image, axis = first.original, first.slice_axis
    budget = sum(part.budget for part in parts)
    change = sum(part.change for part in parts)
    protected = apply_change(image, change, budget, (float(image.min()), float(image.max())))
    region = np.logical_or.reduce([part.region for part in parts])
    return hold_to_floor(ProtectionResult(protected, image, region, first.window, budget, axis, details), min_psnr)


def _scale_down(
    image: np.ndarray, protected: np.ndarray, budget: float, max_squared: float, value_range: tuple[float, float]
) -> float:
    """Scale one image's change (in ``protected``) until its squared sum <= ``max_squared``."""
    changed = protected != image
    original = image[changed]
    new = protected[changed]
    full = (new.astype(np.float64) - original.astype(np.float64)).astype(np.float32).astype(np.float64)
    scale, diff = 1.0, full  # the change as ProtectionResult.change holds it
    while (squared := np.sum(diff * diff)) > max_squared:
        scale *= 0.995 * np.sqrt(max_squared / squared)
        new = apply_change(original, full * scale, budget, value_range)
        diff = new.astype(np.float64) - original.astype(np.float64)
    protected[changed] = new
    return float(scale)


def make_result(
    image: np.ndarray,
    protected: np.ndarray,
    region: np.ndarray,
    window: Window,
    budget: float,
    axis: int | None,
    slab_slices: int | None = None,
    **details,
) -> ProtectionResult:
    """A ProtectionResult with the visibility metrics of ``protected`` and the run's ``details``.

    The metrics are accumulated over slabs of ``slab_slices`` slices along ``axis`` (default: one slab).
    """
    metrics = image_quality(image, protected, axis, slab_slices)
    if axis is not None:
        per_slice = slice_psnrs(image, protected, axis)
        metrics.update(
            psnr_db_slice_min=min(per_slice, default=float("inf")),
            psnr_db_slice_mean=float(np.mean(per_slice)) if per_slice else float("inf"),
        )
    metrics.update(
        budget_native=budget,
        window=[window.lo, window.hi],
        region_voxels=int(region.sum()),
        change_zscore=change_in_units(image, metrics),
        **details,
    )
    return ProtectionResult(protected, image, region, window, budget, axis, metrics)


def change_maker(protector: Protector | ProtectorFile, device: str = "auto") -> ChangeMaker:
    """``(image_norm, maps, labels, origin, epsilon) -> change`` for batches of crops: the codes alone in numpy
    when the generators are silent (their output is exactly zero), else the networks on ``device``."""
    if protector.generators_silent:
        if not isinstance(protector, ProtectorFile):
            from .protector import as_protector_file

            protector = as_protector_file(protector)
        return CodePerturbation(protector.config, protector.weights["codes"])
    from .devices import resolve_device
    from .protector import build_protector

    module = build_protector(protector) if isinstance(protector, ProtectorFile) else protector
    return module.to(resolve_device(device)).eval().perturb_crops
