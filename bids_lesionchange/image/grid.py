"""The common grid (RAS, isotropic) and resampling onto it with a single interpolation.

Every image reaches the common grid through :func:`resample_to_grid`, which composes the
voxel-to-world map of the common grid, an optional world-space rigid transform and the
world-to-voxel map of the source image into one matrix, so that the source is interpolated
once. Interpolating twice (resample, then apply the registration) blurs one session more than
the other, and that difference is later read as change.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def common_grid(shape: tuple[int, ...], affine: np.ndarray,
                resolution: float = 1.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """Return the RAS grid at ``resolution`` mm that covers the field of view of an image.

    The grid's axes run along +x (R), +y (A), +z (S) of the world. Its first voxel's corner
    sits at the lowest world corner of the image's field of view, so an image that is already
    RAS with ``resolution`` mm voxels gets back its own grid (and resampling is exact).

    Parameters
    ----------
    shape : tuple of int
        The image's shape (first three axes used).
    affine : ndarray (4, 4)
        The image's voxel-to-world (RAS mm) matrix.
    resolution : float
        The isotropic voxel size of the grid in mm.

    Returns
    -------
    shape : tuple of 3 int
        The grid's shape.
    affine : ndarray (4, 4)
        The grid's voxel-to-world matrix.
    """
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    shape = np.asarray(shape[:3], dtype=float)
    corners = np.array([[i, j, k, 1.0]
                        for i in (-0.5, shape[0] - 0.5)
                        for j in (-0.5, shape[1] - 0.5)
                        for k in (-0.5, shape[2] - 0.5)])
    world = (affine @ corners.T).T[:, :3]
    low, high = world.min(axis=0), world.max(axis=0)
    extent = (high - low) / resolution
    # Rounding noise of the header must not add a whole slice.
    n_voxels = np.ceil(np.round(extent, 4)).astype(int)
    grid_affine = np.eye(4)
    grid_affine[:3, :3] = np.diag([resolution] * 3)
    grid_affine[:3, 3] = low + resolution / 2.0
    return tuple(int(n) for n in n_voxels), grid_affine


def grid_to_source_matrix(grid_affine: np.ndarray, source_affine: np.ndarray,
                          world_transform: np.ndarray | None = None) -> np.ndarray:
    """Return the matrix that maps a grid voxel to the source voxel it samples.

    ``world_transform`` maps world points of the grid's space to world points of the source
    (the "pull" direction of a resampling, as dipy's registration affine does).
    """
    pull = np.eye(4) if world_transform is None else np.asarray(world_transform, dtype=float)
    return np.linalg.inv(source_affine) @ pull @ grid_affine


def resample_to_grid(data: np.ndarray, source_affine: np.ndarray, grid_shape: tuple[int, ...],
                     grid_affine: np.ndarray, world_transform: np.ndarray | None = None,
                     order: int = 3, cval: float = 0.0, threads: int = 1) -> np.ndarray:
    """Interpolate ``data`` once onto a grid, through an optional world-space transform.

    Parameters
    ----------
    data : ndarray (3D)
        Source voxel values.
    source_affine : ndarray (4, 4)
        Source voxel-to-world matrix.
    grid_shape, grid_affine
        The target grid.
    world_transform : ndarray (4, 4), optional
        Maps target-space world points to source-space world points (pull direction).
    order : int
        Spline order: 0 nearest (masks), 1 linear, 3 cubic (images; values are clipped to the
        source range so that cubic overshoot does not create new intensities).
    cval : float
        Value outside the source's field of view.
    threads : int
        Threads that share the interpolation (:func:`affine_transform_threaded`); the result is
        the same as with one, up to the last bit of a few voxels.

    Returns
    -------
    ndarray (float32, ``grid_shape``)
    """
    matrix = grid_to_source_matrix(grid_affine, source_affine, world_transform)
    if tuple(grid_shape) == data.shape and np.allclose(matrix, np.eye(4), atol=1e-6):
        return np.asarray(data, dtype=np.float32).copy()
    source = np.asarray(data, dtype=np.float32 if order > 0 else data.dtype)
    out = affine_transform_threaded(source, matrix, tuple(grid_shape), order=order, cval=cval,
                                    threads=threads)
    if order > 1:
        np.clip(out, min(float(source.min()), cval), max(float(source.max()), cval), out=out)
    return out.astype(np.float32, copy=False)


#: Below this many output voxels per thread, one thread interpolates (starting threads costs more).
MIN_VOXELS_PER_THREAD = 1 << 20


def affine_transform_threaded(source: np.ndarray, matrix: np.ndarray, shape: tuple[int, ...], *,
                              order: int, cval: float = 0.0, threads: int = 1) -> np.ndarray:
    """:func:`scipy.ndimage.affine_transform` (mode ``constant``) of a 4x4 voxel matrix, on ``threads`` threads.

    ndimage interpolates one voxel after the other in a single thread, and a cubic resampling of a
    1 mm head takes seconds; it releases the GIL while it does. So the output is cut into slabs
    along its first axis, one per thread, each written in place by its own call with the offset of
    its first plane; for ``order`` > 1 the source is spline-filtered once (in float64, as
    ``prefilter=True`` does) and every slab reads that. A voxel's source coordinate is then summed
    in another order (slab offset + within-slab index instead of global index), which can move its
    value by one unit in the last place of float64; cast to the output's dtype it is almost always
    the same number. With one thread (or a small output) this is exactly ``affine_transform``.

    Returns
    -------
    ndarray of ``source.dtype`` and ``shape``
    """
    linear, offset = np.asarray(matrix[:3, :3], dtype=np.float64), np.asarray(matrix[:3, 3], dtype=np.float64)
    threads = max(1, min(int(threads), shape[0], int(np.prod(shape)) // MIN_VOXELS_PER_THREAD))
    if threads == 1:
        return ndimage.affine_transform(source, linear, offset=offset, output_shape=shape, order=order,
                                        mode="constant", cval=cval, prefilter=order > 1)
    from concurrent.futures import ThreadPoolExecutor

    coefficients = (ndimage.spline_filter(source, order, output=np.float64, mode="constant")
                    if order > 1 else source)
    out = np.empty(shape, dtype=source.dtype)
    bounds = np.linspace(0, shape[0], threads + 1).astype(int)

    def slab(first: int, last: int) -> None:
        ndimage.affine_transform(coefficients, linear, offset=offset + linear[:, 0] * first,
                                 output_shape=(last - first,) + tuple(shape[1:]), output=out[first:last],
                                 order=order, mode="constant", cval=cval, prefilter=False)

    with ThreadPoolExecutor(threads) as pool:
        for done in [pool.submit(slab, a, b) for a, b in zip(bounds[:-1], bounds[1:])]:
            done.result()
    return out
