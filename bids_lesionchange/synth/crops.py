"""Random brain crops and synthetic change samples (x', x^, y) built from NoChange pairs (numpy only).

The VAE is passed in as a ``reconstruct(volume, rng) -> volume`` callable, so this module never
imports TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from bids_lesionchange.params import SuperMixParams
from bids_lesionchange.synth.supermix import grow_lesions, lesion_supermix, supermix


@dataclass
class PairVolumes:
    """One preprocessed NoChange pair in a common space, padded to at least the crop size."""

    name: str
    baseline: np.ndarray
    followup: np.ndarray
    brain_mask: np.ndarray
    #: flat C-order indices (into ``brain_mask``'s shape) of voxels some crops are centred on
    #: (``synthetic_change_sample(focus_fraction=...)``): e.g. a model's false positives on this pair
    focus: np.ndarray | None = None

    @property
    def brain_voxels(self) -> int:
        return int(self.brain_mask.sum())


def pad_to_at_least(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-pad ``volume`` at the end of each axis so every side is at least ``shape``."""
    pad = [(0, max(0, s - v)) for v, s in zip(volume.shape, shape)]
    return np.pad(volume, pad) if any(p[1] for p in pad) else volume


def brain_box(brain_mask: np.ndarray, crop_shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The brain's bounding box widened by half a crop on each side (within the volume).

    Cut to it, a pair gives exactly the crops it gives whole: :func:`random_crop_corner` centres a
    crop on a brain voxel and clips it to the volume, and half a crop of margin leaves every such
    crop, clipped or not, over the same voxels (the brain voxels keep their order, so a generator
    draws the same ones). What it saves is the rest of the field of view, which every crop drew
    through: on the 1 mm common grid of a tilted thick-slice rescan (270 x 335 x 356 voxels for a
    brain of 1.5 million) the whole-volume search for brain voxels took 0.48 s of a 1.05 s sample.
    """
    mask = np.asarray(brain_mask, dtype=bool)
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    box = []
    for axis, (n, side) in enumerate(zip(mask.shape, crop_shape)):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(present[0]) - side // 2, 0), min(int(present[-1]) + 1 + side // 2, n)))
    return tuple(box)


def brain_pair(name: str, baseline: np.ndarray, followup: np.ndarray | None, mask: np.ndarray,
               min_shape: tuple[int, ...], *, cut_to_brain: bool = True) -> PairVolumes:
    """A training pair as SuperMix samples it: intensities clipped to [0, 1] and zero outside the
    brain, cut to :func:`brain_box` (the same crops; ``cut_to_brain=False`` keeps the whole grid)
    and padded to at least ``min_shape``. ``followup=None`` pairs the baseline with itself (one
    array; adaptation's self-pairs, whose sampled nuisance makes the members differ). ``mask`` is
    thresholded at 0.5; a (nearly) empty one raises ``ValueError``, which callers turn into a
    message naming their file."""
    mask = np.asarray(mask) > 0.5
    if mask.sum() < 64:
        raise ValueError("the brain mask is (nearly) empty")
    box = brain_box(mask, min_shape) if cut_to_brain else tuple(slice(None) for _ in mask.shape)
    mask = mask[box]

    def prepared(volume):
        return pad_to_at_least(np.clip(np.asarray(volume, dtype=np.float32)[box], 0.0, 1.0) * mask, min_shape)

    baseline = prepared(baseline)
    return PairVolumes(name=str(name), baseline=baseline,
                       followup=baseline if followup is None else prepared(followup),
                       brain_mask=pad_to_at_least(mask, min_shape))


def random_crop_corner(brain_mask: np.ndarray, crop_shape: tuple[int, int, int], rng: np.random.Generator,
                       min_brain_fraction: float = 0.25, attempts: int = 20,
                       centres: np.ndarray | None = None) -> tuple[int, int, int]:
    """Return the corner of a random crop centred on a brain voxel, holding enough brain if possible.

    Tries ``attempts`` centres drawn uniformly among brain voxels (or among ``centres``, flat C-order
    indices into ``brain_mask``'s shape, when given and not empty) and returns the first crop whose
    brain fraction is at least ``min_brain_fraction`` (else the one with the most brain).
    """
    shape = brain_mask.shape
    if centres is not None and np.size(centres):
        brain = np.asarray(centres, dtype=np.int64).ravel()
        if brain.min() < 0 or brain.max() >= brain_mask.size:
            raise ValueError(f"crop centres outside a volume of shape {shape}")
    else:
        # The brain voxels' flat indices in C order, the order np.argwhere lists them in, so a generator
        # draws the same centres (np.argwhere took 0.16 s per call for 2.6 million brain voxels in a
        # 10-million-voxel box, np.flatnonzero 0.008 s; Intel Xeon, stop 45).
        brain = np.flatnonzero(brain_mask)
    if brain.size == 0:
        raise ValueError("the brain mask is empty")
    best, best_fraction = None, -1.0
    for _ in range(attempts):
        centre = np.unravel_index(brain[rng.integers(len(brain))], shape)
        corner = tuple(int(np.clip(c - k // 2, 0, s - k)) for c, k, s in zip(centre, crop_shape, shape))
        window = tuple(slice(c, c + k) for c, k in zip(corner, crop_shape))
        fraction = float(brain_mask[window].mean())
        if fraction >= min_brain_fraction:
            return corner
        if fraction > best_fraction:
            best, best_fraction = corner, fraction
    return best


def smooth_random_field(shape: tuple[int, ...], rng: np.random.Generator, control_points: int = 4) -> np.ndarray:
    """A smooth random field over ``shape`` with values in [-1, 1] (cubic upsampling of a coarse grid)."""
    from scipy import ndimage

    coarse = rng.normal(size=(control_points,) * len(shape))
    field = ndimage.zoom(coarse, [s / control_points for s in shape], order=3, mode="nearest")
    field = field[tuple(slice(0, s) for s in shape)]
    peak = np.abs(field).max()
    return (field / peak if peak > 0 else field).astype(np.float32)


def intensity_nuisance(volume: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
                       amplitude: float) -> np.ndarray:
    """Apply a random unlabelled intensity nuisance to a [0, 1] crop, inside the brain only.

    ``x -> clip(x ** g * (1 + a * f), 0, 1)`` with ``f`` a smooth field in [-1, 1],
    ``a ~ U(0, amplitude)`` and ``g = exp(U(-amplitude, amplitude))``: the residual bias field and
    contrast difference two real scans keep after N4 and normalisation. It is not change, so the
    label is untouched.
    """
    if amplitude <= 0:
        return volume
    gain = 1.0 + rng.uniform(0.0, amplitude) * smooth_random_field(volume.shape, rng)
    gamma = float(np.exp(rng.uniform(-amplitude, amplitude)))
    out = np.clip(np.power(np.clip(volume, 0.0, None), gamma) * gain, 0.0, 1.0).astype(np.float32)
    return np.where(brain, out, volume).astype(np.float32)


def thick_slice_resample(volume: np.ndarray, axis: int, thickness: float, offset: float) -> np.ndarray:
    """Re-acquire a crop with thick slices along ``axis`` and interpolate it back to its grid.

    Slices of ``thickness`` voxels (Gaussian profile of that FWHM) centred at ``offset + k *
    thickness``, then linear interpolation between slice centres: what a 2D acquisition looks like
    on the common 1 mm grid. Two sessions of one protocol have the same thickness and different
    offsets, so their difference is large at every edge that crosses the slices, and is not change.
    """
    from scipy import ndimage

    volume = np.asarray(volume, dtype=np.float32)
    n = volume.shape[axis]
    sigma = float(thickness) / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    smooth = ndimage.gaussian_filter1d(volume, sigma, axis=axis, mode="nearest")
    centres = np.arange(offset - thickness, n + thickness, thickness)
    moved = np.moveaxis(smooth, axis, -1)
    positions = np.clip(centres, 0, n - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, n - 1)
    weight = (positions - low).astype(np.float32)
    slices = moved[..., low] * (1 - weight) + moved[..., high] * weight
    grid = np.arange(n, dtype=np.float64)
    index = np.clip(np.searchsorted(centres, grid, side="right") - 1, 0, len(centres) - 2)
    t = ((grid - centres[index]) / (centres[index + 1] - centres[index])).astype(np.float32)
    out = slices[..., index] * (1 - t) + slices[..., index + 1] * t
    return np.moveaxis(out, -1, axis).astype(np.float32)


def acquisition_nuisance(volume: np.ndarray, brain: np.ndarray, rng: np.random.Generator, noise_max: float,
                         *, shift: bool = False, slices: tuple[int, float] | None = None) -> np.ndarray:
    """Apply an unlabelled acquisition nuisance to a [0, 1] crop, inside the brain only.

    What two real scans of an unchanged brain keep after preprocessing: a residual sub-voxel
    misalignment (``shift``: a random translation of up to 0.6 voxel per axis, trilinear), a
    different resolution along one axis (in 40 % of calls a Gaussian blur of sigma U(0.3, 1.2)
    voxels along a random axis: slice thickness, interpolation) and a noise realisation of its
    own (Gaussian, sigma ~ U(0, ``noise_max``)). With ``slices = (axis, thickness)`` the crop is
    first re-acquired with thick slices at a random offset (:func:`thick_slice_resample`). Not
    change: the label is untouched.
    """
    from scipy import ndimage

    if noise_max <= 0:
        return volume
    out = np.asarray(volume, dtype=np.float32)
    if shift:
        out = ndimage.shift(out, rng.uniform(-0.6, 0.6, size=out.ndim), order=1, mode="nearest")
    if slices is not None:
        axis, thickness = slices
        out = thick_slice_resample(out, axis, thickness, float(rng.uniform(0.0, thickness)))
    elif rng.uniform() < 0.4:
        sigma = [0.0] * out.ndim
        sigma[int(rng.integers(out.ndim))] = float(rng.uniform(0.3, 1.2))
        out = ndimage.gaussian_filter(out, sigma)
    sigma_noise = float(rng.uniform(0.0, noise_max))
    out = out + sigma_noise * rng.standard_normal(out.shape).astype(np.float32)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    return np.where(brain, out, 0.0).astype(np.float32)


def synthetic_change_sample(pair: PairVolumes, crop_shape: tuple[int, int, int],
                            reconstruct: Callable[[np.ndarray, np.random.Generator], np.ndarray],
                            rng: np.random.Generator, params: SuperMixParams, *,
                            swap_sessions: bool = False, min_brain_fraction: float = 0.25,
                            intensity_augmentation: float = 0.0,
                            acquisition_augmentation: float = 0.0, focus_fraction: float = 0.0) -> dict:
    """Return one synthetic change sample from a NoChange pair.

    The "later" image x (the follow-up, or the baseline when ``swap_sessions``) is cropped,
    reconstructed by the VAE and SuperMix-ed into x'; the other session is x^ and the label is
    the SuperMix label: y = 1 where x' took the reconstruction (or, in a share
    ``params.lesion_fraction`` of the samples, where :func:`lesion_supermix` put a new lesion). With ``intensity_augmentation``
    > 0, one of x' and x^ (at random, in 80 % of the samples) gets :func:`intensity_nuisance`.
    With ``acquisition_augmentation`` > 0, both get :func:`acquisition_nuisance` (independent
    noise and blur, or in half of the samples one thick-slice protocol with a slice offset of
    their own) and x^ also a sub-voxel shift. With ``focus_fraction`` > 0 and voxels in
    ``pair.focus``, that share of the crops is centred on one of them (0 draws nothing more from
    ``rng``: the samples are those made without it).

    Returns
    -------
    dict with float32 arrays ``mixed`` (x'), ``reference`` (x^), ``original`` (x), ``recon``
    (x~), bool ``label`` and ``brain`` (all ``crop_shape``), ``corner`` and ``n_segments``.
    """
    centres = None
    if focus_fraction > 0 and pair.focus is not None and pair.focus.size and rng.uniform() < focus_fraction:
        centres = pair.focus
    corner = random_crop_corner(pair.brain_mask, crop_shape, rng, min_brain_fraction, centres=centres)
    window = tuple(slice(c, c + k) for c, k in zip(corner, crop_shape))
    later, earlier = (pair.baseline, pair.followup) if swap_sessions else (pair.followup, pair.baseline)
    x = np.ascontiguousarray(later[window], dtype=np.float32)
    reference = np.ascontiguousarray(earlier[window], dtype=np.float32)
    brain = pair.brain_mask[window]
    recon = reconstruct(x, rng).astype(np.float32)
    scale = float(brain.sum()) / max(pair.brain_voxels, 1)
    if params.lesion_fraction > 0 and rng.uniform() < params.lesion_fraction:
        label = None
        if params.lesion_growth_fraction > 0 and rng.uniform() < params.lesion_growth_fraction:
            mixed, label = grow_lesions(x, recon, brain, rng, params)
            label = label if label.any() else None  # no lesion to grow here: a new one instead
        if label is None:
            mixed, label = lesion_supermix(x, recon, brain, rng, params, segment_scale=scale)
    else:
        mixed, label = supermix(x, recon, brain, rng, params, segment_scale=scale)
    if intensity_augmentation > 0 and rng.uniform() < 0.8:
        if rng.uniform() < 0.5:
            mixed = intensity_nuisance(mixed, brain, rng, intensity_augmentation)
        else:
            reference = intensity_nuisance(reference, brain, rng, intensity_augmentation)
    if acquisition_augmentation > 0:
        # Half of the samples: both sessions from one 2D protocol (same slice thickness along one
        # axis, mostly the axial one), each with its own slice positions.
        slices = None
        if rng.uniform() < 0.5:
            slices = (int(rng.choice(3, p=[0.2, 0.2, 0.6])), float(rng.uniform(2.0, 5.0)))
        mixed = acquisition_nuisance(mixed, brain, rng, acquisition_augmentation, slices=slices)
        reference = acquisition_nuisance(reference, brain, rng, acquisition_augmentation, shift=True,
                                         slices=slices)
    return {"mixed": mixed, "reference": reference, "original": x, "recon": recon, "label": label,
            "brain": brain, "corner": corner}
