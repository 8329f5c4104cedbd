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


def test_brighter_on_followup_keeps_new_hyperintensities_and_drops_darkening():
    from bids_lesionchange.analysis.components import brighter_on_followup

    baseline = np.full((20, 20, 20), 0.5, np.float32)
    followup = baseline.copy()
    followup[3:8, 3:8, 3:8] += 0.3  # a new lesion
    followup[12:17, 12:17, 12:17] -= 0.3  # a shrinking one / a darker patch
    brighter = brighter_on_followup(baseline, followup)
    assert brighter[5, 5, 5] and not brighter[14, 14, 14]
    assert not brighter[0, 19, 0]  # no difference: not brighter


def test_brighter_by_more_than_the_pair_noise():
    """noise_z: the margin follows the pair's own noise (robust sd of the smoothed difference)."""
    from bids_lesionchange.analysis.components import brighter_on_followup

    rng = np.random.default_rng(0)
    brain = np.ones((32, 32, 32), bool)
    for noise in (0.02, 0.08):
        baseline = (0.5 + noise * rng.standard_normal(brain.shape)).astype(np.float32)
        followup = (0.5 + noise * rng.standard_normal(brain.shape)).astype(np.float32)
        followup[4:10, 4:10, 4:10] += 0.4  # a new lesion, far above either noise
        plain = brighter_on_followup(baseline, followup)
        strict = brighter_on_followup(baseline, followup, noise_z=2.0, brain_mask=brain)
        assert plain.mean() > 0.4  # without a margin about half of the noise is "brighter"
        assert strict[5:9, 5:9, 5:9].all() and strict.mean() < 0.05  # the lesion, and ~2 % of noise
    assert np.array_equal(brighter_on_followup(baseline, followup, noise_z=0.0, brain_mask=brain), plain)


def test_components_files_direction_increase_removes_darkening_changes(tmp_path):
    import nibabel as nib

    from bids_lesionchange.analysis.files import components_files

    shape = (20, 20, 20)
    baseline = np.full(shape, 0.5, np.float32)
    followup = baseline.copy()
    followup[3:8, 3:8, 3:8] += 0.3
    followup[12:17, 12:17, 12:17] -= 0.3
    probability = np.zeros(shape, np.float32)
    probability[3:8, 3:8, 3:8] = 0.9
    probability[12:17, 12:17, 12:17] = 0.9  # the network flags both
    files = {}
    for name, data in (("p", probability), ("b", baseline), ("f", followup), ("m", np.ones(shape, np.uint8))):
        files[name] = str(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(data, np.eye(4)), files[name])
    out = (str(tmp_path / "mask.nii.gz"), str(tmp_path / "dseg.nii.gz"))
    assert components_files(files["p"], files["m"], *out, 0.1, 20, direction="any")[2] == 2
    _, labels, n = components_files(files["p"], files["m"], *out, 0.1, 20, direction="increase",
                                    baseline=files["b"], followup=files["f"])
    assert n == 1
    assert nib.load(labels).get_fdata()[5, 5, 5] == 1 and nib.load(labels).get_fdata()[14, 14, 14] == 0
    with pytest.raises(ValueError, match="needs the preprocessed"):
        components_files(files["p"], files["m"], *out, direction="increase")


def test_drop_dark_components_keeps_hyperintensities_only():
    from bids_lesionchange.analysis.components import drop_dark_components

    followup = np.full((20, 20, 20), 0.8, np.float32)  # the brain's bulk
    followup[2:6, 2:6, 2:6] = 1.0  # a bright change
    followup[10:16, 10:16, 10:16] = 0.3  # a change in dark tissue (CSF), larger
    labels = np.zeros(followup.shape, np.int32)
    labels[10:16, 10:16, 10:16] = 1
    labels[2:6, 2:6, 2:6] = 2
    out = drop_dark_components(labels, followup, np.ones(followup.shape, bool))
    assert out.max() == 1 and out[3, 3, 3] == 1 and out[12, 12, 12] == 0
    assert drop_dark_components(np.zeros_like(labels), followup, np.ones(followup.shape, bool)).max() == 0


def test_a_new_lesion_touching_a_ventricle_survives_the_increase_rule(tmp_path):
    import nibabel as nib

    from bids_lesionchange.analysis.files import components_files

    shape = (30, 30, 30)
    baseline = np.full(shape, 0.8, np.float32)  # parenchyma
    baseline[5:25, 5:25, 5:15] = 0.2  # a large ventricle (CSF), dark
    followup = baseline.copy()
    followup[5:25, 5:25, 5:15] = 0.25  # CSF a little brighter at follow-up (partial volume)
    followup[10:14, 10:14, 15:19] = 1.0  # a new periventricular lesion on the ventricle's roof
    probability = np.zeros(shape, np.float32)
    probability[5:25, 5:25, 5:15] = 0.5  # the network flags the ventricle ...
    probability[10:14, 10:14, 15:19] = 0.9  # ... and the lesion, in one connected blob
    files = {}
    for name, data in (("p", probability), ("b", baseline), ("f", followup), ("m", np.ones(shape, np.uint8))):
        files[name] = str(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(data, np.eye(4)), files[name])
    _, labels, n = components_files(files["p"], files["m"], str(tmp_path / "mask.nii.gz"),
                                    str(tmp_path / "dseg.nii.gz"), 0.1, 20, direction="increase",
                                    baseline=files["b"], followup=files["f"])
    out = nib.load(labels).get_fdata()
    assert n == 1 and out[12, 12, 17] == 1 and out[15, 15, 10] == 0


def test_drop_preexisting_components_keeps_new_and_enlarging_drops_brightened_old_lesions():
    from bids_lesionchange.analysis.components import drop_preexisting_components

    rng = np.random.default_rng(0)
    baseline = (0.5 + 0.02 * rng.standard_normal((30, 30, 30))).astype(np.float32)  # white matter at 0.5
    baseline[:, :, 20:] = 0.1  # CSF: dark on FLAIR
    baseline[2:8, 2:8, 2:8] = 0.8  # an old lesion: hyperintense at baseline
    baseline[20:27, 2:8, 2:8] = 0.8  # the old core of an enlarging lesion (7 of 10 rows)
    labels = np.zeros(baseline.shape, np.int32)
    labels[2:8, 2:8, 2:8] = 1  # the old lesion got brighter: not new, not enlarging
    labels[12:16, 12:16, 12:16] = 2  # a new lesion in normal-appearing tissue
    labels[20:30, 2:8, 2:8] = 3  # the enlarging lesion: old core + 30 % grown rim
    brain = np.ones(baseline.shape, bool)
    out = drop_preexisting_components(labels, baseline, brain)
    assert out.max() == 2
    assert out[4, 4, 4] == 0 and out[14, 14, 14] > 0 and out[25, 4, 4] > 0 and out[28, 4, 4] > 0
    assert out[25, 4, 4] == 1  # renumbered by size: the enlarging lesion (360 voxels) is the largest
    # The rule's parameter is what decides: ask for half the voxels to be new and the rim is too small.
    strict = drop_preexisting_components(labels, baseline, brain, min_new_fraction=0.5)
    assert strict.max() == 1 and strict[14, 14, 14] == 1
    # A flat baseline has no white-matter peak: nothing removed.
    flat = drop_preexisting_components(labels, np.full(baseline.shape, 0.5, np.float32), brain)
    assert flat.max() == 3
    with pytest.raises(ValueError, match="min_new_fraction"):
        drop_preexisting_components(labels, baseline, brain, min_new_fraction=1.5)



def test_drop_preexisting_components_with_followup_needs_tissue_that_became_hyperintense():
    from bids_lesionchange.analysis.components import drop_preexisting_components, newly_hyperintense

    rng = np.random.default_rng(1)
    baseline = (0.5 + 0.02 * rng.standard_normal((30, 30, 30))).astype(np.float32)  # white matter at 0.5
    baseline[:, :, 24:] = 0.1  # CSF
    followup = (0.5 + 0.02 * rng.standard_normal(baseline.shape)).astype(np.float32)
    followup[:, :, 24:] = 0.1
    labels = np.zeros(baseline.shape, np.int32)
    labels[2:7, 2:7, 2:7] = 1  # a new lesion: 0.8 at follow-up (1.6 x white matter)
    followup[2:7, 2:7, 2:7] = 0.8
    labels[12:17, 12:17, 12:17] = 2  # normal-appearing at both times: 0.52 is white matter, not a lesion
    followup[12:17, 12:17, 12:17] = 0.52
    labels[20:24, 2:7, 2:7] = 3  # 2 of its 4 rows turned hyperintense (50 %)
    followup[20:22, 2:7, 2:7] = 0.75
    brain = np.ones(baseline.shape, bool)
    # On the baseline alone all three were normal-appearing tissue: all kept.
    assert drop_preexisting_components(labels, baseline, brain).max() == 3
    out = drop_preexisting_components(labels, baseline, brain, followup=followup)
    assert out.max() == 2 and out[4, 4, 4] > 0 and out[14, 14, 14] == 0 and out[20, 4, 4] > 0
    # The share that decides is MIN_NEW_FRACTION's: at 0.6, the half-hyperintense change goes too.
    assert drop_preexisting_components(labels, baseline, brain, followup=followup, min_new_fraction=0.6).max() == 1
    # Each session on its own scale: the same follow-up at twice the gain gives the same answer.
    assert np.array_equal(drop_preexisting_components(labels, baseline, brain, followup=2 * followup), out)
    # A flat follow-up has no white-matter peak: judged on the baseline alone.
    normal = baseline <= 0.6
    assert np.array_equal(newly_hyperintense(normal, np.full(baseline.shape, 0.5, np.float32), brain), normal)
    with pytest.raises(ValueError, match="differ in shape"):
        newly_hyperintense(normal, followup[:-1], brain)


def test_drop_preexisting_components_counts_only_tissue_that_was_not_csf_at_baseline():
    from bids_lesionchange.analysis.components import drop_preexisting_components

    rng = np.random.default_rng(2)
    baseline = (0.5 + 0.02 * rng.standard_normal((30, 30, 30))).astype(np.float32)  # white matter at 0.5
    baseline[:, :, 24:] = 0.1  # CSF
    baseline[10:20, 14:16, 2:20] = 0.1  # a sulcus at baseline
    followup = (0.5 + 0.02 * rng.standard_normal(baseline.shape)).astype(np.float32)
    followup[:, :, 24:] = 0.1
    followup[10:20, 17:19, 2:20] = 0.1  # ... 3 voxels over at follow-up (misalignment, partial volume)
    labels = np.zeros(baseline.shape, np.int32)
    labels[10:20, 14:16, 2:20] = 1  # where the sulcus was: grey-matter bright (1.3 x white matter) at follow-up
    followup[10:20, 14:16, 2:20] = 0.65
    labels[2:7, 2:7, 2:7] = 2  # a new lesion in white matter
    followup[2:7, 2:7, 2:7] = 0.8
    brain = np.ones(baseline.shape, bool)
    for kwargs in ({}, {"followup": followup}):
        out = drop_preexisting_components(labels, baseline, brain, **kwargs)
        assert out.max() == 1 and out[4, 4, 4] == 1 and out[15, 14, 10] == 0, kwargs
    # the same change over tissue (the sulcus not there at baseline) is a new lesion: kept
    baseline[10:20, 14:16, 2:20] = 0.5
    assert drop_preexisting_components(labels, baseline, brain, followup=followup).max() == 2


def test_drop_diffuse_components_keeps_focal_changes_drops_regions_that_brightened_with_their_surroundings():
    from bids_lesionchange.analysis.components import MIN_FOCAL_RISE, drop_diffuse_components, focal_rise

    rng = np.random.default_rng(1)
    baseline = (0.5 + 0.01 * rng.standard_normal((40, 40, 40))).astype(np.float32)  # white matter at 0.5
    baseline[:, :, 32:] = 0.1  # CSF
    followup = baseline + 0.005 * rng.standard_normal(baseline.shape).astype(np.float32)
    labels = np.zeros(baseline.shape, np.int32)
    followup[8:12, 8:12, 8:12] += 0.2  # a new lesion: its tissue rose by 0.4 x white matter, not the tissue around
    labels[8:12, 8:12, 8:12] = 1
    followup[18:34, 18:34, 10:26] += 0.06  # a region brighter at follow-up (bias, contrast): its core was flagged
    labels[22:30, 22:30, 14:22] = 2
    followup[4:9, 26:31, 4:9] += 0.04  # a faint focal rise: 0.08 x white matter, below the rule's 0.1 x
    labels[4:9, 26:31, 4:9] = 3
    baseline[20:26, 4:10, 20:26] = 0.8  # an old lesion whose rim grew into normal tissue
    followup[20:26, 4:10, 20:26] = 0.8
    followup[26:28, 4:10, 20:26] = 0.75
    labels[24:28, 4:10, 20:26] = 4  # the change: two rows of old lesion and the two grown rows
    brain = np.ones(baseline.shape, bool)
    rise = focal_rise(labels, baseline, followup, baseline <= 0.575)
    assert rise[1] == pytest.approx(0.2, abs=0.01)
    assert abs(rise[2]) < 0.01  # brightened as much as the normal tissue around it
    assert rise[3] == pytest.approx(0.04, abs=0.01)
    assert rise[4] == pytest.approx(0.25, abs=0.01)  # measured over the grown part only
    out = drop_diffuse_components(labels, baseline, followup, brain)
    kept = {int(out[10, 10, 10]), int(out[26, 26, 18]), int(out[6, 28, 6]), int(out[27, 6, 22])}
    assert out.max() == 2 and out[10, 10, 10] > 0 and out[27, 6, 22] > 0
    assert out[26, 26, 18] == 0 and out[6, 28, 6] == 0 and kept == {0, 1, 2}
    # The level is a fraction of the white-matter peak: at half of it the faint focal rise stays.
    assert drop_diffuse_components(labels, baseline, followup, brain, min_focal_rise=MIN_FOCAL_RISE / 2).max() == 3
    # Twice the image scale, the same answer (the rule follows the white-matter peak).
    assert np.array_equal(drop_diffuse_components(labels, 2 * baseline, 2 * followup, brain), out)
    # A flat baseline has no white-matter peak: nothing removed.
    flat = np.full(baseline.shape, 0.5, np.float32)
    assert drop_diffuse_components(labels, flat, flat, brain).max() == 4
    with pytest.raises(ValueError, match="min_focal_rise"):
        drop_diffuse_components(labels, baseline, followup, brain, min_focal_rise=-0.1)
    with pytest.raises(ValueError, match="differ in shape"):
        drop_diffuse_components(labels, baseline[1:], followup, brain)


def test_drop_rim_components_drops_changes_in_the_outer_rim_keeps_deeper_ones():
    from bids_lesionchange.analysis.components import drop_rim_components

    brain = np.zeros((40, 40, 40), bool)
    brain[4:36, 4:36, 4:36] = True  # a box brain: the rim is 3 voxels deep at 1 mm
    labels = np.zeros(brain.shape, np.int32)
    labels[4:7, 10:16, 10:16] = 1  # all in the rim (depths 1-3 mm): cortex / mask edge
    labels[15:21, 15:21, 15:21] = 2  # deep: a white-matter lesion
    labels[5:11, 25:31, 25:31] = 3  # juxtacortical: 2 of its 6 rows (33 %) in the rim
    out = drop_rim_components(labels, brain)
    assert out.max() == 2
    assert out[5, 12, 12] == 0 and out[17, 17, 17] > 0 and out[8, 27, 27] > 0
    # The rim is in mm: at 2 mm voxels 3 mm is one voxel deep (depth 2 mm; the next is 4 mm),
    # so only the outermost row of component 1 (1 of 3) is in the rim and it stays.
    coarse = drop_rim_components(labels, brain, zooms=(2.0, 2.0, 2.0))
    assert coarse.max() == 3
    # The share decides: allow no voxel in the rim and the juxtacortical change goes as well.
    strict = drop_rim_components(labels, brain, max_rim_fraction=0.0)
    assert strict.max() == 1 and strict[17, 17, 17] == 1
    with pytest.raises(ValueError, match="max_rim_fraction"):
        drop_rim_components(labels, brain, max_rim_fraction=2.0)
    with pytest.raises(ValueError, match="differ in shape"):
        drop_rim_components(labels, brain[1:])


@pytest.mark.parametrize("offset, psf", [((25, 18, 22), None), ((0, 18, 22), None), ((50, 0, 48), None),
                                         ((0, 18, 22), (1.0, 1.0, 5.0)), ((50, 0, 48), (2.0, 1.0, 14.0))])
def test_change_labels_on_the_brains_box_equal_the_rule_on_the_whole_grid(offset, psf):
    """change_labels runs the increase rule on the brain's bounding box (speed); the labels, their
    numbering by size and the order of equal sizes must be those of the rule on the whole grid,
    also when the brain touches the grid's edge."""
    from scipy import ndimage

    from bids_lesionchange.analysis.components import GROW_MM, _increase_labels, change_labels

    rng = np.random.default_rng(3)
    shape = (90, 80, 90)
    brain = np.zeros(shape, bool)
    brain[tuple(slice(o, o + s) for o, s in zip(offset, (40, 44, 42)))] = True
    baseline = np.where(brain, rng.normal(0.5, 0.03, shape), 0).astype(np.float32)
    baseline[brain & (rng.random(shape) < 0.1)] = 0.15  # CSF-like voxels
    # Follow-up brighter or darker in patches everywhere, up to the brain's edge, where the 1-voxel
    # Gaussian of the difference sees the zeros outside the brain (a box without a margin would
    # not), and changes flagged independently of them.
    patches = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    followup = np.where(brain, baseline + 0.05 * patches / patches.std(), 0).astype(np.float32)
    blobs = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    probability = np.where(brain, (blobs > 1.0 * blobs.std()) * 0.9, 0).astype(np.float32)
    # most flagged regions also rose more than the tissue around them (the focal-rise step keeps
    # those), the others only with their patch
    focal = (probability > 0) & (ndimage.gaussian_filter(rng.normal(size=shape), 4.0) > -0.02)
    followup = np.where(focal, followup + 0.1, followup).astype(np.float32)
    record = {}
    whole = _increase_labels(probability, brain, 0.1, 20, baseline, followup, 0.0, (1.0, 1.0, 1.0), psf, record,
                             GROW_MM)
    steps = {}
    cropped = change_labels(probability, brain, 0.1, 20, direction="increase", baseline=baseline,
                            followup=followup, psf_fwhm=psf, steps=steps, extent_mm=GROW_MM)
    # the extent step is an option: off by default, the rule ends with the rim step
    default_steps = {}
    default = change_labels(probability, brain, 0.1, 20, direction="increase", baseline=baseline,
                            followup=followup, psf_fwhm=psf, steps=default_steps)
    assert list(default_steps)[-1] == "rim" and np.array_equal(default, default_steps["rim"])
    with pytest.raises(ValueError, match="extent_mm"):
        change_labels(probability, brain, 0.1, 20, direction="increase", baseline=baseline, followup=followup,
                      extent_mm=-1.0)
    assert whole.max() >= 3
    assert cropped.dtype == np.int32 and np.array_equal(cropped, whole)
    # The steps a benchmark reads (which step removed a change) are the rule's own, in its order,
    # on the whole grid: each one keeps a subset of the previous one's voxels, and the last is the result.
    assert list(steps) == ["threshold", "dark", "preexisting", "diffuse", "rim", "extent"] == list(record)
    for name in steps:
        assert steps[name].shape == shape and np.array_equal(steps[name], record[name])
    removing = [steps[name] for name in ("threshold", "dark", "preexisting", "diffuse", "rim")]
    for before, after in zip(removing, removing[1:]):
        assert not np.any((after > 0) & (before == 0))
    assert np.array_equal(steps["extent"], cropped)
    assert (steps["threshold"] > 0).sum() > (steps["rim"] > 0).sum()  # the steps removed something here
    # the extent step grows the changes that are left and makes or removes none (it may join two)
    assert np.all(cropped[steps["rim"] > 0] > 0)
    assert 0 < cropped.max() <= steps["rim"].max()
    for label in range(1, cropped.max() + 1):
        assert np.any(steps["rim"][cropped == label] > 0)
    # the rule hands the pre-existing step its new tissue, computed once: the same answer as the
    # step computing it from the normal-appearing tissue and the follow-up
    from bids_lesionchange.analysis.components import drop_preexisting_components, new_tissue, normal_appearing

    normal = normal_appearing(baseline, brain, psf)
    assert np.array_equal(drop_preexisting_components(steps["dark"], baseline, brain, normal=normal, followup=followup),
                          drop_preexisting_components(steps["dark"], baseline, brain,
                                                      new=new_tissue(normal, baseline, brain, followup)))


def test_change_labels_names_arrays_of_different_shapes():
    from bids_lesionchange.analysis.components import change_labels

    a = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(ValueError, match="differ in shape"):
        change_labels(a, a > -1, 0.1, 1, direction="increase", baseline=a, followup=np.zeros((8, 8, 9), np.float32))


def test_thick_slices_widen_the_rim_along_their_slice_axis_only():
    """A thick-slice pair blurs the mask's edge over its slice profile: the rim reaches one FWHM
    of the coarser session along that axis, 3 mm along the others; a 3 mm (or finer) pair keeps
    the 3 mm rim."""
    from bids_lesionchange.analysis.components import RIM_MM, drop_rim_components, rim_reach_mm

    assert np.array_equal(rim_reach_mm(None), [RIM_MM] * 3)
    assert np.array_equal(rim_reach_mm((1.0, 1.3, 2.9)), [RIM_MM] * 3)
    assert np.allclose(rim_reach_mm((1.4, 1.7, 6.6)), [RIM_MM, RIM_MM, 6.6])
    brain = np.zeros((40, 40, 40), bool)
    brain[4:36, 4:36, 4:36] = True
    labels = np.zeros(brain.shape, np.int32)
    labels[15:21, 15:21, 29:33] = 1  # 4-7 voxels from the outside along the slice axis (axis 2)
    labels[29:33, 15:21, 15:21] = 2  # as deep below the edge of axis 0, in plane
    for psf in (None, (1.0, 1.0, 3.0)):
        assert drop_rim_components(labels, brain, psf_fwhm_mm=psf).max() == 2
    thick = drop_rim_components(labels, brain, psf_fwhm_mm=(1.4, 1.7, 6.6))
    assert thick.max() == 1 and thick[30, 17, 17] == 1 and thick[17, 17, 30] == 0
    # The same slab along axis 0 widens the rim there instead.
    across = drop_rim_components(labels, brain, psf_fwhm_mm=(6.6, 1.7, 1.4))
    assert across.max() == 1 and across[17, 17, 30] == 1


@pytest.mark.parametrize("zooms, psf", [((1.0, 1.0, 1.0), None), ((0.9, 0.9, 3.0), None), ((1.2, 0.8, 2.0), None),
                                        ((1.0, 1.0, 1.0), (1.2, 1.5, 6.6)), ((1.2, 0.8, 2.0), (5.0, 1.0, 4.0))])
def test_drop_rim_components_measures_depth_as_the_whole_brains_distance_transform(zooms, psf):
    """The rim test measures each change's depth on its own box; it must keep and drop exactly
    what the definition (mask_depth_mm of the whole brain, the grid's border outside) does, also
    for changes at the grid's border and through anisotropic voxels."""
    from scipy import ndimage

    from bids_lesionchange.analysis.components import MAX_RIM_FRACTION, RIM_MM, drop_rim_components
    from bids_lesionchange.image.plausibility import mask_depth_mm

    rng = np.random.default_rng(11)
    kept_some = dropped_some = False
    for trial in range(6):
        shape = tuple(int(s) for s in rng.integers(24, 44, 3))
        brain = ndimage.gaussian_filter(rng.random(shape), 3) > 0.5 if trial % 2 else np.ones(shape, bool)
        blobs = ndimage.gaussian_filter(rng.random(shape), 1.5)
        labels, n = ndimage.label((blobs > np.percentile(blobs, 90)) & brain)
        if psf is None:
            rim = brain & (mask_depth_mm(brain, zooms) <= RIM_MM)
        else:  # the ellipsoid with semi-axes max(RIM_MM, FWHM) mm, from its definition
            semi = np.maximum(RIM_MM, np.asarray(psf, dtype=float))
            depth = ndimage.distance_transform_edt(np.pad(brain, 1), sampling=np.asarray(zooms) / semi)
            rim = brain & (depth[1:-1, 1:-1, 1:-1] <= 1.0)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        in_rim = np.bincount(labels.ravel(), weights=rim.ravel(), minlength=n + 1)
        expected_kept = {k for k in range(1, n + 1) if in_rim[k] <= MAX_RIM_FRACTION * sizes[k]}
        out = drop_rim_components(labels, brain, zooms, psf_fwhm_mm=psf)
        kept = {int(k) for k in np.unique(labels[out > 0])}
        assert kept == expected_kept
        kept_some |= bool(kept)
        dropped_some |= len(kept) < n
    assert kept_some and dropped_some


def test_psf_reach_widens_only_axes_sampled_coarser_than_two_voxels():
    from bids_lesionchange.analysis.components import psf_reach

    assert psf_reach(None) is None
    assert psf_reach([1.0, 1.0, 1.0]) is None  # a 1 mm 3D pair: nothing widens
    assert psf_reach([1.0, 1.4, 1.9]) is None
    reach = psf_reach([1.0, 1.0, 3.0])  # 3 mm slices along the third axis: +-1 voxel
    assert reach.shape == (1, 1, 3) and reach.all()
    reach = psf_reach([4.0, 1.0, 6.0])  # semi-axes 2 and 3 voxels: an ellipse, not a box
    assert reach.shape == (5, 1, 7) and reach[2, 0, 3] and not reach[0, 0, 0] and reach[0, 0, 3] and reach[2, 0, 0]


def test_thick_slices_make_a_change_at_an_old_lesions_edge_pre_existing_and_leave_a_new_one():
    """A change whose voxels lie within half the coarser session's slice of an old lesion is the
    old lesion's partial volume (dropped with the pair's PSF); a new lesion away from it stays."""
    from bids_lesionchange.analysis.components import drop_preexisting_components

    rng = np.random.default_rng(1)
    baseline = (0.5 + 0.02 * rng.standard_normal((40, 40, 40))).astype(np.float32)  # white matter
    baseline[:, 32:, :] = 0.1  # CSF: dark on FLAIR
    baseline[10:18, 10:18, 10:14] = 0.8  # an old lesion, hyperintense at baseline
    labels = np.zeros(baseline.shape, np.int32)
    labels[10:18, 10:18, 13:16] = 1  # brighter at follow-up: 1 slice of the old lesion + 2 above it
    labels[25:30, 25:30, 25:30] = 2  # a new lesion in normal-appearing white matter
    brain = np.ones(baseline.shape, bool)
    same_protocol = drop_preexisting_components(labels, baseline, brain, psf_fwhm_voxels=[1.0, 1.0, 1.0])
    assert set(np.unique(same_protocol)) == {0, 1, 2}  # 2 of 3 rows normal-appearing: kept
    assert np.array_equal(same_protocol, drop_preexisting_components(labels, baseline, brain))
    thick = drop_preexisting_components(labels, baseline, brain, psf_fwhm_voxels=[1.0, 1.0, 5.0])
    assert thick[12, 12, 14] == 0 and thick[27, 27, 27] == 1 and thick.max() == 1


def test_components_files_reads_the_pairs_psf_from_the_preprocessing_qc(tmp_path):
    import json

    import nibabel as nib

    from bids_lesionchange.analysis.files import components_files

    shape = (40, 40, 40)
    rng = np.random.default_rng(2)
    baseline = (0.5 + 0.02 * rng.standard_normal(shape)).astype(np.float32)
    baseline[:, 32:, :] = 0.1
    baseline[10:18, 10:18, 10:14] = 0.8
    followup = baseline.copy()
    followup[10:18, 10:18, 13:16] = 0.9
    probability = np.zeros(shape, np.float32)
    probability[10:18, 10:18, 13:16] = 0.9
    files = {}
    for name, data in (("p", probability), ("b", baseline), ("f", followup), ("m", np.ones(shape, np.uint8))):
        files[name] = str(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(data, np.eye(4)), files[name])
    counts = {}
    for protocol, fwhm in (("3d", [1.0, 1.0, 1.0]), ("2d", [0.9, 0.9, 5.0])):
        qc = tmp_path / f"qc_{protocol}.json"
        qc.write_text(json.dumps({"resolution_matching": {"fwhm_mm": {"baseline": [1.0, 1.0, 1.0], "followup": fwhm}}}))
        counts[protocol] = components_files(files["p"], files["m"], str(tmp_path / f"mask_{protocol}.nii.gz"),
                                            str(tmp_path / f"dseg_{protocol}.nii.gz"), 0.1, 20, direction="increase",
                                            baseline=files["b"], followup=files["f"], preproc_qc=str(qc))[2]
    assert counts == {"3d": 1, "2d": 0}


def test_grow_to_extent_takes_the_new_hyperintensity_around_a_change_and_nothing_else():
    """A change covering part of a new lesion grows over the rest of it (new tissue that rose), up
    to the reach in mm; not into a lesion already there at baseline, not into tissue that did not
    rise, not beyond the brain; no change is made or removed, two that grow into each other are one."""
    from bids_lesionchange.analysis.components import grow_to_extent

    shape = (40, 40, 40)
    brain = np.zeros(shape, bool)
    brain[2:38, 2:38, 2:38] = True
    baseline = np.where(brain, 0.5, 0.0).astype(np.float32)
    followup = baseline.copy()
    followup[10:20, 10:14, 10:14] = 0.8  # a new lesion, 10 voxels long
    followup[10:20, 25:29, 10:14] = 0.8  # another, of which the map flags a larger part
    baseline[30:36, 10:14, 10:14] = 0.8  # an old lesion, bright at both times ...
    followup[30:36, 10:14, 10:14] = 0.8
    followup[20:30, 10:14, 10:14] = 0.8  # ... that the first one reaches at follow-up
    labels = np.zeros(shape, np.int32)
    labels[10:14, 25:29, 10:14] = 1  # 64 voxels: label 1
    labels[10:12, 10:14, 10:14] = 2  # 32 voxels: label 2
    new = (baseline <= 0.575) & (followup > 0.575)  # new tissue, as new_tissue would give it
    out = grow_to_extent(labels, baseline, followup, brain, new=new, peak=0.5)
    assert out.max() == 2 and set(np.unique(out)) == {0, 1, 2}
    assert np.all(out[10:20, 25:29, 10:14] == 1)
    # label 2 grows along its lesion by 6 voxels (6 mm), not to the end of the bright tissue,
    # and never into the old lesion
    assert np.all(out[10:18, 10:14, 10:14] == 2) and np.all(out[18:, 10:14, 10:14] == 0)
    assert (out > 0).sum() == 10 * 16 + 8 * 16
    # with a longer reach it takes the rest of the new tissue, still not the old lesion
    far = grow_to_extent(labels, baseline, followup, brain, new=new, peak=0.5, reach_mm=30.0)
    assert far.max() == 2 and np.all(far[10:30, 10:14, 10:14] == far[10, 10, 10])
    assert far[10, 10, 10] != far[10, 25, 10] and np.all(far[30:36, 10:14, 10:14] == 0)
    # tissue that did not rise by the focal-rise level is not taken
    faint = np.where(labels > 0, followup, np.minimum(followup, 0.54)).astype(np.float32)
    assert np.array_equal(grow_to_extent(labels, baseline, faint, brain, new=new, peak=0.5), labels)
    # in mm: with 2 mm voxels 6 mm is 3 steps
    coarse = grow_to_extent(labels, baseline, followup, brain, new=new, peak=0.5, zooms=(2.0, 2.0, 2.0))
    assert np.all(coarse[10:15, 10:14, 10:14] == 2) and np.all(coarse[15:, 10:14, 10:14] == 0)
    assert np.array_equal(grow_to_extent(np.zeros(shape, np.int32), baseline, followup, brain, new=new, peak=0.5),
                          np.zeros(shape, np.int32))
    # two pieces of one new lesion, 4 voxels apart, grow into each other: one change, labels by size
    pieces = np.zeros(shape, np.int32)
    pieces[10:12, 25:29, 10:14] = 2
    pieces[16:20, 25:29, 10:14] = 1
    joined = grow_to_extent(pieces, baseline, followup, brain, new=new, peak=0.5)
    assert joined.max() == 1 and np.all(joined[10:20, 25:29, 10:14] == 1)
