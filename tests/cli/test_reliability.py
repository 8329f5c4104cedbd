"""Issue 16: every bad input ends in one sentence naming the file (or option) and the fix, as early
as possible, and never stops the other subjects; tests assert what the code guarantees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bids_lesionchange.cli import parser as cli_parser
from bids_lesionchange.cli.parser import parse_args


def _fake_model(path: Path) -> Path:
    """A model directory that passes the parse-time checks (its weights are not a network)."""
    from bids_lesionchange.model.io import sha256_of
    from bids_lesionchange.model.params import HyperParams

    path.mkdir(parents=True)
    (path / "detector.weights.h5").write_bytes(b"weights")
    (path / "model.json").write_text(json.dumps({
        "format": "bids_lesionchange-model", "format_version": 1, "weights": "detector.weights.h5",
        "hyperparams": HyperParams().to_dict(),
        "sha256": {"detector.weights.h5": sha256_of(path / "detector.weights.h5")}}))
    return path


def _usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        parse_args([str(a) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# ------------------------------------------------------------------------ item 7: early refusals
def test_a_tampered_model_is_refused_before_any_subject_starts(tiny_bids, tmp_path, capsys):
    model = _fake_model(tmp_path / "model")
    assert parse_args([str(tiny_bids), str(tmp_path / "out"), "participant", "--model", str(model)])
    (model / "detector.weights.h5").write_bytes(b"weightz")  # same size, other content
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", model])
    assert f"{model / 'detector.weights.h5'}: SHA-256 mismatch" in err
    assert "restore the original model directory" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "work-bids_lesionchange").exists()


def test_a_model_with_a_missing_listed_file_or_bad_hyperparams_is_refused(tiny_bids, tmp_path, capsys):
    model = _fake_model(tmp_path / "model")
    spec = json.loads((model / "model.json").read_text())
    spec["sha256"]["vae.weights.h5"] = "0" * 64
    (model / "model.json").write_text(json.dumps(spec))
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", model])
    assert f"{model / 'vae.weights.h5'}: listed in model.json but missing" in err

    del spec["sha256"]["vae.weights.h5"]
    spec["hyperparams"]["detector"]["levels"] = 0
    (model / "model.json").write_text(json.dumps(spec))
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", model])
    assert "has bad hyperparams" in err and "'detector.levels' = 0 is out of range" in err


def test_the_shipped_model_is_verified_too(tiny_bids, tmp_path, capsys, monkeypatch):
    shipped = _fake_model(tmp_path / "default_model")
    monkeypatch.setattr(cli_parser, "DEFAULT_MODEL_DIR", shipped)
    assert parse_args([str(tiny_bids), str(tmp_path / "out"), "participant"]).model_dir == shipped
    (shipped / "detector.weights.h5").write_bytes(b"")
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant"])
    assert "SHA-256 mismatch" in err and "reinstall bids_lesionchange" in err


@pytest.mark.parametrize("name", ["detector.keras", "model.h5", "weights.weights.h5"])
def test_a_file_given_to_model_asks_for_a_directory(tiny_bids, tmp_path, capsys, name):
    (tmp_path / name).write_bytes(b"PK\x03\x04")
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", tmp_path / name])
    assert f"expected a model directory (with model.json) but {tmp_path / name} is a file" in err
    assert "does not exist" not in err and "pass --model with the directory written by" in err


def test_model_json_given_to_model_names_its_folder(tiny_bids, tmp_path, capsys):
    model = _fake_model(tmp_path / "model")
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", model / "model.json"])
    assert f"pass its folder {model} instead" in err


@pytest.mark.parametrize("option, value, message", [
    ("--mem-gb", "-1", "must be a finite number above 0"),
    ("--mem-gb", "0", "must be a finite number above 0"),
    ("--mem-gb", "nan", "must be a finite number above 0"),
    ("--mem-gb", "inf", "must be a finite number above 0"),
    ("--mem-gb", "lots", "is not a number"),
    ("--nprocs", "0", "must be 1 or more"),
    ("--nprocs", "-2", "must be 1 or more"),
    ("--omp-nthreads", "0", "must be 1 or more"),
    ("--device", "gpu", "unknown device 'gpu': use cpu, cuda or cuda:N"),
])
def test_resource_options_are_range_checked_at_parse_time(tiny_bids, tmp_path, capsys, option, value,
                                                          message):
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", f"{option}={value}"])
    assert option in err and message in err


def test_mem_gb_within_range_reaches_the_settings(tiny_bids, tmp_path):
    model = _fake_model(tmp_path / "model")
    s = parse_args([str(tiny_bids), str(tmp_path / "out"), "participant", "--model", str(model),
                    "--mem-gb", "3.5", "--nprocs", "1", "--omp-nthreads", "1"])
    assert (s.mem_gb, s.nprocs, s.omp_nthreads) == (3.5, 1, 1)


@pytest.mark.parametrize("device, visible, message", [
    ("cuda", 0, "--device cuda: PyTorch sees no CUDA GPU on this machine; use --device cpu"),
    ("cuda:1", 0, "--device cuda:1: PyTorch sees no CUDA GPU on this machine"),
    ("cuda:2", 2, "--device cuda:2: PyTorch sees 2 CUDA device(s) (cuda:0 to cuda:1); pick one of them"),
    ("cuda", None, "--device cuda needs PyTorch (HD-BET), which is not installed; use --device cpu"),
])
def test_a_cuda_device_without_a_gpu_is_refused_before_the_run(tiny_bids, tmp_path, capsys, monkeypatch,
                                                              device, visible, message):
    model = _fake_model(tmp_path / "model")
    monkeypatch.setattr(cli_parser, "visible_cuda_devices", lambda: visible)
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", model,
                                "--device", device])
    assert message in err


def test_a_visible_cuda_device_or_no_hdbet_is_accepted(tiny_bids, tmp_path, monkeypatch):
    model = _fake_model(tmp_path / "model")
    monkeypatch.setattr(cli_parser, "visible_cuda_devices", lambda: 1)
    argv = [str(tiny_bids), str(tmp_path / "out"), "participant", "--model", str(model)]
    assert parse_args(argv + ["--device", "cuda:0"]).device == "cuda:0"
    monkeypatch.setattr(cli_parser, "visible_cuda_devices", lambda: 0)
    # the threshold skull stripping runs no HD-BET, so the device is never used
    assert parse_args(argv + ["--device", "cuda", "--skull-strip", "threshold"]).device == "cuda"


def test_this_machine_is_asked_for_real(tiny_bids, tmp_path, capsys):
    """Without monkeypatching: on a machine without a GPU --device cuda is refused."""
    count = cli_parser.visible_cuda_devices()
    if count:
        pytest.skip("this machine has a CUDA GPU")
    model = _fake_model(tmp_path / "model")
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", model,
                                "--device", "cuda"])
    assert err.startswith("bids_lesionchange: error: --device cuda") and "use --device cpu" in err
