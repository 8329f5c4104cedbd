"""MSSEG-2 (Anima animaSegPerfAnalyzer) scoring, one hand-built case per rule.

Lesions are drawn as lines of voxels along the first axis, so that every overlap and every
"outside" share is a count that can be read off the test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bids_lesionchange.analysis.files import aggregate_metric_files
from bids_lesionchange.analysis.metrics import lesion_metrics, match_matrix, metrics_sidecar
from bids_lesionchange.analysis.msseg2 import drop_small_components, msseg2_detection
from bids_lesionchange.analysis.tables import write_table_tsv

ISO = (1.0, 1.0, 1.0)


def line(shape, x0, x1, y=2, z=2):
    """Mask of the voxels x0 <= x < x1 at (y, z)."""
    mask = np.zeros(shape, dtype=bool)
    mask[x0:x1, y, z] = True
    return mask


def msseg2(pred, ref, zooms=ISO):
    return lesion_metrics(pred, ref, match="msseg2", zooms=zooms)


def test_lesions_are_six_connected():
    """Two 4-voxel bars meeting at an edge are two lesions (one with 26-connectivity)."""
    shape = (12, 12, 12)
    ref = line(shape, 0, 4, y=2, z=2) | line(shape, 4, 8, y=3, z=3)  # edge contact only
    pred = line(shape, 0, 4, y=2, z=2)
    m = msseg2(pred, ref)
    assert m["n_ref"] == 2 and m["LTP_ref"] == 1 and m["LTPR"] == 0.5
    # the pairwise rules use 26-connectivity: one lesion, found
    assert lesion_metrics(pred, ref, match="overlap")["n_ref"] == 1


@pytest.mark.parametrize("zooms, voxels, kept", [
    (ISO, 3, False),                # 3 mm^3: dropped (<= 3)
    (ISO, 4, True),                 # 4 mm^3
    ((0.5, 0.5, 3.0), 4, False),    # 4 x 0.75 = 3 mm^3 exactly: dropped
    ((0.5, 0.5, 3.0), 5, True),     # 3.75 mm^3
    ((1.0, 1.0, 0.5), 6, False),    # 6 x 0.5 = 3 mm^3: the volume decides, not the voxel count
])
def test_lesions_of_at_most_3_mm3_are_dropped_from_both_masks(zooms, voxels, kept):
    shape = (12, 12, 12)
    small = line(shape, 0, voxels)
    big = line(shape, 0, 8, y=8)  # 8 voxels, above 3 mm^3 for every zooms here
    as_ref = msseg2(np.zeros(shape), small | big, zooms)
    assert as_ref["n_ref"] == 1 + kept and as_ref["LFN"] == 1 + kept
    as_pred = msseg2(small | big, np.zeros(shape), zooms)
    assert as_pred["n_pred"] == 1 + kept and as_pred["LFP"] == 1 + kept
    voxel = float(np.prod(zooms))
    assert as_pred["LFP_volume_mm3"] == pytest.approx((8 + voxels * kept) * voxel)


def test_drop_small_components_numbers_the_kept_ones_consecutively():
    labels = np.array([[[1, 1, 1, 1, 0, 2, 0, 3, 3, 3, 3, 3]]], dtype=np.int32)
    kept, n = drop_small_components(labels, 3, voxel_volume=1.0)
    assert n == 2
    assert kept.tolist() == [[[1, 1, 1, 1, 0, 0, 0, 2, 2, 2, 2, 2]]]


@pytest.mark.parametrize("inside, detected", [(2, False), (3, True)])
def test_a_reference_lesion_needs_more_than_10_percent_covered(inside, detected):
    """A 20-voxel lesion with 2 covered voxels (exactly 10 %) is missed, with 3 (15 %) found."""
    shape = (24, 8, 8)
    ref = line(shape, 0, 20)
    pred = line(shape, 0, inside) | line(shape, inside - 1, inside, y=3) | line(shape, inside - 1, inside, y=4)
    assert pred.sum() == inside + 2  # 2 voxels outside the lesion: <= 70 % outside in both cases
    m = msseg2(pred, ref)
    assert m["n_ref"] == 1 and m["n_pred"] == 1
    assert m["LTP_ref"] == int(detected)
    # the reverse test: the small prediction is covered, but the lesion covering it lies > 70 %
    # outside the predicted lesions, so the prediction is not a true positive
    assert m["LTP_pred"] == 0


@pytest.mark.parametrize("size, outside, detected", [
    (10, 23, True),   # 23/33 = 0.697
    (6, 14, True),    # 14/20 = 0.70 exactly: not more than 70 %
    (10, 24, False),  # 24/34 = 0.706
])
def test_a_covering_lesion_may_lie_at_most_70_percent_outside(size, outside, detected):
    """A blob covering a whole lesion of `size` voxels and `outside` more voxels."""
    shape = (40, 6, 6)
    ref = line(shape, 0, size)
    pred = line(shape, 0, size + outside)
    m = msseg2(pred, ref)
    assert m["LTP_ref"] == int(detected)
    # the other way round the blob is the tested lesion: more than 10 % of it is covered
    # by a lesion that lies entirely inside it, so it is a true positive either way
    assert m["LTP_pred"] == 1
    swapped = msseg2(ref, pred)
    assert (swapped["LTP_ref"], swapped["LTP_pred"]) == (m["LTP_pred"], m["LTP_ref"])


def _two_covering_blobs(first: int):
    """A 10-voxel lesion covered by a clean blob (its first `first` voxels) and, after a 1-voxel
    gap, by a blob whose 10 extra voxels put it > 70 % outside."""
    shape = (12, 16, 6)
    ref = line(shape, 0, 10)
    clean = line(shape, 0, first)
    outside_blob = line(shape, first + 1, 10)
    outside_blob[9, 3:13, 2] = True
    return clean | outside_blob, ref, outside_blob.sum()


def test_covering_blobs_are_checked_largest_first_until_65_percent_of_the_cover():
    # clean 6, other 3: the clean blob alone is 6/9 = 67 % of the cover, the other is not checked
    pred, ref, size = _two_covering_blobs(first=6)
    assert size == 13  # 10 of 13 voxels (77 %) outside the lesion
    assert msseg2(pred, ref)["LTP_ref"] == 1
    # clean 5, other 4: 5/9 = 56 % < 65 %, so the other blob is checked and it is 10/14 outside
    pred, ref, _ = _two_covering_blobs(first=5)
    assert msseg2(pred, ref)["LTP_ref"] == 0


def test_outside_means_outside_every_lesion_of_the_tested_mask():
    """Anima: a blob spanning a 4-voxel and a 20-voxel lesion lies 1/25 outside, not 21/25."""
    shape = (28, 6, 6)
    ref = line(shape, 0, 4) | line(shape, 5, 25)
    pred = line(shape, 0, 25)
    m = msseg2(pred, ref)
    assert m["n_ref"] == 2 and m["n_pred"] == 1
    assert m["LTP_ref"] == 2


def test_at_most_n_plus_one_covering_blobs_are_checked():
    """Anima bounds the check by the tested side's lesion count + 1 (its overlap table's rows).

    A 21-voxel lesion is covered by blobs of 5, 5, 4 and 4 voxels; the third (a 4-voxel overlap
    with 10 more voxels, 71 % outside) is reached only after 10/18 = 56 % of the cover.
    """
    shape = (24, 16, 24)
    ref = line(shape, 0, 21)
    pred = line(shape, 0, 5) | line(shape, 6, 11) | line(shape, 12, 16) | line(shape, 17, 21)
    pred[15, 3:13, 2] = True  # the extra voxels of the blob at x = 12..15
    one = msseg2(pred, ref)
    assert one["n_ref"] == 1 and one["n_pred"] == 4
    assert one["LTP_ref"] == 1  # one lesion: only two blobs are checked
    far = line(shape, 0, 8, y=12, z=20)  # a second, unrelated reference lesion
    two = msseg2(pred, ref | far)
    assert two["n_ref"] == 2
    assert two["LTP_ref"] == 0  # two lesions: three blobs are checked, the third fails


def test_empty_reference_is_scored_by_number_and_volume_of_false_detections():
    shape = (12, 12, 12)
    zooms = (1.0, 1.0, 2.0)  # 2 mm^3 voxels
    pred = line(shape, 0, 4) | line(shape, 0, 8, y=6) | line(shape, 0, 1, y=10)  # 8, 16, 2 mm^3
    m = msseg2(pred, np.zeros(shape), zooms)
    assert m["n_ref"] == 0 and math.isnan(m["LTPR"]) and math.isnan(m["lesion_F1"])
    assert m["n_pred"] == 2 and m["LFP"] == 2 and m["PPV"] == 0.0
    assert m["LFP_volume_mm3"] == pytest.approx(24.0)  # the 2 mm^3 blob was dropped
    nothing = msseg2(np.zeros(shape), np.zeros(shape), zooms)
    assert nothing["n_pred"] == nothing["LFP"] == 0 and nothing["LFP_volume_mm3"] == 0.0
    assert all(math.isnan(nothing[k]) for k in ("LTPR", "PPV", "lesion_F1", "dice"))


def test_dice_is_voxel_wise_on_the_full_masks():
    """As Anima, Dice is computed before small lesions are dropped."""
    shape = (12, 12, 12)
    ref = line(shape, 0, 2)  # 2 mm^3: not a lesion for detection
    m = msseg2(ref, ref)
    assert m["n_ref"] == m["n_pred"] == 0
    assert m["dice"] == 1.0 and m["ref_voxels"] == m["pred_voxels"] == m["overlap_voxels"] == 2


def test_detection_labels_only_kept_lesions():
    shape = (12, 12, 12)
    ref = line(shape, 0, 8) | line(shape, 0, 2, y=8)
    d = msseg2_detection(line(shape, 0, 8), ref, ISO)
    assert d.ref_labels.max() == 1 and np.count_nonzero(d.ref_labels) == 8
    assert d.ref_detected.tolist() == [True] and d.pred_detected.tolist() == [True]


def test_bad_arguments_say_what_to_do():
    shape = (6, 6, 6)
    with pytest.raises(ValueError, match="voxel sizes"):
        lesion_metrics(np.zeros(shape), np.zeros(shape), match="msseg2")
    with pytest.raises(ValueError, match="6-connectivity"):
        lesion_metrics(np.zeros(shape), np.zeros(shape), match="msseg2", zooms=ISO, connectivity=26)
    with pytest.raises(ValueError, match="positive"):
        lesion_metrics(np.zeros(shape), np.zeros(shape), match="msseg2", zooms=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="different grids"):
        lesion_metrics(np.zeros(shape), np.zeros((6, 6, 7)), match="msseg2", zooms=ISO)
    with pytest.raises(ValueError, match="use lesion_metrics"):
        match_matrix(np.zeros(shape, int), np.zeros(shape, int), match="msseg2")


def test_sidecar_names_the_rule():
    assert "Anima" in metrics_sidecar("msseg2")["LTP_ref"]["Description"]
    assert "IoU" in metrics_sidecar("iou")["LTP_ref"]["Description"]
    assert metrics_sidecar("msseg2")["LFP_volume_mm3"]["Units"] == "mm^3"


def _pair_table(folder, name, match):
    row = {"pair": name, **msseg2(line((8, 8, 8), 0, 5), line((8, 8, 8), 0, 5))}
    tsv = folder / f"{name}_desc-evaluation_metrics.tsv"
    write_table_tsv([row], tsv)
    tsv.with_suffix(".json").write_text(json.dumps({"Match": match}))
    return tsv


def test_group_table_records_the_rule_and_refuses_mixed_rules(tmp_path):
    a = _pair_table(tmp_path, "sub-01_ses-01to02", "msseg2")
    b = _pair_table(tmp_path, "sub-02_ses-01to02", "msseg2")
    out = aggregate_metric_files([a, b], tmp_path / "group_desc-evaluation_metrics.tsv")
    assert json.loads(out.with_suffix(".json").read_text())["Match"] == "msseg2"
    c = _pair_table(tmp_path, "sub-03_ses-01to02", "iou")
    with pytest.raises(ValueError, match="different --match rules.*sub-03_ses-01to02"):
        aggregate_metric_files([a, c], tmp_path / "mixed.tsv")
