"""Lesion-wise evaluation of change masks as in To et al. 2021, supplement D, plus voxel Dice.

Definitions (supplement D)::

    LTPR = LTP / (LTP + LFN)     lesion-wise true positive rate (recall), higher is better
    LFPR = LFP / (LTP + LFP)     lesion-wise false positive rate,          lower is better
    PPV  = LTP / (LTP + LFP)     positive predictive value (precision),    higher is better

A predicted blob and a reference lesion *match* when the intersection over union of the two
connected components is >= 0.01 (the paper's conservative rule), or, with ``match="overlap"``,
when they share at least one voxel. With ``match="msseg2"`` lesions are not matched in pairs:
:mod:`.msseg2` decides which reference lesions and which predicted lesions are detected, with
the rules of the MSSEG-2 challenge's scorer (Anima's ``animaSegPerfAnalyzer``: 6-connectivity,
lesions of <= 3 mm^3 dropped, 10 % coverage and the 65 % / 70 % outside test); the counts and
rates below are then computed from those detections in the same way. Dice stays voxel-wise on
the full masks in every mode (Anima computes it before dropping small lesions).

The paper writes one LTP in all three formulas. Because one blob can match several lesions and
one lesion several blobs, we count it on the side each rate is about:

* in LTPR, ``LTP_ref`` = reference lesions matched by >= 1 predicted blob, ``LFN`` = the others;
* in PPV and LFPR, ``LTP_pred`` = predicted blobs matching >= 1 reference lesion, ``LFP`` = the
  others.

Hence ``LFPR = 1 - PPV`` for every pair, as in the paper's Table 1 (LFPR + PPV ~ 1).

Undefined values are NaN (written ``n/a`` in tables): LTPR when there is no reference lesion,
PPV and LFPR when there is no predicted blob, Dice when both masks are empty, lesion F1 when
LTPR or PPV is NaN. A pair with no reference and no prediction therefore has every rate NaN and
all counts 0; a no-change pair with false blobs has LTPR NaN, PPV 0 and LFPR 1. Means over pairs
ignore NaN.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from bids_lesionchange.analysis.components import check_same_grid, label_connected_components
from bids_lesionchange.analysis.msseg2 import msseg2_detection, voxel_volume_mm3

#: Keys returned by :func:`lesion_metrics`, in the order tables write them.
METRIC_COLUMNS = (
    "n_ref",
    "n_pred",
    "LTP_ref",
    "LTP_pred",
    "LFN",
    "LFP",
    "LTPR",
    "LFPR",
    "PPV",
    "lesion_F1",
    "dice",
    "ref_voxels",
    "pred_voxels",
    "overlap_voxels",
    "LFP_volume_mm3",
)

#: Count columns summed by the pooled aggregate.
COUNT_COLUMNS = (
    "n_ref",
    "n_pred",
    "LTP_ref",
    "LTP_pred",
    "LFN",
    "LFP",
    "ref_voxels",
    "pred_voxels",
    "overlap_voxels",
)

#: Volume columns (mm^3) summed by the pooled aggregate.
VOLUME_COLUMNS = ("LFP_volume_mm3",)

#: Rate columns, averaged over pairs by the mean aggregate.
RATE_COLUMNS = ("LTPR", "LFPR", "PPV", "lesion_F1", "dice")

#: Rules that match predicted blobs with reference lesions pair by pair (:func:`match_matrix`).
PAIRWISE_MATCH_MODES = ("iou", "overlap")
#: Every evaluation rule: the pairwise ones and the MSSEG-2 (Anima) detection rule.
MATCH_MODES = PAIRWISE_MATCH_MODES + ("msseg2",)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else math.nan


def lesion_true_positive_rate(ltp_ref: int, lfn: int) -> float:
    """LTPR = LTP_ref / (LTP_ref + LFN): share of reference lesions found. Higher is better.

    NaN when there is no reference lesion.
    """
    return _ratio(ltp_ref, ltp_ref + lfn)


def lesion_false_positive_rate(ltp_pred: int, lfp: int) -> float:
    """LFPR = LFP / (LTP_pred + LFP): share of predicted blobs matching no lesion. Lower is better.

    NaN when there is no predicted blob.
    """
    return _ratio(lfp, ltp_pred + lfp)


def positive_predictive_value(ltp_pred: int, lfp: int) -> float:
    """PPV = LTP_pred / (LTP_pred + LFP): share of predicted blobs that are real. Higher is better.

    NaN when there is no predicted blob.
    """
    return _ratio(ltp_pred, ltp_pred + lfp)


def lesion_f1(ltpr: float, ppv: float) -> float:
    """Lesion-wise F1 = 2 * PPV * LTPR / (PPV + LTPR), harmonic mean. Higher is better.

    NaN when either rate is NaN; 0 when both are 0.
    """
    if math.isnan(ltpr) or math.isnan(ppv):
        return math.nan
    if ltpr + ppv == 0:
        return 0.0
    return 2.0 * ppv * ltpr / (ppv + ltpr)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Voxel-wise Dice = 2 |A and B| / (|A| + |B|) of two masks (``> 0``). Higher is better.

    Returns NaN when both masks are empty (the ratio is undefined).
    """
    a = np.asarray(a) > 0
    b = np.asarray(b) > 0
    if a.shape != b.shape:
        raise ValueError(f"Dice needs masks of one shape, got {a.shape} and {b.shape}")
    return _ratio(2 * int(np.count_nonzero(a & b)), int(np.count_nonzero(a)) + int(np.count_nonzero(b)))


def match_matrix(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    match: str = "iou",
    iou_threshold: float = 0.01,
) -> np.ndarray:
    """Decide which predicted blobs match which reference lesions.

    Parameters
    ----------
    pred_labels, ref_labels : ndarray of int
        Label images (0 background, 1..n) on one grid.
    match : {"iou", "overlap"}
        ``"iou"``: match when |P and R| / |P or R| >= ``iou_threshold``;
        ``"overlap"``: match when |P and R| >= 1 voxel.
    iou_threshold : float
        IoU needed for a match in ``"iou"`` mode (0.01 in the paper).

    Returns
    -------
    ndarray of bool, shape (n_pred + 1, n_ref + 1)
        ``matches[p, r]`` for labels p >= 1, r >= 1 (row and column 0 are background, False).
    """
    if match not in PAIRWISE_MATCH_MODES:
        raise ValueError(f"match_matrix matches pairwise with one of {PAIRWISE_MATCH_MODES}, got "
                         f"{match!r}; the msseg2 rule decides per lesion, use lesion_metrics")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    pred = np.asarray(pred_labels).ravel().astype(np.int64)
    ref = np.asarray(ref_labels).ravel().astype(np.int64)
    n_pred = int(pred.max(initial=0))
    n_ref = int(ref.max(initial=0))
    both = (pred > 0) & (ref > 0)
    intersection = np.zeros((n_pred + 1, n_ref + 1), dtype=np.int64)
    np.add.at(intersection, (pred[both], ref[both]), 1)
    if match == "overlap":
        matches = intersection > 0
    else:
        pred_size = np.bincount(pred, minlength=n_pred + 1)
        ref_size = np.bincount(ref, minlength=n_ref + 1)
        union = pred_size[:, None] + ref_size[None, :] - intersection
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, intersection / np.maximum(union, 1), 0.0)
        matches = (intersection > 0) & (iou >= iou_threshold)
    matches[0, :] = False
    matches[:, 0] = False
    return matches


def lesion_metrics(
    pred_labels_or_mask: np.ndarray,
    ref_mask: np.ndarray,
    match: str = "iou",
    iou_threshold: float = 0.01,
    connectivity: int | None = None,
    zooms: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Compare a predicted change mask with a reference change mask lesion by lesion.

    Blobs and lesions are the connected components (``connectivity``) of ``pred > 0`` and
    ``ref > 0``; a label image is accepted and treated as its support (the change labels of
    :func:`.components.change_components` are such components already). Matching and the
    conventions are described in the module docstring:

    * LTPR = LTP_ref / (LTP_ref + LFN), higher is better;
    * LFPR = LFP / (LTP_pred + LFP), lower is better;
    * PPV = LTP_pred / (LTP_pred + LFP), higher is better;
    * lesion_F1 = 2 * PPV * LTPR / (PPV + LTPR), higher is better;
    * dice = 2 |P and R| / (|P| + |R|) over voxels, higher is better;
    * LFP_volume_mm3 = total volume of the false positive blobs, lower is better (with an empty
      reference: the volume of the false detections, as MSSEG-2 scores such pairs).

    Parameters
    ----------
    pred_labels_or_mask : ndarray
        3D predicted change mask or label image.
    ref_mask : ndarray
        3D reference change mask (or label image) on the same grid.
    match : {"iou", "overlap", "msseg2"}
        Matching rule: IoU >= ``iou_threshold`` (paper), any shared voxel, or the MSSEG-2
        detection rule of :mod:`.msseg2` (needs ``zooms``).
    iou_threshold : float
        0.01 in the paper.
    connectivity : {6, 18, 26}, optional
        Neighbourhood of the connected components: 26 by default; msseg2 always uses 6.
    zooms : sequence of float, optional
        Voxel sizes in mm. Required by ``"msseg2"`` (lesions of <= 3 mm^3 are dropped); without
        them ``LFP_volume_mm3`` is NaN.

    Returns
    -------
    dict
        Keys of ``METRIC_COLUMNS``: counts as int, rates and volumes as float (NaN when undefined).
    """
    if match not in MATCH_MODES:
        raise ValueError(f"match must be one of {MATCH_MODES}, got {match!r}")
    pred = np.asarray(pred_labels_or_mask)
    ref = np.asarray(ref_mask)
    check_same_grid(pred, ref)
    if match == "msseg2":
        if connectivity not in (None, 6):
            raise ValueError(f"the msseg2 rule uses 6-connectivity (as Anima), got {connectivity}")
        if zooms is None:
            raise ValueError("the msseg2 rule needs the voxel sizes (zooms) to drop lesions of <= 3 mm^3")
        detection = msseg2_detection(pred, ref, zooms)
        pred_labels = detection.pred_labels
        ref_found, pred_found = detection.ref_detected, detection.pred_detected
    else:
        connectivity = 26 if connectivity is None else connectivity
        pred_labels, _ = label_connected_components(pred > 0, connectivity=connectivity)
        ref_labels, _ = label_connected_components(ref > 0, connectivity=connectivity)
        matches = match_matrix(pred_labels, ref_labels, match=match, iou_threshold=iou_threshold)
        ref_found = matches[1:, 1:].any(axis=0)
        pred_found = matches[1:, 1:].any(axis=1)
    n_ref, n_pred = int(ref_found.size), int(pred_found.size)
    ltp_ref = int(np.count_nonzero(ref_found))
    ltp_pred = int(np.count_nonzero(pred_found))
    lfn = n_ref - ltp_ref
    lfp = n_pred - ltp_pred
    ltpr = lesion_true_positive_rate(ltp_ref, lfn)
    ppv = positive_predictive_value(ltp_pred, lfp)
    pred_voxels = int(np.count_nonzero(pred))
    ref_voxels = int(np.count_nonzero(ref))
    overlap_voxels = int(np.count_nonzero((pred > 0) & (ref > 0)))
    lfp_volume = math.nan
    if zooms is not None:
        false_blob = np.zeros(n_pred + 1, dtype=bool)
        false_blob[1:] = ~pred_found
        lfp_volume = int(np.count_nonzero(false_blob[pred_labels])) * voxel_volume_mm3(zooms)
    return {
        "n_ref": n_ref,
        "n_pred": n_pred,
        "LTP_ref": ltp_ref,
        "LTP_pred": ltp_pred,
        "LFN": lfn,
        "LFP": lfp,
        "LTPR": ltpr,
        "LFPR": lesion_false_positive_rate(ltp_pred, lfp),
        "PPV": ppv,
        "lesion_F1": lesion_f1(ltpr, ppv),
        "dice": _ratio(2 * overlap_voxels, pred_voxels + ref_voxels),
        "ref_voxels": ref_voxels,
        "pred_voxels": pred_voxels,
        "overlap_voxels": overlap_voxels,
        "LFP_volume_mm3": lfp_volume,
    }


def aggregate_metrics(rows: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Summarise per-pair metrics two ways: the mean over pairs and pooled counts.

    * ``mean_row``: every rate and count averaged over pairs, NaN values ignored (the paper's
      Table 1 averages LTPR, LFPR and PPV across Change pairs). NaN if no pair defines it.
    * ``pooled_row``: counts summed over pairs, then the rates recomputed from the sums
      (LTPR = sum LTP_ref / (sum LTP_ref + sum LFN), ..., Dice = 2 sum overlap / (sum pred + sum
      ref)), which weighs every lesion equally instead of every pair; volumes are summed (NaN
      if no pair gives one).

    Values may be numbers or strings as read from a TSV (``n/a`` is NaN); keys other than
    the metric columns are ignored.

    Returns
    -------
    mean_row, pooled_row : dict
        Keys ``aggregate`` ("mean" / "pooled"), ``n_pairs`` and the metric columns.
    """
    rows = list(rows)
    n_pairs = len(rows)
    mean_row: dict[str, Any] = {"aggregate": "mean", "n_pairs": n_pairs}
    pooled_row: dict[str, Any] = {"aggregate": "pooled", "n_pairs": n_pairs}
    for column in METRIC_COLUMNS:
        values = np.array([_as_float(row.get(column)) for row in rows], dtype=np.float64)
        finite = values[~np.isnan(values)]
        mean_row[column] = float(finite.mean()) if finite.size else math.nan
    sums = {}
    for column in COUNT_COLUMNS:
        values = np.array([_as_float(row.get(column)) for row in rows], dtype=np.float64)
        sums[column] = int(np.nansum(values))
        pooled_row[column] = sums[column]
    for column in VOLUME_COLUMNS:
        values = np.array([_as_float(row.get(column)) for row in rows], dtype=np.float64)
        pooled_row[column] = float(np.nansum(values)) if np.isfinite(values).any() else math.nan
    ltpr = lesion_true_positive_rate(sums["LTP_ref"], sums["LFN"])
    ppv = positive_predictive_value(sums["LTP_pred"], sums["LFP"])
    pooled_row["LTPR"] = ltpr
    pooled_row["LFPR"] = lesion_false_positive_rate(sums["LTP_pred"], sums["LFP"])
    pooled_row["PPV"] = ppv
    pooled_row["lesion_F1"] = lesion_f1(ltpr, ppv)
    pooled_row["dice"] = _ratio(2 * sums["overlap_voxels"], sums["pred_voxels"] + sums["ref_voxels"])
    pooled_row = {"aggregate": "pooled", "n_pairs": n_pairs, **{c: pooled_row[c] for c in METRIC_COLUMNS}}
    return mean_row, pooled_row


_MATCH_DESCRIPTIONS = {
    "iou": "a predicted blob and a reference lesion (26-connected components) match when their "
    "IoU is >= 0.01 (To et al. 2021, supplement D)",
    "overlap": "a predicted blob and a reference lesion (26-connected components) match when they "
    "share at least one voxel",
    "msseg2": "MSSEG-2 rule of Anima's animaSegPerfAnalyzer: 6-connected components, those of <= 3 "
    "mm^3 dropped from both masks; a lesion is detected when more than 10 % of its voxels are covered "
    "by the other mask's lesions and, taking the covering lesions largest overlap first until 65 % of "
    "the cover, none has more than 70 % of its voxels outside the tested mask's lesions",
}


def metrics_sidecar(match: str = "iou") -> dict[str, dict[str, Any]]:
    """Return a BIDS JSON sidecar describing every column of a metrics table evaluated with ``match``."""
    if match not in MATCH_MODES:
        raise ValueError(f"match must be one of {MATCH_MODES}, got {match!r}")
    rule = _MATCH_DESCRIPTIONS[match]
    return {
        "aggregate": {
            "Description": "Only in group tables: 'mean' (average over pairs, NaN ignored) or "
            "'pooled' (counts summed over pairs, rates recomputed).",
        },
        "n_pairs": {"Description": "Only in group tables: number of pairs aggregated."},
        "n_ref": {"Description": "Number of reference change lesions (connected components; "
                  "with msseg2, those above 3 mm^3).", "Units": "lesion"},
        "n_pred": {"Description": "Number of predicted change blobs (connected components; with "
                   "msseg2, those above 3 mm^3).", "Units": "lesion"},
        "LTP_ref": {"Description": "Lesion-wise true positives counted on the reference: reference "
                    f"lesions found by the prediction ({rule}).", "Units": "lesion"},
        "LTP_pred": {"Description": "Lesion-wise true positives counted on the prediction: "
                     "predicted blobs found in the reference (same rule, roles swapped).",
                     "Units": "lesion"},
        "LFN": {"Description": "Lesion-wise false negatives: reference lesions not found "
                "(n_ref - LTP_ref).", "Units": "lesion"},
        "LFP": {"Description": "Lesion-wise false positives: predicted blobs not found in the "
                "reference (n_pred - LTP_pred); with an empty reference, the number of false "
                "detections.", "Units": "lesion"},
        "LTPR": {"Description": "Lesion-wise true positive rate LTP_ref / (LTP_ref + LFN); higher "
                 "is better; n/a without reference lesions."},
        "LFPR": {"Description": "Lesion-wise false positive rate LFP / (LTP_pred + LFP) (= 1 - "
                 "PPV); lower is better; n/a without predicted blobs."},
        "PPV": {"Description": "Positive predictive value LTP_pred / (LTP_pred + LFP); higher is "
                "better; n/a without predicted blobs."},
        "lesion_F1": {"Description": "Lesion-wise F1 2 PPV LTPR / (PPV + LTPR); higher is better."},
        "dice": {"Description": "Voxel-wise Dice 2 |P and R| / (|P| + |R|); higher is better; n/a "
                 "when both masks are empty."},
        "ref_voxels": {"Description": "Voxels in the reference change mask.", "Units": "voxel"},
        "pred_voxels": {"Description": "Voxels in the predicted change mask.", "Units": "voxel"},
        "overlap_voxels": {"Description": "Voxels in both masks.", "Units": "voxel"},
        "LFP_volume_mm3": {"Description": "Total volume of the false positive blobs (LFP); with an "
                           "empty reference, the volume of the false detections. Lower is better.",
                           "Units": "mm^3"},
        "reference_flag": {"Description": "'none' when the reference mask is plausible for a change mask; "
                           "else one sentence naming it and why not (it covers more than 10 % of the brain, "
                           "or more than half of it, over 1 ml, lies outside the brain mask): the pair's "
                           "metrics are then not meaningful. n/a in the group rows."},
    }


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, str):
        if value.strip().lower() in ("n/a", "nan", ""):
            return math.nan
        return float(value)
    return float(value)
