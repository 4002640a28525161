"""Protect an nnU-Net v2 raw dataset with 3D Slicer in batch mode (no main window).

    Slicer --no-splash --no-main-window --python-script UMedProtect/Scripts/protect_batch.py \\
        -- IN_DIR -o OUT_DIR [--protector FILE] [--epsilon E] [--band-radius B] [--min-psnr DB] [--device auto] ...

The same pipeline as ``umedprotect protect-dataset`` (``umedprotect.dataset_protection``): the
output has the input's layout (protected training images, byte-identical labels, dataset.json and
test files) and a manifest updated after every case, so rerunning the same command resumes an
interrupted run and skips finished cases; a folder lock keeps two runs apart. The result is then
verified against the source (hashes, geometry, labels, and every change within its budget).
Missing Python packages are installed first, through the module's logic (PyTorch through the
PyTorch extension).

Exit codes: 0 protected and verified, 1 unexpected error, 2 bad input (one line, nothing
written), 3 verification found discrepancies, 130 interrupted. It always exits, so a windowless
Slicer never hangs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

from umedprotect.exit_codes import EXIT_BAD_INPUT, EXIT_DISCREPANCIES, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """protect-dataset's arguments (the protection options come from the product's settings table)."""
    from umedprotect.cli.protect import add_protection_options
    from umedprotect.cli.protect_dataset import add_victim_grid_option

    parser = argparse.ArgumentParser(
        prog="protect_batch.py",
        description="Protect an nnU-Net v2 raw dataset (resumable, with a manifest) and verify the result.",
    )
    parser.add_argument("input", type=Path, metavar="IN_DIR", help="nnU-Net v2 raw dataset folder")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR", help="output dataset folder")
    add_protection_options(parser)
    add_victim_grid_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the script's arguments (a leading ``--`` separating them from Slicer's is dropped)."""
    return build_parser().parse_args(argv[1:] if argv and argv[0] == "--" else argv)


def run(args: argparse.Namespace, log=print) -> int:
    """Protect the dataset, resuming an earlier run into the same folder, then verify it; the exit code."""
    from umedprotect.cli.protect import settings_from
    from umedprotect.cli.protect_dataset import dataset_settings
    from umedprotect.dataset_protection import protect_dataset, verify
    from umedprotect.methods import DEFAULT_METHOD, setup_method
    from umedprotect.nnunet import read_dataset

    settings = dataset_settings(settings_from(args), read_dataset(args.input), args.victim_grid, log)
    setup = setup_method(DEFAULT_METHOD, settings)
    manifest = protect_dataset(
        args.input,
        args.output,
        setup.case_protector,
        setup.method,
        setup.parameters,
        protector_info=setup.protector_info,
        device=setup.device,
        allow_empty=args.allow_empty,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    for case_id, entry in manifest.cases.items():
        for image in entry.images or []:
            psnr, change = f"{image.worst_psnr_db:.1f}", f"{image.max_abs_change:.4g}"
            log(f"{image.output}: {entry.status}, PSNR {psnr} dB, max change {change}")
        if not entry.images:
            log(f"{case_id}: {entry.status}")
    problems = verify(args.output, args.input)
    for problem in problems:
        log(f"discrepancy: {problem}")
    if problems:
        return EXIT_DISCREPANCIES
    log(f"done: {args.output} holds {len(manifest.cases)} case(s), verified against {args.input}")
    return EXIT_OK


class OneLineFormatter(logging.Formatter):
    """``protect_batch: warning: ...``, as the command line words the product's messages."""

    def format(self, record: logging.LogRecord) -> str:
        return f"protect_batch: {record.levelname.lower()}: {' '.join(record.getMessage().split())}"


@contextlib.contextmanager
def product_messages_on_stderr() -> Iterator[None]:
    """The product's warnings and notes (empty masks skipped, a run resumed) as one line each on stderr."""
    logger = logging.getLogger("umedprotect")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter())
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def ensure_dependencies() -> None:
    """Install the product's missing packages without asking (batch mode), through the module's logic."""
    from UMedProtectLib.Logic import UMedProtectLogic

    UMedProtectLogic().ensureDependencies(askConfirmation=False)


def main(argv: list[str]) -> int:
    """Install what is missing, parse, run, and turn every outcome into an exit code."""
    try:
        ensure_dependencies()
        from umedprotect.cli import option_message
        from umedprotect.errors import Cancelled, InputError

        try:
            args = parse_args(argv)
        except SystemExit as stop:  # argparse: --help (0) or a usage error (2)
            return int(stop.code or 0)
        try:
            with product_messages_on_stderr():
                return run(args)
        except InputError as error:
            print(f"protect_batch: error: {option_message(error)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except Cancelled:
            return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
