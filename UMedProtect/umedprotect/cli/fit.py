"""``umedprotect fit``: fit a protector on nnU-Net-layout datasets."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from ..atomic import atomic_path
from ..errors import InputError
from . import add_option

SUMMARY = "fit a protector (contour + texture perturbators) on segmentation datasets"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..fitting import FitSettings
    from ..objectives import OBJECTIVES
    from ..protector_file import CODE_INITS, ProtectorConfig

    defaults = FitSettings()
    config = ProtectorConfig()
    p = subparsers.add_parser(
        "fit",
        help=SUMMARY,
        description=(
            "Min-min fitting of the contour perturbator G_c and texture perturbator G_t against a "
            "surrogate U-Net trained from scratch on the protected images through nnU-Net-like "
            "augmentation. Input: one or more datasets in the nnU-Net v2 raw layout (their "
            "training cases with labels). Output: a protector file (safetensors weights + JSON "
            "config) for `umedprotect protect --protector`. Stops when a freshly initialised "
            "surrogate reaches --stop-dice training Dice on the protected data, or after --steps. "
            "The shipped default protector is the codes alone, not fitted (benchmarks/make_default_protector.py: "
            "fill codes, period 2, --epsilon 8 --band-radius 2 --texture-floor 1, a 50 dB floor; min-min fitting "
            "weakened the former rings in every run: docs/results.md, docs/archive/research-log.md). "
            "On several GPUs or processes: torchrun --nproc-per-node N -m umedprotect.cli fit ... "
            "(data-parallel: each process fits on its share of --batch-size, which N must divide; "
            "gloo on CPU, nccl on CUDA; process 0 writes the output; min-min and targeted objectives)."
        ),
    )
    p.add_argument("datasets", nargs="+", metavar="IN_DIR", help="nnU-Net v2 raw dataset folder(s)")
    p.add_argument("-o", "--output", required=True, help="protector file to write (.safetensors)")
    add_option(
        p,
        "epsilon",
        default=config.epsilon,
        metavar="E",
        help="budget in 1/255 of the intensity window (default %(default)s)",
    )
    add_option(
        p,
        "band_radius",
        default=config.band_radius,
        metavar="B",
        help="contour band half-width in pixels (default %(default)s)",
    )
    p.add_argument(
        "--texture-floor",
        type=float,
        default=config.texture_floor,
        help="lowest texture bound, fraction of the budget (default %(default)s)",
    )
    p.add_argument(
        "--codes",
        dest="code_init",
        choices=CODE_INITS,
        default=config.code_init,
        help="initial per-label codes: white noise or isotropic blobs (both tiled on the image grid), rings "
        "following each label's edge, a fill (a tile per label of blocks of half the period: one pixel at "
        "period 2), or dots (a tile per label of sampled cosines: at period 4 a lattice of dots, or every other "
        "row or column); fill and dots continue negated on the band outside (default %(default)s)",
    )
    p.add_argument(
        "--code-period",
        type=int,
        default=config.code_period,
        help="period of the per-label codes, pixels (rings: of depth below the edge) (default %(default)s)",
    )
    p.add_argument(
        "--base-channels", type=int, default=config.base_channels, help="generator width (default %(default)s)"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=defaults.steps,
        help="generator steps at most; 0: no fitting, the protector draws its codes alone (default %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="patches per step (default %(default)s)")
    p.add_argument(
        "--patch-size", type=int, default=defaults.patch_size, help="patch size in pixels (default %(default)s)"
    )
    objectives = "; ".join(f"{name}: {objective.help}" for name, objective in OBJECTIVES.items())
    p.add_argument(
        "--objective", choices=tuple(OBJECTIVES), default=defaults.objective, help=f"{objectives} (default %(default)s)"
    )
    p.add_argument(
        "--pretrain-steps",
        type=int,
        default=defaults.pretrain_steps,
        help="targeted, alignment: surrogate steps on clean data first (default %(default)s)",
    )
    p.add_argument(
        "--surrogate-reset-every",
        type=int,
        default=defaults.surrogate_reset_every,
        help="min-min, race: generator steps between surrogate re-initialisations (default %(default)s)",
    )
    p.add_argument(
        "--generator-gain",
        type=float,
        default=config.generator_gain,
        help="bound on each generator's pre-activation (0: none); below the codes' amplitude (3 for "
        "blobs and rings) the generators adapt the codes but cannot overturn them (default %(default)s)",
    )
    p.add_argument(
        "--offset-weight",
        type=float,
        default=defaults.offset_weight,
        help="penalty on a uniform shift of the ROI (default %(default)s)",
    )
    p.add_argument(
        "--freeze-codes",
        action="store_true",
        help="fit the generators only: the shortcut codes keep their initial pattern",
    )
    p.add_argument(
        "--stop-dice",
        type=float,
        default=defaults.stop_dice,
        help="stopping rule: surrogate training Dice (default %(default)s)",
    )
    p.add_argument(
        "--min-steps",
        type=int,
        default=defaults.min_steps,
        help="steps before the stopping rule applies (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed (default %(default)s)")
    add_option(p, "device")
    p.add_argument("--history", metavar="JSON", help="also write the per-step fitting history here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fit and write the protector; under torchrun, data-parallel across the processes."""
    from .. import ddp

    ddp.start_from_env(args.device)
    try:
        code = _fit(args)
    except BaseException:
        ddp.stop(wait_for_others=False)
        raise
    ddp.stop()
    return code


def _fit(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .. import ddp
    from ..fitting import FitSettings, dataset_slices, fit_on_datasets
    from ..io import check_output_path
    from ..protector import save_protector
    from ..protector_file import ProtectorConfig, check_config_values

    output = check_output_path(args.output, args.overwrite, endings=(".safetensors",))
    history_path = check_output_path(args.history, args.overwrite, endings=(".json",)) if args.history else None
    for name, low in (
        ("steps", 0),
        ("batch_size", 1),
        ("patch_size", 16),
        ("surrogate_reset_every", 1),
        ("min_steps", 0),
        ("pretrain_steps", 0),
    ):
        if getattr(args, name) < low:
            raise InputError(f"must be at least {low}", option=name)
    if not 0 < args.stop_dice <= 1:
        raise InputError(f"{args.stop_dice:g} is out of range (0, 1]", option="stop_dice")
    if args.offset_weight < 0:
        raise InputError(f"{args.offset_weight:g} must be at least 0", option="offset_weight")
    names = {f.name for f in fields(FitSettings)}
    settings = FitSettings(**{k: v for k, v in vars(args).items() if k in names})
    values = {
        name: getattr(args, name)
        for name in (
            "epsilon",
            "band_radius",
            "base_channels",
            "texture_floor",
            "code_init",
            "code_period",
            "generator_gain",
        )
    }
    check_config_values(values)
    config = ProtectorConfig(**values)
    samples = dataset_slices(args.datasets)  # validates the datasets before the progress bar starts
    main_process = ddp.is_main()  # the one that prints and writes
    if main_process:
        from ..devices import describe_device, resolve_device

        print(f"device: {describe_device(resolve_device(args.device))}")
    with tqdm(total=settings.steps, desc="fitting", unit="step", disable=args.no_progress or not main_process) as bar:

        def progress(step: int, total: int, record: dict) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(dice=record["surrogate_dice_ema"], loss=record["generator_loss"])

        protector, history = fit_on_datasets(args.datasets, config, settings, progress, samples=samples)
    if not main_process:
        return 0
    save_protector(protector, output)
    if history_path is not None:
        with atomic_path(history_path) as tmp:
            tmp.write_text(json.dumps(history))
    if not history:
        print(f"wrote {output} without fitting (--steps 0): the codes alone, generators at zero")
        return 0
    final = history[-1]
    print(f"wrote {output} after {len(history)} steps (surrogate Dice {final['surrogate_dice_ema']:.3f})")
    return 0
