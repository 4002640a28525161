"""Visibility metrics: PSNR, SSIM, max change and fraction changed; all in native units."""

from __future__ import annotations

import numpy as np

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def data_range(original: np.ndarray) -> float:
    """Range used for PSNR and SSIM: max - min of the whole original image."""
    return max(float(original.max()) - float(original.min()), 1e-12)


def changed_box(original: np.ndarray, protected: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Bounding box of the voxels that differ, grown by ``margin`` (None when nothing changed)."""
    from .regions import bounding_box

    return bounding_box(protected != original, margin)


def psnr(original: np.ndarray, protected: np.ndarray, value_range: float | None = None) -> float:
    """PSNR in dB over the whole image/volume (inf when identical); range default: :func:`data_range`."""
    box = changed_box(original, protected)
    if box is None:
        return float("inf")
    diff = protected[box].astype(np.float64) - original[box].astype(np.float64)
    mse = float(np.sum(diff * diff)) / original.size
    return float(10 * np.log10((value_range or data_range(original)) ** 2 / mse))


def slice_psnrs(original: np.ndarray, protected: np.ndarray, axis: int) -> list[float]:
    """PSNR (dB) of every changed slice of a volume along ``axis``, with the whole volume's range.

    What a reader scrolling through the slices sees; a volume's own PSNR also counts its unchanged slices.
    """
    value_range = data_range(original)
    before, after = np.moveaxis(original, axis, 0), np.moveaxis(protected, axis, 0)
    return [psnr(b, a, value_range) for b, a in zip(before, after) if not np.array_equal(b, a)]


def ssim(original: np.ndarray, protected: np.ndarray) -> float:
    """Mean SSIM (uniform 7-voxel window, K1=0.01, K2=0.03) over the whole image/volume.

    Computed exactly but only around the changed voxels: windows that see no change have SSIM 1.
    """
    from scipy import ndimage

    box = changed_box(original, protected, margin=SSIM_WINDOW)
    if box is None:
        return 1.0
    x = original[box].astype(np.float64)
    y = protected[box].astype(np.float64)
    size = [min(SSIM_WINDOW, n) for n in x.shape]
    n_px = float(np.prod(size))
    cov_norm = n_px / max(n_px - 1, 1)
    ux, uy = ndimage.uniform_filter(x, size), ndimage.uniform_filter(y, size)
    vx = cov_norm * (ndimage.uniform_filter(x * x, size) - ux * ux)
    vy = cov_norm * (ndimage.uniform_filter(y * y, size) - uy * uy)
    vxy = cov_norm * (ndimage.uniform_filter(x * y, size) - ux * uy)
    c1 = (SSIM_K1 * data_range(original)) ** 2
    c2 = (SSIM_K2 * data_range(original)) ** 2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    outside = original.size - ssim_map.size
    return float((ssim_map.sum() + outside) / original.size)


def image_quality(original: np.ndarray, protected: np.ndarray) -> dict[str, float]:
    """PSNR (dB), SSIM, max |change| (native units) and fraction of voxels changed."""
    box = changed_box(original, protected)
    diff = np.abs(protected[box].astype(np.float64) - original[box].astype(np.float64)) if box else np.zeros(1)
    return {
        "psnr_db": psnr(original, protected),
        "ssim": ssim(original, protected),
        "max_abs_change": float(diff.max()),
        "fraction_changed": float(np.count_nonzero(diff)) / max(original.size, 1),
    }


def psnr_text(metrics: dict) -> str:
    """'55.6 dB', with the worst changed slice of a volume: '55.6 dB (worst slice 46.8 dB)'."""
    text = f"{metrics['psnr_db']:.1f} dB"
    if "psnr_db_slice_min" in metrics:
        text += f" (worst slice {metrics['psnr_db_slice_min']:.1f} dB)"
    return text
