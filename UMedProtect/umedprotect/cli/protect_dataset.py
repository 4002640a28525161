"""``umedprotect protect-dataset``: protect every training case of an nnU-Net v2 raw dataset."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import TYPE_CHECKING

from ..errors import InputError
from ..exit_codes import EXIT_DISCREPANCIES, EXIT_OK
from ..methods import DEFAULT_METHOD, device_description, method_names
from .protect import (
    LOW_PSNR_DB,
    OUTPUT_FORMATS,
    UNDER_ONE_LEVEL,
    add_protection_options,
    settings_from,
    strength_advice,
)

if TYPE_CHECKING:
    from ..dataset_protection import Shard
    from ..nnunet import NnUNetDataset
    from ..records import CaseRecord
    from ..settings import ProtectionSettings

log = logging.getLogger("umedprotect")
SUMMARY = "protect an nnU-Net v2 raw dataset (resumable, with a manifest)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..dask_runner import LOCAL_PREFIX
    from ..dataset_protection import MANIFEST_NAME

    parser = subparsers.add_parser(
        "protect-dataset",
        help=SUMMARY,
        description=(
            "Protect every training image of an nnU-Net v2 raw dataset (dataset.json, imagesTr/CASE_0000.ext, "
            "labelsTr/CASE.ext). OUT_DIR gets the same layout: protected images (every channel), byte-identical "
            f"labels and dataset.json, imagesTs/labelsTs copied unchanged, and {MANIFEST_NAME} (parameters, "
            "protector hash, per-case PSNR/SSIM/max change, input and output SHA-256, versions, device). "
            "The manifest is updated after every case: rerun the same command after an interruption to resume. "
            "Cases with an empty mask are skipped with a warning unless --allow-empty; mask values not declared "
            "in dataset.json are refused. With the bundled protector, a warning (and the manifest's caveats) names "
            "each way the dataset falls where the default protection was measured not to protect: a channel other "
            "than CT, several labels, training cases off the median in-plane spacing."
        ),
    )
    parser.add_argument("in_dir", metavar="IN_DIR", help="nnU-Net v2 raw dataset folder")
    parser.add_argument("-o", "--output", metavar="OUT_DIR", required=True, help="output dataset folder")
    parser.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        choices=method_names(),
        help="protection method (default umed; the others are baselines for comparison, "
        "which take --epsilon, --min-psnr (no floor unless given), --device and --seed but not --protector, "
        "--band-radius or --labels)",
    )
    add_protection_options(parser)
    parser.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        default="auto",
        help="auto (default): the dataset's own file format. dicom is refused: nnU-Net datasets hold image files, "
        "so protect DICOM series one at a time with 'umedprotect protect'",
    )
    scale = parser.add_argument_group("spreading the work (outputs are byte-identical whichever is used)")
    scale.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="protect N cases at a time in N processes of this machine, each with its share of the CPU threads "
        "and, with several GPUs, the next GPU in turn (default 1)",
    )
    scale.add_argument(
        "--shard",
        type=_shard,
        metavar="K/N",
        help="protect shard K of N (0 <= K < N: the training cases at positions K, K+N, ... in case-id order), "
        "e.g. one task of a SLURM job array (scripts/slurm_protect_dataset.sh). Each shard writes its own manifest "
        "part umedprotect_manifest.shard-K-of-N.json into OUT_DIR; shard 0 also copies dataset.json and the test "
        "cases. Run 'umedprotect verify OUT_DIR' once every shard is done: it merges the parts",
    )
    scale.add_argument(
        "--dask",
        metavar="SCHEDULER",
        help=f"run the shards as tasks on a Dask cluster: a scheduler address (tcp://host:8786) or {LOCAL_PREFIX}N "
        "(N worker processes here), then verify; OUT_DIR must be reachable from every worker under the same path "
        "(needs the dask extra)",
    )
    scale.add_argument(
        "--shards", type=int, metavar="N", help="with --dask: number of shards (default: one per Dask worker)"
    )
    add_victim_grid_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..dask_runner import protect_on_dask, protect_shard
    from ..dataset_protection import WHOLE_DATASET
    from ..nnunet import read_dataset

    if args.output_format == "dicom":
        raise InputError(
            "dicom: nnU-Net datasets hold image files (dataset.json file_ending), not DICOM series; "
            "protect each series with 'umedprotect protect SERIES MASK -o OUT_DIR/'",
            option="output_format",
        )
    if args.dask is not None:
        if args.shard is not None or args.workers != 1:
            raise InputError("runs one shard per Dask task: leave out --shard and --workers", option="dask")
    elif args.shards is not None:
        raise InputError("applies to --dask only", option="shards")
    dataset = read_dataset(args.in_dir)  # a missing or malformed dataset is refused before anything is printed
    settings = settings_from(args)
    if args.method == DEFAULT_METHOD:
        settings = dataset_settings(settings, dataset, args.victim_grid, print)
    print(f"device: {device_description(args.method, settings)}")
    options = dict(allow_empty=args.allow_empty, overwrite=args.overwrite)
    if args.dask is not None:
        manifests, problems = protect_on_dask(
            args.dask, args.in_dir, args.output, args.method, settings, shards=args.shards, **options
        )
        cases = dict(sorted(((cid, e) for m in manifests for cid, e in m.cases.items()), key=lambda item: item[0]))
    else:
        manifest = protect_shard(
            args.in_dir,
            args.output,
            args.method,
            settings,
            shard=args.shard or WHOLE_DATASET,
            workers=args.workers,
            progress=not args.no_progress,
            **options,
        )
        cases, problems = manifest.cases, []
    print(case_table(cases))
    print(summary_line(cases, args.output, args.method))
    if args.shard is not None:
        shard = f"{args.shard.index}/{args.shard.count}"
        print(f"shard {shard} done: run 'umedprotect verify {args.output}' once every shard is")
    for problem in problems:
        print(problem)
    _warn_low_psnr(cases)
    _warn_strength(cases)
    if problems:
        print(f"{args.output}: {len(problems)} discrepancy(ies) found")
        return EXIT_DISCREPANCIES
    return EXIT_OK


def add_victim_grid_option(parser: argparse.ArgumentParser) -> None:
    """``--victim-grid``: shared with Slicer's batch script."""
    parser.add_argument(
        "--victim-grid",
        choices=("auto", "off"),
        default="auto",
        help="auto (default): where nnU-Net would resample training cases (their in-plane spacing off the "
        "dataset's median), make each case's change on the grid nnU-Net resamples it to, so that the victim sees "
        "it intact, with the bundled protector's dots unless --protector is given (the manifest records the "
        "spacing); off: on each case's own grid. umed only",
    )


def dataset_settings(settings: ProtectionSettings, dataset: NnUNetDataset, victim_grid: str, log=print):
    """``settings`` for protecting ``dataset`` with umed: the normalisation nnU-Net gives its cases; with
    ``victim_grid`` auto, the spacing nnU-Net resamples them to, where it resamples any (said in one line
    through ``log``)."""
    from ..victim_grid import victim_spacing
    from ..victim_units import dataset_normalisation

    settings = dataclasses.replace(settings, victim_normalisation=dataset_normalisation(dataset))
    if victim_grid == "off" or settings.codes == "smooth" or (spacing := victim_spacing(dataset)) is None:
        return settings
    log(f"victim grid: nnU-Net resamples the cases to {' x '.join(f'{v:g}' for v in spacing)} (numpy axis order)")
    return dataclasses.replace(settings, victim_spacing=spacing)


def _shard(text: str) -> Shard:
    """``K/N`` as an argparse type: a malformed shard is an argument error (exit 2)."""
    from ..dataset_protection import Shard

    try:
        return Shard.parse(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _warn_low_psnr(cases: dict[str, CaseRecord]) -> None:
    low = [cid for cid, e in cases.items() if e.status == "protected" and _worst_psnr(e) < LOW_PSNR_DB]
    if low:
        log.warning(
            f"{len(low)} case(s) below {LOW_PSNR_DB:g} dB PSNR (worst slice): {', '.join(low)}; "
            "the change may be visible"
        )


def _warn_strength(cases: dict[str, CaseRecord]) -> None:
    weak = [i for e in cases.values() if e.status == "protected" for i in e.images or [] if i.min_psnr_for_strength]
    if weak:
        reached = max(i.change_victim_units for i in weak)
        floor = min(i.min_psnr_for_strength for i in weak)
        unchanged = sum(not i.change_victim_units for i in weak)
        none_left = f" ({unchanged} left unchanged: {UNDER_ONE_LEVEL})" if unchanged else ""
        log.warning(
            f"{len(weak)} image(s): the PSNR floor holds the change at or below {reached:.2f} victim units{none_left}, "
            "under the strength " + strength_advice(floor)
        )


def case_table(cases: dict[str, CaseRecord]) -> str:
    """One row per case: status, PSNR in dB (mean over changed slices / worst slice), max change, seconds."""
    header = f"{'case':<16}{'status':<14}{'PSNR mean':>10}{'worst slice':>12}{'max change':>12}{'seconds':>9}"
    lines = [header, "-" * len(header)]
    for case_id, entry in cases.items():
        if entry.status != "protected" or not entry.images:
            lines.append(f"{case_id:<16}{entry.status:<14}")
            continue
        psnr = min(i.psnr_db if i.psnr_db_slice_mean is None else i.psnr_db_slice_mean for i in entry.images)
        change = max(i.max_abs_change for i in entry.images)
        seconds = entry.seconds or 0
        lines.append(
            f"{case_id:<16}{'protected':<14}{psnr:>10.1f}{_worst_psnr(entry):>12.1f}{change:>12.4g}{seconds:>9.1f}"
        )
    return "\n".join(lines)


def summary_line(cases: dict[str, CaseRecord], output: str, method: str) -> str:
    """Cases protected, skipped and copied, the lowest PSNR and the total time."""
    done = [e for e in cases.values() if e.status == "protected"]
    others = sorted({e.status for e in cases.values()} - {"protected"})
    counts = "".join(f", {sum(e.status == s for e in cases.values())} {s.replace('_', ' ')}" for s in others)
    text = f"{output}: {len(done)} of {len(cases)} case(s) protected with {method}{counts}"
    if done:
        text += f"; PSNR min {min(_worst_psnr(e) for e in done):.1f} dB (worst slice of a volume)"
        text += f"; {sum(e.seconds or 0 for e in done):.1f} s"
    return text


def _worst_psnr(entry: CaseRecord) -> float:
    return min(image.worst_psnr_db for image in entry.images or [])
