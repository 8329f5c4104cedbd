"""Lesion-wise metrics (paper supplement D) on hand-built cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bids_lesionchange.analysis.metrics import aggregate_metrics, dice, lesion_metrics

SHAPE = (32, 32, 32)


def _box(start, size, shape=SHAPE):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + n) for s, n in zip(start, size))] = True
    return mask


def test_one_found_one_missed_one_false_blob():
    ref = _box((2, 2, 2), (5, 5, 5)) | _box((20, 20, 20), (4, 4, 4))
    pred = _box((3, 3, 3), (5, 5, 5)) | _box((2, 20, 2), (3, 3, 3))  # finds lesion 1, plus a false blob
    m = lesion_metrics(pred, ref)
    assert (m["n_ref"], m["n_pred"]) == (2, 2)
    assert (m["LTP_ref"], m["LFN"], m["LTP_pred"], m["LFP"]) == (1, 1, 1, 1)
    assert m["LTPR"] == pytest.approx(0.5)
    assert m["PPV"] == pytest.approx(0.5)
    assert m["LFPR"] == pytest.approx(0.5)
    assert m["lesion_F1"] == pytest.approx(0.5)
    overlap = 4 ** 3
    assert m["dice"] == pytest.approx(2 * overlap / (125 + 27 + 125 + 64))


def test_false_positive_volume_uses_the_voxel_size():
    ref = _box((2, 2, 2), (5, 5, 5))
    pred = _box((3, 3, 3), (5, 5, 5)) | _box((2, 20, 2), (3, 3, 3))  # the 27-voxel blob is false
    assert lesion_metrics(pred, ref, zooms=(1.0, 1.0, 3.0))["LFP_volume_mm3"] == pytest.approx(81.0)
    assert math.isnan(lesion_metrics(pred, ref)["LFP_volume_mm3"])  # no voxel size, no volume
    rows = [{"LFP_volume_mm3": 81.0}, {"LFP_volume_mm3": "n/a"}, {"LFP_volume_mm3": 9.5}]
    mean, pooled = aggregate_metrics(rows)
    assert pooled["LFP_volume_mm3"] == pytest.approx(90.5)
    assert mean["LFP_volume_mm3"] == pytest.approx(45.25)


def test_lfpr_is_one_minus_ppv_when_one_blob_covers_two_lesions():
    ref = _box((2, 2, 2), (3, 3, 3)) | _box((2, 8, 2), (3, 3, 3))
    pred = _box((2, 2, 2), (3, 9, 3))  # one blob over both lesions
    pred |= _box((20, 20, 20), (2, 2, 2))  # and a false one
    m = lesion_metrics(pred, ref)
    assert (m["LTP_ref"], m["LFN"]) == (2, 0)
    assert (m["LTP_pred"], m["LFP"]) == (1, 1)
    assert m["LTPR"] == 1.0
    assert m["PPV"] + m["LFPR"] == pytest.approx(1.0)
    assert m["PPV"] == pytest.approx(0.5)


@pytest.mark.parametrize("pred_voxels, matched", [(9, False), (10, True), (11, True)])
def test_iou_threshold_boundary(pred_voxels, matched):
    ref = _box((0, 0, 0), (10, 10, 10))  # 1000 voxels
    pred = np.zeros(SHAPE, dtype=bool)
    pred[np.unravel_index(np.arange(pred_voxels), (10, 10, 10))] = True  # inside ref: IoU = n / 1000
    m = lesion_metrics(pred, ref)
    assert m["LTP_ref"] == int(matched)
    assert m["LTP_pred"] == int(matched)
    assert m["LTPR"] == (1.0 if matched else 0.0)
    # Any shared voxel is enough in overlap mode.
    assert lesion_metrics(pred, ref, match="overlap")["LTPR"] == 1.0


def test_iou_counts_voxels_outside_the_reference_in_the_union():
    ref = _box((0, 0, 0), (2, 2, 2))  # 8 voxels
    pred = _box((1, 1, 1), (8, 8, 8))  # 512 voxels, 1 shared: IoU = 1 / 519 < 0.01
    assert lesion_metrics(pred, ref)["LTPR"] == 0.0
    assert lesion_metrics(pred, ref, iou_threshold=0.001)["LTPR"] == 1.0
    assert lesion_metrics(pred, ref, match="overlap")["LTPR"] == 1.0


def test_label_image_is_treated_as_its_support():
    ref = _box((2, 2, 2), (3, 3, 3))
    labels = np.zeros(SHAPE, dtype=np.int32)
    labels[_box((2, 2, 2), (3, 3, 3))] = 2
    labels[_box((20, 2, 2), (3, 3, 3))] = 1
    m = lesion_metrics(labels, ref)
    assert (m["n_pred"], m["LTP_pred"], m["LFP"]) == (2, 1, 1)


def test_empty_conventions():
    empty = np.zeros(SHAPE, bool)
    blob = _box((2, 2, 2), (3, 3, 3))
    none = lesion_metrics(empty, empty)
    assert none["n_ref"] == none["n_pred"] == 0
    assert all(math.isnan(none[k]) for k in ("LTPR", "LFPR", "PPV", "lesion_F1", "dice"))
    no_change_pair = lesion_metrics(blob, empty)  # false blobs on a no-change pair
    assert math.isnan(no_change_pair["LTPR"])
    assert (no_change_pair["PPV"], no_change_pair["LFPR"], no_change_pair["LFP"]) == (0.0, 1.0, 1)
    assert no_change_pair["dice"] == 0.0
    missed = lesion_metrics(empty, blob)
    assert missed["LTPR"] == 0.0 and math.isnan(missed["PPV"]) and missed["LFN"] == 1


def test_dice():
    a = _box((0, 0, 0), (4, 4, 4))
    b = _box((2, 0, 0), (4, 4, 4))
    assert dice(a, b) == pytest.approx(2 * 32 / 128)
    assert dice(a, a) == 1.0
    assert math.isnan(dice(np.zeros(SHAPE), np.zeros(SHAPE)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="different grids"):
        lesion_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(ValueError, match="match"):
        lesion_metrics(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), match="dice")


def test_aggregate_mean_versus_pooled():
    rows = [
        # LTPR 1/2, PPV 1/2
        {"pair": "a", "n_ref": 2, "n_pred": 2, "LTP_ref": 1, "LTP_pred": 1, "LFN": 1, "LFP": 1,
         "LTPR": 0.5, "LFPR": 0.5, "PPV": 0.5, "lesion_F1": 0.5, "dice": 0.2,
         "ref_voxels": 100, "pred_voxels": 100, "overlap_voxels": 10},
        # LTPR 8/8, PPV 2/2
        {"pair": "b", "n_ref": 8, "n_pred": 2, "LTP_ref": 8, "LTP_pred": 2, "LFN": 0, "LFP": 0,
         "LTPR": 1.0, "LFPR": 0.0, "PPV": 1.0, "lesion_F1": 1.0, "dice": 0.6,
         "ref_voxels": 300, "pred_voxels": 100, "overlap_voxels": 90},
        # nothing anywhere, as read back from a TSV
        {"pair": "c", "n_ref": "0", "n_pred": "0", "LTP_ref": "0", "LTP_pred": "0", "LFN": "0",
         "LFP": "0", "LTPR": "n/a", "LFPR": "n/a", "PPV": "n/a", "lesion_F1": "n/a", "dice": "n/a",
         "ref_voxels": "0", "pred_voxels": "0", "overlap_voxels": "0"},
    ]
    mean, pooled = aggregate_metrics(rows)
    assert mean["n_pairs"] == pooled["n_pairs"] == 3
    assert mean["LTPR"] == pytest.approx(0.75)  # NaN of pair c ignored
    assert mean["PPV"] == pytest.approx(0.75)
    assert mean["dice"] == pytest.approx(0.4)
    assert mean["n_ref"] == pytest.approx(10 / 3)
    assert pooled["n_ref"] == 10 and pooled["LTP_ref"] == 9
    assert pooled["LTPR"] == pytest.approx(9 / 10)
    assert pooled["PPV"] == pytest.approx(3 / 4)
    assert pooled["LFPR"] == pytest.approx(1 / 4)
    assert pooled["lesion_F1"] == pytest.approx(2 * 0.9 * 0.75 / 1.65)
    assert pooled["dice"] == pytest.approx(2 * 100 / 600)
    empty_mean, empty_pooled = aggregate_metrics([])
    assert math.isnan(empty_mean["LTPR"]) and math.isnan(empty_pooled["PPV"])
