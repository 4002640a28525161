"""Victim architectures: each builds and maps (B,1,64,64) to (B,C,64,64); missing extras are input errors."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from umedprotect.errors import InputError
from umedprotect_eval.victims import VICTIMS, build_victim, victim_spec

PACKAGE_OF = {
    "plainconvunet": "dynamic_network_architectures",
    "resencunet": "dynamic_network_architectures",
    "segresnet": "monai",
    "basicunet": "monai",
}


@pytest.mark.parametrize("name", tuple(VICTIMS))
def test_victim_maps_image_to_class_logits(name):
    package = PACKAGE_OF.get(name)
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install umedprotect[eval])")
    torch.manual_seed(0)
    model = build_victim(name, n_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 3, 64, 64)
    assert torch.isfinite(out).all()
    assert 64 % victim_spec(name).divisor == 0


def test_every_victim_is_known_and_library_ones_are_covered():
    assert "unet" in VICTIMS
    assert set(PACKAGE_OF) == set(VICTIMS) - {"unet", "unet-small"}


def test_small_unet_is_the_unet_with_a_quarter_of_the_weights():
    count = lambda name: sum(p.numel() for p in build_victim(name, 2).parameters())  # noqa: E731
    assert 0.2 < count("unet-small") / count("unet") < 0.3


def test_unknown_victim_is_an_input_error():
    with pytest.raises(InputError, match="unknown victim 'vgg'"):
        build_victim("vgg", 2)


def test_missing_library_is_an_input_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "monai", None)  # makes `import monai...` raise ImportError
    monkeypatch.setitem(sys.modules, "monai.networks.nets", None)
    with pytest.raises(InputError, match=r"umedprotect\[eval\]"):
        build_victim("segresnet", 2)
