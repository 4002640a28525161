"""The pattern helpers of the code screen."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.edge_code_screen import candidate_change, edge_arc_length, keep_labels, smooth_then_code
from benchmarks.fixed_patterns import band_noise, blob_sigmas


def test_arc_length_runs_both_ways_round_a_square_from_its_first_edge_pixel():
    labels = np.zeros((30, 30), dtype=np.uint8)
    labels[5:25, 5:25] = 1  # edge: 76 pixels round, measured from (5, 5)
    arc = edge_arc_length(labels)
    assert arc[5, 5] == 0
    assert arc[5, 24] == 19 and arc[24, 5] == 19  # along the top and down the left side alike
    assert arc[24, 24] == pytest.approx(36 + np.sqrt(2))  # the far corner: half way round, cutting a corner
    assert arc[15, 6] == arc[15, 5] == 10  # inside: the arc of the nearest edge pixel
    assert (arc[labels == 0] == 0).all()


def test_arc_length_of_each_label_and_component_starts_afresh():
    labels = np.zeros((20, 40), dtype=np.uint8)
    labels[2:8, 2:8] = 1
    labels[2:8, 20:26] = 1
    labels[10:16, 2:8] = 2
    arc = edge_arc_length(labels)
    assert arc[2, 2] == arc[2, 20] == arc[10, 2] == 0
    assert arc[7, 7] == arc[7, 25] == arc[15, 7] == pytest.approx(8 + np.sqrt(2))


@pytest.mark.parametrize("period", [4.0, 6.0, 10.0])
def test_blob_noise_spectrum_peaks_at_the_asked_period(period):
    noise = band_noise((256, 256), blob_sigmas(period))
    power = np.abs(np.fft.fft2(noise)) ** 2
    frequency = np.fft.fftfreq(256)
    radius = np.hypot(*np.meshgrid(frequency, frequency))
    bins = np.linspace(0, 0.5, 65)
    mean_power = np.histogram(radius, bins, weights=power)[0] / np.maximum(np.histogram(radius, bins)[0], 1)
    peak = np.argmax(mean_power)
    assert 1 / bins[peak + 1] <= period <= 1 / bins[peak] * 1.15


def test_fill_tiles_cycle_over_the_labels_and_the_one_pixel_tiles_differ_in_sign():
    labels = np.zeros((12, 72), dtype=np.uint8)
    for k in range(6):  # labels 1-6 side by side, 12 x 12 each
        labels[:, 12 * k : 12 * k + 12] = k + 1
    args = SimpleNamespace(tiles=["checker", "rows", "cols", "low", "high"], radius=2.0)
    change = candidate_change("fill", np.zeros(labels.shape), labels, 2.0, args)
    block = [change[:, 12 * k : 12 * k + 12] for k in range(6)]
    assert (block[0] == block[5]).all()  # label 6 repeats label 1's checkerboard
    assert (block[1] == block[1][:, :1]).all() and (block[2] == block[2][:1]).all()  # row and column stripes
    assert (block[3] == -block[4]).all() and block[3].mean() == 1.0  # three pixels in four at +2, one at -2
    assert (block[3][1::2, 1::2] == -2).all() and (block[3][0::2] == 2).all()


@pytest.mark.parametrize("power", [0.0, 0.25, 0.5])
def test_fill_balanced_weighs_each_label_by_its_pixel_count_to_the_minus_power(power):
    labels = np.zeros((16, 48), dtype=np.uint8)
    labels[:, :32] = 1  # 512 pixels
    labels[:8, 32:40] = 2  # 64 pixels: the smallest label keeps the full amplitude
    args = SimpleNamespace(tiles=["checker", "rows", "cols"], radius=2.0, balance_power=power)
    change = candidate_change("fill-balanced", np.zeros(labels.shape), labels, 2.0, args)
    assert np.abs(change[labels == 2]).max() == 2.0
    assert np.abs(change[labels == 1]).max() == pytest.approx(2.0 * 8.0**-power)
    assert (change[labels == 0] == 0).all()


def two_organs() -> tuple[np.ndarray, np.ndarray]:
    """Noise with a 20-pixel square of label 1 beside one of label 2."""
    image = np.random.default_rng(0).normal(0.0, 10.0, (30, 60))
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[5:25, 5:25] = 1
    labels[5:25, 35:55] = 2
    return image, labels


def test_smooth_variants_change_the_labels_as_documented():
    image, labels = two_organs()
    args = SimpleNamespace(
        smooth_fraction=1.0, smooth_sigma=1.0, width=3.0, period=4.0, rings_amplitude=0.5, radius=2.0
    )
    smooth = candidate_change("smooth", image, labels, 8.0, args)
    signed = candidate_change("smooth-signed", image, labels, 8.0, args)
    assert np.array_equal(signed[labels == 1], smooth[labels == 1])
    assert np.array_equal(signed[labels == 2], -smooth[labels == 2])  # the noise doubled on even labels
    rim = candidate_change("smooth-rim", image, labels, 8.0, args)
    assert np.array_equal(rim[:, :30][5:8], smooth[:, :30][5:8])  # three pixels deep: smoothed
    assert (rim[9:21, 9:21] == 0).all() and (rim[12:18, 12:18] != smooth[12:18, 12:18]).all()
    rings = candidate_change("smooth-rings", image, labels, 8.0, args) - smooth
    assert (rings[labels != 2] == 0).all()  # label 1 smooth only
    assert np.abs(rings[labels == 2]).max() <= 4.0 and np.abs(rings[labels == 2]).max() > 3.0
    every = candidate_change("smooth-rings-all", image, labels, 8.0, args) - smooth
    depth = np.arange(8) + 0.5  # down the middle column of each square, from its top edge
    for column, period in ((15, 4.0), (45, 8.0)):  # label k at period P 2^(k-1)
        assert np.allclose(every[5:13, column], 4.0 * np.tanh(3 * np.sin(2 * np.pi * depth / period)), atol=1e-6)


def test_smooth_first_keeps_the_smoothing_whole_and_scales_the_code_into_the_floor():
    image, labels = two_organs()
    image /= 10  # noise of std 1: smoothing it away changes the image by an RMS of 0.56
    image[0, :2] = (-200.0, 200.0)  # a range of 400: 50 dB leaves an RMS change of 1.26 over the image
    args = SimpleNamespace(
        smooth_fraction=1.0, smooth_sigma=1.0, period=6.0, rings_amplitude=1.0, radius=2.0, min_psnr=50.0
    )
    smooth = candidate_change("smooth", image, labels, 8.0, args)
    protected = smooth_then_code("smooth-rings-all", image, labels, 8.0, args)
    rings = protected - image - smooth
    rms = np.sqrt(np.mean((protected - image) ** 2))
    assert 1.24 < rms <= 400 / 10**2.5  # the floor met, and nearly all of it spent
    full_rings = candidate_change("smooth-rings-all", image, labels, 8.0, args) - smooth
    scale = np.abs(rings).max() / np.abs(full_rings).max()
    assert 0.1 < scale < 0.5 and np.allclose(rings, scale * full_rings, atol=1e-4)  # the code alone scaled


def test_keep_labels_keeps_one_organ_renumbered_on_the_same_images(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    source = tmp_path / "Dataset009_Organs"
    _, labels = two_organs()
    for folder, name in (("imagesTr", "a_0000"), ("labelsTr", "a"), ("imagesTs", "b_0000"), ("labelsTs", "b")):
        (source / folder).mkdir(parents=True)
        array = labels * 7 if folder.startswith("images") else labels
        sitk.WriteImage(sitk.GetImageFromArray(array), str(source / folder / f"{name}.nii.gz"))
    info = {"labels": {"background": 0, "liver": 1, "spleen": 2}, "channel_names": {"0": "CT"}}
    (source / "dataset.json").write_text(json.dumps(info))
    root = keep_labels(source, tmp_path / "out", [2])
    assert keep_labels(source, tmp_path / "out", [2]) == root  # made once
    assert json.loads((root / "dataset.json").read_text())["labels"] == {"background": 0, "spleen": 1}
    for folder, name in (("labelsTr", "a"), ("labelsTs", "b")):
        kept = sitk.GetArrayFromImage(sitk.ReadImage(str(root / folder / f"{name}.nii.gz")))
        assert np.array_equal(kept, (labels == 2).astype(np.uint8))
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "imagesTr" / "a_0000.nii.gz")))
    assert np.array_equal(image, labels * 7)
