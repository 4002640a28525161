"""Where the bundled protector was measured not to protect, checked against a dataset about to be protected.

Each caveat is one line, with the measurement behind it (docs/results.md): ``protect-dataset`` with the
bundled protector prints each as a warning before it writes anything and records them in its manifest,
so that whoever publishes the data knows which victims the protection was measured to fail against.
"""

from __future__ import annotations

from .nnunet import NnUNetDataset
from .victim_grid import resampled_cases

RESULTS = "docs/results.md"


def dataset_caveats(dataset: NnUNetDataset, labels: list[int] | None, victim_grid: bool = False) -> list[str]:
    """The caveats that apply to protecting the training cases of ``dataset`` (``labels``: those selected) with the
    bundled protector: fill codes on each case's grid, or with ``victim_grid`` the dots made on nnU-Net's grid."""
    caveats = []
    if not dataset.is_ct:
        name = dataset.meta["channel_names"]["0"]
        caveats.append(
            f"channel 0 is {name!r}, not CT: nnU-Net z-scores each case, and at a 50 dB floor the change is far "
            f"below the strength that stops such victims (MR, three organs: 0.03 of each case's std, ratio 0.82; "
            f"at a 30 dB floor, 0.3 std, 10 of 10 victims without augmentation stopped; {RESULTS})"
        )
    foreground = sorted(v for v in dataset.label_values if v > 0) if labels is None else labels
    if len(foreground) > 1:
        measured = "the dots did not slow them (ratio ~1.0" if victim_grid else "ratios 0.04-0.31, 1 of 6 stopped"
        caveats.append(
            f"{len(foreground)} labels to protect: with four CT organs the default protection did not stop victims "
            f"without augmentation at 50 dB ({measured}); at a 45 dB floor (0.6 victim units) it stopped 10 of 10 "
            f"({RESULTS})"
        )
    resampled = resampled_cases(dataset)
    if resampled:
        off = f"{len(resampled)} of {len(dataset.training)} training cases lie off the dataset's median in-plane "
        if victim_grid:
            caveats.append(
                off + "spacing: the changes were made on the grid nnU-Net resamples them to, which on CT liver "
                "cases spread 0.85-1.15x in spacing slowed victims without augmentation but stopped 3 of 10 "
                f"(ratios 0.04-0.46; the cases coarser than the median leak the anatomy; {RESULTS})"
            )
        else:
            caveats.append(
                off + "spacing, so nnU-Net resamples them, and the default's pixel tile does not survive resampling "
                f"(ratios 0.50-0.83 after resampling by 0.9; {RESULTS})"
            )
    return caveats
