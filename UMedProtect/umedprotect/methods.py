"""Protection methods by name: (method, settings) -> a case protector, for every front end.

``umed`` is the product's method; installed add-ons register more under the ``umedprotect.methods``
entry-point group (the evaluation side registers the published baselines, for comparison).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from .errors import InputError
from .settings import FILL_RINGS_FILL_MIN_PSNR, ProtectionSettings

METHOD_GROUP = "umedprotect.methods"
DEFAULT_METHOD = "umed"
BASELINE_EPSILON = 4.0  # a baseline's budget when none is given
# settings a baseline does not take
UMED_ONLY = (
    "protector",
    "codes",
    "band_radius",
    "labels",
    "victim_spacing",
    "strength",
    "victim_normalisation",
)
CODES_ONLY = "none needed: the protector's generators are silent, its codes are applied on the CPU"
SMOOTH_ONLY = "none needed: the smooth code is computed on the CPU"

CaseProtector = Callable[..., object]  # (image, labels, spacing=None, ...) -> ProtectionResult


@dataclass(frozen=True)
class MethodSetup:
    """A ready case protector with what reports record about it."""

    method: str
    case_protector: CaseProtector
    parameters: dict  # the settings in effect, as recorded in reports and manifests
    protector_info: dict | None  # UMed's protector file: path, SHA-256, summary
    device: str  # the device used, with a description of what was found


def method_names() -> list[str]:
    """``umed`` and the methods of installed add-ons."""
    return [DEFAULT_METHOD, *sorted({ep.name for ep in entry_points(group=METHOD_GROUP)} - {DEFAULT_METHOD})]


def setup_method(
    method: str, settings: ProtectionSettings, dataset=None, protector=None, method_settings=None
) -> MethodSetup:
    """The case protector of ``method`` with ``settings``.

    ``dataset`` (an ``nnunet.NnUNetDataset``) is what surrogate-based baselines train on;
    ``protector`` overrides ``settings.protector`` with an already loaded UMed protector;
    ``method_settings`` go to a baseline's builder as its ``settings`` (default: the builder's own).
    """
    if method == DEFAULT_METHOD:
        if settings.codes == "fill+rings" and protector is None:
            return _setup_fill_rings(settings)
        if settings.codes == "smooth" and protector is None:
            return _setup_smooth(settings)
        return _setup_umed(settings, protector)
    import torch

    from .devices import resolve_device

    torch.manual_seed(settings.seed)
    device = resolve_device(settings.device)
    device_text = device_description(method, settings)
    found = [ep for ep in entry_points(group=METHOD_GROUP) if ep.name == method]
    if not found:
        raise InputError(f"unknown method {method!r} (choose from {', '.join(method_names())})", option="method")
    for name in UMED_ONLY:
        if getattr(settings, name) is not None:
            raise InputError(f"applies to the umed method only, not to the {method} baseline", option=name)
    epsilon = BASELINE_EPSILON if settings.epsilon is None else settings.epsilon
    build = found[0].load()
    extra = {} if method_settings is None else {"settings": method_settings}
    case_protector = build(method, dataset, epsilon, str(device), settings.seed, **extra)
    parameters = {"epsilon": epsilon, "labels": None, "seed": settings.seed}
    if settings.min_psnr is not None:
        case_protector = _held_to_floor(case_protector, settings.min_psnr)
        parameters["min_psnr"] = settings.min_psnr
    return MethodSetup(method, case_protector, parameters, None, device_text)


def _held_to_floor(case_protector: CaseProtector, min_psnr: float) -> CaseProtector:
    """``case_protector`` whose changes are scaled down until every image or slice is at ``min_psnr`` or more,
    as UMed's are: a baseline compared at the PSNR of a UMed run."""
    from .array_protection import hold_to_floor

    def protect(image, labels, spacing=None, **options):
        return hold_to_floor(case_protector(image, labels, spacing=spacing, **options), min_psnr)

    return protect


def device_description(method: str, settings: ProtectionSettings, protector=None) -> str:
    """What a run computes on, for its console line and records: ``cuda:0 (NVIDIA H200)``, ``cpu (2 threads)``,
    or :data:`CODES_ONLY` (nothing to run: ``umed`` with a protector whose generators are silent, on ``auto`` or
    ``cpu``; torch is then not even imported), :data:`SMOOTH_ONLY` for the smooth code."""
    if method == DEFAULT_METHOD and settings.codes == "smooth" and protector is None:
        return SMOOTH_ONLY
    if method == DEFAULT_METHOD and settings.device in ("auto", "cpu"):
        from .protector_file import read_protector_file

        if (protector or read_protector_file(settings.protector or bundled_protector_path(settings))).generators_silent:
            return CODES_ONLY
    from .devices import describe_device, resolve_device

    return describe_device(resolve_device(settings.device))


def _bundled_protector(settings: ProtectionSettings) -> tuple[Path, str]:
    """The bundled protector for ``settings`` and the name records give it: the rings when chosen, else fill, or
    the dots made on the victim's grid when it is given."""
    from . import protector_file as files

    if settings.codes == "rings":
        return files.RINGS_PROTECTOR_PATH, files.BUNDLED_RINGS_PROTECTOR
    if settings.victim_spacing is not None:
        return files.VICTIM_GRID_PROTECTOR_PATH, files.BUNDLED_GRID_PROTECTOR
    return files.DEFAULT_PROTECTOR_PATH, files.BUNDLED_PROTECTOR


def bundled_protector_path(settings: ProtectionSettings) -> Path:
    """The file of the bundled protector for ``settings``."""
    return _bundled_protector(settings)[0]


def bundled_protector_name(settings: ProtectionSettings) -> str:
    """What reports and manifests record as the path of :func:`bundled_protector_path`."""
    return _bundled_protector(settings)[1]


def _setup_fill_rings(settings: ProtectionSettings) -> MethodSetup:
    """Both bundled codes on every case: the fill codes (``--epsilon`` sets their budget) held to
    :data:`FILL_RINGS_FILL_MIN_PSNR`, for victims trained without augmentation; the rings held to the rest of the
    floor's energy, for victims trained with it; their sum held to the floor."""
    from .protector_file import BUNDLED_FILL_RINGS, DEFAULT_MIN_PSNR

    min_psnr = DEFAULT_MIN_PSNR if settings.min_psnr is None else settings.min_psnr
    rest = 10 ** (-min_psnr / 10) - 10 ** (-FILL_RINGS_FILL_MIN_PSNR / 10)
    rings_min_psnr = round(-10 * math.log10(rest), 2)
    fill = _setup_umed(dataclasses.replace(settings, codes=None, min_psnr=FILL_RINGS_FILL_MIN_PSNR), None)
    rings = _setup_umed(dataclasses.replace(settings, codes="rings", epsilon=None, min_psnr=rings_min_psnr), None)
    parameters = {
        **fill.parameters,
        "codes": settings.codes,
        "min_psnr": min_psnr,
        "fill_min_psnr": FILL_RINGS_FILL_MIN_PSNR,
        "rings_min_psnr": rings_min_psnr,
        "rings_epsilon": rings.parameters["epsilon"],
    }
    parts = [fill.protector_info, rings.protector_info]
    info = {
        "path": BUNDLED_FILL_RINGS,
        "sha256": hashlib.sha256(" ".join(part["sha256"] for part in parts).encode()).hexdigest(),
        "parts": parts,
    }
    case_protector = functools.partial(_protect_with_both, fill.case_protector, rings.case_protector, min_psnr)
    return MethodSetup(DEFAULT_METHOD, case_protector, parameters, info, fill.device)


def _protect_with_both(fill: CaseProtector, rings: CaseProtector, min_psnr: float, image, labels, **options):
    """The fill codes' and the rings' changes of one case added up and held to ``min_psnr``."""
    from .array_protection import combine_protections

    parts = [fill(image, labels, **options), rings(image, labels, **options)]
    scales = {
        f"{name}_change_scale": part.metrics.get("change_scale", 1.0) for name, part in zip(("fill", "rings"), parts)
    }
    return combine_protections(parts, min_psnr, **scales)


def _setup_smooth(settings: ProtectionSettings) -> MethodSetup:
    """The smooth code (:mod:`smoothing`): each label smoothed within itself, capped at ``--epsilon`` (default
    :data:`smoothing.SMOOTH_EPSILON`) and held to the floor; no file, no victim grid (a smooth region stays one when
    nnU-Net resamples it)."""
    from .protector_file import BUNDLED_SMOOTH, DEFAULT_MIN_PSNR
    from .smoothing import SMOOTH_EPSILON, SMOOTH_SIGMA, protect_smoothed

    epsilon = SMOOTH_EPSILON if settings.epsilon is None else settings.epsilon
    min_psnr = DEFAULT_MIN_PSNR if settings.min_psnr is None else settings.min_psnr
    labels = None if settings.labels is None else list(settings.labels)
    case_protector = functools.partial(
        protect_smoothed, epsilon=epsilon, min_psnr=min_psnr, label_values=labels, sigma=SMOOTH_SIGMA
    )
    parameters = {
        "epsilon": epsilon,
        "band_radius": 0,
        "labels": labels,
        "min_psnr": min_psnr,
        "strength": None,
        "seed": settings.seed,
        "codes": settings.codes,
        "smooth_sigma": SMOOTH_SIGMA,
    }
    summary = {"codes": settings.codes, "smooth_sigma": SMOOTH_SIGMA}
    info = {"path": BUNDLED_SMOOTH, "sha256": hashlib.sha256(repr(sorted(summary.items())).encode()).hexdigest()}
    return MethodSetup(DEFAULT_METHOD, case_protector, parameters, {**info, "summary": summary}, SMOOTH_ONLY)


def _setup_umed(settings: ProtectionSettings, protector) -> MethodSetup:
    from . import io
    from .array_protection import protect_array
    from .protector_file import ProtectorFile, read_protector_file

    path = Path(settings.protector) if settings.protector else bundled_protector_path(settings)
    if protector is None:
        protector = read_protector_file(path)
        info = {
            "path": bundled_protector_name(settings) if settings.protector is None else str(path),
            "sha256": io.sha256(path),
            "summary": protector.summary(),
        }
    else:
        from .protector import as_protector_file

        info = {"path": "given", "sha256": None, "summary": as_protector_file(protector).summary()}
    device_text = device_description(DEFAULT_METHOD, settings, protector)
    if device_text != CODES_ONLY and isinstance(protector, ProtectorFile):
        from .protector import build_protector

        protector = build_protector(protector)  # once, not for every case
    config = protector.config
    epsilon = config.epsilon if settings.epsilon is None else settings.epsilon
    band_radius = config.band_radius if settings.band_radius is None else settings.band_radius
    labels = None if settings.labels is None else list(settings.labels)
    min_psnr = config.min_psnr if settings.min_psnr is None else settings.min_psnr
    normalisation = settings.victim_normalisation or "zscore"
    strength = settings.strength
    if strength is None:
        from .victim_units import STRENGTHS

        strength = STRENGTHS[normalisation] if settings.epsilon is None else None  # a given budget is kept
    strength = strength or None
    case_protector = functools.partial(
        protect_array,
        protector=protector,
        epsilon=epsilon,
        band_radius=band_radius,
        label_values=labels,
        min_psnr=min_psnr,
        device=settings.device,
        batch_size=settings.batch_size,
        victim_spacing=settings.victim_spacing,
        strength=strength,
        victim_normalisation=normalisation,
    )
    parameters = {
        "epsilon": epsilon,
        "band_radius": band_radius,
        "labels": labels,
        "min_psnr": min_psnr,
        "strength": strength,
        "seed": settings.seed,
    }
    if strength is not None:
        parameters["victim_normalisation"] = normalisation
    if settings.codes is not None:
        parameters["codes"] = settings.codes
    if settings.victim_spacing is not None:
        parameters["victim_spacing"] = settings.recorded()["victim_spacing"]
    return MethodSetup(DEFAULT_METHOD, case_protector, parameters, info, device_text)
