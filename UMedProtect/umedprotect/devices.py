"""Compute device selection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import InputError
from .settings import DEVICE_CHOICES

if TYPE_CHECKING:
    import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an input error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"{name}: no CUDA GPU is available (choose cpu or auto)", option="device")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"{name!r} is not one of {', '.join(DEVICE_CHOICES)}", option="device")


def describe_devices() -> str:
    """One line naming the devices found, for logs and the Slicer panel."""
    import torch

    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)}"
    return "CPU only (no CUDA GPU found)"


def describe_device(device: torch.device) -> str:
    """The device a run uses, for its console line: ``cuda:0 (NVIDIA H200)`` or ``cpu (2 threads)``."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({torch.get_num_threads()} threads)"
