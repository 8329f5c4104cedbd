"""Full-brain inference of the change detector, whole-volume or by blended sliding windows."""

from __future__ import annotations

import itertools
import logging
import weakref

import numpy as np

from bids_lesionchange.model._backend import keras

LOGGER = logging.getLogger(__name__)


def brain_bounding_box(brain_mask: np.ndarray) -> tuple[slice, ...]:
    """Return the slices of the smallest box holding every brain voxel."""
    coords = np.argwhere(brain_mask)
    low, high = coords.min(axis=0), coords.max(axis=0) + 1
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def _pad_to_multiple(shape, multiple):
    return [(0, (-s) % multiple) for s in shape]


def _gaussian_weights(window: tuple[int, ...]) -> np.ndarray:
    """Return separable Gaussian blending weights (sigma = side / 8), highest at the window centre."""
    weights = np.ones(window, dtype=np.float32)
    for axis, side in enumerate(window):
        position = np.arange(side, dtype=np.float32) - (side - 1) / 2
        profile = np.exp(-0.5 * (position / (side / 8.0)) ** 2)
        profile = np.maximum(profile / profile.max(), 1e-3)
        shape = [1, 1, 1]
        shape[axis] = side
        weights = weights * profile.reshape(shape)
    return weights


def _window_starts(size: int, window: int, step: int) -> list[int]:
    if window >= size:
        return [0]
    starts = list(range(0, size - window, step)) + [size - window]
    return sorted(set(starts))


_FORWARD: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def onednn_runs_bfloat16(cpuinfo: str | None = None) -> bool:
    """Return True when TensorFlow's oneDNN kernels compute bfloat16 on this CPU (it needs AVX-512).

    Elsewhere (AVX2-only CPUs such as AMD Zen 3, non-x86, or oneDNN capped below AVX-512 by
    ``ONEDNN_MAX_CPU_ISA``: :mod:`bids_lesionchange.cpu`) TensorFlow falls back to its Eigen
    convolutions, which run the plain graph but not a strided dilated ``Conv3D`` as the polyphase
    graph has. Read from ``/proc/cpuinfo`` (``cpuinfo`` for tests); False where it is absent.
    """
    from bids_lesionchange.cpu import cpu_flags, onednn_allows

    return "avx512f" in cpu_flags(cpuinfo) and onednn_allows("AVX512_CORE")


def onednn_enabled() -> bool:
    """Return True unless ``TF_ENABLE_ONEDNN_OPTS`` turns TensorFlow's oneDNN kernels off.

    The app sets it to 1 before TensorFlow is imported (:mod:`bids_lesionchange.model._backend`) and
    keeps a user's own value; TensorFlow reads it as a boolean ("0"/"false" off).
    """
    import os

    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")


def _computes_in_bfloat16(model) -> bool:
    return any(getattr(layer, "compute_dtype", "float32") == "bfloat16" for layer in model.layers)


def _onednn_runs_convolutions(model) -> bool:
    """True when oneDNN, not Eigen, runs ``model``'s convolutions: oneDNN is on and, for a bfloat16
    model, computes bfloat16 on this CPU (the polyphase graph needs it, see :func:`forward_function`)."""
    if not onednn_enabled():
        return False
    return not _computes_in_bfloat16(model) or onednn_runs_bfloat16()


def compute_environment(model, num_threads: int | None = None) -> dict:
    """What computes ``model``'s maps in this process, for the change QC JSON.

    Maps of one pair computed on two CPUs can differ in the last digits (oneDNN orders its sums by
    the instruction set; the real NIH pair on one Zen 4, uncapped and with oneDNN capped at AVX2,
    which also runs HD-BET in float32: the same 9 changes, change masks of Dice 0.998), so the
    record says which CPU, vector extensions and oneDNN cap, which graph (:func:`forward_function`:
    polyphase where oneDNN runs the convolutions), which precision and how many threads, and the
    TensorFlow and Keras versions.
    """
    import platform

    from bids_lesionchange.cpu import VECTOR_EXTENSIONS, cpu_flags, cpu_model_name, onednn_isa_cap
    from bids_lesionchange.model._backend import tf

    return {"cpu": cpu_model_name(), "architecture": platform.machine(),
            "vector_extensions": sorted(cpu_flags() & VECTOR_EXTENSIONS),
            "onednn": onednn_enabled(), "onednn_max_cpu_isa": onednn_isa_cap(),
            "graph": "polyphase" if _onednn_runs_convolutions(model) else "plain",
            "precision": "bfloat16" if _computes_in_bfloat16(model) else "float32",
            "threads": int(num_threads) if num_threads else None,
            "tensorflow": tf.__version__, "keras": keras.__version__}


def forward_function(model, *, polyphase: bool = True):
    """The model's final output as one graph function for inputs of any spatial shape (cached per model).

    Traced once per model, not per input shape: Keras' ``predict_on_batch`` traced its graph anew
    for every new shape and every pruned copy of the model (about 1 s of a 2.8 s first pass at
    1 mm), so a process that predicts many pairs, or warmed up on a small input, paid it each time.

    ``polyphase`` (default): the thin full-resolution convolutions run as polyphase ones
    (:mod:`bids_lesionchange.model.polyphase`: the same function, faster); the inputs' sides are
    multiples of the model's input multiple, as the U-net needs anyway (``predict_change`` pads).
    The polyphase graph needs oneDNN's convolutions: where TensorFlow runs its Eigen ones instead
    (oneDNN turned off, :func:`onednn_enabled`; or a bfloat16 model on a CPU where oneDNN does not
    compute bfloat16, :func:`onednn_runs_bfloat16`), which have no strided dilated ``Conv3D``, the
    plain graph runs.
    """
    polyphase = polyphase and _onednn_runs_convolutions(model)
    functions = _FORWARD.setdefault(model, {})
    function = functions.get(polyphase)
    if function is None:
        from bids_lesionchange.model._backend import tf
        from bids_lesionchange.model.detector import inference_model
        from bids_lesionchange.model.polyphase import model_input_multiple, polyphase_model

        final = inference_model(model)
        if polyphase:
            final = polyphase_model(final, model_input_multiple(final))
        signature = [tf.TensorSpec((None, None, None, None, int(t.shape[-1])), tf.float32) for t in final.inputs]

        def forward(*inputs):
            return final(list(inputs) if len(inputs) > 1 else inputs[0], training=False)

        function = tf.function(forward, input_signature=signature, reduce_retracing=True, autograph=False)
        functions[polyphase] = function
    return function


def _run(model, inputs: list[np.ndarray], polyphase: bool = True) -> np.ndarray:
    out = forward_function(model, polyphase=polyphase)(*inputs)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return np.asarray(out)[0, ..., 0]


def predict_change(model, spec: dict, baseline: np.ndarray, followup: np.ndarray, brain_mask: np.ndarray,
                   *, window: int | tuple[int, int, int] | None = None, overlap: float = 0.25,
                   polyphase: bool = True) -> np.ndarray:
    """Return the change probability map of a preprocessed pair (float32, zero outside the brain).

    Parameters
    ----------
    model, spec : from :func:`bids_lesionchange.model.io.load_detector`
    baseline, followup : ndarray (X, Y, Z) float32 in [0, 1], registered, zero outside the brain
    brain_mask : ndarray (X, Y, Z) bool
    window : None for one pass over the brain's bounding box (padded to ``input_multiple``), or a
        window side (int or 3 ints, rounded up to ``input_multiple``) for sliding windows whose
        overlapping predictions are blended with Gaussian weights (bounded memory).
    overlap : fraction of a window shared with its neighbour, in [0, 0.9].
    polyphase : run the thin convolutions as polyphase ones (the default: the same function, faster;
        :mod:`bids_lesionchange.model.polyphase`), or the plain graph (for benchmarks).

    Returns
    -------
    ndarray float32 (X, Y, Z) in [0, 1].
    """
    from bids_lesionchange.model.detector import detector_inputs

    baseline = np.asarray(baseline, dtype=np.float32)
    followup = np.asarray(followup, dtype=np.float32)
    brain_mask = np.asarray(brain_mask, dtype=bool)
    if not (baseline.shape == followup.shape == brain_mask.shape) or baseline.ndim != 3:
        raise ValueError(f"baseline, follow-up and mask need one 3D shape, got {baseline.shape}, "
                         f"{followup.shape}, {brain_mask.shape}")
    if not 0 <= overlap <= 0.9:
        raise ValueError("overlap must be in [0, 0.9]")
    result = np.zeros(baseline.shape, dtype=np.float32)
    if not brain_mask.any():
        return result
    multiple = int(spec["input_multiple"])
    architecture = spec.get("architecture") or spec["hyperparams"]["detector"]["architecture"]
    box = brain_bounding_box(brain_mask)
    pad = _pad_to_multiple([s.stop - s.start for s in box], multiple)
    fu = np.pad(followup[box], pad)
    bl = np.pad(baseline[box], pad)
    shape = fu.shape
    if window is None:
        sides = shape
    else:
        sides = (window,) * 3 if np.isscalar(window) else tuple(window)
        sides = tuple(min(int(np.ceil(w / multiple) * multiple), s) for w, s in zip(sides, shape))
    if tuple(sides) == tuple(shape):
        probability = _run(model, detector_inputs(fu[None], bl[None], architecture), polyphase)
    else:
        weights = _gaussian_weights(sides)
        total = np.zeros(shape, dtype=np.float32)
        norm = np.zeros(shape, dtype=np.float32)
        steps = [max(int(side * (1 - overlap)), 1) for side in sides]
        starts = [_window_starts(s, w, st) for s, w, st in zip(shape, sides, steps)]
        for corner in itertools.product(*starts):
            win = tuple(slice(c, c + w) for c, w in zip(corner, sides))
            prob = _run(model, detector_inputs(fu[win][None], bl[win][None], architecture), polyphase)
            total[win] += prob * weights
            norm[win] += weights
        probability = total / np.maximum(norm, 1e-12)
        LOGGER.debug("predicted %d windows of %s", int(np.prod([len(s) for s in starts])), sides)
    crop = tuple(slice(0, s.stop - s.start) for s in box)
    result[box] = probability[crop]
    result[~brain_mask] = 0.0
    return result
