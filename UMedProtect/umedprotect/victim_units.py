"""The change as a victim sees it: in the units nnU-Net normalises each image to.

nnU-Net z-scores each case of a non-CT channel (the case's std is the unit) and normalises CT with the
training foreground's statistics (clipped to its 0.5-99.5 percentiles; their std is the unit). The same
PSNR is a far larger change in the second: at 50 dB the bundled codes were 1.5 units on CT liver and
0.03 on MR (docs/results.md). The **strength** is the change's RMS over the voxels it changes, in these
units; protection raises its budget to reach :data:`STRENGTHS` before the PSNR floor, which may still
hold it below.
"""

from __future__ import annotations

import math

import numpy as np

from .metrics import data_range

# victim units, by normalisation: what stopped victims without augmentation (the fill codes; docs/results.md):
# 0.15 on MR with one checkerboard for every label (three organs, 10 of 10; 0.1 stopped 9 of 10, 0.06 none); on CT,
# 0.6 on four organs with the former three tiles (10 of 10; 0.39 stopped none), 0.7-1.5 on the liver
STRENGTHS = {"ct": 0.6, "zscore": 0.15}
# the least strength of a case in a set whose victims without augmentation the bundled default stopped: under the
# 50 dB floor four CT organs' cases reach 0.10-2.0 (one code for every label: fill-one-code-organs); MR as above.
# Below these (with the default aim) protection is not expected, and the run names the floor that reaches the aim.
MEASURED_STOPPING = {"ct": 0.1, "zscore": STRENGTHS["zscore"]}
FOREGROUND_SAMPLES = 100_000  # foreground voxels a CT unit is computed from (evenly spaced)
CT_PERCENTILES = (0.5, 99.5)


def ct_unit(foreground: np.ndarray) -> float:
    """nnU-Net's CT normalisation unit: the std of the foreground intensities clipped to their 0.5-99.5 percentiles."""
    values = np.asarray(foreground, dtype=np.float64).ravel()
    lo, hi = np.percentile(values, CT_PERCENTILES)
    return max(float(np.std(np.clip(values, lo, hi))), 1e-12)


def case_unit(image: np.ndarray) -> float:
    """A z-scoring victim's unit: the std of the whole case (of at most a million evenly spaced voxels)."""
    sample = image.reshape(-1)[:: max(image.size // 1_000_000, 1)]
    return max(float(np.std(sample, dtype=np.float64)), 1e-12)


def foreground_sample(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """At most :data:`FOREGROUND_SAMPLES` evenly spaced labelled voxels of one case (deterministic)."""
    values = image[labels > 0]
    return values[:: max(values.size // FOREGROUND_SAMPLES, 1)]


def victim_unit(image: np.ndarray, labels: np.ndarray, normalisation: str) -> float:
    """One victim unit for this case, native intensity: ``ct``, its clipped foreground's std (:func:`ct_unit`, the
    case standing in for the training set nnU-Net takes it from; its whole std without foreground); ``zscore``,
    the case's std."""
    if normalisation == "ct" and labels.any():
        return ct_unit(foreground_sample(image, labels))
    return case_unit(image)


def image_normalisation(image: np.ndarray, modality: str | None = None) -> str:
    """How nnU-Net would normalise a single image: ``ct`` for a CT (:func:`preview.looks_like_ct`), else ``zscore``."""
    from .preview import looks_like_ct

    return "ct" if looks_like_ct(image, modality) else "zscore"


def strength_text(metrics: dict) -> str | None:
    """The strength a protection reached, and where the PSNR floor held it below its aim, the floor that would
    reach it: ``0.03 victim units (aim 0.15: about 36 dB would reach it)``; None without a strength."""
    if "change_victim_units" not in metrics:
        return None
    text = f"{metrics['change_victim_units']:.2f} victim units"
    if "min_psnr_for_strength" in metrics:
        text += f" (aim {metrics['strength']:g}: about {metrics['min_psnr_for_strength']:g} dB would reach it)"
    return text


def dataset_normalisation(dataset) -> str:
    """How nnU-Net normalises an nnU-Net dataset's channel 0 (taken for every channel): ``ct`` when it is named
    CT, else ``zscore``."""
    return "ct" if dataset.is_ct else "zscore"


def change_in_units(original: np.ndarray, metrics: dict, unit: float | None = None) -> float:
    """RMS of the change over the changed voxels in ``unit`` (default: the case's std, :func:`case_unit`); 0 if
    none. From ``metrics`` (:func:`metrics.image_quality`: the PSNR and the fraction changed)."""
    changed = metrics["fraction_changed"] * original.size
    if not changed:
        return 0.0
    squared = original.size * data_range(original) ** 2 / 10 ** (metrics["psnr_db"] / 10)
    return float(np.sqrt(squared / changed) / (case_unit(original) if unit is None else unit))


def rms_in_units(change: np.ndarray, unit: float) -> float:
    """RMS of the non-zero entries of ``change`` in ``unit``; 0 if none."""
    changed = change[change != 0].astype(np.float64)
    return float(np.sqrt(np.mean(changed * changed)) / unit) if changed.size else 0.0


def short_of_strength(reached: float, strength: float, normalisation: str) -> bool:
    """Whether a change at ``reached`` units falls short of ``strength``: of the default aim, short of what was
    measured to stop victims (:data:`MEASURED_STOPPING`); of an aim the user set, short of that aim."""
    aim = min(strength, MEASURED_STOPPING[normalisation]) if strength == STRENGTHS[normalisation] else strength
    return reached < 0.95 * aim


def floor_for_strength(min_psnr: float, reached: float, strength: float) -> float:
    """The PSNR floor (dB, rounded down to 0.5) that would let a change held to ``min_psnr`` at ``reached`` units
    reach ``strength``: scaling a change by k lowers its PSNR by 20 log10 k."""
    return math.floor(2 * (min_psnr - 20 * math.log10(strength / reached))) / 2
