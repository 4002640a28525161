"""Positive controls: copies of an nnU-Net raw dataset "protected" by fixed patterns inside the ROI.

Not protection methods but yardsticks for the measurement (METHOD.md's probe): a fixed pattern is
the simplest shortcut there is, so a victim schedule that is not fooled by one even *without*
augmentation is too short to say anything about a protection. Every pattern uses the full budget
(epsilon/255 of each case's intensity window, rounded to the dtype with the project's
``apply_change``) and changes only the ROI (any non-zero label) unless stated:

  checker   +-budget pixel checkerboard (period 2) -- METHOD.md's probe pattern
  tile8     a fixed random +-budget 8x8 tile, repeated (survives blur and resampling better)
  offset    +budget everywhere in the ROI
  blobs     a fixed isotropic band-pass texture (blobs about 8 pixels apart), +-budget: low
            frequency and without orientation, so rotation, scaling, blur and low-resolution
            simulation keep it
  blobs-large  the same with blobs about twice as far apart
  blobs-fine  the same with blobs about two thirds as far apart
  rings     contour-following rings: +-budget alternating every RING_PERIOD/2 pixels of distance to
            the ROI's edge (follows the organ's shape, so rotation and scaling keep it); the band
            next to the edge is bright
  rings5, rings8  the same with a period of 5 or 8 pixels
  rings-dark  the same in opposite phase (the band next to the edge dark)
  rings-out1, rings-out3  rings continued 1 or 3 pixels outside the ROI (a dark band around it)
  rim       +budget in the 3 pixels inside the ROI's edge only
  rim-pair  rim, and -budget in the 3 pixels below it
  soft-blobs  the blobs less saturated (tanh gain 1 instead of 3): the full budget only at blob
            centres, about half the energy for the same peak change
  sparse-blobs  only the blobs' cores: the pixels within 0.7 std of zero band-pass noise are left
            unchanged (about half the ROI), the rest rise smoothly to +-budget
  stretch   the ROI's own texture amplified: each pixel moved by the budget away from the ROI's
            mean (its deviation in std, through tanh(3 .)); raises the foreground std a victim
            normalises with more than uncorrelated change of the same energy does
  stretch-blobs  the same for the deviation plus the blobs' band-pass noise (1 std each)
  swap-blobs  the ROI's own texture replaced by the blobs as far as the budget allows: each pixel
            pulled towards the ROI's mean plus the blob texture
  dim-blobs dim's ring, and in the ROI half the budget darker plus blobs at half the budget
  dim-rings the same with the rings instead of the blobs
  dim       -budget in the ROI and +budget in a 3-pixel ring outside it (flattens the edge)
  flat-dim  dim's ring, and the ROI pulled towards one flat tone 3/4 budget below its mean
            (its texture removed as far as the budget allows)

    python -m benchmarks.fixed_patterns IN_DIR OUT_ROOT [--patterns checker tile8 ...] [--epsilon 4]

writes OUT_ROOT/<pattern>/ (nnU-Net raw layout: protected imagesTr, everything else copied).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import binary_dilation, distance_transform_edt, gaussian_filter

from umedprotect.intensity import apply_change, intensity_window
from umedprotect.nnunet import read_dataset
from umedprotect.protector import BLOB_GAIN
from umedprotect.protector import BLOB_SIGMAS as PROTECTOR_BLOB_SIGMAS
from umedprotect.regions import edge_depth

RING_PERIOD = 6.0  # rings: pixels of distance to the ROI's edge per +/- cycle
RING_VARIANTS = {  # name: (period, phase, pixels outside the ROI, amplitude below the first period)
    "rings": (RING_PERIOD, 1.0, 0, 1.0),
    "rings3": (3.0, 1.0, 0, 1.0),
    "rings4": (4.0, 1.0, 0, 1.0),
    "rings5": (5.0, 1.0, 0, 1.0),
    "rings8": (8.0, 1.0, 0, 1.0),
    "rings-dark": (RING_PERIOD, -1.0, 0, 1.0),
    "rings-out1": (RING_PERIOD, 1.0, 1, 1.0),
    "rings-out3": (RING_PERIOD, 1.0, 3, 1.0),
    "rings-edge": (RING_PERIOD, 1.0, 0, 0.6),
}
RIM_WIDTH = 3  # rim, rim-pair: pixels
SPARSE_THRESHOLD = 0.7  # sparse-blobs: band-pass noise below this (in std) is left unchanged
TILE = np.random.default_rng(0).choice([-1.0, 1.0], size=(8, 8))
BLOB_SIGMAS = {  # DoG, pixels
    "blobs": PROTECTOR_BLOB_SIGMAS,
    "blobs-large": tuple(2 * s for s in PROTECTOR_BLOB_SIGMAS),
    "blobs-fine": tuple(2 / 3 * s for s in PROTECTOR_BLOB_SIGMAS),
}


def band_noise(shape: tuple[int, int], sigmas: tuple[float, float] = BLOB_SIGMAS["blobs"]) -> np.ndarray:
    """Seeded isotropic band-pass (difference-of-Gaussians) noise on a ``shape`` grid, unit std."""
    noise = np.random.default_rng(0).standard_normal(shape)
    band = gaussian_filter(noise, sigmas[0]) - gaussian_filter(noise, sigmas[1])
    return band / band.std()


def blob_sigmas(period: float) -> tuple[float, float]:
    """The blobs' difference-of-Gaussians sigmas scaled so that the noise's spectrum peaks at ``period`` pixels."""
    low, high = BLOB_SIGMAS["blobs"]
    peak = np.pi * np.sqrt((high**2 - low**2) / np.log(high / low))  # the peak period of that band
    return low * period / peak, high * period / peak


def blob_field(
    shape: tuple[int, int], sigmas: tuple[float, float] = BLOB_SIGMAS["blobs"], gain: float = BLOB_GAIN
) -> np.ndarray:
    """Band-pass noise squashed into [-1, 1] by tanh(gain * noise): blobs, nearly +-1 for the default gain."""
    return np.tanh(gain * band_noise(shape, sigmas))


def signed_depth(roi: np.ndarray) -> np.ndarray:
    """In-plane distance to the ROI's edge, slice by slice: 1, 2, ... inside; 0, -1, ... outside."""
    planes = roi.reshape(-1, *roi.shape[-2:])
    inside = np.stack([edge_depth(r) for r in planes])
    far = float(sum(roi.shape[-2:]))  # farther than any pixel: planes without ROI
    outside = np.stack([distance_transform_edt(~r) if r.any() else np.full(r.shape, far) for r in planes])
    return np.where(planes, inside, 1.0 - outside).reshape(roi.shape)


def pattern(name: str, labels: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Unit pattern (values in [-1, 1]) for one case, on its last two axes; ``image`` in budget units."""
    if name not in PATTERNS:
        raise ValueError(f"unknown pattern {name!r}")
    roi = labels > 0
    if not roi.any():  # nothing to change, and no ROI statistics
        return np.zeros(labels.shape)
    rows, cols = np.indices(labels.shape[-2:])
    if name == "checker":
        return np.where((rows + cols) % 2 == 0, 1.0, -1.0) * roi
    if name == "tile8":
        return TILE[rows % 8, cols % 8] * roi
    if name in BLOB_SIGMAS:
        return blob_field(labels.shape[-2:], BLOB_SIGMAS[name]) * roi
    if name in RING_VARIANTS:
        period, phase, outside, deep = RING_VARIANTS[name]
        depth = signed_depth(roi)
        amplitude = np.where(depth > period, deep, 1.0) * (depth >= 1 - outside)
        return phase * np.tanh(BLOB_GAIN * np.sin(2 * np.pi * (depth - 0.5) / period)) * amplitude
    if name in ("rim", "rim-pair"):
        depth = signed_depth(roi)
        below = (depth > RIM_WIDTH) & (depth <= 2 * RIM_WIDTH) & (name == "rim-pair")
        return ((depth >= 1) & (depth <= RIM_WIDTH)) - below.astype(np.float64)
    if name == "soft-blobs":
        return blob_field(labels.shape[-2:], gain=1.0) * roi
    if name == "sparse-blobs":
        z = band_noise(labels.shape[-2:])
        return np.tanh(BLOB_GAIN * np.sign(z) * np.maximum(np.abs(z) - SPARSE_THRESHOLD, 0.0)) * roi
    if name in ("stretch", "stretch-blobs"):  # the sign of each pixel's deviation from the ROI mean (plus blobs)
        z = (image - image[roi].mean()) / max(image[roi].std(), 1e-6)
        if name == "stretch-blobs":
            z = z + band_noise(labels.shape[-2:])
        return np.tanh(BLOB_GAIN * z) * roi
    if name == "swap-blobs":
        return np.clip(image[roi].mean() + blob_field(labels.shape[-2:]) - image, -1.0, 1.0) * roi
    if name == "offset":
        return roi.astype(np.float64)
    # dim, flat-dim, dim-blobs: a bright ring around the ROI
    structure = np.zeros((3,) * roi.ndim, bool)
    structure[(1,) * (roi.ndim - 2)] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]  # in-plane neighbours only
    ring = (binary_dilation(roi, structure, iterations=3) & ~roi).astype(np.float64)
    if name == "dim":
        return ring - roi
    if name == "dim-blobs":
        return ring + (0.5 * blob_field(labels.shape[-2:]) - 0.5) * roi
    if name == "dim-rings":
        return ring + (0.5 * pattern("rings", labels, image) - 0.5) * roi
    tone = image[roi].mean() - 0.75
    return ring + np.clip(tone - image, -1.0, 1.0) * roi


PATTERNS = (
    "checker",
    "tile8",
    "blobs",
    "blobs-large",
    "blobs-fine",
    *RING_VARIANTS,
    "rim",
    "rim-pair",
    "soft-blobs",
    "sparse-blobs",
    "stretch",
    "stretch-blobs",
    "swap-blobs",
    "offset",
    "dim",
    "flat-dim",
    "dim-blobs",
    "dim-rings",
)


def write_protected_copy(source: Path, out: Path, name: str, epsilon: float) -> None:
    """Copy ``source`` to ``out`` with every training image changed by pattern ``name``."""
    dataset = read_dataset(source)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source, out)
    for case in dataset.training:
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        for path in case.images:
            image = sitk.ReadImage(str(path))
            array = sitk.GetArrayFromImage(image)
            budget = intensity_window(array).budget(epsilon)
            unit = pattern(name, labels, array / budget)
            protected = sitk.GetImageFromArray(apply_change(array, unit * budget, budget))
            protected.CopyInformation(image)
            sitk.WriteImage(protected, str(out / path.relative_to(dataset.root)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="nnU-Net raw dataset")
    parser.add_argument("out_root", type=Path, help="one folder per pattern is written here")
    parser.add_argument("--patterns", nargs="+", choices=PATTERNS, default=list(PATTERNS))
    parser.add_argument("--epsilon", type=float, default=4.0, help="budget in 1/255 of each case's window")
    args = parser.parse_args(argv)
    for name in args.patterns:
        write_protected_copy(args.source, args.out_root / name, name, args.epsilon)
        print(f"wrote {args.out_root / name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
