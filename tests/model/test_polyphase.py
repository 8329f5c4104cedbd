"""Polyphase convolutions: the same function as the layers they stand for, on any weights."""

from dataclasses import replace

import numpy as np
import pytest

from bids_lesionchange.model._backend import keras
from bids_lesionchange.model.detector import build_detector, detector_inputs, inference_model
from bids_lesionchange.model.polyphase import (PolyphaseConv3D, model_input_multiple, phase_placement, phases_for,
                                               polyphase_model)
from bids_lesionchange.params import DetectorParams


@pytest.mark.parametrize("cin, cout, dilation, phases", [
    (2, 4, 1, 4), (4, 4, 2, 4), (8, 8, 1, 2), (24, 4, 1, 4), (8, 8, 2, 2), (3, 2, 1, 2)])
def test_a_polyphase_convolution_equals_the_convolution(cin, cout, dilation, phases):
    rng = np.random.default_rng(cin + 10 * cout + dilation)
    conv = keras.layers.Conv3D(cout, 3, padding="same", dilation_rate=dilation, activation="relu")
    x = rng.standard_normal((2, 9, 7, 4 * phases, cin)).astype(np.float32)
    conv(x)  # build
    conv.kernel.assign(rng.standard_normal(tuple(conv.kernel.shape)).astype(np.float32))
    conv.bias.assign(rng.standard_normal(cout).astype(np.float32))  # a bias, so slices that mix up show
    expected = conv(x).numpy()
    got = PolyphaseConv3D(conv, phases)(x).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert (expected > 0).mean() > 0.2  # the ReLU left values to compare


def test_the_placement_shifts_each_phase_by_one_slice_and_keeps_the_dilation():
    placement = phase_placement(4, 2)  # taps 2 * 2 + 4 = 8
    assert placement.shape == (4, 3, 8)
    for p in range(4):
        assert [int(np.argmax(placement[p, t])) for t in range(3)] == [p, p + 2, p + 4]
    assert placement.sum() == 12  # every tap of every phase placed exactly once


def test_phases_fill_sixteen_output_channels_within_the_input_multiple():
    assert phases_for(4, (3, 3, 3), (1, 1, 1), 4) == 4
    assert phases_for(8, (3, 3, 3), (1, 1, 1), 4) == 2
    assert phases_for(4, (3, 3, 3), (1, 1, 1), 2) == 2  # level 1 of a 3-level net: sides only even
    assert phases_for(16, (3, 3, 3), (1, 1, 1), 4) == 1
    assert phases_for(4, (1, 1, 1), (1, 1, 1), 4) == 1  # 1x1x1: nothing to share
    assert phases_for(4, (3, 3, 3), (1, 1, 1), 1) == 1


@pytest.mark.parametrize("params", [
    DetectorParams(base_filters=4, levels=3),
    replace(DetectorParams(base_filters=4, levels=2), architecture="unet"),
    replace(DetectorParams(base_filters=8, levels=3), inception=False),
    replace(DetectorParams(base_filters=4, levels=3), normalization="group"),
], ids=["siamese", "unet", "plain-blocks", "group-norm"])
def test_the_polyphase_model_predicts_what_the_model_predicts(params, make_brain):
    model = inference_model(build_detector(params))
    rng = np.random.default_rng(3)
    for weight in model.weights:  # random weights of a realistic size, so that every layer matters
        weight.assign(rng.normal(0, 0.3, tuple(weight.shape)).astype(np.float32))
    multiple = model_input_multiple(model)
    assert multiple == 2 ** (params.levels - 1)
    fast = polyphase_model(model, multiple)
    assert fast is not model and len(fast.polyphase_layers) >= 3
    assert all(name.startswith(("enc", "dec")) for name in fast.polyphase_layers)
    baseline, followup, _ = make_brain((24, 20, 16))
    inputs = detector_inputs(followup[None], baseline[None], params.architecture)
    inputs = inputs if len(inputs) > 1 else inputs[0]
    expected = np.asarray(model(inputs, training=False))
    got = np.asarray(fast(inputs, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert expected.std() > 1e-3  # not a constant map that any wiring would reproduce
    assert {id(w) for w in fast.weights} == {id(w) for w in model.weights}  # shared, never copied


def test_inference_runs_the_polyphase_graph_and_it_matches_the_plain_one(make_brain):
    from bids_lesionchange.model.inference import _run, forward_function

    model = build_detector(DetectorParams(base_filters=4, levels=3))
    baseline, followup, _ = make_brain((24, 20, 16))
    inputs = detector_inputs(followup[None], baseline[None], "siamese")
    plain = np.asarray(forward_function(model, polyphase=False)(*inputs))[0, ..., 0]
    np.testing.assert_allclose(_run(model, inputs), plain, rtol=1e-4, atol=1e-6)
    fast = forward_function(model)
    assert fast is not forward_function(model, polyphase=False) and fast is forward_function(model, polyphase=True)
    graph = fast.get_concrete_function(*[tf_spec(x) for x in inputs]).graph
    strides = {tuple(op.get_attr("strides")) for op in graph.get_operations() if op.type == "Conv3D"}
    assert (1, 1, 1, 4, 1) in strides  # the thin full-resolution convolutions run four slices at a time


def tf_spec(x):
    from bids_lesionchange.model._backend import tf

    return tf.TensorSpec((None, None, None, None, x.shape[-1]), tf.float32)
