"""Presets and the model.json round trip of hyper-parameters (no TensorFlow needed)."""

import subprocess
import sys

from bids_lesionchange.model.params import PRESETS, hyperparams_from_mapping


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
    code = "import sys, bids_lesionchange.model.params, bids_lesionchange.model.io; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
