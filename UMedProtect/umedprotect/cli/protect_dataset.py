"""``umedprotect protect-dataset``: protect every training case of an nnU-Net v2 raw dataset."""

from __future__ import annotations

import argparse
import logging

from ..dataset_protection import MANIFEST_NAME, protect_dataset
from ..errors import InputError
from ..methods import DEFAULT_METHOD, method_names, setup_method
from ..nnunet import read_dataset
from .protect import OUTPUT_FORMATS, add_protection_options, settings_from

log = logging.getLogger("umedprotect")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "protect-dataset",
        help="protect an nnU-Net v2 raw dataset (resumable, with a manifest)",
        description=(
            "Protect every training image of an nnU-Net v2 raw dataset (dataset.json, imagesTr/CASE_0000.ext, "
            "labelsTr/CASE.ext). OUT_DIR gets the same layout: protected images (every channel), byte-identical "
            f"labels and dataset.json, imagesTs/labelsTs copied unchanged, and {MANIFEST_NAME} (parameters, "
            "protector hash, per-case PSNR/SSIM/max change, input and output SHA-256, versions, device). "
            "The manifest is updated after every case: rerun the same command after an interruption to resume. "
            "Cases with an empty mask are skipped with a warning unless --allow-empty; mask values not declared "
            "in dataset.json are refused."
        ),
    )
    parser.add_argument("in_dir", metavar="IN_DIR", help="nnU-Net v2 raw dataset folder")
    parser.add_argument("-o", "--output", metavar="OUT_DIR", required=True, help="output dataset folder")
    parser.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        choices=method_names(),
        help="protection method (default umed; the others are baselines for comparison, "
        "which take --epsilon, --device and --seed but not --protector, --band-radius, --labels or --min-psnr)",
    )
    add_protection_options(parser)
    parser.add_argument(
        "--output-format", choices=OUTPUT_FORMATS, default="auto",
        help="auto (default): the dataset's own file format. dicom is refused: nnU-Net datasets hold image files, "
        "so protect DICOM series one at a time with 'umedprotect protect'",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.output_format == "dicom":
        raise InputError(
            "dicom: nnU-Net datasets hold image files (dataset.json file_ending), not DICOM series; "
            "protect each series with 'umedprotect protect SERIES MASK -o OUT_DIR/'",
            option="output_format",
        )
    settings = settings_from(args)
    dataset = None if args.method == DEFAULT_METHOD else read_dataset(args.in_dir)
    setup = setup_method(args.method, settings, dataset)
    case_protector, parameters, protector_info, device = setup.case_protector, setup.parameters, setup.protector_info, setup.device
    manifest = protect_dataset(
        args.in_dir,
        args.output,
        case_protector,
        args.method,
        parameters,
        protector_info=protector_info,
        device=device,
        allow_empty=args.allow_empty,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    done = [e for e in manifest["cases"].values() if e["status"] == "protected"]
    psnr = [i.get("psnr_db_slice_min", i["psnr_db"]) for e in done for i in e["images"]]  # a volume's worst slice
    summary = f"{args.output}: {len(done)} case(s) protected with {args.method}"
    if psnr:
        summary += f", PSNR min {min(psnr):.1f} dB (per image; per slice for volumes)"
    print(summary)
    return 0
