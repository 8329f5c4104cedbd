"""Self-supervised training: the VAE, then the change detector on SuperMix pairs, then the model directory.

Stages (each resumable from ``work_dir``):

1. VAE: ``vae.iterations`` x ``vae.crops_per_iteration`` random brain crops of either session,
   Adam(lr = ``vae.learning_rate``), L1 + KL.
2. Detector: ``training.iterations`` x ``training.pairs_per_iteration`` synthetic samples, each
   a random crop of a training pair where the follow-up (or, with ``swap_sessions``, half of the
   time the baseline) is SuperMix-ed with its perturbed VAE reconstruction; Adam with the legacy
   Keras inverse-time decay lr_t = lr / (1 + decay * t). After every iteration: validation on a
   fixed set of synthetic samples from held-out pairs (focal Tversky loss, voxel Dice, lesion
   LTPR/PPV at threshold kappa), a checkpoint, a TensorBoard summary and a training-log row.
3. The model directory (see :mod:`bids_lesionchange.model.io`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from bids_lesionchange.atomic import atomic_copy, atomic_save, atomic_write_json, atomic_write_text
from bids_lesionchange.errors import InputError
from bids_lesionchange.model._backend import keras, software_versions, tf
from bids_lesionchange.model.detector import build_detector, detector_inputs, inference_model, input_multiple
from bids_lesionchange.model.io import DETECTOR_WEIGHTS, MODEL_SPEC, VAE_WEIGHTS, sha256_of, write_model_spec
from bids_lesionchange.model.losses import detector_loss, focal_tversky_loss
from bids_lesionchange.model.vae import VAE, vae_input_multiple
from bids_lesionchange.model.validation import dice, lesion_counts, summarise
from bids_lesionchange.params import HyperParams
from bids_lesionchange.synth.crops import (PairVolumes, brain_pair, random_crop_corner,
                                           synthetic_change_sample)
from bids_lesionchange.synth.supermix import save_supermix_examples

LOGGER = logging.getLogger(__name__)
STEP = "train"
LOG_COLUMNS = ("stage", "iteration", "step", "loss", "l1", "kl", "final_loss", "val_ftl", "val_dice",
               "val_ltpr", "val_ppv", "learning_rate", "seconds")


# ----------------------------------------------------------------------------------------- data
def min_pair_shape(hyperparams: HyperParams) -> tuple[int, int, int]:
    """The least shape of a training pair: the larger of the detector's and the VAE's crop per axis
    (pairs are padded to it, and cut to the brain with half of it as margin)."""
    return tuple(max(a, b) for a, b in zip(hyperparams.training.crop_shape, hyperparams.vae.crop_shape))


def load_pairs(pairs: Sequence[tuple], min_shape: tuple[int, int, int], *,
               cut_to_brain: bool = True) -> list[PairVolumes]:
    """Read preprocessed (baseline, follow-up, mask, name) NIfTI pairs, cut to the brain with half of
    ``min_shape`` of margin (:func:`~bids_lesionchange.synth.crops.brain_box`: the same crops; with
    ``cut_to_brain``, the default; False keeps the whole grid, e.g. to measure the gain) and padded to
    at least ``min_shape``."""
    import nibabel as nib

    volumes = []
    for baseline_path, followup_path, mask_path, name in pairs:
        arrays = []
        for path in (baseline_path, followup_path, mask_path):
            try:
                arrays.append(np.asanyarray(nib.load(str(path)).dataobj, dtype=np.float32))
            except (OSError, ValueError) as err:
                raise InputError(path, STEP, f"cannot read this image ({err}); re-run preprocessing") from None
        baseline, followup, mask = arrays
        if not baseline.shape == followup.shape == mask.shape or baseline.ndim != 3:
            raise InputError(followup_path, STEP, f"pair {name}: baseline {baseline.shape}, follow-up "
                             f"{followup.shape} and mask {mask.shape} must share one 3D grid; re-run "
                             "preprocessing so both sessions are registered to a common space")
        try:
            volumes.append(brain_pair(name, baseline, followup, mask, min_shape, cut_to_brain=cut_to_brain))
        except ValueError:
            raise InputError(mask_path, STEP, f"pair {name}: the brain mask is (nearly) empty; check skull stripping") from None
    return volumes


def split_pairs(n_pairs: int, fraction: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Return (training, validation) pair indices; at least one of each when there are two pairs or more."""
    order = list(rng.permutation(n_pairs))
    if n_pairs < 2:
        return order, order
    n_val = min(max(int(round(fraction * n_pairs)), 1), n_pairs - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


# ------------------------------------------------------------------------------ checkpointing
def _save_npz_atomic(path: Path, arrays, prefix: str) -> None:
    """Save ``arrays`` as ``<prefix><i>`` entries of the ``.npz`` file ``path``, atomically."""
    entries = {f"{prefix}{i}": np.asarray(a) for i, a in enumerate(arrays)}
    atomic_save(lambda name: np.savez(name, **entries), path)


def _save_optimizer(optimizer, path: Path) -> None:
    _save_npz_atomic(path, optimizer.variables, "arr_")


def _load_optimizer(optimizer, variables, path: Path) -> None:
    optimizer.build(variables)
    with np.load(path) as data:
        values = [data[f"arr_{i}"] for i in range(len(data.files))]
    if len(values) != len(optimizer.variables):
        raise ValueError(f"optimizer checkpoint {path} does not match the model")
    for var, value in zip(optimizer.variables, values):
        var.assign(value)


class _Log:
    """The TSV training log, kept in the work directory so a resumed run continues it."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.rows: list[dict] = []
        if resume and path.is_file():
            with open(path, newline="") as handle:
                self.rows = list(csv.DictReader(handle, delimiter="\t"))

    def add(self, row: dict) -> None:
        self.rows = [r for r in self.rows if not (r["stage"] == row["stage"] and int(r["iteration"]) == row["iteration"])]
        self.rows.append({k: ("" if row.get(k) is None else row.get(k)) for k in LOG_COLUMNS})
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=LOG_COLUMNS, delimiter="\t")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, text.getvalue())


def _read_state(path: Path, resume: bool) -> dict:
    if resume and path.is_file():
        return json.loads(path.read_text())
    return {}


def _scalar(name: str, value: float, step: int) -> None:
    """Write a TensorBoard scalar with core TensorFlow only (the tensorboard package is optional)."""
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step, metadata=metadata)


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.6g}"


# ---------------------------------------------------------------------------------- VAE stage
def train_vae(volumes: list[PairVolumes], hyperparams: HyperParams, work_dir: Path, *, resume: bool,
              progress: bool, seed: int, log: _Log, writer) -> VAE:
    """Train (or resume) the VAE on random brain crops of both sessions of the training pairs."""
    params = hyperparams.vae
    vae_dir = work_dir / "vae"
    vae_dir.mkdir(parents=True, exist_ok=True)
    vae = VAE(params, seed=seed, graph_mode=hyperparams.training.graph_mode)
    state = _read_state(vae_dir / "state.json", resume)
    start = int(state.get("iteration", 0))
    if start:
        vae.load_weights(vae_dir / VAE_WEIGHTS)
        _load_optimizer(vae.optimizer, vae.trainable_variables, vae_dir / "optimizer.npz")
        LOGGER.info("resuming VAE training at iteration %d of %d", start, params.iterations)
    steps = max(params.crops_per_iteration // params.batch_size, 1)
    from tqdm import tqdm

    bar = tqdm(total=params.iterations * steps, initial=start * steps, desc="VAE", unit="step",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    for iteration in range(start, params.iterations):
        rng = np.random.default_rng([seed, 1, iteration])
        began = time.time()
        losses = []
        for _ in range(steps):
            batch = []
            for _ in range(params.batch_size):
                pair = volumes[rng.integers(len(volumes))]
                image = pair.followup if rng.uniform() < 0.5 else pair.baseline
                corner = random_crop_corner(pair.brain_mask, params.crop_shape, rng)
                batch.append(image[tuple(slice(c, c + k) for c, k in zip(corner, params.crop_shape))])
            losses.append(vae.train_step(np.stack(batch)))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]['loss']:.4f}")
        mean = {k: float(np.mean([l[k] for l in losses])) for k in losses[0]}
        with writer.as_default():
            for key, value in mean.items():
                _scalar(f"vae/{key}", value, iteration + 1)
        log.add({"stage": "vae", "iteration": iteration + 1, "step": (iteration + 1) * steps,
                 "loss": _fmt(mean["loss"]), "l1": _fmt(mean["l1"]), "kl": _fmt(mean["kl"]),
                 "learning_rate": _fmt(params.learning_rate), "seconds": f"{time.time() - began:.1f}"})
        atomic_save(vae.save_weights, vae_dir / VAE_WEIGHTS)
        _save_optimizer(vae.optimizer, vae_dir / "optimizer.npz")
        atomic_write_json(vae_dir / "state.json", {"iteration": iteration + 1}, sort_keys=True)
    bar.close()
    if start >= params.iterations and params.iterations > 0:
        vae.load_weights(vae_dir / VAE_WEIGHTS)
    return vae


# ----------------------------------------------------------------------------- detector stage
def prefetched(make, count: int, enabled: bool = True):
    """Yield ``make()`` ``count`` times, making the next item in a background thread while the caller
    uses this one (with ``enabled``); the calls run one after another in the order they are yielded,
    so a ``make`` that draws from a generator draws exactly what it draws without the thread.

    Detector training spends about a third of each step making its SuperMix samples on one core
    (SLIC, the VAE), while the step itself leaves part of the second core idle: the two overlap.
    An error in ``make`` is raised where its item would have been yielded.
    """
    if not enabled:
        for _ in range(count):
            yield make()
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        future = pool.submit(make) if count > 0 else None
        for i in range(count):
            item = future.result()
            future = pool.submit(make) if i + 1 < count else None
            yield item


class DetectorTrainer:
    """The detector, its optimiser and a compiled training step."""

    def __init__(self, hyperparams: HyperParams, seed: int = 0):
        self.params = hyperparams.detector
        self.training = hyperparams.training
        keras.utils.set_random_seed(seed)
        self.model = build_detector(self.params)
        schedule = keras.optimizers.schedules.InverseTimeDecay(
            self.training.learning_rate, decay_steps=1, decay_rate=self.training.decay)
        self.optimizer = keras.optimizers.Adam(learning_rate=schedule)
        # Adam's moments exist before the first step: a tf.function that creates variables on its
        # first call is traced twice (about 3.5 s of a 20-step adaptation on 2 cores).
        self.optimizer.build(self.model.trainable_variables)
        self._step = (tf.function(self._step_eager, reduce_retracing=True) if self.training.graph_mode
                      else self._step_eager)
        self._predict = inference_model(self.model)
        self.averaging = float(self.training.weight_averaging)
        self.average = ([np.array(v.numpy()) for v in self.model.trainable_variables]
                        if self.averaging > 0 else None)

    def update_average(self) -> None:
        """Fold the current weights into the moving average (no-op without ``weight_averaging``)."""
        if self.average is None:
            return
        d = self.averaging
        for mean, variable in zip(self.average, self.model.trainable_variables):
            mean *= d
            mean += (1.0 - d) * variable.numpy()

    def save_average(self, path: Path) -> None:
        """Write the moving average (no-op without ``weight_averaging``)."""
        if self.average is not None:
            _save_npz_atomic(path, self.average, "w")

    def load_average(self, path: Path) -> None:
        """Read the moving average written by :meth:`save_average`, if averaging and the file exists."""
        if self.average is not None and path.is_file():
            with np.load(path) as saved:
                self.average = [np.array(saved[f"w{i}"]) for i in range(len(self.average))]

    @contextlib.contextmanager
    def averaged(self):
        """Context manager: the model holds the averaged weights inside, its own weights after."""
        if self.average is None:
            yield
            return
        current = [np.array(v.numpy()) for v in self.model.trainable_variables]
        for mean, variable in zip(self.average, self.model.trainable_variables):
            variable.assign(mean)
        try:
            yield
        finally:
            for value, variable in zip(current, self.model.trainable_variables):
                variable.assign(value)

    def _step_eager(self, inputs, label):
        with tf.GradientTape() as tape:
            outputs = self.model(inputs, training=True)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            total, final = detector_loss(self.params, label, outputs)
            regular = tf.add_n(self.model.losses) if self.model.losses else 0.0
            objective = total + regular
        variables = self.model.trainable_variables
        grads = tape.gradient(objective, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return objective, final

    def train_step(self, mixed: np.ndarray, reference: np.ndarray, label: np.ndarray) -> dict[str, float]:
        """Run one Adam step on a batch (batch, X, Y, Z) of x', x^ and labels; return its losses."""
        inputs = [tf.convert_to_tensor(a) for a in detector_inputs(mixed, reference, self.params.architecture)]
        objective, final = self._step(inputs, tf.convert_to_tensor(label.astype(np.float32)))
        self.update_average()
        return {"loss": float(objective), "final_loss": float(final)}

    def predict(self, mixed: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Return the final change probability (batch, X, Y, Z) of a batch."""
        inputs = detector_inputs(mixed, reference, self.params.architecture)
        inputs = inputs if len(inputs) > 1 else inputs[0]
        if self.training.graph_mode:
            out = self._predict.predict_on_batch(inputs)
        else:
            out = self._predict(inputs, training=False)
        return np.asarray(out)[..., 0]

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.learning_rate)


def validate(trainer: DetectorTrainer, samples: list[dict], hyperparams: HyperParams) -> dict[str, float]:
    """Score the detector on fixed synthetic samples: focal Tversky loss, Dice, lesion LTPR and PPV."""
    training = hyperparams.training
    probabilities, labels, counts = [], [], []
    for sample in samples:
        prob = trainer.predict(sample["mixed"][None], sample["reference"][None])[0] * sample["brain"]
        probabilities.append(prob)
        labels.append(sample["label"])
        counts.append(lesion_counts(sample["label"], prob > training.threshold, training.min_blob_size))
    prob = np.stack(probabilities)
    label = np.stack(labels).astype(np.float32)
    ftl = float(focal_tversky_loss(label, prob, alpha=hyperparams.detector.alpha,
                                   gamma=hyperparams.detector.gamma_final))
    lesions = summarise(counts)
    return {"val_ftl": ftl, "val_dice": dice(label > 0.5, prob > training.threshold),
            "val_ltpr": lesions["ltpr"], "val_ppv": lesions["ppv"], "val_true_lesions": lesions["n_true"]}


def _check_shapes(hyperparams: HyperParams) -> None:
    multiple = np.lcm(input_multiple(hyperparams.detector), vae_input_multiple(hyperparams.vae))
    for name, shape in (("training.crop_shape", hyperparams.training.crop_shape),
                        ("vae.crop_shape", hyperparams.vae.crop_shape)):
        need = multiple if name.startswith("training") else vae_input_multiple(hyperparams.vae)
        if any(s % need for s in shape):
            raise ValueError(f"{name} {shape}: every side must be a multiple of {need} "
                             "(2**(levels-1) of the detector and of the VAE)")


def train_change_detector(pairs: Sequence[tuple], out_dir, hyperparams: HyperParams, *, work_dir,
                          resume: bool = True, progress: bool = True, seed: int = 0,
                          command: str | None = None, prefetch: bool = True) -> Path:
    """Train the VAE and the change detector on NoChange pairs and write the model directory.

    Parameters
    ----------
    pairs : sequence of (baseline_path, followup_path, brain_mask_path, pair_name)
        PREPROCESSED images in a common space per pair (float32 in [0, 1], zero outside the brain).
    out_dir : path of the model directory to write (created; existing model files are replaced).
    hyperparams : HyperParams (``hyperparams_from_mapping(preset, overrides)``)
    work_dir : path for checkpoints (``vae/``, ``detector/``), ``training_log.tsv`` and
        ``tensorboard/``; a re-run with ``resume=True`` continues from the last completed iteration.
    resume, progress, seed : continue from checkpoints; show tqdm bars on stderr; seed of all
        random draws (crops, SuperMix, VAE noise, weight initialisation, validation split).
    command : the command line recorded in model.json and the model card (default: sys.argv).
    prefetch : make each detector batch while the previous one trains (:func:`prefetched`: the same
        batches in the same order; False for one thread, as before, e.g. to measure the gain).

    Returns
    -------
    Path of the model directory.
    """
    if not pairs:
        raise ValueError("train_change_detector needs at least one NoChange pair")
    _check_shapes(hyperparams)
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for stale in ("vae", "detector", "training_log.tsv"):
            target = work_dir / stale
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    started = time.time()
    training = hyperparams.training
    volumes = load_pairs(pairs, min_pair_shape(hyperparams))
    train_idx, val_idx = split_pairs(len(volumes), training.validation_fraction, np.random.default_rng([seed, 0]))
    train_pairs = [volumes[i] for i in train_idx]
    val_pairs = [volumes[i] for i in val_idx]
    LOGGER.info("training on %d pairs, validating on %d (%s)", len(train_pairs), len(val_pairs),
                ", ".join(p.name for p in val_pairs))
    log = _Log(work_dir / "training_log.tsv", resume)
    writer = tf.summary.create_file_writer(str(work_dir / "tensorboard"))

    vae = train_vae(train_pairs, hyperparams, work_dir, resume=resume, progress=progress, seed=seed,
                    log=log, writer=writer)

    def reconstruct(volume, rng):
        return vae.reconstruct(volume, rng)

    val_rng = np.random.default_rng([seed, 3])
    val_samples = [synthetic_change_sample(val_pairs[i % len(val_pairs)], training.crop_shape, reconstruct, val_rng,
                                           hyperparams.supermix, swap_sessions=bool(i % 2) and training.swap_sessions,
                                           min_brain_fraction=training.min_brain_fraction)
                   for i in range(training.validation_crops)]

    det_dir = work_dir / "detector"
    det_dir.mkdir(parents=True, exist_ok=True)
    trainer = DetectorTrainer(hyperparams, seed=seed)
    state = _read_state(det_dir / "state.json", resume)
    start = int(state.get("iteration", 0))
    if start:
        trainer.model.load_weights(str(det_dir / DETECTOR_WEIGHTS))
        _load_optimizer(trainer.optimizer, trainer.model.trainable_variables, det_dir / "optimizer.npz")
        trainer.load_average(det_dir / "average.npz")
        LOGGER.info("resuming detector training at iteration %d of %d", start, training.iterations)
    steps = max(training.pairs_per_iteration // training.batch_size, 1)
    from tqdm import tqdm

    bar = tqdm(total=training.iterations * steps, initial=start * steps, desc="detector", unit="step",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    metrics = dict(state.get("metrics", {}))
    for iteration in range(start, training.iterations):
        rng = np.random.default_rng([seed, 2, iteration])
        began = time.time()
        losses = []

        def make_batch(rng=rng):
            return [synthetic_change_sample(train_pairs[rng.integers(len(train_pairs))], training.crop_shape,
                                            reconstruct, rng, hyperparams.supermix,
                                            swap_sessions=training.swap_sessions and rng.uniform() < 0.5,
                                            min_brain_fraction=training.min_brain_fraction,
                                            intensity_augmentation=training.intensity_augmentation,
                                            acquisition_augmentation=training.acquisition_augmentation)
                    for _ in range(training.batch_size)]

        # the next batch is made while this one trains (the same batches, in the same order)
        for batch in prefetched(make_batch, steps, enabled=prefetch):
            losses.append(trainer.train_step(np.stack([b["mixed"] for b in batch]),
                                             np.stack([b["reference"] for b in batch]),
                                             np.stack([b["label"] for b in batch])))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]['loss']:.4f}")
        with trainer.averaged():
            metrics = validate(trainer, val_samples, hyperparams)
        mean = {k: float(np.mean([l[k] for l in losses])) for k in losses[0]}
        with writer.as_default():
            for key, value in {**mean, **metrics, "learning_rate": trainer.learning_rate}.items():
                _scalar(f"detector/{key}", value, iteration + 1)
        writer.flush()
        log.add({"stage": "detector", "iteration": iteration + 1, "step": (iteration + 1) * steps,
                 "loss": _fmt(mean["loss"]), "final_loss": _fmt(mean["final_loss"]),
                 **{k: _fmt(metrics[k]) for k in ("val_ftl", "val_dice", "val_ltpr", "val_ppv")},
                 "learning_rate": _fmt(trainer.learning_rate), "seconds": f"{time.time() - began:.1f}"})
        LOGGER.info("iteration %d: loss %.4f, val FTL %.4f, Dice %.3f, LTPR %.3f, PPV %.3f", iteration + 1,
                    mean["loss"], metrics["val_ftl"], metrics["val_dice"], metrics["val_ltpr"], metrics["val_ppv"])
        atomic_save(trainer.model.save_weights, det_dir / DETECTOR_WEIGHTS)
        _save_optimizer(trainer.optimizer, det_dir / "optimizer.npz")
        trainer.save_average(det_dir / "average.npz")
        atomic_write_json(det_dir / "state.json", {"iteration": iteration + 1, "metrics": metrics}, sort_keys=True)
    bar.close()
    if start >= training.iterations and training.iterations > 0:
        trainer.model.load_weights(str(det_dir / DETECTOR_WEIGHTS))
        trainer.load_average(det_dir / "average.npz")
    if not metrics:
        with trainer.averaged():
            metrics = validate(trainer, val_samples, hyperparams)
    writer.close()

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MODEL_SPEC).unlink(missing_ok=True)  # an interrupted write must not look complete
    with trainer.averaged():  # the model written is the weight average when there is one
        atomic_save(trainer.model.save_weights, out_dir / DETECTOR_WEIGHTS)
    atomic_save(vae.save_weights, out_dir / VAE_WEIGHTS)
    if log.path.is_file():
        atomic_copy(log.path, out_dir / "training_log.tsv")
    examples = [dict(baseline=s["reference"], followup=s["original"], recon=s["recon"], mixed=s["mixed"],
                     label=s["label"], title=f"held-out pair, {int(s['label'].sum())} changed voxels")
                for s in val_samples[:4]]
    save_supermix_examples(examples, out_dir / "supermix_examples")
    summary = {
        "training_pairs": [p.name for p in train_pairs],
        "validation_pairs": [p.name for p in val_pairs],
        "validation": {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in metrics.items()},
        "detector_parameters": int(trainer.model.count_params()),
        "seed": seed,
        "wall_seconds": round(time.time() - started, 1),
        "command": command or " ".join(sys.argv),
    }
    spec = write_model_spec(out_dir, hyperparams, software=software_versions(), training=summary)
    _write_model_card(out_dir, spec, hyperparams, summary)
    LOGGER.info("wrote the model directory %s", out_dir)
    return out_dir


def _write_model_card(out_dir: Path, spec: dict, hyperparams: HyperParams, summary: dict) -> None:
    val = summary["validation"]

    def show(key):
        value = val.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        "# bids_lesionchange change detector",
        "",
        "Self-supervised siamese 3D U-net (To et al. 2021) trained on NoChange pairs with SuperMix",
        "synthetic lesion changes. Outputs a change probability; threshold it at kappa (paper: 0.1).",
        "",
        "## Training data",
        f"- training pairs ({len(summary['training_pairs'])}): {', '.join(summary['training_pairs'])}",
        f"- held-out validation pairs ({len(summary['validation_pairs'])}): {', '.join(summary['validation_pairs'])}",
        f"- self-pairs (a scan against a simulated rescan of itself, `--self-pairs`): "
        f"{sum('selfpair' in p for p in summary['training_pairs'] + summary['validation_pairs'])} of "
        f"{len(summary['training_pairs']) + len(summary['validation_pairs'])} pairs",
        f"- intensity normalisation of the inputs: `{hyperparams.training.intensity_normalisation}`",
        f"- preset: `{hyperparams.preset}`; architecture `{hyperparams.detector.architecture}`, "
        f"{summary['detector_parameters']} parameters, input sides multiple of {spec['input_multiple']}",
        f"- seed {summary['seed']}, wall time {summary['wall_seconds']} s",
        "",
        "## Final validation (synthetic changes on held-out pairs)",
        f"- focal Tversky loss: {show('val_ftl')}",
        f"- voxel Dice (p > {hyperparams.training.threshold}): {show('val_dice')}",
        f"- lesion LTPR: {show('val_ltpr')}; lesion PPV: {show('val_ppv')} "
        f"(IoU >= 0.01, blobs >= {hyperparams.training.min_blob_size} voxels)",
        "",
        "These figures score synthetic SuperMix changes, not real lesion changes.",
        "",
        "## Hyper-parameters",
        "```json",
        json.dumps(hyperparams.to_dict(), indent=2),
        "```",
        "",
        "## Software",
        *[f"- {k} {v}" for k, v in spec["software"].items()],
        "",
        "## SHA-256",
        *[f"- `{name}`: `{digest}`" for name, digest in spec["sha256"].items()],
        "",
        "## Command",
        f"`{summary['command']}`",
        "",
    ]
    atomic_write_text(out_dir / "model_card.md", "\n".join(lines))
