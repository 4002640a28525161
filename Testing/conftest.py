"""Shared pytest setup: import path, deterministic torch, small synthetic cases."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "UMedProtect"))

torch.set_num_threads(1)


@pytest.fixture
def random_protector():
    """An untrained protector with fixed random weights (fast; its output is not tuned)."""
    from UMedProtectLib.protector import Protector

    torch.manual_seed(0)
    return Protector().eval()


@pytest.fixture
def phantom2d():
    from UMedProtectLib.phantoms import phantom_slice

    return phantom_slice((64, 64), n_lesions=2, rng=0)


@pytest.fixture
def phantom3d():
    from UMedProtectLib.phantoms import phantom_volume

    return phantom_volume((10, 48, 40), n_lesions=2, rng=1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
