"""Attacker defenses applied to protected training slices before victim training."""

from __future__ import annotations

import numpy as np
import pytest

from umedprotect.augment import STRONG_AUGMENTATION
from umedprotect.errors import InputError
from umedprotect.intensity import Window
from umedprotect.slices import case_slices
from umedprotect_eval.defenses import (
    DEFENSES,
    apply_image_transform,
    bit_depth,
    blur,
    defend,
    down_up,
    jpeg,
    mix_clean,
)
from umedprotect_eval.training import TrainSettings

WINDOW = Window(0.0, 1000.0)


def _checkerboard(amplitude: float = 4.0) -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:32]
    return (500 + amplitude * np.where((yy + xx) % 2 == 0, 1.0, -1.0)).astype(np.float32)


def _cases(n: int, offset: float = 0.0) -> list:
    samples = []
    for k in range(n):
        image = np.full((2, 16, 16), 100.0 * k + offset, dtype=np.float32)
        image[:, 4:8, 4:8] += 50
        labels = np.zeros((2, 16, 16), np.uint8)
        labels[:, 4:8, 4:8] = 1
        samples += case_slices(image, labels, None, f"case{k}", roi_only=False)
    return samples


@pytest.mark.parametrize("transform", [blur, down_up, jpeg])
def test_smoothing_defenses_wash_out_a_pixel_checkerboard(transform):
    image = _checkerboard()
    out = transform(image, WINDOW)
    assert out.shape == image.shape and out.dtype == np.float32
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(out[inner] - 500).mean() < 0.6 * np.abs(image[inner] - 500).mean()


def test_bit_depth_keeps_64_levels_of_the_window():
    image = np.linspace(-200, 1200, 4096, dtype=np.float32).reshape(64, 64)
    out = bit_depth(image, WINDOW)
    assert len(np.unique(out)) == 64
    assert out.min() == WINDOW.lo and out.max() == WINDOW.hi  # outside the window is clipped
    inside = (image >= 0) & (image <= 1000)
    assert np.abs(out - image)[inside].max() <= 1000 / 63 / 2 + 1e-3


def test_jpeg_is_close_to_an_8_bit_export():
    rng = np.random.default_rng(0)
    image = (500 + 100 * rng.standard_normal((48, 48))).astype(np.float32)
    out = jpeg(image, WINDOW)
    assert 0 < np.abs(out - image).mean() < 60


def test_image_defense_recomputes_case_statistics():
    samples = _cases(2)
    defended = apply_image_transform(bit_depth, samples)
    for s in defended:
        values = np.concatenate([d.image.ravel() for d in defended if d.case_id == s.case_id])
        assert s.mean == pytest.approx(values.mean(), rel=1e-6)
    assert [s.case_id for s in defended] == [s.case_id for s in samples]


def test_mix_clean_replaces_a_fifth_of_the_cases_and_at_least_one():
    protected, clean = _cases(10, offset=1.0), _cases(10)
    mixed = mix_clean(protected, clean, seed=0)
    from_clean = {s.case_id for s in mixed if s.image[0, 0] % 100 == 0}
    assert len(from_clean) == 2
    assert sorted({s.case_id for s in mixed}) == sorted({s.case_id for s in protected})
    assert len(mixed) == len(protected)
    assert len({s.case_id for s in mix_clean(_cases(3, 1.0), _cases(3), seed=0) if s.image[0, 0] % 100 == 0}) == 1


def test_defend_dispatch():
    protected, clean = _cases(2, offset=1.0), _cases(2)
    settings = TrainSettings()
    assert defend("none", protected, clean, settings) == (protected, settings)
    samples, strong = defend("strong-aug", protected, clean, settings)
    assert strong.augment == STRONG_AUGMENTATION and samples == protected
    for name in DEFENSES:
        samples, _ = defend(name, protected, clean, settings)
        assert len(samples) == len(protected)
    with pytest.raises(InputError, match="unknown defense"):
        defend("sharpen", protected, clean, settings)


def _disk_case(ring_amplitude: float = 0.0, depth: float = 4) -> list:
    """Slices of one case: a blurred ellipse (label 1) on noise; optionally rings tied to its edge (alternating
    +-amplitude in each 1-pixel distance band from 4 px outside the edge to ``depth`` px inside)."""
    from scipy import ndimage

    from umedprotect_eval.defenses import signed_edge_distance

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    images, labels = [], []
    for k in range(4):
        mask = (yy - 32 - 2 * k) ** 2 / 1.2 + (xx - 30 + k) ** 2 <= (12 + k) ** 2
        image = 300 + 400 * ndimage.gaussian_filter(mask.astype(float), 1.0) + rng.normal(0, 10, mask.shape)
        distance = signed_edge_distance(mask)
        rings = ring_amplitude * np.cos(np.pi * np.floor(distance))
        image += np.where((distance > -4) & (distance < depth), rings, 0.0)
        images.append(image)
        labels.append(mask.astype(np.uint8))
    return case_slices(np.stack(images).astype(np.float32), np.stack(labels), None, "disk", roi_only=False)


def _energy(samples, reference) -> float:
    return float(sum(((s.image.astype(np.float64) - r.image) ** 2).sum() for s, r in zip(samples, reference)))


def test_the_adaptive_attacker_removes_a_pattern_tied_to_the_edge_and_leaves_clean_images_nearly_unchanged():
    clean, ringed = _disk_case(), _disk_case(ring_amplitude=6.0)
    assert _energy(DEFENSES["adaptive"].apply(ringed, clean, None)[0], clean) < 0.6 * _energy(ringed, clean)
    cleaned = DEFENSES["adaptive"].apply(clean, clean, None)[0]
    assert _energy(cleaned, clean) < 0.05 * _energy(ringed, clean)
    assert max(float(np.abs(s.image - c.image).max()) for s, c in zip(cleaned, clean)) < 3  # edge contrast: 400
    assert [s.labels.tolist() for s in cleaned] == [c.labels.tolist() for c in clean]


def test_the_deep_adaptive_attacker_removes_rings_over_the_whole_label_which_the_edge_one_leaves():
    clean, ringed = _disk_case(), _disk_case(ring_amplitude=6.0, depth=64)
    left = {
        name: _energy(DEFENSES[name].apply(ringed, clean, None)[0], clean) for name in ("adaptive", "adaptive-deep")
    }
    assert left["adaptive-deep"] < 0.7 * left["adaptive"] and left["adaptive-deep"] < 0.4 * _energy(ringed, clean)
    cleaned = DEFENSES["adaptive-deep"].apply(clean, clean, None)[0]
    assert max(float(np.abs(s.image - c.image).max()) for s, c in zip(cleaned, clean)) < 10  # edge contrast: 400


def test_ueraser_trains_with_plasma_fields_and_strong_intensity_augmentation():
    from umedprotect.augment import UERASER_AUGMENTATION

    protected, clean = _cases(2, offset=1.0), _cases(2)
    samples, settings = defend("ueraser", protected, clean, TrainSettings())
    assert samples == protected and settings.augment == UERASER_AUGMENTATION
    assert settings.augment.p_plasma > 0 and settings.augment.gamma_range[1] > 1.5
