"""A training pair cut to its brain (``brain_box``) gives exactly the crops and samples it gives whole."""

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.params import SuperMixParams
from bids_lesionchange.synth.crops import PairVolumes, brain_box, random_crop_corner, synthetic_change_sample


def _pair(shape, centre, radius, seed=0):
    """A ball-shaped brain at ``centre`` in a larger field of view, textured, with two bright lesions."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(np.float32)
    scale = np.asarray(radius, dtype=np.float32)[:, None, None, None]
    mask = (((grid - np.asarray(centre, dtype=np.float32)[:, None, None, None]) / scale) ** 2).sum(0) < 1
    texture = np.clip(0.45 + 0.6 * gaussian_filter(rng.standard_normal(shape), 1.5), 0, 1)
    for _ in range(2):
        c = np.argwhere(mask)[rng.integers(mask.sum())]
        texture[tuple(slice(max(v - 2, 0), v + 2) for v in c)] = 0.9
    base = (texture * mask).astype(np.float32)
    follow = np.clip(base + 0.02 * rng.standard_normal(shape) * mask, 0, 1).astype(np.float32)
    return base, follow, mask


# brains in the middle of a large field of view, against one face, and in a corner
CASES = [((70, 60, 50), (35, 30, 25), (14, 12, 10)),
         ((70, 60, 50), (8, 30, 25), (9, 12, 10)),
         ((70, 60, 50), (61, 52, 44), (10, 9, 7))]


@pytest.mark.parametrize("shape, centre, radius", CASES)
@pytest.mark.parametrize("crop_shape", [(16, 16, 8), (16, 16, 4), (15, 9, 7)])
def test_random_crops_are_the_same_voxels_after_the_cut(shape, centre, radius, crop_shape):
    base, _, mask = _pair(shape, centre, radius)
    box = brain_box(mask, crop_shape)
    assert np.prod([s.stop - s.start for s in box]) < mask.size  # something was cut
    assert mask[box].sum() == mask.sum()
    offset = np.array([s.start for s in box])
    whole_rng, cut_rng = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(40):
        whole = np.array(random_crop_corner(mask, crop_shape, whole_rng, min_brain_fraction=0.6))
        cut = np.array(random_crop_corner(mask[box], crop_shape, cut_rng, min_brain_fraction=0.6))
        np.testing.assert_array_equal(cut + offset, whole)
        window = tuple(slice(c, c + k) for c, k in zip(whole, crop_shape))
        cut_window = tuple(slice(c, c + k) for c, k in zip(cut, crop_shape))
        np.testing.assert_array_equal(base[box][cut_window], base[window])


@pytest.mark.parametrize("shape, centre, radius", CASES)
def test_synthetic_change_samples_are_identical_after_the_cut(shape, centre, radius):
    base, follow, mask = _pair(shape, centre, radius, seed=1)
    crop_shape = (16, 16, 8)
    box = brain_box(mask, crop_shape)
    whole = PairVolumes("whole", base, follow, mask)
    cut = PairVolumes("cut", base[box], follow[box], mask[box])
    params = SuperMixParams(tau=0.7, lesion_fraction=0.5, lesion_enlarging_fraction=0.3, lesion_radius_max=4.0)

    def reconstruct(volume, rng):
        return np.clip(volume + rng.normal(0, 0.05, volume.shape), 0, 1).astype(np.float32)

    whole_rng, cut_rng = np.random.default_rng(7), np.random.default_rng(7)
    for i in range(6):
        kwargs = dict(swap_sessions=bool(i % 2), min_brain_fraction=0.25, intensity_augmentation=0.1,
                      acquisition_augmentation=0.03)
        a = synthetic_change_sample(whole, crop_shape, reconstruct, whole_rng, params, **kwargs)
        b = synthetic_change_sample(cut, crop_shape, reconstruct, cut_rng, params, **kwargs)
        assert tuple(np.asarray(b["corner"]) + [s.start for s in box]) == tuple(a["corner"])
        for key in ("mixed", "reference", "original", "recon", "label", "brain"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_an_empty_mask_keeps_the_whole_volume():
    assert brain_box(np.zeros((5, 6, 7), bool), (4, 4, 4)) == (slice(0, 5), slice(0, 6), slice(0, 7))


def test_training_and_adaptation_pairs_are_cut_to_the_brain(tmp_path):
    from bids_lesionchange.model.adapt import session_self_pairs
    from bids_lesionchange.model.training import load_pairs

    base, follow, mask = _pair((70, 60, 50), (35, 30, 25), (14, 12, 10))
    paths = []
    for name, array in (("b", base), ("f", follow), ("m", mask.astype(np.uint8))):
        paths.append(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(paths[-1]))
    (pair,) = load_pairs([(*paths, "p")], (16, 16, 8))
    box = brain_box(mask, (16, 16, 8))
    # the brain spans 27 x 23 x 19 voxels; half a crop (8, 8, 4) is kept on each side
    assert pair.baseline.shape == tuple(s.stop - s.start for s in box) == (43, 39, 27)
    np.testing.assert_array_equal(pair.followup, follow[box])
    assert pair.brain_voxels == mask.sum()
    (whole,) = load_pairs([(*paths, "p")], (16, 16, 8), cut_to_brain=False)
    assert whole.baseline.shape == mask.shape
    (self_pair,) = session_self_pairs([("s", base, mask)], (16, 16, 8))
    np.testing.assert_array_equal(self_pair.baseline, base[box])
    assert self_pair.followup is self_pair.baseline  # one array; the sampled nuisance makes them differ


def test_both_pair_readers_clip_to_the_unit_range_and_zero_outside_the_brain(tmp_path):
    """Training and adaptation pairs are prepared by one function: [0, 1], zero outside the mask,
    and a (nearly) empty mask is refused by both with the pair's or session's name."""
    from bids_lesionchange.errors import InputError
    from bids_lesionchange.model.adapt import session_self_pairs
    from bids_lesionchange.model.training import load_pairs

    base, follow, mask = _pair((40, 36, 30), (20, 18, 15), (9, 8, 7))
    base = base * 1.6 - 0.2  # above 1 on the lesions, below 0 at the edge
    outside = ~mask
    base[outside] = 0.7
    paths = []
    for name, array in (("b", base), ("f", follow), ("m", mask.astype(np.uint8))):
        paths.append(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4)), str(paths[-1]))
    (loaded,) = load_pairs([(*paths, "p")], (8, 8, 8), cut_to_brain=False)
    (adapted,) = session_self_pairs([("s", base, mask)], (8, 8, 8))
    box = brain_box(mask, (8, 8, 8))
    for pair, expected in ((loaded, base), (adapted, base[box])):
        assert pair.baseline.min() >= 0 and pair.baseline.max() <= 1
        assert pair.baseline.max() == 1  # the lesions were clipped, not rescaled
        inside = mask if pair is loaded else mask[box]
        assert not pair.baseline[~inside].any()
        np.testing.assert_allclose(pair.baseline[inside], np.clip(expected[inside], 0, 1))
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(mask.shape, np.uint8), np.eye(4)), str(empty))
    with pytest.raises(InputError, match="pair p: the brain mask is"):
        load_pairs([(paths[0], paths[1], empty, "p")], (8, 8, 8))
    with pytest.raises(ValueError, match="session s: the brain mask is"):
        session_self_pairs([("s", base, np.zeros(mask.shape))], (8, 8, 8))


def _argwhere_corner(mask, crop_shape, rng, min_brain_fraction, attempts=20):
    """random_crop_corner as it was written before stop 45 (np.argwhere), the reference for its draws."""
    brain = np.argwhere(mask)
    best, best_fraction = None, -1.0
    for _ in range(attempts):
        centre = brain[rng.integers(len(brain))]
        corner = tuple(int(np.clip(c - k // 2, 0, s - k)) for c, k, s in zip(centre, crop_shape, mask.shape))
        fraction = float(mask[tuple(slice(c, c + k) for c, k in zip(corner, crop_shape))].mean())
        if fraction >= min_brain_fraction:
            return corner
        if fraction > best_fraction:
            best, best_fraction = corner, fraction
    return best


@pytest.mark.parametrize("dtype", [bool, np.float32, np.uint8])
@pytest.mark.parametrize("min_brain_fraction", [0.0, 0.6, 1.01])
def test_crop_centres_are_drawn_as_argwhere_lists_them(dtype, min_brain_fraction):
    """Brain voxels are drawn from their flat C-order indices: the same centres as np.argwhere, on
    an anisotropic grid where another order (or a wrong unravelling) would give other crops."""
    _, _, mask = _pair((41, 33, 27), (20, 15, 12), (13, 11, 9), seed=2)
    mask = mask.astype(dtype)
    crop_shape = (16, 9, 7)
    new_rng, old_rng = np.random.default_rng(11), np.random.default_rng(11)
    corners = set()
    for _ in range(60):
        corner = random_crop_corner(mask, crop_shape, new_rng, min_brain_fraction=min_brain_fraction)
        assert corner == _argwhere_corner(mask, crop_shape, old_rng, min_brain_fraction)
        assert all(isinstance(c, int) for c in corner)
        corners.add(corner)
    assert len(corners) > 10  # the draws vary, so agreeing means something


def test_crops_can_be_centred_on_given_voxels():
    """``centres`` (flat indices) replace the brain voxels as the centres drawn; an empty array falls
    back to the brain; an index outside the volume is refused."""
    _, _, mask = _pair((41, 33, 27), (20, 15, 12), (13, 11, 9), seed=2)
    crop_shape = (16, 9, 7)
    spots = [(20, 15, 12), (10, 20, 8), (30, 8, 18)]
    centres = np.ravel_multi_index(np.array(spots).T, mask.shape)
    rng = np.random.default_rng(3)
    expected = {tuple(int(np.clip(c - k // 2, 0, s - k)) for c, k, s in zip(spot, crop_shape, mask.shape))
                for spot in spots}
    drawn = {random_crop_corner(mask, crop_shape, rng, 0.0, centres=centres) for _ in range(40)}
    assert drawn == expected
    rng_a, rng_b = np.random.default_rng(4), np.random.default_rng(4)
    assert (random_crop_corner(mask, crop_shape, rng_a, 0.3, centres=np.array([], dtype=np.int64))
            == random_crop_corner(mask, crop_shape, rng_b, 0.3))
    with pytest.raises(ValueError, match="outside a volume"):
        random_crop_corner(mask, crop_shape, rng, 0.0, centres=np.array([mask.size]))


def test_focus_fraction_centres_that_share_of_the_samples_and_zero_draws_nothing_more():
    base, follow, mask = _pair((41, 33, 27), (20, 15, 12), (13, 11, 9), seed=2)
    crop_shape = (16, 16, 8)
    spot = (20, 15, 12)
    focus = np.array([np.ravel_multi_index(spot, mask.shape)])
    focused = PairVolumes("p", base, follow, mask, focus=focus)
    plain = PairVolumes("p", base, follow, mask)
    params = SuperMixParams(n_segments_min=20, n_segments_max=40, slic_downsample=1, slic_iterations=3)
    corner = tuple(int(np.clip(c - k // 2, 0, s - k)) for c, k, s in zip(spot, crop_shape, mask.shape))

    def recon(volume, rng):
        return volume * 0.9

    # focus_fraction 0 (the default): the samples of a pair without focus, draw for draw
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(3):
        a = synthetic_change_sample(focused, crop_shape, recon, rng_a, params, min_brain_fraction=0.0)
        b = synthetic_change_sample(plain, crop_shape, recon, rng_b, params, min_brain_fraction=0.0)
        assert a["corner"] == b["corner"]
        np.testing.assert_array_equal(a["mixed"], b["mixed"])
    # focus_fraction 1: every crop around the one focus voxel
    rng = np.random.default_rng(8)
    assert all(synthetic_change_sample(focused, crop_shape, recon, rng, params, min_brain_fraction=0.0,
                                       focus_fraction=1.0)["corner"] == corner for _ in range(5))
    # a share in between: some crops there, some elsewhere
    rng = np.random.default_rng(9)
    corners = [synthetic_change_sample(focused, crop_shape, recon, rng, params, min_brain_fraction=0.0,
                                       focus_fraction=0.5)["corner"] for _ in range(20)]
    assert 0 < sum(c == corner for c in corners) < 20
