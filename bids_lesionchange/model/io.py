"""The model directory: write it after training, load it for inference without running its code.

Layout (checked by ``cli.parser.check_model_dir``)::

    model.json              {"format": "bids_lesionchange-model", "format_version": 1,
                             "weights": "detector.weights.h5", "vae_weights": "vae.weights.h5",
                             "hyperparams": {...}, "sha256": {file: hex}, "input_multiple": int,
                             "architecture": str, "software": {...}, "training": {...}}
    detector.weights.h5     detector weights (Keras 3 .weights.h5)
    vae.weights.h5          VAE weights (encoder + decoder)
    model_card.md           training data, preset, validation figures, versions, sha256, command
    training_log.tsv        one row per iteration of VAE and detector training
    supermix_examples/*.png

Loading rebuilds the network from ``hyperparams`` with :func:`build_detector` and reads weights
only; every file listed under ``sha256`` must match. Whole-model ``.keras`` files are only opened
with Keras ``safe_mode=True``, which refuses Lambda layers (code stored in the file).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bids_lesionchange.atomic import atomic_write_json
from bids_lesionchange.errors import InputError
from bids_lesionchange.params import HyperParams, hyperparams_from_mapping

MODEL_FORMAT = "bids_lesionchange-model"
MODEL_FORMAT_VERSION = 1
MODEL_SPEC = "model.json"
DETECTOR_WEIGHTS = "detector.weights.h5"
VAE_WEIGHTS = "vae.weights.h5"
STEP = "load model"


def sha256_of(path: str | Path) -> str:
    """Return the hex SHA-256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hyperparams_from_dict(data: dict[str, Any]) -> HyperParams:
    """Rebuild :class:`HyperParams` from ``HyperParams.to_dict()`` output (as stored in model.json)."""
    data = dict(data)
    preset = data.pop("preset", "cpu")
    return hyperparams_from_mapping(preset, data)


def write_model_spec(model_dir: Path, hyperparams: HyperParams, *, software: dict[str, str],
                     training: dict[str, Any] | None = None) -> dict:
    """Write ``model.json`` for the weights already in ``model_dir``, with their SHA-256 digests."""
    from bids_lesionchange.model.detector import input_multiple

    model_dir = Path(model_dir)
    digests = {name: sha256_of(model_dir / name) for name in (DETECTOR_WEIGHTS, VAE_WEIGHTS)
               if (model_dir / name).is_file()}
    if DETECTOR_WEIGHTS not in digests:
        raise FileNotFoundError(f"{model_dir / DETECTOR_WEIGHTS} must be written before model.json")
    spec = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "weights": DETECTOR_WEIGHTS,
        "vae_weights": VAE_WEIGHTS if VAE_WEIGHTS in digests else None,
        "architecture": hyperparams.detector.architecture,
        "input_multiple": input_multiple(hyperparams.detector),
        "inputs": ("x1 = (follow-up, |follow-up - baseline|), x2 = (baseline, |follow-up - baseline|)"
                   if hyperparams.detector.architecture == "siamese" else "x = (follow-up, baseline)"),
        "output": "change probability of the final output (deep-supervision outputs are training-only)",
        "hyperparams": hyperparams.to_dict(),
        "sha256": digests,
        "software": dict(software),
        "training": dict(training or {}),
    }
    atomic_write_json(model_dir / MODEL_SPEC, spec, sort_keys=True)
    return spec


def read_model_spec(model_dir: str | Path, *, verify: bool = True) -> dict:
    """Read and check ``model.json``; with ``verify`` every listed file must match its SHA-256.

    Raises
    ------
    InputError naming the file and saying how to fix it.
    """
    model_dir = Path(model_dir)
    spec_path = model_dir / MODEL_SPEC
    if not spec_path.is_file():
        raise InputError(model_dir, STEP, f"no {MODEL_SPEC} here; pass the directory written by "
                         "'group --mode train'")
    try:
        spec = json.loads(spec_path.read_text())
    except ValueError as err:
        raise InputError(spec_path, STEP, f"not valid JSON ({err}); re-train or restore the file") from None
    if not isinstance(spec, dict) or spec.get("format") != MODEL_FORMAT:
        raise InputError(spec_path, STEP, f"not a {MODEL_FORMAT} description (\"format\" differs)")
    if spec.get("format_version") != MODEL_FORMAT_VERSION:
        raise InputError(spec_path, STEP, f"format_version {spec.get('format_version')} is not supported "
                         f"(this version reads {MODEL_FORMAT_VERSION}); use a matching bids_lesionchange")
    digests = spec.get("sha256") or {}
    if spec.get("weights") not in digests:
        raise InputError(spec_path, STEP, "the weights file has no SHA-256 entry; the model directory "
                         "is incomplete, re-train it")
    if verify:
        for name, expected in digests.items():
            path = model_dir / name
            if Path(name).name != name:
                raise InputError(spec_path, STEP, f"file name '{name}' must not contain a directory")
            if not path.is_file():
                raise InputError(path, STEP, "listed in model.json but missing; restore the model directory")
            actual = sha256_of(path)
            if actual != expected:
                raise InputError(path, STEP, f"SHA-256 mismatch (expected {expected}, found {actual}): "
                                 "the file was modified or corrupted; restore the original model directory")
    return spec


def load_keras_model_file(path: str | Path):
    """Open a whole-model ``.keras`` file with Keras ``safe_mode=True`` (never runs stored code).

    Raises
    ------
    InputError if the file holds a Lambda layer (or anything else safe mode refuses).
    """
    from bids_lesionchange.model._backend import keras

    path = Path(path)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as err:
        text = str(err)
        if "safe_mode" in text or "Lambda" in text or "lambda" in text:
            raise InputError(path, STEP, "refused: the file holds a Lambda layer, i.e. Python code that "
                             "would run on loading; use a bids_lesionchange model directory "
                             "(model.json + detector.weights.h5) instead") from None
        raise InputError(path, STEP, f"Keras could not read the model ({text})") from None


PRECISIONS = ("float32", "bfloat16")


def load_detector(model_dir: str | Path, *, precision: str = "float32"):
    """Rebuild the detector from ``model.json`` and load its verified weights.

    Parameters
    ----------
    model_dir : directory written by :func:`save_model_dir` / ``train_change_detector``.
        A ``.keras`` file is opened in safe mode only to explain why it is refused.
    precision : ``"float32"`` (the app's), or ``"bfloat16"``: Keras' ``mixed_bfloat16`` policy
        (float32 weights, bfloat16 convolutions, float32 output layer), fast only on CPUs with
        AVX512_BF16 or AMX; measured against float32 by ``benchmarks/precision.py``.

    Returns
    -------
    (model, spec) : keras.Model computing only the final change probability
        (inputs as in ``spec["inputs"]``), and the model.json dictionary.
    """
    from bids_lesionchange.model._backend import keras
    from bids_lesionchange.model.detector import build_detector, inference_model

    model_dir = Path(model_dir)
    if model_dir.is_file() and model_dir.suffix == ".keras":
        load_keras_model_file(model_dir)
        raise InputError(model_dir, STEP, "a .keras file is not a bids_lesionchange model directory; "
                         "pass the directory written by 'group --mode train'")
    spec = read_model_spec(model_dir)
    try:
        hyperparams = hyperparams_from_dict(spec["hyperparams"])
    except (KeyError, ValueError, TypeError) as err:
        raise InputError(model_dir / MODEL_SPEC, STEP, f"bad hyperparams ({err}); re-train the model") from None
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bfloat16":
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            model = build_detector(hyperparams.detector)
        finally:
            keras.config.set_dtype_policy(previous)
    else:
        model = build_detector(hyperparams.detector)
    try:
        model.load_weights(str(model_dir / spec["weights"]))
    except (ValueError, OSError) as err:
        raise InputError(model_dir / spec["weights"], STEP, f"weights do not fit the architecture in "
                         f"model.json ({err}); re-train the model") from None
    return inference_model(model), spec


def load_vae(model_dir: str | Path):
    """Return the trained VAE of a model directory (for SuperMix examples and further training)."""
    from bids_lesionchange.model.vae import VAE

    model_dir = Path(model_dir)
    spec = read_model_spec(model_dir)
    if not spec.get("vae_weights"):
        raise InputError(model_dir, STEP, "this model directory holds no VAE weights")
    vae = VAE(hyperparams_from_dict(spec["hyperparams"]).vae)
    vae.load_weights(model_dir / spec["vae_weights"])
    return vae
