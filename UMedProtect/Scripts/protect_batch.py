"""Protect a folder of cases with 3D Slicer in batch mode (no main window), through the module's logic.

    Slicer --no-splash --no-main-window --python-script UMedProtect/Scripts/protect_batch.py \\
        -- IN_DIR -o OUT_DIR [--protector FILE] [--epsilon 4] [--band-radius 3] [--min-psnr DB] [--device auto] [--overwrite]

IN_DIR is either an nnU-Net v2 raw dataset (``dataset.json``, ``imagesTr/``, ``labelsTr/``: every
training image channel is protected; dataset.json, labels and ``imagesTs/`` are copied unchanged)
or a folder of image/mask pairs: a mask is named like its image with ``_label``, ``-label``,
``_seg``, ``.seg`` or ``_mask`` added (or replacing an ``_image`` suffix), e.g. ``ct.nii.gz`` +
``ct.seg.nrrd``, or ``brain1_image.nrrd`` + ``brain1_label.nrrd``. Masks are Slicer segmentations
(``.seg.nrrd``) or label maps. Protected images keep their file names, geometry and pixel type.

Prints one line per case and exits with 0 when every case was protected, 2 when a case had bad
input (the others are still done), 1 on an unexpected error. It always exits, so a windowless Slicer
never hangs. (Outside Slicer, ``umedprotect protect-dataset`` does the same with a resumable manifest.)
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

MODULE_DIR = Path(globals().get("__file__") or sys.argv[0]).resolve().parents[1]  # UMedProtect.py is here
MASK_NAME = re.compile(r"^(?P<base>.+?)(?P<sep>[._-])(?:label|labels|seg|mask)$", re.IGNORECASE)
EXIT_OK, EXIT_UNEXPECTED, EXIT_INPUT = 0, 1, 2


@dataclass
class BatchCase:
    """One image to protect with its mask; ``output`` is relative to the output folder."""

    name: str
    image: Path
    mask: Path
    output: Path


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the script's arguments (a leading ``--`` separating them from Slicer's is dropped)."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    parser = argparse.ArgumentParser(
        prog="protect_batch.py",
        description="Protect a folder of image/mask pairs or an nnU-Net v2 raw dataset with the UMed Protect logic.",
    )
    parser.add_argument("input", type=Path, help="folder of image/mask pairs, or nnU-Net v2 raw dataset folder")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (same layout as the input)")
    parser.add_argument("--protector", help="protector file (.safetensors); default: the bundled protector")
    parser.add_argument("--epsilon", type=float, help="budget in 1/255 of the intensity window (default: the protector's)")
    parser.add_argument("--band-radius", type=int, help="contour band half-width in pixels (default: the protector's)")
    parser.add_argument("--min-psnr", type=float, help="visibility floor in dB: scale the perturbation down below it (default: none)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="compute device (default: auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return parser.parse_args(argv)


def split_ending(name: str) -> tuple[str, str] | None:
    """(stem, ending) for a supported image file name; ``.seg.nrrd`` keeps ``.seg`` in the stem."""
    from umedprotect.io import OUTPUT_ENDINGS

    lower = name.lower()
    for ending in OUTPUT_ENDINGS:
        if lower.endswith(ending):
            return name[: -len(ending)], name[-len(ending) :]
    return None


def find_pairs(folder: Path) -> list[BatchCase]:
    """Image/mask pairs of a plain folder (see the module docstring for the naming rule)."""
    from umedprotect.errors import InputError

    files = {p.name: split_ending(p.name) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
    files = {name: split for name, split in files.items() if split is not None}
    masks = {name: MASK_NAME.match(stem) for name, (stem, _) in files.items() if MASK_NAME.match(stem)}
    images = [name for name in files if name not in masks]
    cases, paired = [], set()
    for mask_name, match in masks.items():
        candidates = {match["base"], f"{match['base']}{match['sep']}image"}
        found = [name for name in images if files[name][0] in candidates]
        if len(found) != 1:
            raise InputError(f"{folder / mask_name}: expected exactly one image for this mask, found {found or 'none'}")
        cases.append(BatchCase(files[found[0]][0], folder / found[0], folder / mask_name, Path(found[0])))
        paired.add(found[0])
    unpaired = sorted(set(images) - paired)
    if unpaired:
        raise InputError(
            f"{folder}: no mask found for {', '.join(unpaired[:3])} (name masks like IMAGE_label.nrrd or IMAGE.seg.nrrd)"
        )
    if not cases:
        raise InputError(f"{folder}: no image/mask pairs found")
    return sorted(cases, key=lambda case: case.name)


def find_cases(folder: Path) -> tuple[list[BatchCase], list[Path]]:
    """Cases to protect and files to copy unchanged (paths relative to ``folder``)."""
    from umedprotect.errors import InputError
    from umedprotect.nnunet import read_dataset

    if not folder.is_dir():
        raise InputError(f"{folder}: input folder not found")
    if not (folder / "dataset.json").exists():
        return find_pairs(folder), []
    dataset = read_dataset(folder)
    cases = [
        BatchCase(f"{case.case_id} channel {channel}", image, case.label, dataset.relative(image))
        for case in dataset.training
        for channel, image in enumerate(case.images)
    ]
    unchanged = [dataset.root / "dataset.json"] + [case.label for case in dataset.training]
    unchanged += [path for case in dataset.test for path in [*case.images, case.label] if path is not None]
    return cases, [dataset.relative(path) for path in unchanged]


def run(args: argparse.Namespace, log=print) -> int:
    """Protect every case; return the exit code. Must run inside Slicer (or with slicer-core)."""
    from umedprotect.errors import InputError
    from umedprotect.io import check_writable_dir, copy_file

    cases, unchanged = find_cases(args.input)
    output = args.output
    if output.resolve() == args.input.resolve() or output.resolve().is_relative_to(args.input.resolve()):
        raise InputError(f"{output}: output folder must not be inside the input folder {args.input}")
    existing = [str(output / p) for p in [c.output for c in cases] + unchanged if (output / p).exists()]
    if existing and not args.overwrite:
        raise InputError(f"{existing[0]}: output already exists ({len(existing)} file(s); use --overwrite)")
    check_writable_dir(output)

    import slicer
    from UMedProtect import ProtectionSettings, UMedProtectLogic

    logic = UMedProtectLogic()
    logic.ensureDependencies(askConfirmation=False)
    settings = ProtectionSettings(
        epsilon=args.epsilon, bandRadius=args.band_radius, minPsnr=args.min_psnr, protectorPath=args.protector,
        device=args.device,
    )
    failures: list[str] = []
    log(f"UMed Protect batch: {len(cases)} image(s) from {args.input} -> {output}")
    for number, case in enumerate(cases, start=1):
        start = time.perf_counter()
        nodes = []
        try:
            volume = logic.loadVolume(case.image)
            nodes.append(volume)
            segmentation = logic.loadSegmentation(case.mask, volume)
            nodes.append(segmentation)
            result = logic.process(volume, segmentation, None, settings)
            nodes += [result.protectedVolume, result.heatmapVolume]
            target = output / case.output
            target.parent.mkdir(parents=True, exist_ok=True)
            logic.saveVolume(result.protectedVolume, target, overwrite=args.overwrite)
            m = result.metrics
            log(
                f"[{number}/{len(cases)}] {case.name}: PSNR {m['psnr_db']:.1f} dB, SSIM {m['ssim']:.4f}, "
                f"max change {m['max_abs_change']:.4g}, {time.perf_counter() - start:.1f} s -> {target}"
            )
        except InputError as error:
            failures.append(case.name)
            log(f"[{number}/{len(cases)}] {case.name}: error: {error}")
        finally:
            for node in nodes:
                slicer.mrmlScene.RemoveNode(node)
    for relative in unchanged:
        copy_file(args.input / relative, output / relative, overwrite=args.overwrite)
    if failures:
        log(f"done with errors: {len(failures)} of {len(cases)} image(s) not protected ({', '.join(failures[:5])})")
        return EXIT_INPUT
    log(f"done: {len(cases)} image(s) protected, {len(unchanged)} file(s) copied unchanged")
    return EXIT_OK


def main(argv: list[str]) -> int:
    """Parse, run, and turn every outcome into an exit code (bad input 2, unexpected error 1)."""
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    try:
        args = parse_args(argv)
    except SystemExit as stop:  # argparse: --help (0) or a usage error (2)
        return int(stop.code or 0)
    try:
        from umedprotect.errors import InputError

        try:
            return run(args)
        except InputError as error:
            print(f"protect_batch: error: {error}", file=sys.stderr)
            return EXIT_INPUT
    except KeyboardInterrupt:
        return 130
    except Exception:
        traceback.print_exc()
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
