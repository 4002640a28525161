"""Visibility metrics: PSNR, SSIM, max change and fraction changed; all in native units."""

from __future__ import annotations

import numpy as np

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
SLAB_VOXELS = 1 << 23  # voxels of one slab: the float64 working set of the metrics is about ten times this


def data_range(original: np.ndarray) -> float:
    """Range used for PSNR and SSIM: max - min of the whole original image."""
    return max(float(original.max()) - float(original.min()), 1e-12)


def slab_slices_for(stack_shape: tuple[int, ...]) -> int:
    """Slices per slab of a stack (slices first) so that a slab holds about :data:`SLAB_VOXELS` voxels."""
    return max(1, SLAB_VOXELS // max(int(np.prod(stack_shape[1:])), 1))


def slabs(box: tuple[slice, ...], axis: int, slab_slices: int) -> list[tuple[slice, ...]]:
    """``box`` cut into consecutive parts of at most ``slab_slices`` slices along ``axis``."""
    along = box[axis]
    return [
        (*box[:axis], slice(start, min(start + slab_slices, along.stop)), *box[axis + 1 :])
        for start in range(along.start, along.stop, slab_slices)
    ]


def changed_box(
    original: np.ndarray, protected: np.ndarray, margin: int = 0, axis: int = 0, slab_slices: int | None = None
) -> tuple[slice, ...] | None:
    """Bounding box of the voxels that differ, grown by ``margin`` (None when nothing changed); slab by slab."""
    from .regions import bounding_box

    whole = tuple(slice(0, n) for n in original.shape)
    boxes = []
    for part in slabs(whole, axis, slab_slices or original.shape[axis]):
        box = bounding_box(protected[part] != original[part])
        if box is not None:
            boxes.append([slice(b.start + p.start, b.stop + p.start) for b, p in zip(box, part)])
    if not boxes:
        return None
    return tuple(
        slice(max(min(b[d].start for b in boxes) - margin, 0), min(max(b[d].stop for b in boxes) + margin, n))
        for d, n in enumerate(original.shape)
    )


def psnr(original: np.ndarray, protected: np.ndarray, value_range: float | None = None) -> float:
    """PSNR in dB over the whole image/volume (inf when identical); range default: :func:`data_range`."""
    box = changed_box(original, protected)
    if box is None:
        return float("inf")
    diff = protected[box].astype(np.float64) - original[box].astype(np.float64)
    return _psnr(float(np.sum(diff * diff)), original.size, value_range or data_range(original))


def _psnr(squared_sum: float, size: int, value_range: float) -> float:
    return float(10 * np.log10(value_range**2 / (squared_sum / size)))


def slice_psnrs(original: np.ndarray, protected: np.ndarray, axis: int) -> list[float]:
    """PSNR (dB) of every changed slice of a volume along ``axis``, with the whole volume's range.

    What a reader scrolling through the slices sees; a volume's own PSNR also counts its unchanged slices.
    """
    value_range = data_range(original)
    before, after = np.moveaxis(original, axis, 0), np.moveaxis(protected, axis, 0)
    return [psnr(b, a, value_range) for b, a in zip(before, after) if not np.array_equal(b, a)]


def ssim(original: np.ndarray, protected: np.ndarray, axis: int = 0, slab_slices: int | None = None) -> float:
    """Mean SSIM (uniform 7-voxel window, K1=0.01, K2=0.03) over the whole image/volume.

    Computed exactly but only around the changed voxels: windows that see no change have SSIM 1.
    With ``slab_slices``, slab by slab along ``axis``, each slab filtered with the 3 slices around it
    that its windows see: equal to the one-slab value up to float rounding (the filters' running sums).
    """
    box = changed_box(original, protected, SSIM_WINDOW, axis, slab_slices)
    if box is None:
        return 1.0
    from scipy import ndimage

    size = [min(SSIM_WINDOW, b.stop - b.start) for b in box]
    n_px = float(np.prod(size))
    cov_norm = n_px / max(n_px - 1, 1)
    c1 = (SSIM_K1 * data_range(original)) ** 2
    c2 = (SSIM_K2 * data_range(original)) ** 2
    halo = SSIM_WINDOW // 2
    total = 0.0
    for part in slabs(box, axis, slab_slices or original.shape[axis]):
        start, stop = max(part[axis].start - halo, box[axis].start), min(part[axis].stop + halo, box[axis].stop)
        seen = (*box[:axis], slice(start, stop), *box[axis + 1 :])
        x = original[seen].astype(np.float64)
        y = protected[seen].astype(np.float64)
        ux, uy = ndimage.uniform_filter(x, size), ndimage.uniform_filter(y, size)
        vx = cov_norm * (ndimage.uniform_filter(x * x, size) - ux * ux)
        vy = cov_norm * (ndimage.uniform_filter(y * y, size) - uy * uy)
        vxy = cov_norm * (ndimage.uniform_filter(x * y, size) - ux * uy)
        ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
        own = [slice(None)] * ssim_map.ndim
        own[axis] = slice(part[axis].start - start, part[axis].stop - start)
        total += ssim_map[tuple(own)].sum()
    inside = int(np.prod([b.stop - b.start for b in box]))
    return float((total + (original.size - inside)) / original.size)


def image_quality(
    original: np.ndarray, protected: np.ndarray, axis: int | None = None, slab_slices: int | None = None
) -> dict[str, float]:
    """PSNR (dB), SSIM, max |change| (native units) and fraction of voxels changed.

    With ``slab_slices``, accumulated slab by slab along ``axis`` (default 0): PSNR, max change and
    fraction changed exactly (sums of squared integer changes are exact), SSIM as :func:`ssim` says.
    """
    axis = 0 if axis is None else axis
    box = changed_box(original, protected, axis=axis, slab_slices=slab_slices)
    squared, largest, changed = 0.0, 0.0, 0
    for part in slabs(box, axis, slab_slices or original.shape[axis]) if box else []:
        diff = np.abs(protected[part].astype(np.float64) - original[part].astype(np.float64))
        squared += float(np.sum(diff * diff))
        largest = max(largest, float(diff.max()))
        changed += int(np.count_nonzero(diff))
    return {
        "psnr_db": _psnr(squared, original.size, data_range(original)) if box else float("inf"),
        "ssim": ssim(original, protected, axis, slab_slices),
        "max_abs_change": largest,
        "fraction_changed": changed / max(original.size, 1),
    }


def psnr_text(metrics: dict) -> str:
    """'55.6 dB', with the worst changed slice of a volume: '55.6 dB (worst slice 46.8 dB)'."""
    text = f"{metrics['psnr_db']:.1f} dB"
    if "psnr_db_slice_min" in metrics:
        text += f" (worst slice {metrics['psnr_db_slice_min']:.1f} dB)"
    return text
