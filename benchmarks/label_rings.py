"""Protectors whose rings tell the labels apart: the former default's rings, signed and paced per label.

The former default (shipped until the fill codes; kept as benchmarks/protectors/rings_default.safetensors)
draws the same rings in every label: on a multi-organ label set they mark "inside
an organ" but not which one, so a victim needs the anatomy to tell the organs apart. These variants
test whether rings that also tell the labels apart stop such victims (docs/archive/research-log.md, "Four organs and
MR"). Label 1 keeps the default's rings exactly; the generators stay unfitted (zero), as in the
default.

  sign         label k: the default's rings, sign flipped for even k (the band at the edge dark)
  sign_period  the same, and period 6 for labels 1-2, 10 for labels 3-4 (then again)
  period_6_14  periods more than twice apart: 6, 14, then both negated (labels 1-4)

    python -m benchmarks.label_rings OUT_DIR   # writes OUT_DIR/rings_<variant>.safetensors

``--base`` starts from another rings protector (e.g. the bundled one, ``--codes rings``), ``--classes`` sets how
many codes it holds (the background and one per label before they repeat).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

import torch

from umedprotect.protector import Protector, load_protector, ring_codes, save_protector

RINGS_DEFAULT = Path(__file__).with_name("protectors") / "rings_default.safetensors"

VARIANTS = {  # (ring period in pixels, sign) of labels 1, 2, ..., repeated over the labels
    "sign": ((6, 1), (6, -1)),
    "sign_period": ((6, 1), (6, -1), (10, 1), (10, -1)),
    "period_6_14": ((6, 1), (14, 1), (6, -1), (14, -1)),
}


def label_rings(base: Protector, scheme: tuple[tuple[int, int], ...], classes: int | None = None) -> Protector:
    """``base`` with ring codes that follow ``scheme`` label by label (one profile over the periods' lcm), holding
    ``classes`` codes (default: as many as ``base``)."""
    length = math.lcm(*(period for period, _ in scheme))
    classes = classes or base.config.code_classes
    codes = torch.zeros(classes, length)
    for label in range(1, classes):
        period, sign = scheme[(label - 1) % len(scheme)]
        codes[label] = sign * ring_codes(classes, period)[label].repeat(length // period)
    protector = Protector(replace(base.config, code_period=length, code_classes=classes))
    protector.load_state_dict({**base.state_dict(), "codes": codes})
    return protector


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, help="where the protector files are written")
    parser.add_argument("--base", type=Path, default=RINGS_DEFAULT, help="the rings protector to start from")
    parser.add_argument("--classes", type=int, help="codes held, the background's included (default: the base's)")
    parser.add_argument("--variant", choices=VARIANTS, nargs="+", default=list(VARIANTS), help="the variants written")
    args = parser.parse_args(argv)
    if args.out_dir.exists() and not args.out_dir.is_dir():
        parser.error(f"{args.out_dir} is not a folder")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    base = load_protector(args.base)
    for name in args.variant:
        protector = label_rings(base, VARIANTS[name], args.classes)
        path = save_protector(protector, args.out_dir / f"rings_{name}.safetensors")
        print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
