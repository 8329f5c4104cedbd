"""The lesion-growth benchmark's per-lesion measures: a lesion that grew stands out, unchanged ones do not."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import load_benchmark

CENTRES = ((12, 12, 12), (12, 28, 20), (28, 16, 26), (26, 28, 12))


@pytest.fixture(scope="module")
def lesion_growth():
    return load_benchmark("lesion_growth")


def phantom(radii, seed):
    """A brain of white matter (0.5) with a dark CSF slab (0.1) and four bright lesions (0.9)."""
    rng = np.random.default_rng(seed)
    grid = np.indices((40, 40, 40)).astype(np.float32)
    image = np.full((40, 40, 40), 0.5, np.float32)
    image[:, :, 34:] = 0.1
    for centre, radius in zip(CENTRES, radii):
        d = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
        image[d <= radius] = 0.9
    return image + rng.normal(0.0, 0.01, image.shape).astype(np.float32)


def test_a_grown_lesion_has_the_largest_measures_and_unchanged_lesions_stay_near_zero(lesion_growth):
    brain = np.ones((40, 40, 40), bool)
    base = phantom((3.0, 3.0, 3.0, 3.0), seed=1)
    follow = phantom((3.0, 4.5, 3.0, 3.0), seed=2)  # the second lesion grows, the others do not
    prob = np.zeros_like(base)
    prob[12, 28, 20 + 4] = 0.7  # the map fires at the grown lesion's new rim
    rows = lesion_growth.lesion_measures(base, follow, brain, prob)
    assert len(rows) == 4 and all(r["voxels"] >= lesion_growth.MIN_VOXELS for r in rows)
    grown = max(rows, key=lambda r: r["hyperintense volume"])
    assert grown is rows[1]  # lesions are labelled in scan order: the second is the one at (12, 28, 20)
    for measure in ("hyperintense volume", "integrated excess", "subtraction"):
        values = sorted(r[measure] for r in rows)
        assert grown[measure] == values[-1] and grown[measure] > 0.2
        assert max(abs(v) for v in values[:-1]) < 0.1
    assert grown["model"] == pytest.approx(0.7)
    assert not any(r["enlarging"] for r in rows)


def test_identical_sessions_measure_zero_and_kinds_mark_the_enlarging_lesion(lesion_growth):
    brain = np.ones((40, 40, 40), bool)
    base = phantom((3.0, 3.5, 2.5, 3.0), seed=3)
    kinds = np.zeros(base.shape, np.int64)
    kinds[8:17, 8:17, 8:17] = 2  # the first lesion is an enlarging reference lesion
    rows = lesion_growth.lesion_measures(base, base.copy(), brain, np.zeros_like(base), kinds)
    for measure in ("hyperintense volume", "integrated excess", "subtraction"):
        assert all(r[measure] == pytest.approx(0.0, abs=1e-6) for r in rows)
    assert [r["enlarging"] for r in rows] == [True, False, False, False]


def test_auc_counts_ties_half_and_is_nan_without_a_group(lesion_growth):
    assert lesion_growth.auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert lesion_growth.auc([1.0], [1.0, 2.0]) == 0.25
    assert np.isnan(lesion_growth.auc([], [1.0]))


def test_table_types_pairs_each_change_of_the_lesion_table_with_the_reference_kind_it_lies_on(lesion_growth, tmp_path):
    import nibabel as nib

    from bids_lesionchange.analysis.tables import write_table_tsv
    from bids_lesionchange.image.transforms import write_xfm

    files = lesion_growth.pair_files(tmp_path, "ph")  # where the app writes a pair's derivatives
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    labels = np.zeros((20, 20, 20), np.int16)
    labels[2:5, 2:5, 2:5] = 1  # on a new reference lesion
    labels[10:13, 10:13, 10:13] = 2  # mostly on an enlarging one
    labels[16:18, 16:18, 16:18] = 3  # on nothing
    kinds = np.zeros((20, 20, 20), np.int16)
    kinds[2:6, 2:6, 2:6] = 1
    kinds[10:13, 10:13, 10:12] = 2
    kinds[10:13, 10:13, 12] = 1
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, affine), str(files["labels"]))
    nib.save(nib.Nifti1Image(kinds, affine), str(tmp_path / "kinds.nii.gz"))
    write_xfm(np.eye(4), files["followup_xfm"])
    write_table_tsv([{"label": 1, "type": "new"}, {"label": 2, "type": "new"}, {"label": 3, "type": "enlarging"}],
                    files["lesions"], columns=["label", "type"])
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), affine), str(files["followup"]))
    on_grid = lesion_growth.phantom_kinds(tmp_path, "ph", tmp_path / "kinds.nii.gz")
    assert np.array_equal(on_grid, kinds)
    assert lesion_growth.table_types(tmp_path, "ph", on_grid) == [
        ("new", "new"), ("enlarging", "new"), ("false", "enlarging")]
