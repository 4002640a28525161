"""Defenses an attacker may apply to protected training data before training a victim.

Image defenses act on each 2D training slice in native units, using the case's intensity window:
``blur`` (Gaussian, sigma 1 px), ``bitdepth`` (6 bits over the window), ``jpeg`` (quality 50 on the
window mapped to 8 bits, as for an 8-bit export), ``downup`` (0.5x down-sampling and back, bilinear).
Training defenses change the schedule: ``strong-aug`` (stronger augmentation), ``mix-clean``
(20% of the training cases, at least one, replaced by their clean versions), ``ueraser`` (UEraser-like
strong intensity augmentation: plasma brightness and contrast fields, strong gamma, contrast and noise).
``adaptive`` is an attacker who knows the method: it estimates, per case and label, the pattern tied to
the distance from the label's edge (:func:`remove_edge_pattern`) and subtracts it before training;
``adaptive-deep`` does so over the label's whole depth, with less shrinkage (against contour rings).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from umedprotect.augment import STRONG_AUGMENTATION, UERASER_AUGMENTATION
from umedprotect.errors import InputError
from umedprotect.intensity import Window
from umedprotect.slices import SliceSample

from .training import by_case

BLUR_SIGMA = 1.0
BIT_DEPTH = 6
JPEG_QUALITY = 50
DOWNUP_FACTOR = 0.5
CLEAN_FRACTION = 0.2
EDGE_DISTANCE = 8  # pixels either side of a label's edge where the adaptive attacker models the pattern
ADAPTIVE_RIDGE = 10.0  # the adaptive attacker's ridge penalty (relative): less removes more pattern and more anatomy
DEEP_DISTANCE = 64  # pixels inside a label's edge where adaptive-deep models the pattern (outside: EDGE_DISTANCE)
DEEP_RIDGE = 1.0  # adaptive-deep's ridge penalty

ImageTransform = Callable[[np.ndarray, Window], np.ndarray]  # (slice in native units, its window) -> defended slice


def _to_unit(image: np.ndarray, window: Window) -> np.ndarray:
    return np.clip((image.astype(np.float64) - window.lo) / window.width, 0.0, 1.0)


def _from_unit(unit: np.ndarray, window: Window) -> np.ndarray:
    return (unit * window.width + window.lo).astype(np.float32)


def blur(image: np.ndarray, window: Window) -> np.ndarray:
    """Gaussian blur with sigma = 1 pixel."""
    return ndimage.gaussian_filter(image.astype(np.float32), BLUR_SIGMA, mode="nearest")


def bit_depth(image: np.ndarray, window: Window) -> np.ndarray:
    """Quantise the intensity window to 2**6 levels (values outside the window are clipped)."""
    levels = 2**BIT_DEPTH - 1
    return _from_unit(np.round(_to_unit(image, window) * levels) / levels, window)


def jpeg(image: np.ndarray, window: Window) -> np.ndarray:
    """8-bit export of the window, JPEG quality 50, read back into native units."""
    from PIL import Image

    eight_bit = np.round(_to_unit(image, window) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(eight_bit).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer).convert("L"), dtype=np.float64)
    return _from_unit(decoded / 255, window)


def down_up(image: np.ndarray, window: Window) -> np.ndarray:
    """Down-sample by 0.5 (anti-aliased bilinear) and back to the original size (bilinear)."""
    x = torch.as_tensor(image, dtype=torch.float32)[None, None]
    h, w = image.shape
    small = F.interpolate(x, scale_factor=DOWNUP_FACTOR, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()


DefenseFunction = Callable[[list[SliceSample], list[SliceSample], Any], tuple[list[SliceSample], Any]]


@dataclass(frozen=True)
class Defense:
    """What an attacker does to the protected training slices (and clean ones, if it has any) and to the
    training settings: ``apply(protected, clean, settings) -> (training slices, training settings)``."""

    name: str
    help: str  # one line for ``umedprotect evaluate --help``
    apply: DefenseFunction


DEFENSES: dict[str, Defense] = {}


def register_defense(name: str, help: str) -> Callable[[DefenseFunction], DefenseFunction]:
    """Function decorator: make ``apply(protected, clean, settings)`` the defense ``name``
    (``umedprotect evaluate --defense NAME``)."""

    def register(apply: DefenseFunction) -> DefenseFunction:
        DEFENSES[name] = Defense(name, help, apply)
        return apply

    return register


def register_image_defense(name: str, help: str, transform: ImageTransform) -> None:
    """The defense ``name`` that applies ``transform(image, window)`` to every protected training slice."""

    def apply(protected: list[SliceSample], clean: list[SliceSample], settings):
        return apply_image_transform(transform, protected), settings

    register_defense(name, help)(apply)


register_image_defense("blur", f"Gaussian blur, sigma {BLUR_SIGMA:g} px", blur)
register_image_defense("bitdepth", f"bit-depth reduction to {BIT_DEPTH} bits of the intensity window", bit_depth)
register_image_defense("jpeg", f"JPEG quality {JPEG_QUALITY} of the window exported to 8 bits", jpeg)
register_image_defense("downup", f"{DOWNUP_FACTOR:g}x down-sampling and back (bilinear)", down_up)


@register_defense(
    "strong-aug", "stronger augmentation (more rotation/scaling, noise, blur, intensity and low-resolution jitter)"
)
def strong_augmentation(protected: list[SliceSample], clean: list[SliceSample], settings):
    return protected, replace(settings, augment=STRONG_AUGMENTATION)


@register_defense(
    "mix-clean", f"{CLEAN_FRACTION:.0%} of the training cases (at least one) replaced by their clean versions"
)
def mixed_with_clean(protected: list[SliceSample], clean: list[SliceSample], settings):
    return mix_clean(protected, clean, settings.seed), settings


@register_defense(
    "ueraser", "UEraser-like strong intensity augmentation: plasma brightness/contrast fields, gamma, contrast, noise"
)
def ueraser(protected: list[SliceSample], clean: list[SliceSample], settings):
    return protected, replace(settings, augment=UERASER_AUGMENTATION)


@register_defense(
    "adaptive",
    f"knows the method: per case, fits and subtracts a pattern tied to the distance (within {EDGE_DISTANCE} px) "
    "to each label's edge",
)
def adaptive(protected: list[SliceSample], clean: list[SliceSample], settings):
    return remove_edge_pattern(protected), settings


@register_defense(
    "adaptive-deep",
    f"adaptive over the label's whole depth (within {DEEP_DISTANCE} px inside the edge), with less shrinkage",
)
def adaptive_deep(protected: list[SliceSample], clean: list[SliceSample], settings):
    return remove_edge_pattern(protected, DEEP_DISTANCE, DEEP_RIDGE), settings


def signed_edge_distance(mask: np.ndarray) -> np.ndarray:
    """Signed distance in pixels to the edge of a 2D ``mask``: positive inside, negative outside (0.5 either side
    of the edge)."""
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return np.where(mask, inside - 0.5, 0.5 - outside)


def remove_edge_pattern(
    samples: Sequence[SliceSample], inside: int = EDGE_DISTANCE, ridge: float = ADAPTIVE_RIDGE
) -> list[SliceSample]:
    """The adaptive attacker: per case and foreground label, a pattern that is a function of the signed distance to
    the label's edge (one value per 1-pixel distance bin, from :data:`EDGE_DISTANCE` outside to ``inside`` pixels
    inside) fitted by least squares to the image's high-pass residual (its Laplacian) over all the case's slices,
    and subtracted. The ridge penalty (relative to each bin's own weight) keeps the fit from flattening the
    anatomy's edge: a pattern tied to the edge (rings) goes, an unprotected image stays nearly unchanged."""
    out = []
    for slices in by_case(samples).values():
        images = [s.image.astype(np.float64) for s in slices]
        for label in sorted({int(v) for s in slices for v in np.unique(s.labels)} - {0}):
            bins = [_distance_bins(s.labels == label, inside) for s in slices]
            pattern = _edge_pattern(images, bins, EDGE_DISTANCE + inside, ridge)
            for image, b in zip(images, bins):
                image -= np.where(b >= 0, pattern[np.maximum(b, 0)], 0.0)
        out += [replace(s, image=image.astype(np.float32)) for s, image in zip(slices, images)]
    return _restat(out)


def _edge_pattern(images: Sequence[np.ndarray], bins: Sequence[np.ndarray], n: int, ridge: float) -> np.ndarray:
    """Per distance bin (``n`` of them), the value whose image, through the Laplacian, best explains the images'
    Laplacian."""
    normal, target = np.zeros((n, n)), np.zeros(n)
    for image, b in zip(images, bins):
        rows = ndimage.binary_dilation(b >= 0, iterations=1)
        if not rows.any():
            continue
        basis = np.stack([_laplace((b == k).astype(np.float64))[rows] for k in range(n)], axis=1)
        normal += basis.T @ basis
        target += basis.T @ _laplace(image)[rows]
    scale = np.diag(normal)
    if not scale.any():
        return np.zeros(n)
    regularised = normal + ridge * np.diag(scale) + 1e-9 * np.eye(n)
    return np.linalg.solve(regularised, target)


def _distance_bins(mask: np.ndarray, inside: int = EDGE_DISTANCE) -> np.ndarray:
    """Each pixel's bin of signed edge distance, 0..EDGE_DISTANCE+inside-1 (-1: farther from the edge, or no
    edge)."""
    if not mask.any() or mask.all():
        return np.full(mask.shape, -1, dtype=np.int64)
    bins = np.floor(signed_edge_distance(mask)).astype(np.int64) + EDGE_DISTANCE
    return np.where((bins >= 0) & (bins < EDGE_DISTANCE + inside), bins, -1)


def _laplace(image: np.ndarray) -> np.ndarray:
    return ndimage.laplace(image, mode="nearest")


def apply_image_transform(transform: ImageTransform, samples: Sequence[SliceSample]) -> list[SliceSample]:
    """Every slice transformed by ``transform(image, window)``; case z-score statistics recomputed."""
    defended = [replace(s, image=transform(s.image, s.window).astype(np.float32)) for s in samples]
    return _restat(defended)


def mix_clean(protected: Sequence[SliceSample], clean: Sequence[SliceSample], seed: int) -> list[SliceSample]:
    """``protected`` with 20% of its cases (at least one, chosen with ``seed``) taken from ``clean``."""
    case_ids = sorted({s.case_id for s in protected})
    n_clean = max(1, round(CLEAN_FRACTION * len(case_ids)))
    chosen = set(np.random.default_rng(seed).choice(case_ids, size=n_clean, replace=False).tolist())
    return [s for s in protected if s.case_id not in chosen] + [s for s in clean if s.case_id in chosen]


def defend(name: str, protected: Sequence[SliceSample], clean: Sequence[SliceSample], settings):
    """The training slices and training settings an attacker using defense ``name`` (or ``none``) ends up with."""
    if name == "none":
        return list(protected), settings
    if name not in DEFENSES:
        raise InputError(f"unknown defense {name!r} (choose from {', '.join(DEFENSES)})")
    return DEFENSES[name].apply(list(protected), list(clean), settings)


def _restat(samples: list[SliceSample]) -> list[SliceSample]:
    """Recompute each case's mean and std from its (defended) slices."""
    stats = {}
    for case_id in {s.case_id for s in samples}:
        values = np.concatenate([s.image.ravel() for s in samples if s.case_id == case_id]).astype(np.float64)
        stats[case_id] = (float(values.mean()), float(values.std()) or 1.0)
    return [replace(s, mean=stats[s.case_id][0], std=stats[s.case_id][1]) for s in samples]
