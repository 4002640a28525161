"""A tiny fit, in one process or under torchrun: ``torchrun --nproc-per-node 2 ddp_fit_run.py DATASET OUT``."""

from __future__ import annotations

import sys

from umedprotect import ddp
from umedprotect.augment import AugmentSettings
from umedprotect.fitting import FitSettings, fit_on_datasets
from umedprotect.protector import Protector, ProtectorConfig, save_protector

NO_AUGMENTATION = AugmentSettings(
    p_flip=0, p_rotate=0, p_scale=0, p_noise=0, p_blur=0, p_brightness=0, p_contrast=0, p_lowres=0, p_gamma=0
)  # random draws differ between one process and several: without them the two fits must agree
SETTINGS = FitSettings(
    steps=4, min_steps=4, batch_size=4, patch_size=32, surrogate_channels=4, device="cpu", augment=NO_AUGMENTATION
)
CONFIG = ProtectorConfig(base_channels=4)


def fit(dataset: str) -> Protector:
    return fit_on_datasets([dataset], CONFIG, SETTINGS)[0]


if __name__ == "__main__":
    ddp.start_from_env("cpu")
    protector = fit(sys.argv[1])
    if ddp.is_main():
        save_protector(protector, sys.argv[2])
    ddp.stop()
