"""The checkpoints an attacker keeps (final, nnU-Net's validation pick) beside the oracle, the validation split,
the convergence warning and the augmentation regimes of ``evaluate``."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from conftest import tiny_evaluate_argv, write_nnunet_dataset

from umedprotect.augment import (
    NNUNET_AUGMENTATION,
    NNUNET_LIKE_AUGMENTATION,
    NO_AUGMENTATION,
)
from umedprotect.cli import main
from umedprotect.slices import case_slices
from umedprotect_eval.cli import verdict_line
from umedprotect_eval.evaluation import (
    CONVERGENCE_TOLERANCE,
    convergence_gain,
    convergence_warnings,
    evaluate,
    split,
    validation_split,
)
from umedprotect_eval.training import TrainingRun, TrainSettings, VictimTrainer, nnunet_checkpoint

TINY = TrainSettings(epochs=2, iterations_per_epoch=1, batch_size=2, patch_size=32, device="cpu")

# Scripted scores per epoch: test DSC, validation DSC, and the two labels' test DSC.
CLEAN = TrainingRun(
    "unet",
    [0.5, 0.8, 0.9, 0.88],
    0.0,
    train_curve=[0.9] * 4,
    validation_curve=[0.4, 0.7, 0.9, 0.3],
    label_curve=[[0.5, 0.5], [0.8, 0.8], [0.9, 0.9], [0.9, 0.86]],
)
PROTECTED = TrainingRun(
    "unet",
    [0.6, 0.3, 0.05, 0.02],
    0.0,
    train_curve=[0.95] * 4,
    clean_train_curve=[0.1] * 4,
    validation_curve=[0.5, 0.8, 0.95, 0.97],
    label_curve=[[0.6, 0.6], [0.2, 0.4], [0.1, 0.0], [0.0, 0.04]],
)


def test_each_rule_keeps_its_checkpoint():
    assert [PROTECTED.epoch(rule) for rule in ("final", "nnunet", "oracle")] == [4, 4, 1]
    assert [CLEAN.epoch(rule) for rule in ("final", "nnunet", "oracle")] == [4, 3, 3]
    assert (PROTECTED.dsc("nnunet"), CLEAN.dsc("nnunet")) == (0.02, 0.9)
    assert PROTECTED.dsc_by_label("final") == [0.0, 0.04]
    assert PROTECTED.dsc_by_label("oracle") == [0.6, 0.6]  # each label at its own best epoch
    with pytest.raises(ValueError, match="unknown checkpoint rule"):
        PROTECTED.epoch("last")
    with pytest.raises(ValueError, match="needs validation cases"):
        TrainingRun("unet", [0.1], 0.0).epoch("nnunet")
    assert PROTECTED.to_dict()["nnunet_epoch"] == 4 and "nnunet_epoch" not in TrainingRun("unet", [0.1], 0.0).to_dict()


def test_nnunet_keeps_the_best_moving_average_not_a_one_epoch_spike():
    spike_then_plateau = [0.2, 0.9, 0.3, 0.6, 0.6, 0.6, 0.6]  # moving averages 0.2, 0.27, 0.273, 0.306, ... 0.386
    assert nnunet_checkpoint(spike_then_plateau) == 7
    assert nnunet_checkpoint(spike_then_plateau[:4]) == 4
    assert nnunet_checkpoint([0.5, 0.5, 0.5]) == 1  # only a higher average replaces the kept checkpoint
    assert nnunet_checkpoint([0.5, math.nan, 0.9]) == 1  # no score counts as 0: 0.5, 0.45, 0.495
    assert nnunet_checkpoint([math.nan, 0.1]) == 2
    with pytest.raises(ValueError, match="no validation scores"):
        nnunet_checkpoint([])


GIVEN: list[dict] = []  # what each ScriptedTrainer was given


class ScriptedTrainer(VictimTrainer):
    """Returns the scripted runs (clean data: CLEAN; protected: PROTECTED) and records what it was given."""

    def run(self, progress=None, run_name=""):
        GIVEN.append(
            {
                "train": {s.case_id for s in self.train},
                "validation": {s.case_id for s in self.validation},
                "augment": self.settings.augment,
                "protected": "protected" in run_name,
            }
        )
        return PROTECTED if "protected" in run_name else CLEAN


@pytest.fixture
def datasets(tmp_path):
    clean = write_nnunet_dataset(tmp_path / "clean", n_train=5, n_test=1, shape=(32, 32), n_lesions=2)
    return clean, write_nnunet_dataset(tmp_path / "protected", n_train=5, n_test=1, shape=(32, 32), n_lesions=2)


def test_evaluate_reports_the_three_ratios_from_a_validation_split_of_each_victims_own_data(datasets, monkeypatch):
    GIVEN.clear()
    report = evaluate(*datasets, settings=TINY, trainer=ScriptedTrainer)
    row = report["summary"][0]
    assert row["ratio_final"] == pytest.approx(0.02 / 0.88)
    assert row["ratio_nnunet"] == pytest.approx(0.02 / 0.9)  # protected epoch 4 vs clean epoch 3
    assert row["ratio_best"] == pytest.approx(0.6 / 0.9)  # the oracle
    assert (row["clean_nnunet_epoch"], row["protected_nnunet_epoch"]) == (3, 4)
    assert row["ratio_nnunet_by_label"] == {"lesion1": 0.0, "lesion2": pytest.approx(0.04 / 0.9)}
    assert report["validation_cases"] == ["case004"] and report["train_cases"] == 5
    clean_run, protected_run = GIVEN
    assert clean_run["validation"] == protected_run["validation"] == {"case004"}  # by case, the same for both
    assert clean_run["train"] == protected_run["train"] == {"case000", "case001", "case002", "case003"}
    assert verdict_line(report["summary"]) == (
        "stopped 1 of 1 victims (ratio <= 0.10) at the final checkpoint, 1 of 1 at the one nnU-Net keeps "
        "(0 of 1 at the oracle's best epoch)"
    )
    json.dumps(report)


def test_a_single_case_holds_out_a_block_of_its_last_labelled_slices():
    labels = np.zeros((10, 8, 8), np.uint8)
    labels[2:8, 2:5, 2:5] = 1  # slices 2..7 are labelled
    samples = case_slices(np.zeros((10, 8, 8), np.float32), labels, None, "only", roi_only=False)
    held = validation_split(samples)
    assert held == {("only", i) for i in (7, 8, 9)}  # a fifth of the 6 labelled slices (1), then the rest
    train, validation = split(samples, held)
    assert [s.index for s in train] == list(range(7)) and [s.index for s in validation] == [7, 8, 9]
    one_slice = case_slices(np.zeros((8, 8), np.float32), labels[2], None, "flat", roi_only=False)
    assert validation_split(one_slice) == set()  # nothing can be held out: no nnU-Net rule


def test_case_split_is_deterministic_and_leaves_cases_to_train_on():
    def cases(n):
        return [
            s
            for k in range(n)
            for s in case_slices(np.zeros((4, 4), np.float32), np.ones((4, 4), np.uint8), None, f"c{k}", roi_only=False)
        ]

    assert len({case for case, _ in validation_split(cases(10))}) == 2
    assert validation_split(cases(10)) == validation_split(cases(10)[::-1])
    assert len(validation_split(cases(2))) == 1


def test_convergence_gain_and_warning():
    assert convergence_gain([0.1, 0.5, 0.8, 0.85, 0.86, 0.86, 0.87, 0.87, 0.87, 0.87]) == pytest.approx(0.0)
    rising = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9]
    assert convergence_gain(rising) == pytest.approx(0.9 - 0.8)  # the last fifth (2 epochs) over the rest
    assert math.isnan(convergence_gain([0.2, 0.5]))  # too short to tell
    rows = [{"victim": "unet", "seed": 0, "defense": d, "clean_convergence_gain": 0.1} for d in ("none", "blur")]
    rows.append({"victim": "unet", "seed": 1, "defense": "none", "clean_convergence_gain": CONVERGENCE_TOLERANCE / 2})
    (line,) = convergence_warnings(rows)  # once per clean victim; seed 1 converged
    assert "clean unet victim (seed 0) had not converged (its validation DSC rose by 0.100" in line


def test_augmentation_regimes_reach_the_victims_and_the_report(datasets, tmp_path, capsys):
    GIVEN.clear()
    evaluate(*datasets, settings=replace(TINY, augment=NO_AUGMENTATION), trainer=ScriptedTrainer)
    assert [run["augment"] for run in GIVEN] == [NO_AUGMENTATION] * 2
    assert TrainSettings().augment == NNUNET_AUGMENTATION and TrainSettings().iterations_per_epoch == 250
    report_path = tmp_path / "report.json"
    argv = tiny_evaluate_argv(*map(str, datasets), "--victim", "unet-small", "-o", str(report_path))
    for choice, _preset in (("none", NO_AUGMENTATION), ("nnunet-like", NNUNET_LIKE_AUGMENTATION)):
        assert main(argv + ["--augmentation", choice]) == 0
        assert json.loads(report_path.read_text())["augmentation"] == choice
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(report_path.read_text())["augmentation"] == "nnunet"  # the default
    assert "WARNING: the clean unet-small victim (seed 0) had not converged (too few epochs to tell)" in captured.err
    assert "at the final checkpoint" in captured.out and "-- nnU-Net --" in captured.out
