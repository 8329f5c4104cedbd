"""Pairing of FLAIR sessions with pybids, and the reasons subjects are skipped."""

from pathlib import Path

import pytest

from bids_lesionchange.discovery import find_pairs, nochange_subjects
from tests.conftest import make_bids


def test_pairs_and_skipped_subjects(tiny_bids: Path):
    pairs, skipped = find_pairs(tiny_bids)
    assert [p.name for p in pairs] == [
        "sub-01_ses-01to02", "sub-02_ses-01to02", "sub-02_ses-02to03",
    ]
    assert pairs[0].baseline_flair.name == "sub-01_ses-01_FLAIR.nii.gz"
    assert pairs[0].followup_flair.name == "sub-01_ses-02_FLAIR.nii.gz"
    reasons = {s.subject: s.reason for s in skipped}
    assert set(reasons) == {"03", "04", "05"}
    assert "only one session" in reasons["03"]
    assert "no FLAIR" in reasons["04"]
    assert "no run/acq" in reasons["05"]


def test_participant_and_session_selection(tiny_bids: Path):
    pairs, skipped = find_pairs(tiny_bids, participant_label=["02"], session_label=["01", "03"])
    assert [p.name for p in pairs] == ["sub-02_ses-01to03"]
    assert skipped == []


def test_runs_are_told_apart(tmp_path: Path):
    root = make_bids(tmp_path / "b", {"01": [
        "ses-01/anat/sub-01_ses-01_run-1_FLAIR.nii.gz",
        "ses-01/anat/sub-01_ses-01_run-2_FLAIR.nii.gz",
        "ses-02/anat/sub-01_ses-02_FLAIR.nii.gz",
    ]})
    pairs, skipped = find_pairs(root)
    assert len(pairs) == 1 and not skipped
    assert pairs[0].baseline_flair.name == "sub-01_ses-01_run-1_FLAIR.nii.gz"


def test_nochange_subjects_from_tsv_and_labels(tiny_bids: Path):
    assert nochange_subjects(tiny_bids) == ["01", "03"]
    assert nochange_subjects(tiny_bids, labels=("05",)) == ["05"]
    with pytest.raises(ValueError, match="no column 'cohort'"):
        nochange_subjects(tiny_bids, column="cohort")
