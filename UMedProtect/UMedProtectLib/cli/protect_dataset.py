"""``umedprotect protect-dataset``: protect every training case of an nnU-Net v2 raw dataset."""

from __future__ import annotations

import argparse
import importlib.util
import logging

import torch

from ..dataset_protection import MANIFEST_NAME, protect_dataset
from ..devices import describe_devices, resolve_device
from ..errors import InputError
from ..nnunet import read_dataset
from .protect import add_protection_options, umed_setup

log = logging.getLogger("umedprotect")


def method_names() -> list[str]:
    """``umed`` plus the baseline methods, when the baselines module is installed."""
    names = ["umed"]
    if importlib.util.find_spec(f"{__package__.rsplit('.', 1)[0]}.baselines") is not None:
        from .. import baselines

        names += [n for n in baselines.METHOD_NAMES if n != "umed"]
    return names


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
        default="umed",
        choices=method_names(),
        help="protection method (default umed; the others are baselines for comparison, "
        "which take --epsilon, --device and --seed but not --protector, --band-radius, --labels or --min-psnr)",
    )
    add_protection_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.method == "umed":
        case_protector, parameters, protector_info, device = umed_setup(args)
    else:
        from .. import baselines

        umed_only = (("--protector", args.protector), ("--band-radius", args.band_radius), ("--labels", args.labels),
                     ("--min-psnr", args.min_psnr))  # fmt: skip
        for option, value in umed_only:
            if value is not None:
                raise InputError(f"{option} applies to --method umed only, not to the {args.method} baseline")
        torch.manual_seed(args.seed)
        epsilon = 4.0 if args.epsilon is None else args.epsilon
        if not 0 < epsilon <= 64:
            raise InputError(f"--epsilon {epsilon} is out of range (0, 64] (units of 1/255 of the intensity window)")
        torch_device = resolve_device(args.device)
        dataset = read_dataset(args.in_dir)
        case_protector = baselines.build_case_protector(args.method, dataset, epsilon, str(torch_device), args.seed)
        parameters = {"epsilon": epsilon, "labels": args.labels, "seed": args.seed}
        protector_info, device = None, f"{torch_device} ({describe_devices()})"
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
