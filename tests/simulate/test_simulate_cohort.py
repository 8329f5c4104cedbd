"""Subjects in memory: ground truth of change, NoChange pairs, thick slices (small preset)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from bids_lesionchange.simulate.acquisition import WM_SCANNER_UNITS, RescanEffects
from bids_lesionchange.simulate.cohort import PRESETS, simulate_subject

STATIC = RescanEffects(motion=False, bias=False, gain=False, noise=False, fov=False)


def _resample(volume, src_affine, dst_affine, world_map, dst_shape, order=1):
    """Sample ``volume`` (on src grid) at ``world_map @ x`` for every destination voxel centre x."""
    matrix = np.linalg.inv(src_affine) @ world_map @ dst_affine
    return ndi.affine_transform(volume.astype(np.float32), matrix[:3, :3], matrix[:3, 3],
                                output_shape=dst_shape, order=order)


def _undo_scanner(session):
    """Invert gain, bias and gamma: back to white matter = 1 (noise stays)."""
    protocol = session.protocol
    linear = session.image / (WM_SCANNER_UNITS * protocol.gain * session.bias)
    return np.power(np.clip(linear, 0, None), 1.0 / protocol.gamma)


@pytest.fixture(scope="module")
def static_change():
    return simulate_subject(0, "Change", seed=11, effects=STATIC)


def test_change_mask_is_exactly_added_or_grown_lesion(static_change):
    baseline, follow = static_change.sessions
    assert baseline.image.shape == follow.image.shape
    np.testing.assert_array_equal(baseline.affine, follow.affine)
    expected = follow.lesion_mask & ~baseline.lesion_mask
    np.testing.assert_array_equal(static_change.change_mask, expected)
    assert static_change.change_mask.any()
    labels = set(np.unique(static_change.change_dseg).tolist())
    assert (1 in labels) == (static_change.n_new > 0)
    assert (2 in labels) == (static_change.n_enlarging > 0)
    assert static_change.n_new >= 1 and static_change.n_enlarging >= 1


def test_new_lesions_do_not_touch_baseline_lesions(static_change):
    baseline, _ = static_change.sessions
    new = static_change.change_dseg == 1
    assert not np.any(new & baseline.lesion_mask)
    pieces, n_pieces = ndi.label(static_change.change_dseg == 2)
    touching = np.unique(pieces[ndi.binary_dilation(baseline.lesion_mask)])
    assert n_pieces >= 1 and set(range(1, n_pieces + 1)) <= set(touching.tolist()), \
        "every enlarged part borders a baseline lesion"
    new_pieces, n_new = ndi.label(new)
    assert n_new >= 1
    assert not np.any(ndi.binary_dilation(new) & baseline.lesion_mask), "new lesions stand apart"


def test_nochange_pair_has_identical_lesions_and_empty_change():
    subject = simulate_subject(1, "NoChange", seed=11, effects=STATIC)
    baseline, follow = subject.sessions
    np.testing.assert_array_equal(baseline.lesion_mask, follow.lesion_mask)
    np.testing.assert_array_equal(baseline.image, follow.image)
    assert not subject.change_mask.any() and subject.n_new == 0 and subject.n_enlarging == 0
    assert baseline.lesion_mask.any()


def test_flair_contrast_and_head_shell(static_change):
    """CSF dark, WM darker than GM, lesions bright, and a skull/scalp outside the brain mask."""
    baseline = static_change.sessions[0]
    image, brain = baseline.clean, baseline.brain_mask
    lesion = image[baseline.lesion_mask].mean()
    inside = image[brain & ~ndi.binary_dilation(baseline.lesion_mask, iterations=2)]
    assert lesion > 1.25 * np.median(inside)
    head = (image > 0.05) & ~ndi.binary_dilation(brain, iterations=1)
    assert head.sum() > 0.15 * brain.sum(), "skull and scalp surround the brain"
    outside = ~ndi.binary_dilation(head | brain, iterations=2)
    assert image[outside].max() < 0.05


def test_nochange_pair_matches_after_true_transform_and_scanner_undo():
    """With every rescan effect on, undoing bias/gain/gamma and motion leaves only noise."""
    subject = simulate_subject(2, "NoChange", seed=5, effects=RescanEffects())
    baseline, follow = subject.sessions
    assert not np.allclose(subject.ses01_to_ses02, np.eye(4))
    assert baseline.image.shape != follow.image.shape  # a different field of view
    inside = ndi.binary_erosion(baseline.brain_mask, iterations=2)
    undone_1, undone_2 = _undo_scanner(baseline), _undo_scanner(follow)

    def difference(world_map):
        moved = _resample(undone_2, follow.affine, baseline.affine, world_map, baseline.image.shape)
        return (moved - undone_1)[inside]

    true = difference(subject.ses01_to_ses02)
    wrong = difference(np.linalg.inv(subject.ses01_to_ses02))
    noise = np.hypot(baseline.protocol.noise_sigma, follow.protocol.noise_sigma)
    assert abs(np.mean(true)) < 0.01
    assert np.std(true) < 1.2 * noise + 0.02  # noise plus a little interpolation error
    assert np.percentile(np.abs(true), 90) < np.percentile(np.abs(wrong), 90)
    raw = (_resample(follow.image, follow.affine, baseline.affine, subject.ses01_to_ses02,
                     baseline.image.shape) / baseline.image.clip(1))[inside]
    assert np.std(raw) > np.std(true), "without the undo, bias/gain/gamma differences remain"


def test_noise_free_nochange_pair_matches_up_to_interpolation():
    effects = RescanEffects(noise=False)
    subject = simulate_subject(3, "NoChange", seed=2, effects=effects)
    baseline, follow = subject.sessions
    inside = ndi.binary_erosion(baseline.brain_mask, iterations=2)
    moved = _resample(_undo_scanner(follow), follow.affine, baseline.affine, subject.ses01_to_ses02,
                      baseline.image.shape)
    assert np.median(np.abs(moved - _undo_scanner(baseline))[inside]) < 0.012


def test_change_truth_follows_the_motion():
    """With motion, the baseline lesions mapped by the true transform sit inside follow-up lesions."""
    subject = simulate_subject(4, "Change", seed=3, effects=RescanEffects(bias=False, gain=False, noise=False))
    baseline, follow = subject.sessions
    mapped = _resample(baseline.lesion_mask, baseline.affine, follow.affine,
                       np.linalg.inv(subject.ses01_to_ses02), follow.image.shape) >= 0.5
    near_followup = ndi.binary_dilation(follow.lesion_mask, iterations=1)
    assert mapped.sum() > 5
    assert near_followup[mapped].mean() > 0.9
    assert np.all(follow.lesion_mask[subject.change_mask])
    assert subject.change_mask.sum() > 0


def test_thick_slice_follow_up_has_the_preset_zooms():
    subject = simulate_subject(5, "Change", seed=1, effects=RescanEffects(thick_slice=1.0, fov=False))
    baseline, follow = subject.sessions
    assert baseline.protocol.zooms == PRESETS["small"].zooms and baseline.protocol.acquisition == "3D"
    assert follow.protocol.zooms == PRESETS["small"].thick_zooms and follow.protocol.acquisition == "2D"
    np.testing.assert_allclose(np.diag(follow.affine)[:3], PRESETS["small"].thick_zooms)
    assert subject.change_dseg.shape == follow.image.shape


def test_same_seed_same_subject_other_seed_other_subject():
    one = simulate_subject(0, "Change", seed=7)
    two = simulate_subject(0, "Change", seed=7)
    other = simulate_subject(0, "Change", seed=8)
    np.testing.assert_array_equal(one.sessions[1].image, two.sessions[1].image)
    np.testing.assert_array_equal(one.change_dseg, two.change_dseg)
    assert one.sessions[0].image.shape != other.sessions[0].image.shape or not np.array_equal(
        one.sessions[0].image, other.sessions[0].image)
