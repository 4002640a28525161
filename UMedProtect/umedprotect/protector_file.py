"""The protector file format, read without torch: config, weights and their checks.

A protector file is a safetensors file: the generators' weights plus the JSON config in the
header metadata. Reading parses data only and never executes code from the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from . import __version__
from .errors import InputError
from .intensity import DEFAULT_PERCENTILES
from .regions import DEFAULT_BAND_RADIUS, DEFAULT_TEXTURE_FLOOR, DEFAULT_TEXTURE_WINDOW
from .settings import OPTIONS

FORMAT_NAME = "umedprotect-protector"
FORMAT_VERSION = 1
METADATA_KEY = "umedprotect"
DIGEST_KEY = "umedprotect_weights_sha256"
DEFAULT_PROTECTOR_PATH = Path(__file__).with_name("data") / "default_protector.safetensors"
# the bundled protector for cases made on an nnU-Net victim's grid (ProtectionSettings.victim_spacing): dots
VICTIM_GRID_PROTECTOR_PATH = Path(__file__).with_name("data") / "victim_grid_protector.safetensors"
# the bundled protector of contour-following rings (ProtectionSettings.codes "rings"), on any grid
RINGS_PROTECTOR_PATH = Path(__file__).with_name("data") / "rings_protector.safetensors"
BUNDLED_PROTECTOR = "bundled default"  # the protector path reports and manifests record for it
BUNDLED_GRID_PROTECTOR = "bundled victim grid"  # ... and for the one at VICTIM_GRID_PROTECTOR_PATH
BUNDLED_RINGS_PROTECTOR = "bundled rings"  # ... and for the one at RINGS_PROTECTOR_PATH
BUNDLED_FILL_RINGS = "bundled fill+rings"  # ... and for the default's and the rings' changes added up
BUNDLED_SMOOTH = "bundled smooth"  # ... and for the smooth code (umedprotect.smoothing), which needs no file
BUNDLED_NAMES = (BUNDLED_PROTECTOR, BUNDLED_GRID_PROTECTOR, BUNDLED_RINGS_PROTECTOR, BUNDLED_FILL_RINGS, BUNDLED_SMOOTH)
CODE_INITS = ("normal", "blobs", "rings", "fill", "dots")
BAND_NEGATED_CODES = ("fill", "dots")  # code inits that continue, negated, into the contour band outside the label
DEFAULT_MIN_PSNR = 50.0  # dB: the visibility floor of new protectors (METHOD.md: the paper's 50 dB)
GENERATOR_HEADS = ("contour.head.weight", "contour.head.bias", "texture.head.weight", "texture.head.bias")


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
    # "fill" (per label a fixed pixel-level tile, checkerboard or stripes; the contour band outside the label
    # carries its negative); or "dots" (as fill, with sampled cosines: at period 4 a sparse lattice of +-1 dots,
    # or every other row or column, which stays coherent when an image is resampled)
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

    def code_shape(self) -> tuple[int, ...]:
        """Shape of the per-label codes: a profile over the edge depth for rings, else a square tile."""
        if self.code_init == "rings":
            return (self.code_classes, self.code_period)
        return (self.code_classes, self.code_period, self.code_period)


@dataclass(frozen=True)
class ProtectorFile:
    """A protector as read from its file: the checked config and float32 weights (numpy), by name."""

    config: ProtectorConfig
    weights: Mapping[str, np.ndarray]
    source: str

    @property
    def generators_silent(self) -> bool:
        """True when both generators' 1x1 heads are all zero: their output is zero, the codes alone protect."""
        return all(not self.weights[key].any() for key in GENERATOR_HEADS)

    def summary(self) -> dict:
        """Config plus parameter count, for reports and manifests."""
        n = sum(int(w.size) for w in self.weights.values())
        return {**json.loads(self.config.to_json()), "parameters": n, "size_mb": round(n * 4 / 2**20, 3)}


def weights_digest(weights: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over tensor names, shapes and float32 bytes, in name order (detects edited weights)."""
    digest = hashlib.sha256()
    for key in sorted(weights):
        array = np.ascontiguousarray(weights[key], dtype=np.float32)
        digest.update(f"{key}:{tuple(array.shape)};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def read_protector_file(path: str | Path | None = None) -> ProtectorFile:
    """Read and check a protector file (default: the bundled one): its config, that every tensor is finite
    float32, that the weights are those saved (checksum), and the shapes of the codes and generator heads.
    The networks' other weights are checked against the config when the networks are built."""
    from safetensors import SafetensorError, safe_open

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
        with safe_open(source, framework="numpy") as handle:
            metadata = handle.metadata() or {}
            weights = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise InputError(f"{source}: not a valid safetensors protector file ({exc})") from None
    if METADATA_KEY not in metadata:
        raise InputError(f"{source}: safetensors file has no UMedProtect config")
    config = ProtectorConfig.from_json(metadata[METADATA_KEY], source)
    expected = {"codes": config.code_shape(), **{key: None for key in GENERATOR_HEADS}}
    missing = [key for key in expected if key not in weights]
    wrong = [key for key, shape in expected.items() if key in weights and shape not in (None, weights[key].shape)]
    if missing or wrong:
        raise InputError(
            f"{source}: protector weights do not match its config (missing {missing}, wrong shape {wrong})"
        )
    for key, array in weights.items():
        if array.dtype != np.float32 or not np.isfinite(array).all():
            raise InputError(f"{source}: tensor {key} is not finite float32")
    if metadata.get(DIGEST_KEY) != weights_digest(weights):
        raise InputError(f"{source}: protector weights were modified after saving (checksum mismatch)")
    return ProtectorFile(config, weights, source)
