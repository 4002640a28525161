"""``umedprotect verify``: re-check a protected dataset against its manifest."""

from __future__ import annotations

import argparse

from ..exit_codes import EXIT_DISCREPANCIES, EXIT_OK

SUMMARY = "re-check a protect-dataset output against its manifest"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..dataset_protection import MANIFEST_NAME

    parser = subparsers.add_parser(
        "verify",
        help=SUMMARY,
        description=(
            f"Re-check OUT_DIR against its {MANIFEST_NAME}: the run finished, every output and label hash matches, "
            "no case is missing or extra, and every image header has the recorded geometry. With the source dataset "
            "(--source, default: the path recorded in the manifest, if it exists) also: labels, dataset.json and "
            "test files byte-identical to the source, source unchanged, geometry and pixel type identical, "
            "and |protected - source| within each case's budget. A folder written by protect-dataset --shard K/N "
            "holds one manifest part per shard: they are merged, and a missing or unfinished shard is a discrepancy. "
            "Exit 0 when all is well, 3 when discrepancies were found (each printed on one line)."
        ),
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="a protect-dataset output folder")
    parser.add_argument("--source", metavar="IN_DIR", help="the source dataset (default: as recorded in the manifest)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..dataset_protection import verify

    problems = verify(args.out_dir, args.source)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{args.out_dir}: {len(problems)} discrepancy(ies) found")
        return EXIT_DISCREPANCIES
    print(f"{args.out_dir}: verified, no discrepancies")
    return EXIT_OK
