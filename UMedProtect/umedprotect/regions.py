"""Where the perturbation may go: ROI, contour band, interior, and the texture-aware bound."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

DEFAULT_BAND_RADIUS = 3
DEFAULT_TEXTURE_FLOOR = 0.25
DEFAULT_TEXTURE_WINDOW = 5


def disk(radius: int) -> np.ndarray:
    """2D disk structuring element of the given radius (pixels)."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx) <= r * r


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Bounding box of the non-zero voxels, grown by ``margin`` and clipped to the array (None if empty)."""
    if not mask.any():
        return None
    box = []
    for axis, size in enumerate(mask.shape):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.nonzero(mask.any(axis=other))[0]
        box.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + margin + 1, size)))
    return tuple(box)


def roi_mask(labels: np.ndarray, label_values: list[int] | None = None) -> np.ndarray:
    """Boolean ROI: voxels carrying any of ``label_values`` (default: any non-zero label)."""
    if label_values is None:
        return labels != 0
    return np.isin(labels, np.asarray(label_values, dtype=labels.dtype))


def contour_band(labels2d: np.ndarray, radius: int) -> np.ndarray:
    """Band of ``radius`` pixels on both sides of every label's contour (2D)."""
    band = np.zeros(labels2d.shape, dtype=bool)
    if radius <= 0:
        return band
    structure = disk(radius)
    for value in np.unique(labels2d):
        if value == 0:
            continue
        region = labels2d == value
        band |= ndimage.binary_dilation(region, structure) & ~ndimage.binary_erosion(region, structure)
    return band


def texture_bound(
    image2d: np.ndarray,
    interior: np.ndarray,
    floor: float = DEFAULT_TEXTURE_FLOOR,
    window: int = DEFAULT_TEXTURE_WINDOW,
) -> np.ndarray:
    """Per-pixel bound T in [floor, 1]: normalised local standard deviation inside ``interior``.

    Textured tissue gets up to the full budget, flat tissue ``floor`` of it; zero outside ``interior``.
    The scale is the interior's own 90th percentile, so an interior with no variation at all (nothing
    to compare with) gets the full budget.
    """
    bound = np.zeros(image2d.shape, dtype=np.float32)
    if not interior.any():
        return bound
    x = image2d.astype(np.float64)
    mean = ndimage.uniform_filter(x, window)
    var = np.maximum(ndimage.uniform_filter(x * x, window) - mean * mean, 0.0)
    std = np.sqrt(var)
    reference = np.percentile(std[interior], 90)
    scaled = std / reference if reference > 0 else np.ones_like(std)
    bound[interior] = np.clip(scaled[interior], floor, 1.0)
    return bound


def edge_depth(labels2d: np.ndarray) -> np.ndarray:
    """Distance (pixels) of every labelled pixel to the edge of its own label, 1 next to the edge; 0 outside."""
    depth = np.zeros(labels2d.shape, dtype=np.float32)
    for value in np.unique(labels2d):
        if value != 0:
            region = labels2d == value
            depth[region] = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1][region]
    return depth


def signed_edge_distance(labels2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (pixels) to the nearest label edge and the label that edge belongs to (2D).

    Positive inside a label (0.5 next to its edge), negative outside every label (-0.5 next to one);
    the label is the pixel's own inside a label, the nearest labelled pixel's outside (0 without labels).
    """
    distance = np.zeros(labels2d.shape, dtype=np.float32)
    owner = np.zeros(labels2d.shape, dtype=np.int64)
    roi = labels2d != 0
    if not roi.any():
        return distance, owner
    outside, (rows, cols) = ndimage.distance_transform_edt(~roi, return_indices=True)
    distance[:] = 0.5 - outside
    owner[:] = labels2d[rows, cols]
    inside = edge_depth(labels2d)
    distance[roi] = inside[roi] - 0.5
    return distance, owner


def region_maps(
    image2d: np.ndarray,
    labels2d: np.ndarray,
    band_radius: int = DEFAULT_BAND_RADIUS,
    texture_floor: float = DEFAULT_TEXTURE_FLOOR,
    texture_window: int = DEFAULT_TEXTURE_WINDOW,
) -> np.ndarray:
    """Stack (roi, band, interior bound, edge depth, band owner) as float32 (5, H, W) for one normalised slice.

    Band owner: the label whose edge is nearest, on the contour band (zero off it).
    """
    roi = labels2d != 0
    band = contour_band(labels2d, band_radius)
    interior = roi & ~band
    texture = texture_bound(image2d, interior, texture_floor, texture_window)
    owner = np.where(band, signed_edge_distance(labels2d)[1], 0)
    return np.stack([m.astype(np.float32) for m in (roi, band, texture, edge_depth(labels2d), owner)])
