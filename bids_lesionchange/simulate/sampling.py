"""Fast sampling helpers: trilinear sampling restricted to a support, separable upsampling."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def dilated_support(mask: np.ndarray) -> np.ndarray:
    """Return ``mask`` grown by one voxel (26-neighbourhood): where a trilinear sample can be non-zero."""
    return ndi.binary_dilation(mask, structure=np.ones((3, 3, 3), dtype=bool))


def support_index(coords: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Return indices of the points (columns of ``coords``) whose nearest voxel lies in ``support``.

    With ``support`` from :func:`dilated_support`, every other point has a trilinear value of 0.
    """
    sx, sy, sz = support.shape
    # Clipping sends outside points to border voxels: at worst a few extra points are interpolated.
    x = np.clip(np.rint(coords[0]), 0, sx - 1).astype(np.intp)
    y = np.clip(np.rint(coords[1]), 0, sy - 1).astype(np.intp)
    flat = x * (sy * sz)
    flat += y * sz
    flat += np.clip(np.rint(coords[2]), 0, sz - 1).astype(np.intp)
    return np.flatnonzero(support.ravel()[flat])


def sample_trilinear(volume: np.ndarray, coords: np.ndarray, keep: np.ndarray | None = None,
                     cval: float = 0.0) -> np.ndarray:
    """Sample ``volume`` at voxel coordinates (3, N) by trilinear interpolation.

    Points not in ``keep`` (when given) get ``cval`` without being interpolated.
    """
    if keep is None:
        return ndi.map_coordinates(volume, coords, order=1, mode="constant", cval=cval, output=np.float32)
    out = np.full(coords.shape[1], cval, dtype=np.float32)
    if keep.size:
        out[keep] = ndi.map_coordinates(volume, coords[:, keep], order=1, mode="constant", cval=cval,
                                        output=np.float32)
    return out


def interpolation_matrix(n_out: int, n_in: int, order: int) -> np.ndarray:
    """Return the (n_out, n_in) matrix that spline-interpolates n_in samples onto n_out points.

    Output point ``i`` sits at input position ``i * (n_in - 1) / (n_out - 1)`` (ends aligned).
    """
    positions = np.linspace(0.0, n_in - 1.0, n_out)[None, :]
    matrix = np.empty((n_out, n_in), dtype=np.float64)
    for column in range(n_in):
        unit = np.zeros(n_in)
        unit[column] = 1.0
        matrix[:, column] = ndi.map_coordinates(unit, positions, order=order, mode="nearest")
    return matrix


def separable_upsample(coarse: np.ndarray, shape: tuple[int, int, int], order: int = 1,
                       positions: list[np.ndarray] | None = None) -> np.ndarray:
    """Interpolate a coarse 3D grid onto ``shape`` by separable spline interpolation.

    Parameters
    ----------
    coarse : ndarray
        Coarse 3D grid.
    shape : tuple of int
        Output shape.
    order : int
        Spline order (1 linear, 3 cubic).
    positions : list of ndarray, optional
        Per axis, the coarse-grid coordinate of each output index (default: ends aligned).

    Returns
    -------
    ndarray of float32
    """
    result = np.asarray(coarse, dtype=np.float64)
    for axis, n_out in enumerate(shape):
        n_in = result.shape[axis]
        if positions is None:
            matrix = interpolation_matrix(n_out, n_in, order)
        else:
            matrix = np.empty((n_out, n_in))
            for column in range(n_in):
                unit = np.zeros(n_in)
                unit[column] = 1.0
                matrix[:, column] = ndi.map_coordinates(unit, positions[axis][None, :], order=order,
                                                        mode="nearest")
        result = np.moveaxis(np.tensordot(matrix, result, axes=([1], [axis])), 0, axis)
    return result.astype(np.float32)
