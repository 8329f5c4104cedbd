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


# --- which session came first -------------------------------------------------------------

def _two_sessions(tmp_path: Path, first: str, second: str, subject: str = "01") -> Path:
    return make_bids(tmp_path / "b", {subject: [
        f"ses-{first}/anat/sub-{subject}_ses-{first}_FLAIR.nii.gz",
        f"ses-{second}/anat/sub-{subject}_ses-{second}_FLAIR.nii.gz",
    ]})


@pytest.mark.parametrize("labels, order", [
    (["10", "2", "1"], ["1", "2", "10"]),              # text order would pair 1->10 and 10->2
    (["M12", "M6", "baseline"], ["baseline", "M6", "M12"]),
    (["post", "pre"], ["pre", "post"]),                # text order would pair post->pre
    (["followup", "baseline"], ["baseline", "followup"]),
    (["fu2", "bl", "fu1"], ["bl", "fu1", "fu2"]),
    (["1b", "1a"], ["1a", "1b"]),
    (["time2", "time1"], ["time1", "time2"]),
])
def test_label_order_when_the_labels_say_it(labels, order):
    from bids_lesionchange.discovery import label_order
    assert label_order(labels) == order


@pytest.mark.parametrize("labels", [["mri", "rescan"], ["scanA", "rescan"], ["a1", "b"]])
def test_label_order_refuses_labels_that_do_not_say_it(labels):
    from bids_lesionchange.discovery import label_order
    assert label_order(labels) is None


def test_sessions_numbered_past_nine_pair_in_number_order(tmp_path: Path):
    root = make_bids(tmp_path / "b", {"01": [
        f"ses-{s}/anat/sub-01_ses-{s}_FLAIR.nii.gz" for s in ("1", "2", "10")]})
    pairs, skipped = find_pairs(root)
    assert [p.name for p in pairs] == ["sub-01_ses-1to2", "sub-01_ses-2to10"] and not skipped


def test_pre_and_post_pair_pre_to_post(tmp_path: Path):
    pairs, _ = find_pairs(_two_sessions(tmp_path, "post", "pre"))
    assert [(p.baseline_session, p.followup_session) for p in pairs] == [("pre", "post")]
    assert pairs[0].baseline_flair.name == "sub-01_ses-pre_FLAIR.nii.gz"


def test_unordered_labels_without_times_skip_the_subject_with_the_fix(tmp_path: Path):
    pairs, skipped = find_pairs(_two_sessions(tmp_path, "mri", "rescan"))
    assert pairs == []
    (s,) = skipped
    assert "cannot tell which of ses-mri, ses-rescan came first" in s.reason
    assert "sub-01/sub-01_sessions.tsv" in s.reason and "--session-label mri rescan" in s.reason


def test_sessions_tsv_acquisition_times_decide_the_order(tmp_path: Path):
    root = _two_sessions(tmp_path, "mri", "rescan")
    (root / "sub-01" / "sub-01_sessions.tsv").write_text(
        "session_id\tacq_time\nses-mri\t2021-03-04T10:00:00\nses-rescan\t2019-11-20T09:30:00\n")
    pairs, skipped = find_pairs(root)
    assert not skipped and [p.name for p in pairs] == ["sub-01_ses-rescantomri"]
    (note,) = pairs[0].notes
    assert "acquisition times" in note and "sub-01_sessions.tsv" in note and "2019-11-20" in note


def test_times_override_labels_and_say_so(tmp_path: Path):
    """Acquisition times are the truth: a ses-02 acquired before ses-01 is the baseline, with a note."""
    root = _two_sessions(tmp_path, "01", "02")
    for ses, when in (("01", "2020-05-01T08:00:00Z"), ("02", "2019-05-01T08:00:00Z")):
        (root / "sub-01" / f"ses-{ses}" / f"sub-01_ses-{ses}_scans.tsv").write_text(
            f"filename\tacq_time\nanat/sub-01_ses-{ses}_FLAIR.nii.gz\t{when}\n")
    pairs, _ = find_pairs(root)
    assert [p.name for p in pairs] == ["sub-01_ses-02to01"]
    assert "not by their labels (ses-01, ses-02)" in pairs[0].notes[0]
    assert "sub-01_ses-02_scans.tsv" in pairs[0].notes[0]


def test_sidecar_acquisition_date_orders_sessions(tmp_path: Path):
    import json
    root = _two_sessions(tmp_path, "mri", "rescan")
    for ses, date in (("mri", "2018-01-02"), ("rescan", "2019-01-02")):
        (root / "sub-01" / f"ses-{ses}" / "anat" / f"sub-01_ses-{ses}_FLAIR.json").write_text(
            json.dumps({"AcquisitionDate": date, "AcquisitionTime": "10:11:12"}))
    pairs, skipped = find_pairs(root)
    assert not skipped and [p.name for p in pairs] == ["sub-01_ses-mritorescan"]
    assert "sub-01_ses-mri_FLAIR.json" in pairs[0].notes[0]


def test_equal_or_missing_times_fall_back_to_evident_labels(tmp_path: Path):
    root = _two_sessions(tmp_path, "01", "02")
    (root / "sub-01" / "sub-01_sessions.tsv").write_text(
        "session_id\tacq_time\nses-01\t2020-01-01\nses-02\tn/a\n")
    pairs, _ = find_pairs(root)
    assert [p.name for p in pairs] == ["sub-01_ses-01to02"] and pairs[0].notes == ()


def test_session_label_order_is_kept_and_contradicting_times_are_reported(tmp_path: Path):
    root = _two_sessions(tmp_path, "01", "02")
    (root / "sub-01" / "sub-01_sessions.tsv").write_text(
        "session_id\tacq_time\nses-01\t2020-01-01\nses-02\t2019-01-01\n")
    pairs, _ = find_pairs(root, session_label=["01", "02"])
    assert [p.name for p in pairs] == ["sub-01_ses-01to02"]
    assert "--session-label orders ses-01, ses-02" in pairs[0].notes[0]
    assert "the order given is used" in pairs[0].notes[0]


def test_the_app_stops_with_the_reason_when_no_subject_can_be_ordered(tmp_path: Path, capsys):
    import logging

    from bids_lesionchange.cli.run import main
    root = _two_sessions(tmp_path, "mri", "rescan")
    logger = logging.getLogger()
    handlers, level = list(logger.handlers), logger.level
    try:
        rc = main([str(root), str(tmp_path / "out"), "participant", "--mode", "infer", "--skip-bids-validation",
                   "-w", str(tmp_path / "work")])
    finally:  # main() adds handlers to the root logger (this test's stderr, a log file): remove them
        for handler in logger.handlers[:]:
            if handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
        logger.setLevel(level)
    err = capsys.readouterr().err
    assert rc == 2
    assert "every subject was skipped" in err and "--session-label mri rescan" in err


def test_training_pairs_need_no_order(tmp_path: Path):
    """NoChange pairs for training: either session may come first, so unordered labels still pair."""
    pairs, skipped = find_pairs(_two_sessions(tmp_path, "scan", "rescan"), need_order=False)
    assert [p.name for p in pairs] == ["sub-01_ses-rescantoscan"] and not skipped
