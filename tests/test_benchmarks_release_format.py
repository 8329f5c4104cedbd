"""The release-format benchmark's geometry and matching: a release keeps the anatomy where it was."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def release_format():
    return load_benchmark("release_format")


def test_a_thick_slice_scan_resampled_to_1_mm_keeps_every_point_in_place(release_format):
    affine = np.array([[0.0, 0.9, 0.0, -40.0], [-0.9, 0.0, 0.0, 30.0], [0.0, 0.0, 3.0, -20.0], [0, 0, 0, 1]])
    data = np.zeros((40, 40, 12), np.float32)
    data[10:20, 25:30, 4:8] = 100.0  # a bright block
    out, new_affine = release_format.isotropic_1mm(data, affine)
    assert np.allclose(np.linalg.norm(new_affine[:3, :3], axis=0), 1.0)
    assert out.shape == (36, 36, 36)
    assert out.min() >= 0.0  # the cubic spline's undershoot at the block's edge is clipped
    centre = lambda img, aff: aff[:3, :3] @ np.argwhere(img > 50).mean(axis=0) + aff[:3, 3]  # noqa: E731
    np.testing.assert_allclose(centre(out, new_affine), centre(data, affine), atol=0.6)


def test_changes_match_by_centre_distance(release_format):
    reference = [[0.0, 0.0, 0.0], [30.0, 0.0, 0.0]]
    centres = [[0.0, 5.9, 0.0], [30.0, 0.0, 6.1], [100.0, 0.0, 0.0]]
    assert release_format.matched(centres, reference) == 1
    assert release_format.matched([], reference) == 0 and release_format.matched(centres, []) == 0
