"""Self-supervised adaptation: fine-tune a copy of a detector on the very scans it will analyse.

An extension of the paper (no label and no real change is ever used). Each session given is paired
with itself: both members get an acquisition nuisance of their own (noise, blur or one thick-slice
protocol at their own slice offsets, a sub-voxel shift: :func:`bids_lesionchange.synth.crops.
acquisition_nuisance`), so the pair differs the way two scans of an unchanged brain differ on this
scanner, and SuperMix (lesion-like when the model was trained with it) adds the synthetic change.
A few Adam steps at a fraction of the training learning rate then teach the model this scanner's
texture and contrast as "no change". The adapted weights are then interpolated with the base
model's, ``base + INTERPOLATION x (fine-tuned - base)`` (weight-space ensembling, WiSE-FT:
Wortsman et al., CVPR 2022): a few steps on a handful of crops move every weight, and the
interpolation keeps what the base model knew about lesions while taking the step towards the
scanner. Between two real sessions there may be real change, so the baseline and the follow-up
are never paired with each other.

The adapted model is a model directory like any other (``participant --model``), with the base
model, the sessions, the steps, the seed and the time in its ``model.json`` under
``training.adaptation``.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from bids_lesionchange.atomic import atomic_copy, atomic_save
from bids_lesionchange.errors import InputError
from bids_lesionchange.model._backend import software_versions
from bids_lesionchange.model.io import (DETECTOR_WEIGHTS, MODEL_SPEC, VAE_WEIGHTS, hyperparams_from_dict, load_vae,
                                        read_model_spec, write_model_spec)
from bids_lesionchange.model.training import DetectorTrainer, prefetched
from bids_lesionchange.synth.crops import PairVolumes, brain_pair, synthetic_change_sample

LOGGER = logging.getLogger(__name__)
STEP = "adapt"
LEARNING_RATE_FACTOR = 0.25  # adaptation lr = this x the model's training learning rate
MIN_NUISANCE = 0.03  # acquisition nuisance of the self-pairs when the model was trained without any
DEFAULT_STEPS = 20
INTERPOLATION = 0.5  # the adapted weights = base + INTERPOLATION x (fine-tuned - base)


def interpolate_weights(base: Sequence[np.ndarray], tuned: Sequence[np.ndarray],
                        factor: float = INTERPOLATION) -> list[np.ndarray]:
    """``base + factor x (tuned - base)`` per array (0: the base model, 1: the fine-tuned one)."""
    if not 0.0 <= factor <= 1.0:
        raise ValueError(f"the interpolation factor must be in [0, 1], got {factor}")
    if len(base) != len(tuned) or any(np.shape(b) != np.shape(t) for b, t in zip(base, tuned)):
        raise ValueError("the base and the fine-tuned weights differ in number or shape")
    return [(np.asarray(b) + factor * (np.asarray(t) - np.asarray(b))).astype(np.asarray(b).dtype)
            for b, t in zip(base, tuned)]


def session_self_pairs(sessions: Sequence[tuple[str, np.ndarray, np.ndarray]],
                       min_shape: tuple[int, ...]) -> list[PairVolumes]:
    """One self-pair per (name, image, brain mask): the session against itself, cut to the brain
    (:func:`~bids_lesionchange.synth.crops.brain_box`: the same crops) and padded to ``min_shape``.

    The nuisance that makes the two members differ is drawn per sample by
    :func:`synthetic_change_sample` (``acquisition_augmentation``).
    """
    pairs = []
    for name, image, mask in sessions:
        try:
            pairs.append(brain_pair(name, image, None, mask, min_shape))  # the session against itself
        except ValueError as err:
            raise ValueError(f"session {name}: {err}") from None
    return pairs


def adapt_detector(model_dir, sessions: Sequence[tuple[str, np.ndarray, np.ndarray]], out_dir, *,
                   steps: int = DEFAULT_STEPS, seed: int = 0, progress: bool = False,
                   description: str = "") -> Path:
    """Fine-tune a copy of the detector in ``model_dir`` on self-pairs of ``sessions``; write ``out_dir``.

    Parameters
    ----------
    model_dir : a model directory with detector and VAE weights (the VAE makes the SuperMix change).
    sessions : sequence of (name, preprocessed image, brain mask) in [0, 1], as the model expects
        them (same normalisation); at least one.
    out_dir : the adapted model directory (created; replaced if present).
    steps : Adam steps (batches of ``training.batch_size`` crops); 0 copies the model unchanged.
    seed : seed of the crops, the nuisance, SuperMix and the VAE noise.
    description : a sentence for the model card (e.g. which pair or cohort).

    Returns
    -------
    Path of the adapted model directory.
    """
    if steps < 0:
        raise ValueError(f"adaptation steps must be >= 0, got {steps}")
    if not sessions:
        raise ValueError("adaptation needs at least one session")
    spec = read_model_spec(Path(model_dir))
    training = hyperparams_from_dict(spec["hyperparams"]).training
    pairs = session_self_pairs(sessions, tuple(training.crop_shape))
    return fine_tune_detector(model_dir, pairs, out_dir, steps=steps, seed=seed, progress=progress,
                              description=description, record={"sessions": [str(n) for n, _, _ in sessions]})


def fine_tune_detector(model_dir, pairs: Sequence[PairVolumes], out_dir, *, steps: int, seed: int = 0,
                       progress: bool = False, description: str = "",
                       learning_rate_factor: float | None = None,
                       interpolation: float | None = None, focus_fraction: float = 0.0,
                       swap_sessions: bool = False, record: dict | None = None) -> Path:
    """Fine-tune a copy of the detector in ``model_dir`` on NoChange ``pairs`` with SuperMix; write ``out_dir``.

    Each step trains on ``training.batch_size`` synthetic change samples (:func:`synthetic_change_sample`
    with the model's own SuperMix and nuisance settings, acquisition nuisance at least
    ``MIN_NUISANCE``) at ``learning_rate_factor`` (default ``LEARNING_RATE_FACTOR``) x the model's
    learning rate; the weights written are ``base + interpolation x (tuned - base)`` (default
    ``INTERPOLATION``). ``focus_fraction`` of the crops are centred on a voxel of
    the pair's ``focus`` (e.g. :func:`hard_negatives`) where it has any; ``swap_sessions`` makes either
    member the later one at random (two real sessions; a self-pair needs none). ``record`` is merged
    into ``model.json``'s ``training.adaptation``.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if steps < 0:
        raise ValueError(f"fine-tuning steps must be >= 0, got {steps}")
    if not pairs:
        raise ValueError("fine-tuning needs at least one pair")
    if not 0.0 <= focus_fraction <= 1.0:
        raise ValueError(f"focus_fraction must be in [0, 1], got {focus_fraction}")
    learning_rate_factor = LEARNING_RATE_FACTOR if learning_rate_factor is None else learning_rate_factor
    interpolation = INTERPOLATION if interpolation is None else interpolation
    spec = read_model_spec(model_dir)
    if not spec.get("vae_weights"):
        raise InputError(model_dir, STEP, "this model directory holds no VAE weights, which adaptation "
                         "needs to make synthetic changes; use a model written by 'group --mode train'")
    hyperparams = hyperparams_from_dict(spec["hyperparams"])
    training = hyperparams.training
    tuned = replace(hyperparams, training=replace(
        training, learning_rate=training.learning_rate * learning_rate_factor,
        acquisition_augmentation=max(training.acquisition_augmentation, MIN_NUISANCE)))
    began = time.time()
    trainer = DetectorTrainer(tuned, seed=seed)
    trainer.model.load_weights(str(model_dir / spec["weights"]))
    base_weights = [np.array(w) for w in trainer.model.get_weights()]
    vae = load_vae(model_dir) if steps else None
    rng = np.random.default_rng([seed, 5])
    losses = []
    from tqdm import tqdm

    def make_batch():
        return [synthetic_change_sample(pairs[rng.integers(len(pairs))], tuple(training.crop_shape),
                                        vae.reconstruct, rng, tuned.supermix,
                                        swap_sessions=swap_sessions and rng.uniform() < 0.5,
                                        min_brain_fraction=training.min_brain_fraction,
                                        intensity_augmentation=training.intensity_augmentation,
                                        acquisition_augmentation=tuned.training.acquisition_augmentation,
                                        focus_fraction=focus_fraction)
                for _ in range(training.batch_size)]

    bar = tqdm(total=steps, desc="adapt", unit="step", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    # the next batch is made while this one trains (the same batches, in the same order)
    for batch in prefetched(make_batch, steps):
        losses.append(trainer.train_step(np.stack([b["mixed"] for b in batch]),
                                         np.stack([b["reference"] for b in batch]),
                                         np.stack([b["label"] for b in batch]))["loss"])
        bar.update(1)
    bar.close()
    if steps:
        trainer.model.set_weights(interpolate_weights(base_weights, trainer.model.get_weights(), interpolation))
    seconds = time.time() - began
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MODEL_SPEC).unlink(missing_ok=True)  # an interrupted write must not look complete
    atomic_save(trainer.model.save_weights, out_dir / DETECTOR_WEIGHTS)
    atomic_copy(model_dir / spec["vae_weights"], out_dir / VAE_WEIGHTS)
    summary = dict(spec.get("training") or {})
    summary["adaptation"] = {
        "base_model": str(model_dir),
        "base_detector_sha256": spec["sha256"][spec["weights"]],
        "pairs": [p.name for p in pairs],
        "steps": int(steps),
        "seed": int(seed),
        "learning_rate": tuned.training.learning_rate,
        "interpolation": interpolation if steps else None,
        "acquisition_augmentation": tuned.training.acquisition_augmentation,
        "focus_fraction": focus_fraction,
        "mean_loss": float(np.mean(losses)) if losses else None,
        "seconds": round(seconds, 1),
        "description": description,
        **(record or {}),
    }
    write_model_spec(out_dir, hyperparams, software=software_versions(), training=summary)
    names = [p.name for p in pairs]
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    LOGGER.info("fine-tuned %s on %d NoChange pair(s) (%s) in %d steps (%.0f s): %s", model_dir, len(pairs),
                shown, steps, seconds, out_dir)
    return out_dir


def hard_negatives(model, spec: dict, pair: PairVolumes, threshold: float | None = None) -> np.ndarray:
    """Flat C-order indices of the brain voxels of a NoChange ``pair`` where ``model`` (from
    :func:`~bids_lesionchange.model.io.load_detector`) gives a change probability above ``threshold``
    (default: the model's κ): on a pair without change every one of them is a false positive, and
    :func:`fine_tune_detector` can centre crops on them (``PairVolumes.focus``)."""
    from bids_lesionchange.model.inference import predict_change

    if threshold is None:
        threshold = float(spec["hyperparams"]["training"]["threshold"])
    probability = predict_change(model, spec, pair.baseline, pair.followup, pair.brain_mask)
    return np.flatnonzero((probability > threshold) & pair.brain_mask)


def adapt_files(model_dir, images: Sequence[str], masks: Sequence[str], out_dir, *, steps: int = DEFAULT_STEPS,
                seed: int = 0, description: str = "", num_threads: int | None = None) -> Path:
    """:func:`adapt_detector` on NIfTI files (one brain mask per image, or one for all), with
    ``num_threads`` TensorFlow intra-op threads (None: TensorFlow's default)."""
    import nibabel as nib

    from bids_lesionchange.model._backend import tf

    if num_threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(num_threads))
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised in this process
            pass
    from nibabel.filebasedimages import ImageFileError

    if len(masks) not in (1, len(images)):
        raise ValueError("give one brain mask per image, or one for all")
    sessions = []
    for index, path in enumerate(images):
        mask_path = masks[index] if len(masks) > 1 else masks[0]
        try:
            image = np.asanyarray(nib.load(str(path)).dataobj, dtype=np.float32)
            mask = np.asanyarray(nib.load(str(mask_path)).dataobj) > 0
        except (OSError, ValueError, EOFError, ImageFileError) as err:
            raise InputError(path, STEP, f"cannot read this image or its mask ({err}); re-run preprocessing "
                             "(delete the work directory if the file is a cached intermediate)") from None
        if image.shape != mask.shape:
            raise InputError(path, STEP, f"image {image.shape} and brain mask {mask.shape} differ in shape; "
                             "re-run preprocessing")
        sessions.append((Path(str(path)).name.split(".nii")[0], image, mask))
    return adapt_detector(model_dir, sessions, out_dir, steps=steps, seed=seed, description=description)
