"""The first-epoch race, over many victim seeds: test DSC after the first epoch of the protected victim.

With a contour texture near its threshold budget the victim's later epochs are ≈ 0, so its best
epoch -- the ratio's numerator -- is nearly always the first: whether it learned the anatomy or the
texture in its first 100 iterations. Which one wins is decided by differences as small as the victim's seed, so a
pattern is judged by how often it wins over several seeds. This trains only that first epoch (same
schedule, learning-rate decay included, as `umedprotect evaluate`'s 5 x 100 iterations on
Dataset005), one victim per seed, and prints one JSON line: the mean PSNR of the protected training
cases and the first-epoch test DSC per seed. Give the clean dataset as PROTECTED for the reference.

    python benchmarks/first_epoch_race.py CLEAN PROTECTED --seeds 0 1 2 3 4 5 >> race.jsonl

Views into the race: ``--every N`` adds each victim's test DSC every N iterations (``curves``; the
same training, only tested more often -- what a victim early-stopped on clean cases could keep);
``--epochs K`` tests through the first K epochs; ``--iterations`` sets the epoch length (nnU-Net's is
250); ``--init-seeds`` initialises the victims' weights with other seeds than their data sampling
and augmentation (``--seeds``), to tell which of the two decides the race; ``--normalisation zscore``
races victims that z-score each case instead of normalising CT the nnU-Net way; ``--ct-statistics``
gives the CT normalisation other statistics (clip range, mean, std), as a broader foreground would.
With several foreground labels the line also gives each label's first-epoch test DSC (``first_epoch_by_label``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "UMedProtect"))

from umedprotect_eval import evaluation  # noqa: E402
from umedprotect.errors import InputError  # noqa: E402
from umedprotect_eval.evaluation import EvaluationData, TrainSettings, load_evaluation_data, train_victim  # noqa: E402

SCHEDULE = TrainSettings(epochs=5, iterations_per_epoch=100, batch_size=8, patch_size=96, optimizer="adam",
                         learning_rate=0.003, device="cpu")  # fmt: skip -- Dataset005's (commands.sh)


class FirstEpochDone(Exception):
    """Raised from the progress callback to stop training after the first epoch."""


def first_epoch_curve(
    data: EvaluationData,
    settings: TrainSettings,
    every: int | None = None,
    epochs: int = 1,
    labels: list[list[float]] | None = None,
) -> list[float]:
    """Test DSC of a ``unet-small`` victim trained on the protected cases, every ``every`` iterations of the
    first ``epochs`` epochs of ``settings`` (default: once, at the end of the first). Testing more often does
    not change the training. ``labels``, if given, receives each test's DSC of every foreground label."""
    every = every or settings.iterations_per_epoch
    per_epoch = checks_per_epoch(settings, every, epochs)
    checks = per_epoch * epochs
    finer = replace(settings, epochs=settings.epochs * per_epoch, iterations_per_epoch=every)  # same poly schedule
    curve: list[float] = []

    def record(run_name: str, epoch: int, epochs: int, dsc: float) -> None:
        curve.append(dsc)
        if len(curve) == checks:
            raise FirstEpochDone

    try:
        with recording_label_dsc(labels):
            train_victim(data.protected, data.test, "unet-small", data.n_classes, finer, record, "protected", data.normalisation)
    except FirstEpochDone:
        pass
    return curve


def recording_label_dsc(labels: list[list[float]] | None):
    """Context in which every test's DSC per foreground label is appended to ``labels``, if given."""
    if labels is None:
        return contextlib.nullcontext()
    label_dsc = evaluation.label_dsc

    def recording(case_scores: Sequence[Sequence[float]], n_classes: int) -> list[float]:
        labels.append(label_dsc(case_scores, n_classes))
        return labels[-1]

    return mock.patch.object(evaluation, "label_dsc", recording)


def checks_per_epoch(settings: TrainSettings, every: int, epochs: int) -> int:
    """How many tests every ``every`` iterations make per epoch of ``settings``; ValueError if they do not fit."""
    if every < 1 or settings.iterations_per_epoch % every:
        raise ValueError(f"--every must divide the {settings.iterations_per_epoch} iterations of an epoch")
    if not 1 <= epochs <= settings.epochs:
        raise ValueError(f"--epochs must be between 1 and {settings.epochs}")
    return settings.iterations_per_epoch // every


def first_epoch_dsc(data: EvaluationData, settings: TrainSettings) -> float:
    """Test DSC of a ``unet-small`` victim trained on the protected cases, after its first epoch of ``settings``."""
    return first_epoch_curve(data, settings)[-1]


def initialised_with(seed: int):
    """Context in which victims are built with weights drawn from ``seed`` (not the training seed)."""
    build = evaluation.build_victim

    def seeded_build(victim: str, n_classes: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build(victim, n_classes)

    return mock.patch.object(evaluation, "build_victim", seeded_build)


def ct_normalised_with(statistics: Sequence[float] | None):
    """Context in which the CT normalisation uses ``statistics`` (clip low, clip high, mean, std), if given."""
    if statistics is None:
        return contextlib.nullcontext()
    fixed = tuple(statistics)
    return mock.patch.object(evaluation, "ct_statistics", lambda train: fixed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clean", type=Path, help="clean nnU-Net raw dataset with labelled test cases")
    parser.add_argument("protected", type=Path, help="its protected copy (or the clean one itself)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5], help="victim seeds")
    parser.add_argument("--init-seeds", type=int, nargs="+", help="seeds of the victims' initial weights, one per --seeds "
                        "entry (default: the same)")  # fmt: skip
    parser.add_argument("--iterations", type=int, default=SCHEDULE.iterations_per_epoch,
                        help="iterations per epoch of the schedule (default %(default)s; nnU-Net's epoch is 250)")  # fmt: skip
    parser.add_argument("--every", type=int, help="also test every N iterations of the first epoch (N divides --iterations)")
    parser.add_argument("--epochs", type=int, default=1, help=f"test through this many of the {SCHEDULE.epochs} epochs "
                        "(default 1; the line's first_epoch stays the first epoch's end)")  # fmt: skip
    parser.add_argument("--normalisation", choices=evaluation.NORMALISATIONS,
                        help="the victims' intensity normalisation (default: as dataset.json names the channel)")  # fmt: skip
    parser.add_argument("--ct-statistics", type=float, nargs=4, metavar=("LOW", "HIGH", "MEAN", "STD"),
                        help="the CT normalisation's clip range, mean and std in HU (default: the training foreground's)")  # fmt: skip
    parser.add_argument("--device", default=SCHEDULE.device, help="compute device (default %(default)s)")
    args = parser.parse_args(argv)
    if args.init_seeds and len(args.init_seeds) != len(args.seeds):
        parser.error("give one --init-seeds entry per --seeds entry")
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    if args.ct_statistics and not (args.ct_statistics[0] < args.ct_statistics[1] and args.ct_statistics[3] > 0):
        parser.error("--ct-statistics needs LOW < HIGH and STD > 0")
    schedule = replace(SCHEDULE, iterations_per_epoch=args.iterations, device=args.device)
    every = args.iterations if args.every is None else args.every
    try:
        per_epoch = checks_per_epoch(schedule, every, args.epochs)
    except ValueError as error:
        parser.error(str(error))
    try:
        data = load_evaluation_data(args.clean, args.protected)
    except InputError as error:
        parser.error(str(error))
    if args.normalisation:
        data = replace(data, normalisation=args.normalisation)
    curves, first_by_label = [], []
    for seed, init in zip(args.seeds, args.init_seeds or args.seeds):
        labels: list[list[float]] = []
        with initialised_with(init), ct_normalised_with(args.ct_statistics):
            curve = first_epoch_curve(data, replace(schedule, seed=seed), every, args.epochs, labels)
        curves.append([round(d, 3) for d in curve])
        first_by_label.append(labels[per_epoch - 1])
    line = {"protected": str(args.protected), "psnr": round(data.quality["psnr_db_mean"], 2), "seeds": args.seeds,
            "first_epoch": [c[per_epoch - 1] for c in curves]}  # fmt: skip
    if len(data.label_names) > 1:  # which labels the victims kept
        line["first_epoch_by_label"] = {
            name: [round(scores[k], 3) for scores in first_by_label] for k, name in enumerate(data.label_names)
        }
    if args.iterations != SCHEDULE.iterations_per_epoch:
        line["iterations"] = args.iterations
    if args.init_seeds:
        line["init_seeds"] = args.init_seeds
    if args.normalisation:
        line["normalisation"] = args.normalisation
    if args.ct_statistics:
        line["ct_statistics"] = args.ct_statistics
    if args.epochs > 1:
        line["epochs"] = args.epochs
    if args.every or args.epochs > 1:
        line["every"], line["curves"] = every, curves
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
