"""The panel's parameter node: its limits come from the product's settings table (``umedprotect.settings``).

``umedprotect.settings`` imports nothing heavy, so this module is safe to import when Slicer starts.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from umedprotect.errors import InputError
from umedprotect.settings import CODES, DEVICE_CHOICES, OPTIONS, ProtectionSettings

# the bundled protector's budget and band: left there, the product's defaults apply (the budget raised to the strength)
DEFAULT_EPSILON = 8.0
DEFAULT_BAND_RADIUS = 0
DEFAULT_MIN_PSNR = 50.0  # dB, offered when the visibility floor is switched on


@dataclass(frozen=True)
class Limits:
    """What a spin box bound to a setting accepts."""

    minimum: float | int
    maximum: float | int
    decimals: int = 0  # 0: an integer setting (QSpinBox)
    step: float | int = 1


def limitsOf(name: str, decimals: int = 0, step: float | int = 1) -> Limits:
    """A setting's range as a closed one (an open end moves in by one unit of the last decimal shown)."""
    option = OPTIONS[name]
    smallest = 10.0**-decimals
    return Limits(option.low + smallest if option.low_open else option.low, option.high, decimals, step)


# Parameter name -> limits of its spin box; the free-entry ε takes values like 6.3 (the docs' recommendation).
LIMITS = {
    "epsilon": limitsOf("epsilon", decimals=2, step=0.1),
    "bandRadius": limitsOf("band_radius"),
    "minPsnr": limitsOf("min_psnr", decimals=1, step=0.5),
}


def withinLimits(name: str) -> WithinRange:
    return WithinRange(LIMITS[name].minimum, LIMITS[name].maximum)


@parameterNodeWrapper
class UMedProtectParameterNode:
    """Panel state, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    allSegments: bool = True
    segmentIds: list[str]
    useDefaultProtector: bool = True
    protectorPath: pathlib.Path
    codes: Annotated[str, Choice(list(CODES))] = CODES[0]  # the bundled protector's
    epsilon: Annotated[float, withinLimits("epsilon")] = DEFAULT_EPSILON
    bandRadius: Annotated[int, withinLimits("bandRadius")] = DEFAULT_BAND_RADIUS
    limitVisibility: bool = False
    minPsnr: Annotated[float, withinLimits("minPsnr")] = DEFAULT_MIN_PSNR
    device: Annotated[str, Choice(list(DEVICE_CHOICES))] = OPTIONS["device"].default
    heatmapOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.6
    showProtected: bool = False
    exportPath: pathlib.Path
    previewVolume: vtkMRMLScalarVolumeNode  # reused by every preview of the same input
    protectedVolume: vtkMRMLScalarVolumeNode  # latest result (preview or export), shown by the toggle
    heatmapVolume: vtkMRMLScalarVolumeNode
    fitFromFolder: bool = False
    fitDatasetPath: pathlib.Path
    fitOutputPath: pathlib.Path
    fitSteps: Annotated[int, WithinRange(10, 100000)] = 800


def pathOrNone(path: pathlib.Path | str | None) -> str | None:
    """A path parameter as a string, or None when it is unset (the wrapper stores an empty path as '.')."""
    text = str(path) if path is not None else ""
    return None if text in ("", ".") else text


def protectionSettings(parameters: UMedProtectParameterNode) -> ProtectionSettings:
    """The product's settings for the panel's choices (checked against the settings table)."""
    protector = None if parameters.useDefaultProtector else pathOrNone(parameters.protectorPath)
    if not parameters.useDefaultProtector and protector is None:
        raise InputError("choose a protector file, or use the bundled default protector", option="protector")
    bundled = parameters.useDefaultProtector
    return ProtectionSettings(
        protector=protector,
        codes=parameters.codes if bundled and parameters.codes != CODES[0] else None,
        epsilon=None if bundled and parameters.epsilon == DEFAULT_EPSILON else parameters.epsilon,
        band_radius=None if bundled and parameters.bandRadius == DEFAULT_BAND_RADIUS else parameters.bandRadius,
        min_psnr=parameters.minPsnr if parameters.limitVisibility else None,
        device=parameters.device,
    )
