"""SuperMix: labels are exactly the replaced superpixels, and nothing else changes."""

from dataclasses import replace

import numpy as np
import pytest

from bids_lesionchange.params import SuperMixParams
from bids_lesionchange.synth.crops import PairVolumes, random_crop_corner, synthetic_change_sample
from bids_lesionchange.synth.supermix import sample_n_segments, save_supermix_examples, superpixels, supermix


def _scan(shape=(32, 32, 32), seed=0):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    mask = (grid**2).sum(0) < 0.7
    image = np.clip(0.5 + 0.8 * gaussian_filter(rng.standard_normal(shape), 2), 0, 1) * mask
    return image.astype(np.float32), mask


@pytest.mark.parametrize("downsample", [1, 2])
def test_label_is_exactly_the_union_of_replaced_superpixels(downsample):
    x, mask = _scan()
    recon = np.clip(x + 0.3, 0, 1).astype(np.float32)
    params = SuperMixParams(tau=0.7, slic_downsample=downsample)
    mixed, label, (segments, replaced) = supermix(x, recon, mask, np.random.default_rng(1), params,
                                                  n_segments=60, return_segments=True)
    assert replaced.size > 0 and label.any()
    np.testing.assert_array_equal(label, np.isin(segments, replaced) & mask)
    for segment in np.unique(segments[segments > 0]):
        inside = label[segments == segment]
        assert inside.all() or not inside.any()  # whole superpixels only
    assert not label[~mask].any()
    np.testing.assert_array_equal(mixed[~label], x[~label])
    np.testing.assert_array_equal(mixed[label], recon[label])


def test_superpixels_cover_the_brain_only():
    x, mask = _scan()
    segments = superpixels(x, mask, 40, SuperMixParams(slic_downsample=2))
    assert np.all(segments[~mask] == 0)
    assert np.all(segments[mask] > 0)
    assert 10 <= len(np.unique(segments[mask])) <= 80


def test_tau_one_changes_nothing_and_n_segments_is_log_uniform():
    x, mask = _scan()
    mixed, label = supermix(x, 1 - x, mask, np.random.default_rng(0), SuperMixParams(tau=1.0))
    assert not label.any()
    np.testing.assert_array_equal(mixed, x)
    draws = [sample_n_segments(np.random.default_rng(i), SuperMixParams()) for i in range(400)]
    assert 200 <= min(draws) and max(draws) <= 5000
    # log-uniform: the median sits near the geometric mean sqrt(200 * 5000) = 1000
    assert 700 < np.median(draws) < 1400


def test_synthetic_sample_mixes_the_later_session_and_keeps_the_reference():
    x, mask = _scan((40, 40, 40))
    pair = PairVolumes("sub-01", baseline=x * 0.9, followup=x, brain_mask=mask)
    rng = np.random.default_rng(3)
    params = replace(SuperMixParams(), tau=0.5, n_segments_min=40, n_segments_max=41)
    sample = synthetic_change_sample(pair, (16, 16, 16), lambda v, r: np.ones_like(v), rng, params)
    window = tuple(slice(c, c + 16) for c in sample["corner"])
    np.testing.assert_array_equal(sample["reference"], pair.baseline[window])
    np.testing.assert_array_equal(sample["original"], pair.followup[window])
    assert np.all(sample["mixed"][sample["label"]] == 1.0)
    swapped = synthetic_change_sample(pair, (16, 16, 16), lambda v, r: v, np.random.default_rng(3), params,
                                      swap_sessions=True)
    window = tuple(slice(c, c + 16) for c in swapped["corner"])
    np.testing.assert_array_equal(swapped["reference"], pair.followup[window])


def test_random_crops_hold_brain():
    _, mask = _scan((48, 48, 48))
    rng = np.random.default_rng(0)
    for _ in range(10):
        corner = random_crop_corner(mask, (16, 16, 16), rng, min_brain_fraction=0.5)
        window = tuple(slice(c, c + 16) for c in corner)
        assert mask[window].shape == (16, 16, 16)
        assert mask[window].mean() >= 0.5


def test_examples_are_saved_as_png(tmp_path):
    x, mask = _scan()
    mixed, label = supermix(x, 1 - x, mask, np.random.default_rng(0), SuperMixParams(tau=0.6), n_segments=50)
    paths = save_supermix_examples([dict(baseline=x, followup=x, recon=1 - x, mixed=mixed, label=label)],
                                   tmp_path / "examples")
    assert [p.name for p in paths] == ["supermix-00.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_supermix_does_not_import_tensorflow_nor_the_model_layer():
    import subprocess
    import sys

    code = ("import sys, bids_lesionchange.synth.supermix, bids_lesionchange.synth.crops, "
            "bids_lesionchange.params; print('tensorflow' in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith('bids_lesionchange.model')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False []"


def test_intensity_nuisance_is_smooth_bounded_and_confined_to_the_brain():
    from bids_lesionchange.synth.crops import intensity_nuisance, smooth_random_field

    rng = np.random.default_rng(3)
    field = smooth_random_field((32, 32, 32), rng)
    assert np.abs(field).max() == pytest.approx(1.0)
    assert np.abs(np.diff(field, axis=0)).max() < 0.2  # smooth: no superpixel-like edges
    volume = rng.uniform(0.2, 0.9, size=(32, 32, 32)).astype(np.float32)
    brain = np.zeros(volume.shape, bool)
    brain[4:28, 4:28, 4:28] = True
    assert intensity_nuisance(volume, brain, rng, 0.0) is volume
    out = intensity_nuisance(volume, brain, rng, 0.1)
    np.testing.assert_array_equal(out[~brain], volume[~brain])
    assert out.min() >= 0 and out.max() <= 1
    ratio = out[brain] / volume[brain]
    assert not np.allclose(ratio, 1.0) and np.all(np.abs(np.log(ratio)) < 0.35)


def test_augmented_sample_keeps_the_supermix_label():
    from bids_lesionchange.params import SuperMixParams
    from bids_lesionchange.synth.crops import PairVolumes, synthetic_change_sample

    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, size=(32, 32, 32)).astype(np.float32)
    pair = PairVolumes("p", base, base.copy(), np.ones(base.shape, bool))
    recon = lambda v, r: np.clip(v + 0.3, 0, 1)  # noqa: E731
    n_changed = 0
    for seed in range(6):
        plain = synthetic_change_sample(pair, (24, 24, 24), recon, np.random.default_rng(seed), SuperMixParams(tau=0.9))
        augmented = synthetic_change_sample(pair, (24, 24, 24), recon, np.random.default_rng(seed),
                                            SuperMixParams(tau=0.9), intensity_augmentation=0.1)
        np.testing.assert_array_equal(plain["label"], augmented["label"])
        n_changed += not (np.allclose(plain["mixed"], augmented["mixed"])
                          and np.allclose(plain["reference"], augmented["reference"]))
    assert n_changed >= 3  # 80 % of the samples get the nuisance


def test_thick_slice_resampling_keeps_flat_images_and_differs_by_slice_offset():
    from bids_lesionchange.synth.crops import thick_slice_resample

    flat = np.full((16, 16, 40), 0.4, np.float32)
    assert np.allclose(thick_slice_resample(flat, 2, 3.5, 1.2), 0.4, atol=1e-6)
    edge = np.zeros((8, 8, 40), np.float32)
    edge[..., 20:] = 1.0
    a = thick_slice_resample(edge, 2, 4.0, 0.0)
    b = thick_slice_resample(edge, 2, 4.0, 2.0)
    assert a.shape == edge.shape and a.min() >= 0 and a.max() <= 1
    assert np.abs(a - b)[..., 16:24].max() > 0.05  # another slice offset: another edge profile
    np.testing.assert_allclose(a[..., :10], 0, atol=1e-6)
    np.testing.assert_allclose(a[..., 30:], 1, atol=1e-6)  # far from the edge nothing moves
    np.testing.assert_allclose(thick_slice_resample(edge, 0, 3.0, 0.5), edge, atol=1e-6)  # along a flat axis


def test_acquisition_nuisance_keeps_the_label_and_stays_in_the_brain():
    from bids_lesionchange.params import SuperMixParams
    from bids_lesionchange.synth.crops import PairVolumes, acquisition_nuisance, synthetic_change_sample

    rng = np.random.default_rng(1)
    volume = rng.uniform(0.2, 0.8, size=(24, 24, 24)).astype(np.float32)
    brain = np.zeros(volume.shape, bool)
    brain[3:21, 3:21, 3:21] = True
    assert acquisition_nuisance(volume, brain, rng, 0.0) is volume
    for slices in (None, (2, 3.0)):
        out = acquisition_nuisance(volume, brain, rng, 0.03, shift=True, slices=slices)
        assert out.min() >= 0 and out.max() <= 1 and np.all(out[~brain] == 0)
    pair = PairVolumes("p", volume, volume.copy(), brain)
    recon = lambda v, r: np.clip(v + 0.3, 0, 1)  # noqa: E731
    for seed in range(4):
        plain = synthetic_change_sample(pair, (16, 16, 16), recon, np.random.default_rng(seed), SuperMixParams(tau=0.9))
        augmented = synthetic_change_sample(pair, (16, 16, 16), recon, np.random.default_rng(seed),
                                            SuperMixParams(tau=0.9), acquisition_augmentation=0.03)
        np.testing.assert_array_equal(plain["label"], augmented["label"])


def _lesion_params(**changes):
    # Whole-brain counts scaled to the 32^3 test phantom: a few dozen superpixels.
    base = SuperMixParams(lesion_fraction=1.0, lesion_segments_min=40, lesion_segments_max=80, slic_downsample=1)
    return replace(base, **changes)


def test_lesion_supermix_adds_hyperintense_lesions_and_labels_only_what_rose():
    from bids_lesionchange.synth.supermix import lesion_supermix, tissue_level

    x, mask = _scan()
    recon = x.copy()
    params = _lesion_params(lesion_contrast_min=1.5, lesion_contrast_max=1.5, max_lesions=3)
    for seed in range(5):
        mixed, label, (segments, chosen) = lesion_supermix(x, recon, mask, np.random.default_rng(seed), params,
                                                           return_segments=True)
        level = tissue_level(x, mask)
        assert 1 <= chosen.size <= 3 and label.any()
        assert not label[~mask].any()
        assert (mixed >= x - 1e-6).all()  # a new lesion never darkens anything
        assert (mixed[label] - x[label] >= 0.1 * level - 1e-6).all()  # the label is where x' rose
        core = np.isin(segments, chosen)
        # inside the chosen superpixels (away from their soft edge) the lesion reaches 1.5 x tissue level, +-15 %
        from scipy import ndimage

        inner = ndimage.binary_erosion(core, iterations=3)
        if inner.any():
            assert np.all(mixed[inner] >= np.minimum(x[inner], 1.0) - 1e-6)
            assert np.all(mixed[inner] >= min(1.5 * level * 0.85, 1.0) - 1e-3)
        # far from the chosen superpixels nothing changed
        far = ~ndimage.binary_dilation(core, np.ones((3, 3, 3), bool), iterations=7)  # Gaussian radius 4 sigma <= 6
        np.testing.assert_array_equal(mixed[far], x[far])


def test_lesion_supermix_does_not_label_an_existing_lesion_or_csf():
    from bids_lesionchange.synth.supermix import lesion_supermix

    shape = (32, 32, 32)
    mask = np.ones(shape, dtype=bool)
    x = np.full(shape, 0.5, dtype=np.float32)
    x[:, :16] = 1.0  # already maximally bright: adding a lesion there raises nothing
    x[:, :, :4] = 0.05  # CSF-dark band
    params = _lesion_params(max_lesions=50, lesion_contrast_max=1.6)
    mixed, label = lesion_supermix(x, x.copy(), mask, np.random.default_rng(0), params)
    assert label.any()
    assert not label[:, :16, 4:].any()
    assert not label[:, :, :2].any()


def test_lesion_supermix_without_tissue_changes_nothing():
    from bids_lesionchange.synth.supermix import lesion_supermix

    x = np.zeros((16, 16, 16), dtype=np.float32)
    mask = np.zeros(x.shape, dtype=bool)
    mixed, label = lesion_supermix(x, x, mask, np.random.default_rng(0), _lesion_params())
    assert not label.any()
    np.testing.assert_array_equal(mixed, x)


def test_lesion_fraction_chooses_the_positive_source():
    x, mask = _scan()
    pair = PairVolumes("p", x, x.copy(), mask)
    recon = lambda volume, rng: np.clip(volume * 0.5, 0, 1).astype(np.float32)  # darker: never a lesion
    paper = synthetic_change_sample(pair, (32, 32, 32), recon, np.random.default_rng(3),
                                    SuperMixParams(tau=0.5, n_segments_min=60, n_segments_max=60, slic_downsample=1))
    assert paper["label"].any()
    np.testing.assert_array_equal(paper["mixed"][paper["label"]], paper["recon"][paper["label"]])
    lesion = synthetic_change_sample(pair, (32, 32, 32), recon, np.random.default_rng(3), _lesion_params())
    assert lesion["label"].any()
    assert (lesion["mixed"][lesion["label"]] > lesion["original"][lesion["label"]]).all()


def test_enlarging_lesions_grow_next_to_an_existing_one_and_only_the_rim_is_labelled():
    from scipy import ndimage

    from bids_lesionchange.synth.supermix import lesion_supermix

    x, mask = _scan()
    x = np.clip(x, 0.4, 0.6) * mask
    lesion = np.zeros(mask.shape, bool)
    lesion[14:18, 14:18, 14:18] = True
    x[lesion] = 1.0  # a lesion already there
    params = _lesion_params(lesion_enlarging_fraction=1.0, max_lesions=1, lesion_segments_min=200,
                            lesion_segments_max=200)
    near = ndimage.binary_dilation(lesion, iterations=2 + 10)
    for seed in range(4):
        mixed, label = lesion_supermix(x, x.copy(), mask, np.random.default_rng(seed), params)
        assert label.any() and not label[lesion].any()
        # the new hyperintensity is a superpixel touching the old lesion
        assert label[near].sum() == label.sum()


def test_lesions_cut_to_a_ball_stay_within_its_radius():
    from bids_lesionchange.synth.supermix import lesion_supermix

    x, mask = _scan()
    params = _lesion_params(max_lesions=1, lesion_radius_min=2.0, lesion_radius_max=2.0,
                            lesion_segments_min=20, lesion_segments_max=20)
    for seed in range(4):
        _, label, (segments, chosen) = lesion_supermix(x, x.copy(), mask, np.random.default_rng(seed), params,
                                                      return_segments=True)
        assert label.any() and chosen.size == 1
        points = np.argwhere(label)
        extent = points.max(0) - points.min(0)
        # a ball of radius 2 spans 5 voxels per axis; the soft edge (alpha >= 0.5 where the
        # Gaussian-smoothed core, sigma <= 1.5, is >= 0.25) adds at most 2 voxels on each side
        assert (extent <= 8).all()


def test_lesions_stay_off_the_brain_edge_with_a_minimum_depth():
    from scipy import ndimage

    from bids_lesionchange.synth.supermix import lesion_supermix

    x, mask = _scan()
    params = _lesion_params(lesion_min_depth=5.0, lesion_radius_min=1.5, lesion_radius_max=3.0, max_lesions=4)
    depth = ndimage.distance_transform_edt(mask)
    found = 0
    for seed in range(6):
        _, label = lesion_supermix(x, x.copy(), mask, np.random.default_rng(seed), params)
        found += int(label.any())
        components, n = ndimage.label(label)
        # every lesion is centred >= 5 voxels inside the brain; none touches its outer layer
        for index in range(1, n + 1):
            assert depth[components == index].max() >= 3
        assert not label[depth < 1.5].any()
    assert found >= 4


def _brain_with_lesion(shape=(32, 32, 32)):
    mask = np.zeros(shape, bool)
    mask[2:-2, 2:-2, 2:-2] = True
    x = np.where(mask, 0.5, 0.0).astype(np.float32)
    lesion = np.zeros(shape, bool)
    lesion[13:19, 13:19, 13:19] = True
    x[lesion] = 0.8  # 1.6 x the tissue level: a lesion already there
    return x, mask, lesion


def test_grown_lesions_are_a_rim_of_the_lesions_brightness_on_part_of_its_border():
    from scipy import ndimage

    from bids_lesionchange.synth.supermix import grow_lesions, tissue_level

    x, mask, lesion = _brain_with_lesion()
    level = tissue_level(x, mask)
    # a rim of at most 3 voxels; where it dominates (alpha >= 0.5) reaches 1 voxel further, its
    # soft edge (Gaussian, sigma <= 1, cut at alpha 0.01) at most 3
    shell = ndimage.binary_dilation(lesion, iterations=3 + 1) & ~lesion
    soft = ndimage.binary_dilation(lesion, iterations=3 + 3)
    params = SuperMixParams(lesion_growth_fraction=1.0, lesion_min_depth=4.0)
    for seed in range(6):
        mixed, label = grow_lesions(x, x.copy(), mask, np.random.default_rng(seed), params)
        assert label.any()
        assert not label[lesion].any()  # the old lesion is not change
        assert label[shell].sum() == label.sum()  # only a rim around it
        assert label.sum() < shell.sum()  # on part of its border, not all around (a ball of radius <= 8)
        np.testing.assert_array_equal(mixed[lesion], x[lesion])
        np.testing.assert_array_equal(mixed[~soft], x[~soft])
        assert (mixed >= x - 1e-6).all()
        assert (mixed[label] - x[label] >= 0.1 * level - 1e-6).all()
        assert mixed.max() <= 0.8 * 1.1 * 1.15 + 1e-5  # the lesion's brightness, +-10 % and the texture's 15 %


def test_growth_spares_csf_and_needs_a_lesion():
    from bids_lesionchange.synth.supermix import grow_lesions

    x, mask, lesion = _brain_with_lesion()
    x[:, :, 19:] = np.where(mask[:, :, 19:], 0.05, 0.0)  # CSF against the lesion's upper face
    params = SuperMixParams(lesion_growth_fraction=1.0, lesion_min_depth=4.0)
    for seed in range(6):
        _, label = grow_lesions(x, x.copy(), mask, np.random.default_rng(seed), params)
        assert not label[:, :, 19:].any()
    plain = np.where(mask, 0.5, 0.0).astype(np.float32)
    mixed, label = grow_lesions(plain, plain.copy(), mask, np.random.default_rng(0), params)
    assert not label.any()
    np.testing.assert_array_equal(mixed, plain)


def test_growth_fraction_grows_a_lesion_and_falls_back_to_a_new_one_without():
    from scipy import ndimage

    x, mask, lesion = _brain_with_lesion()
    params = _lesion_params(lesion_growth_fraction=1.0, lesion_min_depth=4.0)
    grown = synthetic_change_sample(PairVolumes("p", x, x.copy(), mask), (32, 32, 32),
                                    lambda volume, rng: volume.copy(), np.random.default_rng(1), params)
    assert grown["label"].any()
    assert not (grown["label"] & ~ndimage.binary_dilation(lesion, iterations=4)).any()
    plain = np.where(mask, 0.5, 0.0).astype(np.float32)
    new = synthetic_change_sample(PairVolumes("p", plain, plain.copy(), mask), (32, 32, 32),
                                  lambda volume, rng: volume.copy(), np.random.default_rng(1), params)
    assert new["label"].any()  # no lesion to grow: lesion_supermix drew a new one
