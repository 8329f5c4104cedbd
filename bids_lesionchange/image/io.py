"""Load a FLAIR image and refuse, with the file, the step and the fix, anything that is not one."""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_lesionchange.atomic import atomic_write_nifti
from bids_lesionchange.errors import InputError

LOGGER = logging.getLogger("bids_lesionchange.image.io")

#: Voxel sizes outside this range are a header in other units (metres, micrometres), not a scan.
#: A real but too coarse scan (slices of 7-30 mm) is refused later with its own reason
#: (:func:`bids_lesionchange.image.plausibility.check_voxel_size`).
MIN_ZOOM_MM = 0.1
MAX_ZOOM_MM = 30.0
MIN_VOXELS_PER_AXIS = 8

#: A qform and an sform that place a field-of-view corner further apart than this (mm) disagree:
#: tools that read the other one put the image elsewhere. Far above the float32 rounding of a qform
#: (about 1e-4 mm over 250 mm), far below any voxel.
MAX_QFORM_SFORM_MM = 0.01

#: What a damaged image file raises while its data are read (truncated gzip: EOFError; gzip data
#: shorter than the header says: OSError "Expected N bytes"; corrupt deflate data: zlib.error).
READ_ERRORS = (EOFError, OSError, zlib.error, ValueError)
INPUT_FIX = "re-export it from the scanner data or copy it again from its source"


def _damage(err: BaseException) -> str:
    """The kind of damage a read error means, as a clause for a message."""
    if isinstance(err, EOFError):
        return "the file is truncated: its compressed data end before the image does"
    text = str(err).split("\n")[0].strip()
    if text.startswith("Expected") and "bytes" in text:
        text = text.removesuffix("from").strip()
        return (f"the file holds less image data than its header announces ({text}): "
                "it was cut short when written or copied")
    return f"the file is corrupt ({type(err).__name__}: {text})"


def _expected_size(img) -> int | None:
    """Bytes of a single-file NIfTI (header + data) as its header announces, or None if unknown."""
    try:
        offset = int(img.dataobj.offset)  # img.header is a copy whose offset is reset
        itemsize = int(img.dataobj.dtype.itemsize)
        count = int(np.prod(img.shape, dtype=np.int64))
    except (AttributeError, TypeError, ValueError):
        return None
    return offset + itemsize * count


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _read_gzip(path: Path, step: str, fix: str) -> int:
    """Decompress a gzip file in full; return its uncompressed size or raise InputError if damaged."""
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 22):
                total += len(chunk)
    except READ_ERRORS as err:
        raise InputError(path, step, f"{_damage(err)}; {fix}") from None
    return total


def check_image_file(path: str | os.PathLike, *, step: str = "check_inputs",
                     fix: str = INPUT_FIX) -> None:
    """Check that ``path`` is a complete NIfTI file, without loading its data into memory.

    A broken symbolic link, a missing file, an unreadable header, a truncated ``.nii.gz`` (its
    gzip stream ends early) or gzip data shorter than the header announces are refused with one
    sentence naming the file and ``fix``. A ``.nii.gz`` is checked by its gzip trailer (the
    uncompressed size, O(1)) and decompressed in full only when that does not match (multi-member
    gzip files, or damage); a ``.nii`` by its size. A qform that disagrees with the sform is
    logged as a warning (:func:`qform_sform_note`; the preprocessing QC flags it too).

    Raises
    ------
    bids_lesionchange.errors.InputError
    """
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            target = os.readlink(path)
            raise InputError(path, step, f"the file is a symbolic link to {target}, which does not exist "
                             "(an unfetched annexed file or a moved target); fetch or restore the target "
                             "(e.g. `datalad get`), or replace the link by the file")
        raise InputError(path, step, "the file does not exist (it was removed or moved after the "
                         "dataset was indexed); restore it or remove that session from the dataset")
    if not path.is_file():
        raise InputError(path, step, "this is not a regular file; give a .nii or .nii.gz image")
    try:
        img = nib.load(str(path))
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for a broken header
        if _is_gzip(path):
            _read_gzip(path, step, fix)  # a damaged stream says so rather than "not NIfTI"
        raise InputError(path, step, f"the file cannot be read as NIfTI ({err}); {fix}") from None
    note = qform_sform_note(path, img)
    if note:
        LOGGER.warning("%s", note)
    expected = _expected_size(img)
    if expected is None:
        return
    if path.name.endswith(".gz"):
        with open(path, "rb") as handle:
            handle.seek(-4, os.SEEK_END)
            if struct.unpack("<I", handle.read(4))[0] == expected % 2 ** 32:
                return
        total = _read_gzip(path, step, fix)
    else:
        total = path.stat().st_size
    if total < expected:
        raise InputError(path, step, f"the file holds {total} bytes but its header announces "
                         f"{expected} (header and image data): it was cut short when written or copied; {fix}")


def qform_sform_distance(img) -> float | None:
    """Largest distance (mm) between where the qform and the sform put a corner of the field of view.

    None unless the header has both, each with a code above 0 (only then can they disagree: with
    one code at 0, nibabel and other tools use the other one).
    """
    header = img.header
    if not hasattr(header, "get_qform"):
        return None
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if not qcode or not scode or qform is None or sform is None:
        return None
    corners = np.array([[i, j, k, 1.0] for i in (0, img.shape[0] - 1) for j in (0, img.shape[1] - 1)
                        for k in (0, img.shape[2] - 1)])
    return float(np.max(np.linalg.norm((corners @ (sform - qform).T)[:, :3], axis=1)))


def qform_sform_note(path: str | os.PathLike, img=None) -> str | None:
    """The sentence flagging an image whose qform and sform disagree (:data:`MAX_QFORM_SFORM_MM`), or None.

    The sform is used (nibabel's rule, as most tools: the sform whenever its code is above 0).
    """
    img = nib.load(str(path)) if img is None else img
    distance = qform_sform_distance(img)
    if distance is None or distance <= MAX_QFORM_SFORM_MM:
        return None
    return (f"{Path(path).name}: its qform and sform disagree (they place the field of view up to "
            f"{distance:.2f} mm apart; qform code {int(img.header['qform_code'])}, sform code "
            f"{int(img.header['sform_code'])}); the sform is used (nibabel's rule: the sform when its code is "
            "above 0); if the qform is the right one, copy it to the sform (e.g. fslorient -copyqform2sform) "
            "and rerun")


def corrupt_image_in(paths, *, step: str) -> InputError | None:
    """The first of ``paths`` (NIfTI files) that :func:`check_image_file` refuses, as its error."""
    for path in paths:
        try:
            check_image_file(path, step=step)
        except InputError as err:
            return err
    return None


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
        values, or has voxel sizes outside [0.1, 30] mm.
    """
    path = Path(path)
    if not path.exists():
        check_image_file(path, step=step)  # says why: a broken link or a missing file
    try:
        img = nib.load(str(path))
    except (EOFError, zlib.error) as err:
        raise InputError(path, step, f"{_damage(err)}; {INPUT_FIX}") from None
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for a broken file
        if _is_gzip(path):
            _read_gzip(path, step, INPUT_FIX)  # a damaged stream says so rather than "not NIfTI"
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
    try:
        data = np.asanyarray(img.dataobj, dtype=np.float32).reshape(shape)
    except READ_ERRORS as err:
        raise InputError(path, step, f"{_damage(err)}; {INPUT_FIX}") from None
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
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.header.set_xyzt_units("mm")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    return atomic_write_nifti(path, img)
