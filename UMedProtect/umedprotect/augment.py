"""Victim-like training augmentation (nnU-Net style), differentiable in the image.

Used both by victims (to train like a realistic attacker) and by fitting (so the perturbation
is optimised through what real training does to it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSettings:
    """Probabilities and ranges, defaults close to nnU-Net's 2D pipeline."""

    p_flip: float = 0.5  # per axis
    p_rotate: float = 0.2
    max_rotation_deg: float = 180.0
    p_scale: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    p_noise: float = 0.1
    noise_std_max: float = 0.1**0.5  # nnU-Net: variance up to 0.1 (z-score units)
    p_blur: float = 0.2
    blur_sigma_range: tuple[float, float] = (0.5, 1.0)
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_lowres: float = 0.25
    lowres_range: tuple[float, float] = (0.5, 1.0)
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)


NO_AUGMENTATION = AugmentSettings(0, 0, 0, 0, (1, 1), 0, 0, 0, (1, 1), 0, (1, 1), 0, (1, 1), 0, (1, 1), 0, (1, 1))
STRONG_AUGMENTATION = AugmentSettings(
    p_rotate=0.5, p_scale=0.5, p_noise=0.3, p_blur=0.4, p_brightness=0.4, p_contrast=0.4, p_lowres=0.5, p_gamma=0.5
)


def zscore(image: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-sample z-score normalisation of a (B,C,H,W) batch."""
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    std = image.std(dim=(1, 2, 3), keepdim=True)
    return (image - mean) / (std + eps)


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return (low + (high - low) * torch.rand(n, generator=generator)).to(device)


def _chance(n: int, p: float, generator: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator) < p).to(device)


def spatial(
    image: torch.Tensor, labels: torch.Tensor, s: AugmentSettings, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips, rotation and scaling with bilinear resampling (labels: nearest)."""
    b, device = image.shape[0], image.device
    angle = _uniform(b, -1, 1, generator, device) * math.radians(s.max_rotation_deg)
    angle = torch.where(_chance(b, s.p_rotate, generator, device), angle, torch.zeros_like(angle))
    scale = _uniform(b, *s.scale_range, generator, device)
    scale = torch.where(_chance(b, s.p_scale, generator, device), scale, torch.ones_like(scale))
    flip_x = torch.where(_chance(b, s.p_flip, generator, device), -1.0, 1.0)
    flip_y = torch.where(_chance(b, s.p_flip, generator, device), -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip_x, -sin, torch.zeros_like(cos)], 1), torch.stack([sin, cos * flip_y, torch.zeros_like(cos)], 1)],
        1,
    ).to(image.dtype)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    labels = F.grid_sample(labels[:, None].to(image.dtype), grid, mode="nearest", align_corners=False)
    return image, labels[:, 0].round().long()


def _gaussian_blur(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample separable Gaussian blur (radius 3)."""
    offsets = torch.arange(-3, 4, device=image.device, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    b, c, h, w = image.shape
    x = image.reshape(1, b * c, h, w)
    kx = kernel.repeat_interleave(c, 0)[:, None, None, :]
    ky = kernel.repeat_interleave(c, 0)[:, None, :, None]
    x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="reflect"), kx, groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, 3, 3), mode="reflect"), ky, groups=b * c)
    return x.reshape(b, c, h, w)


def intensity(image: torch.Tensor, s: AugmentSettings, generator: torch.Generator) -> torch.Tensor:
    """Noise, blur, brightness, contrast, low resolution and gamma, each with its probability."""
    b, device = image.shape[0], image.device
    shape = (b, 1, 1, 1)

    def pick(p: float, value: torch.Tensor, neutral: float) -> torch.Tensor:
        return torch.where(_chance(b, p, generator, device), value, torch.full_like(value, neutral)).view(shape)

    noise_std = pick(s.p_noise, _uniform(b, 0, s.noise_std_max, generator, device), 0.0)
    noise = torch.randn(image.shape, generator=generator).to(device)
    image = image + noise * noise_std
    blur = _chance(b, s.p_blur, generator, device)
    if blur.any():
        sigma = _uniform(b, *s.blur_sigma_range, generator, device)
        image = torch.where(blur.view(shape), _gaussian_blur(image, sigma), image)
    image = image * pick(s.p_brightness, _uniform(b, *s.brightness_range, generator, device), 1.0)
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image = (image - mean) * pick(s.p_contrast, _uniform(b, *s.contrast_range, generator, device), 1.0) + mean
    lowres = _chance(b, s.p_lowres, generator, device)
    if lowres.any():
        factor = float(_uniform(1, *s.lowres_range, generator, device))
        h, w = image.shape[-2:]
        small = F.interpolate(image, size=(max(int(h * factor), 1), max(int(w * factor), 1)), mode="nearest")
        image = torch.where(lowres.view(shape), F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False), image)
    gamma = pick(s.p_gamma, _uniform(b, *s.gamma_range, generator, device), 1.0)
    lo = image.amin(dim=(1, 2, 3), keepdim=True)
    span = image.amax(dim=(1, 2, 3), keepdim=True) - lo + 1e-6
    image = ((image - lo) / span).clamp_min(1e-6) ** gamma * span + lo
    return image


def augment_batch(
    image: torch.Tensor, labels: torch.Tensor, settings: AugmentSettings, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial then intensity augmentation of z-scored images (B,1,H,W) and labels (B,H,W)."""
    image, labels = spatial(image, labels, settings, generator)
    return intensity(image, settings, generator), labels
