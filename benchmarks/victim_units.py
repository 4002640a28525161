"""How large the default protection is in the units a victim normalises to: one JSON line per dataset.

A victim does not see Hounsfield units or MR intensities but its normalised input: nnU-Net's CT
normalisation (clip to the 0.5-99.5 percentiles of the training foreground, z-score with its mean and
std) when dataset.json names the channel CT, else a per-case z-score. The same change is large in
the first and small in the second. For every training case with a label, ``protect_array`` with the
defaults (the bundled protector, its 50 dB floor), then the RMS of the change over the ROI in the
victim's units, the floor's scale (1: the floor did not bind) and the ROI's share of the image.

    python -m benchmarks.victim_units benchmarks/data/nnUNet_raw/Dataset005_TotalSegCTLiverBlocks ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from umedprotect.array_protection import protect_array
from umedprotect.nnunet import read_dataset
from umedprotect.protector_file import read_protector_file


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def measure(root: Path) -> dict:
    dataset = read_dataset(root)
    cases = [(read(c.images[0]), read(c.label)) for c in dataset.training if c.label is not None]
    cases = [(image, labels) for image, labels in cases if labels.any()]
    foreground = np.concatenate([image[labels > 0].astype(np.float64) for image, labels in cases])
    lo, hi = np.percentile(foreground, (0.5, 99.5))
    clipped = np.clip(foreground, lo, hi)
    protector = read_protector_file()
    rows = []
    for image, labels in cases:
        result = protect_array(image, labels, protector)
        change = result.protected.astype(np.float64) - image
        if dataset.is_ct:  # the change as the victim sees it: after the clip, over the CT foreground's std
            seen = np.clip(result.protected.astype(np.float64), lo, hi) - np.clip(image.astype(np.float64), lo, hi)
            unit = clipped.std()
        else:
            seen, unit = change, image.astype(np.float64).std()
        roi = labels > 0
        rows.append(
            {
                "rms_roi_victim_units": float(np.sqrt(np.mean(seen[roi] ** 2)) / unit),
                "rms_roi_native": float(np.sqrt(np.mean(change[roi] ** 2))),
                "change_scale": result.metrics.get("change_scale", 1.0),
                "roi_share": float(roi.mean()),
                "psnr_db": result.metrics["psnr_db"],
            }
        )
    summary = {key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0]}
    return {
        "dataset": root.name,
        "normalisation": "ct" if dataset.is_ct else "zscore",
        "cases": len(rows),
        "mean": summary,
        "min_rms_roi_victim_units": round(min(r["rms_roi_victim_units"] for r in rows), 4),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", type=Path, nargs="+")
    for root in parser.parse_args(argv).datasets:
        print(json.dumps(measure(root)))


if __name__ == "__main__":
    main()
