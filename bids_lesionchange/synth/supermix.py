"""SuperMix: synthetic lesion changes by mixing VAE reconstructions into SLIC superpixels.

Given a scan x, a perturbed reconstruction x~ and the brain mask, SLIC tessellates x into
n_seg superpixels b_t (log n_seg ~ U(log 200, log 5000)); each superpixel keeps x with probability
tau and otherwise takes x~ (To et al. 2021, eq. 1):

    x'  = sum_t lambda_t b_t x + (1 - lambda_t) b_t x~
    y^  = sum_t (1 - lambda_t) b_t            (restricted to the brain)

:func:`lesion_supermix` (an extension, ``SuperMixParams.lesion_fraction``) mixes lesion-sized,
hyperintense superpixels instead: new lesions as MS makes them, for scans whose NoChange pairs
differ everywhere (real rescans), where the VAE texture alone is no cue a real lesion shares.
:func:`grow_lesions` (``SuperMixParams.lesion_growth_fraction``) enlarges a hyperintensity already
in the scan by a one-sided rim of its own brightness: enlarging lesions.

Speed: SLIC with a mask on a whole 1 mm brain takes 27 s (n_seg = 200) to 109 s (n_seg = 5000)
on this CPU, and 0.8-4 s on a 64^3 crop. SuperMix is therefore applied to training crops, with
n_seg scaled by the crop's share of the brain (``segment_scale``) so superpixels keep the
paper's physical size, and SLIC runs on a grid ``slic_downsample`` times coarser (0.14-0.5 s per
64^3 crop at factor 2); the superpixels are brought back by nearest-neighbour repetition.
numpy + scikit-image only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from skimage.segmentation import slic

from bids_lesionchange.atomic import atomic_save
from bids_lesionchange.params import SuperMixParams

LOGGER = logging.getLogger(__name__)


def sample_n_segments(rng: np.random.Generator, params: SuperMixParams) -> float:
    """Draw n_seg with log n_seg ~ U(log n_segments_min, log n_segments_max) (for a whole brain)."""
    low, high = np.log(params.n_segments_min), np.log(params.n_segments_max)
    return float(np.exp(rng.uniform(low, high)))


def _block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    pad = [(0, (-s) % factor) for s in volume.shape]
    padded = np.pad(volume, pad, mode="edge")
    shape = []
    for s in padded.shape:
        shape += [s // factor, factor]
    return padded.reshape(shape).mean(axis=(1, 3, 5))


def superpixels(image: np.ndarray, brain_mask: np.ndarray, n_segments: int,
                params: SuperMixParams) -> np.ndarray:
    """Return SLIC superpixel labels (int32, 1..n inside the brain, 0 outside) of a 3D image.

    SLIC runs on a grid ``params.slic_downsample`` times coarser and the labels are repeated
    back to the image grid, then restricted to ``brain_mask``.
    """
    factor = max(int(params.slic_downsample), 1)
    mask = np.asarray(brain_mask, dtype=bool)
    if factor > 1:
        small = _block_mean(np.asarray(image, dtype=np.float32), factor)
        small_mask = _block_mean(mask.astype(np.float32), factor) > 0  # cover every brain voxel
    else:
        small, small_mask = np.asarray(image, dtype=np.float32), mask
    if not small_mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    segments = slic(small, n_segments=max(int(round(n_segments)), 1), compactness=params.compactness,
                    channel_axis=None, mask=small_mask, start_label=1,
                    max_num_iter=params.slic_iterations).astype(np.int32)
    if factor > 1:
        for axis in range(3):
            segments = np.repeat(segments, factor, axis=axis)
        segments = segments[: mask.shape[0], : mask.shape[1], : mask.shape[2]]
    segments[~mask] = 0
    return segments


def supermix(x: np.ndarray, x_recon: np.ndarray, brain_mask: np.ndarray, rng: np.random.Generator,
             params: SuperMixParams, *, segment_scale: float = 1.0, n_segments: float | None = None,
             return_segments: bool = False):
    """Mix the reconstruction into randomly chosen superpixels of ``x`` and return the change label.

    Parameters
    ----------
    x, x_recon : ndarray (X, Y, Z) float32
        The scan and its (perturbed VAE) reconstruction on the same grid.
    brain_mask : ndarray (X, Y, Z) bool
    rng : numpy Generator (n_seg and the keep/replace draws)
    params : SuperMixParams
        ``tau``: probability a superpixel keeps ``x``; ``min_label_voxels``: smaller replaced
        superpixels are left unchanged.
    segment_scale : float
        Share of a whole brain that ``brain_mask`` covers; n_seg drawn for a whole brain is
        multiplied by it so a crop's superpixels have the size they would have in the full scan.
    n_segments : float, optional
        Use this n_seg (whole-brain count) instead of drawing one.
    return_segments : bool
        Also return the superpixel labels and the ids of the replaced ones.

    Returns
    -------
    x_mixed : ndarray float32, equal to ``x`` outside ``label`` and to ``x_recon`` inside
    label : ndarray bool, exactly the union of replaced superpixels inside the brain
    (segments, replaced_ids) : only with ``return_segments``
    """
    x = np.asarray(x, dtype=np.float32)
    x_recon = np.asarray(x_recon, dtype=np.float32)
    if x.shape != x_recon.shape or x.shape != np.shape(brain_mask):
        raise ValueError(f"supermix needs equal shapes, got {x.shape}, {x_recon.shape}, {np.shape(brain_mask)}")
    n_seg = sample_n_segments(rng, params) if n_segments is None else float(n_segments)
    segments = superpixels(x, brain_mask, max(n_seg * segment_scale, 1.0), params)
    ids = np.unique(segments)
    ids = ids[ids > 0]
    replace = rng.uniform(size=ids.size) >= params.tau
    replaced = ids[replace]
    if params.min_label_voxels > 0 and replaced.size:
        sizes = np.bincount(segments.ravel(), minlength=int(segments.max()) + 1)
        replaced = replaced[sizes[replaced] >= params.min_label_voxels]
    label = np.isin(segments, replaced) & (segments > 0)
    x_mixed = np.where(label, x_recon, x).astype(np.float32)
    if return_segments:
        return x_mixed, label, (segments, replaced)
    return x_mixed, label


def tissue_level(x: np.ndarray, brain_mask: np.ndarray) -> float:
    """The crop's tissue intensity: median of the brain voxels brighter than half the brain median.

    In FLAIR the CSF is dark, so this is the grey/white-matter level whatever the normalisation
    (0.5 after ``wm-peak``, about 0.5-0.7 after the paper's percentile scaling).
    """
    values = np.asarray(x, dtype=np.float32)[np.asarray(brain_mask, dtype=bool)]
    if values.size == 0:
        return 0.0
    values = values[values > 0.5 * float(np.median(values))]
    return float(np.median(values)) if values.size else 0.0


def _depth_in_brain(brain: np.ndarray) -> np.ndarray:
    """Distance (voxels) of every voxel to the nearest non-brain voxel; the crop's own border is not the brain's edge."""
    from scipy import ndimage

    return ndimage.distance_transform_edt(np.pad(brain, 1, mode="edge"))[1:-1, 1:-1, 1:-1]


def _ball(axes: Sequence[np.ndarray], centre, radius: float) -> np.ndarray:
    """The voxels within ``radius`` of ``centre`` on the grid spanned by ``axes``."""
    d0, d1, d2 = ((axis - c) ** 2 for axis, c in zip(axes, centre))
    return d0[:, None, None] + d1[None, :, None] + d2[None, None, :] <= radius ** 2


def lesion_supermix(x: np.ndarray, x_recon: np.ndarray, brain_mask: np.ndarray, rng: np.random.Generator,
                    params: SuperMixParams, *, segment_scale: float = 1.0, return_segments: bool = False):
    """Mix new hyperintense lesions, shaped by SLIC superpixels, into ``x``; return the change label.

    An extension of SuperMix (not in the paper). SLIC runs with a lesion-sized whole-brain count
    (log-uniform in ``params.lesion_segments_min..max``, scaled by ``segment_scale``); 1 to
    ``params.max_lesions`` superpixels of tissue (mean between 0.6 and 1.6 times
    :func:`tissue_level`, so not CSF) are chosen. Inside them the image takes the VAE
    reconstruction's texture (``x_recon`` over its mean there, clipped to +-15 %) at ``c`` times
    the tissue level, ``c ~ U(lesion_contrast_min, lesion_contrast_max)``, never darker than ``x``,
    with a soft edge: ``alpha = clip(2 G_sigma * m, 0, 1)`` (``m`` the chosen superpixels,
    ``sigma ~ U(0.6, 1.5)`` voxels), ``x' = (1 - alpha) x + alpha max(x, lesion)``.

    With ``params.lesion_radius_max`` > 0 each chosen superpixel is cut to a ball of radius
    U(``lesion_radius_min``, ``lesion_radius_max``) voxels around one of its voxels (lesions of a
    few tens of voxels, smaller than SLIC's superpixels on its coarse grid).
    With ``params.lesion_min_depth`` > 0 only superpixels reaching that many voxels inside the
    brain mask are chosen (and balls are centred there): no lesion on the brain's outer edge.
    With ``params.lesion_enlarging_fraction`` > 0 that share of the chosen superpixels is drawn
    among those touching a hyperintensity already in ``x`` (an enlarging lesion).

    The label is where the lesion dominates (``alpha >= 0.5``) inside the brain AND ``x'`` rose by
    at least 0.1 times the tissue level: a superpixel that was already a lesion is not change.

    Returns
    -------
    x_mixed : ndarray float32, equal to ``x`` wherever ``alpha`` is 0
    label : ndarray bool
    (segments, chosen_ids) : only with ``return_segments``
    """
    from scipy import ndimage

    x = np.asarray(x, dtype=np.float32)
    x_recon = np.asarray(x_recon, dtype=np.float32)
    brain = np.asarray(brain_mask, dtype=bool)
    if x.shape != x_recon.shape or x.shape != brain.shape:
        raise ValueError(f"lesion_supermix needs equal shapes, got {x.shape}, {x_recon.shape}, {brain.shape}")
    low, high = np.log(params.lesion_segments_min), np.log(params.lesion_segments_max)
    n_seg = float(np.exp(rng.uniform(low, high)))
    segments = superpixels(x, brain, max(n_seg * segment_scale, 1.0), params)
    level = tissue_level(x, brain)

    def unchanged():
        empty = (x.copy(), np.zeros(x.shape, dtype=bool))
        return (*empty, (segments, np.zeros(0, dtype=np.int32))) if return_segments else empty

    if level <= 0 or segments.max() == 0:
        return unchanged()
    counts = np.bincount(segments.ravel(), minlength=int(segments.max()) + 1).astype(np.float64)
    sums = np.bincount(segments.ravel(), weights=x.ravel(), minlength=counts.size)
    means = sums / np.maximum(counts, 1)
    ids = np.arange(counts.size)
    keep = (ids > 0) & (counts >= 8) & (means >= 0.6 * level) & (means <= 1.6 * level)
    deep = None
    if params.lesion_min_depth > 0:
        # Only superpixels reaching at least lesion_min_depth voxels inside the brain (the crop's
        # own border is not the brain's edge), and later only centres there.
        depth = _depth_in_brain(brain)
        deep = depth >= params.lesion_min_depth
        reach = np.bincount(segments.ravel(), weights=deep.ravel(), minlength=counts.size)
        keep &= reach > 0
    candidates = ids[keep]
    if candidates.size == 0:
        return unchanged()
    k = int(rng.integers(1, max(int(params.max_lesions), 1) + 1))
    chosen = rng.choice(candidates, size=min(k, candidates.size), replace=False)
    if params.lesion_enlarging_fraction > 0:
        # Enlarging lesions: some of the chosen superpixels are swapped for ones touching a
        # hyperintensity already present (within 2 voxels of x > 1.4 x tissue level).
        existing = (x > 1.4 * level) & brain
        if existing.any():
            shell = ndimage.binary_dilation(existing, iterations=2)
            touching = np.unique(segments[shell & (segments > 0)])
            touching = np.intersect1d(touching, candidates)
            if touching.size:
                swap = rng.uniform(size=chosen.size) < params.lesion_enlarging_fraction
                picks = rng.choice(touching, size=int(swap.sum()), replace=True)
                chosen = np.unique(np.concatenate([chosen[~swap], picks]))
    core = np.isin(segments, chosen)
    if params.lesion_radius_max > 0:
        # Cut each chosen superpixel to a ball around one of its voxels: small lesions too.
        axes = [np.arange(n, dtype=np.float32) for n in x.shape]
        cut = np.zeros(x.shape, dtype=bool)
        for segment in chosen:
            inside = segments == segment
            voxels = np.argwhere(inside & (deep if deep is not None else True))
            centre = voxels[rng.integers(len(voxels))]
            radius = float(rng.uniform(params.lesion_radius_min, max(params.lesion_radius_max,
                                                                     params.lesion_radius_min)))
            cut |= _ball(axes, centre, radius) & inside
        core = cut
    if deep is not None:
        core &= depth >= min(2.0, params.lesion_min_depth)  # never up to the brain's edge
    contrast = float(rng.uniform(params.lesion_contrast_min, params.lesion_contrast_max))
    texture = x_recon / max(float(x_recon[core].mean()), 1e-6)
    lesion = contrast * level * np.clip(texture, 0.85, 1.15)
    sigma = float(rng.uniform(0.6, 1.5))
    alpha = np.clip(2.0 * ndimage.gaussian_filter(core.astype(np.float32), sigma), 0.0, 1.0)
    alpha[~brain | (alpha < 0.01)] = 0.0  # no faint Gaussian tail: x is kept exactly away from a lesion
    mixed = (1.0 - alpha) * x + alpha * np.maximum(x, lesion)
    mixed = np.clip(mixed, 0.0, max(1.0, float(x.max()))).astype(np.float32)
    label = (alpha >= 0.5) & brain & (mixed - x >= 0.1 * level)
    if return_segments:
        return mixed, label, (segments, chosen)
    return mixed, label


def grow_lesions(x: np.ndarray, x_recon: np.ndarray, brain_mask: np.ndarray, rng: np.random.Generator,
                 params: SuperMixParams):
    """Enlarge 1 to ``params.max_lesions`` hyperintensities already in ``x``; return ``(x', label)``.

    An extension of SuperMix (not in the paper) for enlarging MS lesions, the change a follow-up
    scan shows most often besides new ones: a lesion grows by a rim on part of its border, and the
    rim takes the lesion's own brightness. A hyperintensity is a connected part (6-connected, at
    least 8 voxels) of ``x > 1.3 x`` :func:`tissue_level` inside the brain that reaches
    ``params.lesion_min_depth`` voxels deep. For each chosen one: its dilation by 1 to 3 voxels,
    cut to a ball of radius U(3, 8) voxels around one of its border voxels (a one-sided growth),
    on tissue (``x`` between 0.6 and 1.6 times the tissue level, so neither CSF nor another lesion)
    and at least 2 voxels inside the brain; there the image takes the lesion's median brightness
    times U(0.9, 1.1) with the VAE reconstruction's texture (+-15 %) and a soft edge, as in
    :func:`lesion_supermix`. The label is where the rim dominates (``alpha >= 0.5``, up to one voxel
    past it) and ``x'`` rose by at least 0.1 times the tissue level. Without a hyperintensity the
    crop is returned unchanged with an empty label (the caller then draws a new lesion instead).
    """
    from scipy import ndimage

    x = np.asarray(x, dtype=np.float32)
    x_recon = np.asarray(x_recon, dtype=np.float32)
    brain = np.asarray(brain_mask, dtype=bool)
    if x.shape != x_recon.shape or x.shape != brain.shape:
        raise ValueError(f"grow_lesions needs equal shapes, got {x.shape}, {x_recon.shape}, {brain.shape}")
    level = tissue_level(x, brain)
    empty = np.zeros(x.shape, dtype=bool)
    if level <= 0:
        return x.copy(), empty
    depth = _depth_in_brain(brain)
    labels, n = ndimage.label((x > 1.3 * level) & brain)
    if n == 0:
        return x.copy(), empty
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    deep = np.bincount(labels.ravel(), weights=(depth >= max(params.lesion_min_depth, 1.0)).ravel(),
                       minlength=n + 1)
    candidates = np.flatnonzero((sizes >= 8) & (deep > 0))
    candidates = candidates[candidates > 0]
    if candidates.size == 0:
        return x.copy(), empty
    k = int(rng.integers(1, max(int(params.max_lesions), 1) + 1))
    chosen = rng.choice(candidates, size=min(k, candidates.size), replace=False)
    tissue = (x >= 0.6 * level) & (x <= 1.6 * level) & brain & (depth >= 2.0)
    axes = [np.arange(n_, dtype=np.float32) for n_ in x.shape]
    mixed = x.copy()
    label = empty.copy()
    for lesion_id in chosen:
        lesion = labels == lesion_id
        grown = ndimage.binary_dilation(lesion, iterations=int(rng.integers(1, 4)))
        border = np.argwhere(grown & ~lesion)
        if len(border) == 0:
            continue
        centre = border[rng.integers(len(border))]
        radius = float(rng.uniform(3.0, 8.0))
        rim = grown & ~lesion & _ball(axes, centre, radius) & tissue
        if not rim.any():
            continue
        brightness = float(np.median(x[lesion])) * float(rng.uniform(0.9, 1.1))
        texture = x_recon / max(float(x_recon[rim].mean()), 1e-6)
        target = brightness * np.clip(texture, 0.85, 1.15)
        sigma = float(rng.uniform(0.5, 1.0))
        alpha = np.clip(2.0 * ndimage.gaussian_filter(rim.astype(np.float32), sigma), 0.0, 1.0)
        alpha[~brain | lesion | (alpha < 0.01)] = 0.0  # the lesion itself keeps its voxels
        before = mixed
        mixed = (1.0 - alpha) * mixed + alpha * np.maximum(mixed, target)
        label |= (alpha >= 0.5) & (mixed - before >= 0.1 * level)
    mixed = np.clip(mixed, 0.0, max(1.0, float(x.max()))).astype(np.float32)
    label &= brain & (mixed - x >= 0.1 * level)
    return mixed, label


def save_supermix_examples(examples: Sequence[dict], out_dir: str | Path, prefix: str = "supermix") -> list[Path]:
    """Save one PNG per example: baseline, follow-up, reconstruction, mixed image with the label.

    Parameters
    ----------
    examples : sequence of dict with arrays ``baseline``, ``followup``, ``recon``, ``mixed``,
        ``label`` (X, Y, Z) and optionally a ``title``.
    out_dir : directory to write ``<prefix>-NN.png`` into (created).

    Returns
    -------
    list of Path of the written files.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, example in enumerate(examples):
        label = np.asarray(example["label"], dtype=bool)
        if label.any():
            z = int(np.argmax(label.sum(axis=(0, 1))))
        else:
            z = label.shape[2] // 2
        panels = [("baseline x^", example["baseline"]), ("follow-up x", example["followup"]),
                  ("VAE reconstruction x~", example["recon"]), ("SuperMix x' + label", example["mixed"])]
        fig, axes = plt.subplots(1, 4, figsize=(12, 3.4))
        for axis, (title, volume) in zip(axes, panels):
            axis.imshow(np.asarray(volume)[:, :, z].T, cmap="gray", vmin=0, vmax=1, origin="lower")
            axis.set_title(title, fontsize=9)
            axis.axis("off")
        if label[:, :, z].any():
            axes[3].contour(label[:, :, z].T.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        fig.suptitle(example.get("title", f"example {index}"), fontsize=9)
        fig.tight_layout()
        path = out_dir / f"{prefix}-{index:02d}.png"
        atomic_save(lambda name: fig.savefig(name, dpi=80), path)
        plt.close(fig)
        written.append(path)
    return written
