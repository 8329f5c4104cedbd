"""Stopping a run cleanly on SIGTERM or SIGINT: no orphan worker, a summary, a line saying how to resume.

SIGINT already raises :class:`KeyboardInterrupt` in the main thread; :func:`install_sigterm_handler`
makes SIGTERM (what ``kill``, ``docker stop``, ``scancel`` and job time limits send) raise
:class:`Interrupted`, a subclass, so both unwind through the same code. :func:`stop_child_processes`
then ends the processes this run started (Nipype's MultiProc workers and whatever they run, such
as HD-BET), by their process ids, before the summary is written.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

LOGGER = logging.getLogger("bids_lesionchange")

#: Exit code of a run stopped by a signal: 128 + the signal number (the shell's convention).
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; ``signal_name`` says which (``SIGINT`` or ``SIGTERM``)."""

    def __init__(self, signal_name: str = "SIGINT"):
        super().__init__(signal_name)
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        """128 + the signal number."""
        return EXIT_SIGTERM if self.signal_name == "SIGTERM" else EXIT_SIGINT


def signal_name(err: BaseException) -> str:
    """``SIGTERM`` for an :class:`Interrupted` by SIGTERM, else ``SIGINT`` (a plain KeyboardInterrupt)."""
    return getattr(err, "signal_name", "SIGINT")


#: The signal that asked the run to stop (empty until one arrives).
_REQUESTED: list[str] = []


def stop_requested() -> str | None:
    """The name of the signal that asked this run to stop, or None."""
    return _REQUESTED[0] if _REQUESTED else None


def raise_if_stopped(*_args) -> None:
    """A Nipype ``status_callback``: raise :class:`Interrupted` once a stop was requested.

    Nipype turns an exception inside a node (even KeyboardInterrupt) into a node crash and the
    Linear plugin goes on with the next node; the status callback runs outside that guard, so
    the run stops at the next node boundary.
    """
    if _REQUESTED:
        raise Interrupted(_REQUESTED[0])


def install_signal_handlers() -> dict:
    """Make SIGTERM and SIGINT raise :class:`Interrupted` in the main process and record the stop
    (once; later signals are ignored while the run stops, so a second one does not cut the summary
    short). Return the previous handlers, for :func:`restore_signal_handlers`."""
    main_pid = os.getpid()
    _REQUESTED.clear()

    def handler(signum, frame):  # noqa: ARG001 - the signal API
        if os.getpid() != main_pid:  # a forked worker inherited this handler: end as by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        name = signal.Signals(signum).name
        if _REQUESTED:
            return
        _REQUESTED.append(name)
        raise Interrupted(name)

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)
    return previous


def restore_signal_handlers(previous: dict) -> None:
    """Put back the handlers :func:`install_signal_handlers` replaced."""
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _children_by_parent() -> dict[int, list[int]]:
    """Every process's children, from /proc (Linux); empty where /proc is not available."""
    children: dict[int, list[int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return children
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendant_pids(pid: int | None = None) -> list[int]:
    """The process ids of every descendant of ``pid`` (default: this process), deepest first."""
    import multiprocessing

    root = os.getpid() if pid is None else pid
    tree = _children_by_parent()
    found: list[int] = []
    stack = list(tree.get(root, []))
    if not tree and root == os.getpid():  # no /proc: the multiprocessing children at least
        stack = [p.pid for p in multiprocessing.active_children() if p.pid]
    while stack:
        child = stack.pop()
        if child in found:
            continue
        found.append(child)
        stack.extend(tree.get(child, []))
    return list(reversed(found))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (ended, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stop_child_processes(timeout: float = 5.0) -> list[int]:
    """End every process this run started: SIGTERM, then SIGKILL after ``timeout`` s; return their ids."""
    import multiprocessing

    # The executor of Nipype's MultiProc logs a BrokenProcessPool traceback per running task when
    # its workers end: expected here, and no use to the user.
    logging.getLogger("concurrent.futures").setLevel(logging.CRITICAL)
    pids = descendant_pids()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        multiprocessing.active_children()  # reaps ended multiprocessing children
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    multiprocessing.active_children()
    if pids:
        LOGGER.info("stopped %d worker process(es): %s", len(pids), " ".join(map(str, pids)))
    return pids
