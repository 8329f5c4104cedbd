"""Load a FLAIR image and refuse, with the file, the step and the fix, anything that is not one."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_lesionchange.errors import InputError

LOGGER = logging.getLogger("bids_lesionchange.image.io")

MIN_ZOOM_MM = 0.1
MAX_ZOOM_MM = 10.0
MIN_VOXELS_PER_AXIS = 8


def load_flair(path: str | os.PathLike, *, step: str = "load") -> nib.Nifti1Image:
    """Load a 3D FLAIR and check that it can be preprocessed.

    A 4D image with one volume is accepted and squeezed to 3D.

    Parameters
    ----------
    path : path-like
        A NIfTI file.
    step : str
        The processing step named in the error message.

    Returns
    -------
    nibabel.Nifti1Image
        The image with float32 data (loaded in memory).

    Raises
    ------
    bids_lesionchange.errors.InputError
        When the file cannot be read, is not 3D, is all zero or constant, holds NaN or infinite
        values, or has voxel sizes outside [0.1, 10] mm.
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for a broken file
        raise InputError(path, step, f"the file cannot be read as NIfTI ({err}); "
                         "give a valid .nii or .nii.gz FLAIR image") from None
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(path, step, f"the image has shape {img.shape} but a 3D FLAIR is needed; "
                         "give a single 3D volume (split 4D series and drop 2D slices)")
    if min(shape) < MIN_VOXELS_PER_AXIS:
        raise InputError(path, step, f"the image has shape {shape}: fewer than "
                         f"{MIN_VOXELS_PER_AXIS} voxels along an axis, so it is a 2D or "
                         "multi-slice image; give a 3D FLAIR acquisition")
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    if not np.all(np.isfinite(zooms)) or np.any(zooms < MIN_ZOOM_MM) or np.any(zooms > MAX_ZOOM_MM):
        raise InputError(path, step, f"the voxel size {tuple(np.round(zooms, 3))} mm is outside "
                         f"[{MIN_ZOOM_MM}, {MAX_ZOOM_MM}] mm; fix the header (pixdim/sform) "
                         "so that it gives the voxel size in millimetres")
    affine = img.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(path, step, "the image's affine (sform/qform) is singular or not "
                         "finite; fix the header so that it maps voxels to scanner space")
    data = np.asanyarray(img.dataobj, dtype=np.float32).reshape(shape)
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise InputError(path, step, f"the image holds {bad} NaN or infinite values; "
                         "re-export it from the scanner data or replace them by 0")
    if not np.any(data):
        raise InputError(path, step, "the image is all zero; check that the right file "
                         "was given and that its conversion to NIfTI worked")
    if float(data.max()) == float(data.min()):
        raise InputError(path, step, "the image has one constant value and holds no anatomy; "
                         "check the file and its conversion to NIfTI")
    out = nib.Nifti1Image(data, affine)
    out.header.set_xyzt_units("mm")
    return out


def save_image(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike,
               dtype=np.float32) -> Path:
    """Write ``data`` as NIfTI with ``affine`` (sform and qform) and the given dtype.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    path = Path(path)
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.header.set_xyzt_units("mm")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    tmp = path.with_name(path.name + ".part.nii.gz") if path.name.endswith(".gz") \
        else path.with_name(path.name + ".part.nii")
    nib.save(img, str(tmp))
    os.replace(tmp, path)
    return path
