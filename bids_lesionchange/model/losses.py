"""Losses of the change detector: focal Tversky (the paper's) and binary cross-entropy (ablation)."""

from __future__ import annotations

from typing import Callable, Sequence

from bids_lesionchange.model._backend import keras
from bids_lesionchange.params import DetectorParams

ops = keras.ops

#: Smoothing added to numerator and denominator of the Tversky index, so an empty label with an
#: empty prediction scores TI = 1 (loss 0) instead of 0/0.
TVERSKY_SMOOTH = 1.0


def tversky_index(y_true, y_pred, alpha: float = 0.75, smooth: float = TVERSKY_SMOOTH):
    """Return the soft Tversky index over the whole batch volume (higher is better, 1 is perfect).

    TI = (TP + s) / (TP + alpha FN + beta FP + s) with beta = 1 - alpha and soft counts
    TP = sum(y p), FN = sum(y (1 - p)), FP = sum((1 - y) p) over every voxel of every sample.
    ``alpha > 0.5`` weighs false negatives more, favouring recall.
    """
    y_true = ops.cast(y_true, y_pred.dtype)
    beta = 1.0 - alpha
    tp = ops.sum(y_true * y_pred)
    fn = ops.sum(y_true * (1.0 - y_pred))
    fp = ops.sum((1.0 - y_true) * y_pred)
    return (tp + smooth) / (tp + alpha * fn + beta * fp + smooth)


def focal_tversky_loss(y_true, y_pred, alpha: float = 0.75, gamma: float = 1.0,
                       smooth: float = TVERSKY_SMOOTH):
    """Return the focal Tversky loss (1 - TI)^gamma (lower is better, 0 for a perfect prediction).

    Parameters
    ----------
    y_true, y_pred : tensors of the same shape
        Binary label and predicted probabilities.
    alpha : float
        Weight of false negatives; false positives get ``1 - alpha``.
    gamma : float
        Focal exponent (the paper: 0.75 for intermediate outputs, 0.75 or 1.0 for the final one).
    """
    ti = tversky_index(y_true, y_pred, alpha=alpha, smooth=smooth)
    return ops.power(ops.maximum(1.0 - ti, 0.0), gamma)


def binary_crossentropy_loss(y_true, y_pred):
    """Return the mean voxel-wise binary cross-entropy (lower is better)."""
    y_true = ops.cast(y_true, y_pred.dtype)
    return ops.mean(keras.losses.binary_crossentropy(y_true[..., None], y_pred[..., None]))


def output_loss(params: DetectorParams, final: bool) -> Callable:
    """Return the loss of one detector output: the final one or an intermediate (deep supervision) one."""
    if params.loss == "bce":
        return binary_crossentropy_loss
    if params.loss != "focal_tversky":
        raise ValueError(f"unknown detector loss '{params.loss}'; choose focal_tversky or bce")
    gamma = params.gamma_final if final else params.gamma_intermediate

    def loss(y_true, y_pred):
        return focal_tversky_loss(y_true, y_pred, alpha=params.alpha, gamma=gamma)

    return loss


def detector_loss(params: DetectorParams, y_true, outputs: Sequence):
    """Return (total, final) losses of all detector outputs against the full-resolution label.

    ``outputs[0]`` is the final output; the others are deep-supervision outputs weighted by
    ``params.deep_supervision_weight``. Each output has shape (batch, X, Y, Z, 1).
    """
    y_true = y_true[..., None] if len(y_true.shape) == len(outputs[0].shape) - 1 else y_true
    final = output_loss(params, final=True)(y_true, outputs[0])
    total = final
    intermediate = output_loss(params, final=False)
    for aux in outputs[1:]:
        total = total + params.deep_supervision_weight * intermediate(y_true, aux)
    return total, final
