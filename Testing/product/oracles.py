"""Independent oracles for the trust tests: the promised window, budget and region, computed here from first
principles (numpy percentiles, Euclidean distances), never with the product's own helpers."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from umedprotect.protector import Protector

PERCENTILES = (0.5, 99.5)


def live_protector(seed: int = 1, **config) -> Protector:
    """A protector whose generator heads carry seeded random non-zero weights, so the generators shape the change.

    It has no PSNR floor unless ``min_psnr`` is given: the tests check the budget itself.
    """
    from umedprotect.protector import ProtectorConfig

    torch.manual_seed(seed)
    protector = Protector(ProtectorConfig(**{"min_psnr": None, **config})).eval()
    with torch.no_grad():
        for generator in (protector.contour, protector.texture):
            generator.head.weight.normal_(0.0, 0.5)
            generator.head.bias.normal_(0.0, 0.5)
    return protector


def promised_budget(image: np.ndarray, epsilon: float) -> float:
    """ε/255 of the case's [0.5, 99.5] percentile window (min/max when that is empty), in native units."""
    values = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(values, PERCENTILES)
    if hi <= lo:
        lo, hi = values.min(), values.max()
    return epsilon / 255.0 * (hi - lo)


def band_2d(labels2d: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` of a label's contour, on both sides: near the label but not deep inside it."""
    band = np.zeros(labels2d.shape, dtype=bool)
    pad = radius + 1
    for value in np.unique(labels2d[labels2d != 0]):
        region = np.pad(labels2d == value, pad)
        near = ndimage.distance_transform_edt(~region) <= radius  # within radius of the label
        deep = ndimage.distance_transform_edt(region) > radius  # farther than radius from its outside
        band |= (near & ~deep)[pad:-pad, pad:-pad]
    return band


def allowed_region(labels: np.ndarray, radius: int, axis: int | None, label_values=None) -> np.ndarray:
    """ROI ∪ contour band of the selected labels: slice by slice along ``axis`` (None: a 2D image)."""
    selected = labels != 0 if label_values is None else np.isin(labels, label_values)
    labels = np.where(selected, labels, 0)
    if axis is None:
        return selected | band_2d(labels, radius)
    bands = np.stack([band_2d(s, radius) for s in np.moveaxis(labels, axis, 0)])
    return selected | np.moveaxis(bands, 0, axis)
