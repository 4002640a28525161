"""The label-coordinate helpers of the code screen."""

import numpy as np
import pytest

from benchmarks.edge_code_screen import edge_arc_length


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
