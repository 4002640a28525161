"""The victims' ``nnunet`` augmentation draws nnU-Net v2's transforms with its probabilities (fixed seed, many
draws); ``nnunet-like`` (fitting's default) keeps its numbers."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
import torch

from umedprotect.augment import (
    NNUNET_AUGMENTATION,
    NNUNET_LIKE_AUGMENTATION,
    UERASER_AUGMENTATION,
    AugmentSettings,
    augment_batch,
    intensity,
    plasma_field,
    spatial,
)

N = 3000  # samples per check: the share of changed samples is within about 0.02 of its probability
PROBABILITIES = [f.name for f in fields(AugmentSettings) if f.name.startswith("p_") and "per_channel" not in f.name]


def only(**probabilities: float) -> AugmentSettings:
    """The nnunet preset with every transform off except ``probabilities``."""
    return replace(NNUNET_AUGMENTATION, **{**dict.fromkeys(PROBABILITIES, 0.0), **probabilities})


def _images(n: int = N, size: int = 32) -> torch.Tensor:
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.randn(n, 1, 8, 8), size=(size, size), mode="bilinear")
    return smooth + 3.0


def _changed(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    return (after - before).abs().flatten(1).amax(1) > 1e-4


@pytest.mark.parametrize(
    ("name", "effective"),
    [
        ("p_noise", 0.1),
        ("p_blur", 0.2 * 0.5),
        ("p_brightness", 0.15),
        ("p_contrast", 0.15),
        ("p_lowres", 0.25 * 0.5),
        ("p_gamma", 0.3),
        ("p_gamma_inverted", 0.1),
    ],
)
def test_each_intensity_transform_fires_with_nnunets_probability(name, effective):
    settings = only(**{name: getattr(NNUNET_AUGMENTATION, name)})
    image = _images()
    share = _changed(image, intensity(image.clone(), settings, torch.Generator().manual_seed(1))).float().mean()
    low_resolution_identity = 0.03 if name == "p_lowres" else 0.0  # factors above 31.5/32 keep a 32-pixel image
    assert float(share) == pytest.approx(effective * (1 - low_resolution_identity / 2), abs=0.02)


def test_the_whole_intensity_pipeline_leaves_about_nnunets_share_of_images_untouched():
    p = NNUNET_AUGMENTATION
    untouched = 1.0
    chances = (p.p_noise, p.p_blur * 0.5, p.p_brightness, p.p_contrast, p.p_lowres * 0.5, p.p_gamma_inverted, p.p_gamma)
    for chance in chances:
        untouched *= 1 - chance
    image = _images()
    share = 1 - _changed(image, intensity(image.clone(), p, torch.Generator().manual_seed(2))).float().mean()
    assert float(share) == pytest.approx(untouched, abs=0.025)


def test_factors_are_drawn_below_one_half_of_the_time_and_noise_up_to_nnunets_sigma():
    image = _images()
    out = intensity(image.clone(), only(p_brightness=1.0), torch.Generator().manual_seed(3))
    factors = (out / image).flatten(1).mean(1)
    assert float((factors < 1).float().mean()) == pytest.approx(0.5, abs=0.03)
    assert 0.75 <= float(factors.min()) and float(factors.max()) <= 1.25
    noisy = intensity(image.clone(), only(p_noise=1.0), torch.Generator().manual_seed(4)) - image
    sigma = noisy.flatten(1).std(1)
    assert float(sigma.max()) == pytest.approx(0.1, abs=0.01) and float(sigma.mean()) == pytest.approx(0.05, abs=0.01)


def test_gamma_keeps_the_mean_and_std_and_contrast_the_range():
    image = _images(200)
    dims = (1, 2, 3)
    gamma = intensity(image.clone(), only(p_gamma=1.0, p_gamma_inverted=1.0), torch.Generator().manual_seed(5))
    assert torch.allclose(gamma.mean(dims), image.mean(dims), atol=1e-3)
    assert torch.allclose(gamma.std(dims), image.std(dims), rtol=1e-3)
    contrast = intensity(image.clone(), only(p_contrast=1.0), torch.Generator().manual_seed(6))
    assert bool((contrast.amin(dims) >= image.amin(dims) - 1e-5).all())
    assert bool((contrast.amax(dims) <= image.amax(dims) + 1e-5).all())


def test_rotation_scaling_and_mirroring_have_nnunets_probabilities_and_scaling_shrinks():
    size = 32
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disk = (((yy - 15.5) ** 2 + (xx - 15.5) ** 2) <= 64).long()
    labels = disk.expand(N, size, size).clone()
    image = labels[:, None].float() + 0.01 * torch.randn(N, 1, size, size)

    def area_change(settings: AugmentSettings, seed: int) -> torch.Tensor:
        _, out = spatial(image, labels, settings, torch.Generator().manual_seed(seed))
        return out.flatten(1).sum(1).float() / disk.sum()

    resampled, _ = spatial(image, labels, only(p_scale=NNUNET_AUGMENTATION.p_scale), torch.Generator().manual_seed(7))
    assert float(_changed(image, resampled).float().mean()) == pytest.approx(0.2, abs=0.02)
    scaled = area_change(only(p_scale=1.0), 7)
    changed = (scaled - 1).abs() > 0.05
    # nnU-Net: scale factors uniform in 0.7-1.4 multiply the sampling grid, so 4 of 7 disks look smaller
    assert float((scaled[changed] < 1).float().mean()) == pytest.approx(4 / 7, abs=0.05)
    smaller = area_change(only(p_scale=1.0), 8)
    assert 1 / 1.4**2 - 0.05 < float(smaller.min()) and float(smaller.max()) < 1 / 0.7**2 + 0.05
    rotated, _ = spatial(image, labels, only(p_rotate=NNUNET_AUGMENTATION.p_rotate), torch.Generator().manual_seed(9))
    assert float(_changed(image, rotated).float().mean()) == pytest.approx(0.2, abs=0.02)
    ramp = xx.float().expand(N, 1, size, size)
    flipped, _ = spatial(ramp, labels, only(p_flip=0.5), torch.Generator().manual_seed(10))
    assert float((flipped[:, 0, 0, 0] > flipped[:, 0, 0, -1]).float().mean()) == pytest.approx(0.5, abs=0.03)


def test_3d_batches_are_augmented_on_every_axis():
    torch.manual_seed(0)
    image, labels = torch.randn(64, 1, 8, 12, 12), (torch.rand(64, 8, 12, 12) > 0.5).long()
    ramp = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(64, 1, 8, 12, 12)
    flipped, _ = spatial(ramp, labels, only(p_flip=1.0), torch.Generator().manual_seed(0))
    assert bool((flipped[:, 0, 0] > flipped[:, 0, -1]).all())  # the depth axis is mirrored too
    out, out_labels = augment_batch(image, labels, NNUNET_AUGMENTATION, torch.Generator().manual_seed(1))
    assert out.shape == image.shape and out_labels.shape == labels.shape and bool(torch.isfinite(out).all())
    assert set(out_labels.unique().tolist()) <= {0, 1}


def test_nnunet_like_is_fittings_default_and_ueraser_adds_plasma_fields():
    assert AugmentSettings() == NNUNET_LIKE_AUGMENTATION != NNUNET_AUGMENTATION
    field = plasma_field((4, 1, 32, 32), torch.Generator().manual_seed(0))
    assert field.shape == (4, 1, 32, 32) and float(field.abs().amax()) == pytest.approx(1.0)
    image = _images(400)
    plasma = replace(only(), p_plasma=UERASER_AUGMENTATION.p_plasma, plasma_brightness=0.5, plasma_contrast=0.5)
    changed = _changed(image, intensity(image.clone(), plasma, torch.Generator().manual_seed(1))).float().mean()
    assert float(changed) == pytest.approx(UERASER_AUGMENTATION.p_plasma, abs=0.06)
