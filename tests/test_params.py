"""Presets and the model.json round trip of hyper-parameters (no TensorFlow needed)."""

import subprocess
import sys

from bids_lesionchange.params import PRESETS, hyperparams_from_mapping


def test_paper_preset_follows_section_4():
    paper = PRESETS["paper"]
    assert paper.vae.crop_shape == (192, 192, 16) and paper.vae.iterations == 200
    assert paper.vae.crops_per_iteration == 4096 and paper.vae.batch_size == 2
    assert paper.vae.learning_rate == 5e-5 and paper.vae.delta == 5.0 and paper.vae.pooling == "maxpool"
    assert paper.training.crop_shape == (192, 192, 16) and paper.training.iterations == 60
    assert paper.training.pairs_per_iteration == 100 and paper.training.batch_size == 2
    assert paper.training.learning_rate == 2e-4 and paper.training.decay == 1e-3
    assert paper.supermix.tau == 0.98 and (paper.supermix.n_segments_min, paper.supermix.n_segments_max) == (200, 5000)
    assert paper.detector.alpha == 0.75 and paper.detector.gamma_intermediate == 0.75


def test_cpu_preset_crops_fit_both_networks():
    cpu = PRESETS["cpu"]
    assert all(s % 2 ** (cpu.detector.levels - 1) == 0 for s in cpu.training.crop_shape)
    assert all(s % 2 ** (cpu.vae.levels - 1) == 0 for s in cpu.vae.crop_shape)


def test_to_dict_round_trips_through_model_json_reader():
    from bids_lesionchange.model.io import hyperparams_from_dict

    params = hyperparams_from_mapping("paper", {"detector": {"l2": 1e-4, "gamma_final": 0.75}})
    assert hyperparams_from_dict(params.to_dict()) == params


def test_params_and_io_modules_do_not_import_tensorflow():
    code = "import sys, bids_lesionchange.params, bids_lesionchange.model.io; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# ------------------------------------------------------------------ range checks when a config is read
import math  # noqa: E402

import pytest  # noqa: E402

from bids_lesionchange.params import RANGES, validate_hyperparams  # noqa: E402


def _skip_unless_field(key: str) -> None:
    section, name = key.split(".")
    if not hasattr(getattr(PRESETS["cpu"], section), name):
        pytest.skip(f"{key} is not a field of this version")


@pytest.mark.parametrize("overrides, key, allowed", [
    ({"vae": {"levels": 0}}, "vae.levels", "a whole number of 1 or more"),
    ({"detector": {"levels": 1}}, "detector.levels", "a whole number of 2 or more"),
    ({"training": {"batch_size": -3}}, "training.batch_size", "a whole number of 1 or more"),
    ({"vae": {"batch_size": 0}}, "vae.batch_size", "a whole number of 1 or more"),
    ({"training": {"learning_rate": math.nan}}, "training.learning_rate", "a number above 0"),
    ({"vae": {"learning_rate": math.inf}}, "vae.learning_rate", "a number above 0"),
    ({"vae": {"learning_rate": 0.0}}, "vae.learning_rate", "a number above 0"),
    ({"training": {"iterations": -1}}, "training.iterations", "a whole number of 0 or more"),
    ({"vae": {"iterations": -5}}, "vae.iterations", "a whole number of 0 or more"),
    ({"supermix": {"tau": 1.01}}, "supermix.tau", "a number in [0, 1]"),
    ({"supermix": {"tau": -0.1}}, "supermix.tau", "a number in [0, 1]"),
    ({"detector": {"alpha": 2}}, "detector.alpha", "a number in [0, 1]"),
    ({"training": {"validation_fraction": 1.0}}, "training.validation_fraction", "a number in [0, 1)"),
    ({"training": {"min_brain_fraction": 1.5}}, "training.min_brain_fraction", "a number in [0, 1]"),
    ({"training": {"threshold": 0}}, "training.threshold", "a number in (0, 1)"),
    ({"training": {"crop_shape": [64, 0, 64]}}, "training.crop_shape", "every side must be a whole number of 1 or more"),
    ({"supermix": {"lesion_fraction": 1.5}}, "supermix.lesion_fraction", "a number in [0, 1]"),
    ({"supermix": {"lesion_fraction": -0.5}}, "supermix.lesion_fraction", "a number in [0, 1]"),
    ({"supermix": {"lesion_segments_min": 0}}, "supermix.lesion_segments_min", "a whole number of 1 or more"),
    ({"supermix": {"lesion_segments_max": -2}}, "supermix.lesion_segments_max", "a whole number of 1 or more"),
    ({"supermix": {"lesion_contrast_min": 0.8}}, "supermix.lesion_contrast_min", "a number of 1 or more"),
    ({"supermix": {"lesion_contrast_max": 0.9}}, "supermix.lesion_contrast_max", "a number of 1 or more"),
    ({"supermix": {"max_lesions": 0}}, "supermix.max_lesions", "a whole number of 1 or more"),
])
def test_out_of_range_values_are_refused_with_key_and_range(overrides, key, allowed):
    _skip_unless_field(key)
    with pytest.raises(ValueError) as err:
        hyperparams_from_mapping("cpu", overrides)
    message = str(err.value)
    assert message.startswith(f"'{key}' = ") and "out of range" in message
    assert message.endswith(allowed)


@pytest.mark.parametrize("section, low, high, low_value, high_value", [
    ("supermix", "n_segments_min", "n_segments_max", 6000, 5000),
    ("supermix", "lesion_segments_min", "lesion_segments_max", 40000, 30000),
    ("supermix", "lesion_contrast_min", "lesion_contrast_max", 2.5, 2.0),
])
def test_a_minimum_above_its_maximum_is_refused(section, low, high, low_value, high_value):
    _skip_unless_field(f"{section}.{high}")
    with pytest.raises(ValueError, match=rf"'{section}.{low}' = .* exceeds '{section}.{high}' = "
                                         r".*: the minimum must not exceed the maximum"):
        hyperparams_from_mapping("cpu", {section: {low: low_value, high: high_value}})
    equal = hyperparams_from_mapping("cpu", {section: {low: high_value, high: high_value}})
    assert getattr(getattr(equal, section), low) == high_value  # min == max is allowed


@pytest.mark.parametrize("overrides, message", [
    ({"training": {"batch_size": 2.5}}, "bad value for 'training.batch_size': expected a whole number, got 2.5"),
    ({"training": {"batch_size": math.inf}}, "bad value for 'training.batch_size': expected a whole number"),
    ({"training": {"batch_size": "two"}}, "bad value for 'training.batch_size': expected a number"),
    ({"training": {"crop_shape": [64, 64]}}, "bad value for 'training.crop_shape': expected a list of 3 numbers"),
    ({"training": {"crop_shape": 64}}, "bad value for 'training.crop_shape': expected a list of 3 numbers"),
    ({"vae": {"pooling": "avg"}}, "'vae.pooling' = 'avg' is not allowed: choose one of maxpool, strided"),
    ({"detector": {"loss": "dice"}}, "'detector.loss' = 'dice' is not allowed: choose one of focal_tversky, bce"),
    ({"training": {"intensity_normalisation": "zscore"}},
     "'training.intensity_normalisation' = 'zscore' is not allowed: choose one of wm-peak, percentile"),
    ({"training": {"crop_shape": [62, 64, 64]}}, "'training.crop_shape' = (62, 64, 64) does not fit the "
                                                 "networks: every side must be a multiple of 4"),
])
def test_wrong_types_choices_and_shapes_are_refused(overrides, message):
    with pytest.raises(ValueError) as err:
        hyperparams_from_mapping("cpu", overrides)
    assert str(err.value).startswith(message)


def test_presets_boundaries_and_every_field_have_a_rule():
    for preset in PRESETS.values():
        validate_hyperparams(preset)
    ok = hyperparams_from_mapping("cpu", {"supermix": {"tau": 1.0}, "training": {"iterations": 0},
                                          "detector": {"alpha": 0.0}})
    assert ok.supermix.tau == 1.0 and ok.training.iterations == 0
    import dataclasses

    for section in ("vae", "supermix", "detector", "training"):
        for f in dataclasses.fields(getattr(PRESETS["cpu"], section)):
            if isinstance(getattr(getattr(PRESETS["cpu"], section), f.name), bool):
                continue
            assert f"{section}.{f.name}" in RANGES, f"{section}.{f.name} has no range"


def test_the_cli_refuses_an_out_of_range_config_at_parse_time(tmp_path):
    import json

    (tmp_path / "bids").mkdir()
    (tmp_path / "bids" / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.9.0"}))
    config = tmp_path / "c.yaml"
    config.write_text("vae:\n  learning_rate: .nan\n")
    proc = subprocess.run([sys.executable, "-m", "bids_lesionchange.cli.run", str(tmp_path / "bids"),
                           str(tmp_path / "out"), "group", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{config}: 'vae.learning_rate' = nan is out of range: it must be a number above 0" in proc.stderr
