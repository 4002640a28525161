"""``umedprotect evaluate``: the unauthorised-training check (victims trained on clean vs protected data)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from umedprotect.cli import add_option

SUMMARY = "check the protection: train victims on clean vs protected data, compare test DSC"
DESCRIPTION = """\
Train a victim segmenter from scratch on the clean training cases of CLEAN_DIR and, with the same
seed and schedule, on the protected versions of the same cases in PROTECTED_DIR (both nnU-Net v2
raw datasets, e.g. PROTECTED_DIR written by 'umedprotect protect-dataset'); test both after every
epoch on clean test cases, and report the PSNR/SSIM of the protected training images against the
clean ones and, for three checkpoints of each victim, ratio = DSC(protected) / DSC(clean) (lower =
stronger protection; <= 0.10 counts as stopped):
  final    the last epoch's checkpoint;
  nnU-Net  the checkpoint nnU-Net keeps: best moving average (0.9 x previous + 0.1 x this epoch, as
           nnU-Net's ema_fg_dice) of the DSC on validation cases held out of the victim's own
           training data (20% of the cases, the same for both victims, so the protected victim is
           selected on protected data; with a single case, a block of its last slices);
  oracle   the best epoch on the clean test cases (no attacker has it; it bounds early stopping).
The first two are what an attacker gets. A verdict line counts the victims stopped under each.

Test cases: the labelled test cases of CLEAN_DIR (imagesTs/ with labelsTs/) when it has any;
otherwise --test-dir, an nnU-Net raw dataset whose labelled test cases (or, if it has none, its
training cases) are used. Test cases must not be training cases.

Training (nnU-Net-like): 2D victims on slices along each case's coarsest axis, 3D victims on 3D
patches of the volumes; nnU-Net's normalisation (channel named CT in dataset.json: clip to the
0.5-99.5 percentiles of the training foreground, z-score with its mean/std; otherwise per-case
z-score); random patches (a third centred on the ROI); --augmentation nnunet: nnU-Net v2's training
augmentation (rotation and scaling, noise, blur, brightness, contrast, low resolution, gamma,
mirroring, with its probabilities), or none (the protocol of most published results); Dice + CE
loss; SGD with Nesterov momentum 0.99 (or --optimizer adam) and poly learning-rate decay. Test DSC
of a case = mean Dice over the foreground labels it contains (3D over all its slices); the epoch's
DSC = mean over test cases. With several foreground labels the ratios are also given for each label.

Checks after the last epoch, on (up to 8 of) the training cases: 'clean fit' and 'prot. fit', each
victim's DSC on its own training cases; 'prot. on clean', the protected victim's DSC on the clean
versions of its training cases. A victim that does not fit its training data has learned neither
the anatomy nor a shortcut, and its ratio says nothing about the protection: train longer. A
protected victim that fits its protected cases but fails on their clean versions relies on the
perturbation (same subject and slices: no generalisation gap mixed in).
A WARNING says when a clean victim had not converged (its validation DSC still rising by more than
0.01 over the last fifth of the epochs): a short schedule mistakes delay for protection.
The default schedule is nnU-Net's epoch of 250 iterations, 20 epochs (tens of minutes to hours per
victim on a CPU); use a larger --patch-size and more --epochs on a GPU, or fewer --iterations for a
quick look (the warning will say it is one)."""


VICTIM_INSTALL = (
    'MONAI victims need: pip install "umedprotect[eval]"; the nnU-Net ones also:\n'
    "  pip install --no-deps dynamic-network-architectures"
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from umedprotect.augment import AUGMENTATIONS

    from .defenses import DEFENSES
    from .training import DEFAULT_LEARNING_RATES, NORMALISATIONS, TrainSettings
    from .victims import VICTIMS

    defaults = TrainSettings()
    width = max(map(len, (*VICTIMS, *DEFENSES))) + 2
    victims = "\n".join(f"  {name:<{width}}{spec.description}" for name, spec in VICTIMS.items())
    defenses = "\n".join(f"  {name:<{width}}{defense.help}" for name, defense in DEFENSES.items())
    p = subparsers.add_parser(
        "evaluate",
        help=SUMMARY,
        description=DESCRIPTION,
        epilog=f"victims:\n{victims}\n{VICTIM_INSTALL}\n\ndefenses "
        f"(applied to the protected training set; the ratio is against the undefended clean run):\n{defenses}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("clean_dir", metavar="CLEAN_DIR", help="clean nnU-Net v2 raw dataset")
    p.add_argument("protected_dir", metavar="PROTECTED_DIR", help="protected version of the same dataset")
    p.add_argument("--test-dir", metavar="DIR", help="dataset with the clean test cases, if CLEAN_DIR has none")
    p.add_argument(
        "--victim", nargs="+", choices=tuple(VICTIMS), default=["unet"], help="victim architecture(s) (default unet)"
    )
    p.add_argument(
        "--defense",
        nargs="+",
        choices=tuple(DEFENSES),
        default=[],
        help="also train on the protected data after these defenses",
    )
    p.add_argument(
        "--augmentation",
        choices=tuple(AUGMENTATIONS),
        default="nnunet",
        help="victims' training augmentation: nnunet (nnU-Net v2's transforms and probabilities), "
        "nnunet-like (the same transforms drawn as UMedProtect's fitting draws them), or none "
        "(default %(default)s)",
    )
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs (default %(default)s)")
    p.add_argument(
        "--iterations",
        type=int,
        default=defaults.iterations_per_epoch,
        help="iterations per epoch (default %(default)s)",
    )
    p.add_argument(
        "--batch-size", type=int, default=defaults.batch_size, help="patches per iteration (default %(default)s)"
    )
    p.add_argument(
        "--patch-size",
        type=int,
        default=defaults.patch_size,
        help="patch side in pixels (3D victims: cubes, at most as deep as the volumes) (default %(default)s)",
    )
    p.add_argument(
        "--optimizer",
        choices=tuple(DEFAULT_LEARNING_RATES),
        default=defaults.optimizer,
        help="victim optimiser (default %(default)s, as nnU-Net)",
    )
    p.add_argument("--learning-rate", type=float, help="initial learning rate (default: sgd 0.01, adam 0.001)")
    p.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=[defaults.seed],
        metavar="N",
        help="random seed(s) (default %(default)s); with several, every victim is trained once per seed "
        "and the report adds the mean and spread of the ratio: a single best-epoch ratio can vary a lot "
        "with the seed",
    )
    p.add_argument(
        "--normalisation",
        choices=("auto", *NORMALISATIONS),
        default="auto",
        help="victims' intensity normalisation: auto (nnU-Net's choice: ct when dataset.json names the "
        "channel CT, else zscore), ct, or zscore (per case; an attacker's choice when subjects differ in "
        "contrast phase) (default %(default)s)",
    )
    p.add_argument(
        "--resample",
        choices=("nnunet", "none"),
        default="nnunet",
        help="nnunet (default): where nnU-Net would resample training cases (in-plane spacing off the median), "
        "every case is resampled in-plane to the training cases' median spacing with nnU-Net's cubic resampling, "
        "as its preprocessing does (PSNR stays measured on the cases' own grids); none: each case on its own grid",
    )
    add_option(p, "device")
    p.add_argument(
        "-o", "--output", metavar="REPORT.json", help="write the full report (per-epoch DSC curves included)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from umedprotect.errors import InputError
    from umedprotect.io import check_writable_dir, write_json

    from .evaluation import evaluate
    from .training import TrainSettings

    for name in ("epochs", "iterations", "batch_size", "patch_size"):
        if getattr(args, name) < 1:
            raise InputError("must be at least 1", option=name)
    if args.output:
        check_writable_dir(Path(args.output).resolve().parent)
    from umedprotect.augment import AUGMENTATIONS

    settings = TrainSettings(
        augment=AUGMENTATIONS[args.augmentation],
        epochs=args.epochs,
        iterations_per_epoch=args.iterations,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        seed=args.seed[0],
        device=args.device,
    )
    if not 0 < settings.learning_rate <= 1:
        raise InputError(f"{settings.learning_rate} is out of range (0, 1]", option="learning_rate")

    def progress(run_name: str, epoch: int, epochs: int, dsc: float) -> None:
        print(f"{run_name}: epoch {epoch}/{epochs} test DSC {dsc:.4f}", file=sys.stderr, flush=True)

    if len(set(args.seed)) != len(args.seed):
        raise InputError("values must differ", option="seed")
    normalisation = None if args.normalisation == "auto" else args.normalisation
    report = evaluate(
        args.clean_dir,
        args.protected_dir,
        args.test_dir,
        args.victim,
        args.defense,
        settings,
        progress,
        args.seed,
        normalisation,
        resample=args.resample == "nnunet",
    )
    for warning in report["warnings"]:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(format_table(report))
    print(verdict_line(report["summary"]))
    if args.output:
        write_json(report, args.output)
        print(f"wrote {args.output}")
    return 0


RULE_TITLES = {"final": "final", "nnunet": "nnU-Net", "oracle": "oracle"}
LABEL_RULE_TITLES = {**RULE_TITLES, "oracle": "oracle (each label's best epoch)"}


def format_table(report: dict) -> str:
    """The summary as a small fixed-width table (clean and protected DSC and their ratio under each checkpoint
    rule), with the visibility line under it."""
    from .evaluation import RULE_KEYS, TARGET_RATIO, on_target_key

    seeded = len(report.get("seeds", ())) > 1
    lead = 28 + 6 * seeded
    groups = "".join(f"{'-- ' + RULE_TITLES[rule] + ' --':^24}" for rule in RULE_KEYS)
    header = (
        f"{'victim':<16}{'defense':<12}"
        + (f"{'seed':>6}" if seeded else "")
        + f"{'clean':>8}{'prot.':>8}{'ratio':>8}" * len(RULE_KEYS)
        + f"{'clean fit':>10}{'prot. fit':>10}{'prot. on clean':>15}"
    )
    lines = [" " * lead + groups, header, "-" * len(header)]
    for row in report["summary"]:
        lines.append(
            f"{row['victim']:<16}{row['defense']:<12}"
            + (f"{row['seed']:>6}" if seeded else "")
            + "".join(
                f"{_fmt(row[f'clean_{k}']):>8}{_fmt(row[f'protected_{k}']):>8}{_fmt(row[f'ratio_{k}']):>8}"
                for k in RULE_KEYS.values()
            )
            + f"{_fmt(row['clean_train_dsc']):>10}{_fmt(row['protected_train_dsc']):>10}"
            + f"{_fmt(row['protected_clean_train_dsc']):>15}"
        )
    if len(report["labels"]) > 1:
        for row in report["summary"]:
            seed = f" seed {row['seed']}" if seeded else ""
            by_rule = "; ".join(
                f"{LABEL_RULE_TITLES[rule]} "
                + ", ".join(f"{name} {_fmt(value)}" for name, value in row[f"ratio_{key}_by_label"].items())
                for rule, key in RULE_KEYS.items()
            )
            lines.append(f"{row['victim']} / {row['defense']}{seed}: ratio by label: {by_rule}")
    for row in report.get("over_seeds", []):
        n = len(row["seeds"])
        spread = "; ".join(
            f"{RULE_TITLES[rule]} {_fmt(row[f'ratio_{key}_mean'])} ({_fmt(row[f'ratio_{key}_min'])} to "
            f"{_fmt(row[f'ratio_{key}_max'])}, <= {TARGET_RATIO:g} with {row[on_target_key(key)]} of {n} seeds)"
            for rule, key in RULE_KEYS.items()
        )
        seeds = ", ".join(map(str, row["seeds"]))
        lines.append(f"{row['victim']} / {row['defense']} over seeds {seeds}: ratio mean {spread}")
    q = report["quality"]
    lines.append(
        f"protected vs clean training images: mean PSNR {q['psnr_db_mean']:.2f} dB, mean SSIM {q['ssim_mean']:.5f}, "
        f"max |change| {q['max_abs_change']:.4g}; {report['train_cases']} training cases "
        f"({len(report['validation_cases'])} held out for validation), {report['test_cases']} test cases "
        f"({report['test_source']}); augmentation {report['augmentation']}"
    )
    return "\n".join(lines)


def verdict_line(summary: list[dict]) -> str:
    """How many trained victims the protection stopped (ratio at most the target) at the final checkpoint and at the
    one nnU-Net keeps, with the oracle's count beside them; a lone victim not stopped says so."""
    from .evaluation import RULE_KEYS, TARGET_RATIO

    n = len(summary)
    stopped = {key: sum(1 for row in summary if row[f"ratio_{key}"] <= TARGET_RATIO) for key in RULE_KEYS.values()}
    runs = "run" if any(row["defense"] != "none" for row in summary) else "victim"
    line = (
        f"stopped {stopped['final']} of {n} {runs}s (ratio <= {TARGET_RATIO:.2f}) at the final checkpoint, "
        f"{stopped['nnunet']} of {n} at the one nnU-Net keeps ({stopped['best']} of {n} at the oracle's best epoch)"
    )
    if n == 1 and not (stopped["final"] or stopped["nnunet"]):
        row = summary[0]
        line += f": not protected (ratio {_fmt(row['ratio_final'])} final, {_fmt(row['ratio_nnunet'])} nnU-Net)"
    return line


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
