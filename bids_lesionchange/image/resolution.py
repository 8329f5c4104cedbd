"""Matching the spatial resolution of the two sessions before they are compared.

A pair often mixes acquisitions: a 3D 1 mm FLAIR at baseline and a 2D FLAIR with 3-5 mm slices
at follow-up (or a change of scanner between visits). On the common 1 mm grid the thick-slice
session is blurred along its slice direction and the other is not; every edge of the brain
(ventricles, sulci, lesions that did not change) then differs between the sessions and reads as
change, for the detector and for plain subtraction alike.

The remedy used in longitudinal pipelines is to degrade the sharper session to the resolution of
the coarser one. Each session's point-spread function is modelled as a Gaussian whose full width
at half maximum along its native voxel axis ``j`` is the voxel size ``z_j`` (the usual proxy; the
slice profile of a 2D acquisition is about its thickness). Rotated into the common grid, its
FWHM along grid axis ``i`` is

    f_i = sqrt(sum_j (u_i . r_j)^2 z_j^2)

with ``u_i`` the grid axis and ``r_j`` the unit direction of native axis ``j`` in the common
world (through the session's rigid transform). The target is ``F_i = max(f_i(baseline),
f_i(follow-up))`` and each session is smoothed along grid axis ``i`` by a Gaussian of FWHM
``sqrt(F_i^2 - f_i^2)`` (Gaussians add in variance). A pair acquired with the same protocol gets
zero smoothing: nothing changes. The axis-separable filter neglects the off-diagonal terms of an
oblique PSF, which is small for the usual axial, sagittal or coronal slabs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
# Below this sigma (in grid voxels) the Gaussian is not applied: it would only move values by
# interpolation-level amounts, and a same-protocol pair must come out untouched.
MIN_SIGMA_VOXELS = 0.1


def effective_fwhm(native_affine: np.ndarray, xfm: np.ndarray, grid_affine: np.ndarray) -> np.ndarray:
    """FWHM (mm) of a session's point-spread function along each axis of the common grid.

    Parameters
    ----------
    native_affine : ndarray (4, 4)
        The session's original voxel-to-world matrix (its voxel sizes and orientation).
    xfm : ndarray (4, 4)
        Its native-world-to-common-world rigid transform.
    grid_affine : ndarray (4, 4)
        The common grid's voxel-to-world matrix.

    Returns
    -------
    ndarray (3,)
        ``f_i`` for the three grid axes.
    """
    native_axes = np.asarray(xfm, float)[:3, :3] @ np.asarray(native_affine, float)[:3, :3]
    zooms = np.linalg.norm(native_axes, axis=0)
    directions = native_axes / zooms
    grid_axes = np.asarray(grid_affine, float)[:3, :3]
    grid_axes = grid_axes / np.linalg.norm(grid_axes, axis=0)
    cosines = grid_axes.T @ directions  # [i, j] = u_i . r_j
    return np.sqrt((cosines ** 2) @ (zooms ** 2))


def matching_sigmas(fwhm_a: np.ndarray, fwhm_b: np.ndarray, grid_zooms) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian sigmas (grid voxels) that bring sessions ``a`` and ``b`` to a common resolution."""
    fwhm_a, fwhm_b = np.asarray(fwhm_a, float), np.asarray(fwhm_b, float)
    target = np.maximum(fwhm_a, fwhm_b)
    zooms = np.asarray(grid_zooms, float)

    def sigma(own):
        s = np.sqrt(np.maximum(target ** 2 - own ** 2, 0.0)) * FWHM_TO_SIGMA / zooms
        return np.where(s < MIN_SIGMA_VOXELS, 0.0, s)

    return sigma(fwhm_a), sigma(fwhm_b)


def smooth(data: np.ndarray, sigma_voxels) -> np.ndarray:
    """Gaussian smoothing along the grid axes (no-op for all-zero sigmas)."""
    data = np.asarray(data, dtype=np.float32)
    sigma_voxels = np.asarray(sigma_voxels, float)
    if not np.any(sigma_voxels > 0):
        return data
    return ndimage.gaussian_filter(data, sigma=sigma_voxels, mode="nearest").astype(np.float32)
