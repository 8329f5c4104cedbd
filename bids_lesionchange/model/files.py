"""File-level entry point of inference, used by the ``SiameseUNetPredict`` interface."""

from __future__ import annotations

import logging
import os
import time

import nibabel as nib
import numpy as np

from bids_lesionchange.atomic import atomic_write_nifti

# The detector last loaded in this process, by directory and weights file (time, size): a process
# that predicts several pairs (the benchmarks, a script using this module) loads it (0.4 s) and traces
# its graph (about 1 s at 1 mm) once. The app's predict node runs each pair in a process of its own
# (model.isolated), so that its worker does not keep TensorFlow's memory.
_LOADED: dict[tuple, tuple] = {}
LOGGER = logging.getLogger(__name__)


def _weights_key(model_dir: str) -> tuple:
    from bids_lesionchange.model.io import DETECTOR_WEIGHTS

    try:
        info = os.stat(os.path.join(model_dir, DETECTOR_WEIGHTS))
        return os.path.abspath(model_dir), info.st_mtime_ns, info.st_size
    except OSError:
        return os.path.abspath(model_dir), None, None


def load_predictor(model_dir: str):
    """Return ``(model, spec)`` of a model directory, loaded once per process (new weights reload)."""
    from bids_lesionchange.model.io import load_detector

    key = _weights_key(str(model_dir))
    if key not in _LOADED:
        _LOADED.clear()  # one model held at a time
        _LOADED[key] = load_detector(model_dir)
    return _LOADED[key]


def predict_files(model_dir: str, baseline: str, followup: str, brain_mask: str, out_file: str, *,
                  num_threads: int = 1, window: int | None = None, return_environment: bool = False):
    """Predict the change probability of a preprocessed pair and write it as float32 NIfTI.

    Returns ``out_file``, or ``(out_file, environment)`` with ``return_environment``: what computed
    the map (:func:`bids_lesionchange.model.inference.compute_environment`).

    Parameters
    ----------
    model_dir : trained model directory (``model.json`` + weights)
    baseline, followup, brain_mask : preprocessed images on the same (common) grid
    out_file : where to write the probability map (same grid)
    num_threads : TensorFlow intra-op threads
    window : sliding-window side in voxels, or None for one pass over the brain's bounding box
    """
    began = time.perf_counter()
    from bids_lesionchange.model._backend import tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(num_threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process
        pass
    from bids_lesionchange.model.inference import predict_change

    imported = time.perf_counter()
    model, spec = load_predictor(model_dir)
    follow_img = nib.load(followup)
    images = (np.asarray(nib.load(baseline).dataobj, dtype=np.float32),
              np.asarray(follow_img.dataobj, dtype=np.float32), np.asarray(nib.load(brain_mask).dataobj) > 0)
    loaded = time.perf_counter()
    prob = predict_change(model, spec, *images, window=window)
    computed = time.perf_counter()
    atomic_write_nifti(out_file, prob, follow_img.affine, dtype=np.float32)
    # where a predict step's time goes, in the app's log (benchmarks/end_to_end.py reads it): TensorFlow's
    # import alone took 4-8 s of a 10-16 s step on the 2-core VMs measured, the forward pass 1.5-2.7 s
    LOGGER.info("predict: TensorFlow imported in %.1f s, model and images loaded in %.1f s, map computed in "
                "%.1f s (graph traced and run), written in %.1f s", imported - began, loaded - imported,
                computed - loaded, time.perf_counter() - computed)
    if return_environment:
        from bids_lesionchange.model.inference import compute_environment

        return out_file, compute_environment(model, num_threads)
    return out_file
