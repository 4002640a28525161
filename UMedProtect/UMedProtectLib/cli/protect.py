"""``umedprotect protect``: one image + mask -> protected image (+ heatmap PNG, + JSON report)."""

from __future__ import annotations

import argparse
import functools
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import io
from ..devices import DEVICE_CHOICES, describe_devices, resolve_device
from ..errors import InputError
from ..metrics import psnr_text

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
            "(segments become labels 1, 2, ... in file order). OUTPUT: .nii.gz, .nii, .nrrd or .mha."
        ),
    )
    parser.add_argument("image", metavar="IMAGE", help="image file or DICOM series folder")
    parser.add_argument("mask", metavar="MASK", help="label map file or Slicer .seg.nrrd on the image")
    parser.add_argument("-o", "--output", metavar="OUTPUT", required=True, help="protected image file to write")
    add_protection_options(parser)
    parser.add_argument("--heatmap", metavar="PNG", help="also write a preview: original | |perturbation| | protected")
    parser.add_argument("--report", metavar="JSON", help="also write a JSON report (inputs, hashes, parameters, metrics)")
    parser.add_argument("--resample-mask", action="store_true", help="resample a mask on another grid onto the image (nearest neighbour) instead of refusing it")
    parser.add_argument("--series-uid", metavar="UID", help="DICOM series to read when the IMAGE folder holds several")
    parser.set_defaults(func=run)


def add_protection_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``protect`` and ``protect-dataset``."""
    parser.add_argument("--protector", metavar="PATH", help="protector file (.safetensors); default: the bundled protector")
    parser.add_argument("--epsilon", type=float, metavar="E", help="budget in 1/255 of the case's intensity window (default: the protector's, 4)")
    parser.add_argument("--band-radius", type=int, metavar="PX", help="contour band half-width in pixels (default: the protector's, 3)")
    parser.add_argument("--labels", type=parse_labels, metavar="1,2", help="protect only these label values (default: every non-zero label)")
    parser.add_argument("--min-psnr", type=float, metavar="DB", help="scale the perturbation down where a case's PSNR would fall below this -- a 2D image's, or "
                        "every slice's of a volume (e.g. 50; default: no floor)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device (default: auto = CUDA if available, else CPU)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed; same inputs + protector + seed give byte-identical outputs (default 0)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="slices per forward pass (default 16)")
    parser.add_argument("--allow-empty", action="store_true", help="write images whose mask is empty unchanged (default: refuse/skip them with a warning)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: refuse)")


def parse_labels(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of label values") from None
    if not values or values[0] <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive label values, e.g. 1,2")
    return values


def umed_setup(args: argparse.Namespace) -> tuple[functools.partial, dict, dict, str]:
    """Case protector, recorded parameters, protector provenance and device name for UMed options."""
    import torch

    from ..protect import MIN_PSNR_RANGE, protect_array
    from ..protector import DEFAULT_PROTECTOR_PATH, load_protector, protector_summary

    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    protector_path = Path(args.protector) if args.protector else DEFAULT_PROTECTOR_PATH
    protector = load_protector(protector_path, device=device)
    epsilon = protector.config.epsilon if args.epsilon is None else args.epsilon
    band_radius = protector.config.band_radius if args.band_radius is None else args.band_radius
    if not 0 < epsilon <= 64:
        raise InputError(f"--epsilon {epsilon} is out of range (0, 64] (units of 1/255 of the intensity window)")
    if not 0 <= band_radius <= 32:
        raise InputError(f"--band-radius {band_radius} is out of range [0, 32] pixels")
    low, high = MIN_PSNR_RANGE
    if args.min_psnr is not None and not low <= args.min_psnr <= high:
        raise InputError(f"--min-psnr {args.min_psnr} is out of range [{low:g}, {high:g}] dB")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size} must be at least 1")
    case_protector = functools.partial(
        protect_array,
        protector=protector,
        epsilon=epsilon,
        band_radius=band_radius,
        label_values=args.labels,
        min_psnr=args.min_psnr,
        device=str(device),
        batch_size=args.batch_size,
    )
    parameters = {"epsilon": epsilon, "band_radius": band_radius, "labels": args.labels, "min_psnr": args.min_psnr, "seed": args.seed}
    info = {
        "path": "bundled default" if args.protector is None else str(protector_path),
        "sha256": io.sha256(protector_path),
        "summary": protector_summary(protector),
    }
    return case_protector, parameters, info, f"{device} ({describe_devices()})"


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    image_path, mask_path = Path(args.image), Path(args.mask)
    outputs = _check_outputs(args, [image_path, mask_path])
    image = io.read_image(image_path, args.series_uid)
    label_image = io.read_label(mask_path, image, resample=args.resample_mask)
    array, spacing = io.to_array(image)
    labels, _ = io.to_array(label_image)
    present = {int(v) for v in np.unique(labels)} - {0}
    if args.labels:
        missing = sorted(set(args.labels) - present)
        if missing:
            raise InputError(f"{mask_path}: labels {missing} not in the mask (it holds {sorted(present) or 'none'})")
    case_protector, parameters, protector_info, device = umed_setup(args)
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
            "output": {"path": str(outputs["output"]), "sha256": io.sha256(outputs["output"])},
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


def _check_outputs(args: argparse.Namespace, inputs: list[Path]) -> dict[str, Path]:
    """Validate every output path before any work: format, writable folder, no clobbering, not an input."""
    outputs = {"output": io.check_output_path(args.output, args.overwrite)}
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
