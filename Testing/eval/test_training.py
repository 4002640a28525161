"""Victim training: pinned numerics, and the hooks experiments override instead of patching."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import PINNED_TOLERANCE, weights_fingerprint, write_nnunet_dataset

from umedprotect.augment import NNUNET_LIKE_AUGMENTATION
from umedprotect_eval.evaluation import load_evaluation_data
from umedprotect_eval.training import Checkpoint, TrainSettings, VictimTrainer, train_victim

SHORT = TrainSettings(epochs=2, iterations_per_epoch=2, batch_size=2, patch_size=32, device="cpu")

# The weights after a short training with each optimiser and normalisation (CPU, one thread, this torch build;
# the augmentation nnunet-like), as weights_fingerprint. Victim training is pinned since it became VictimTrainer
# (then bit for bit to evaluation.train_victim's weights; bits differ between CPUs, the fingerprint does not).
PINNED_WEIGHTS = {
    ("sgd", "ct"): (163.67225543254943, 3914.323433614104),
    ("adam", "zscore"): (177.42268799404087, 4262.766630746147),
}


@pytest.fixture
def data(tmp_path):
    clean = write_nnunet_dataset(tmp_path / "clean", n_train=2, n_test=1, shape=(2, 32, 32), n_lesions=2)
    return load_evaluation_data(clean, clean)


@pytest.mark.parametrize(("optimizer", "normalisation"), sorted(PINNED_WEIGHTS))
def test_a_short_training_gives_the_pinned_weights(data, optimizer, normalisation):
    settings = replace(SHORT, optimizer=optimizer, augment=NNUNET_LIKE_AUGMENTATION)
    trainer = VictimTrainer(
        data.protected, data.test, "unet-small", data.n_classes, settings, normalisation, data.clean
    )
    run = trainer.run()
    assert weights_fingerprint(trainer.model) == pytest.approx(
        PINNED_WEIGHTS[optimizer, normalisation], **PINNED_TOLERANCE
    )
    assert len(run.curve) == len(run.train_curve) == len(run.clean_train_curve) == len(run.label_curve) == 2


class Recording(VictimTrainer):
    """Records every hook call; stops after ``stop_after`` checkpoints."""

    def __init__(self, *args, stop_after: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.iterations: list[tuple[int, float]] = []
        self.checkpoints: list[Checkpoint] = []
        self.stop_after = stop_after

    def on_iteration(self, iteration: int, loss: torch.Tensor) -> None:
        self.iterations.append((iteration, loss.item()))

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.checkpoints.append(checkpoint)

    def should_stop(self, checkpoint: Checkpoint) -> bool:
        return self.stop_after is not None and len(self.checkpoints) >= self.stop_after


def test_hooks_see_every_iteration_and_checkpoint_and_stopping_keeps_the_training(data):
    full = Recording(data.protected, data.test, "unet-small", data.n_classes, SHORT, "zscore", data.clean)
    run = full.run()
    assert [i for i, _ in full.iterations] == [1, 2, 3, 4]
    assert [c.epoch for c in full.checkpoints] == [1, 2]
    assert run.curve == [c.test_dsc for c in full.checkpoints]
    assert run.label_curve == [c.label_dsc for c in full.checkpoints]
    stopped = Recording(data.protected, data.test, "unet-small", data.n_classes, SHORT, "zscore", stop_after=1)
    first = stopped.run()
    assert stopped.iterations == full.iterations[:2] and first.curve == run.curve[:1]  # the same first epoch
    assert stopped.checkpoints[0].clean_train_dsc is None and first.clean_train_curve == []


def test_the_network_and_the_normalisation_statistics_are_hooks(data):
    built, asked = [], []

    class Experiment(VictimTrainer):
        def build_network(self) -> torch.nn.Module:
            torch.manual_seed(7)  # other initial weights than the training seed's
            built.append(super().build_network())
            return built[-1]

        def normalisation_statistics(self, train):
            asked.append(len(train))
            return (-200.0, 100.0, 30.0, 40.0)

    experiment = Experiment(data.protected, data.test, "unet-small", data.n_classes, SHORT, "ct")
    experiment.run()
    assert built == [experiment.model] and asked == [len(data.protected)]
    plain = VictimTrainer(data.protected, data.test, "unet-small", data.n_classes, SHORT, "ct")
    plain.run()
    assert weights_fingerprint(plain.model) != weights_fingerprint(experiment.model)


def test_train_victim_is_a_trainer_run_with_the_default_hooks(data):
    trainer = VictimTrainer(data.protected, data.test, "unet-small", data.n_classes, SHORT, "ct", data.clean)
    expected = trainer.run().to_dict()
    run = train_victim(data.protected, data.test, "unet-small", data.n_classes, SHORT, None, "", "ct", data.clean)
    assert {k: v for k, v in run.to_dict().items() if k != "seconds"} == {
        k: v for k, v in expected.items() if k != "seconds"
    }
