"""Validation figures on held-out synthetic changes: voxel Dice and lesion-level LTPR/PPV (numpy, cc3d).

These score SuperMix changes during training only; the study's evaluation on real annotated
changes lives in bids_lesionchange.analysis.
"""

from __future__ import annotations

import cc3d
import numpy as np


def dice(label: np.ndarray, prediction: np.ndarray) -> float:
    """Return 2|A n B| / (|A| + |B|) of two binary volumes (higher is better; 1.0 when both empty)."""
    label, prediction = np.asarray(label, bool), np.asarray(prediction, bool)
    denominator = label.sum() + prediction.sum()
    return 1.0 if denominator == 0 else float(2.0 * np.logical_and(label, prediction).sum() / denominator)


def lesion_counts(label: np.ndarray, prediction: np.ndarray, min_blob_size: int = 20,
                  min_iou: float = 0.01) -> dict[str, int]:
    """Count true, detected, predicted and correct lesions (26-connected components) of one volume.

    A true lesion is detected when a predicted blob (of at least ``min_blob_size`` voxels)
    overlaps it with IoU >= ``min_iou`` (the paper's rule); a predicted blob is correct when it
    detects some true lesion.
    """
    true_cc = cc3d.connected_components(np.asarray(label, bool).astype(np.uint8), connectivity=26)
    pred_cc = cc3d.connected_components(np.asarray(prediction, bool).astype(np.uint8), connectivity=26)
    if pred_cc.max():
        sizes = np.bincount(pred_cc.ravel())
        small = np.flatnonzero(sizes < min_blob_size)
        small = small[small > 0]
        if small.size:
            pred_cc = np.where(np.isin(pred_cc, small), 0, pred_cc)
    n_true = int(true_cc.max())
    pred_ids = np.unique(pred_cc)
    pred_ids = pred_ids[pred_ids > 0]
    true_sizes = np.bincount(true_cc.ravel(), minlength=n_true + 1)
    pred_sizes = np.bincount(pred_cc.ravel(), minlength=int(pred_cc.max()) + 1)
    both = (true_cc > 0) & (pred_cc > 0)
    pairs, inter = np.unique(np.stack([true_cc[both], pred_cc[both]]), axis=1, return_counts=True)
    detected, correct = set(), set()
    for (t, p), n in zip(pairs.T, inter):
        iou = n / (true_sizes[t] + pred_sizes[p] - n)
        if iou >= min_iou:
            detected.add(int(t))
            correct.add(int(p))
    return {"true": n_true, "detected": len(detected), "predicted": int(pred_ids.size), "correct": len(correct)}


def summarise(counts: list[dict[str, int]]) -> dict[str, float]:
    """Pool lesion counts over volumes: LTPR = detected / true, PPV = correct / predicted (NaN if 0/0)."""
    total = {key: sum(c[key] for c in counts) for key in ("true", "detected", "predicted", "correct")}
    ltpr = total["detected"] / total["true"] if total["true"] else float("nan")
    ppv = total["correct"] / total["predicted"] if total["predicted"] else float("nan")
    return {"ltpr": float(ltpr), "ppv": float(ppv), **{f"n_{k}": v for k, v in total.items()}}
