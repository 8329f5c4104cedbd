"""One run at a time per output directory, or per subject for labelled participant runs (issue 16)."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket

import pytest

from bids_lesionchange.cli import lock as lockmod
from bids_lesionchange.cli.lock import LOCK_NAME, SUBJECT_LOCK_DIR, OutputLocked, lock_output_dir


def test_a_second_group_run_is_refused_with_the_lock_file_the_holder_and_the_fix(tmp_path):
    with lock_output_dir(tmp_path, level="group", command=["bids_lesionchange", "a", "b", "group"]):
        details = json.loads((tmp_path / LOCK_NAME).read_text())
        assert details["pid"] == os.getpid() and details["host"] == socket.gethostname()
        with pytest.raises(OutputLocked) as err:
            lock_output_dir(tmp_path, level="group")
    text = str(err.value)
    assert f"lock file: {tmp_path / LOCK_NAME}" in text
    assert f"pid {os.getpid()} on host {socket.gethostname()}, started {details['started']}" in text
    assert "Wait until that run has finished" in text and f"delete {tmp_path / LOCK_NAME} and start again" in text
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released cleanly: no details left
    with lock_output_dir(tmp_path, level="group"):  # free again
        pass


def test_labelled_participant_runs_of_different_subjects_go_on_side_by_side(tmp_path):
    """SLURM array tasks (docs/hpc.md) write one output directory, one subject each."""
    with lock_output_dir(tmp_path, level="participant", subjects=("01",)), \
            lock_output_dir(tmp_path, level="participant", subjects=("02", "03")):
        assert sorted(p.name for p in (tmp_path / SUBJECT_LOCK_DIR).iterdir()) == \
            ["sub-01.lock", "sub-02.lock", "sub-03.lock"]
        with pytest.raises(OutputLocked, match=r"participant level for sub-02, sub-03\); lock file: .*sub-02\.lock"):
            lock_output_dir(tmp_path, level="participant", subjects=("03", "02"))
        # a run of every subject, or a group run, overlaps them: refused, naming both runs
        for level, subjects in (("participant", ()), ("group", ())):
            with pytest.raises(OutputLocked) as err:
                lock_output_dir(tmp_path, level=level, subjects=subjects)
            assert "for sub-01" in str(err.value) and "for sub-02, sub-03" in str(err.value)
        # the refused run took nothing: sub-01 stays with its holder only
        with pytest.raises(OutputLocked, match="sub-01.lock"):
            lock_output_dir(tmp_path, level="participant", subjects=("01",))


def test_a_labelled_run_during_a_group_run_is_refused(tmp_path):
    with lock_output_dir(tmp_path, level="group"):
        with pytest.raises(OutputLocked, match=r"group level for all subjects\); lock file: .*\.bids_lesionchange\.lock\."):
            lock_output_dir(tmp_path, level="participant", subjects=("01",))
    assert not list((tmp_path / SUBJECT_LOCK_DIR).glob("*.lock")) or \
        all(p.read_text() == "" for p in (tmp_path / SUBJECT_LOCK_DIR).glob("*.lock"))


def test_a_killed_runs_lock_is_stale_taken_over_with_a_warning(tmp_path, caplog):
    """The flock of a killed process is free; the details it wrote say which run died."""
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "node7", "started": "yesterday",
                                                  "level": "group", "subjects": "all"}))
    with caplog.at_level(logging.WARNING, logger="bids_lesionchange"):
        with lock_output_dir(tmp_path, level="group"):
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "pid 999999 on host node7, started yesterday" in caplog.text
    assert "ended without releasing it (it was killed)" in caplog.text


def test_a_held_lock_of_a_dead_pid_on_this_host_is_called_stale(tmp_path):
    """As after a crash on NFS, when the server still holds a dead client's lock."""
    text = lockmod.describe_holder({"pid": 999999, "host": socket.gethostname(), "started": "t",
                                    "level": "group", "subjects": "all"})
    assert "pid 999999 is not running on this host, so the lock is stale" in text


def test_a_file_system_without_flock_warns_and_runs_without_a_lock(tmp_path, monkeypatch, caplog):
    def no_flock(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lockmod.fcntl, "flock", no_flock)
    with caplog.at_level(logging.WARNING, logger="bids_lesionchange"):
        held = lock_output_dir(tmp_path, level="group")
    assert held.handles == [] and "does not support locking" in caplog.text
