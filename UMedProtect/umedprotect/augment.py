"""Victim-like training augmentation (nnU-Net style), differentiable in the image, for 2D and 3D batches.

Used both by victims (to train like a realistic attacker) and by fitting (so the perturbation
is optimised through what real training does to it). Two presets follow nnU-Net:

- :data:`NNUNET_AUGMENTATION` (``nnunet``): nnU-Net v2's training transforms with their probabilities
  and the way its code draws them (batchgeneratorsv2, as used by ``nnUNetTrainer``): rotation p 0.2,
  scaling 0.7-1.4 p 0.2 (a factor above 1 shows more of the image), Gaussian noise p 0.1 (nnU-Net's
  "variance" 0-0.1 is drawn as the standard deviation), blur sigma 0.5-1 per axis p 0.2 (per channel
  0.5), brightness x0.75-1.25 p 0.15, contrast 0.75-1.25 p 0.15 (range preserved), low resolution
  0.5-1x p 0.25 (per channel 0.5), gamma 0.7-1.5 p 0.1 on the inverted image and p 0.3 (statistics
  retained), brightness/contrast/gamma factors below 1 half of the time, mirroring on every axis.
- :data:`NNUNET_LIKE_AUGMENTATION` (``nnunet-like``, ``AugmentSettings()``): the same transforms and
  probabilities drawn more simply (uniform factors, noise std up to sqrt(0.1), per-sample blur and low
  resolution at the full probability, one low-resolution factor per batch, scaling that magnifies, no
  inverted gamma); fitting is tuned with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSettings:
    """Probabilities and ranges; the defaults are the ``nnunet-like`` preset (see the module docstring)."""

    p_flip: float = 0.5  # per axis
    p_rotate: float = 0.2
    max_rotation_deg: float = 180.0  # 2D; 3D: max_rotation_deg_3d about each axis
    p_scale: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    p_noise: float = 0.1
    noise_std_max: float = 0.1**0.5  # z-score units
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
    # How nnU-Net draws them; the defaults keep the nnunet-like behaviour fitting was tuned with.
    max_rotation_deg_3d: float = 30.0  # nnU-Net 3d_fullres: about each axis
    scale_shrinks: bool = False  # True (nnU-Net): the factor scales the sampling grid, > 1 makes objects smaller
    p_blur_per_channel: float = 1.0  # nnU-Net: 0.5 (single-channel images: blur with p_blur * this)
    blur_sigma_per_axis: bool = False  # nnU-Net: one sigma per axis
    factors_split_at_one: bool = False  # nnU-Net: brightness/contrast/gamma factors below 1 half of the time
    contrast_preserves_range: bool = False  # nnU-Net: clip to the sample's range before the contrast change
    p_lowres_per_channel: float = 1.0  # nnU-Net: 0.5
    lowres_per_sample: bool = False  # nnU-Net: a factor per sample, nearest-exact down, (tri)linear up
    p_gamma_inverted: float = 0.0  # nnU-Net: 0.1, gamma of the inverted image
    gamma_retains_stats: bool = False  # nnU-Net: mean and std restored after gamma
    # UEraser-like plasma fields (0: off): additive brightness and multiplicative contrast fields
    p_plasma: float = 0.0
    plasma_brightness: float = 0.0  # largest amplitude, z-score units
    plasma_contrast: float = 0.0  # largest relative contrast change


NO_AUGMENTATION = AugmentSettings(0, 0, 0, 0, (1, 1), 0, 0, 0, (1, 1), 0, (1, 1), 0, (1, 1), 0, (1, 1), 0, (1, 1))
NNUNET_LIKE_AUGMENTATION = AugmentSettings()
NNUNET_AUGMENTATION = AugmentSettings(
    noise_std_max=0.1,
    scale_shrinks=True,
    p_blur_per_channel=0.5,
    blur_sigma_per_axis=True,
    factors_split_at_one=True,
    contrast_preserves_range=True,
    p_lowres_per_channel=0.5,
    lowres_per_sample=True,
    p_gamma_inverted=0.1,
    gamma_retains_stats=True,
)
STRONG_AUGMENTATION = AugmentSettings(
    p_rotate=0.5, p_scale=0.5, p_noise=0.3, p_blur=0.4, p_brightness=0.4, p_contrast=0.4, p_lowres=0.5, p_gamma=0.5
)
UERASER_AUGMENTATION = replace(
    NNUNET_AUGMENTATION,
    p_noise=0.5,
    noise_std_max=0.3,
    p_brightness=0.5,
    brightness_range=(0.5, 1.5),
    p_contrast=0.5,
    contrast_range=(0.5, 1.5),
    p_gamma=0.5,
    gamma_range=(0.5, 2.0),
    p_gamma_inverted=0.3,
    p_plasma=0.8,
    plasma_brightness=0.5,
    plasma_contrast=0.5,
)
AUGMENTATIONS = {"nnunet": NNUNET_AUGMENTATION, "nnunet-like": NNUNET_LIKE_AUGMENTATION, "none": NO_AUGMENTATION}


def zscore(image: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-sample z-score normalisation of a (B,C,H,W) or (B,C,D,H,W) batch."""
    dims = _sample_dims(image)
    mean = image.mean(dim=dims, keepdim=True)
    std = image.std(dim=dims, keepdim=True)
    return (image - mean) / (std + eps)


def _sample_dims(image: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, image.ndim))


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return (low + (high - low) * torch.rand(n, generator=generator)).to(device)


def _chance(n: int, p: float, generator: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator) < p).to(device)


def _factor(
    n: int, bounds: tuple[float, float], split_at_one: bool, generator: torch.Generator, device
) -> torch.Tensor:
    """Uniform factors in ``bounds``; with ``split_at_one`` (nnU-Net), below 1 half of the time, above 1 otherwise."""
    low, high = bounds
    if not split_at_one or low >= 1:
        return _uniform(n, low, high, generator, device)
    below = _chance(n, 0.5, generator, device)
    u = _uniform(n, 0, 1, generator, device)
    return torch.where(below, low + u * (1 - low), 1 + u * (max(high, 1) - 1))


def spatial(
    image: torch.Tensor, labels: torch.Tensor, s: AugmentSettings, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips, rotation and scaling with (tri)linear resampling (labels: nearest)."""
    if image.ndim == 5:
        return _spatial_3d(image, labels, s, generator)
    b, device = image.shape[0], image.device
    angle = _uniform(b, -1, 1, generator, device) * math.radians(s.max_rotation_deg)
    angle = torch.where(_chance(b, s.p_rotate, generator, device), angle, torch.zeros_like(angle))
    scale = _uniform(b, *s.scale_range, generator, device)
    scale = torch.where(_chance(b, s.p_scale, generator, device), scale, torch.ones_like(scale))
    flip_x = torch.where(_chance(b, s.p_flip, generator, device), -1.0, 1.0)
    flip_y = torch.where(_chance(b, s.p_flip, generator, device), -1.0, 1.0)
    if s.scale_shrinks:
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    else:
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip_x, -sin, torch.zeros_like(cos)], 1),
            torch.stack([sin, cos * flip_y, torch.zeros_like(cos)], 1),
        ],
        1,
    ).to(image.dtype)
    return _resample(image, labels, theta)


def _spatial_3d(
    image: torch.Tensor, labels: torch.Tensor, s: AugmentSettings, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """3D: rotation about each axis (up to ``max_rotation_deg_3d``), isotropic scaling, a flip per axis."""
    b, device = image.shape[0], image.device
    angles = _uniform(3 * b, -1, 1, generator, device).view(b, 3) * math.radians(s.max_rotation_deg_3d)
    angles = angles * _chance(b, s.p_rotate, generator, device)[:, None]
    scale = _uniform(b, *s.scale_range, generator, device)
    scale = torch.where(_chance(b, s.p_scale, generator, device), scale, torch.ones_like(scale))
    flips = torch.where(_chance(3 * b, s.p_flip, generator, device).view(b, 3), -1.0, 1.0)
    cos, sin = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def rotation(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(row, 1) for row in rows], 1)

    c, n = cos.unbind(1), sin.unbind(1)
    rx = rotation([[one, zero, zero], [zero, c[0], -n[0]], [zero, n[0], c[0]]])
    ry = rotation([[c[1], zero, n[1]], [zero, one, zero], [-n[1], zero, c[1]]])
    rz = rotation([[c[2], -n[2], zero], [n[2], c[2], zero], [zero, zero, one]])
    grid_scale = scale if s.scale_shrinks else 1 / scale
    matrix = rz @ ry @ rx * grid_scale[:, None, None] * flips[:, None, :]
    theta = torch.cat([matrix, torch.zeros(b, 3, 1, device=device)], 2).to(image.dtype)
    return _resample(image, labels, theta)


def _resample(image: torch.Tensor, labels: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    labels = F.grid_sample(labels[:, None].to(image.dtype), grid, mode="nearest", align_corners=False)
    return image, labels[:, 0].round().long()


def _gaussian_blur(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample separable Gaussian blur (radius 3); ``sigma``: (B,) or one column per spatial axis (B, axes)."""
    b, c, *size = image.shape
    axes = len(size)
    sigma = sigma[:, None].expand(b, axes) if sigma.ndim == 1 else sigma
    offsets = torch.arange(-3, 4, device=image.device, dtype=image.dtype)
    conv = F.conv2d if axes == 2 else F.conv3d
    x = image.reshape(1, b * c, *size)
    for axis in range(axes - 1, -1, -1):  # the last axis first
        kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, axis, None]) ** 2)
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, 0)
        shape = [b * c, 1] + [7 if a == axis else 1 for a in range(axes)]
        pad = [0, 0] * axes
        pad[2 * (axes - 1 - axis) : 2 * (axes - axis)] = [3, 3]
        x = conv(F.pad(x, pad, mode="reflect"), kernel.view(shape), groups=b * c)
    return x.reshape(b, c, *size)


def _low_resolution(image: torch.Tensor, chosen: torch.Tensor, s: AugmentSettings, generator: torch.Generator):
    """Down-sampled and back: one factor per batch (nearest down, bicubic or trilinear up) or, as nnU-Net, per
    sample (nearest-exact down, (tri)linear up)."""
    b, device, size = image.shape[0], image.device, image.shape[2:]
    if not s.lowres_per_sample:
        factor = float(_uniform(1, *s.lowres_range, generator, device))
        small = F.interpolate(image, size=[max(int(n * factor), 1) for n in size], mode="nearest")
        up = F.interpolate(small, size=size, mode="bicubic" if len(size) == 2 else "trilinear", align_corners=False)
        return torch.where(chosen.view(b, *[1] * (image.ndim - 1)), up, image)
    factors = _uniform(b, *s.lowres_range, generator, device)
    mode = "bilinear" if len(size) == 2 else "trilinear"
    out = []
    for x, factor, on in zip(image.split(1), factors.tolist(), chosen.tolist()):
        if on:
            small = F.interpolate(x, size=[max(round(n * factor), 1) for n in size], mode="nearest-exact")
            x = F.interpolate(small, size=size, mode=mode, align_corners=False)
        out.append(x)
    return torch.cat(out)


def _gamma(image: torch.Tensor, gamma: torch.Tensor, retain_stats: bool) -> torch.Tensor:
    """Gamma on each sample's range [min, max]; with ``retain_stats`` its mean and std are restored."""
    dims = _sample_dims(image)
    lo = image.amin(dim=dims, keepdim=True)
    span = image.amax(dim=dims, keepdim=True) - lo + 1e-6
    out = ((image - lo) / span).clamp_min(1e-6) ** gamma * span + lo
    if retain_stats:
        mean, std = image.mean(dim=dims, keepdim=True), image.std(dim=dims, keepdim=True)
        out = (out - out.mean(dim=dims, keepdim=True)) / out.std(dim=dims, keepdim=True).clamp_min(1e-7) * std + mean
    return out


def plasma_field(shape: tuple[int, ...], generator: torch.Generator, roughness: float = 0.6) -> torch.Tensor:
    """Fractal (plasma-like) fields in [-1, 1], shape (B,1,*spatial): octaves of up-sampled noise, amplitude
    ``roughness``**octave."""
    b, _, *size = shape
    mode = "bilinear" if len(size) == 2 else "trilinear"
    field = torch.zeros(b, 1, *size)
    for octave in range(max(1, int(math.log2(max(size))) - 1)):
        coarse = torch.randn(b, 1, *[min(2 ** (octave + 1), n) for n in size], generator=generator)
        field += roughness**octave * F.interpolate(coarse, size=size, mode=mode, align_corners=False)
    peak = field.abs().amax(dim=_sample_dims(field), keepdim=True).clamp_min(1e-6)
    return field / peak


def intensity(image: torch.Tensor, s: AugmentSettings, generator: torch.Generator) -> torch.Tensor:
    """Noise, blur, brightness, contrast, low resolution, (inverted) gamma and plasma, each with its probability."""
    b, device = image.shape[0], image.device
    shape = (b,) + (1,) * (image.ndim - 1)
    dims = _sample_dims(image)

    def pick(p: float, value: torch.Tensor, neutral: float) -> torch.Tensor:
        return torch.where(_chance(b, p, generator, device), value, torch.full_like(value, neutral)).view(shape)

    def factor(bounds: tuple[float, float]) -> torch.Tensor:
        return _factor(b, bounds, s.factors_split_at_one, generator, device)

    noise_std = pick(s.p_noise, _uniform(b, 0, s.noise_std_max, generator, device), 0.0)
    noise = torch.randn(image.shape, generator=generator).to(device)
    image = image + noise * noise_std
    blur = _chance(b, s.p_blur * s.p_blur_per_channel, generator, device)
    if blur.any():
        axes = image.ndim - 2
        sigma = _uniform(b * axes if s.blur_sigma_per_axis else b, *s.blur_sigma_range, generator, device)
        sigma = sigma.view(b, axes) if s.blur_sigma_per_axis else sigma
        image = torch.where(blur.view(shape), _gaussian_blur(image, sigma), image)
    image = image * pick(s.p_brightness, factor(s.brightness_range), 1.0)
    mean = image.mean(dim=dims, keepdim=True)
    contrasted = (image - mean) * pick(s.p_contrast, factor(s.contrast_range), 1.0) + mean
    if s.contrast_preserves_range:
        contrasted = torch.clamp(contrasted, image.amin(dim=dims, keepdim=True), image.amax(dim=dims, keepdim=True))
    image = contrasted
    lowres = _chance(b, s.p_lowres * s.p_lowres_per_channel, generator, device)
    if lowres.any():
        image = _low_resolution(image, lowres, s, generator)
    if s.p_gamma_inverted:
        inverted = _chance(b, s.p_gamma_inverted, generator, device).view(shape)
        gamma = factor(s.gamma_range).view(shape)
        image = torch.where(inverted, -_gamma(-image, gamma, s.gamma_retains_stats), image)
    gamma = pick(s.p_gamma, factor(s.gamma_range), 1.0)
    if s.gamma_retains_stats:
        image = torch.where(gamma != 1, _gamma(image, gamma, True), image)
    else:
        image = _gamma(image, gamma, False)
    if s.p_plasma:
        image = _plasma(image, s, generator)
    return image


def _plasma(image: torch.Tensor, s: AugmentSettings, generator: torch.Generator) -> torch.Tensor:
    """UEraser-like plasma brightness and contrast fields (each sample with probability ``p_plasma``)."""
    b, device = image.shape[0], image.device
    shape = (b,) + (1,) * (image.ndim - 1)
    chosen = _chance(b, s.p_plasma, generator, device).view(shape)
    brightness = _uniform(b, 0, s.plasma_brightness, generator, device).view(shape)
    contrast = _uniform(b, 0, s.plasma_contrast, generator, device).view(shape)
    mean = image.mean(dim=_sample_dims(image), keepdim=True)
    fields = [plasma_field(tuple(image.shape), generator).to(device) for _ in range(2)]
    changed = (image - mean) * (1 + contrast * fields[0]) + mean + brightness * fields[1]
    return torch.where(chosen, changed, image)


def augment_batch(
    image: torch.Tensor, labels: torch.Tensor, settings: AugmentSettings, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial then intensity augmentation of z-scored images (B,1,H,W) or (B,1,D,H,W) and their labels."""
    image, labels = spatial(image, labels, settings, generator)
    return intensity(image, settings, generator), labels
