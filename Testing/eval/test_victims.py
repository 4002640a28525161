"""Victim architectures: each builds and maps (B,1,64,64) to (B,C,64,64) (3D victims: (B,1,32,32,32) to
(B,C,32,32,32)); missing extras are input errors."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from umedprotect.errors import InputError
from umedprotect_eval.victims import VICTIMS, build_victim, victim_spec

PACKAGE_OF = {
    "plainconvunet": "dynamic_network_architectures",
    "plainconvunet3d": "dynamic_network_architectures",
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
    size = (64, 64) if victim_spec(name).spatial_dims == 2 else (32, 32, 32)
    with torch.no_grad():
        out = model(torch.randn(2, 1, *size))
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()
    assert size[0] % victim_spec(name).divisor == 0


def test_every_victim_is_known_and_library_ones_are_covered():
    assert "unet" in VICTIMS
    assert set(PACKAGE_OF) == set(VICTIMS) - {"unet", "unet-small", "unet3d"}


def test_small_unet_is_the_unet_with_a_quarter_of_the_weights():
    def count(name):
        return sum(p.numel() for p in build_victim(name, 2).parameters())

    assert 0.2 < count("unet-small") / count("unet") < 0.3


def test_unknown_victim_is_an_input_error():
    with pytest.raises(InputError, match="unknown victim 'vgg'"):
        build_victim("vgg", 2)


def test_missing_library_is_an_input_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "monai", None)  # makes `import monai...` raise ImportError
    monkeypatch.setitem(sys.modules, "monai.networks.nets", None)
    with pytest.raises(InputError, match=r"umedprotect\[eval\]"):
        build_victim("segresnet", 2)
