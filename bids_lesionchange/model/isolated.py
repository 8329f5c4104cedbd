"""Run a TensorFlow step in a process of its own, which ends (and frees its memory) with the step.

TensorFlow's oneDNN allocator keeps the memory of a forward pass after it (the predict step of a 1 mm
pair: about 1.7 GB of a 2.1 GB worker, measured with ``benchmarks/end_to_end.py``), and a Nipype worker
lives as long as the run: every later node of that worker, of this subject and of the next ones,
would run beside memory nobody uses, and ``--mem-gb``'s per-node accounting would be wrong by that
much. In a process of its own the step gives everything back when it ends, and TensorFlow's thread
settings (fixed once per process) are those of this step.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import types


LOGGER = logging.getLogger(__name__)


class ChildTraceback(Exception):
    """Where an exception was raised in the isolated process (the cause of the re-raised exception)."""


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


class _ToLoggers:
    """Hand each log record of the isolated process to the caller's logger of the same name."""

    @staticmethod
    def handle(record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


def _child(connection, log_queue, log_level: int, function, args, kwargs) -> None:
    """Run the step, send its result or its exception, and end at once.

    Log records go to the caller through ``log_queue`` (a spawned process has no handlers, and the
    app's log file belongs to the caller). ``os._exit`` skips the interpreter's teardown
    (TensorFlow's takes about 0.8 s after a 1 mm pass): the result is sent, the step's files are
    written and closed, and the memory goes back at exit.
    """
    import traceback
    from logging.handlers import QueueHandler

    root = logging.getLogger()
    root.handlers = [QueueHandler(log_queue)]
    root.setLevel(log_level)

    try:
        message = ("result", function(*args, **kwargs), "")
    except BaseException as err:  # noqa: BLE001 - every failure goes back to the caller
        message = ("error", err, traceback.format_exc())
    try:
        connection.send(message)
    except Exception as err:  # noqa: BLE001 - a result or an exception that cannot be pickled
        connection.send(("error", RuntimeError(f"the step's {message[0]} could not be sent back ({err})"),
                         message[2]))
    connection.close()
    log_queue.close()
    log_queue.join_thread()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _in_this_process(step: str, err: Exception, function, args, kwargs):
    LOGGER.warning("%s: cannot start a process of its own (%s); running it in this one, which keeps "
                   "the step's memory (about 2 GB for a 1 mm pair) until the run ends", step, err)
    return function(*args, **kwargs)


def run_isolated(step: str, function, *args, **kwargs):
    """Return ``function(*args, **kwargs)`` computed in a new (spawned) Python process.

    ``function`` must be importable by its module and name (not defined in a main script).

    An exception raised by ``function`` is raised here as itself, its traceback in the child as its
    cause. A process that dies without one (killed by the kernel's out-of-memory killer, a crash of
    a native library) raises a ``RuntimeError`` that names ``step``, the cause and the fix. Where
    no process can be started, the step runs in this one, with a warning.
    """
    import multiprocessing
    from logging.handlers import QueueListener

    context = multiprocessing.get_context("spawn")
    try:
        receive, send = context.Pipe(duplex=False)
        log_queue = context.Queue()
    except (OSError, ImportError) as err:  # no semaphores (no /dev/shm), no file descriptors left
        return _in_this_process(step, err, function, args, kwargs)
    listener = QueueListener(log_queue, _ToLoggers())
    listener.start()
    # the records the caller would log: the app's own may be more verbose than the root logger
    level = min(logging.getLogger().getEffectiveLevel(), logging.getLogger("bids_lesionchange").getEffectiveLevel())
    process = context.Process(target=_child, name=f"bids_lesionchange-{step}",
                              args=(send, log_queue, level, function, args, kwargs))
    # A spawned process runs the caller's main script again unless it is guarded by
    # ``if __name__ == "__main__"``, and the scripts Nipype's batch plugins (SLURM, SGE, PBS) run a
    # node with are not: the child would run the whole node again. The child needs nothing from
    # the main module (``function`` must be importable), so it is shown an empty one.
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    not_started = None
    try:
        process.start()
    except OSError as err:  # a limit on processes, no memory for one more
        not_started = err
    finally:
        if main is not None:
            sys.modules["__main__"] = main
    send.close()
    if not_started is not None:
        listener.stop()
        receive.close()
        return _in_this_process(step, not_started, function, args, kwargs)
    answered = False
    try:
        kind, value, where = receive.recv()
        answered = True
    except EOFError:
        process.join()
        code = process.exitcode
        died = (f"was killed by {_signal_name(-code)}" if code is not None and code < 0
                else f"ended with exit code {code}")
        raise RuntimeError(
            f"{step}: the process running it {died} before it finished. Most often the machine ran "
            "out of memory (a 1 mm pair needs about 2 GB for this step): give the run more memory, "
            "or run fewer subjects at once (--nprocs, --mem-gb)") from None
    finally:
        receive.close()
        if not answered and process.is_alive():  # the caller was interrupted (Ctrl-C, a stop signal)
            process.kill()
        process.join()
        listener.stop()  # after the last record the process sent
    if kind == "error":
        raise value from ChildTraceback(where.rstrip())
    return value
