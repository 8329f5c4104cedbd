"""Lesion table: volumes, centroids, intensities, new vs enlarging, TSV + sidecar."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bids_lesionchange.analysis.components import change_components
from bids_lesionchange.analysis.lesions import (
    LESION_TABLE_COLUMNS,
    baseline_hyperintensities,
    lesion_table,
    lesion_table_sidecar,
    write_table_tsv,
)
from bids_lesionchange.analysis.tables import read_table_tsv
from bids_lesionchange.atomic import atomic_write_json

SHAPE = (24, 20, 16)
ZOOMS = (0.8, 1.1, 2.5)


def _affine():
    # Axis permutation + flip + translation, so that a wrong use of the affine shows.
    affine = np.zeros((4, 4))
    affine[0, 1] = ZOOMS[1]
    affine[1, 0] = -ZOOMS[0]
    affine[2, 2] = ZOOMS[2]
    affine[:3, 3] = (-10.0, 20.0, -30.0)
    affine[3, 3] = 1.0
    return affine


def _pair():
    rng = np.random.default_rng(3)
    baseline = 1.0 + 0.05 * rng.standard_normal(SHAPE)
    followup = baseline.copy()
    probability = np.zeros(SHAPE)
    # Change A: a 3x3x3 cube, new (nothing bright at baseline nearby).
    probability[3:6, 3:6, 3:6] = 0.7
    probability[4, 4, 4] = 0.95
    followup[3:6, 3:6, 3:6] = 3.0
    # Baseline lesion B at [14:17, 10:13, 8:11]; change C (2x3x3 = 18 voxels) touches its side.
    baseline[14:17, 10:13, 8:11] = 3.0
    followup[14:17, 10:13, 8:11] = 3.0
    probability[17:19, 10:13, 8:11] = 0.5
    followup[17:19, 10:13, 8:11] = 3.0
    return probability, baseline, followup


def test_volumes_sum_to_the_mask_volume_with_anisotropic_zooms():
    probability, baseline, followup = _pair()
    labels = change_components(probability, min_size=1)
    rows = lesion_table(labels, probability, baseline, followup, _affine(), ZOOMS)
    assert [r["voxels"] for r in rows] == [27, 18]
    total = sum(r["volume_mm3"] for r in rows)
    assert total == pytest.approx(np.count_nonzero(labels) * 0.8 * 1.1 * 2.5)
    assert rows[0]["volume_mm3"] == pytest.approx(27 * 2.2)


def test_centroids_in_voxels_and_scanner_mm():
    probability, baseline, followup = _pair()
    labels = change_components(probability, min_size=1)
    rows = lesion_table(labels, probability, baseline, followup, _affine(), ZOOMS)
    cube = rows[0]
    assert (cube["centroid_i"], cube["centroid_j"], cube["centroid_k"]) == pytest.approx((4, 4, 4))
    # x = 1.1 * j - 10, y = -0.8 * i + 20, z = 2.5 * k - 30
    assert cube["centroid_x"] == pytest.approx(1.1 * 4 - 10)
    assert cube["centroid_y"] == pytest.approx(-0.8 * 4 + 20)
    assert cube["centroid_z"] == pytest.approx(2.5 * 4 - 30)
    slab = rows[1]
    assert slab["centroid_i"] == pytest.approx(17.5)
    assert slab["centroid_y"] == pytest.approx(-0.8 * 17.5 + 20)


def test_probability_and_intensity_summaries():
    probability, baseline, followup = _pair()
    labels = change_components(probability, min_size=1)
    rows = lesion_table(labels, probability, baseline, followup, _affine(), ZOOMS)
    assert rows[0]["prob_max"] == pytest.approx(0.95)
    assert rows[0]["prob_mean"] == pytest.approx((26 * 0.7 + 0.95) / 27)
    assert rows[0]["followup_mean"] == pytest.approx(3.0)
    assert rows[0]["baseline_mean"] == pytest.approx(1.0, abs=0.05)


def test_new_versus_enlarging():
    probability, baseline, followup = _pair()
    labels = change_components(probability, min_size=1)
    hyper = baseline_hyperintensities(baseline, np.ones(SHAPE, bool))
    assert hyper[14:17, 10:13, 8:11].all()  # lesion B (a noise voxel touching it may join)
    assert np.count_nonzero(hyper) <= 27 + 3
    rows = lesion_table(labels, probability, baseline, followup, _affine(), ZOOMS, hyper)
    assert [r["type"] for r in rows] == ["new", "enlarging"]
    # Default: the hyperintensities are found from the baseline itself.
    default_rows = lesion_table(labels, probability, baseline, followup, _affine(), ZOOMS)
    assert [r["type"] for r in default_rows] == ["new", "enlarging"]
    # Alone, the enlarging change still sees the lesion just outside its own bounding box.
    only_c = np.where(labels == 2, 2, 0)
    rows = lesion_table(only_c, probability, baseline, followup, _affine(), ZOOMS, hyper)
    assert [(r["label"], r["type"]) for r in rows] == [(2, "enlarging")]
    # Without any baseline hyperintensity, both changes are new.
    rows = lesion_table(labels, probability, baseline, followup, _affine(), ZOOMS, np.zeros(SHAPE, bool))
    assert [r["type"] for r in rows] == ["new", "new"]


def test_a_change_two_voxels_away_is_new():
    probability, baseline, followup = _pair()
    probability[17:19] = 0
    probability[18:20, 10:13, 8:11] = 0.5  # one voxel gap to lesion B (ends at i=16)
    labels = change_components(probability, min_size=1)
    rows = lesion_table(labels, probability, baseline, followup, _affine(), ZOOMS)
    assert [r["type"] for r in rows] == ["new", "new"]


def test_baseline_hyperintensity_rule_drops_small_outliers():
    rng = np.random.default_rng(0)
    image = 1.0 + 0.1 * rng.standard_normal((20, 20, 20))
    image[2:5, 2:5, 2:5] = 5.0  # 27 voxels, kept
    image[15, 15, 15:17] = 5.0  # 2 voxels, below min_size 5
    brain = np.ones(image.shape, bool)
    hyper = baseline_hyperintensities(image, brain, k=3.0, min_size=5)
    assert hyper[2:5, 2:5, 2:5].all()
    assert not hyper[15, 15, 15]
    assert np.count_nonzero(hyper) < 27 + 10
    # Outside the brain mask nothing counts.
    brain[:10] = False
    assert not baseline_hyperintensities(image, brain)[2:5, 2:5, 2:5].any()


def test_empty_labels_give_an_empty_table(tmp_path):
    zeros = np.zeros(SHAPE)
    assert lesion_table(zeros.astype(int), zeros, zeros, zeros, np.eye(4), (1, 1, 1)) == []
    path = write_table_tsv([], tmp_path / "t.tsv", LESION_TABLE_COLUMNS)
    assert path.read_text().splitlines() == ["\t".join(LESION_TABLE_COLUMNS)]


def test_bad_inputs_are_refused():
    zeros = np.zeros(SHAPE)
    with pytest.raises(ValueError, match="one grid"):
        lesion_table(zeros.astype(int), zeros[:3], zeros, zeros, np.eye(4), (1, 1, 1))
    with pytest.raises(ValueError, match="zooms"):
        lesion_table(zeros.astype(int), zeros, zeros, zeros, np.eye(4), (1, 0, 1))


def test_tsv_and_sidecar_describe_the_same_columns(tmp_path):
    probability, baseline, followup = _pair()
    labels = change_components(probability, min_size=1)
    rows = lesion_table(labels, probability, baseline, followup, _affine(), ZOOMS)
    rows[1]["prob_mean"] = float("nan")
    tsv = write_table_tsv(rows, tmp_path / "sub-01_changes.tsv", LESION_TABLE_COLUMNS)
    sidecar = atomic_write_json(tmp_path / "sub-01_changes.json", lesion_table_sidecar(), sort_keys=True)
    header = tsv.read_text().splitlines()[0].split("\t")
    described = json.loads(sidecar.read_text())
    assert header == list(LESION_TABLE_COLUMNS)
    assert set(described) == set(header)
    assert all(described[c]["Description"] for c in header)
    assert described["volume_mm3"]["Units"] == "mm^3"
    assert described["centroid_x"]["Units"] == "mm"
    back = read_table_tsv(tsv)
    assert back[0]["voxels"] == 27 and back[0]["type"] == "new"
    assert back[0]["volume_mm3"] == pytest.approx(rows[0]["volume_mm3"])
    assert "n/a" in tsv.read_text().splitlines()[2].split("\t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub-01_changes.json", "sub-01_changes.tsv"]


def test_lesion_table_files_write_a_dseg_lookup_with_one_row_per_change(tmp_path):
    """Beside the change labels: index = label, its type's abbreviation and colour, mapping 7."""
    import nibabel as nib

    from bids_lesionchange.analysis.files import lesion_table_files
    from bids_lesionchange.analysis.lesions import CHANGE_TYPE_LOOKUP, DSEG_LOOKUP_COLUMNS

    probability, baseline, followup = _pair()
    labels = change_components(probability, min_size=1)
    paths = {}
    for name, data in (("labels", labels.astype(np.int16)), ("probability", probability),
                       ("baseline", baseline), ("followup", followup),
                       ("brain", np.ones(SHAPE, np.uint8))):
        paths[name] = str(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(data, _affine()), paths[name])
    lookup_out = tmp_path / "sub-01_ses-02_space-ses02_desc-change_dseg.tsv"
    table, _, lookup = lesion_table_files(paths["labels"], paths["probability"], paths["baseline"],
                                          paths["followup"], paths["brain"],
                                          str(tmp_path / "lesions.tsv"), str(lookup_out))
    assert lookup == str(lookup_out)
    lines = lookup_out.read_text().splitlines()
    assert lines[0].split("\t") == list(DSEG_LOOKUP_COLUMNS)
    types = {row["label"]: row["type"] for row in read_table_tsv(table)}
    assert types == {1: "new", 2: "enlarging"}  # the lesion table decides the type
    assert lines[1:] == [
        "1\tnew change 1\tNEW\t" + CHANGE_TYPE_LOOKUP["new"][1] + "\t7",
        "2\tenlarging change 2\tENL\t" + CHANGE_TYPE_LOOKUP["enlarging"][1] + "\t7",
    ]


def test_dseg_lookup_of_no_change_is_header_only_and_unknown_types_are_refused(tmp_path):
    from bids_lesionchange.analysis.lesions import DSEG_LOOKUP_COLUMNS, change_dseg_lookup

    assert change_dseg_lookup([]) == []
    path = write_table_tsv([], tmp_path / "x_dseg.tsv", DSEG_LOOKUP_COLUMNS)
    assert path.read_text().splitlines() == ["\t".join(DSEG_LOOKUP_COLUMNS)]
    with pytest.raises(ValueError, match="type 'shrinking'"):
        change_dseg_lookup([{"label": 1, "type": "shrinking"}])
