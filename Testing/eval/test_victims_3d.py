"""3D victims (nnU-Net 3d_fullres-like): trained on 3D patches of the volumes, tested on whole volumes."""

from __future__ import annotations

import numpy as np
import torch
from conftest import write_nnunet_dataset

from umedprotect.augment import NO_AUGMENTATION
from umedprotect.slices import case_slices
from umedprotect_eval.evaluation import evaluate, to_class_indices
from umedprotect_eval.training import (
    TrainSettings,
    stack_cases,
    train_victim,
    volume_dice,
)


def ball_cases(n: int, seed: int, shape=(12, 24, 24)) -> list:
    """Volumes with one bright ball (label 1) on noise; slices along the first (coarsest) axis."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    samples = []
    for k in range(n):
        centre, radius = rng.uniform(5, np.array(shape) - 5), rng.uniform(3.5, 5)
        labels = (((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= radius**2).astype(np.uint8)
        image = (100 + 800.0 * labels + rng.normal(0, 20, shape)).astype(np.float32)
        samples += case_slices(image, labels, (1.0, 1.0, 2.0), f"s{seed}c{k}", roi_only=False)
    return to_class_indices(samples, [0, 1])


def test_a_3d_victim_learns_a_trivially_learnable_task_and_is_tested_per_volume():
    settings = TrainSettings(
        epochs=2,
        iterations_per_epoch=10,
        batch_size=2,
        patch_size=16,
        optimizer="adam",
        learning_rate=3e-3,
        augment=NO_AUGMENTATION,
        device="cpu",
    )
    train, test = ball_cases(3, 0), ball_cases(2, 1)
    run = train_victim(train, test, "unet3d", 2, settings, validation=ball_cases(1, 2))
    assert len(run.curve) == len(run.validation_curve) == 2
    assert run.best > 0.5 and run.validation_curve[-1] > 0.5, (run.curve, run.validation_curve)
    volumes = stack_cases(test)
    assert [sorted(v.image.shape) for v in volumes] == [[12, 24, 24]] * 2  # slices stacked back into volumes


def test_volume_dice_tiles_a_volume_larger_than_the_patch():
    class Threshold(torch.nn.Module):
        def forward(self, x):
            assert x.shape[2:] == (8, 8, 8)  # one tile at a time
            return torch.cat([-x, x], dim=1)

    volume = ball_cases(1, 3, shape=(10, 20, 20))
    (scores,) = volume_dice(Threshold(), volume, 2, 4, 8)
    assert scores[0] > 0.9  # z-scored: the bright ball is above zero, the background below


def test_evaluate_trains_3d_victims_on_a_3d_dataset(tmp_path):
    clean = write_nnunet_dataset(tmp_path / "clean", n_train=3, n_test=1, shape=(8, 40, 40), n_lesions=1)
    settings = TrainSettings(epochs=2, iterations_per_epoch=1, batch_size=2, patch_size=16, device="cpu")
    report = evaluate(clean, clean, victims=("unet3d",), settings=settings)
    (row,) = report["summary"]
    assert row["victim"] == "unet3d" and len(report["runs"][0]["validation_curve"]) == 2
    assert all(np.isfinite(row[key]) for key in ("clean_final", "protected_nnunet", "protected_best"))
