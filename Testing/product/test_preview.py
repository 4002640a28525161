"""The heatmap preview: display window, slice choice, Slicer names and orientation, layout at any size."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from umedprotect.errors import InputError
from umedprotect.metrics import image_quality
from umedprotect.preview import (
    CT_PRESETS,
    DisplayWindow,
    choose_window,
    looks_like_ct,
    most_changed_slice,
    parse_window,
    save_heatmap_png,
    slice_view,
)

LPS_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def ct_like(shape=(8, 40, 40)) -> np.ndarray:
    """Air at -1024 HU around a soft-tissue disc near 40 HU."""
    rng = np.random.default_rng(0)
    volume = np.full(shape, -1024, np.int16)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    inside = (yy - shape[1] / 2) ** 2 + (xx - shape[2] / 2) ** 2 < (shape[1] / 3) ** 2
    volume[:, inside] = (40 + rng.normal(0, 20, (shape[0], int(inside.sum())))).astype(np.int16)
    return volume


def test_a_ct_gets_the_soft_tissue_window_and_an_mr_its_percentiles():
    ct, mr = ct_like(), np.random.default_rng(1).gamma(2.0, 200.0, (8, 40, 40))
    assert looks_like_ct(ct) and not looks_like_ct(mr)
    assert choose_window(ct) == DisplayWindow(40.0, 400.0, "CT soft tissue")
    window = choose_window(mr)
    assert window.source.startswith("percentiles") and window.lo == pytest.approx(np.percentile(mr, 0.5))
    assert window.hi == pytest.approx(np.percentile(mr, 99.5))


def test_the_dicom_window_wins_in_auto_and_an_explicit_choice_wins_over_it():
    ct = ct_like()
    assert choose_window(ct, dicom_window=(50.0, 350.0)) == DisplayWindow(50.0, 350.0, "DICOM")
    assert (
        choose_window(ct, "ct-lung", dicom_window=(50.0, 350.0)).level,
        choose_window(ct, "ct-lung").width,
    ) == CT_PRESETS["ct-lung"]
    assert choose_window(ct, (100.0, 20.0)) == DisplayWindow(100.0, 20.0, "given")
    assert choose_window(ct, "percentile").source.startswith("percentiles")


def test_the_modality_tag_overrides_the_intensity_guess():
    ct = ct_like()
    assert not looks_like_ct(ct, modality="MR") and looks_like_ct(np.ones((4, 4)), modality="CT ")


@pytest.mark.parametrize(
    "text, expected", [("ct-bone", "ct-bone"), ("40,400", (40.0, 400.0)), ("-600,1500", (-600.0, 1500.0))]
)
def test_window_option_values(text, expected):
    assert parse_window(text) == expected


@pytest.mark.parametrize("text", ["soft", "40", "40,0", "40,-5", "a,b", "nan,400"])
def test_bad_window_option_values_are_refused(text):
    with pytest.raises(InputError):
        parse_window(text)


def test_the_most_changed_slice_is_chosen_not_the_central_one():
    original = np.zeros((9, 6, 6), np.int16)
    protected = original.copy()
    protected[1, :3, :3] = 5
    protected[6, :2, :2] = 2
    assert most_changed_slice(original, protected, 0) == 1
    assert most_changed_slice(original, protected, 2) == 0
    assert most_changed_slice(original, original, 0) == 4  # nothing changed: the middle
    assert most_changed_slice(original[0], protected[0], None) is None


def test_slices_are_named_and_oriented_as_slicer_shows_them():
    axial = slice_view((120, 64, 64), 0, 60, direction=LPS_IDENTITY)
    assert axial.name == "axial slice 60 of 120 (K index)"
    assert axial.letters == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert not (axial.transpose or axial.flip_rows or axial.flip_cols)
    coronal = slice_view((120, 64, 64), 1, 10, spacing=(3.0, 1.0, 0.5), direction=LPS_IDENTITY)
    assert coronal.name == "coronal slice 10 of 64 (J index)" and coronal.flip_rows  # superior at the top
    assert coronal.letters == {"top": "S", "bottom": "I", "left": "R", "right": "L"} and coronal.aspect == 6.0
    sagittal = slice_view((120, 64, 64), 2, 5, direction=LPS_IDENTITY)
    assert sagittal.name.startswith("sagittal slice 5 of 64 (I index)")
    assert sagittal.letters == {"top": "S", "bottom": "I", "left": "A", "right": "P"}


def test_a_volume_stored_sideways_is_named_by_its_anatomy_and_turned_upright():
    # index axes: i -> superior, j -> right, k -> posterior: numpy axis 0 (k) is the coronal normal
    direction = np.array([[0, -1, 0], [0, 0, 1], [1, 0, 0]], float).ravel()
    view = slice_view((30, 40, 50), 0, 3, direction=direction)
    assert view.name == "coronal slice 3 of 30 (K index)" and view.transpose
    assert view.letters == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    shown = view.orient(np.arange(40 * 50).reshape(40, 50))
    assert shown.shape == (50, 40)


def render(tmp_path, original, protected, region, axis, **options):
    path = save_heatmap_png(
        original, protected, region, tmp_path / "h.png", image_quality(original, protected), axis, **options
    )
    return imread(path)


def panels_not_blank(pixels: np.ndarray) -> bool:
    """Each third of the picture (original, perturbation, protected) holds more than background."""
    thirds = np.array_split(pixels[..., :3], 3, axis=1)
    return all(len(np.unique(third.reshape(-1, 3), axis=0)) > 8 for third in thirds)


@pytest.mark.parametrize("shape", [(3, 6, 5), (3, 12, 300), (3, 300, 12)], ids=["tiny", "wide", "tall"])
def test_heatmaps_of_tiny_wide_and_tall_images_are_laid_out_and_not_blank(tmp_path, shape):
    rng = np.random.default_rng(0)
    original = rng.normal(100, 30, shape).astype(np.float32)
    region = np.zeros(shape, bool)
    region[1, shape[1] // 3 : 2 * shape[1] // 3 + 1, shape[2] // 3 : 2 * shape[2] // 3 + 1] = True
    protected = original + 3 * region
    pixels = render(tmp_path, original, protected, region, 0, spacing=(2.5, 1.0, 1.0), direction=LPS_IDENTITY)
    height, width = pixels.shape[:2]
    assert 1200 <= width <= 1300 and 250 <= height <= 900  # three panels side by side, never squeezed
    assert panels_not_blank(pixels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.png"]


def test_a_2d_heatmap_and_a_missing_folder(tmp_path):
    original = np.random.default_rng(0).integers(0, 255, (40, 50)).astype(np.uint8)
    region = np.zeros(original.shape, bool)
    region[10:20, 10:30] = True
    protected = original.copy()
    protected[region] = np.clip(original[region].astype(int) + 2, 0, 255).astype(np.uint8)
    path = save_heatmap_png(
        original, protected, region, tmp_path / "new" / "h.png", image_quality(original, protected), None
    )
    assert path.is_file() and panels_not_blank(imread(path))


def test_a_dicom_series_gives_its_modality_and_window(tmp_path):
    import SimpleITK as sitk

    from umedprotect.cli.protect import dicom_display_tags

    for z in range(2):
        image = sitk.GetImageFromArray(np.full((1, 4, 4), z, np.int16))
        tags = {
            "0008|0060": "CT",
            "0020|000e": "1.2.3.4",
            "0020|0013": str(z + 1),
            "0020|0032": f"0\\0\\{z}",
            "0028|1050": "50\\-600",
            "0028|1051": "350\\1500",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        sitk.WriteImage(image, str(tmp_path / f"{z}.dcm"))
    assert dicom_display_tags(tmp_path) == {"modality": "CT", "window": (50.0, 350.0)}
    assert dicom_display_tags(tmp_path / "0.dcm") == {}
