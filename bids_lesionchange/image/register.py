"""Rigid registration of the baseline to the follow-up with dipy, and measures of its quality.

Matrices here are 4x4 in world (RAS mm) coordinates. dipy's optimised affine maps a point of
the static (follow-up) world to the moving (baseline) world: the *pull* direction that a
resampling needs. The transform written to disk is its inverse (baseline world to common
world), see :mod:`bids_lesionchange.image.transforms`.
"""

from __future__ import annotations

import logging

import numpy as np

LOGGER = logging.getLogger("bids_lesionchange.image.register")

# Registration is declared failed when the normalised cross-correlation of the two sessions
# inside the brain, after alignment, is below this. Same-subject FLAIR pairs score > 0.8 (the
# phantoms here ~0.9, a real FLAIR against itself moved by 10 degrees 0.97); rigidly aligned
# brains of two different heads score far lower where anatomy differs, and a failed
# optimisation that leaves the brain misaligned scores < 0.4.
MIN_BRAIN_NCC = 0.5


def _crop_to_mask(data: np.ndarray, affine: np.ndarray, mask: np.ndarray, margin: int):
    """Return data, affine and mask cropped to the mask's bounding box plus ``margin`` voxels."""
    where = np.argwhere(mask)
    low = np.maximum(where.min(axis=0) - margin, 0)
    high = np.minimum(where.max(axis=0) + margin + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ low + affine[:3, 3]
    return data[box], shifted, mask[box]


def _masked_metric(nbins: int, n_samples: int, mask, mask_affine):
    """Return dipy's Mattes MI on ~``n_samples`` points per level, inside ``mask`` if given.

    dipy accepts a mask only with dense sampling, which evaluates every voxel of the static
    grid at every iteration (about 1 s per iteration for a 1 mm head on this machine). Here
    the regular sparse samples dipy draws are filtered to those that fall inside the mask
    (looked up in world coordinates, so the same mask serves every pyramid level). The
    sampling proportion is set per level so that each level draws about ``n_samples`` points
    from the static grid (coarse levels use every voxel).
    """
    from dipy.align.imaffine import MutualInformationMetric

    class MaskedSparseMutualInformation(MutualInformationMetric):
        def setup(self, transform, static, moving, *, static_grid2world=None,
                  moving_grid2world=None, starting_affine=None, static_mask=None,
                  moving_mask=None):
            self.sampling_proportion = min(1.0, n_samples / float(np.asarray(static).size))
            super().setup(transform, static, moving, static_grid2world=static_grid2world,
                          moving_grid2world=moving_grid2world, starting_affine=starting_affine)
            if mask is None or self.samples is None:
                return
            voxels = np.rint((np.linalg.inv(mask_affine) @ self.samples.T).T[:, :3]).astype(int)
            inside = np.all((voxels >= 0) & (voxels < mask.shape), axis=1)
            keep = np.zeros(len(voxels), dtype=bool)
            keep[inside] = mask[tuple(voxels[inside].T)]
            if keep.sum() < 100:  # the mask is too small for this level: keep every sample
                return
            self.samples = self.samples[keep]
            self.samples_prealigned = self.samples_prealigned[keep]
            self.static_vals = self.static_vals[keep]
            self.ns = int(keep.sum())

    return MaskedSparseMutualInformation(nbins=nbins, sampling_proportion=1.0)


def rigid_register(static: np.ndarray, static_affine: np.ndarray, moving: np.ndarray,
                   moving_affine: np.ndarray, static_mask: np.ndarray | None = None, *,
                   nbins: int = 32, level_iters=(200, 100, 30), sigmas=(3.0, 1.0, 0.0),
                   factors=(4, 2, 1), n_samples: int | None = 100_000,
                   starting_affine: np.ndarray | None = None, nthreads: int = 1,
                   seed: int = 0) -> np.ndarray:
    """Return the rigid world transform that aligns ``moving`` to ``static``.

    Mattes mutual information, centre-of-mass initialisation, a translation stage and a rigid
    stage, each multi-resolution (Gaussian pyramid with ``factors`` and ``sigmas`` in voxels).
    With ``static_mask`` the metric is computed inside the (follow-up's) brain only, on a
    static image cropped to the mask's bounding box (faster, and the skull and neck, which
    move differently from the brain, do not steer the fit).

    Parameters
    ----------
    static, static_affine
        The fixed image (follow-up on the common grid) and its voxel-to-world matrix.
    moving, moving_affine
        The image to align (baseline on its native grid) and its voxel-to-world matrix.
    static_mask : ndarray of bool, optional
        The brain mask on the static grid.
    nbins : int
        Histogram bins of the mutual information.
    level_iters, sigmas, factors
        Iterations, smoothing and shrinking per pyramid level, coarsest first.
    n_samples : int or None
        Points of the static grid sampled per level (regular, jittered), before keeping
        those inside the mask; None samples every voxel (dipy's dense mode: slow).
    starting_affine : ndarray (4, 4), optional
        A pull transform to start from (e.g. a coarser run's result); then the centre-of-mass
        initialisation and the translation stage are skipped.
    nthreads : int
        Threads for the numerical libraries.
    seed : int
        Seed of the sample jitter (dipy draws it from NumPy's global generator, whose state
        is restored afterwards).

    Returns
    -------
    ndarray (4, 4)
        Maps static-world points to moving-world points (pull direction).
    """
    from dipy.align.imaffine import AffineRegistration, transform_centers_of_mass
    from dipy.align.transforms import RigidTransform3D, TranslationTransform3D
    from threadpoolctl import threadpool_limits

    static = np.asarray(static, dtype=np.float64)
    moving = np.asarray(moving, dtype=np.float64)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with threadpool_limits(limits=max(1, nthreads)):
            if starting_affine is None:
                start = transform_centers_of_mass(static, static_affine, moving,
                                                  moving_affine).affine
            else:
                start = np.asarray(starting_affine, dtype=float)
            mask = None
            if static_mask is not None and np.any(static_mask):
                margin = int(2 * max(factors))
                static, static_affine, mask = _crop_to_mask(static, static_affine,
                                                            np.asarray(static_mask, bool), margin)
            if n_samples is None:
                from dipy.align.imaffine import MutualInformationMetric

                metric = MutualInformationMetric(nbins=nbins)
                dense_mask = None if mask is None else mask.astype(np.int32)
            else:
                metric = _masked_metric(nbins, int(n_samples), mask, static_affine)
                dense_mask = None
            registration = AffineRegistration(metric=metric, level_iters=list(level_iters),
                                              sigmas=list(sigmas), factors=list(factors),
                                              verbosity=0)
            if starting_affine is None:
                start = registration.optimize(static, moving, TranslationTransform3D(), None,
                                              static_grid2world=static_affine,
                                              moving_grid2world=moving_affine,
                                              starting_affine=start, static_mask=dense_mask).affine
            rigid = registration.optimize(static, moving, RigidTransform3D(), None,
                                          static_grid2world=static_affine,
                                          moving_grid2world=moving_affine,
                                          starting_affine=start, static_mask=dense_mask)
    finally:
        np.random.set_state(state)
    return np.asarray(rigid.affine, dtype=float)


def normalised_cross_correlation(first: np.ndarray, second: np.ndarray,
                                 mask: np.ndarray) -> float:
    """Return the Pearson correlation of two images inside ``mask`` (1 is best, 0 unrelated).

    NCC = sum((a - mean a)(b - mean b)) / sqrt(sum((a - mean a)^2) sum((b - mean b)^2)).
    Insensitive to a linear change of intensity between sessions.
    """
    a = np.asarray(first, dtype=np.float64)[mask]
    b = np.asarray(second, dtype=np.float64)[mask]
    a = a - a.mean()
    b = b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def mutual_information(first: np.ndarray, second: np.ndarray, mask: np.ndarray,
                       bins: int = 32) -> tuple[float, float]:
    """Return the mutual information (bits) and the normalised MI of two images inside ``mask``.

    MI = H(A) + H(B) - H(A, B) (higher is better); NMI = (H(A) + H(B)) / H(A, B) lies in
    [1, 2], 2 for identical images (Studholme et al. 1999).
    """
    a = np.asarray(first, dtype=np.float64)[mask]
    b = np.asarray(second, dtype=np.float64)[mask]
    joint, _, _ = np.histogram2d(a, b, bins=bins)
    joint = joint / max(joint.sum(), 1.0)

    def entropy(p):
        p = p[p > 0]
        return float(-(p * np.log2(p)).sum())

    h_a, h_b, h_ab = entropy(joint.sum(axis=1)), entropy(joint.sum(axis=0)), entropy(joint)
    return h_a + h_b - h_ab, ((h_a + h_b) / h_ab if h_ab > 0 else 1.0)


def registration_failed(ncc: float, threshold: float = MIN_BRAIN_NCC) -> bool:
    """Return True when the brain NCC after alignment says registration failed (NCC < threshold)."""
    return not ncc >= threshold


def rigid_error(estimated: np.ndarray, true: np.ndarray, centre=(0.0, 0.0, 0.0)) -> tuple[float, float]:
    """Return the rotation (degrees) and translation (mm at ``centre``) of ``estimated @ inv(true)``.

    Both matrices map the same source to the same target; identical matrices give (0, 0).
    The translation error is measured at ``centre`` (e.g. the brain's centroid) so it does not
    grow with the distance to the world origin.
    """
    residual = np.asarray(estimated) @ np.linalg.inv(np.asarray(true))
    cosine = np.clip((np.trace(residual[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
    centre = np.append(np.asarray(centre, dtype=float), 1.0)
    return float(np.degrees(np.arccos(cosine))), float(np.linalg.norm((residual @ centre - centre)[:3]))
