"""The first-epoch race, over many victim seeds: test DSC after the first epoch of the protected victim.

With a contour texture near its threshold budget the victim's later epochs are ≈ 0, so its best
epoch -- the ratio's numerator -- is nearly always the first: whether it learned the anatomy or the
texture in its first 100 iterations. Which one wins is decided by differences as small as the victim's seed, so a
pattern is judged by how often it wins over several seeds. This trains only that first epoch (same
schedule, learning-rate decay included, as `umedprotect evaluate`'s 5 x 100 iterations on
Dataset005), one victim per seed, and prints one JSON line: the mean PSNR of the protected training
cases and the first-epoch test DSC per seed. Give the clean dataset as PROTECTED for the reference.

    python benchmarks/first_epoch_race.py CLEAN PROTECTED --seeds 0 1 2 3 4 5 >> race.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "UMedProtect"))

from UMedProtectLib.evaluation import EvaluationData, TrainSettings, load_evaluation_data, train_victim  # noqa: E402

SCHEDULE = TrainSettings(epochs=5, iterations_per_epoch=100, batch_size=8, patch_size=96, optimizer="adam",
                         learning_rate=0.003, device="cpu")  # fmt: skip -- Dataset005's (commands.sh)


class FirstEpochDone(Exception):
    """Raised from the progress callback to stop training after the first epoch."""


def first_epoch_dsc(data: EvaluationData, settings: TrainSettings) -> float:
    """Test DSC of a ``unet-small`` victim trained on the protected cases, after its first epoch of ``settings``."""
    result = {}

    def stop(run_name: str, epoch: int, epochs: int, dsc: float) -> None:
        result["dsc"] = dsc
        raise FirstEpochDone

    try:
        train_victim(data.protected, data.test, "unet-small", data.n_classes, settings, stop, "protected", data.normalisation)
    except FirstEpochDone:
        pass
    return result["dsc"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clean", type=Path, help="clean nnU-Net raw dataset with labelled test cases")
    parser.add_argument("protected", type=Path, help="its protected copy (or the clean one itself)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5], help="victim seeds")
    parser.add_argument("--device", default=SCHEDULE.device, help="compute device (default %(default)s)")
    args = parser.parse_args(argv)
    data = load_evaluation_data(args.clean, args.protected)
    dsc = [round(first_epoch_dsc(data, replace(SCHEDULE, seed=seed, device=args.device)), 3) for seed in args.seeds]
    line = {"protected": str(args.protected), "psnr": round(data.quality["psnr_db_mean"], 2), "seeds": args.seeds, "first_epoch": dsc}
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
