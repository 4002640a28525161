"""docs/extending.md: its examples run against the real API and do what the text says."""

from __future__ import annotations

import argparse
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import ROOT, write_nnunet_dataset

from umedprotect import objectives
from umedprotect.fitting import FitSettings, fit_protector
from umedprotect.phantoms import phantom_slice, phantom_volume
from umedprotect.protector import ProtectorConfig
from umedprotect.slices import case_slices
from umedprotect_eval import defenses, victims
from umedprotect_eval.evaluation import load_evaluation_data
from umedprotect_eval.training import TrainSettings

DOC = (ROOT / "docs" / "extending.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC, flags=re.S)


@pytest.fixture(autouse=True)
def _own_registries(monkeypatch):
    """The examples register into copies of the registries, dropped after each test."""
    monkeypatch.setattr(victims, "VICTIMS", dict(victims.VICTIMS))
    monkeypatch.setattr(objectives, "OBJECTIVES", dict(objectives.OBJECTIVES))
    monkeypatch.setattr(defenses, "DEFENSES", dict(defenses.DEFENSES))


def example(defining: str) -> dict:
    """The namespace of the doc's one Python example that defines or registers ``defining``."""
    found = [code for code in EXAMPLES if re.search(rf"(class|def) {defining}\b|\"{defining}\"", code)]
    assert len(found) == 1, f"{defining}: {len(found)} examples"
    namespace: dict = {}
    exec(compile(found[0], f"docs/extending.md:{defining}", "exec"), namespace)
    return namespace


@pytest.fixture
def data(tmp_path):
    clean = write_nnunet_dataset(tmp_path / "clean", n_train=2, n_test=1, shape=(2, 32, 32), n_lesions=1)
    return load_evaluation_data(clean, clean)


SHORT = TrainSettings(epochs=3, iterations_per_epoch=1, batch_size=2, patch_size=32, device="cpu")


def test_a_registered_victim_is_built_and_trained_by_name(data):
    example("unet-deep")
    assert victims.victim_spec("unet-deep").divisor == 16
    assert victims.build_victim("unet-deep", 3)(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)
    from umedprotect_eval.training import train_victim

    assert len(train_victim(data.protected, data.test, "unet-deep", data.n_classes, SHORT).curve) == 3


def test_the_training_experiment_records_losses_and_stops_when_the_test_dsc_stalls(data):
    trainer = example("EarlyStopped")["EarlyStopped"](data.protected, data.test, "unet-small", data.n_classes, SHORT)
    run = trainer.run()
    assert len(trainer.losses) == len(run.curve) * SHORT.iterations_per_epoch
    assert len(run.curve) < SHORT.epochs or all(b > a for a, b in zip(run.curve, run.curve[1:]))


def test_the_objective_is_fitted_by_name_with_a_frozen_pretrained_surrogate():
    example("ErrorMaximising")
    samples = []
    for i in range(2):
        samples += case_slices(*phantom_slice((48, 48), 1, i), None, f"case{i}")
    settings = FitSettings(steps=2, batch_size=2, patch_size=32, surrogate_channels=4, pretrain_steps=2, device="cpu")
    fitted, history = fit_protector(
        samples, ProtectorConfig(base_channels=4, levels=2), replace(settings, objective="error-max")
    )
    assert fitted.config.training["settings"]["objective"] == "error-max"
    assert len(history) == 2 and len({r["surrogate_loss"] for r in history}) == 1  # frozen
    assert all(r["generator_loss"] < 0 for r in history)  # minus the surrogate's loss


def test_the_defenses_are_applied_by_name(data):
    example("longer")
    slices, settings = defenses.defend("median", data.protected, data.clean, SHORT)
    assert len(slices) == len(data.protected) and settings == SHORT
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(slices, data.protected))
    slices, settings = defenses.defend("longer", data.protected, data.clean, SHORT)
    assert slices == data.protected and settings.epochs == 2 * SHORT.epochs


def test_the_method_protects_the_roi_within_its_budget():
    protect = example("build_case_protector")["build_case_protector"]("sign", None, 4.0, "cpu", 0)
    image, labels = phantom_volume((4, 32, 32), 1, 0)
    result = protect(image, labels, spacing=(3.0, 1.0, 1.0))
    changed = result.protected != image
    assert changed.any() and not changed[labels == 0].any()
    assert np.abs(result.change).max() <= result.budget and result.slice_axis == 0


def test_the_subcommand_parses_and_runs(tmp_path, capsys):
    command = example("add_parser")
    parser = argparse.ArgumentParser()
    command["add_parser"](parser.add_subparsers(dest="command"))
    dataset = write_nnunet_dataset(tmp_path / "d", n_train=2, n_test=0, shape=(2, 16, 16))
    args = parser.parse_args(["count", str(dataset)])
    assert args.func(args) == 0
    assert capsys.readouterr().out == f"{dataset}: 2 training cases\n"
