"""Disk space: warn before a run whose work directory may not fit, and say what to do when a disk fills.

Each pair's work directory keeps its intermediates uncompressed (the 1 mm common grid, registered,
bias-corrected, resolution-matched and normalised images of both sessions; uncompressed for speed,
``docs/benchmarks.md``), about :data:`COPIES_PER_PAIR` float32 volumes of the follow-up's field of
view at 1 mm. A group training run over 46 pairs (4 synthetic, 42 self-pairs) had written 20 GB when
its disk filled (stop 43); a disk that fills halfway stops the run, so the app says beforehand when
the free space looks short, and afterwards names the disk, what is kept and how to resume.
"""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

#: float32 volumes of the follow-up's field of view at 1 mm that one pair leaves in the work
#: directory (measured, stop 43: a self-pair of the synthsr FLAIR with a tilted 6.7 mm follow-up,
#: 123 MB per volume on its common grid, 1.0 GB in all, about 8 volumes; the demo's pairs 0.28 GB
#: against 0.30 GB estimated; 10 leaves a margin for the change-detection nodes and the reports).
COPIES_PER_PAIR = 10
#: Errors that mean the disk (or the user's quota) is full.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: How a crash message (a step's error as text) says so.
DISK_FULL_MESSAGE = re.compile(r"No space left on device|Disk quota exceeded|\[Errno (?:%d|%d)\]"
                               % DISK_FULL_ERRNOS)


def existing_parent(path: Path) -> Path:
    """``path`` or its nearest parent that exists (a work directory may not exist yet)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or would hold it)."""
    return shutil.disk_usage(existing_parent(path)).free


def gigabytes(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def pair_work_bytes(followup_flair: Path) -> int:
    """About how many bytes one pair leaves in the work directory, from its follow-up's header: the
    1 mm common grid the app puts it on (:func:`bids_lesionchange.image.grid.common_grid`, axis-aligned,
    so a tilted 2D acquisition needs a larger grid than its own voxels suggest) x
    :data:`COPIES_PER_PAIR` float32 volumes; 0 when the header cannot be read (the pair's file check
    reports that)."""
    import nibabel as nib
    import numpy as np

    from bids_lesionchange.image.grid import common_grid

    try:
        img = nib.load(str(followup_flair))
        shape, affine = img.shape, np.asarray(img.affine, dtype=float)
    except Exception:  # noqa: BLE001 - any unreadable header counts as nothing here
        return 0
    if len(shape) < 3 or not np.all(np.isfinite(affine)):
        return 0
    grid_shape, _ = common_grid(shape, affine, 1.0)
    return int(np.prod(grid_shape)) * 4 * COPIES_PER_PAIR


def space_warning(work_dir: Path, pending_followups: list[Path], *, free: int | None = None) -> str | None:
    """One sentence when the work directory's disk has less free space than the pairs not yet
    started there (``pending_followups``: their follow-up FLAIRs) will need, else None."""
    if not pending_followups:
        return None
    need = sum(pair_work_bytes(f) for f in pending_followups)
    free = free_bytes(work_dir) if free is None else free
    if need <= free:
        return None
    return (f"the work directory {work_dir} is on a disk with {gigabytes(free)} free, and the "
            f"{len(pending_followups)} pair(s) still to run there keep about {gigabytes(need)} of "
            f"intermediates (about {COPIES_PER_PAIR} uncompressed 1 mm volumes each); free space or give "
            "a work directory on a larger disk (-w), or run fewer subjects at a time "
            "(--participant-label). The run goes on and stops if the disk fills.")


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) says the disk or the quota is full."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return True
        err = err.__cause__ or err.__context__
    return False


def disk_full_sentence(work_dir: Path, output_dir: Path) -> str:
    """How much is free where, what is kept and how to resume, after a disk filled."""
    disks = []
    for label, path in (("work directory", work_dir), ("output directory", output_dir)):
        try:
            disks.append(f"{label} {path}: {gigabytes(free_bytes(path))} free")
        except OSError:
            disks.append(f"{label} {path}")
    return (f"{'; '.join(disks)}. Outputs already written are kept. Free space (the work directory keeps "
            "every pair's intermediates; delete the work directories of finished runs) or give a work "
            "directory on a larger disk (-w), then rerun the same command: with the same work directory it "
            "resumes where it stopped.")


def disk_full_message(err: OSError, work_dir: Path, output_dir: Path) -> str:
    """The sentence a user reads when a disk filled during a run: which file, how much is free
    where, what is kept and how to resume."""
    where = f" while writing {err.filename}" if getattr(err, "filename", None) else ""
    return f"the disk is full{where} ({disk_full_sentence(work_dir, output_dir)})"
