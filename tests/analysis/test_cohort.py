"""The cohort tables from pair records: every change, every pair, each status."""

from __future__ import annotations

from bids_lesionchange.analysis.cohort import (
    CHANGE_COLUMNS, PAIR_COLUMNS, PAIR_STATUSES, PairRecord, cohort_sidecars, cohort_tables, pair_status,
)


def lesion(label, kind, volume):
    return {"label": label, "type": kind, "voxels": int(volume), "volume_mm3": volume, "centroid_x": 1.0,
            "centroid_y": 2.0, "centroid_z": 3.0, "prob_max": 0.9, "prob_mean": 0.5,
            "baseline_mean": 0.4, "followup_mean": 0.7}


QC = {"out_of_domain": False, "fraction_above_threshold": 0.01}


def test_statuses_follow_the_rules_in_order():
    assert pair_status(PairRecord("01", "01", "02", lesion_rows=[], change_qc=QC, input_flags=[])) == "ok"
    assert pair_status(PairRecord("01", "01", "02", lesion_rows=[], change_qc={"out_of_domain": True})) \
        == "out_of_domain"
    assert pair_status(PairRecord("01", "01", "02", lesion_rows=[])) == "no_qc"
    assert pair_status(PairRecord("01", "01", "02", input_flags=[])) == "preprocessed_only"
    assert pair_status(PairRecord("01", "01", "02")) == "not_run"
    # a failed last run wins over outputs left by an earlier run
    assert pair_status(PairRecord("01", "01", "02", lesion_rows=[], change_qc=QC,
                                  last_run={"status": "failed"})) == "failed"
    assert pair_status(PairRecord("01", "", "", last_run={"status": "skipped"})) == "skipped"


def test_every_change_has_a_row_and_every_pair_appears():
    records = [
        PairRecord("01", "01", "02", lesion_rows=[lesion(1, "new", 30.0), lesion(2, "enlarging", 12.5)],
                   change_qc=QC, input_flags=[], track_ids={1: 4, 2: 5}),
        PairRecord("01", "02", "03", lesion_rows=[], change_qc=QC, input_flags=["not a FLAIR"]),
        PairRecord("02", "01", "02", lesion_rows=[lesion(1, "new", 8.0)], change_qc=QC, input_flags=[],
                   last_run={"status": "failed", "step": "predict", "message": "out of memory"}),
        PairRecord("03", "01", "02", lesion_rows=[lesion(1, "new", 99.0)],
                   change_qc={"out_of_domain": True, "fraction_above_threshold": 0.3}, input_flags=[]),
        PairRecord("04", "", "", last_run={"status": "skipped", "step": "discovery", "message": "one session"}),
    ]
    changes, pairs = cohort_tables(records)
    assert [(r["pair"], r["label"], r["status"]) for r in changes] == [
        ("sub-01_ses-01to02", 1, "ok"), ("sub-01_ses-01to02", 2, "ok"),
        ("sub-01_ses-02to03", None, "ok"),                 # no change detected: one empty row
        ("sub-02_ses-01to02", None, "failed"),             # stale changes of a failed pair not listed
        ("sub-03_ses-01to02", 1, "out_of_domain"),         # listed, with the flag
        ("sub-04", None, "skipped")]
    assert [r["track_id"] for r in changes[:2]] == [4, 5]
    assert changes[2]["input_flags"] == "not a FLAIR" and changes[0]["input_flags"] == "none"
    assert changes[-1]["input_flags"] is None and changes[4]["out_of_domain"] is True
    assert all(set(r) <= set(CHANGE_COLUMNS) for r in changes)

    by_pair = {r["pair"]: r for r in pairs}
    assert len(pairs) == 5 and all(set(r) <= set(PAIR_COLUMNS) for r in pairs)
    first = by_pair["sub-01_ses-01to02"]
    assert (first["n_changes"], first["n_new"], first["n_enlarging"]) == (2, 1, 1)
    assert (first["total_volume_mm3"], first["new_volume_mm3"], first["enlarging_volume_mm3"]) == (42.5, 30.0, 12.5)
    assert by_pair["sub-01_ses-02to03"]["n_changes"] == 0 and by_pair["sub-01_ses-02to03"]["total_volume_mm3"] == 0
    failed = by_pair["sub-02_ses-01to02"]
    assert (failed["status"], failed["step"], failed["message"]) == ("failed", "predict", "out of memory")
    assert "n_changes" not in failed            # written as n/a: the changes are not listed
    assert by_pair["sub-04"]["message"] == "one session" and by_pair["sub-01_ses-01to02"]["step"] is None


def test_the_sidecars_describe_every_column_and_status():
    change, pairs = cohort_sidecars()
    assert set(CHANGE_COLUMNS) <= set(change) and set(PAIR_COLUMNS) <= set(pairs)
    assert all("Description" in change[c] for c in CHANGE_COLUMNS)
    assert set(pairs["status"]["Levels"]) == set(PAIR_STATUSES)
