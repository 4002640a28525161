"""The CT normalisation a victim derives from each dataset's training foreground (nnU-Net: foreground percentiles,
mean, std), one line per dataset.

    python -m benchmarks.ct_statistics DATASET [DATASET ...] > ct_statistics.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from umedprotect.errors import InputError
from umedprotect.nnunet import read_dataset
from umedprotect.slices import ct_statistics, load_slices


def statistics_line(dataset: Path) -> str:
    """``DATASET: clip LO .. HI HU, mean M, std S`` for one nnU-Net raw dataset."""
    lo, hi, mean, std = ct_statistics(load_slices(read_dataset(dataset).training))
    return f"{dataset}: clip {lo:.0f} .. {hi:.0f} HU, mean {mean:.1f}, std {std:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", type=Path, nargs="+", help="nnU-Net raw dataset folders")
    args = parser.parse_args(argv)
    try:
        lines = [statistics_line(dataset) for dataset in args.datasets]
    except InputError as error:
        parser.error(str(error))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
