"""benchmarks/label_rings.py: rings that tell the labels apart, label 1 kept as in the former default."""

from __future__ import annotations

import pytest
import torch

from benchmarks import label_rings
from umedprotect.protector import load_protector
from umedprotect.protector_file import RINGS_PROTECTOR_PATH


def _codes_at_depths(protector, label: int, depths: torch.Tensor) -> torch.Tensor:
    labels = torch.full((1, 1, len(depths)), label)
    return protector.code_field(labels, torch.zeros(1, 2, dtype=torch.long), depths[None, None]).flatten()


def test_label_one_keeps_the_default_rings_and_the_others_differ_by_sign_and_period(tmp_path):
    assert label_rings.main([str(tmp_path)]) == 0
    default = load_protector(label_rings.RINGS_DEFAULT)
    variant = load_protector(tmp_path / "rings_sign_period.safetensors")
    depths = torch.arange(0, 30, 0.5)
    first = _codes_at_depths(variant, 1, depths)
    assert torch.allclose(first, _codes_at_depths(default, 1, depths), atol=1e-5)
    assert torch.allclose(_codes_at_depths(variant, 2, depths), -first, atol=1e-5)
    third = _codes_at_depths(variant, 3, depths)
    assert torch.allclose(third[:-20], third[20:], atol=1e-5)  # period 10 (20 half-pixel steps)
    assert not torch.allclose(third[:-12], third[12:], atol=0.1)  # not the default's 6
    assert torch.allclose(_codes_at_depths(variant, 5, depths), first, atol=1e-5)  # the scheme repeats
    sign = load_protector(tmp_path / "rings_sign.safetensors")
    assert torch.allclose(_codes_at_depths(sign, 3, depths), _codes_at_depths(default, 3, depths), atol=1e-5)
    assert torch.allclose(_codes_at_depths(sign, 4, depths), -_codes_at_depths(default, 4, depths), atol=1e-5)


def test_a_file_as_the_output_folder_is_a_usage_error(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        label_rings.main([str(target)])
    assert exit_info.value.code == 2 and "is not a folder" in capsys.readouterr().err


def test_periods_more_than_twice_apart_keep_four_labels_distinct_under_the_victims_scaling(tmp_path):
    argv = [str(tmp_path), "--base", str(RINGS_PROTECTOR_PATH), "--classes", "5", "--variant", "period_6_14"]
    assert label_rings.main(argv) == 0
    variant = load_protector(tmp_path / "rings_period_6_14.safetensors")
    bundled = load_protector(RINGS_PROTECTOR_PATH)
    depths = torch.arange(0, 42, 0.5)
    profiles = {label: _codes_at_depths(variant, label, depths) for label in range(1, 5)}
    assert torch.allclose(profiles[1], _codes_at_depths(bundled, 1, depths), atol=1e-6)  # the liver keeps its rings
    assert torch.allclose(profiles[3], -profiles[1]) and torch.allclose(profiles[4], -profiles[2])
    for scale in torch.linspace(0.7, 1.4, 8):  # a label scaled by s has its depths scaled by s
        for a in range(1, 5):
            scaled = _codes_at_depths(variant, a, depths / scale)
            for b in set(range(1, 5)) - {a}:
                assert torch.corrcoef(torch.stack([scaled, profiles[b]]))[0, 1] < 0.5, (a, b, float(scale))
