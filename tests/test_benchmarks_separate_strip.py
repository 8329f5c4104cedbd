"""The separate-strip benchmark's second skull strip: it only cuts, only near the brain's edge."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def separate_strip():
    return load_benchmark("separate_strip")


def brain_ball(shape=(48, 48, 48), radius=18.0) -> np.ndarray:
    grid = np.indices(shape).astype(float) - (np.asarray(shape, float)[:, None, None, None] - 1) / 2
    inside = np.sqrt((grid ** 2).sum(axis=0)) <= radius
    texture = 100.0 + 10.0 * np.random.default_rng(0).standard_normal(shape)
    return np.where(inside, texture, 0.0).astype(np.float32)


def test_the_second_strip_cuts_only_voxels_near_the_edge_and_zeroes_them(separate_strip):
    data = brain_ball()
    zooms = (1.5, 1.5, 1.5)
    stripped, ml = separate_strip.strip_again(data, zooms, np.random.default_rng(1), max_mm=4.0)
    support = data > 0
    kept = stripped != 0
    assert not (kept & ~support).any()  # nothing added
    assert np.array_equal(stripped[kept], data[kept])  # kept voxels unchanged
    cut = support & ~kept
    assert cut.any()
    depth = ndimage.distance_transform_edt(support, sampling=zooms)
    assert depth[cut].max() <= 4.0 + 1e-6  # never deeper than max_mm
    assert (depth > 4.0 + 1e-6)[support].any() and kept[depth > 4.0 + 1e-6].all()
    assert ml == pytest.approx(cut.sum() * 1.5 ** 3 / 1000.0)


def test_the_second_strip_differs_between_draws_and_leaves_part_of_the_edge(separate_strip):
    data = brain_ball()
    first, _ = separate_strip.strip_again(data, (1.0, 1.0, 1.0), np.random.default_rng(1), max_mm=3.0)
    second, _ = separate_strip.strip_again(data, (1.0, 1.0, 1.0), np.random.default_rng(2), max_mm=3.0)
    assert not np.array_equal(first != 0, second != 0)  # each session its own mask
    support = data > 0
    edge = support & ~ndimage.binary_erosion(support)
    assert (first[edge] != 0).any()  # part of the edge is left where it was
    none, ml = separate_strip.strip_again(data, (1.0, 1.0, 1.0), np.random.default_rng(1), max_mm=0.0)
    assert ml == 0.0 and np.array_equal(none, data)
