"""Thresholding and connected components of the change probability map."""

from __future__ import annotations

import numpy as np
import pytest

from bids_lesionchange.analysis.components import change_components, relabel_by_size


def _box(shape, start, size):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + n) for s, n in zip(start, size))] = True
    return mask


def test_small_blobs_are_dropped_and_labels_ordered_by_size():
    shape = (24, 24, 24)
    probability = np.zeros(shape, dtype=np.float32)
    probability[_box(shape, (1, 1, 1), (19, 1, 1))] = 0.9  # 19 voxels: dropped
    probability[_box(shape, (4, 4, 4), (20, 1, 1))] = 0.9  # 20 voxels: kept
    probability[_box(shape, (10, 10, 10), (3, 3, 3))] = 0.9  # 27 voxels: kept, largest
    labels = change_components(probability, threshold=0.1, min_size=20)
    assert labels.dtype == np.int32
    assert set(np.unique(labels)) == {0, 1, 2}
    assert np.count_nonzero(labels == 1) == 27
    assert np.count_nonzero(labels == 2) == 20
    assert labels[1, 1, 1] == 0


def test_threshold_is_strict():
    shape = (16, 16, 16)
    probability = np.zeros(shape, dtype=np.float32)
    at_threshold = _box(shape, (1, 1, 1), (4, 4, 4))
    above = _box(shape, (9, 9, 9), (4, 4, 4))
    probability[at_threshold] = 0.25
    probability[above] = np.nextafter(np.float32(0.25), np.float32(1))
    labels = change_components(probability, threshold=0.25, min_size=1)
    assert not labels[at_threshold].any()
    assert (labels[above] == 1).all()
    assert labels.max() == 1


def test_connectivity_decides_whether_diagonal_voxels_join():
    probability = np.zeros((8, 8, 8), dtype=np.float32)
    probability[2, 2, 2] = probability[3, 3, 3] = 1.0  # corner neighbours only
    assert change_components(probability, min_size=1, connectivity=26).max() == 1
    assert change_components(probability, min_size=1, connectivity=6).max() == 2
    with pytest.raises(ValueError, match="connectivity"):
        change_components(probability, connectivity=8)


def test_brain_mask_removes_changes_outside_the_brain():
    shape = (16, 16, 16)
    probability = np.zeros(shape, dtype=np.float32)
    probability[_box(shape, (2, 2, 2), (3, 3, 3))] = 0.8
    probability[_box(shape, (10, 10, 10), (3, 3, 3))] = 0.8
    brain = _box(shape, (0, 0, 0), (8, 16, 16))
    labels = change_components(probability, min_size=1, brain_mask=brain)
    assert labels.max() == 1
    assert labels[3, 3, 3] == 1 and labels[11, 11, 11] == 0
    with pytest.raises(ValueError, match="same grid"):
        change_components(probability, brain_mask=brain[:8])


def test_nan_probability_is_not_change():
    probability = np.full((8, 8, 8), np.nan, dtype=np.float32)
    assert change_components(probability, min_size=1).max() == 0


def test_relabel_by_size_breaks_ties_by_original_label():
    labels = np.zeros((6, 6, 6), dtype=np.int32)
    labels[0, 0, :2] = 5
    labels[5, 5, :2] = 3
    labels[2, 2, :4] = 7
    out = relabel_by_size(labels)
    assert out[2, 2, 0] == 1  # the largest
    assert out[5, 5, 0] == 2  # original label 3 before 5 at equal size
    assert out[0, 0, 0] == 3
