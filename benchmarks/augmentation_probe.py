"""Diagnostic: does a protected dataset stop a victim trained WITHOUT augmentation?

Not a protection claim (METHOD.md: never claim protection from an un-augmented victim) but a
way to tell two failures apart: if the protection stops the un-augmented victim and not the
augmented one, the perturbation is a shortcut that augmentation washes out; if it stops neither,
the fitted perturbation is no shortcut at all. The defaults are the study's `small` training
schedule, so its augmented row (benchmarks/results/small) is the counterpart.

    python -m benchmarks.augmentation_probe CLEAN_DIR PROTECTED_DIR -o probe.json [--epochs 8 --iterations 20]
        [--victim unet-small --optimizer adam --learning-rate 0.003 --patch-size 96]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from umedprotect.augment import NO_AUGMENTATION
from umedprotect.io import write_json
from umedprotect_eval.evaluation import evaluate
from umedprotect_eval.training import DEFAULT_LEARNING_RATES, TrainSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clean_dir", type=Path)
    parser.add_argument("protected_dir", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSON report")
    parser.add_argument("--victim", default="unet")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--optimizer", choices=tuple(DEFAULT_LEARNING_RATES), default="sgd")
    parser.add_argument("--learning-rate", type=float, help="default: sgd 0.01, adam 0.001")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    settings = TrainSettings(
        epochs=args.epochs,
        iterations_per_epoch=args.iterations,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        device=args.device,
    )
    report = evaluate(
        args.clean_dir, args.protected_dir, victims=[args.victim], settings=replace(settings, augment=NO_AUGMENTATION)
    )
    row = report["summary"][0]
    print(
        f"no augmentation: clean best {row['clean_best']:.4f}  protected best {row['protected_best']:.4f}  "
        f"ratio {row['ratio_best']:.3f}  protected fit {row['protected_train_dsc']:.4f}  "
        f"on clean versions {row['protected_clean_train_dsc']:.4f}"
    )
    write_json(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
