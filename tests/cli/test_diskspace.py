"""A full disk: a warning before the run when the work directory's disk looks short, and one sentence
(which file, how much is free where, what is kept, how to resume) instead of a traceback when it fills."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bids_lesionchange.cli import diskspace


pytestmark = pytest.mark.usefixtures("restore_root_logging")


def _flair(path: Path, shape=(100, 100, 50), zooms=(1.0, 1.0, 3.0)) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.diag([*zooms, 1.0])), str(path))
    return path


def test_a_pairs_share_of_the_work_dir_follows_its_follow_ups_field_of_view_at_1_mm(tmp_path):
    thick = diskspace.pair_work_bytes(_flair(tmp_path / "a.nii.gz"))
    iso = diskspace.pair_work_bytes(_flair(tmp_path / "b.nii.gz", shape=(100, 100, 150), zooms=(1.0, 1.0, 1.0)))
    assert thick == iso == 100 * 100 * 150 * 4 * diskspace.COPIES_PER_PAIR
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    assert diskspace.pair_work_bytes(tmp_path / "broken.nii.gz") == 0


def test_the_warning_names_the_work_dir_the_free_space_the_need_and_the_fix(tmp_path):
    followups = [_flair(tmp_path / f"f{k}.nii.gz") for k in range(3)]
    need = 3 * diskspace.pair_work_bytes(followups[0])
    work = tmp_path / "work" / "not-yet"
    message = diskspace.space_warning(work, followups, free=need - 1)
    assert message.startswith(f"the work directory {work} is on a disk with ")
    assert "the 3 pair(s) still to run there keep about 0.2 GB" in message
    assert "-w" in message and "--participant-label" in message
    assert diskspace.space_warning(work, followups, free=need) is None
    assert diskspace.space_warning(work, [], free=0) is None


def test_only_pairs_not_yet_started_in_the_work_dir_count(tmp_path, monkeypatch, caplog):
    from bids_lesionchange.cli import levels
    from bids_lesionchange.discovery import SessionPair

    pairs = [SessionPair(s, "01", "02", _flair(tmp_path / f"{s}_1.nii.gz"), _flair(tmp_path / f"{s}_2.nii.gz"))
             for s in ("01", "02")]
    work = tmp_path / "work"
    (work / "wf" / "sub_01_ses_01to02_wf").mkdir(parents=True)  # resumed: its intermediates are there
    seen = {}

    def fake_warning(work_dir, pending, free=None):
        seen["pending"] = pending
        return "short"

    monkeypatch.setattr(diskspace, "space_warning", fake_warning)
    with caplog.at_level(logging.WARNING):
        levels._warn_if_work_dir_short(SimpleNamespace(name="wf"), work, pairs)
    assert seen["pending"] == [pairs[1].followup_flair]
    assert "short" in caplog.text


def test_disk_full_is_recognised_through_a_chain_of_errors():
    full = OSError(errno.ENOSPC, "No space left on device", "/w/x.nii")
    try:
        try:
            raise full
        except OSError as err:
            raise RuntimeError("the node crashed") from err
    except RuntimeError as chained:
        assert diskspace.is_disk_full(chained)
    assert diskspace.is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not diskspace.is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_a_full_disk_during_training_ends_with_one_sentence_and_exit_1(tiny_bids, tmp_path, capsys, monkeypatch):
    from bids_lesionchange.cli import interrupt, levels
    from bids_lesionchange.cli.run import main

    crash = tmp_path / "work" / "crash-1.txt"

    def fills_the_disk(settings, run_uuid):
        raise OSError(errno.ENOSPC, "No space left on device", str(crash))

    monkeypatch.setattr(levels, "run_training", fills_the_disk)
    stopped = []  # the run's own worker processes are ended (not the test runner's)
    monkeypatch.setattr(interrupt, "stop_child_processes", lambda: stopped.append(True))
    out = tmp_path / "out"
    code = main([str(tiny_bids), str(out), "group", "--mode", "train", "--skip-bids-validation",
                 "-w", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and stopped == [True]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"bids_lesionchange: error: the disk is full while writing {crash} (work directory "
                           f"{tmp_path / 'work'}: ")
    assert f"output directory {out}: " in last and "Outputs already written are kept" in last
    assert "rerun the same command: with the same work directory it resumes" in last


def test_other_os_errors_are_not_reported_as_a_full_disk(tiny_bids, tmp_path, monkeypatch):
    from bids_lesionchange.cli import levels
    from bids_lesionchange.cli.run import main

    def denied(settings, run_uuid):
        raise OSError(errno.EACCES, "Permission denied", "/somewhere")

    monkeypatch.setattr(levels, "run_training", denied)
    with pytest.raises(PermissionError):
        main([str(tiny_bids), str(tmp_path / "out"), "group", "--mode", "train", "--skip-bids-validation",
              "-w", str(tmp_path / "work")])


def test_a_pair_that_failed_on_a_full_disk_is_told_where_and_how_to_resume(tmp_path):
    from bids_lesionchange.cli.levels import explain_disk_full

    work, out = tmp_path / "work", tmp_path / "out"
    for message in ("OSError: [Errno 28] No space left on device", "OSError: [Errno 122] Disk quota exceeded"):
        explained = explain_disk_full(message, work, out)
        assert explained.startswith(f"{message} (work directory {work}: ")
        assert f"output directory {out}: " in explained and "-w" in explained and "resumes" in explained
    assert explain_disk_full("ValueError: bad shape", work, out) == "ValueError: bad shape"


def test_a_tilted_follow_up_needs_the_axis_aligned_box_around_its_field_of_view(tmp_path):
    import nibabel as nib

    angle = np.deg2rad(45.0)
    affine = np.eye(4)
    affine[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    path = tmp_path / "tilted.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((100, 100, 50), np.int16), affine), str(path))
    side = 142  # a 100 mm square turned by 45 degrees spans 141.4 mm along x and y: 142 voxels of 1 mm
    assert diskspace.pair_work_bytes(path) == side * side * 50 * 4 * diskspace.COPIES_PER_PAIR
