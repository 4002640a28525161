"""Screen a fixed pattern quickly: train only the protected victim and print one JSON line.

`umedprotect evaluate` trains a clean and a protected victim; with a fixed seed the clean one is
the same every time (Dataset005: best 0.868, `results/liver5/dim.json`), so screening many
patterns only needs the protected half. The line holds the mean PSNR, the per-epoch test DSC
("curve"), the fit check ("fit": DSC on protected training cases; "on_clean": on their clean
versions) and the CT statistics the victim derives (clip low/high, mean, std, HU). Patterns worth
keeping are then measured with `umedprotect evaluate` (commands.sh). Schedule: as Dataset005's.

    python -m benchmarks.pattern_screen DATASET OUT_ROOT PATTERN EPSILON [--seed N] >> screen.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.fixed_patterns import PATTERNS, write_protected_copy
from umedprotect.slices import ct_statistics
from umedprotect_eval.evaluation import load_evaluation_data
from umedprotect_eval.training import TrainSettings, train_victim

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="clean nnU-Net raw dataset with labelled test cases")
    parser.add_argument("out_root", type=Path, help="the protected copy is written to OUT_ROOT/<pattern>_e<epsilon>")
    parser.add_argument("pattern", choices=PATTERNS)
    parser.add_argument("epsilon", type=float, help="budget in 1/255 of each case's window")
    parser.add_argument("--seed", type=int, default=0, help="victim seed")
    args = parser.parse_args(argv)
    out = args.out_root / f"{args.pattern}_e{args.epsilon:g}"
    write_protected_copy(args.dataset, out, args.pattern, args.epsilon)
    data = load_evaluation_data(args.dataset, out)
    settings = TrainSettings(
        epochs=5,
        iterations_per_epoch=100,
        batch_size=8,
        patch_size=96,
        optimizer="adam",
        learning_rate=0.003,
        device="cpu",
        seed=args.seed,
    )
    run = train_victim(
        data.protected,
        data.test,
        "unet-small",
        data.n_classes,
        settings,
        None,
        "protected",
        data.normalisation,
        data.clean,
    )

    def rounded(values, digits=3):
        return [round(v, digits) for v in values]

    line = {
        "pattern": args.pattern,
        "eps": args.epsilon,
        "seed": args.seed,
        "psnr": round(data.quality["psnr_db_mean"], 2),
        "curve": rounded(run.curve),
        "fit": rounded(run.train_curve),
        "on_clean": rounded(run.clean_train_curve),
        "stats": rounded(ct_statistics(data.protected), 1),
    }
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
