"""Lesion growth, sampling helpers and acquisition geometry of the simulator (tiny arrays)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from bids_lesionchange.simulate.acquisition import (
    RescanEffects,
    SessionProtocol,
    acquire,
    random_motion,
    resample_to_session,
    rigid_matrix,
    rotation_matrix,
)
from bids_lesionchange.simulate.lesions import LesionInstance, make_lesion_shape, render_lesions
from bids_lesionchange.simulate.sampling import dilated_support, sample_trilinear, separable_upsample, support_index


def _shape(seed=0, volume=300.0):
    allowed = np.ones((24, 24, 24), dtype=bool)
    allowed[:, :, :6] = False
    return make_lesion_shape((12, 12, 12), volume, allowed, 1.0, 1.5, "deep", np.random.default_rng(seed))


def test_lesion_flood_is_connected_nested_and_respects_allowed():
    shape = _shape()
    assert len(shape.order) == 300
    small = LesionInstance(0, shape, 100).binary_box()
    big = LesionInstance(0, shape, 250).binary_box()
    assert small.sum() == 100 and big.sum() == 250
    assert np.all(big[small]), "an enlarged lesion must contain the baseline lesion"
    assert ndi.label(big)[1] == 1, "a lesion is one connected blob"
    corner = np.asarray(shape.corner)
    assert np.all(np.argwhere(big)[:, 2] + corner[2] >= 6), "lesion voxels must be allowed voxels"


def test_lesion_is_irregular_not_a_sphere():
    binary = LesionInstance(0, _shape(seed=3, volume=2000.0), 2000).binary_box()
    sphere_radius = (3 * 2000 / (4 * np.pi)) ** (1 / 3)
    grid = np.indices(binary.shape) - np.array([12, 12, 12])[:, None, None, None]
    sphere = np.sqrt((grid**2).sum(0)) <= sphere_radius
    dice = 2 * (binary & sphere).sum() / (binary.sum() + sphere.sum())
    assert dice < 0.9


def test_render_soft_edges_threshold_back_to_the_lesion():
    shape = _shape()
    lesion = LesionInstance(0, shape, 200)
    fraction, contrast = render_lesions([lesion], (40, 40, 40), voxel_mm=1.0)
    mask = fraction >= 0.5
    assert abs(int(mask.sum()) - 200) < 30
    assert np.any((fraction > 0.05) & (fraction < 0.5)), "edges must be soft"
    assert np.allclose(contrast[mask], 1.5)


def test_support_index_keeps_every_nonzero_sample():
    rng = np.random.default_rng(0)
    volume = np.zeros((20, 20, 20), dtype=np.float32)
    volume[8:12, 5:9, 10:14] = rng.random((4, 4, 4))
    coords = rng.uniform(-2, 22, size=(3, 20000))
    full = sample_trilinear(volume, coords)
    kept = sample_trilinear(volume, coords, support_index(coords, dilated_support(volume > 0)))
    np.testing.assert_array_equal(full, kept)
    assert np.count_nonzero(full) > 100


def test_separable_upsample_matches_map_coordinates():
    coarse = np.random.default_rng(1).standard_normal((4, 5, 3))
    shape = (9, 13, 7)
    grids = np.meshgrid(*[np.linspace(0, c - 1, s) for c, s in zip(coarse.shape, shape)], indexing="ij")
    expected = ndi.map_coordinates(coarse, np.stack(grids), order=1)
    np.testing.assert_allclose(separable_upsample(coarse, shape, order=1), expected, atol=1e-5)


def _protocol(shape=(20, 20, 20), zooms=(1.0, 1.0, 1.0), pose=None, noise=0.0, gain=1.0, gamma=1.0):
    return SessionProtocol(zooms=zooms, shape=shape, acquisition="3D", head_pose=np.eye(4) if pose is None else pose,
                           gain=gain, gamma=gamma, noise_sigma=noise, bias_seed=1, bias_amplitude=0.0)


def test_resample_follows_the_head_pose():
    phantom = np.zeros((20, 20, 20), dtype=np.float32)
    phantom[12, 10, 10] = 1.0
    phantom_affine = np.eye(4)
    phantom_affine[:3, 3] = -9.5
    shift = np.eye(4)
    shift[:3, 3] = [3.0, 0.0, 0.0]  # the head moves +3 mm in x in the scanner
    (moved,) = resample_to_session([phantom], phantom_affine, _protocol(pose=shift))
    (still,) = resample_to_session([phantom], phantom_affine, _protocol())
    assert np.unravel_index(still.argmax(), still.shape) == (12, 10, 10)
    assert np.unravel_index(moved.argmax(), moved.shape) == (15, 10, 10)


def test_thick_slices_average_along_the_slice_axis():
    phantom = np.zeros((30, 30, 30), dtype=np.float32)
    phantom[:, :, 15] = 1.0
    affine = np.eye(4)
    affine[:3, 3] = -14.5
    (thick,) = resample_to_session([phantom], affine, _protocol(shape=(30, 30, 10), zooms=(1.0, 1.0, 3.0)))
    profile = thick[15, 15, :]
    assert profile.max() == pytest.approx(1.0 / 3.0, abs=0.05), "a 1 mm sheet fills a third of a 3 mm slice"


def test_rician_noise_level_and_positivity():
    clean = np.full((40, 40, 40), 1.0, dtype=np.float32)
    image, bias = acquire(clean, _protocol(shape=(40, 40, 40), noise=0.05, gain=1.2), noise_seed=3)
    assert np.all(image >= 0) and np.all(bias == 1)
    assert image.std() / (400.0 * 1.2) == pytest.approx(0.05, rel=0.1)
    background, _ = acquire(np.zeros_like(clean), _protocol(shape=(40, 40, 40), noise=0.05), noise_seed=3)
    assert background.mean() / (400 * 0.05) == pytest.approx(np.sqrt(np.pi / 2), rel=0.05), "Rayleigh background"


def test_random_motion_stays_within_limits():
    rng = np.random.default_rng(0)
    for _ in range(50):
        matrix = random_motion(rng, 10.0, 10.0)
        angle = np.degrees(np.arccos(np.clip((np.trace(matrix[:3, :3]) - 1) / 2, -1, 1)))
        assert angle <= 10.0 + 1e-6 and np.linalg.norm(matrix[:3, 3]) <= 10.0 + 1e-6
        np.testing.assert_allclose(matrix[:3, :3] @ matrix[:3, :3].T, np.eye(3), atol=1e-10)


@pytest.mark.parametrize("angles, shift", [((7.0, 0.0, 0.0), (1.3, 0.0, 0.0)), ((4.0, -3.0, 5.0), (3.0, -2.0, 4.0)),
                                           ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)), ((-30.0, 12.5, 90.0), (10.0, 0.0, -5.0))])
def test_rigid_matrix_of_angles_is_the_former_phantom_rigid_matrix(angles, shift):
    """The phantom's own rigid_matrix(rotation_deg, translation_mm), written out, is
    rigid_matrix(rotation_matrix(angles), shift): rotations about x, then y, then z."""
    ax, ay, az = np.deg2rad(angles)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    former = np.eye(4)
    former[:3, :3] = rz @ ry @ rx
    former[:3, 3] = shift
    assert np.allclose(rigid_matrix(rotation_matrix(angles), shift), former, rtol=0, atol=1e-15)


def test_phantom_motion_is_the_rigid_matrix_of_its_angles():
    from bids_lesionchange.simulate.phantom import head_phantom

    phantom = head_phantom((8, 8, 8), 2.0, rotation_deg=(5, -3, 8), translation_mm=(1.5, -2, 0.5))
    assert np.array_equal(phantom.motion, rigid_matrix(rotation_matrix((5, -3, 8)), (1.5, -2, 0.5)))


def test_effects_reject_bad_fraction():
    with pytest.raises(ValueError):
        RescanEffects(thick_slice=1.5)
