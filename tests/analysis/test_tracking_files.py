"""The longitudinal change table from a hand-written derivative tree (pairs on different grids)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.analysis.files import subject_tracking_files
from bids_lesionchange.analysis.tables import read_table_tsv, write_table_tsv
from bids_lesionchange.analysis.tracking import TRACKING_COLUMNS
from bids_lesionchange.derivatives import pair_outputs, subject_outputs
from bids_lesionchange.image.transforms import write_xfm


def write_pair(out: Path, baseline: str, followup: str, labels: np.ndarray, affine: np.ndarray,
               baseline_xfm: np.ndarray, types: dict[int, str], darker=()) -> None:
    files = pair_outputs(sub="01", baseline=baseline, followup=followup)
    (out / files.labels).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels.astype(np.int16), affine), str(out / files.labels))
    (out / files.baseline_xfm).parent.mkdir(parents=True, exist_ok=True)
    write_xfm(baseline_xfm, out / files.baseline_xfm)
    rows = [{"label": v, "type": t, "baseline_mean": 0.6 if v in darker else 0.4,
             "followup_mean": 0.4 if v in darker else 0.6} for v, t in types.items()]
    write_table_tsv(rows, out / files.lesions, columns=["label", "type", "baseline_mean", "followup_mean"])


def shifted(dx: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[0, 3] = dx
    return matrix


def test_pairs_are_mapped_through_the_baseline_transforms_into_the_last_session(tmp_path):
    # ses-02's world is ses-03's shifted by 3 mm in x: the ses-02 change lies at x 8..10 in ses-03,
    # so the ses-03 rim at x 11..12 touches it (the same change, enlarging). Ignoring or inverting
    # the transform would put it at x 5..7 or 2..4, and the rim would start a second change.
    out = tmp_path / "out"
    grid = np.diag([1.0, 1.0, 1.0, 1.0])
    pair1 = np.zeros((20, 20, 20), np.int16)
    pair1[5:8, 5:8, 5:8] = 1
    pair2 = np.zeros((24, 20, 20), np.int16)
    pair2[11:13, 5:8, 5:8] = 1
    write_pair(out, "01", "02", pair1, grid, np.eye(4), {1: "new"})
    write_pair(out, "02", "03", pair2, grid, shifted(3.0), {1: "enlarging"})
    path = subject_tracking_files(out, "01", ["01", "02", "03"])
    assert path == out / subject_outputs(sub="01").tracking
    assert path.name == "sub-01_desc-changes_tracking.tsv" and path.parent == out / "sub-01" / "anat"
    rows = read_table_tsv(path)
    assert [(r["track_id"], r["session"], r["state"], r["volume_mm3"]) for r in rows] == [
        (1, 2, "new", 27), (1, 3, "enlarging", 45)]
    assert rows[0]["first_type"] == "new" and rows[0]["centroid_x"] == pytest.approx(9.0)
    assert list(rows[0]) == list(TRACKING_COLUMNS)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert set(TRACKING_COLUMNS) <= set(sidecar)
    assert sidecar["SpatialReference"].endswith("sub-01_ses-03_space-ses03_desc-change_dseg.nii.gz")


def test_a_darker_change_in_the_lesion_table_is_a_decrease(tmp_path):
    out = tmp_path / "out"
    pair1 = np.zeros((20, 20, 20), np.int16)
    pair1[2:14, 2:5, 2:5] = 1
    pair2 = np.zeros((20, 20, 20), np.int16)
    pair2[7:9, 2:5, 2:5] = 1
    write_pair(out, "01", "02", pair1, np.eye(4), np.eye(4), {1: "new"})
    write_pair(out, "02", "03", pair2, np.eye(4), np.eye(4), {1: "enlarging"}, darker=(1,))
    rows = read_table_tsv(subject_tracking_files(out, "01", ["01", "02", "03"]))
    assert [(r["state"], r["n_pieces"]) for r in rows] == [("new", 1), ("split", 2)]


def test_a_missing_derivative_is_named_with_the_fix(tmp_path):
    out = tmp_path / "out"
    pair1 = np.zeros((8, 8, 8), np.int16)
    write_pair(out, "01", "02", pair1, np.eye(4), np.eye(4), {})
    with pytest.raises(FileNotFoundError, match=r"sub-01_ses-03_space-ses03_desc-change_dseg.nii.gz is missing: "
                       r"rerun the participant level"):
        subject_tracking_files(out, "01", ["01", "02", "03"])


def test_track_subjects_writes_only_subjects_with_two_done_pairs(tmp_path, caplog):
    from bids_lesionchange.cli.levels import PairOutcome, track_subjects
    from bids_lesionchange.discovery import SessionPair

    out = tmp_path / "out"
    labels = np.zeros((10, 10, 10), np.int16)
    labels[2:5, 2:5, 2:5] = 1
    write_pair(out, "01", "02", labels, np.eye(4), np.eye(4), {1: "new"})
    write_pair(out, "02", "03", labels, np.eye(4), np.eye(4), {1: "new"})

    def outcome(sub, b, f, status="ok"):
        return PairOutcome(SessionPair(sub, b, f, Path("b"), Path("f")), status=status)

    written = track_subjects(out, [outcome("01", "01", "02"), outcome("01", "02", "03"),
                                   outcome("02", "01", "02"),
                                   outcome("03", "01", "02"), outcome("03", "02", "03", "failed")])
    assert written == [out / "sub-01" / "anat" / "sub-01_desc-changes_tracking.tsv"]
    assert "sub-03: no longitudinal change table: sub-03_ses-02to03 not done" in caplog.text
