"""benchmarks/first_epoch_race.py: the first epoch of the full schedule, one victim per seed."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from conftest import write_nnunet_dataset

from benchmarks import ct_statistics as statistics_script
from benchmarks import first_epoch_race as race
from benchmarks import race_summary as summary
from umedprotect.slices import ct_statistics
from umedprotect_eval.evaluation import load_evaluation_data
from umedprotect_eval.training import TrainSettings, train_victim


@pytest.mark.slow
def test_the_first_epoch_race_reports_the_first_epoch_of_the_full_schedule(tmp_path):
    clean = write_nnunet_dataset(tmp_path / "clean", n_train=2, n_test=1, shape=(2, 32, 32), n_lesions=1)
    data = load_evaluation_data(clean, clean)
    settings = TrainSettings(
        epochs=3, iterations_per_epoch=2, batch_size=2, patch_size=32, optimizer="adam", device="cpu"
    )
    full = train_victim(data.protected, data.test, "unet-small", data.n_classes, settings, None, "", data.normalisation)
    assert race.first_epoch_dsc(data, settings) == full.curve[0]
    assert race.first_epoch_dsc(data, replace(settings, seed=1)) != full.curve[0]  # a victim per seed


class LossRecording(race.FirstEpochs):
    """The race, recording the training loss of every iteration (the training itself, not its tests)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.losses: list[float] = []

    def on_iteration(self, iteration: int, loss: torch.Tensor) -> None:
        self.losses.append(loss.item())


def test_testing_more_often_does_not_change_the_training_and_init_seeds_change_only_the_weights(tmp_path):
    clean = write_nnunet_dataset(tmp_path / "clean", n_train=2, n_test=1, shape=(2, 32, 32), n_lesions=1)
    data = load_evaluation_data(clean, clean)
    settings = TrainSettings(
        epochs=3, iterations_per_epoch=4, batch_size=2, patch_size=32, optimizer="adam", device="cpu"
    )

    def losses(every=None, init=None, epochs=1):
        recording = LossRecording(data, settings, every, epochs, init)
        recording.run()
        return recording.losses, recording.curve

    once, curve = losses()
    assert len(once) == 4 and len(curve) == 1
    assert losses(init=settings.seed)[0] == once  # the training seed's own weights
    every, curve = losses(every=2)
    assert every == once and len(curve) == 2
    through_two, curve = losses(every=2, epochs=2)
    assert through_two[:4] == once and len(through_two) == 8 and len(curve) == 4
    other_init, _ = losses(init=7)
    assert other_init[0] != once[0]
    with pytest.raises(ValueError, match="divide"):
        race.FirstEpochs(data, settings, every=3)
    with pytest.raises(ValueError, match="between"):
        race.FirstEpochs(data, settings, epochs=4)


def test_race_summary_merges_seeds_and_counts_victims_under_the_target_ratio():
    lines = [
        {"protected": "a", "psnr": 50.1, "seeds": [0, 1], "first_epoch": [0.05, 0.5]},
        {"protected": "b", "psnr": 51.0, "seeds": [0], "first_epoch": [0.2]},
        {"protected": "a", "psnr": 50.1, "seeds": [2, 3], "first_epoch": [0.07, 0.09]},
        {"protected": "a", "psnr": 50.1, "seeds": [0], "init_seeds": [1], "first_epoch": [0.9]},  # another victim
        {"protected": "a", "psnr": 50.1, "seeds": [0], "normalisation": "zscore", "first_epoch": [0.9]},  # others too
        {"protected": "a", "psnr": 50.1, "seeds": [0], "ct_statistics": [-245, 78, 36, 29], "first_epoch": [0.9]},
        {"protected": "a", "psnr": 50.1, "seeds": [1], "iterations": 250, "first_epoch": [0.01]},  # another schedule
    ]
    clean_best = {0: 0.6, 1: 0.9}  # seeds 2, 3: the mean, 0.75 -> threshold 0.075
    a, b, longer = summary.summarise(lines, clean_best)
    assert (longer["protected"], longer["seeds"], longer["stopped"]) == ("a (250 iterations per epoch)", 1, 1)
    assert (a["protected"], a["seeds"], a["stopped"]) == ("a", 4, 2)
    assert a["resisting"] == {1: 0.5, 3: 0.09}
    assert a["median"] == pytest.approx(0.08) and b["stopped"] == 0
    evaluation = {
        "runs": [{"data": "clean", "seed": 0, "best_dsc": 0.6}, {"data": "protected", "seed": 0, "best_dsc": 0.1}]
    }
    assert summary.clean_best_by_seed(evaluation) == {0: 0.6}


@pytest.mark.slow
def test_the_race_can_z_score_its_victims_or_give_the_ct_normalisation_other_statistics(tmp_path, capsys, monkeypatch):
    clean = write_nnunet_dataset(tmp_path / "clean", n_train=2, n_test=1, shape=(2, 32, 32), n_lesions=1)
    seen = []

    class Recording(race.FirstEpochs):
        def run(self, *args):
            used = self.normalisation_statistics(self.train) if self.normalisation == "ct" else None
            seen.append((self.normalisation, used))
            return super().run(*args)

    monkeypatch.setattr(race, "FirstEpochs", Recording)  # main's races, to see how they normalise
    short = [str(clean), str(clean), "--seeds", "0", "--iterations", "2"]
    assert race.main([*short, "--normalisation", "zscore"]) == 0
    out = capsys.readouterr().out
    assert '"normalisation": "zscore"' in out and "first_epoch_by_label" not in out  # one label: the mean is its
    assert race.main([*short, "--ct-statistics", "-200", "100", "30", "40"]) == 0
    assert '"ct_statistics": [-200.0, 100.0, 30.0, 40.0]' in capsys.readouterr().out
    assert race.main(short) == 0
    own = ct_statistics(load_evaluation_data(clean, clean).clean)
    assert seen == [("zscore", None), ("ct", (-200, 100, 30, 40)), ("ct", own)] and own != (-200, 100, 30, 40)
    for bad in (
        ["--normalisation", "minmax"],
        ["--ct-statistics", "100", "-200", "30", "40"],
        ["--ct-statistics", "0", "1", "0", "0"],
    ):
        with pytest.raises(SystemExit):
            race.main([str(clean), str(clean), *bad])


def test_with_several_labels_the_race_gives_each_labels_first_epoch_dsc(tmp_path, capsys):
    clean = write_nnunet_dataset(tmp_path / "clean", n_train=2, n_test=1, shape=(2, 32, 32), n_lesions=2)
    assert race.main([str(clean), str(clean), "--seeds", "0", "1", "--iterations", "2"]) == 0
    line = json.loads(capsys.readouterr().out)
    by_label = line["first_epoch_by_label"]
    assert list(by_label) == ["lesion1", "lesion2"] and all(len(v) == 2 for v in by_label.values())
    for seed, dsc in enumerate(line["first_epoch"]):  # one test case with both labels: its DSC is their mean
        assert dsc == pytest.approx((by_label["lesion1"][seed] + by_label["lesion2"][seed]) / 2, abs=1e-3)


def test_ct_statistics_prints_the_normalisation_each_dataset_gives_its_victims(tmp_path, capsys):
    clean = write_nnunet_dataset(tmp_path / "clean", n_train=2, n_test=1, shape=(2, 32, 32), n_lesions=1)
    assert statistics_script.main([str(clean)]) == 0
    lo, hi, mean, std = ct_statistics(load_evaluation_data(clean, clean).clean)
    assert capsys.readouterr().out == f"{clean}: clip {lo:.0f} .. {hi:.0f} HU, mean {mean:.1f}, std {std:.1f}\n"
    with pytest.raises(SystemExit):
        statistics_script.main([str(tmp_path / "missing")])
