"""Screen candidate perturbations for the default protector: one victim trained on a protected copy, one JSON line.

Candidates (each a change per 2D case of an nnU-Net raw dataset, bounded by the amplitude A below, then
held to ``--min-psnr`` per 2D case with the product's :func:`limit_visibility`):

  clean        no change (the reference victim)
  default      the product's path: ``protect_array`` with the bundled protector or ``--protector`` (its epsilon,
               raised to the default strength in the victim's units as ``protect-dataset`` does; with
               ``--product-epsilon``, that budget instead)
  checker      +-A pixel checkerboard inside the ROI (the naive baseline)
  fill         per label one of checkerboard, row stripes, column stripes (period 2) inside it
  fill-band    fill, and its negative in the band of half-width R outside every label
  band-checker +-A checkerboard in the band of half-width R straddling every label's edge
  band-wave    A * tanh(3 sin(2 pi d / P)) in that band, d the signed distance to the edge (moves with the label)
  band-flat    band-wave at half amplitude plus the edge blurred away (as far as A allows) inside the band
  step         +A inside every label, -A in the band of half-width R outside (no pixel pattern: survives resampling)
  step-neg     the same with the signs swapped
  wave         A cos(2 pi (r + F) / P) cos(2 pi (c + F) / P) inside every label (F: ``--phase``), negated in
               the band outside (P = 2: the checkerboard of fill-band; P > 2 stays coherent when resampled)
  noise        +-A at random inside every label (new signs for every case): a texture, not a fixed pattern
  noise-smooth Gaussian noise smoothed over ``--radius``/2 pixels, std A/2 (clipped at +-A), inside every label
  product      ``protect_array`` with a fresh protector of ``--code-init`` (the candidate as shipped)
  default-grid default made on the grid the victim resamples to (``--resample F``), its change resampled back
  grid-exact   fill-band made on the grid the victim resamples to, mapped back by the minimum-norm inverse of that
               resampling (after it the victim sees the exact code; cap ``--grid-cap`` A, then the PSNR floor)
  grid-wave    the same with wave (period P on the victim's grid: exact for cases up to P/2 times coarser)
  grid-mixed   grid-exact for the cases the victim's grid does not enlarge, grid-wave for the others
  fill-balanced fill with each label's amplitude in inverse proportion to its pixel count to the power
               ``--balance-power`` (0.5: every label the same share of the 50 dB floor's energy, small organs more
               amplitude, large less; 0: fill)
  fill-rings   the bundled default's change at ``--epsilon`` plus ``--protector``'s (e.g. rings) at
               ``--product-epsilon``, each without a floor (or held to ``--fill-min-psnr`` and
               ``--second-min-psnr``: how the 50 dB floor's energy is shared), their sum then held to
               ``--min-psnr``: a code for each augmentation regime
  fill-rings-split the same two changes, each where the other is not: ``--protector``'s within ``--radius`` pixels
               of each label's edge, the default's deeper inside (``--epsilon 0``: none there)
  fill-rings-alternate the two changes of fill-rings on alternate training cases, each alone held to
               ``--min-psnr``: the default's on even cases, ``--protector``'s on odd ones (one code per regime,
               each at the full floor)
  baseline     the published baseline ``--method`` (umedprotect_eval's) at ``--epsilon``, held to ``--min-psnr``
               as ``protect-dataset --method NAME --epsilon E --min-psnr M`` does (surrogates trained on the
               training cases, seed ``--seed``)
  edge-checker a checkerboard in each label's own coordinates: A tanh(3 sin(2 pi d / P)) tanh(3 sin(2 pi s / Q)),
               d the depth below the label's edge, s the arc length along it (of the nearest edge pixel),
               Q = ``--arc-period`` (0: no arc factor, the rings); it rotates and scales with the label;
               ``--case-phase``: d + F, F drawn per case in [0, P) (the rings no longer mark where the edge is)
  edge-lines   the rings' energy on lines: bands ``--width`` pixels wide at the depths where the rings peak
               (P/4 + k P/2), signed (-1)^k (a sparse code whose amplitude the floor lets rise, as the lattice's)
  blobs        a fixed isotropic band-pass texture inside every label: A tanh(3 n), n difference-of-Gaussians
               noise (the same for every case) whose spectrum peaks at period P: rotation and scaling leave it
               the same kind of texture
  smooth       the label's own fine texture (CT noise) removed: each label replaced by its Gaussian smoothing
               (``--smooth-sigma`` pixels, within the label only; ``--smooth-fraction`` of that change), a code of
               absent texture that rotation and scaling keep
  smooth-fill  smooth plus the fill codes at ``--epsilon``, their sum held to ``--min-psnr``
  smooth-signed smooth on odd label values, its negative (the noise doubled) on even ones: two codes of texture
               a victim can tell apart
  smooth-rings smooth, plus on labels 2, 3, ... rings of ``--rings-amplitude`` A at periods P, 2P, 4P, ... (label 1
               smooth only): the smoothness says where a label is, the rings which
  smooth-rings-all the same with rings on every label, label k at period P 2^(k-1)
               (smooth-fill, smooth-rings*: with ``--smooth-first`` the smoothing is held to the floor alone and
               kept whole, the fill or rings scaled into what the floor leaves; else their sum is scaled)
  smooth-rim   smooth only in the rim ``--width`` pixels deep inside each label's edge (full smoothing where
               the floor would otherwise allow only part of it over the whole label)
  lattice      sparse dots: one pixel in P x P (P = ``--period``) inside every label, signed per label (all +,
               all -, alternating by dot, alternating by dot row), negated in the band outside: the 50 dB floor
               then allows P times the amplitude of a dense code

A = EPSILON/255 of the case's 0.5-99.5 percentile window, or with ``--sigma S``, S times the case's std
(the victim's z-score unit).

``--resample F``: after protection, every image of the dataset (protected training cases, clean test cases)
is resampled in-plane by the factor F (cubic B-spline; labels nearest-neighbour), as nnU-Net's preprocessing
does to a case whose spacing differs from the dataset's target spacing.

``--grid-factors F1,F2,...``: a dataset whose cases differ in spacing. Case i (train and test, in sorted id
order) is first resampled by F(i mod n), its spacing divided by it; then protected; then every case is
resampled to the training cases' median spacing with nnU-Net's own resampling (skimage's cubic resize),
as nnU-Net's preprocessing does. ``--victim-grid``: ``default`` then passes that spacing to the product
(``protect_array(victim_spacing=...)``), which makes each change on the victim's grid.

    python -m benchmarks.edge_code_screen DATASET OUT_ROOT CANDIDATE [--epsilon 4] [--sigma S] [--radius 2]
        [--period 4] [--min-psnr 50] [--augmentation none|nnunet] [--seed 0] [--epochs 4 --iterations 50]
        [--resample F | --grid-factors 0.85,0.9,1,1.1 [--victim-grid]] [--victim unet-small] [--optimizer adam|sgd]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from benchmarks.fixed_patterns import blob_field, blob_sigmas
from umedprotect.array_protection import limit_visibility, protect_array
from umedprotect.augment import NO_AUGMENTATION, AugmentSettings
from umedprotect.intensity import apply_change, intensity_window
from umedprotect.methods import setup_method
from umedprotect.metrics import data_range, image_quality
from umedprotect.nnunet import read_dataset
from umedprotect.protector import Protector, ProtectorConfig
from umedprotect.protector_file import read_protector_file
from umedprotect.regions import signed_edge_distance
from umedprotect.settings import ProtectionSettings
from umedprotect.smoothing import smoothing_change
from umedprotect.victim_grid import resample_image, resample_labels, resampling_matrix
from umedprotect.victim_units import STRENGTHS, dataset_normalisation
from umedprotect_eval.baselines import METHOD_NAMES
from umedprotect_eval.evaluation import load_evaluation_data
from umedprotect_eval.training import TrainSettings, VictimTrainer

SMOOTH_PLUS_CODE = ("smooth-fill", "smooth-rings", "smooth-rings-all")
CANDIDATES = (
    "clean",
    "default",
    "checker",
    "fill",
    "fill-band",
    "band-checker",
    "band-wave",
    "band-flat",
    "step",
    "step-neg",
    "wave",
    "noise",
    "noise-smooth",
    "product",
    "default-grid",
    "grid-exact",
    "grid-wave",
    "grid-mixed",
    "lattice",
    "blobs",
    "edge-checker",
    "edge-lines",
    "fill-balanced",
    "fill-rings",
    "fill-rings-split",
    "fill-rings-alternate",
    "baseline",
    "smooth",
    "smooth-fill",
    "smooth-rim",
    "smooth-signed",
    "smooth-rings",
    "smooth-rings-all",
)


def candidate_change(name: str, image: np.ndarray, labels: np.ndarray, amplitude: float, args) -> np.ndarray:
    """The change (native units, float) of candidate ``name`` for one 2D case."""
    rows, cols = np.indices(image.shape)
    checker = np.where((rows + cols) % 2 == 0, 1.0, -1.0)
    if name == "checker":
        return amplitude * checker * (labels > 0)
    if name in ("noise", "noise-smooth"):
        rng = np.random.default_rng(zlib.crc32(image.tobytes()) + args.seed)
        if name == "noise":
            return amplitude * rng.choice([-1.0, 1.0], size=image.shape) * (labels > 0)
        smooth = ndimage.gaussian_filter(rng.standard_normal(image.shape), args.radius / 2)
        return amplitude * smooth / (2 * smooth.std()) * (labels > 0)  # std A/2, clipped at +-A
    d = signed_edge_distance(labels)[0]
    signed_region = (labels > 0) * 1.0 - ((d < 0) & (d >= -args.radius))  # +1 in the labels, -1 in the band outside
    if name == "wave":
        angle = 2 * np.pi / args.period
        grid = np.cos(angle * (rows + args.phase)) * np.cos(angle * (cols + args.phase))
        return amplitude * grid * signed_region
    if name == "blobs":
        return amplitude * blob_field(image.shape, blob_sigmas(args.period)) * (labels > 0)
    if name == "edge-checker":
        phase = case_phase(image, args) if args.case_phase else 0.0
        across = np.tanh(3 * np.sin(2 * np.pi * (d + phase) / args.period))
        along = np.tanh(3 * np.sin(2 * np.pi * edge_arc_length(labels) / args.arc_period)) if args.arc_period else 1
        return amplitude * across * along * (labels > 0)
    if name == "edge-lines":
        position = 2 * d / args.period - 0.5  # integer k at the k-th line's centre
        k = np.round(position)
        on = np.abs(position - k) * args.period / 2 < args.width / 2
        return amplitude * np.where(k % 2 == 0, 1.0, -1.0) * on * (labels > 0)
    if name in ("step", "step-neg"):
        return (1.0 if name == "step" else -1.0) * amplitude * signed_region
    if name == "lattice":
        period = int(args.period)
        dot_rows, dot_cols = rows // period, cols // period
        on = (rows % period == 0) & (cols % period == 0)
        signs = np.stack(
            [np.ones(image.shape), -np.ones(image.shape), (-1.0) ** (dot_rows + dot_cols), (-1.0) ** dot_rows]
        )
        _, (near_rows, near_cols) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        owner = labels[near_rows, near_cols].astype(int)
        sign = np.take_along_axis(signs, ((owner - 1) % 4)[None], axis=0)[0]
        return amplitude * on * sign * signed_region
    if name.startswith("smooth"):
        smooth = args.smooth_fraction * smoothing_change(image, labels, args.smooth_sigma)
        if name == "smooth-signed":
            return smooth * np.where(labels % 2 == 1, 1.0, -1.0)
        if name == "smooth-rim":
            return smooth * (d <= args.width)
        return smooth + (smooth_code(name, image, labels, amplitude, args, d) if name in SMOOTH_PLUS_CODE else 0.0)
    if name == "fill-balanced":
        fill = candidate_change("fill", image, labels, 1.0, args)
        counts = np.bincount(labels.ravel().astype(int))
        weight = np.where(labels > 0, np.maximum(counts[labels.astype(int)], 1) ** -args.balance_power, 0.0)
        return amplitude * fill * weight / weight.max() if weight.max() > 0 else fill
    if name in ("fill", "fill-band"):  # per label one of checker, row stripes, column stripes; the band outside negated
        named = {
            "checker": checker,
            "rows": np.where(rows % 2 == 0, 1.0, -1.0),
            "cols": np.where(cols % 2 == 0, 1.0, -1.0),
            "low": np.where((rows % 2 == 1) & (cols % 2 == 1), -1.0, 1.0),  # one pixel in four low
        }
        named["high"] = -named["low"]  # one pixel in four high
        tiles = np.stack([named[tile] for tile in args.tiles])
        _, (near_rows, near_cols) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        owner = labels[near_rows, near_cols].astype(int)
        fill = np.take_along_axis(tiles, ((owner - 1) % len(tiles))[None], axis=0)[0]
        return amplitude * fill * (signed_region if name == "fill-band" else (labels > 0) * 1.0)
    band = np.abs(d) <= args.radius
    if name == "band-checker":
        return amplitude * checker * band
    wave = np.tanh(3 * np.sin(2 * np.pi * d / args.period))
    if name == "band-wave":
        return amplitude * wave * band
    blurred = ndimage.gaussian_filter(image.astype(np.float64), args.radius)
    return np.clip(0.5 * amplitude * wave + (blurred - image), -amplitude, amplitude) * band


def smooth_code(
    name: str, image: np.ndarray, labels: np.ndarray, amplitude: float, args, depth: np.ndarray
) -> np.ndarray:
    """The code that ``name`` (one of :data:`SMOOTH_PLUS_CODE`) adds to the smoothing: the fill codes, or rings of
    ``--rings-amplitude`` A at period P 2^(k - first) on label k (from label 2, or every label for smooth-rings-all),
    ``depth`` the signed distance to the labels' edge."""
    if name == "smooth-fill":
        return candidate_change("fill", image, labels, amplitude, args)
    first = 1 if name == "smooth-rings-all" else 2
    period = args.period * 2.0 ** np.maximum(labels - first, 0)
    return args.rings_amplitude * amplitude * np.tanh(3 * np.sin(2 * np.pi * depth / period)) * (labels >= first)


def case_phase(image: np.ndarray, args) -> float:
    """A phase (pixels of depth, in [0, period)) drawn for each case from its pixels: the same on every run."""
    return float(np.random.default_rng(zlib.crc32(image.tobytes())).uniform(0, args.period))


def edge_arc_length(labels: np.ndarray) -> np.ndarray:
    """Per labelled pixel, the arc length (pixels) along its label's edge to the edge pixel nearest to it.

    The edge of each label is its pixels with a 4-neighbour outside it; each connected stretch of edge is
    measured (8-connected steps of 1 and sqrt 2) from its first pixel in raster order, so along a closed
    contour the arc length runs up both ways from there to the far side.
    """
    arc = np.zeros(labels.shape)
    for value in np.unique(labels[labels > 0]):
        inside = labels == value
        edge = inside & ~ndimage.binary_erosion(inside, border_value=0)
        points = np.argwhere(edge)
        index = -np.ones(labels.shape, dtype=int)
        index[tuple(points.T)] = np.arange(len(points))
        padded = np.pad(index, 1, constant_values=-1)
        steps = []  # (from, to, length) for each step to an edge pixel right, below-left, below, below-right
        for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):
            neighbour = padded[1 + dr : 1 + dr + labels.shape[0], 1 + dc : 1 + dc + labels.shape[1]]
            pairs = (index >= 0) & (neighbour >= 0)
            steps.append((index[pairs], neighbour[pairs], np.full(pairs.sum(), np.hypot(dr, dc))))
        start, end, length = (np.concatenate(parts) for parts in zip(*steps))
        graph = sparse.csr_matrix((length, (start, end)), shape=(len(points), len(points)))
        _, component = csgraph.connected_components(graph, directed=False)
        _, starts = np.unique(component, return_index=True)  # each stretch's first pixel in raster order
        along = csgraph.dijkstra(graph, directed=False, indices=starts, min_only=True)
        _, (rows, cols) = ndimage.distance_transform_edt(~edge, return_indices=True)
        arc[inside] = along[index[rows, cols]][inside]
    return arc


def protect_case(name: str, image: np.ndarray, labels: np.ndarray, args) -> np.ndarray:
    window = intensity_window(image)
    if name == "baseline":
        return args.baseline.case_protector(image, labels).protected
    if name in ("default", "product"):
        config = ProtectorConfig(code_init=args.code_init, code_period=args.code_period)
        protector = Protector(config) if name == "product" else args.protector  # default: None is the bundled one
        epsilon = args.product_epsilon if name == "default" else args.epsilon
        grid = {}
        if args.victim_grid:  # the product's victim grid: numpy axis order, the slice axis (if any) unchanged
            spacing = args.case_spacing[::-1][-image.ndim :]
            grid = dict(spacing=spacing, victim_spacing=args.target_spacing[::-1][-image.ndim :])
        strength = args.strength if name == "default" and epsilon is None else None  # as protect-dataset
        return protect_array(
            image,
            labels,
            protector,
            epsilon=epsilon,
            min_psnr=args.min_psnr,
            device="cpu",
            strength=strength,
            victim_normalisation=args.victim_normalisation,
            band_radius=args.band_radius,
            **grid,
        ).protected
    if name == "fill-rings-alternate":
        odd = args.case_index % 2 == 1
        protector, epsilon = (args.protector, args.product_epsilon) if odd else (None, args.epsilon)
        return protect_array(
            image, labels, protector, epsilon=epsilon, min_psnr=args.min_psnr, device="cpu", strength=0
        ).protected
    amplitude = args.sigma * float(image.std()) if args.sigma else window.budget(args.epsilon)
    if name in ("fill-rings", "fill-rings-split"):
        parts = ((None, args.epsilon, args.fill_min_psnr), (args.protector, args.product_epsilon, args.second_min_psnr))
        fill, second = (
            protect_array(image, labels, protector, epsilon=epsilon, min_psnr=floor, device="cpu", strength=0).protected
            if epsilon
            else image
            for protector, epsilon, floor in parts
        )
        amplitude = window.budget(args.epsilon + args.product_epsilon)
        fill, second = fill.astype(np.float64) - image, second.astype(np.float64) - image
        if name == "fill-rings-split":
            near_edge = signed_edge_distance(labels)[0] <= args.radius
            fill, second = np.where(near_edge, 0.0, fill), np.where(near_edge, second, 0.0)
        change = fill + second
        protected = apply_change(image, change, amplitude, (float(image.min()), float(image.max())))
        limit_visibility(image, protected, amplitude, args.min_psnr)
        return protected
    if name == "clean":
        return image.copy()
    value_range = (float(image.min()), float(image.max()))
    if name == "default-grid":
        change = grid_change(image, labels, args)
    elif name in ("grid-exact", "grid-wave", "grid-mixed"):
        change = exact_grid_change(image, labels, amplitude, args)
        amplitude = args.grid_cap * amplitude
    elif args.smooth_first and name in SMOOTH_PLUS_CODE:
        return smooth_then_code(name, image, labels, amplitude, args)
    else:
        change = candidate_change(name, image, labels, amplitude, args)
    protected = apply_change(image, change, amplitude, value_range)
    if args.min_psnr:
        limit_visibility(image, protected, amplitude, args.min_psnr)
    return protected


def smooth_then_code(name: str, image: np.ndarray, labels: np.ndarray, amplitude: float, args) -> np.ndarray:
    """The smoothing held to the floor on its own and kept whole, the candidate's code scaled into what is left."""
    value_range = (float(image.min()), float(image.max()))
    smoothed = apply_change(
        image, args.smooth_fraction * smoothing_change(image, labels, args.smooth_sigma), amplitude, value_range
    )
    limit_visibility(image, smoothed, amplitude, args.min_psnr)
    base = smoothed.astype(np.float64) - image
    code = smooth_code(name, image, labels, amplitude, args, signed_edge_distance(labels)[0])
    floor_squared = data_range(image) ** 2 * image.size / 10 ** (args.min_psnr / 10)

    def with_code(scale: float) -> np.ndarray:
        return apply_change(image, base + scale * code, 2 * amplitude, value_range)

    low, high = 0.0, 1.0
    for _ in range(20):  # the largest scale of the code whose sum with the smoothing meets the floor
        middle = (low + high) / 2
        squared = np.sum((with_code(middle).astype(np.float64) - image) ** 2)
        low, high = (middle, high) if squared <= floor_squared else (low, middle)
    return with_code(low)


def band_in_effect(args) -> int:
    """The default's band radius: ``--band-radius``, else its protector's (the bundled one's by default)."""
    if args.band_radius is not None:
        return args.band_radius
    return (args.protector or read_protector_file()).config.band_radius


def grid_change(image: np.ndarray, labels: np.ndarray, args) -> np.ndarray:
    """The default's change made on the image resampled by ``args.resample``, resampled back to the image's grid."""
    factor = args.resample
    zoomed = ndimage.zoom(image.astype(np.float64), factor, order=3, mode="nearest")
    zoomed_labels = ndimage.zoom(labels, factor, order=0)
    made = protect_array(zoomed.astype(np.float32), zoomed_labels, epsilon=args.epsilon, min_psnr=None, device="cpu")
    change = made.protected.astype(np.float64) - zoomed
    back = [n / m for n, m in zip(image.shape, change.shape)]
    return ndimage.zoom(change, back, order=3, mode="nearest")


def zoom_matrix(size: int, new_size: int, grid_mode: bool) -> np.ndarray:
    """The 1D operator of :func:`resample_file` along an axis of ``size`` pixels, (new size, size)."""
    if grid_mode:
        return resampling_matrix(size, new_size)
    return ndimage.zoom(np.eye(size), (new_size / size, 1.0), order=3, mode="nearest")


def exact_grid_change(image: np.ndarray, labels: np.ndarray, amplitude: float, args) -> np.ndarray:
    """fill-band (grid-exact) or wave (grid-wave) on the victim's grid, mapped to the image's grid so that
    resampling gives it back exactly (as far as the image's grid can hold it)."""
    shape = image.shape[-2:]
    target = victim_size(shape, args.case_spacing, args)
    grid_mode = bool(args.grid_factors)
    back_rows, back_cols = (np.linalg.pinv(zoom_matrix(n, m, grid_mode)) for n, m in zip(shape, target))
    zoom = (1.0,) * (labels.ndim - 2) + tuple(m / n for n, m in zip(shape, target))
    zoomed = ndimage.zoom(labels, zoom, order=0, mode="nearest") if not grid_mode else resample_labels(labels, target)
    name = "fill-band" if args.candidate == "grid-exact" else "wave"
    if args.candidate == "grid-mixed":  # the checkerboard where the victim's grid can hold it, else the dots
        name = "fill-band" if all(m <= n for n, m in zip(shape, target)) else "wave"
    code = candidate_change(name, zoomed.astype(np.float64), zoomed, amplitude, args)
    return np.einsum("rm,...mn,cn->...rc", back_rows, code, back_cols)


def victim_size(shape: tuple[int, ...], spacing: tuple[float, ...], args) -> tuple[int, int]:
    """In-plane size (rows, columns) a case of this size and spacing (x, y) has on the victim's grid."""
    if args.grid_factors:
        return tuple(round(n * s / t) for n, s, t in zip(shape, spacing[1::-1], args.target_spacing[1::-1]))
    return tuple(round(n * args.resample) for n in shape)


def write_copy(source: Path, out: Path, name: str, args) -> list[float]:
    """Protected copy of ``source`` at ``out``; the PSNR of every training case."""
    dataset = read_dataset(source)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source, out)
    psnrs = []
    for args.case_index, case in enumerate(dataset.training):
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        for path in case.images:
            itk = sitk.ReadImage(str(path))
            image = sitk.GetArrayFromImage(itk)
            args.case_spacing = itk.GetSpacing()
            protected = protect_case(name, image, labels, args)
            psnrs.append(image_quality(image, protected)["psnr_db"])
            written = sitk.GetImageFromArray(protected)
            written.CopyInformation(itk)
            sitk.WriteImage(written, str(out / path.relative_to(dataset.root)))
    return psnrs


def resample_file(path: Path, new_size: tuple[int, int], nnunet: bool = False) -> None:
    """Resample an image (cubic B-spline) or label map in place to ``new_size`` in-plane: ``nnunet``, as nnU-Net
    does (:mod:`umedprotect.victim_grid`: pixel edges aligned, labels one-hot linear); else the corner pixels'
    centres aligned, labels nearest-neighbour."""
    itk = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(itk)
    is_labels = path.parent.name.startswith("labels")
    if nnunet:
        planes = array.reshape(-1, *array.shape[-2:])
        resample = resample_labels if is_labels else resample_image
        resampled = np.stack([resample(plane, new_size) for plane in planes]).reshape(*array.shape[:-2], *new_size)
    else:
        zoom = (1.0,) * (array.ndim - 2) + tuple(m / n for n, m in zip(array.shape[-2:], new_size))
        resampled = ndimage.zoom(array.astype(np.float64), zoom, order=0 if is_labels else 3, mode="nearest")
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        resampled = np.clip(np.round(resampled), info.min, info.max)
    written = sitk.GetImageFromArray(resampled.astype(array.dtype))
    spacing = [s * n / m for s, n, m in zip(itk.GetSpacing(), array.shape[:-3:-1], new_size[::-1])]
    written.SetSpacing(spacing + list(itk.GetSpacing()[2:]))
    written.SetOrigin(itk.GetOrigin())
    written.SetDirection(itk.GetDirection())
    sitk.WriteImage(written, str(path))


def dataset_files(root: Path) -> list[tuple[int, Path]]:
    """(case index, file) for every image and label of the nnU-Net raw dataset at ``root``."""

    def case_id(path: Path) -> str:
        name = path.name.removesuffix(".nii.gz")
        return name if path.parent.name.startswith("labels") else name.rsplit("_", 1)[0]

    files = sorted(root.glob("*/*.nii.gz"))
    index = {case: i for i, case in enumerate(sorted({case_id(p) for p in files}))}
    return [(index[case_id(p)], p) for p in files]


def resample_dataset(root: Path, factor: float) -> None:
    """Resample every image and label of the nnU-Net raw dataset at ``root`` in place by ``factor`` in-plane."""
    for _, path in dataset_files(root):
        shape = sitk.ReadImage(str(path)).GetSize()[1::-1]
        resample_file(path, tuple(round(n * factor) for n in shape))


def spread_dataset(root: Path, factors: list[float]) -> None:
    """Give case i (sorted ids) the grid factor ``factors[i % len]``: a dataset whose cases differ in spacing."""
    for i, path in dataset_files(root):
        shape = sitk.ReadImage(str(path)).GetSize()[1::-1]
        resample_file(path, tuple(round(n * factors[i % len(factors)]) for n in shape))


def keep_labels(dataset: Path, out_root: Path, kept: list[int]) -> Path:
    """A copy of ``dataset`` under ``out_root`` whose only labels are ``kept`` (renumbered 1, 2, ...; the others
    background): one organ of a multi-organ set, on the same images."""
    final = out_root / f"{dataset.name}_keep{'-'.join(map(str, kept))}"
    if final.exists():
        return final
    root = out_root / f"{final.name}.partial{os.getpid()}"
    shutil.copytree(dataset, root)
    lookup = np.zeros(256, dtype=np.uint8)
    lookup[kept] = np.arange(1, len(kept) + 1)
    for path in sorted(root.glob("labels*/*.nii.gz")):
        itk = sitk.ReadImage(str(path))
        new = sitk.GetImageFromArray(lookup[sitk.GetArrayFromImage(itk)])
        new.CopyInformation(itk)
        sitk.WriteImage(new, str(path))
    info = json.loads((root / "dataset.json").read_text())
    names = {value: name for name, value in info["labels"].items()}
    info["labels"] = {"background": 0, **{names[value]: i for i, value in enumerate(kept, 1)}}
    (root / "dataset.json").write_text(json.dumps(info, indent=2))
    try:
        root.rename(final)  # atomic: a run beside this one finds the whole copy or none
    except OSError:
        shutil.rmtree(root)
    return final


def median_spacing(root: Path) -> tuple[float, ...]:
    """nnU-Net's target spacing: the median over the training images, per axis (x, y, ...)."""
    return tuple(np.median([sitk.ReadImage(str(p)).GetSpacing() for p in sorted(root.glob("imagesTr/*"))], axis=0))


def to_victim_grid(root: Path, target: tuple[float, ...]) -> None:
    """Resample every case in place to the in-plane ``target`` spacing (nnU-Net's preprocessing)."""
    for _, path in dataset_files(root):
        itk = sitk.ReadImage(str(path))
        shape, spacing = itk.GetSize()[1::-1], itk.GetSpacing()
        new = tuple(round(n * s / t) for n, s, t in zip(shape, spacing[1::-1], target[1::-1]))
        if new != shape:
            resample_file(path, new, nnunet=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out_root", type=Path)
    parser.add_argument("candidate", choices=CANDIDATES)
    parser.add_argument("--epsilon", type=float, default=4.0)
    parser.add_argument("--sigma", type=float, default=0.0)
    parser.add_argument("--radius", type=float, default=2.0)
    parser.add_argument("--period", type=float, default=4.0)
    parser.add_argument("--arc-period", type=float, default=0.0, help="edge-checker: period along the edge")
    parser.add_argument("--width", type=float, default=1.0, help="edge-lines: line width; smooth-rim: depth (px)")
    parser.add_argument("--smooth-sigma", type=float, default=1.0, help="smooth: the smoothing's sigma (pixels)")
    parser.add_argument("--rings-amplitude", type=float, default=0.5, help="smooth-rings: the rings' amplitude (A)")
    parser.add_argument(
        "--smooth-first",
        action="store_true",
        help="smooth-fill, smooth-rings*: the smoothing kept whole (held to the floor alone), the code in the rest",
    )
    parser.add_argument("--smooth-fraction", type=float, default=1.0, help="smooth: the share of the smoothing applied")
    parser.add_argument(
        "--case-phase", action="store_true", help="edge-checker: each case's rings at a phase drawn from its pixels"
    )
    parser.add_argument("--phase", type=float, default=0.0, help="for wave: its offset (pixels) from the image corner")
    parser.add_argument("--min-psnr", type=float, default=50.0)
    parser.add_argument("--method", choices=METHOD_NAMES, default="lsp", help="for baseline: the published method")
    parser.add_argument("--fill-min-psnr", type=float, help="fill-rings: the fill codes' own floor before the sum")
    parser.add_argument("--second-min-psnr", type=float, help="fill-rings: the second change's own floor")
    parser.add_argument("--code-init", default="fill")
    parser.add_argument("--code-period", type=int, default=8, help="for product: the codes' period (pixels)")
    parser.add_argument(
        "--protector", type=read_protector_file, help="for default: this protector file, not the bundled one"
    )
    parser.add_argument(
        "--product-epsilon", type=float, help="for default: this budget (/255 of the window), not the protector's own"
    )
    parser.add_argument(
        "--tiles",
        type=lambda text: text.split(","),
        default=["checker", "rows", "cols"],
        help="fill, fill-band: the tiles of labels 1, 2, ... (repeated), from checker, rows, cols, low, high",
    )
    parser.add_argument("--band-radius", type=int, help="for default: this band, not the protector's")
    parser.add_argument(
        "--strength", type=float, help="for default: in victim units (0: off; default: the product's for the data)"
    )
    parser.add_argument("--augmentation", choices=("none", "nnunet"), default="none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--normalisation", choices=("auto", "zscore", "ct"), default="auto")
    parser.add_argument("--victim", default="unet-small", help="victim architecture (umedprotect evaluate's names)")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="adam (lr 0.003) or sgd (0.01)")
    parser.add_argument(
        "--augmentation-off",
        nargs="+",
        default=[],
        choices=("flip", "rotate", "scale", "noise", "blur", "brightness", "contrast", "lowres", "gamma"),
        help="with --augmentation nnunet: these transforms never applied (which of them undoes a code)",
    )
    parser.add_argument("--device", default="cpu", help="where the victim trains (cpu, cuda); changes are made on cpu")
    parser.add_argument("--resample", type=float, default=1.0, help="in-plane resampling factor after protection")
    parser.add_argument(
        "--victim-grid", action="store_true", help="with --grid-factors: default/product made on the victim's grid"
    )
    parser.add_argument("--grid-cap", type=float, default=2.0, help="grid-*: the change's cap, in units of A")
    parser.add_argument(
        "--grid-factors",
        type=lambda text: [float(v) for v in text.split(",")],
        help="e.g. 0.9,1,1.1: case i first resampled by factor i mod n (cases differing in spacing), protected, "
        "then every case resampled to the median spacing (nnU-Net's preprocessing)",
    )
    parser.add_argument(
        "--balance-power",
        type=float,
        default=0.5,
        help="fill-balanced: each label's amplitude in proportion to its pixel count to the minus this power",
    )
    parser.add_argument(
        "--keep-labels",
        type=lambda text: [int(v) for v in text.split(",")],
        help="e.g. 1: only these labels kept (the others background), on the same images",
    )
    args = parser.parse_args(argv)
    if args.keep_labels:
        args.dataset = keep_labels(args.dataset, args.out_root, args.keep_labels)
    tag = f"{args.dataset.name[:10]}_{args.candidate}_{args.augmentation}_seed{args.seed}_e{args.epsilon:g}"
    tag += f"_s{args.sigma:g}_r{args.radius:g}_p{args.period:g}_m{args.min_psnr:g}"
    tag += f"_{Path(args.protector.source).stem}" if args.protector else ""
    tag += f"_pe{args.product_epsilon:g}" if args.product_epsilon else ""
    tag += f"_st{args.strength:g}" if args.strength is not None else ""
    tag += f"_b{args.band_radius}" if args.band_radius is not None else ""
    tag += "_t" + "-".join(args.tiles) if args.tiles != ["checker", "rows", "cols"] else ""
    tag += f"_{args.code_init}{args.code_period}" if args.candidate == "product" else ""
    tag += f"_{args.method}" if args.candidate == "baseline" else ""
    tag += f"_fm{args.fill_min_psnr:g}" if args.fill_min_psnr else ""
    tag += f"_sm{args.second_min_psnr:g}" if args.second_min_psnr else ""
    tag += f"_z{args.resample:g}" if args.resample != 1.0 else ""
    tag += "_g" + "-".join(f"{f:g}" for f in args.grid_factors) if args.grid_factors else ""
    tag += f"_cap{args.grid_cap:g}" if args.grid_cap != 2.0 else ""
    tag += "_vg" if args.victim_grid else ""
    tag += "_off-" + "-".join(args.augmentation_off) if args.augmentation_off else ""
    tag += f"_ph{args.phase:g}" if args.phase else ""
    tag += f"_arc{args.arc_period:g}" if args.arc_period else ""
    tag += "_cph" if args.case_phase else ""
    tag += f"_w{args.width:g}" if args.candidate in ("edge-lines", "smooth-rim") else ""
    tag += f"_ra{args.rings_amplitude:g}" if args.candidate.startswith("smooth-rings") else ""
    tag += f"_ss{args.smooth_sigma:g}_sf{args.smooth_fraction:g}" if args.candidate.startswith("smooth") else ""
    tag += "_first" if args.smooth_first else ""
    balance_power = args.balance_power if args.candidate == "fill-balanced" and args.balance_power != 0.5 else None
    tag += f"_bp{balance_power:g}" if balance_power is not None else ""
    tag += "_k" + "-".join(map(str, args.keep_labels)) if args.keep_labels else ""
    tag += f"_{args.victim}_{args.optimizer}" if (args.victim, args.optimizer) != ("unet-small", "adam") else ""
    out = args.out_root / tag
    source = args.dataset
    if args.grid_factors:
        source = args.out_root / f"{args.dataset.name}_{tag}_raw"
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(args.dataset, source)
        spread_dataset(source, args.grid_factors)
        args.target_spacing = median_spacing(source)
    args.victim_normalisation = dataset_normalisation(read_dataset(source))
    if args.strength is None:
        args.strength = STRENGTHS[args.victim_normalisation]
    if args.candidate == "baseline":
        settings = ProtectionSettings(epsilon=args.epsilon, min_psnr=args.min_psnr, seed=args.seed, device="cpu")
        args.baseline = setup_method(args.method, settings, read_dataset(source))
    psnrs = write_copy(source, out, args.candidate, args)
    clean = args.dataset
    if args.grid_factors:
        clean = source
        for root in (clean, out):
            to_victim_grid(root, args.target_spacing)
    elif args.resample != 1.0:
        clean = args.out_root / f"{args.dataset.name}_z{args.resample:g}"
        shutil.rmtree(clean, ignore_errors=True)
        shutil.copytree(args.dataset, clean)
        for root in (clean, out):
            resample_dataset(root, args.resample)
    data = load_evaluation_data(clean, out)
    augment = NO_AUGMENTATION if args.augmentation == "none" else AugmentSettings()
    augment = replace(augment, **{f"p_{name}": 0.0 for name in args.augmentation_off})
    settings = TrainSettings(
        epochs=args.epochs,
        iterations_per_epoch=args.iterations,
        batch_size=8,
        patch_size=64,
        optimizer=args.optimizer,
        learning_rate=0.003 if args.optimizer == "adam" else 0.01,
        device=args.device,
        seed=args.seed,
        augment=augment,
    )
    normalisation = data.normalisation if args.normalisation == "auto" else args.normalisation
    start = time.time()
    run = VictimTrainer(
        data.protected, data.test, args.victim, data.n_classes, settings, normalisation, data.clean
    ).run()
    finite = [p for p in psnrs if np.isfinite(p)]
    line = {
        "dataset": args.dataset.name,
        "candidate": args.candidate,
        "tag": tag,
        "augmentation": args.augmentation,
        "augmentation_off": args.augmentation_off,
        "normalisation": normalisation,
        "seed": args.seed,
        "victim": args.victim,
        "optimizer": args.optimizer,
        "iterations": args.epochs * args.iterations,
        "resample": args.resample,
        "grid_factors": args.grid_factors,
        "grid_cap": args.grid_cap,
        "victim_grid": args.victim_grid,
        "victim_resampling": "nnunet" if args.grid_factors else None,  # labels one-hot linear, as nnU-Net
        "epsilon": args.epsilon,
        "sigma": args.sigma,
        "product_epsilon": args.product_epsilon,
        "protector_file": Path(args.protector.source).name if args.protector else None,
        "tiles": args.tiles if args.candidate in ("fill", "fill-band", "smooth-fill") else None,
        "min_psnr": args.min_psnr,
        "band_radius": args.band_radius,
        "band": band_in_effect(args) if args.candidate == "default" else None,
        "strength": args.strength if args.candidate == "default" and args.product_epsilon is None else None,
        "period": args.period,
        "phase": args.phase,
        "arc_period": args.arc_period if args.candidate == "edge-checker" else None,
        "case_phase": args.case_phase if args.candidate == "edge-checker" else None,
        "width": args.width if args.candidate in ("edge-lines", "smooth-rim") else None,
        "smooth_sigma": args.smooth_sigma if args.candidate.startswith("smooth") else None,
        "smooth_fraction": args.smooth_fraction if args.candidate.startswith("smooth") else None,
        "rings_amplitude": args.rings_amplitude if args.candidate.startswith("smooth-rings") else None,
        "smooth_first": args.smooth_first or None,
        "balance_power": balance_power,  # None: 0.5, as before the option
        "code": f"{args.code_init}{args.code_period}" if args.candidate == "product" else None,
        "method": args.method if args.candidate == "baseline" else None,
        "fill_min_psnr": args.fill_min_psnr,
        "second_min_psnr": args.second_min_psnr,
        "psnr_mean": round(float(np.mean(finite)), 2) if finite else None,
        "psnr_worst": round(float(min(finite)), 2) if finite else None,
        "curve": [round(v, 3) for v in run.curve],
        "fit": [round(v, 3) for v in run.train_curve],
        "label_curve": [[round(v, 3) for v in epoch] for epoch in run.label_curve],
        "device": args.device,
        "seconds": round(time.time() - start),
    }
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
