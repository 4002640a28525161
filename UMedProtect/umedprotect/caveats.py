"""Where the bundled protector was measured not to protect, checked against a dataset about to be protected.

Each caveat is one line, with the measurement behind it (docs/results.md): ``protect-dataset`` with the
bundled protector prints each as a warning before it writes anything and records them in its manifest,
so that whoever publishes the data knows which victims the protection was measured to fail against.
"""

from __future__ import annotations

from .nnunet import NnUNetDataset
from .victim_grid import resampled_cases

RESULTS = "docs/results.md"
MEASURED_STOPPED_LABELS = 4  # the most labels the default was measured to protect at 50 dB (four CT organs)
RINGS_FLOOR, RINGS_CAP = 45.0, 6.3  # dB, /255: where the rings also stopped victims trained without augmentation
FILL_RINGS_FLOOR = 48.0  # dB: where the fill codes and the rings together stopped both kinds of victim
AUGMENTED = (  # the fill codes and the dots
    "victims trained with nnU-Net's augmentation (nnU-Net's default) were not stopped by these codes (CT liver: "
    "the fill codes 0.46-0.84 at 50 dB (10 runs) and 0.69 at 45 dB with twice the strength, the dots 0.78 and "
    "0.88; CT ribs 0.65-1.30), except in part on CT liver volumes (3D U-Nets with 3D augmentation: 7 of 10, their "
    "test DSC swinging from epoch to epoch); the bundled rings stopped 9 of 10 of them on CT liver at 50 dB, but not "
    "victims trained without augmentation; the smooth code stopped both kinds there (10 of 10 each) at 58 dB, a "
    f"change that can be seen ({RESULTS})"
)

ZSCORED = (  # CT: an attacker who does not normalise the nnU-Net way
    "victims that z-score each case instead of using nnU-Net's CT normalisation (an attacker's choice) take the "
    "shortcut later and less surely: on CT liver, trained until the clean ones converge (40 x 50 iterations), the "
    "fill codes stopped 9 of 10 without augmentation (0.000-0.12) and the smooth code 1 of 5 (0.091-1.00; with "
    f"augmentation 0.11, one run); trained 8 x 50, neither (0.91, 0.86; {RESULTS})"
)
SMOOTH_VISIBLE = (
    "the smooth code leaves each label without its image noise, smoother than its surroundings: at 58 dB mean PSNR "
    f"on CT liver it can be seen at a soft-tissue window, which PSNR does not measure; preview it ({RESULTS})"
)
SMOOTH_ELSEWHERE = (
    "the smooth code was measured to stop victims on one CT organ at a time (liver, spleen or kidney) and on CT lung "
    "nodules only: with four or twelve CT structures labelled, each equally smooth (0.85, 0.98), on MR (0.90) and "
    f"on fluorescence microscopy nuclei (1.00) it did not (one run each; {RESULTS})"
)


def dataset_caveats(
    dataset: NnUNetDataset,
    labels: list[int] | None,
    protector: str | None = None,
    min_psnr: float | None = None,
    epsilon: float | None = None,
) -> list[str]:
    """The caveats that apply to protecting the training cases of ``dataset`` (``labels``: those selected) with the
    bundled ``protector`` (its recorded name; default: the fill codes on each case's grid), the dots made on
    nnU-Net's grid, or the rings, held to ``min_psnr`` with a cap of ``epsilon`` (defaults: the bundled ones)."""
    from .protector_file import (  # scipy
        BUNDLED_FILL_RINGS,
        BUNDLED_GRID_PROTECTOR,
        BUNDLED_RINGS_PROTECTOR,
        BUNDLED_SMOOTH,
        DEFAULT_MIN_PSNR,
        RINGS_PROTECTOR_PATH,
        read_protector_file,
    )

    floor = DEFAULT_MIN_PSNR if min_psnr is None else min_psnr
    if protector == BUNDLED_RINGS_PROTECTOR:
        cap = read_protector_file(RINGS_PROTECTOR_PATH).config.epsilon if epsilon is None else epsilon
        return rings_caveats(dataset, labels, floor, cap)
    if protector == BUNDLED_FILL_RINGS:
        return fill_rings_caveats(dataset, labels, floor)
    if protector == BUNDLED_SMOOTH:
        return smooth_caveats(dataset, labels)
    victim_grid = protector == BUNDLED_GRID_PROTECTOR
    caveats = [AUGMENTED]
    if dataset.is_ct:
        caveats.append(ZSCORED)
    else:
        name = dataset.meta["channel_names"]["0"]
        caveats.append(
            f"channel 0 is {name!r}, not CT: nnU-Net z-scores each case, and at a 50 dB floor the change is far "
            "below what stopped such victims (MR, three organs: 0.03 of each case's std at 50 dB, ratios 0.66-1.29; "
            "0.15 std at 38 dB, 10 of 10 victims without augmentation stopped; fluorescence microscopy nuclei, bright "
            "on a dark background: 0.3 std at 29 dB, ratios 0.69-0.89; one std at 24 dB, stopped without augmentation; "
            f"{RESULTS})"
        )
    foreground = _protected_labels(dataset, labels)
    if len(foreground) > 1 and victim_grid:
        caveats.append(
            f"{len(foreground)} labels to protect: on four CT organs the dots made on nnU-Net's grid did not slow "
            f"victims without augmentation (ratio ~1.0; {RESULTS})"
        )
    elif len(foreground) > MEASURED_STOPPED_LABELS:
        caveats.append(
            f"{len(foreground)} labels to protect: the default stopped victims without augmentation on four CT organs "
            "at 50 dB (10 of 10, trained until converged), but with twelve CT structures not at 50 dB (0.53-0.69) "
            "nor at 45 dB (0.29-0.30): the vertebrae, the colon and the aorta kept 0.71-1.16 of their clean DSC, "
            f"the vertebrae even at 40 dB ({RESULTS})"
        )
    resampled = resampled_cases(dataset)
    if resampled:
        off = f"{len(resampled)} of {len(dataset.training)} training cases lie off the dataset's median in-plane "
        if victim_grid:
            caveats.append(
                off + "spacing: the changes were made on the grid nnU-Net resamples them to, which on CT liver "
                "cases spread 0.85-1.15x in spacing stopped 6 of 10 victims without augmentation (ratios "
                "0.001-0.32, none at the oracle checkpoint; the cases coarser than the median leak the anatomy; "
                f"{RESULTS})"
            )
        else:
            caveats.append(
                off + "spacing, so nnU-Net resamples them, and the default's pixel tile does not survive resampling "
                f"(ratios 0.50-0.83 after resampling by 0.9; {RESULTS})"
            )
    return caveats


def rings_caveats(dataset: NnUNetDataset, labels: list[int] | None, min_psnr: float, epsilon: float) -> list[str]:
    """The caveats of the rings (cap ``epsilon``/255): measured on one CT organ, where only a cap of 6.3/255 at a
    45 dB floor also stopped victims trained without augmentation."""
    caveats = []
    if min_psnr > RINGS_FLOOR or epsilon > RINGS_CAP:
        caveats.append(
            f"the rings at a {min_psnr:g} dB floor with a cap of {epsilon:g}/255: on CT liver they stopped victims "
            "trained with nnU-Net's augmentation (9 of 10 at 50 dB with a cap of 16/255) but not those trained "
            "without it (0.31-0.63 at 50 dB, 0.16-0.32 at 45 dB with that cap); a cap of 6.3/255 at a 45 dB "
            f"floor stopped 8 of 10 of those too ({RESULTS})"
        )
    if not dataset.is_ct or len(_protected_labels(dataset, labels)) > 1:
        caveats.append(f"the rings were measured on one CT organ only; every label gets the same rings ({RESULTS})")
    return caveats


def fill_rings_caveats(dataset: NnUNetDataset, labels: list[int] | None, min_psnr: float) -> list[str]:
    """The caveats of ``--codes fill+rings``: measured on one CT organ, where both kinds of victim needed 48 dB."""
    caveats = []
    if min_psnr > FILL_RINGS_FLOOR:
        caveats.append(
            f"the fill codes and the rings under a {min_psnr:g} dB floor: on CT liver at 50 dB victims trained with "
            "nnU-Net's augmentation were not stopped (0.31-0.43 of their clean DSC, 4 runs of 40 x 50 iterations; "
            "trained 100 x 50, 3 of 4 at 0.10 or less at the final checkpoint but 1 of 4 at the one nnU-Net keeps); "
            f"at {FILL_RINGS_FLOOR:g} dB 8 of 10 of them at the final and 7 of 10 at the kept checkpoint, and 10 of 10 "
            f"trained without augmentation ({RESULTS})"
        )
    if not dataset.is_ct or len(_protected_labels(dataset, labels)) > 1:
        caveats.append(f"the fill codes and the rings together were measured on one CT organ only ({RESULTS})")
    return caveats


def smooth_caveats(dataset: NnUNetDataset, labels: list[int] | None) -> list[str]:
    """The caveats of ``--codes smooth``: measured to protect one CT organ, where it can be seen."""
    caveats = [SMOOTH_VISIBLE, ZSCORED] if dataset.is_ct else [SMOOTH_VISIBLE]
    if not dataset.is_ct or len(_protected_labels(dataset, labels)) > 1:
        caveats.append(SMOOTH_ELSEWHERE)
    return caveats


def _protected_labels(dataset: NnUNetDataset, labels: list[int] | None) -> list[int]:
    """The label values protected: ``labels`` when selected, else every foreground label of ``dataset``."""
    return sorted(v for v in dataset.label_values if v > 0) if labels is None else labels
