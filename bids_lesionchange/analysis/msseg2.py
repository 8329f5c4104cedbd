"""MSSEG-2-compatible lesion detection: which lesions are detected, as Anima's scorer decides.

The MSSEG-2 challenge (new FLAIR lesions) scored methods with Anima's ``animaSegPerfAnalyzer``.
Its lesion detection rules are re-implemented here from Anima's public code (Inria-Empenn/
Anima-Public, ``Anima/segmentation/validation_tools/segmentation_performance_analyzer/``:
``animaSegPerfCAnalyzer.cxx``, functions ``getOverlapTab``, ``getTruePositiveLesions``,
``falsePositiveRatioTester`` and ``getDetectionMarks``; defaults from ``animaSegPerfApp.cxx``):

1. Lesions are the connected components of each mask with **6-connectivity** (ITK's
   ``ConnectedComponentImageFilter`` with its default, not fully connected).
2. Components of **<= 3 mm^3** are dropped from both masks; their voxels count as background
   (Anima keeps components of at least ``floor(3 / voxel_volume) + 1`` voxels).
3. A reference lesion R is **detected** when (a) more than 10 % of its voxels lie in predicted
   components (``> alpha``, strictly), and (b) taking the predicted components that overlap R in
   decreasing order of overlap until they account for 65 % (``gamma``) of R's covered voxels,
   none of them has more than 70 % (``beta``) of its voxels in the reference *background*.
4. The same test with the roles swapped decides which predicted lesions are true positives.

Two details of Anima's code differ from the usual summary of these rules and are followed here:

* "outside" in (b) means outside **every** lesion of the tested side, not outside R: a predicted
  component that spans two reference lesions is 0 % outside either of them.
* at most ``n + 1`` covering components are examined in (b), ``n`` being the number of lesions
  on the tested side (Anima's loop is bounded by the row count of its overlap table, background
  row included). With one reference lesion, only its two largest overlaps are checked.

Ties in the overlap order (unspecified in Anima, which uses ``std::sort``) are broken by the
larger component first, then by label. The rates (sensitivity, PPV, F1) and Dice are computed by
:func:`bids_lesionchange.analysis.metrics.lesion_metrics` from what this module returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bids_lesionchange.analysis.components import check_same_grid, label_connected_components

#: Components of at most this volume are dropped from both masks (Anima ``-v``, default 3).
MIN_LESION_VOLUME_MM3 = 3.0
#: A lesion needs more than this share of its voxels covered (Anima ``-x``, alpha).
MIN_COVERED_FRACTION = 0.10
#: A covering component may lie at most this share outside the tested side's lesions (``-y``, beta).
MAX_OUTSIDE_FRACTION = 0.70
#: Covering components are checked until they account for this share of the cover (``-z``, gamma).
CHECKED_COVER_FRACTION = 0.65
#: Face connectivity, as ITK's ConnectedComponentImageFilter by default.
MSSEG2_CONNECTIVITY = 6


@dataclass(frozen=True)
class Msseg2Detection:
    """Lesions of both masks after the small-lesion removal, and which of them are detected.

    ``ref_labels`` / ``pred_labels`` label the kept lesions 1..n (0 background, dropped
    components included); ``ref_detected[r - 1]`` / ``pred_detected[p - 1]`` say whether lesion
    ``r`` / ``p`` is detected (a true positive).
    """

    ref_labels: np.ndarray
    pred_labels: np.ndarray
    ref_detected: np.ndarray
    pred_detected: np.ndarray


def voxel_volume_mm3(zooms: Sequence[float]) -> float:
    """Volume of one voxel, the product of the first three voxel sizes (mm)."""
    sizes = [float(z) for z in tuple(zooms)[:3]]
    if len(sizes) != 3 or not all(math.isfinite(z) and z > 0 for z in sizes):
        raise ValueError(f"voxel sizes must be three positive numbers (mm), got {tuple(zooms)!r}")
    return sizes[0] * sizes[1] * sizes[2]


def drop_small_components(labels: np.ndarray, n: int, voxel_volume: float,
                          min_volume_mm3: float = MIN_LESION_VOLUME_MM3) -> tuple[np.ndarray, int]:
    """Remove components of ``<= min_volume_mm3`` and number the others 1..m in label order.

    As Anima: a component is kept when it has at least ``floor(min_volume / voxel_volume) + 1``
    voxels, i.e. when its volume is strictly above ``min_volume_mm3``.
    """
    if min_volume_mm3 < 0:
        raise ValueError(f"min_volume_mm3 must be >= 0, got {min_volume_mm3}")
    min_voxels = math.floor(min_volume_mm3 / voxel_volume) + 1
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    new_label = np.zeros(n + 1, dtype=np.int32)
    new_label[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new_label[labels], int(keep.sum())


def overlap_table(row_labels: np.ndarray, n_rows: int, col_labels: np.ndarray, n_cols: int) -> np.ndarray:
    """Voxel counts ``table[r, c]`` of row label r and column label c, background (0) included."""
    table = np.zeros((n_rows + 1, n_cols + 1), dtype=np.int64)
    np.add.at(table, (row_labels.ravel(), col_labels.ravel()), 1)
    return table


def detected_rows(table: np.ndarray, *, min_covered: float = MIN_COVERED_FRACTION,
                  max_outside: float = MAX_OUTSIDE_FRACTION,
                  checked_cover: float = CHECKED_COVER_FRACTION) -> np.ndarray:
    """Decide, for each lesion of the row side of an overlap table, whether it is detected.

    Parameters
    ----------
    table : ndarray of int, shape (n_rows + 1, n_cols + 1)
        :func:`overlap_table` of the tested side (rows) against the other side (columns).
    min_covered, max_outside, checked_cover : float
        Anima's alpha, beta and gamma (module docstring, rule 3).

    Returns
    -------
    ndarray of bool, shape (n_rows,)
        Entry ``r - 1`` for row lesion ``r``.
    """
    n_rows = table.shape[0] - 1
    covered = table[1:, 1:].sum(axis=1)
    size = table[1:, :].sum(axis=1)
    col_size = table[:, 1:].sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        outside = np.where(col_size > 0, table[0, 1:] / np.maximum(col_size, 1), 0.0)
    detected = np.zeros(n_rows, dtype=bool)
    for r in range(1, n_rows + 1):
        if size[r - 1] == 0 or covered[r - 1] / size[r - 1] <= min_covered:
            continue
        overlaps = table[r, 1:]
        # decreasing overlap, then larger component, then lower label
        order = np.lexsort((np.arange(overlaps.size), -col_size, -overlaps))
        share = 0.0
        rejected = False
        for k, c in enumerate(order):
            if share >= checked_cover or k >= n_rows + 1 or overlaps[c] == 0:
                break
            if outside[c] > max_outside:
                rejected = True
                break
            share += overlaps[c] / covered[r - 1]
        detected[r - 1] = not rejected
    return detected


def msseg2_detection(pred_mask: np.ndarray, ref_mask: np.ndarray, zooms: Sequence[float], *,
                     min_volume_mm3: float = MIN_LESION_VOLUME_MM3,
                     min_covered: float = MIN_COVERED_FRACTION,
                     max_outside: float = MAX_OUTSIDE_FRACTION,
                     checked_cover: float = CHECKED_COVER_FRACTION) -> Msseg2Detection:
    """Find the lesions of both masks and which are detected, with the MSSEG-2 (Anima) rules.

    Parameters
    ----------
    pred_mask, ref_mask : ndarray
        3D masks on one grid; voxels ``> 0`` are lesion.
    zooms : sequence of float
        Voxel sizes in mm (e.g. ``img.header.get_zooms()[:3]``), for the ``<= 3 mm^3`` rule.
    min_volume_mm3, min_covered, max_outside, checked_cover : float
        Anima's defaults: 3 mm^3, alpha 0.10, beta 0.70, gamma 0.65.

    Returns
    -------
    Msseg2Detection
    """
    pred = np.asarray(pred_mask)
    ref = np.asarray(ref_mask)
    check_same_grid(pred, ref)
    voxel_volume = voxel_volume_mm3(zooms)
    ref_labels, n_ref = drop_small_components(
        *label_connected_components(ref > 0, connectivity=MSSEG2_CONNECTIVITY), voxel_volume, min_volume_mm3)
    pred_labels, n_pred = drop_small_components(
        *label_connected_components(pred > 0, connectivity=MSSEG2_CONNECTIVITY), voxel_volume, min_volume_mm3)
    table = overlap_table(ref_labels, n_ref, pred_labels, n_pred)
    rules = {"min_covered": min_covered, "max_outside": max_outside, "checked_cover": checked_cover}
    return Msseg2Detection(ref_labels=ref_labels, pred_labels=pred_labels,
                           ref_detected=detected_rows(table, **rules),
                           pred_detected=detected_rows(table.T, **rules))
