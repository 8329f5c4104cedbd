"""Atomic file writers: the one place the package writes a file through a temporary file.

Every writer here writes into a temporary file in the destination's folder and renames it onto
the destination (``os.replace``, atomic on one file system). A reader, or a killed process,
never sees a half-written file at the destination; an error while writing removes the
temporary file and leaves the destination as it was. Written files are readable by the group
and others (mode ``0o644``; ``mkstemp`` alone would leave them private).

:func:`atomic_path` and :func:`atomic_save` serve libraries that write by file name (Keras
``save_weights``, ``np.savez``, ``nib.save``, matplotlib ``savefig``): the temporary name ends
with the destination's name, so a library that picks the format from the extension
(``.nii.gz``, ``.weights.h5``, ``.npz``, ``.svg``) writes the same format.

Only the standard library is imported here; nibabel is imported by :func:`atomic_write_nifti`
when it builds an image.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

#: Permissions of every written file.
FILE_MODE = 0o644
#: Prefix of the temporary files (hidden; a test checks that none is left in the outputs).
TEMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit, rename it onto ``path``.

    The folder of ``path`` is created if needed. The temporary file exists (empty) when the
    block starts, so the block may open it or let a library overwrite it by name. If the block
    raises, the temporary file is removed and ``path`` is left as it was.

    Examples
    --------
    >>> with atomic_path(out / "fig.svg") as tmp:  # doctest: +SKIP
    ...     figure.savefig(tmp, format="svg")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=path.name)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(writer: Callable[[str], Any], path: Path | str) -> Path:
    """Call ``writer(temporary_file_name)`` and rename the result onto ``path``; return ``path``.

    ``writer`` is a function that writes a file by name, e.g. ``model.save_weights`` or
    ``lambda name: np.savez(name, **arrays)``; it receives the name as a ``str``.
    """
    with atomic_path(path) as tmp:
        writer(str(tmp))
    return Path(path)


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` atomically as UTF-8 (no newline translation); return ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, data: Any, *, sort_keys: bool = False) -> Path:
    """Write ``data`` as JSON (indent 2, a final newline) to ``path`` atomically; return ``path``.

    Values JSON has no type for (paths, NumPy scalars) are written as their ``str``.
    ``sort_keys`` sorts the keys of every object; by default they keep their order in ``data``.
    """
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")


def atomic_write_nifti(path: Path | str, image: Any, affine: Any = None, *, dtype: Any = None) -> Path:
    """Write a NIfTI image to ``path`` atomically; return ``path``.

    Parameters
    ----------
    path : path-like
        Destination; ``.nii.gz`` is compressed (nibabel writes gzip without time stamp or name,
        so the bytes do not depend on the temporary name).
    image : nibabel image or array-like
        The image to save as it is, or (when ``affine`` is given) its voxel data.
    affine : (4, 4) array-like, optional
        With array data: the voxel-to-world matrix, written as both the qform and the sform
        (code 1, scanner).
    dtype : NumPy dtype, optional
        With array data: the stored data type (default: the array's own).
    """
    if affine is not None:
        import nibabel as nib
        import numpy as np

        image = nib.Nifti1Image(np.asarray(image, dtype=dtype), affine)
        image.header.set_qform(affine, code=1)
        image.header.set_sform(affine, code=1)
    elif dtype is not None:
        raise ValueError("dtype applies to array data given with an affine, not to an image")

    def save(name: str) -> None:
        import nibabel as nib

        nib.save(image, name)

    return atomic_save(save, path)


def atomic_gzip(src: Path | str, dst: Path | str, *, compresslevel: int = 1) -> Path:
    """Write the gzip of ``src``'s bytes to ``dst`` atomically (an ``.nii`` becomes an ``.nii.gz``); return ``dst``.

    Level 1, as nibabel writes ``.nii.gz``; the gzip header carries no time, so the bytes depend
    only on the content.
    """
    import gzip
    import shutil

    with atomic_path(dst) as tmp:
        with open(src, "rb") as source, open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=compresslevel,
                               mtime=0) as target:
                shutil.copyfileobj(source, target, 1 << 20)
    return Path(dst)


def atomic_copy(src: Path | str, dst: Path | str) -> Path:
    """Copy the bytes of ``src`` to ``dst`` atomically; return ``dst``."""
    return atomic_write_bytes(dst, Path(src).read_bytes())
