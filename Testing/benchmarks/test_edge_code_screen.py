"""The pattern helpers of the code screen."""

from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.edge_code_screen import candidate_change, edge_arc_length
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
