"""Entry point of the BIDS-App: parse, log, write settings, then dispatch by level and mode."""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from pathlib import Path

LOGGER = logging.getLogger("bids_lesionchange")


def _setup_logging(settings, log_dir: Path, run_uuid: str) -> Path:
    # 0: INFO from the app, Nipype's node chatter and the libraries at WARNING; -v: the libraries'
    # INFO too (Nipype interfaces, pybids, TensorFlow); -vv: DEBUG.
    level = logging.INFO if settings.verbosity < 2 else logging.DEBUG
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / f"bids_lesionchange-{run_uuid}.log"
    fmt = logging.Formatter("%(asctime)s [%(levelname)s] %(name)s: %(message)s", "%y%m%d-%H:%M:%S")
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if settings.verbosity > 1 else logging.INFO)
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(log_file)):
        handler.setFormatter(fmt)
        handler.setLevel(level)
        root.addHandler(handler)
    for noisy in ("nipype.interface", "nipype.utils", "bids", "bidsschematools", "tensorflow", "absl",
                  "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING if settings.verbosity == 0 else level)
    return log_file


def _validate_bids(bids_dir: Path) -> str | None:
    """Run the BIDS schema validator; return an error summary or None when it passes."""
    import shutil
    import subprocess

    exe = shutil.which("bids-validator-deno") or str(Path(sys.executable).parent / "bids-validator-deno")
    if not Path(exe).exists():
        LOGGER.warning("bids-validator-deno is not installed: skipping BIDS validation")
        return None
    proc = subprocess.run([exe, str(bids_dir), "--ignoreWarnings"], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        return (proc.stdout + proc.stderr).strip()[-3000:]
    return None


def main(argv: list[str] | None = None) -> int:
    """Run bids_lesionchange; return the process exit code (0 ok, 1 a subject failed, 2 usage)."""
    from bids_lesionchange.cli.parser import parse_args

    settings = parse_args(argv)
    run_uuid = time.strftime("%Y%m%d-%H%M%S") + "_" + uuid.uuid4().hex[:8]
    log_dir = settings.output_dir / "logs"
    try:
        settings.output_dir.mkdir(parents=True, exist_ok=True)
        log_file = _setup_logging(settings, log_dir, run_uuid)
    except OSError as err:
        print(f"bids_lesionchange: error: cannot write to {settings.output_dir} ({err}); "
              "choose a writable output directory", file=sys.stderr)
        return 2
    from bids_lesionchange.cli.lock import OutputLocked, lock_output_dir

    try:  # one run at a time per output directory, or per subject for labelled participant runs
        output_lock = lock_output_dir(settings.output_dir, level=settings.analysis_level,
                                      subjects=settings.participant_label if settings.analysis_level ==
                                      "participant" else (), command=settings.command_line)
    except OutputLocked as err:
        LOGGER.error("%s", err)
        print(f"bids_lesionchange: error: {err}", file=sys.stderr)
        return 2
    with output_lock:
        return _run(settings, run_uuid, log_dir, log_file)


def _run(settings, run_uuid: str, log_dir: Path, log_file: Path) -> int:
    """Write the settings, validate the dataset and run the level (the output lock is held)."""
    settings_file = settings.write(log_dir, run_uuid)
    LOGGER.info("bids_lesionchange %s level, mode %s; settings in %s; log in %s",
                settings.analysis_level, settings.mode, settings_file, log_file)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    if not settings.skip_bids_validation:
        problems = _validate_bids(settings.bids_dir)
        if problems:
            LOGGER.error("the BIDS validator found errors in %s:\n%s", settings.bids_dir, problems)
            print(f"bids_lesionchange: error: {settings.bids_dir} is not valid BIDS (see above); "
                  "fix the dataset or pass --skip-bids-validation", file=sys.stderr)
            return 2

    from bids_lesionchange.cli import interrupt, levels

    previous = interrupt.install_signal_handlers()
    try:
        if settings.analysis_level == "participant":
            return levels.run_participant(settings, run_uuid)
        if settings.mode == "train":
            return levels.run_training(settings, run_uuid)
        if settings.mode == "adapt":
            return levels.run_adaptation(settings, run_uuid)
        if settings.mode == "summarise":
            return levels.run_group_summary(settings, run_uuid)
        return levels.run_group_evaluation(settings, run_uuid)
    except levels.UsageProblem as err:
        LOGGER.error("%s", err)
        print(f"bids_lesionchange: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # SIGINT or SIGTERM (interrupt.Interrupted)
        interrupt.stop_child_processes()
        summary = settings.output_dir / "logs" / f"summary-{run_uuid}.tsv"
        so_far = f"; the summary so far is {summary}" if summary.is_file() else ""
        LOGGER.error("stopped by %s: finished outputs are kept%s; to resume, rerun the same command "
                     "with the same work directory (-w %s)", interrupt.signal_name(err), so_far,
                     settings.work_dir)
        return getattr(err, "exit_code", interrupt.EXIT_SIGINT)
    except OSError as err:  # a full disk: say which, what is kept and how to resume (no traceback)
        from bids_lesionchange.cli.diskspace import disk_full_message, is_disk_full

        if not is_disk_full(err):
            raise
        interrupt.stop_child_processes()
        message = disk_full_message(err, settings.work_dir, settings.output_dir)
        raise_exceptions, logging.raiseExceptions = logging.raiseExceptions, False
        try:  # a log file that cannot take the line is no reason for a second traceback
            LOGGER.error("%s", message)
        finally:
            logging.raiseExceptions = raise_exceptions
        print(f"bids_lesionchange: error: {message}", file=sys.stderr)
        return 1
    finally:
        interrupt.restore_signal_handlers(previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
