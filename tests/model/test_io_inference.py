"""Model directory save/load, refusal of unsafe or modified models, and full-brain inference."""

import json
from dataclasses import replace

import numpy as np
import pytest

from bids_lesionchange.errors import InputError
from bids_lesionchange.model.detector import build_detector
from bids_lesionchange.model.inference import predict_change
from bids_lesionchange.model.io import (DETECTOR_WEIGHTS, MODEL_FORMAT, load_detector, load_keras_model_file,
                                        write_model_spec)
from bids_lesionchange.params import DetectorParams, HyperParams


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A randomly initialised tiny siamese detector saved as a model directory."""
    model_dir = tmp_path_factory.mktemp("model")
    hyper = HyperParams(detector=DetectorParams(base_filters=4, levels=3))
    model = build_detector(hyper.detector)
    model.save_weights(str(model_dir / DETECTOR_WEIGHTS))
    write_model_spec(model_dir, hyper, software={"test": "1"})
    return model_dir, model


def test_save_then_load_gives_identical_predictions(saved_model, make_brain):
    model_dir, original = saved_model
    spec = json.loads((model_dir / "model.json").read_text())
    assert spec["format"] == MODEL_FORMAT and spec["format_version"] == 1
    assert spec["weights"] == DETECTOR_WEIGHTS and spec["input_multiple"] == 4
    loaded, loaded_spec = load_detector(model_dir)
    baseline, followup, mask = make_brain((24, 28, 20))
    before = predict_change(original, loaded_spec, baseline, followup, mask)
    after = predict_change(loaded, loaded_spec, baseline, followup, mask)
    np.testing.assert_array_equal(before, after)
    assert before.dtype == np.float32 and before.shape == baseline.shape
    assert np.all(before[~mask] == 0) and before[mask].max() > 0


def test_bfloat16_loading_keeps_the_weights_and_the_global_policy(saved_model, make_brain):
    import keras

    model_dir, _ = saved_model
    fp32, spec = load_detector(model_dir)
    bf16, _ = load_detector(model_dir, precision="bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the policy is set only while building
    convs = [layer for layer in bf16.layers if isinstance(layer, keras.layers.Conv3D) and layer.name != "change"]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs)
    assert bf16.get_layer("change").compute_dtype == "float32"  # the probability stays float32
    for a, b in zip(fp32.weights, bf16.weights):  # weights are stored in float32, unchanged
        assert b.dtype == "float32"
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    baseline, followup, mask = make_brain((24, 28, 20))
    p32 = predict_change(fp32, spec, baseline, followup, mask)
    p16 = predict_change(bf16, spec, baseline, followup, mask)
    assert p16.dtype == np.float32 and np.all(p16[~mask] == 0)
    assert np.abs(p32 - p16).max() < 0.1  # bfloat16 keeps 8 bits of mantissa: close, not equal
    with pytest.raises(ValueError, match="precision"):
        load_detector(model_dir, precision="float16")


def test_a_modified_weights_file_is_refused(saved_model, tmp_path):
    import shutil

    model_dir, _ = saved_model
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    with open(copy / DETECTOR_WEIGHTS, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(InputError, match="SHA-256 mismatch"):
        load_detector(copy)


def test_a_keras_file_with_a_lambda_layer_is_refused(tmp_path):
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    path = tmp_path / "evil.keras"
    model.save(path)
    with pytest.raises(InputError, match="Lambda layer"):
        load_keras_model_file(path)
    with pytest.raises(InputError, match="Lambda layer"):
        load_detector(path)


def test_a_directory_without_model_json_is_refused(tmp_path):
    with pytest.raises(InputError, match="model.json"):
        load_detector(tmp_path)


def test_sliding_windows_agree_with_the_full_volume(saved_model, make_brain):
    model_dir, _ = saved_model
    model, spec = load_detector(model_dir)
    baseline, followup, mask = make_brain((40, 36, 32), seed=3)
    full = predict_change(model, spec, baseline, followup, mask)
    windows = predict_change(model, spec, baseline, followup, mask, window=24, overlap=0.5)
    assert np.all(windows[~mask] == 0)
    # windows see less context near their borders; blending keeps the maps close
    assert np.abs(full - windows).mean() < 0.01
    assert np.corrcoef(full[mask], windows[mask])[0, 1] > 0.95


def test_unet_variant_predicts_through_the_same_function(tmp_path, make_brain):
    hyper = HyperParams(detector=replace(DetectorParams(base_filters=4, levels=2), architecture="unet"))
    model = build_detector(hyper.detector)
    model.save_weights(str(tmp_path / DETECTOR_WEIGHTS))
    write_model_spec(tmp_path, hyper, software={})
    loaded, spec = load_detector(tmp_path)
    baseline, followup, mask = make_brain((18, 18, 18))
    out = predict_change(loaded, spec, baseline, followup, mask)
    assert out.shape == (18, 18, 18) and np.all(out[~mask] == 0)
