"""Validation figures on held-out synthetic changes: voxel Dice and lesion-level LTPR/PPV.

These score SuperMix changes during training only. The lesion matching is the study's own
(:func:`bids_lesionchange.analysis.metrics.lesion_metrics`, IoU >= 0.01, 26-connected), so the
training log and the evaluation of real annotated changes count lesions the same way.
"""

from __future__ import annotations

import numpy as np

from bids_lesionchange.analysis.components import label_connected_components, relabel_by_size
from bids_lesionchange.analysis.metrics import lesion_metrics


def dice(label: np.ndarray, prediction: np.ndarray) -> float:
    """Return 2|A n B| / (|A| + |B|) of two binary volumes (higher is better; 1.0 when both empty).

    Unlike :func:`bids_lesionchange.analysis.metrics.dice` (NaN when both are empty), a validation
    crop without change that is predicted empty counts as perfect, so it can be averaged.
    """
    label, prediction = np.asarray(label, bool), np.asarray(prediction, bool)
    denominator = label.sum() + prediction.sum()
    return 1.0 if denominator == 0 else float(2.0 * np.logical_and(label, prediction).sum() / denominator)


def lesion_counts(label: np.ndarray, prediction: np.ndarray, min_blob_size: int = 20,
                  min_iou: float = 0.01) -> dict[str, int]:
    """Count true, detected, predicted and correct lesions (26-connected components) of one volume.

    Predicted blobs smaller than ``min_blob_size`` voxels are dropped first; then a true lesion is
    detected when a predicted blob overlaps it with IoU >= ``min_iou`` (the paper's rule), and a
    predicted blob is correct when it detects some true lesion.
    """
    blobs, _ = label_connected_components(np.asarray(prediction, bool), connectivity=26)
    blobs = relabel_by_size(blobs, min_size=min_blob_size)
    row = lesion_metrics(blobs, np.asarray(label, bool), match="iou", iou_threshold=min_iou, connectivity=26)
    return {"true": row["n_ref"], "detected": row["LTP_ref"], "predicted": row["n_pred"],
            "correct": row["LTP_pred"]}


def summarise(counts: list[dict[str, int]]) -> dict[str, float]:
    """Pool lesion counts over volumes: LTPR = detected / true, PPV = correct / predicted (NaN if 0/0)."""
    total = {key: sum(c[key] for c in counts) for key in ("true", "detected", "predicted", "correct")}
    ltpr = total["detected"] / total["true"] if total["true"] else float("nan")
    ppv = total["correct"] / total["predicted"] if total["predicted"] else float("nan")
    return {"ltpr": float(ltpr), "ppv": float(ppv), **{f"n_{k}": v for k, v in total.items()}}
