"""Where the bundled protector was measured not to protect, checked against a dataset about to be protected.

Each caveat is one line, with the measurement behind it (docs/results.md): ``protect-dataset`` with the
bundled protector prints each as a warning before it writes anything and records them in its manifest,
so that whoever publishes the data knows which victims the protection was measured to fail against.
"""

from __future__ import annotations

import numpy as np

from . import io
from .nnunet import NnUNetDataset

RESULTS = "docs/results.md"
SPACING_TOLERANCE = 1e-3  # relative; spacings read from headers differ in float32 rounding


def dataset_caveats(dataset: NnUNetDataset, labels: list[int] | None) -> list[str]:
    """The caveats that apply to protecting the training cases of ``dataset`` (``labels``: those selected)."""
    caveats = []
    if not dataset.is_ct:
        name = dataset.meta["channel_names"]["0"]
        caveats.append(
            f"channel 0 is {name!r}, not CT: nnU-Net z-scores each case, and no victim that z-scores was stopped "
            f"by the default protection (MR, three organs: ratio 0.88 after 2000 iterations; {RESULTS})"
        )
    foreground = sorted(v for v in dataset.label_values if v > 0) if labels is None else labels
    if len(foreground) > 1:
        caveats.append(
            f"{len(foreground)} labels to protect: with four CT organs the default protection slowed victims "
            f"without augmentation but stopped none (ratios 0.30-0.36; {RESULTS})"
        )
    resampled = resampled_cases(dataset)
    if resampled:
        caveats.append(
            f"{len(resampled)} of {len(dataset.training)} training cases lie off the dataset's median in-plane "
            "spacing, so nnU-Net resamples them, and the default's pixel tile does not survive resampling "
            f"(ratios 0.50-0.83 after resampling by 0.9; {RESULTS})"
        )
    return caveats


def resampled_cases(dataset: NnUNetDataset) -> list[str]:
    """The training cases nnU-Net's 2D configuration resamples: their in-plane grid, at the dataset's median
    spacing, would have another size (the slicing axis, the coarsest, is not resampled in 2D)."""
    grids = {}
    for case in dataset.training:
        header = io.read_header(case.images[0])
        grids[case.case_id] = (np.array(header.GetSize()[::-1]), np.array(header.GetSpacing()[::-1]))
    if len({size.size for size, _ in grids.values()}) != 1:
        return []  # 2D and 3D cases mixed: nnU-Net refuses such a dataset anyway
    median = np.median(np.stack([spacing for _, spacing in grids.values()]), axis=0)
    in_plane = np.arange(median.size) != np.argmax(median) if median.size == 3 else np.ones(median.size, bool)
    resampled = []
    for case_id, (size, spacing) in grids.items():
        off = np.abs(spacing / median - 1) > SPACING_TOLERANCE
        resized = np.round(size * spacing / median) != size
        if np.any(in_plane & off & resized):
            resampled.append(case_id)
    return resampled
