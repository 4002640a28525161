"""Render the Slicer extension's pictures: the module icon and the heatmap-preview screenshot.

The screenshot is the bundled sample case (``Resources/Sample``) protected by the bundled default
protector through the backend, drawn like the module's slice view: the input with the
|perturbation| heatmap as a hot foreground overlay (opacity 0.6), next to the protected image.

    python Resources/make_slicer_images.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, PathPatch
from matplotlib.path import Path as MplPath

from umedprotect import io
from umedprotect.array_protection import protect_array
from umedprotect.atomic import atomic_path
from umedprotect.intensity import intensity_window
from umedprotect.preview import central_slice

ROOT = Path(__file__).resolve().parents[1]

ICON = ROOT / "UMedProtect" / "Resources" / "Icons" / "UMedProtect.png"
SCREENSHOT = ROOT / "Resources" / "Screenshots" / "heatmap_preview.png"
SAMPLE_IMAGE = ROOT / "Resources" / "Sample" / "brain1_image.nrrd"
SAMPLE_LABEL = ROOT / "Resources" / "Sample" / "brain1_label.nrrd"
HEATMAP_OPACITY = 0.6


def save(figure: Figure, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None}, **kwargs)


def make_icon(path: Path = ICON) -> None:
    """128x128: a shield whose border is a hot 'perturbation' band around a grey lesion."""
    figure = Figure(figsize=(1.28, 1.28), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_axis_off()
    ax.add_patch(FancyBboxPatch((0.04, 0.04), 0.92, 0.92, boxstyle="round,pad=0,rounding_size=0.16", color="#1d2733"))
    shield = MplPath(
        [(0.5, 0.9), (0.82, 0.78), (0.8, 0.42), (0.5, 0.1), (0.2, 0.42), (0.18, 0.78), (0.5, 0.9)],
        [
            MplPath.MOVETO,
            MplPath.LINETO,
            MplPath.CURVE3,
            MplPath.CURVE3,
            MplPath.CURVE3,
            MplPath.CURVE3,
            MplPath.LINETO,
        ],
    )
    ax.add_patch(PathPatch(shield, facecolor="#d9dde2", edgecolor="#ffffff", linewidth=2.5))
    yy, xx = np.mgrid[-1:1:96j, -1:1:96j]
    radius = np.hypot(xx / 0.8, yy)
    rng = np.random.default_rng(0)
    band = np.exp(-(((radius - 0.75) / 0.12) ** 2)) * (0.6 + 0.4 * rng.random(radius.shape))
    lesion = np.where(radius < 0.7, 0.35, np.nan)
    extent = (0.3, 0.7, 0.3, 0.72)
    ax.imshow(lesion, cmap="gray", vmin=0, vmax=1, extent=extent, zorder=3)
    ax.imshow(np.ma.masked_less(band, 0.15), cmap="hot", vmin=0, vmax=1.1, extent=extent, zorder=4)
    save(figure, path, transparent=True)


def make_screenshot(path: Path = SCREENSHOT) -> dict:
    """Protect the sample case and draw the preview; returns the metrics shown."""
    image = io.read_image(SAMPLE_IMAGE)
    labels = io.read_label(SAMPLE_LABEL, image)
    array, spacing = io.to_array(image)
    label_array, _ = io.to_array(labels)
    result = protect_array(array, label_array, spacing=spacing, device="cpu")
    index = central_slice(result.region, result.slice_axis)
    original = np.take(array, index, axis=result.slice_axis).astype(np.float64)
    protected = np.take(result.protected, index, axis=result.slice_axis).astype(np.float64)
    change = np.abs(protected - original)
    window = intensity_window(array)
    rows, cols = np.nonzero(np.take(result.region, index, axis=result.slice_axis))
    margin = 40
    crop = (
        slice(max(rows.min() - margin, 0), rows.max() + margin),
        slice(max(cols.min() - margin, 0), cols.max() + margin),
    )

    figure = Figure(figsize=(10, 5.0), dpi=100, facecolor="black", layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    grey = {"cmap": "gray", "vmin": window.lo, "vmax": window.hi, "interpolation": "nearest"}
    left.imshow(original[crop], **grey)
    hot = colormaps["hot"].copy()
    hot.set_bad(alpha=0.0)
    overlay = left.imshow(
        np.ma.masked_equal(change[crop], 0.0),
        cmap=hot,
        vmin=0.0,
        vmax=max(float(change.max()), 1e-12),
        alpha=HEATMAP_OPACITY,
        interpolation="nearest",
    )
    right.imshow(protected[crop], **grey)
    for ax, title in (
        (left, f"input + |perturbation| heatmap (opacity {HEATMAP_OPACITY})"),
        (right, "protected (toggle)"),
    ):
        ax.set_title(title, color="white", fontsize=11)
        ax.set_axis_off()
    bar = figure.colorbar(overlay, ax=[left, right], fraction=0.03, pad=0.02)
    bar.set_label("|change|, native intensity units", color="white")
    bar.ax.tick_params(colors="white")
    m = result.metrics
    figure.suptitle(
        f"UMed Protect preview - brain1 (sample), slice {index}:  PSNR {m['psnr_db']:.1f} dB   SSIM {m['ssim']:.4f}   "
        f"max change {m['max_abs_change']:.3g} (budget {m['budget_native']:.3g})   "
        f"voxels changed {100 * m['fraction_changed']:.2f} %",
        color="white",
        fontsize=10,
    )
    save(figure, path, facecolor="black")
    return m


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    make_icon()
    metrics = make_screenshot()
    print(f"wrote {ICON.relative_to(ROOT)} and {SCREENSHOT.relative_to(ROOT)} (PSNR {metrics['psnr_db']:.1f} dB)")
