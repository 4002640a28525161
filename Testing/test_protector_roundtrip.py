"""Protector files round-trip exactly; fitting runs, is seeded, and records its provenance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from UMedProtectLib.errors import InputError
from UMedProtectLib.fit import FitSettings, fit_protector
from UMedProtectLib.phantoms import phantom_slice
from UMedProtectLib.protect import protect_array
from UMedProtectLib.protector import DEFAULT_PROTECTOR_PATH, ProtectorConfig, load_protector, save_protector
from UMedProtectLib.slices import case_slices

TINY = FitSettings(steps=4, batch_size=2, patch_size=32, min_steps=2, surrogate_channels=4, device="cpu")


def test_save_load_round_trip(tmp_path, random_protector, phantom2d):
    path = save_protector(random_protector, tmp_path / "p.safetensors")
    loaded = load_protector(path)
    assert loaded.config == random_protector.config
    for (k1, v1), (k2, v2) in zip(random_protector.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    image, labels = phantom2d
    a = protect_array(image, labels, random_protector).protected
    b = protect_array(image, labels, loaded).protected
    assert a.tobytes() == b.tobytes()


def test_bundled_default_protector_loads():
    if not DEFAULT_PROTECTOR_PATH.exists():
        pytest.fail("the default protector file is missing from the package")
    protector = load_protector()
    assert protector.config.training, "the default protector must record how it was fitted"


def _samples():
    out = []
    for i in range(3):
        image, labels = phantom_slice((48, 48), 1, i)
        out += case_slices(image, labels, None, f"case{i}")
    return out


def test_fit_is_seeded_and_records_provenance():
    config = ProtectorConfig(base_channels=4, levels=2)
    a, history = fit_protector(_samples(), config, TINY)
    b, _ = fit_protector(_samples(), config, TINY)
    assert len(history) == TINY.steps
    for v1, v2 in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(v1, v2)
    assert a.config.training["cases"] == ["case0", "case1", "case2"]
    assert a.config.training["steps_run"] == TINY.steps
    assert np.isfinite(history[-1]["generator_loss"])


def test_fit_changes_the_generators():
    config = ProtectorConfig(base_channels=4, levels=2)
    torch.manual_seed(TINY.seed)
    from UMedProtectLib.protector import Protector

    initial = Protector(config).state_dict()
    fitted, _ = fit_protector(_samples(), config, TINY)
    changed = [not torch.equal(initial[k], v) for k, v in fitted.state_dict().items()]
    assert any(changed)


def test_written_files_get_the_usual_permissions(tmp_path, random_protector):
    import os

    umask = os.umask(0o022)
    try:
        path = save_protector(random_protector, tmp_path / "p.safetensors")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_targeted_objective_freezes_a_pretrained_surrogate_and_fits():
    from dataclasses import replace

    config = ProtectorConfig(base_channels=4, levels=2)
    settings = replace(TINY, objective="targeted", pretrain_steps=2)
    fitted, history = fit_protector(_samples(), config, settings)
    assert len(history) == TINY.steps and fitted.config.training["settings"]["objective"] == "targeted"
    assert len({r["surrogate_loss"] for r in history}) == 1  # the surrogate no longer trains
    with pytest.raises(InputError, match="objective"):
        fit_protector(_samples(), config, replace(TINY, objective="max-max"))
