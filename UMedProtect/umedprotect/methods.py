"""Protection methods by name: (method, settings) -> a case protector, for every front end.

``umed`` is the product's method; installed add-ons register more under the ``umedprotect.methods``
entry-point group (the evaluation side registers the published baselines, for comparison).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from .errors import InputError
from .settings import ProtectionSettings

METHOD_GROUP = "umedprotect.methods"
DEFAULT_METHOD = "umed"
BASELINE_EPSILON = 4.0  # a baseline's budget when none is given
UMED_ONLY = ("protector", "band_radius", "labels", "min_psnr")  # settings a baseline does not take

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
    import torch

    from .devices import describe_devices, resolve_device

    torch.manual_seed(settings.seed)
    device = resolve_device(settings.device)
    device_text = f"{device} ({describe_devices()})"
    if method == DEFAULT_METHOD:
        return _setup_umed(settings, device, device_text, protector)
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
    return MethodSetup(method, case_protector, parameters, None, device_text)


def _setup_umed(settings: ProtectionSettings, device, device_text: str, protector) -> MethodSetup:
    from . import io
    from .array_protection import protect_array
    from .protector import DEFAULT_PROTECTOR_PATH, load_protector, protector_summary

    path = Path(settings.protector) if settings.protector else DEFAULT_PROTECTOR_PATH
    if protector is None:
        protector = load_protector(path, device=device)
        info = {
            "path": "bundled default" if settings.protector is None else str(path),
            "sha256": io.sha256(path),
            "summary": protector_summary(protector),
        }
    else:
        info = {"path": "given", "sha256": None, "summary": protector_summary(protector)}
    config = protector.config
    epsilon = config.epsilon if settings.epsilon is None else settings.epsilon
    band_radius = config.band_radius if settings.band_radius is None else settings.band_radius
    labels = None if settings.labels is None else list(settings.labels)
    min_psnr = config.min_psnr if settings.min_psnr is None else settings.min_psnr
    case_protector = functools.partial(
        protect_array,
        protector=protector,
        epsilon=epsilon,
        band_radius=band_radius,
        label_values=labels,
        min_psnr=min_psnr,
        device=str(device),
        batch_size=settings.batch_size,
    )
    parameters = {
        "epsilon": epsilon,
        "band_radius": band_radius,
        "labels": labels,
        "min_psnr": min_psnr,
        "seed": settings.seed,
    }
    return MethodSetup(DEFAULT_METHOD, case_protector, parameters, info, device_text)
