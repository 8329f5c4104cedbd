"""Transform files (``*_xfm.txt``) and the ways between a native grid and the common space.

File format
-----------
A ``_xfm.txt`` file holds one 4x4 affine matrix in plain text (4 rows of 4 numbers, ``#``
comment lines above). The matrix maps a point of the session's **native world space** (the
scanner RAS+ millimetre coordinates given by the NIfTI sform/qform of the original FLAIR) to
the **common space** (the follow-up's world RAS+ mm; the common grid is defined in it)::

    x_common = M @ x_native        (homogeneous RAS+ mm coordinates)

This is the "push" (forward) direction of X5 / NiTransforms ``mode-image`` affines written in
RAS. Note it is *not* an ITK ``.mat``/``.txt`` file: ITK stores the inverse direction (fixed to
moving) in LPS coordinates; to use the matrix with ANTs/ITK, invert it and flip the signs of
the x and y rows and columns (``diag(-1, -1, 1, 1) @ inv(M) @ diag(-1, -1, 1, 1)``). For the
follow-up M is the identity (the common space is its world); for the baseline M is the rigid
registration.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_lesionchange.atomic import atomic_save
from bids_lesionchange.image.grid import resample_to_grid

XFM_HEADER = (
    "bids_lesionchange rigid transform (4x4, RAS+ mm)\n"
    "maps native world coordinates of {source} to the common space (follow-up world):\n"
    "x_common = M @ x_native; inverse direction and LPS in ITK files\n"
)


def write_xfm(matrix: np.ndarray, path: str | os.PathLike, *, source: str = "native") -> Path:
    """Write a 4x4 native-to-common matrix as text, atomically; return the path."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"a transform must be a finite 4x4 matrix, got shape {matrix.shape}")
    return atomic_save(lambda name: np.savetxt(name, matrix, fmt="%.10g",
                                               header=XFM_HEADER.format(source=source).rstrip()), path)


def read_xfm(path: str | os.PathLike) -> np.ndarray:
    """Read a 4x4 matrix written by :func:`write_xfm`."""
    matrix = np.loadtxt(path, comments="#")
    if matrix.shape != (4, 4):
        raise ValueError(f"{path} does not hold a 4x4 matrix")
    return matrix


def to_native(common_img, native_ref, xfm, order: int = 0) -> nib.Nifti1Image:
    """Map an image from the common space onto a session's original grid.

    Parameters
    ----------
    common_img : nibabel image or path
        An image on the common grid (a preprocessed image, a probability map, a mask).
    native_ref : nibabel image or path
        The session's original FLAIR (its grid and affine are used, not its values).
    xfm : ndarray (4, 4) or path
        That session's native-to-common transform (its ``_xfm.txt``).
    order : int
        0 (nearest neighbour) for masks and label maps, 1 (linear) for continuous maps.

    Returns
    -------
    nibabel.Nifti1Image
        On the native grid with the native affine; masks keep their integer dtype, maps are
        float32.
    """
    common_img = nib.load(str(common_img)) if isinstance(common_img, (str, os.PathLike)) else common_img
    native_ref = nib.load(str(native_ref)) if isinstance(native_ref, (str, os.PathLike)) else native_ref
    matrix = read_xfm(xfm) if isinstance(xfm, (str, os.PathLike)) else np.asarray(xfm, dtype=float)
    data = np.asanyarray(common_img.dataobj)
    if order == 0:
        out = resample_to_grid(data, common_img.affine, native_ref.shape[:3], native_ref.affine,
                               world_transform=matrix, order=0)
        out = out.astype(data.dtype)
    else:
        out = resample_to_grid(data.astype(np.float32), common_img.affine, native_ref.shape[:3],
                               native_ref.affine, world_transform=matrix, order=order)
    img = nib.Nifti1Image(out, native_ref.affine)
    img.header.set_xyzt_units("mm")
    return img


def to_common(native_img, xfm, grid_shape, grid_affine) -> np.ndarray:
    """The values of a native-grid mask or label map on the common grid (nearest neighbour).

    The way there, :func:`to_native`'s way back: ``native_img`` (image or path) is an image on a
    session's original grid, e.g. a reference change mask on the follow-up's; ``xfm`` (matrix or
    path) that session's native-to-common transform; ``grid_shape``, ``grid_affine`` the common
    grid. Returns the array on that grid, 0 outside the native field of view.
    """
    native_img = nib.load(str(native_img)) if isinstance(native_img, (str, os.PathLike)) else native_img
    matrix = read_xfm(xfm) if isinstance(xfm, (str, os.PathLike)) else np.asarray(xfm, dtype=float)
    return resample_to_grid(np.asanyarray(native_img.dataobj), native_img.affine, tuple(grid_shape)[:3],
                            grid_affine, world_transform=np.linalg.inv(matrix), order=0)
