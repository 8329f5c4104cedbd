"""Every Table 1 variant builds, runs on any divisible shape, and one training step reaches all its weights."""

from dataclasses import replace

import numpy as np
import pytest

from bids_lesionchange.model.detector import build_detector, detector_inputs, inference_model, input_multiple
from bids_lesionchange.model.variants import VARIANTS, variant_params
from bids_lesionchange.params import HyperParams, TrainingParams


def _batch(seed=0, side=32):
    rng = np.random.default_rng(seed)
    reference = rng.uniform(0.2, 0.6, (2, side, side, side)).astype(np.float32)
    label = np.zeros_like(reference)
    label[0, 8:16, 8:16, 8:16] = 1
    label[1, 18:26, 4:12, 10:20] = 1
    mixed = np.where(label > 0, 0.95, reference).astype(np.float32)
    return mixed, reference, label


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_builds_and_one_step_reaches_every_weight(name):
    """What a training step guarantees, whatever the CPU's floating-point path: finite losses, and
    every trainable weight of the variant moved by Adam (a layer that the loss does not reach would
    keep its initial weights). Not asserted: that a few steps lower the loss (what they learn)."""
    from bids_lesionchange.model.training import DetectorTrainer

    detector = replace(variant_params(name), base_filters=4, levels=3)
    hyper = HyperParams(detector=detector, training=TrainingParams(learning_rate=2e-3, decay=0.0, graph_mode=False))
    trainer = DetectorTrainer(hyper, seed=1)
    expected_inputs = 2 if detector.architecture == "siamese" else 1
    assert len(trainer.model.inputs) == expected_inputs
    assert not any(type(layer).__name__ == "Lambda" for layer in trainer.model.layers)
    mixed, reference, label = _batch()
    before = {v.path: np.array(v.numpy()) for v in trainer.model.trainable_variables}
    losses = trainer.train_step(mixed, reference, label)
    assert np.isfinite(losses["loss"]) and np.isfinite(losses["final_loss"]) and losses["final_loss"] >= 0
    after = {v.path: np.array(v.numpy()) for v in trainer.model.trainable_variables}
    assert after.keys() == before.keys() and before
    unchanged = [path for path in before if np.array_equal(before[path], after[path])]
    assert not unchanged, f"{name}: weights the loss does not reach: {unchanged}"
    assert all(np.all(np.isfinite(w)) for w in after.values())


def test_siamese_and_multiscale_options_change_the_network():
    base = variant_params("siamese-l2e-6-g1.0")
    siamese = build_detector(replace(base, base_filters=4, levels=3))
    assert [t.shape[-1] for t in siamese.inputs] == [2, 2]
    assert len(siamese.outputs) == 2  # final + one deep-supervision output at level 1
    names = {layer.name for layer in siamese.get_layer("encoder").layers}
    assert "enc1_multiscale" in names and "enc1_inc_concat" in names
    plain = build_detector(replace(variant_params("unet-bce"), base_filters=4, levels=3))
    assert len(plain.outputs) == 1
    assert not any(layer.name.startswith("ag") for layer in plain.layers)


def test_the_network_is_fully_convolutional():
    params = replace(variant_params("siamese-l2e-6-g1.0"), base_filters=4, levels=3)
    model = inference_model(build_detector(params))
    assert input_multiple(params) == 4
    x = np.random.default_rng(0).uniform(size=(1, 12, 20, 8)).astype(np.float32)
    out = model.predict_on_batch(detector_inputs(x, x, "siamese"))
    assert out.shape == (1, 12, 20, 8, 1)
    assert np.all((out >= 0) & (out <= 1))


def test_l2_regularisation_adds_a_penalty():
    params = replace(variant_params("siamese-l2e-4-g1.0"), base_filters=4, levels=2)
    assert build_detector(params).losses
    assert not build_detector(replace(params, l2=0.0)).losses


def test_group_normalisation_is_selectable_and_batchnorm_is_absent():
    params = replace(variant_params("siamese-l2e-6-g1.0"), base_filters=4, levels=2, normalization="group")
    model = build_detector(params)
    kinds = {type(layer).__name__ for layer in model.get_layer("encoder").layers}
    assert "GroupNormalization" in kinds and "BatchNormalization" not in kinds
    with pytest.raises(ValueError, match="normalization"):
        build_detector(replace(params, normalization="batch"))
