"""Synthetic phantoms with exact masks: for tests, demos and the in-Slicer self-test."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def phantom_slice(
    shape: tuple[int, int] = (96, 96), n_lesions: int = 1, rng: np.random.Generator | int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One 2D slice: an elliptic body with organs and textured lesions, noise and bias field.

    Returns (image float32 roughly in [0, 1000], labels uint8 with lesions 1..n_lesions).
    """
    rng = np.random.default_rng(rng)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = h / 2, w / 2
    body = ((yy - cy) / (0.42 * h)) ** 2 + ((xx - cx) / (0.45 * w)) ** 2 <= 1
    image = np.where(body, 300.0, 0.0)
    organ = ((yy - cy * 0.9) / (0.18 * h)) ** 2 + ((xx - cx * 1.2) / (0.14 * w)) ** 2 <= 1
    image[organ] = 450.0
    labels = np.zeros(shape, dtype=np.uint8)
    for k in range(1, n_lesions + 1):
        ry, rx = rng.uniform(0.06, 0.12) * h, rng.uniform(0.06, 0.12) * w
        ly, lx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        lesion = ((yy - ly) / ry) ** 2 + ((xx - lx) / rx) ** 2 <= 1
        lesion &= body & (labels == 0)
        texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.0) * 60
        image[lesion] = 600.0 + 100 * k + texture[lesion]
        labels[lesion] = k
    bias = 1 + 0.1 * np.sin(xx / w * np.pi) * np.cos(yy / h * np.pi)
    image = image * bias + rng.normal(0, 8, shape)
    return image.astype(np.float32), labels


def phantom_volume(
    shape: tuple[int, int, int] = (12, 64, 64), n_lesions: int = 1, rng: np.random.Generator | int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A 3D phantom (z, y, x): ellipsoidal lesions spanning the central slices."""
    rng = np.random.default_rng(rng)
    d, h, w = shape
    image = np.empty(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    base_image, base_labels = phantom_slice((h, w), n_lesions, rng)
    for z in range(d):
        noise = rng.normal(0, 8, (h, w)).astype(np.float32)
        image[z] = base_image + noise
        extent = 1 - abs(z - (d - 1) / 2) / (d / 2)
        if extent > 0.3:
            shrink = ndimage.binary_erosion(base_labels > 0, iterations=int((1 - extent) * 4))
            labels[z] = np.where(shrink, base_labels, 0)
    return image, labels
