"""One run at a time per output directory, or per subject at the participant level (issue 16).

Two runs writing one output directory at once mix their files. Every run therefore holds an
advisory lock (``fcntl.flock``) for as long as it runs:

- a ``group`` run, and a ``participant`` run without ``--participant-label`` (it writes every
  subject), lock the whole output directory: ``OUTPUT_DIR/.bids_lesionchange.lock``, exclusively;
- a ``participant`` run with ``--participant-label`` (one SLURM array task per subject, as
  docs/hpc.md shows) shares that lock with the other labelled runs and locks each of its
  subjects exclusively: ``OUTPUT_DIR/.bids_lesionchange.lock.d/sub-<label>.lock``. Runs of
  different subjects go on side by side; two runs of one subject, or a labelled run during a group
  run, do not.

A run that cannot take its lock stops at once (exit 2) with the lock file, the other run's pid,
host, start time and command, and the fix. The operating system releases a lock when its process
ends, however it ends; the holder's details written into the file are cleared on a clean exit, so
details found in a free lock file show a run that was killed (logged as a warning). Lock files are
never deleted by the app (deleting a lock file while another process waits on it would let two
runs in). File systems without ``flock`` (Lustre mounted without ``-o flock``) give a warning and
no lock. Stdlib only.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

LOGGER = logging.getLogger("bids_lesionchange")

#: The lock of a whole output directory.
LOCK_NAME = ".bids_lesionchange.lock"
#: The folder of the per-subject locks of labelled participant runs.
SUBJECT_LOCK_DIR = ".bids_lesionchange.lock.d"
#: A labelled participant run with more subjects than this locks the whole directory instead
#: (each subject lock holds a file descriptor open for the whole run).
MAX_SUBJECT_LOCKS = 256
#: errno values of a file system that does not support flock.
_NO_LOCKING = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


class OutputLocked(RuntimeError):
    """Another run holds a lock this run needs; the message names the lock file, the run and the fix."""


@dataclass
class OutputLock:
    """The locks a run holds; :meth:`release` (or leaving the ``with`` block) gives them back."""

    handles: list = field(default_factory=list)

    def release(self) -> None:
        """Clear this run's details from its exclusive lock files, then unlock and close them."""
        while self.handles:
            handle, exclusive = self.handles.pop()
            try:
                if exclusive:
                    handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)
            except OSError:
                pass
            handle.close()

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holder_details(level: str, subjects, command) -> dict:
    """What a lock file records of the run holding it: pid, host, start time, level, subjects, command."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "level": level,
            "subjects": sorted(subjects) if subjects else "all", "command": " ".join(command)}


def _read_details(path: Path) -> dict:
    try:
        text = path.read_text().strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


def describe_holder(details: dict) -> str:
    """One clause naming the run in ``details``: pid, host, start, level and subjects."""
    if not details:
        return "a run whose details are not recorded"
    subjects = details.get("subjects")
    which = "all subjects" if subjects in (None, "all") else "sub-" + ", sub-".join(subjects)
    text = (f"pid {details.get('pid')} on host {details.get('host')}, started {details.get('started')}, "
            f"{details.get('level')} level for {which}")
    if details.get("host") == socket.gethostname() and not _pid_alive(details.get("pid")):
        text += f"; pid {details.get('pid')} is not running on this host, so the lock is stale"
    return text


def _refusal(output_dir: Path, path: Path, holders: list[dict]) -> OutputLocked:
    who = "; ".join(describe_holder(d) for d in holders) or describe_holder({})
    return OutputLocked(
        f"the output directory {output_dir} is being written by another bids_lesionchange run ({who}); "
        f"lock file: {path}. Wait until that run has finished, or, if it is no longer running (killed, or "
        f"its node is gone), delete {path} and start again")


class _Unsupported(Exception):
    pass


def _try_lock(path: Path, exclusive: bool):
    """Open ``path`` and flock it without waiting; return the handle, or None when it is held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    except OSError as err:
        handle.close()
        if err.errno in _NO_LOCKING:
            raise _Unsupported(str(err)) from None
        raise
    return handle


def _claim(handle, path: Path, details: dict | None) -> None:
    """Write this run's ``details`` into a lock it holds (None: a shared lock, left empty); warn when
    a killed run's details were still there (a stale lock: the flock was free)."""
    previous = _read_details(path)
    if previous:
        LOGGER.warning("%s: the run that held this lock before (%s) ended without releasing it (it was "
                       "killed); rerun its subjects to complete their outputs", path, describe_holder(previous))
    handle.seek(0)
    handle.truncate(0)
    if details:
        handle.write(json.dumps(details) + "\n")
    handle.flush()


def _subject_holders(output_dir: Path) -> list[dict]:
    """The details of the labelled participant runs now holding subject locks in ``output_dir``."""
    holders = []
    for path in sorted((output_dir / SUBJECT_LOCK_DIR).glob("sub-*.lock")):
        handle = _try_lock(path, exclusive=True)
        if handle is None:
            holders.append(_read_details(path))
        else:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
    return holders


def lock_output_dir(output_dir: Path, *, level: str, subjects=(), command=()) -> OutputLock:
    """Take the locks a run of ``level`` on ``subjects`` (labels; empty: all) needs in ``output_dir``.

    Raises
    ------
    OutputLocked
        When another run holds one of them; nothing is locked then.
    """
    output_dir = Path(output_dir)
    details = holder_details(level, subjects, command)
    per_subject = level == "participant" and 0 < len(subjects) <= MAX_SUBJECT_LOCKS
    main = output_dir / LOCK_NAME
    lock = OutputLock()
    try:
        handle = _try_lock(main, exclusive=not per_subject)
        if handle is None:
            holders = [_read_details(main)] if per_subject else \
                [d for d in [_read_details(main)] if d] or _subject_holders(output_dir)
            raise _refusal(output_dir, main, holders)
        lock.handles.append((handle, not per_subject))
        _claim(handle, main, None if per_subject else details)
        if not per_subject:
            return lock
        for subject in sorted(set(subjects)):
            path = output_dir / SUBJECT_LOCK_DIR / f"sub-{subject}.lock"
            handle = _try_lock(path, exclusive=True)
            if handle is None:
                raise _refusal(output_dir, path, [_read_details(path)])
            lock.handles.append((handle, True))
            _claim(handle, path, details)
        return lock
    except _Unsupported as err:
        lock.release()
        LOGGER.warning("the file system of %s does not support locking (%s): a second run writing it at the "
                       "same time would not be detected; do not start two runs on the same subjects", output_dir, err)
        return OutputLock()
    except BaseException:
        lock.release()
        raise
