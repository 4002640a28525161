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
epoch on clean test cases and report the test DSC (final and best epoch), the ratio
best DSC(protected) / best DSC(clean) (lower = stronger protection) and the PSNR/SSIM of the
protected training images against the clean ones.

Test cases: the labelled test cases of CLEAN_DIR (imagesTs/ with labelsTs/) when it has any;
otherwise --test-dir, an nnU-Net raw dataset whose labelled test cases (or, if it has none, its
training cases) are used. Test cases must not be training cases.

Training (nnU-Net-like, 2D): slices along each case's coarsest axis; nnU-Net's normalisation
(channel named CT in dataset.json: clip to the 0.5-99.5 percentiles of the training foreground,
z-score with its mean/std; otherwise per-case z-score); random patches (a third centred on the
ROI); flips, rotation/scale resampling, brightness/contrast/gamma/noise/blur/low-resolution
augmentation; Dice + CE loss; SGD with Nesterov momentum 0.99 (or --optimizer adam) and poly
learning-rate decay. Test DSC of a case = mean Dice over the foreground labels it contains (3D over
all its slices); the epoch's DSC = mean over test cases. With several foreground labels the ratio
is also given for each label (its DSC = mean over the test cases that contain it; each label's best
epoch).

Checks after the last epoch, on (up to 8 of) the training cases: 'clean fit' and 'prot. fit', each
victim's DSC on its own training cases; 'prot. on clean', the protected victim's DSC on the clean
versions of its training cases. A victim that does not fit its training data has learned neither
the anatomy nor a shortcut, and its ratio says nothing about the protection: train longer. A
protected victim that fits its protected cases but fails on their clean versions relies on the
perturbation (same subject and slices: no generalisation gap mixed in).
Victims can learn the anatomy before they come to rely on a perturbation, so a protected victim's
best epoch is often an early one: fewer --iterations per epoch (same total) check more often, as an
attacker who early-stops on clean cases would. The victim's normalisation sets how large a
perturbation is to it (nnU-Net's CT clip range around one soft-tissue organ makes it large, a
per-case z-score small): check --normalisation zscore too. The defaults are CPU-sized; use more
--epochs / --iterations and a larger --patch-size on a GPU."""


VICTIM_INSTALL = (
    'MONAI victims need: pip install "umedprotect[eval]"; the nnU-Net ones also:\n'
    "  pip install --no-deps dynamic-network-architectures"
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from .defenses import DEFENSES
    from .training import DEFAULT_LEARNING_RATES, NORMALISATIONS, TrainSettings
    from .victims import VICTIMS

    defaults = TrainSettings()
    victims = "\n".join(f"  {name:<14}{spec.description}" for name, spec in VICTIMS.items())
    defenses = "\n".join(f"  {name:<14}{defense.help}" for name, defense in DEFENSES.items())
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
    p.add_argument("--victim", nargs="+", choices=tuple(VICTIMS), default=["unet"], help="victim architecture(s) (default unet)")
    p.add_argument("--defense", nargs="+", choices=tuple(DEFENSES), default=[], help="also train on the protected data after these defenses")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs (default %(default)s)")
    p.add_argument("--iterations", type=int, default=defaults.iterations_per_epoch, help="iterations per epoch (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="patches per iteration (default %(default)s)")
    p.add_argument("--patch-size", type=int, default=defaults.patch_size, help="patch size in pixels (default %(default)s)")
    p.add_argument("--optimizer", choices=tuple(DEFAULT_LEARNING_RATES), default=defaults.optimizer, help="victim optimiser (default %(default)s, as nnU-Net)")
    p.add_argument("--learning-rate", type=float, help="initial learning rate (default: sgd 0.01, adam 0.001)")
    p.add_argument("--seed", type=int, nargs="+", default=[defaults.seed], metavar="N",
                   help="random seed(s) (default %(default)s); with several, every victim is trained once per seed "
                   "and the report adds the mean and spread of the ratio: a single best-epoch ratio can vary a lot "
                   "with the seed")  # fmt: skip
    p.add_argument("--normalisation", choices=("auto", *NORMALISATIONS), default="auto",
                   help="victims' intensity normalisation: auto (nnU-Net's choice: ct when dataset.json names the "
                   "channel CT, else zscore), ct, or zscore (per case; an attacker's choice when subjects differ in "
                   "contrast phase) (default %(default)s)")  # fmt: skip
    add_option(p, "device")
    p.add_argument("-o", "--output", metavar="REPORT.json", help="write the full report (per-epoch DSC curves included)")
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
    settings = TrainSettings(
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
        args.clean_dir, args.protected_dir, args.test_dir, args.victim, args.defense, settings, progress, args.seed, normalisation
    )
    print(format_table(report))
    print(verdict_line(report["summary"]))
    if args.output:
        write_json(report, args.output)
        print(f"wrote {args.output}")
    return 0


def format_table(report: dict) -> str:
    """The summary as a small fixed-width table, with the visibility line under it."""
    from .evaluation import TARGET_RATIO

    seeded = len(report.get("seeds", ())) > 1
    header = (
        f"{'victim':<14}{'defense':<12}" + (f"{'seed':>6}" if seeded else "")
        + f"{'clean best':>11}{'prot. best':>11}{'clean last':>11}{'prot. last':>11}"
        f"{'ratio':>8}{'clean fit':>10}{'prot. fit':>10}{'prot. on clean':>15}"
    )
    lines = [header, "-" * len(header)]
    for row in report["summary"]:
        lines.append(
            f"{row['victim']:<14}{row['defense']:<12}" + (f"{row['seed']:>6}" if seeded else "")
            + f"{row['clean_best']:>11.4f}{row['protected_best']:>11.4f}"
            f"{row['clean_final']:>11.4f}{row['protected_final']:>11.4f}{_fmt(row['ratio_best']):>8}"
            f"{row['clean_train_dsc']:>10.4f}{row['protected_train_dsc']:>10.4f}{row['protected_clean_train_dsc']:>15.4f}"
        )
    if len(report["labels"]) > 1:
        for row in report["summary"]:
            by_label = ", ".join(f"{name} {_fmt(value)}" for name, value in row["ratio_best_by_label"].items())
            seed = f" seed {row['seed']}" if seeded else ""
            lines.append(f"{row['victim']} / {row['defense']}{seed}: ratio by label (each label's best epoch): {by_label}")
    for row in report.get("over_seeds", []):
        lines.append(
            f"{row['victim']} / {row['defense']} over seeds {', '.join(map(str, row['seeds']))}: ratio mean "
            f"{_fmt(row['ratio_best_mean'])} (lowest {_fmt(row['ratio_best_min'])}, highest {_fmt(row['ratio_best_max'])}); "
            f"ratio <= {TARGET_RATIO:g} with {row['seeds_on_target']} of {len(row['seeds'])} seeds"
        )
    q = report["quality"]
    lines.append(
        f"protected vs clean training images: mean PSNR {q['psnr_db_mean']:.2f} dB, mean SSIM {q['ssim_mean']:.5f}, "
        f"max |change| {q['max_abs_change']:.4g}; {report['train_cases']} training cases, "
        f"{report['test_cases']} test cases ({report['test_source']})"
    )
    return "\n".join(lines)


def verdict_line(summary: list[dict]) -> str:
    """How many trained victims the protection stopped (best-epoch ratio at most the target); a lone failure says so."""
    from .evaluation import TARGET_RATIO

    ratios = [row["ratio_best"] for row in summary]
    stopped = sum(1 for r in ratios if r <= TARGET_RATIO)
    runs = "run" if any(row["defense"] != "none" for row in summary) else "victim"
    line = f"stopped {stopped} of {len(ratios)} {runs}s (ratio <= {TARGET_RATIO:.2f})"
    if len(ratios) == 1 and not stopped:
        line += f": not protected (ratio {_fmt(ratios[0])})"
    return line


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"
