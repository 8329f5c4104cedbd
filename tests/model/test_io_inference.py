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


def test_a_bfloat16_model_gets_the_plain_graph_where_onednn_cannot_run_bfloat16(saved_model, monkeypatch):
    """AVX2-only CPUs: TensorFlow's fallback kernels have no strided dilated Conv3D (the polyphase graph's)."""
    from bids_lesionchange.model import inference

    model_dir, _ = saved_model
    fp32, _ = load_detector(model_dir)
    bf16, _ = load_detector(model_dir, precision="bfloat16")
    monkeypatch.setattr(inference, "onednn_enabled", lambda: True)
    monkeypatch.setattr(inference, "onednn_runs_bfloat16", lambda: False)
    assert inference.forward_function(bf16, polyphase=True) is inference.forward_function(bf16, polyphase=False)
    assert inference.forward_function(fp32, polyphase=True) is not inference.forward_function(fp32, polyphase=False)
    monkeypatch.setattr(inference, "onednn_runs_bfloat16", lambda: True)
    assert inference.forward_function(bf16, polyphase=True) is not inference.forward_function(bf16, polyphase=False)


def test_without_onednn_every_model_gets_the_plain_graph(saved_model, monkeypatch):
    """TF_ENABLE_ONEDNN_OPTS=0: TensorFlow's Eigen convolutions have no strided dilated Conv3D, in float32 too."""
    from bids_lesionchange.model import inference

    model_dir, _ = saved_model
    fp32, _ = load_detector(model_dir)
    monkeypatch.setattr(inference, "onednn_runs_bfloat16", lambda: True)
    monkeypatch.setattr(inference, "onednn_enabled", lambda: False)
    assert inference.forward_function(fp32, polyphase=True) is inference.forward_function(fp32, polyphase=False)


def test_the_compute_record_says_which_graph_precision_and_cap_computed_the_map(saved_model, monkeypatch):
    from bids_lesionchange.model import inference
    from bids_lesionchange.model._backend import keras, tf

    model_dir, _ = saved_model
    fp32, _ = load_detector(model_dir)
    bf16, _ = load_detector(model_dir, precision="bfloat16")
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    monkeypatch.setattr(inference, "onednn_enabled", lambda: True)
    monkeypatch.setattr(inference, "onednn_runs_bfloat16", lambda: False)
    record = inference.compute_environment(fp32, 2)
    assert record["graph"] == "polyphase" and record["precision"] == "float32" and record["threads"] == 2
    assert record["onednn"] is True and record["onednn_max_cpu_isa"] == "AVX2"
    assert record["tensorflow"] == tf.__version__ and record["keras"] == keras.__version__
    assert isinstance(record["vector_extensions"], list) and record["cpu"]
    # the graph forward_function gives each model, as the record says
    bf16_record = inference.compute_environment(bf16)
    assert bf16_record["graph"] == "plain" and bf16_record["precision"] == "bfloat16"
    assert inference.forward_function(bf16) is inference.forward_function(bf16, polyphase=False)
    monkeypatch.setattr(inference, "onednn_enabled", lambda: False)
    assert inference.compute_environment(fp32)["graph"] == "plain"
    assert inference.compute_environment(fp32)["onednn"] is False


@pytest.mark.parametrize("value, expected", [(None, True), ("1", True), ("true", True), ("0", False),
                                             ("False", False)])
def test_onednn_enabled_reads_tensorflows_switch(monkeypatch, value, expected):
    from bids_lesionchange.model.inference import onednn_enabled

    if value is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", value)
    assert onednn_enabled() is expected


@pytest.mark.parametrize("flags, expected", [("fpu sse avx2 fma", False), ("fpu avx2 avx512f avx512_bf16", True),
                                             (None, False)])
def test_onednn_runs_bfloat16_only_with_avx512(flags, expected):
    from bids_lesionchange.model.inference import onednn_runs_bfloat16

    cpuinfo = "processor\t: 0\n" + ("" if flags is None else f"flags\t\t: {flags}\n")
    assert onednn_runs_bfloat16(cpuinfo) is expected


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


def test_the_forward_graph_is_traced_once_for_every_shape_and_matches_keras(saved_model, make_brain):
    from bids_lesionchange.model.detector import detector_inputs, inference_model
    from bids_lesionchange.model.inference import forward_function

    model_dir, _ = saved_model
    loaded, spec = load_detector(model_dir)
    for shape in ((24, 28, 20), (32, 24, 28)):
        baseline, followup, mask = make_brain(shape)
        inputs = detector_inputs(followup[None], baseline[None], "siamese")
        expected = np.asarray(inference_model(loaded).predict_on_batch(inputs))
        got = np.asarray(forward_function(loaded)(*inputs))
        np.testing.assert_allclose(got, expected, atol=1e-6)
    # one trace for both shapes (Keras' predict_on_batch traced again for each new shape)
    assert forward_function(loaded).experimental_get_tracing_count() == 1


def test_predict_files_loads_a_model_once_and_again_when_its_weights_change(saved_model, make_brain, tmp_path,
                                                                             monkeypatch):
    import os
    import shutil

    import nibabel as nib

    from bids_lesionchange.model import files, io

    model_dir = tmp_path / "model"
    shutil.copytree(saved_model[0], model_dir)
    paths = []
    for name, data in zip(("b", "f", "m"), make_brain((24, 28, 20))):
        paths.append(str(tmp_path / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4)), paths[-1])
    loads = []
    original = io.load_detector
    monkeypatch.setattr(io, "load_detector", lambda *a, **k: loads.append(a) or original(*a, **k))
    files._LOADED.clear()
    first = files.predict_files(str(model_dir), *paths, str(tmp_path / "p1.nii.gz"))
    files.predict_files(str(model_dir), *paths, str(tmp_path / "p2.nii.gz"))
    assert len(loads) == 1
    np.testing.assert_array_equal(np.asarray(nib.load(first).dataobj), np.asarray(nib.load(str(tmp_path / "p2.nii.gz")).dataobj))
    weights = model_dir / DETECTOR_WEIGHTS
    info = weights.stat()
    os.utime(weights, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))  # new weights at the same path
    files.predict_files(str(model_dir), *paths, str(tmp_path / "p3.nii.gz"))
    assert len(loads) == 2
    files._LOADED.clear()
