"""Synthetic-change validation figures: Dice and lesion LTPR/PPV."""

import numpy as np
import pytest

from bids_lesionchange.model.validation import dice, lesion_counts, summarise


def test_dice_formula():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros_like(a)
    a[:4] = True  # 400 voxels
    b[2:6] = True  # 400 voxels, 200 shared
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0


def test_lesion_counts_use_iou_and_drop_small_blobs():
    label = np.zeros((30, 30, 30), bool)
    label[2:8, 2:8, 2:8] = True  # lesion 1, detected
    label[20:26, 20:26, 20:26] = True  # lesion 2, missed
    pred = np.zeros_like(label)
    pred[3:9, 3:9, 3:9] = True  # overlaps lesion 1
    pred[12:14, 12:14, 12:14] = True  # 8-voxel false positive, below the blob size
    pred[14:20, 0:6, 14:20] = True  # 216-voxel false positive
    counts = lesion_counts(label, pred, min_blob_size=20)
    assert counts == {"true": 2, "detected": 1, "predicted": 2, "correct": 1}
    summary = summarise([counts])
    assert summary["ltpr"] == 0.5 and summary["ppv"] == 0.5
