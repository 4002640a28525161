"""The protector as a torch module: contour perturbator G_c, texture perturbator G_t and the per-label codes.

Its file format (config, checks) is :mod:`umedprotect.protector_file`, read without torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from .atomic import atomic_path
from .errors import InputError
from .networks import UNet2d
from .protector_file import (
    BAND_NEGATED_CODES,
    DIGEST_KEY,
    GENERATOR_HEADS,
    METADATA_KEY,
    ProtectorConfig,
    ProtectorFile,
    read_protector_file,
    weights_digest,
)

BLOB_SIGMAS = (1.5, 3.0)  # difference-of-Gaussians band of the "blobs" codes, pixels
BLOB_GAIN = 3.0  # pre-activation scale of the "blobs" codes (tanh(3) = 0.995: nearly the full budget)


class Protector(nn.Module):
    """G_c (CDC encoder-decoder on the contour band) + G_t (encoder-decoder under the texture bound).

    Both add a learnable per-label code to their pre-activation: a class-wise shortcut that fitting
    shapes to survive the victim's augmentation, while the generators adapt it to each image. The
    code is a tile on the image grid with period ``code_period``; for ``rings`` codes, a
    periodic profile over each pixel's depth below its label's edge (it follows the organ's shape).
    ``fill`` and ``dots`` codes are tiles too, and continue negated into the contour band outside the label,
    so the label's edge is where the tile flips.
    """

    def __init__(self, config: ProtectorConfig | None = None) -> None:
        super().__init__()
        self.config = config or ProtectorConfig()
        c = self.config
        self.contour = UNet2d(2, 1, c.base_channels, c.levels, cdc_theta=c.cdc_theta)
        self.texture = UNet2d(2, 1, c.base_channels, c.levels)
        for generator in (self.contour, self.texture):  # start from the codes alone: a consistent shortcut
            nn.init.zeros_(generator.head.weight)
            nn.init.zeros_(generator.head.bias)
        if c.code_init == "rings":
            self.codes = nn.Parameter(ring_codes(c.code_classes, c.code_period))
        elif c.code_init == "fill":
            self.codes = nn.Parameter(fill_codes(c.code_classes, c.code_period))
        elif c.code_init == "dots":
            self.codes = nn.Parameter(dot_codes(c.code_classes, c.code_period))
        else:
            generator = torch.Generator().manual_seed(0)
            codes = torch.randn(c.code_classes, c.code_period, c.code_period, generator=generator)
            self.codes = nn.Parameter(blob_codes(codes) if c.code_init == "blobs" else codes)

    @property
    def divisor(self) -> int:
        return self.contour.divisor

    @property
    def generators_silent(self) -> bool:
        """True when both generators' 1x1 heads are all zero: their output is zero, the codes alone protect."""
        state = self.state_dict()
        return not any(state[key].any() for key in GENERATOR_HEADS)

    @torch.inference_mode()
    def perturb_crops(
        self, image_norm: np.ndarray, maps: np.ndarray, labels: np.ndarray, origin: tuple[int, int], epsilon: float
    ) -> np.ndarray:
        """Change in window units (B,H,W) for a batch of crops (B,H,W) at ``origin``, on the module's device."""
        device = self.codes.device
        x = torch.from_numpy(image_norm[:, None]).to(device)
        m = torch.from_numpy(maps).to(device)
        y = torch.from_numpy(labels.astype(np.int64)).to(device)
        h, w = x.shape[-2:]
        pad = (0, (-w) % self.divisor, 0, (-h) % self.divisor)
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
            m = F.pad(m, pad)
            y = F.pad(y, pad)
        start = torch.tensor([origin], dtype=torch.long, device=device).expand(len(labels), 2)
        return self(x, m, y, start, epsilon)[:, 0, :h, :w].float().cpu().numpy()

    def code_field(
        self, labels: torch.Tensor, origin: torch.Tensor, depth: torch.Tensor, band_owner: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-pixel code (B,1,H,W) for ``labels`` (B,H,W) whose top-left pixel is at ``origin`` (B,2).

        ``depth`` (B,H,W): each pixel's depth below its label's edge (:func:`regions.edge_depth`),
        used by ``rings`` codes, linearly interpolated on their periodic profile. ``band_owner`` (B,H,W):
        the label owning each contour-band pixel (:func:`regions.region_maps`); ``fill`` and ``dots`` codes
        continue there, outside the labels, with the opposite sign.
        """
        n, period = self.codes.shape[0], self.codes.shape[1]
        sign = 1.0
        if self.config.code_init in BAND_NEGATED_CODES and band_owner is not None:
            outside = (labels == 0) & (band_owner > 0)
            labels = torch.where(outside, band_owner.round().long(), labels)
            sign = torch.where(outside, -1.0, 1.0)[:, None]
        index = torch.where(labels > 0, 1 + (labels - 1) % (n - 1), torch.zeros_like(labels))
        if self.codes.ndim == 2:  # rings
            position = torch.remainder(depth, period)
            below = position.floor().long() % period
            above = (below + 1) % period
            weight = position - position.floor()
            return ((1 - weight) * self.codes[index, below] + weight * self.codes[index, above])[:, None]
        h, w = labels.shape[-2:]
        rows = (origin[:, 0:1] + torch.arange(h, device=labels.device)) % period
        cols = (origin[:, 1:2] + torch.arange(w, device=labels.device)) % period
        return sign * self.codes[index, rows[:, :, None], cols[:, None, :]][:, None]

    def forward(
        self,
        image: torch.Tensor,
        maps: torch.Tensor,
        labels: torch.Tensor,
        origin: torch.Tensor | None = None,
        epsilon: float | None = None,
    ) -> torch.Tensor:
        """Perturbation in window units for normalised ``image`` (B,1,H,W), ``maps`` (B,5,H,W), ``labels`` (B,H,W).

        ``maps`` holds (roi, contour band, texture bound, edge depth, band owner) from :func:`regions.region_maps`;
        ``origin`` (B,2) is each crop's top-left pixel in the slice (default 0, 0).
        The result is zero outside ROI ∪ band and bounded by ``epsilon``/255 everywhere.
        """
        eps = (self.config.epsilon if epsilon is None else epsilon) / 255.0
        if origin is None:
            origin = torch.zeros(image.shape[0], 2, dtype=torch.long, device=image.device)
        roi, band, texture = maps[:, 0:1], maps[:, 1:2], maps[:, 2:3]
        inputs = torch.cat([image.clamp(-1.0, 2.0), roi], dim=1)
        band_owner = maps[:, 4] if maps.shape[1] > 4 else None  # (roi, band, texture, depth) maps: no owner
        code = self.code_field(labels, origin, maps[:, 3], band_owner)
        contour, texture_out = _generate(self.contour, inputs), _generate(self.texture, inputs)
        gain = self.config.generator_gain
        if gain > 0:
            contour, texture_out = gain * torch.tanh(contour / gain), gain * torch.tanh(texture_out / gain)
        delta_contour = eps * torch.tanh(contour + code) * band
        delta_texture = eps * texture * torch.tanh(texture_out + code)
        return delta_contour + delta_texture


def _generate(generator: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """A generator's output; with an all-zero 1x1 head it is zero, so inference skips running the network."""
    head = generator.head
    if not torch.is_grad_enabled() and not head.weight.any() and not head.bias.any():
        return inputs.new_zeros((inputs.shape[0], head.out_channels, *inputs.shape[2:]))
    return generator(inputs)


def blob_codes(noise: torch.Tensor) -> torch.Tensor:
    """Isotropic band-pass textures from white ``noise`` (classes, P, P), tileable; zero for the background.

    Blobs a few pixels apart and without orientation survive flips, rotation, scaling, blur and
    low-resolution simulation, which erase pixel-level patterns (docs/results.md, `blobs-screen`).
    """
    period = noise.shape[-1]
    freq = torch.fft.fftfreq(period)
    radius2 = freq[:, None] ** 2 + freq[None, :] ** 2
    transfer = sum(sign * torch.exp(-2 * (torch.pi * s) ** 2 * radius2) for sign, s in zip((1, -1), BLOB_SIGMAS))
    band = torch.fft.ifft2(torch.fft.fft2(noise) * transfer).real
    codes = BLOB_GAIN * band / band.std(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    codes[0] = 0.0  # the background side of the band keeps what the generators make
    return codes


def ring_codes(classes: int, period: int) -> torch.Tensor:
    """Contour-following rings: per label, a sine over the depth below the edge, +- in turn every
    ``period``/2 pixels from the edge inwards; zero for the background.

    They follow the organ's shape, so flips, rotation and scaling keep them, and a victim learns
    them before the anatomy at lower energy than blobs (docs/archive/research-log.md, "Rings").
    """
    profile = BLOB_GAIN * torch.sin(2 * torch.pi * (torch.arange(period) - 0.5) / period)
    codes = profile.repeat(classes, 1)
    codes[0] = 0.0
    return codes


def fill_codes(classes: int, period: int) -> torch.Tensor:
    """Per label a +-``BLOB_GAIN`` tile in turn: checkerboard, row stripes, column stripes; zero for the background.

    Blocks of ``period``/2 pixels (1 for the default period 2): the finest pattern there is, which a
    victim trained without augmentation takes for the label long before the anatomy. The three tiles
    differ in orientation, which scaling and flips keep, so labels are told apart (beyond three they repeat).
    The bundled default has the checkerboard alone (``code_classes`` 2), on every label: with the labels told
    apart, victims learnt more of them (docs/results.md, ``fill-one-code-organs``).
    """
    half = max(period // 2, 1)
    rows, cols = (torch.arange(period)[:, None] // half) % 2, (torch.arange(period)[None, :] // half) % 2
    tiles = [(rows + cols) % 2, rows.expand(period, period), cols.expand(period, period)]
    codes = [BLOB_GAIN * (1 - 2 * tiles[k % len(tiles)].float()) for k in range(classes - 1)]
    return torch.stack([torch.zeros(period, period), *codes])


def dot_codes(classes: int, period: int) -> torch.Tensor:
    """Per label a ``BLOB_GAIN`` x cosine tile in turn: cos(2 pi r / P) cos(2 pi c / P), cos(2 pi r / P),
    cos(2 pi c / P) on the pixel grid; zero for the background.

    At the default period 4: +-1 dots on every other row and column (alternating in sign, zero between), or
    every other row, or every other column. Unlike the period-2 fill tiles, their resampled version stays
    coherent, so a victim that resamples the images still sees them (docs/results.md).
    """
    wave = torch.round(torch.cos(2 * torch.pi * torch.arange(period) / period) * 1e6) / 1e6  # exact zeros
    rows, cols = wave[:, None].expand(period, period), wave[None, :].expand(period, period)
    tiles = [rows * cols, rows, cols]
    codes = [BLOB_GAIN * tiles[k % len(tiles)] for k in range(classes - 1)]
    return torch.stack([torch.zeros(period, period), *codes])


def save_protector(protector: Protector, path: str | Path) -> Path:
    """Write the protector atomically as safetensors weights + JSON config."""
    path = Path(path)
    weights = as_protector_file(protector).weights
    metadata = {METADATA_KEY: protector.config.to_json(), DIGEST_KEY: weights_digest(weights)}
    with atomic_path(path) as tmp:
        save_file({k: torch.from_numpy(v) for k, v in weights.items()}, str(tmp), metadata=metadata)
    return path


def build_protector(protector_file: ProtectorFile) -> Protector:
    """The module of a read protector file, after checking its weights against the networks its config builds."""
    protector = Protector(protector_file.config)
    expected = {k: tuple(v.shape) for k, v in protector.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in protector_file.weights.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise InputError(
            f"{protector_file.source}: protector weights do not match its config "
            f"(missing {missing[:3]}, unexpected {extra[:3]}, wrong shape {wrong[:3]})"
        )
    protector.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in protector_file.weights.items()})
    return protector.eval()


def load_protector(path: str | Path | None = None, device: str | torch.device = "cpu") -> Protector:
    """Load and check a protector file (default: the bundled one) as a module. Never executes file content."""
    return build_protector(read_protector_file(path)).to(device)


def as_protector_file(protector: Protector, source: str = "given") -> ProtectorFile:
    """The protector's config and weights as :func:`save_protector` writes them (float32, on the CPU)."""
    weights = {k: v.detach().cpu().contiguous().float().numpy() for k, v in protector.state_dict().items()}
    return ProtectorFile(protector.config, weights, source)
