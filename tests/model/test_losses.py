"""Focal Tversky and BCE losses."""

import numpy as np
import pytest

from bids_lesionchange.model.losses import (TVERSKY_SMOOTH, binary_crossentropy_loss, detector_loss,
                                            focal_tversky_loss, tversky_index)
from bids_lesionchange.params import DetectorParams


def test_focal_tversky_is_zero_for_a_perfect_prediction():
    label = np.zeros((2, 8, 8, 8), np.float32)
    label[0, 2:5, 2:5, 2:5] = 1
    assert float(focal_tversky_loss(label, label.copy(), alpha=0.75, gamma=0.75)) == pytest.approx(0.0, abs=1e-7)


def test_focal_tversky_matches_the_formula_on_a_hand_case():
    label = np.array([1, 1, 1, 0, 0, 0], np.float32)
    pred = np.array([0.9, 0.5, 0.0, 0.2, 0.0, 0.4], np.float32)
    tp = 0.9 + 0.5
    fn = 0.1 + 0.5 + 1.0
    fp = 0.2 + 0.4
    alpha, gamma, s = 0.75, 0.75, TVERSKY_SMOOTH
    ti = (tp + s) / (tp + alpha * fn + (1 - alpha) * fp + s)
    assert float(tversky_index(label, pred, alpha=alpha)) == pytest.approx(ti, rel=1e-6)
    assert float(focal_tversky_loss(label, pred, alpha=alpha, gamma=gamma)) == pytest.approx((1 - ti) ** gamma, rel=1e-5)


def test_alpha_above_half_penalises_misses_more_than_false_alarms():
    label = np.array([1, 1, 0, 0], np.float32)
    miss = np.array([1, 0, 0, 0], np.float32)
    false_alarm = np.array([1, 1, 1, 0], np.float32)
    assert float(focal_tversky_loss(label, miss, alpha=0.75)) > float(focal_tversky_loss(label, false_alarm, alpha=0.75))


def test_bce_matches_numpy():
    label = np.array([1, 0, 1, 0], np.float32)
    pred = np.array([0.8, 0.3, 0.6, 0.1], np.float32)
    expected = -np.mean(label * np.log(pred) + (1 - label) * np.log(1 - pred))
    assert float(binary_crossentropy_loss(label, pred)) == pytest.approx(expected, rel=1e-4)


def test_deep_supervision_outputs_are_weighted_into_the_total():
    label = np.zeros((1, 4, 4, 4), np.float32)
    label[0, :2] = 1
    final = np.full((1, 4, 4, 4, 1), 0.5, np.float32)
    aux = np.full((1, 4, 4, 4, 1), 0.2, np.float32)
    params = DetectorParams(deep_supervision_weight=0.5, gamma_final=1.0, gamma_intermediate=0.75)
    total, final_loss = detector_loss(params, label, [final, aux])
    expected_final = float(focal_tversky_loss(label[..., None], final, gamma=1.0))
    expected_aux = float(focal_tversky_loss(label[..., None], aux, gamma=0.75))
    assert float(final_loss) == pytest.approx(expected_final, rel=1e-6)
    assert float(total) == pytest.approx(expected_final + 0.5 * expected_aux, rel=1e-6)
