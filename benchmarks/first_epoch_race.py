"""The first-epoch race, over many victim seeds: test DSC after the first epoch of the protected victim.

With a contour texture near its threshold budget the victim's later epochs are ≈ 0, so its best
epoch -- the ratio's numerator -- is nearly always the first: whether it learned the anatomy or the
texture in its first 100 iterations. Which one wins is decided by differences as small as the victim's seed, so a
pattern is judged by how often it wins over several seeds. This trains only that first epoch (same
schedule, learning-rate decay included, as `umedprotect evaluate`'s 5 x 100 iterations on
Dataset005), one victim per seed, and prints one JSON line: the mean PSNR of the protected training
cases and the first-epoch test DSC per seed. Give the clean dataset as PROTECTED for the reference.

    python -m benchmarks.first_epoch_race CLEAN PROTECTED --seeds 0 1 2 3 4 5 >> race.jsonl

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
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from umedprotect.errors import InputError
from umedprotect_eval.evaluation import EvaluationData, load_evaluation_data
from umedprotect_eval.training import NORMALISATIONS, Checkpoint, CtStatistics, TrainSettings, VictimTrainer

SCHEDULE = TrainSettings(
    epochs=5, iterations_per_epoch=100, batch_size=8, patch_size=96, optimizer="adam", learning_rate=0.003, device="cpu"
)


class FirstEpochs(VictimTrainer):
    """A ``unet-small`` victim trained on the protected cases, tested every ``every`` iterations of the first
    ``epochs`` epochs of ``settings`` (default: once, at the end of the first) and stopped then. Testing more
    often does not change the training: the epochs are cut into shorter ones of the same poly schedule.

    ``init_seed``: initial weights drawn from this seed instead of the training seed's; ``ct_statistics``:
    the CT normalisation's clip range, mean and std instead of the training foreground's. After :meth:`run`,
    ``curve`` holds every test's DSC and ``label_curve`` each test's DSC of every foreground label.
    """

    def __init__(
        self,
        data: EvaluationData,
        settings: TrainSettings,
        every: int | None = None,
        epochs: int = 1,
        init_seed: int | None = None,
        ct_statistics: CtStatistics | None = None,
    ) -> None:
        every = every or settings.iterations_per_epoch
        per_epoch = checks_per_epoch(settings, every, epochs)
        finer = replace(settings, epochs=settings.epochs * per_epoch, iterations_per_epoch=every)
        super().__init__(data.protected, data.test, "unet-small", data.n_classes, finer, data.normalisation)
        self.checks = per_epoch * epochs
        self.init_seed, self.ct_statistics = init_seed, ct_statistics
        self.curve: list[float] = []
        self.label_curve: list[list[float]] = []

    def build_network(self) -> torch.nn.Module:
        if self.init_seed is not None:
            torch.manual_seed(self.init_seed)
        return super().build_network()

    def normalisation_statistics(self, train) -> CtStatistics:
        return self.ct_statistics or super().normalisation_statistics(train)

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.curve.append(checkpoint.test_dsc)
        self.label_curve.append(checkpoint.label_dsc)

    def should_stop(self, checkpoint: Checkpoint) -> bool:
        return len(self.curve) == self.checks


def checks_per_epoch(settings: TrainSettings, every: int, epochs: int) -> int:
    """How many tests every ``every`` iterations make per epoch of ``settings``; ValueError if they do not fit."""
    if every < 1 or settings.iterations_per_epoch % every:
        raise ValueError(f"--every must divide the {settings.iterations_per_epoch} iterations of an epoch")
    if not 1 <= epochs <= settings.epochs:
        raise ValueError(f"--epochs must be between 1 and {settings.epochs}")
    return settings.iterations_per_epoch // every


def first_epoch_dsc(data: EvaluationData, settings: TrainSettings) -> float:
    """Test DSC of a ``unet-small`` victim trained on the protected cases, after its first epoch of ``settings``."""
    race = FirstEpochs(data, settings)
    race.run()
    return race.curve[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clean", type=Path, help="clean nnU-Net raw dataset with labelled test cases")
    parser.add_argument("protected", type=Path, help="its protected copy (or the clean one itself)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5], help="victim seeds")
    parser.add_argument(
        "--init-seeds",
        type=int,
        nargs="+",
        help="seeds of the victims' initial weights, one per --seeds entry (default: the same)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=SCHEDULE.iterations_per_epoch,
        help="iterations per epoch of the schedule (default %(default)s; nnU-Net's epoch is 250)",
    )
    parser.add_argument(
        "--every", type=int, help="also test every N iterations of the first epoch (N divides --iterations)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=1,
        help=f"test through this many of the {SCHEDULE.epochs} epochs "
        "(default 1; the line's first_epoch stays the first epoch's end)",
    )
    parser.add_argument(
        "--normalisation",
        choices=NORMALISATIONS,
        help="the victims' intensity normalisation (default: as dataset.json names the channel)",
    )
    parser.add_argument(
        "--ct-statistics",
        type=float,
        nargs=4,
        metavar=("LOW", "HIGH", "MEAN", "STD"),
        help="the CT normalisation's clip range, mean and std in HU (default: the training foreground's)",
    )
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
        statistics = tuple(args.ct_statistics) if args.ct_statistics else None
        race = FirstEpochs(data, replace(schedule, seed=seed), every, args.epochs, init, statistics)
        race.run()
        curves.append([round(d, 3) for d in race.curve])
        first_by_label.append(race.label_curve[per_epoch - 1])
    line = {
        "protected": str(args.protected),
        "psnr": round(data.quality["psnr_db_mean"], 2),
        "seeds": args.seeds,
        "first_epoch": [c[per_epoch - 1] for c in curves],
    }
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
