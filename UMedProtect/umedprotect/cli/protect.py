"""``umedprotect protect``: one image + mask -> protected image (+ heatmap PNG, + JSON report)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..settings import ProtectionSettings
from . import add_option

if TYPE_CHECKING:
    import numpy as np

SUMMARY = "protect one image or volume given its segmentation mask"
OUTPUT_FORMATS = ("auto", "dicom")

log = logging.getLogger("umedprotect")
MAX_LABELS = 255  # more distinct mask values than this: most likely an image, not a label map
LOW_PSNR_DB = 50.0  # below this a change may be visible: warned about


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..settings import WINDOW_CHOICES

    parser = subparsers.add_parser(
        "protect",
        help=SUMMARY,
        description=(
            "Protect one 2D image or 3D volume inside the ROI of its mask and the contour band around it. "
            "Voxels outside ROI + band are bit-identical to the input; the output keeps size, spacing, origin, "
            "direction and pixel type. IMAGE: any SimpleITK format (NIfTI, NRRD, MHA, ...), a DICOM series "
            "folder, or a 2D grey-level PNG or TIFF (8 or 16 bit). MASK: a label map (every non-zero label is "
            "protected unless --labels), a Slicer .seg.nrrd (segments become labels 1, 2, ... in file order), a DICOM "
            "SEG or an RTSTRUCT (segment and ROI numbers become labels; choose some with --segments). OUTPUT: .nii.gz, "
            ".nii, .nrrd or .mha; for a PNG or TIFF IMAGE also its own format (bit depth kept; TIFF keeps its "
            "resolution tags); or a folder (existing, or ending with /) for a protected DICOM series that files beside "
            "the source series (DICOM IMAGE only)."
        ),
    )
    parser.add_argument("image", metavar="IMAGE", help="image file or DICOM series folder")
    parser.add_argument("mask", metavar="MASK", help="label map, Slicer .seg.nrrd, DICOM SEG or RTSTRUCT file")
    parser.add_argument("-o", "--output", metavar="OUTPUT", required=True, help="protected image file or DICOM folder")
    parser.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        default="auto",
        help="dicom: a DICOM series in the OUTPUT folder; auto (default): a DICOM series when OUTPUT is a folder, "
        "else the format of OUTPUT's extension",
    )
    parser.add_argument(
        "--segments",
        type=parse_segments,
        metavar="NAMES",
        help="DICOM SEG segments or RTSTRUCT ROIs to read from MASK, by name or number, e.g. Liver,Tumor "
        "(default: all)",
    )
    add_protection_options(parser)
    parser.add_argument(
        "--heatmap", metavar="PNG", help="also write a preview of one slice: original | |change| over it | protected"
    )
    window_choices = "{" + ",".join(WINDOW_CHOICES) + "} or L,W"
    parser.add_argument(
        "--window",
        type=_window_option,
        default="auto",
        metavar=window_choices,
        help="grey-level window of the --heatmap (default auto: the DICOM window, else CT soft tissue "
        "L 40 W 400 for a CT, else the 0.5-99.5 intensity percentiles; L,W: level and width)",
    )
    parser.add_argument(
        "--slice", type=int, metavar="N", help="slice of the --heatmap (index as in Slicer; default: the most changed)"
    )
    parser.add_argument(
        "--report", metavar="JSON", help="also write a JSON report (inputs, hashes, parameters, metrics)"
    )
    parser.add_argument(
        "--resample-mask",
        action="store_true",
        help="resample a mask on another grid onto the image (nearest neighbour) instead of refusing it",
    )
    parser.add_argument("--series-uid", metavar="UID", help="DICOM series to read when the IMAGE folder holds several")
    parser.add_argument(
        "--many-labels",
        action="store_true",
        help=f"accept a mask with more than {MAX_LABELS} labels, or with as many distinct values "
        "as the image (refused by default: image and mask are likely swapped)",
    )
    parser.set_defaults(func=run)


def add_protection_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``protect`` and ``protect-dataset``, built from the settings table."""
    parser.add_argument(
        "--protector", metavar="PATH", help="protector file (.safetensors); default: the bundled protector"
    )
    add_option(parser, "codes")
    add_option(parser, "epsilon", metavar="E")
    add_option(parser, "band_radius", metavar="B")
    parser.add_argument(
        "--labels",
        type=parse_labels,
        metavar="1,2",
        help="protect only these label values (default: every non-zero label)",
    )
    add_option(parser, "min_psnr", metavar="DB")
    parser.add_argument(
        "--strength",
        type=float,
        metavar="U",
        help="raise the budget until the change's RMS reaches U units of the victim's normalisation (CT: the std "
        "of the case's clipped labelled voxels; else the case's std), before the PSNR floor; 0: off (default 0.6 "
        "for CT, 0.15 otherwise; off when --epsilon is given)",
    )
    add_option(parser, "device")
    add_option(parser, "seed", metavar="N")
    add_option(parser, "batch_size", metavar="N")
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="write images whose mask is empty unchanged (default: refuse/skip them with a warning)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs (default: refuse); protect-dataset also removes case files of an earlier "
        "run that the dataset no longer has",
    )


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


def settings_from(args: argparse.Namespace, victim_normalisation: str | None = None) -> ProtectionSettings:
    """The protection settings given on the command line, for a victim that normalises as said."""
    return ProtectionSettings(
        protector=args.protector,
        codes=args.codes,
        epsilon=args.epsilon,
        band_radius=args.band_radius,
        labels=None if args.labels is None else tuple(args.labels),
        min_psnr=args.min_psnr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        strength=args.strength,
        victim_normalisation=victim_normalisation,
    )


def run(args: argparse.Namespace) -> int:
    for name in (args.image, args.mask):
        if not Path(name).exists():  # before the readers are imported: a mistyped name answers at once
            raise InputError(f"{name}: file not found")
    from tqdm import tqdm

    from .. import dicom_series, io, raster
    from ..intensity import distinct_values
    from ..methods import DEFAULT_METHOD, setup_method
    from ..metrics import psnr_text
    from ..preview import check_slice_index, intensity_units
    from ..records import FileRecord, InputImageRecord, InputMaskRecord, ProtectionReport, ReportInputs
    from ..victim_units import image_normalisation

    started = time.perf_counter()
    image_path, mask_path = Path(args.image), Path(args.mask)
    dicom_output = io.is_dicom_output(args.output, args.output_format)
    if dicom_output and not image_path.is_dir():
        raise InputError(f"{image_path}: a DICOM output needs a DICOM series folder as IMAGE (its tags are copied)")
    outputs = _check_outputs(args, [image_path, mask_path], dicom_output)
    source = dicom_series.read_source(image_path, args.series_uid) if dicom_output else None
    image = io.read_image(image_path, args.series_uid)
    raster.check_raster_output(outputs["output"], image.GetDimension())
    label_image = io.read_label(mask_path, image, resample=args.resample_mask, segments=args.segments)
    array, spacing = io.to_array(image, copy=False)  # views: image and label_image stay alive in this scope
    labels, _ = io.to_array(label_image, copy=False)
    tags = dicom_display_tags(image_path, args.series_uid)
    present = {int(v) for v in distinct_values(labels)} - {0}
    if not args.many_labels:
        check_roles(array, present, image_path, mask_path)
    if args.labels:
        missing = sorted(set(args.labels) - present)
        if missing:
            raise InputError(f"{mask_path}: labels {missing} not in the mask (it holds {sorted(present) or 'none'})")
    if args.slice is not None:
        from ..array_protection import slice_axis_for

        check_slice_index(args.slice, array.shape, slice_axis_for(spacing, array.ndim))
    settings = settings_from(args, image_normalisation(array, tags.get("modality")))
    setup = setup_method(DEFAULT_METHOD, settings)
    case_protector, parameters, protector_info, device = (
        setup.case_protector,
        setup.parameters,
        setup.protector_info,
        setup.device,
    )
    print(f"device: {device}")
    read_s = time.perf_counter() - started

    if not present:
        resampled = args.resample_mask or mask_path.name.lower().endswith(io.SEGMENTATION_ENDING)
        problem = "does not overlap the image (no label left on the image grid)" if resampled else "mask is empty"
        if not args.allow_empty:
            raise InputError(
                f"{mask_path}: {problem}; nothing to protect (use --allow-empty to write the image unchanged)"
            )
        log.warning(f"{mask_path}: {problem}; {args.output} is the unchanged image (--allow-empty)")
    with tqdm(desc="protect", unit="slice", disable=None, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = case_protector(array, labels, spacing=spacing, progress=progress)  # empty mask: image unchanged
    protect_s = time.perf_counter() - started - read_s
    if present and result.metrics["max_abs_change"] == 0:
        if not args.allow_empty:
            m = result.metrics
            why = f"budget {result.budget:.3g} below one intensity step?"
            if "min_psnr_for_strength" in m:
                floor = m["min_psnr_for_strength"]
                why = f"the {m['min_psnr']:g} dB floor: {UNDER_ONE_LEVEL}; about --min-psnr {floor:g} would reach "
                why += "the strength that stopped victims"
            raise InputError(
                f"{image_path}: protection changed no voxel ({why}); nothing written "
                "(use --allow-empty to write the image unchanged)"
            )
        log.warning(f"{image_path}: protection changed no voxel; {args.output} is the unchanged image (--allow-empty)")

    with _all_or_nothing() as written:
        if dicom_output:
            sha = protector_info["sha256"] if protector_info else None
            description = dicom_series.derivation_description(setup.method, parameters, sha)
            written.append(
                dicom_series.write_series(
                    result.protected, image, source, outputs["output"], description, args.overwrite
                )
            )
        else:
            written.append(_write_image(result.protected, image, image_path, outputs["output"], args.overwrite))
        if args.heatmap:
            written.append(_save_heatmap(args, image, tags, array, result, spacing, outputs["heatmap"]))
        if args.report:
            report = ProtectionReport(
                inputs=ReportInputs(
                    image=InputImageRecord(str(image_path), io.input_sha256(image_path), **io.image_info(image)),
                    mask=InputMaskRecord(
                        str(mask_path), io.input_sha256(mask_path), sorted(present), args.resample_mask
                    ),
                ),
                output=FileRecord(str(outputs["output"]), io.input_sha256(outputs["output"])),
                heatmap=str(outputs["heatmap"]) if args.heatmap else None,
                parameters=parameters,
                protector=protector_info,
                metrics=result.metrics,
                versions=io.software_versions(),
                device=device,
                timing_s={
                    "read": round(read_s, 3),
                    "protect": round(protect_s, 3),
                    "total": round(time.perf_counter() - started, 3),
                },
            )
            outputs["report"].parent.mkdir(parents=True, exist_ok=True)
            written.append(report.write(outputs["report"], overwrite=args.overwrite))
    m = result.metrics
    units = intensity_units(array, tags.get("modality"))
    change = f"max change {m['max_abs_change']:.4g} {units}"
    print(f"{outputs['output']}: PSNR {psnr_text(m)}, SSIM {m['ssim']:.4f}, {change}")
    if "min_psnr_for_strength" in m:
        log.warning(strength_warning(str(outputs["output"]), m))
    worst = m.get("psnr_db_slice_min", m["psnr_db"])  # what a reader scrolling through a volume sees
    if worst < LOW_PSNR_DB:
        where = " (worst slice)" if "psnr_db_slice_min" in m else ""
        log.warning(
            f"{outputs['output']}: PSNR {worst:.1f} dB{where} is below {LOW_PSNR_DB:g} dB; the change may be visible "
            f"(--min-psnr {LOW_PSNR_DB:g} keeps it above)"
        )
    return 0


UNDER_ONE_LEVEL = "it would be under one level of the image's pixel type"


def strength_warning(name: str, metrics: dict) -> str:
    """What the PSNR floor left of the strength (:mod:`victim_units`), and the floor that would reach it."""
    units, floor = metrics["change_victim_units"], f"the {metrics['min_psnr']:g} dB floor"
    held = f"holds the change at {units:.2f} victim units" if units else f"leaves no change ({UNDER_ONE_LEVEL})"
    return f"{name}: {floor} {held}, below the {metrics['strength']:g} " + strength_advice(
        metrics["min_psnr_for_strength"]
    )


def strength_advice(floor: float) -> str:
    """The end of a strength warning: what was measured, and the floor that would reach the strength."""
    return (
        "that stopped victims without augmentation (docs/results.md): protection is not expected; about "
        f"--min-psnr {floor:g} would reach it (a more visible change: preview it first)"
    )


def check_roles(image: np.ndarray, mask_labels: set[int], image_path: Path, mask_path: Path) -> None:
    """Refuse a mask that is not a plausible label map, or image and mask given the other way round.

    A mask with more than ``MAX_LABELS`` labels, or with at least as many distinct values as the
    image has, is most likely an image (``--many-labels`` accepts a real many-label mask).
    """
    swapped = f"are IMAGE and MASK swapped? use --many-labels if {mask_path.name} really is a label map"
    if len(mask_labels) > MAX_LABELS:
        raise InputError(f"{mask_path}: mask has {len(mask_labels)} labels, more than a label map has ({swapped})")
    if mask_labels and _distinct_values(image, more_than=len(mask_labels) + 1) <= len(mask_labels) + 1:
        raise InputError(
            f"{image_path}: image has no more distinct values than the mask has labels; it looks like a "
            f"label map ({swapped})"
        )


def _distinct_values(array: np.ndarray, more_than: int) -> int:
    """Number of distinct values in ``array``; a strided sample answers first when it already has enough."""
    from ..intensity import distinct_values

    flat = array.reshape(-1)
    sample = distinct_values(flat[:: max(flat.size // 100_000, 1)])
    return sample.size if sample.size > more_than else distinct_values(flat).size


def _write_image(protected: np.ndarray, image, image_path: Path, output: Path, overwrite: bool) -> Path:
    """The protected image in the output's format (TIFF keeps the source file's resolution tags)."""
    from .. import io, raster

    if raster.is_tiff(output):
        return raster.write_tiff_like(protected, image_path, output, overwrite=overwrite)
    return io.write_like(protected, image, output, overwrite=overwrite, endings=raster.output_endings(image_path))


def _save_heatmap(args: argparse.Namespace, image, tags: dict, array: np.ndarray, result, spacing, path: Path) -> Path:
    """The heatmap preview in the chosen display window, of the chosen (default: most changed) slice."""
    from ..preview import choose_window, intensity_units, save_heatmap_png

    window = choose_window(array, args.window, tags.get("window"), tags.get("modality"))
    return save_heatmap_png(
        array,
        result.protected,
        result.region,
        path,
        result.metrics,
        result.slice_axis,
        spacing=spacing,
        direction=image.GetDirection(),
        window=window,
        units=intensity_units(array, tags.get("modality")),
        slice_index=args.slice,
        overwrite=args.overwrite,
    )


def dicom_display_tags(image_path: Path, series_uid: str | None = None) -> dict:
    """Modality and first display window (centre, width) of a DICOM series folder; empty for other inputs."""
    if not image_path.is_dir():
        return {}
    import SimpleITK as sitk

    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(image_path), *([series_uid] if series_uid else []))
    if not files:
        return {}
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    reader.ReadImageInformation()

    def tag(key):
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else None

    tags = {"modality": tag("0008|0060")}
    try:
        centre, width = (float(tag(key).split("\\")[0]) for key in ("0028|1050", "0028|1051"))
    except (AttributeError, ValueError):
        return tags
    if width > 0:
        tags["window"] = (centre, width)
    return tags


@contextlib.contextmanager
def _all_or_nothing() -> Iterator[list[Path]]:
    """Collect the outputs a run writes; if a later one fails, remove the earlier ones."""
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        for path in written:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


def _window_option(text: str) -> str | tuple[float, float]:
    from ..preview import parse_window

    try:
        return parse_window(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check_outputs(args: argparse.Namespace, inputs: list[Path], dicom_output: bool) -> dict[str, Path]:
    """Validate every output path before any work: format, writable folder, no clobbering, not an input."""
    from .. import dicom_series, io, raster

    if dicom_output:
        outputs = {"output": dicom_series.check_output_folder(args.output, args.overwrite)}
    else:
        endings = raster.output_endings(inputs[0])
        outputs = {"output": io.check_output_path(args.output, args.overwrite, endings=endings)}
    if args.heatmap:
        outputs["heatmap"] = io.check_output_path(args.heatmap, args.overwrite, endings=(".png",))
    elif args.window != "auto" or args.slice is not None:
        option = "slice" if args.slice is not None else "window"
        raise InputError(f"--{option} applies to the --heatmap preview; add --heatmap")
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
