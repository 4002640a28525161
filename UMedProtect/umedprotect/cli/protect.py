"""``umedprotect protect``: one image + mask -> protected image (+ heatmap PNG, + JSON report)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import dicom_series, io
from ..errors import InputError
from ..methods import DEFAULT_METHOD, setup_method
from ..metrics import psnr_text
from ..settings import DEVICE_CHOICES, OPTIONS, ProtectionSettings

OUTPUT_FORMATS = ("auto", "dicom")

log = logging.getLogger("umedprotect")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "protect",
        help="protect one image or volume given its segmentation mask",
        description=(
            "Protect one 2D image or 3D volume inside the ROI of its mask and the contour band around it. "
            "Voxels outside ROI + band are bit-identical to the input; the output keeps size, spacing, origin, "
            "direction and pixel type. IMAGE: any SimpleITK format (NIfTI, NRRD, MHA, ...) or a DICOM series "
            "folder. MASK: a label map (every non-zero label is protected unless --labels) or a Slicer .seg.nrrd "
            "(segments become labels 1, 2, ... in file order), a DICOM SEG or an RTSTRUCT (segment and ROI numbers "
            "become labels; choose some with --segments). OUTPUT: .nii.gz, .nii, .nrrd or .mha, or a folder (existing, "
            "or ending with /) for a protected DICOM series that files beside the source series (DICOM IMAGE only)."
        ),
    )
    parser.add_argument("image", metavar="IMAGE", help="image file or DICOM series folder")
    parser.add_argument("mask", metavar="MASK", help="label map, Slicer .seg.nrrd, DICOM SEG or RTSTRUCT file")
    parser.add_argument("-o", "--output", metavar="OUTPUT", required=True, help="protected image file or DICOM folder")
    parser.add_argument(
        "--output-format", choices=OUTPUT_FORMATS, default="auto",
        help="dicom: a DICOM series in the OUTPUT folder; auto (default): a DICOM series when OUTPUT is a folder, "
        "else the format of OUTPUT's extension",
    )  # fmt: skip
    parser.add_argument(
        "--segments", type=parse_segments, metavar="NAMES",
        help="DICOM SEG segments or RTSTRUCT ROIs to read from MASK, by name or number, e.g. Liver,Tumor "
        "(default: all)",
    )  # fmt: skip
    add_protection_options(parser)
    parser.add_argument("--heatmap", metavar="PNG", help="also write a preview: original | |perturbation| | protected")
    parser.add_argument("--report", metavar="JSON", help="also write a JSON report (inputs, hashes, parameters, metrics)")
    parser.add_argument("--resample-mask", action="store_true", help="resample a mask on another grid onto the image (nearest neighbour) instead of refusing it")
    parser.add_argument("--series-uid", metavar="UID", help="DICOM series to read when the IMAGE folder holds several")
    parser.set_defaults(func=run)


def add_protection_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``protect`` and ``protect-dataset``, built from the settings table."""
    parser.add_argument("--protector", metavar="PATH", help="protector file (.safetensors); default: the bundled protector")
    for name in ("epsilon", "band_radius"):
        option = OPTIONS[name]
        parser.add_argument(option.flag, type=option.kind, metavar=name[0].upper(), help=option.help)
    parser.add_argument("--labels", type=parse_labels, metavar="1,2", help="protect only these label values (default: every non-zero label)")
    option = OPTIONS["min_psnr"]
    parser.add_argument(option.flag, type=float, metavar="DB", help=option.help)
    parser.add_argument("--device", choices=DEVICE_CHOICES, default=OPTIONS["device"].default, help=OPTIONS["device"].help)
    for name in ("seed", "batch_size"):
        option = OPTIONS[name]
        parser.add_argument(option.flag, type=option.kind, default=option.default, metavar="N", help=option.help)
    parser.add_argument("--allow-empty", action="store_true", help="write images whose mask is empty unchanged (default: refuse/skip them with a warning)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: refuse)")


def parse_segments(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}: give segment names or numbers, e.g. Liver,Tumor")
    return names


def parse_labels(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of label values") from None
    if not values or values[0] <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive label values, e.g. 1,2")
    return values


def settings_from(args: argparse.Namespace) -> ProtectionSettings:
    """The protection settings given on the command line."""
    return ProtectionSettings(
        protector=args.protector,
        epsilon=args.epsilon,
        band_radius=args.band_radius,
        labels=None if args.labels is None else tuple(args.labels),
        min_psnr=args.min_psnr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
    )


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    image_path, mask_path = Path(args.image), Path(args.mask)
    dicom_output = io.is_dicom_output(args.output, args.output_format)
    if dicom_output and not image_path.is_dir():
        raise InputError(f"{image_path}: a DICOM output needs a DICOM series folder as IMAGE (its tags are copied)")
    outputs = _check_outputs(args, [image_path, mask_path], dicom_output)
    source = dicom_series.read_source(image_path, args.series_uid) if dicom_output else None
    image = io.read_image(image_path, args.series_uid)
    label_image = io.read_label(mask_path, image, resample=args.resample_mask, segments=args.segments)
    array, spacing = io.to_array(image)
    labels, _ = io.to_array(label_image)
    present = {int(v) for v in np.unique(labels)} - {0}
    if args.labels:
        missing = sorted(set(args.labels) - present)
        if missing:
            raise InputError(f"{mask_path}: labels {missing} not in the mask (it holds {sorted(present) or 'none'})")
    setup = setup_method(DEFAULT_METHOD, settings_from(args))
    case_protector, parameters, protector_info, device = setup.case_protector, setup.parameters, setup.protector_info, setup.device
    read_s = time.perf_counter() - started

    if not present:
        if not args.allow_empty:
            raise InputError(f"{mask_path}: mask is empty; nothing to protect (use --allow-empty to write the image unchanged)")
        log.warning(f"{mask_path}: mask is empty; {args.output} is the unchanged image (--allow-empty)")
    with tqdm(desc="protect", unit="slice", disable=None, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = case_protector(array, labels, spacing=spacing, progress=progress)  # empty mask: image unchanged
    protect_s = time.perf_counter() - started - read_s

    if dicom_output:
        sha = protector_info["sha256"] if protector_info else None
        description = dicom_series.derivation_description(setup.method, parameters, sha)
        dicom_series.write_series(result.protected, image, source, outputs["output"], description, args.overwrite)
    else:
        io.write_like(result.protected, image, outputs["output"], overwrite=args.overwrite)
    if args.heatmap:
        from ..preview import save_heatmap_png

        save_heatmap_png(array, result.protected, result.region, outputs["heatmap"], result.metrics, result.slice_axis, overwrite=args.overwrite)
    if args.report:
        report = {
            "command": "umedprotect protect",
            "inputs": {
                "image": {"path": str(image_path), "sha256": io.input_sha256(image_path), **io.image_info(image)},
                "mask": {"path": str(mask_path), "sha256": io.input_sha256(mask_path), "labels": sorted(present), "resampled": args.resample_mask},
            },
            "output": {"path": str(outputs["output"]), "sha256": io.input_sha256(outputs["output"])},
            "heatmap": str(outputs["heatmap"]) if args.heatmap else None,
            "parameters": parameters,
            "protector": protector_info,
            "metrics": result.metrics,
            "versions": io.software_versions(),
            "device": device,
            "timing_s": {"read": round(read_s, 3), "protect": round(protect_s, 3), "total": round(time.perf_counter() - started, 3)},
        }
        io.write_json(report, outputs["report"], overwrite=args.overwrite)
    m = result.metrics
    print(f"{outputs['output']}: PSNR {psnr_text(m)}, SSIM {m['ssim']:.4f}, max change {m['max_abs_change']:.4g}")
    return 0


def _check_outputs(args: argparse.Namespace, inputs: list[Path], dicom_output: bool) -> dict[str, Path]:
    """Validate every output path before any work: format, writable folder, no clobbering, not an input."""
    check = dicom_series.check_output_folder if dicom_output else io.check_output_path
    outputs = {"output": check(args.output, args.overwrite)}
    if args.heatmap:
        outputs["heatmap"] = io.check_output_path(args.heatmap, args.overwrite, endings=(".png",))
    if args.report:
        outputs["report"] = io.check_output_path(args.report, args.overwrite, endings=(".json",))
    resolved_inputs = {p.resolve() for p in inputs}
    seen = set()
    for name, path in outputs.items():
        resolved = path.resolve()
        if resolved in resolved_inputs or any(resolved.is_relative_to(p) for p in resolved_inputs if p.is_dir()):
            raise InputError(f"{path}: --{name} would overwrite an input")
        if resolved in seen:
            raise InputError(f"{path}: the same file is given for two outputs")
        seen.add(resolved)
    return outputs
