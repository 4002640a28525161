"""The protector: contour perturbator G_c and texture perturbator G_t, and its safe file format.

A protector file is a safetensors file: the generators' weights plus the JSON config in the
header metadata. Loading parses data only and never executes code from the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from . import __version__
from .atomic import atomic_path
from .errors import InputError
from .intensity import DEFAULT_PERCENTILES
from .networks import UNet2d
from .regions import DEFAULT_BAND_RADIUS, DEFAULT_TEXTURE_FLOOR, DEFAULT_TEXTURE_WINDOW
from .settings import OPTIONS

FORMAT_NAME = "umedprotect-protector"
FORMAT_VERSION = 1
METADATA_KEY = "umedprotect"
DIGEST_KEY = "umedprotect_weights_sha256"
DEFAULT_PROTECTOR_PATH = Path(__file__).with_name("data") / "default_protector.safetensors"
CODE_INITS = ("normal", "blobs", "rings", "fill")
DEFAULT_MIN_PSNR = 50.0  # dB: the visibility floor of new protectors (METHOD.md: the paper's 50 dB)
BLOB_SIGMAS = (1.5, 3.0)  # difference-of-Gaussians band of the "blobs" codes, pixels
BLOB_GAIN = 3.0  # pre-activation scale of the "blobs" codes (tanh(3) = 0.995: nearly the full budget)


_VALID_VALUES = {  # epsilon and band_radius: the ranges of the protection options
    "epsilon": lambda v: isinstance(v, (int, float)) and OPTIONS["epsilon"].accepts(v),
    "band_radius": lambda v: isinstance(v, int) and OPTIONS["band_radius"].accepts(v),
    "texture_floor": lambda v: isinstance(v, (int, float)) and 0 <= v <= 1,
    "texture_window": lambda v: isinstance(v, int) and 1 <= v <= 31,
    "cdc_theta": lambda v: isinstance(v, (int, float)) and 0 <= v <= 1,
    "base_channels": lambda v: isinstance(v, int) and 1 <= v <= 128,
    "levels": lambda v: isinstance(v, int) and 1 <= v <= 6,
    "code_period": lambda v: isinstance(v, int) and 1 <= v <= 64,
    "code_classes": lambda v: isinstance(v, int) and 2 <= v <= 256,
    "code_init": lambda v: v in CODE_INITS,
    "generator_gain": lambda v: isinstance(v, (int, float)) and 0 <= v <= 10,
    "min_psnr": lambda v: v is None or (isinstance(v, (int, float)) and OPTIONS["min_psnr"].accepts(v)),
    "percentiles": lambda v: isinstance(v, list) and len(v) == 2 and 0 <= v[0] < v[1] <= 100,
    "package_version": lambda v: isinstance(v, str),
    "training": lambda v: isinstance(v, dict),
}


def invalid_config_values(values: dict) -> list[str]:
    """Names of the entries of ``values`` that are out of range for a :class:`ProtectorConfig`."""
    return [key for key, ok in _VALID_VALUES.items() if key in values and not ok(values[key])]


def check_config_values(values: dict) -> None:
    """Raise :class:`InputError` naming the first entry of ``values`` out of range for a :class:`ProtectorConfig`."""
    for name in invalid_config_values(values):
        if name in OPTIONS:
            OPTIONS[name].check(values[name])  # worded with the option's range
        raise InputError(f"{values[name]!r} is out of range", option=name)


@dataclass
class ProtectorConfig:
    """Everything needed to rebuild and apply a protector (stored in the file's JSON header)."""

    epsilon: float = 4.0  # budget, in 1/255 of the case's intensity window
    band_radius: int = DEFAULT_BAND_RADIUS  # contour band half-width, pixels
    texture_floor: float = DEFAULT_TEXTURE_FLOOR  # lowest texture bound T(p), fraction of epsilon
    texture_window: int = DEFAULT_TEXTURE_WINDOW  # local-std window of the texture bound, pixels
    cdc_theta: float = 0.7  # central difference weight in G_c's encoder
    base_channels: int = 8
    levels: int = 3
    code_period: int = 8  # period (pixels) of the learnable per-label shortcut codes
    code_classes: int = 16  # number of codes: background + labels (label values wrap around)
    # initial codes: "normal" (white noise) or "blobs" (isotropic band-pass texture per label), both
    # tiled on the image grid; "rings" (a profile over the depth below the label's edge: contour-following rings);
    # or "fill" (per label a fixed pixel-level tile, checkerboard or stripes; the contour band outside the label
    # carries its negative)
    code_init: str = "normal"
    # 0: the generators' pre-activations are unbounded; > 0: each is soft-clipped to +-generator_gain, so a
    # code larger than that keeps its sign: the generators adapt the shortcut to the image but cannot overturn it
    generator_gain: float = 0.0
    # visibility floor (dB): every 2D image, and every changed slice of a volume, keeps at least this PSNR;
    # None: no floor (protector files written before the floor existed)
    min_psnr: float | None = DEFAULT_MIN_PSNR
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    package_version: str = __version__
    training: dict = field(default_factory=dict)  # data summary and fitting settings

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> ProtectorConfig:
        """Parse and validate a config; raise InputError naming ``source`` on any problem."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{source}: protector config is not valid JSON ({exc.msg})") from None
        if not isinstance(raw, dict):
            raise InputError(f"{source}: protector config must be a JSON object")
        if raw.get("format") != FORMAT_NAME:
            raise InputError(f"{source}: not a UMedProtect protector (format {raw.get('format')!r})")
        if raw.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"{source}: protector format version {raw.get('format_version')!r} is not supported "
                f"(this UMedProtect reads version {FORMAT_VERSION})"
            )
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise InputError(f"{source}: unknown protector config keys {unknown}")
        bad = invalid_config_values(raw)
        if bad:
            raise InputError(f"{source}: invalid protector config value {bad[0]}={raw[bad[0]]!r}")
        raw.setdefault("min_psnr", None)  # files from before the floor keep their outputs
        if "percentiles" in raw:
            raw["percentiles"] = tuple(raw["percentiles"])
        return cls(**raw)


class Protector(nn.Module):
    """G_c (CDC encoder-decoder on the contour band) + G_t (encoder-decoder under the texture bound).

    Both add a learnable per-label code to their pre-activation: a class-wise shortcut that fitting
    shapes to survive the victim's augmentation, while the generators adapt it to each image. The
    code is a tile on the image grid with period ``code_period``; for ``rings`` codes, a
    periodic profile over each pixel's depth below its label's edge (it follows the organ's shape).
    ``fill`` codes are tiles too, and continue negated into the contour band outside the label, so the
    label's edge is where the tile flips.
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
        else:
            generator = torch.Generator().manual_seed(0)
            codes = torch.randn(c.code_classes, c.code_period, c.code_period, generator=generator)
            self.codes = nn.Parameter(blob_codes(codes) if c.code_init == "blobs" else codes)

    @property
    def divisor(self) -> int:
        return self.contour.divisor

    def code_field(
        self, labels: torch.Tensor, origin: torch.Tensor, depth: torch.Tensor, band_owner: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-pixel code (B,1,H,W) for ``labels`` (B,H,W) whose top-left pixel is at ``origin`` (B,2).

        ``depth`` (B,H,W): each pixel's depth below its label's edge (:func:`regions.edge_depth`),
        used by ``rings`` codes, linearly interpolated on their periodic profile. ``band_owner`` (B,H,W):
        the label owning each contour-band pixel (:func:`regions.region_maps`); ``fill`` codes continue
        there, outside the labels, with the opposite sign.
        """
        n, period = self.codes.shape[0], self.codes.shape[1]
        sign = 1.0
        if self.config.code_init == "fill" and band_owner is not None:
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
    low-resolution simulation, which erase pixel-level patterns (BENCHMARKS.md, "blobs").
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
    them before the anatomy at lower energy than blobs (BENCHMARKS.md, "rings").
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
    """
    half = max(period // 2, 1)
    rows, cols = (torch.arange(period)[:, None] // half) % 2, (torch.arange(period)[None, :] // half) % 2
    tiles = [(rows + cols) % 2, rows.expand(period, period), cols.expand(period, period)]
    codes = [BLOB_GAIN * (1 - 2 * tiles[k % len(tiles)].float()) for k in range(classes - 1)]
    return torch.stack([torch.zeros(period, period), *codes])


def save_protector(protector: Protector, path: str | Path) -> Path:
    """Write the protector atomically as safetensors weights + JSON config."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous().float() for k, v in protector.state_dict().items()}
    metadata = {METADATA_KEY: protector.config.to_json(), DIGEST_KEY: weights_digest(tensors)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over tensor names, shapes and float32 bytes, in name order (detects edited weights)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous().float()
        digest.update(f"{key}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def load_protector(path: str | Path | None = None, device: str | torch.device = "cpu") -> Protector:
    """Load and validate a protector file (default: the bundled one). Never executes file content."""
    path = Path(path) if path is not None else DEFAULT_PROTECTOR_PATH
    source = str(path)
    if not path.is_file():
        raise InputError(f"{source}: protector file not found")
    with open(path, "rb") as handle:
        head = handle.read(9)
    # safetensors: an 8-byte header length (which may well start with 0x80), then the JSON header
    if head[8:9] != b"{" and (head[:1] == b"\x80" or head[:2] == b"PK"):
        raise InputError(f"{source}: pickle/zip-based PyTorch files are refused; protectors must be safetensors")
    try:
        with safe_open(source, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{source}: not a valid safetensors protector file ({exc})") from None
    if METADATA_KEY not in metadata:
        raise InputError(f"{source}: safetensors file has no UMedProtect config")
    protector = Protector(ProtectorConfig.from_json(metadata[METADATA_KEY], source))
    expected = {k: tuple(v.shape) for k, v in protector.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise InputError(
            f"{source}: protector weights do not match its config "
            f"(missing {missing[:3]}, unexpected {extra[:3]}, wrong shape {wrong[:3]})"
        )
    for key, tensor in tensors.items():
        if tensor.dtype != torch.float32 or not bool(torch.isfinite(tensor).all()):
            raise InputError(f"{source}: tensor {key} is not finite float32")
    if metadata.get(DIGEST_KEY) != weights_digest(tensors):
        raise InputError(f"{source}: protector weights were modified after saving (checksum mismatch)")
    protector.load_state_dict(tensors)
    return protector.to(device).eval()


def protector_summary(protector: Protector) -> dict:
    """Config plus parameter count, for reports and manifests."""
    n = sum(p.numel() for p in protector.parameters())
    return {**json.loads(protector.config.to_json()), "parameters": n, "size_mb": round(n * 4 / 2**20, 3)}
