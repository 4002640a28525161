"""Write the bundled default protector: one fill code (a checkerboard) inside every label; not fitted.

Its generators G_c and G_t output zero: the codes alone make the change.

The choice and its measurements: docs/results.md, benchmarks/experiments/ (``fill-one-code-organs``,
``fill-inside-liver``).

    python -m benchmarks.make_default_protector [--output UMedProtect/umedprotect/data/default_protector.safetensors]

The bundled protector for changes made on nnU-Net's grid (``protect-dataset --victim-grid auto``, results:
``victim-grid-liver``):

    python -m benchmarks.make_default_protector --codes dots --code-period 4 --epsilon 16 --code-classes 4 \
        --output UMedProtect/umedprotect/data/victim_grid_protector.safetensors

The bundled protector of contour-following rings (``--codes rings``, results: ``rings-liver``):

    python -m benchmarks.make_default_protector --codes rings --code-period 6 --epsilon 16 --code-classes 4 \
        --output UMedProtect/umedprotect/data/rings_protector.safetensors

A variant with other codes, for experiments (e.g. benchmarks/protectors/dots4.safetensors, or the former
default's three fill tiles, checkerboard, row and column stripes, in turn per label: ``--code-classes 4``):

    python -m benchmarks.make_default_protector --codes dots --code-period 4 --band-radius 2 --code-classes 4 \
        --output benchmarks/protectors/dots4.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from umedprotect.protector import Protector, save_protector
from umedprotect.protector_file import CODE_INITS, DEFAULT_PROTECTOR_PATH, ProtectorConfig

DEFAULT_CONFIG = ProtectorConfig(
    epsilon=8.0,  # the per-pixel cap, 1/255 of the case's window; the 50 dB floor sets what is spent
    band_radius=0,  # codes inside the labels only: the negated band outside cost protection (band-50db)
    texture_floor=1.0,  # the full budget everywhere in the label (flat tissue too)
    code_init="fill",
    code_period=2,  # one-pixel checkerboard / stripes
    code_classes=2,  # background + one checkerboard for every label: three tiles cost protection (fill-one-code-organs)
    training={"fitted": False, "source": "benchmarks/make_default_protector.py"},
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_PROTECTOR_PATH)
    parser.add_argument("--codes", choices=CODE_INITS, default=DEFAULT_CONFIG.code_init, help="code_init")
    parser.add_argument("--code-period", type=int, default=DEFAULT_CONFIG.code_period)
    parser.add_argument("--epsilon", type=float, default=DEFAULT_CONFIG.epsilon, help="the per-pixel cap")
    parser.add_argument(
        "--band-radius", type=int, default=DEFAULT_CONFIG.band_radius, help="fill, dots: the band outside, negated"
    )
    parser.add_argument(
        "--code-classes", type=int, default=DEFAULT_CONFIG.code_classes, help="background + the distinct codes"
    )
    args = parser.parse_args(argv)
    config = dataclasses.replace(
        DEFAULT_CONFIG,
        code_init=args.codes,
        code_period=args.code_period,
        epsilon=args.epsilon,
        band_radius=args.band_radius,
        code_classes=args.code_classes,
    )
    print(save_protector(Protector(config), args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
