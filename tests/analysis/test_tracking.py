"""Tracking changes over sessions on hand-built label images: one case per state."""

from __future__ import annotations

import numpy as np
import pytest

from bids_lesionchange.analysis.tracking import TRACKING_COLUMNS, track_changes

SHAPE = (20, 20, 20)


def box(labels: np.ndarray, value: int, i: slice, j: slice, k: slice) -> np.ndarray:
    labels[i, j, k] = value
    return labels


def empty() -> np.ndarray:
    return np.zeros(SHAPE, dtype=np.int16)


def history(rows, track_id):
    return [(r["session"], r["state"], r["volume_mm3"]) for r in rows if r["track_id"] == track_id]


def test_new_then_enlarging_by_a_touching_rim_then_stable():
    pair1 = box(empty(), 1, slice(5, 8), slice(5, 8), slice(5, 8))            # 27 voxels at ses-02
    pair2 = box(empty(), 1, slice(8, 10), slice(5, 8), slice(5, 8))           # 18-voxel rim beside it
    pair3 = empty()                                                            # nothing at ses-04
    rows = track_changes([pair1, pair2, pair3], ["01", "02", "03", "04"], voxel_volume_mm3=2.0)
    assert history(rows, 1) == [("02", "new", 54.0), ("03", "enlarging", 90.0), ("04", "stable", 90.0)]
    assert [r["pair_labels"] for r in rows] == ["1", "1", None]
    assert {r["first_session"] for r in rows} == {"02"} and {r["first_pair"] for r in rows} == {"01to02"}
    assert all(set(r) == set(TRACKING_COLUMNS) for r in rows)
    assert rows[1]["volume_change_mm3"] == 36.0 and rows[0]["volume_change_mm3"] is None


def test_a_change_away_from_every_track_is_a_new_track_with_the_next_id():
    pair1 = box(empty(), 1, slice(2, 5), slice(2, 5), slice(2, 5))
    pair2 = box(empty(), 1, slice(12, 15), slice(12, 15), slice(12, 15))
    rows = track_changes([pair1, pair2], ["a", "b", "c"], voxel_volume_mm3=1.0)
    assert history(rows, 1) == [("b", "new", 27.0), ("c", "stable", 27.0)]
    assert history(rows, 2) == [("c", "new", 27.0)]
    assert rows[-1]["first_pair"] == "btoc" and rows[-1]["first_label"] == 1


def test_growth_within_the_margins_is_stable_and_beyond_them_enlarging():
    pair1 = box(empty(), 1, slice(2, 12), slice(2, 12), slice(2, 12))          # 1000 voxels
    pair2 = box(empty(), 1, slice(12, 13), slice(2, 12), slice(2, 4))          # +20: < 20 % of 1000
    rows = track_changes([pair1, pair2], ["01", "02", "03"], voxel_volume_mm3=1.0)
    assert history(rows, 1)[-1] == ("03", "stable", 1020.0)
    rows = track_changes([pair1, pair2], ["01", "02", "03"], voxel_volume_mm3=1.0, relative_margin=0.01)
    assert history(rows, 1)[-1] == ("03", "enlarging", 1020.0)
    # the absolute margin holds for small tracks: +20 mm^3 is not beyond 25 mm^3
    rows = track_changes([pair1, pair2], ["01", "02", "03"], voxel_volume_mm3=1.0, relative_margin=0.0,
                         absolute_margin_mm3=25.0)
    assert history(rows, 1)[-1][1] == "stable"


def test_a_change_bridging_two_tracks_merges_them_into_the_oldest():
    pair1 = box(box(empty(), 1, slice(2, 5), slice(2, 5), slice(2, 5)), 2, slice(8, 11), slice(2, 5), slice(2, 5))
    pair2 = box(empty(), 1, slice(5, 8), slice(2, 5), slice(2, 5))            # touches both
    pair3 = empty()
    rows = track_changes([pair1, pair2, pair3], ["01", "02", "03", "04"], voxel_volume_mm3=1.0)
    assert history(rows, 1) == [("02", "new", 27.0), ("03", "merged", 81.0), ("04", "stable", 81.0)]
    assert history(rows, 2) == [("02", "new", 27.0), ("03", "merged", 0.0)]   # absorbed, then no row
    absorbed = [r for r in rows if r["track_id"] == 2][-1]
    assert absorbed["merged_into"] == 1 and absorbed["n_pieces"] == 0
    assert [r["merged_into"] for r in rows if r["track_id"] == 1] == [None, None, None]


def test_a_decrease_through_a_track_splits_it_and_it_keeps_its_id():
    pair1 = box(empty(), 1, slice(2, 14), slice(2, 5), slice(2, 5))            # a 12-voxel-long bar
    pair2 = box(empty(), 3, slice(7, 9), slice(2, 5), slice(2, 5))            # a darker band across it
    rows = track_changes([pair1, pair2], ["01", "02", "03"], voxel_volume_mm3=1.0, decreases=[[], [3]])
    assert history(rows, 1) == [("02", "new", 108.0), ("03", "split", 90.0)]
    assert rows[-1]["n_pieces"] == 2 and rows[-1]["pair_labels"] == "3"


def test_a_decrease_at_the_edge_shrinks_a_track_and_one_over_all_of_it_resolves_it():
    pair1 = box(empty(), 1, slice(2, 12), slice(2, 5), slice(2, 5))            # 90 voxels
    pair2 = box(empty(), 1, slice(2, 6), slice(2, 5), slice(2, 5))            # 36 of them darker
    pair3 = box(empty(), 2, slice(0, 20), slice(0, 10), slice(0, 10))         # all of the rest
    pair4 = empty()
    rows = track_changes([pair1, pair2, pair3, pair4], ["1", "2", "3", "4", "5"], voxel_volume_mm3=1.0,
                         decreases=[[], [1], [2], []])
    assert history(rows, 1) == [("2", "new", 90.0), ("3", "shrinking", 54.0), ("4", "resolved", 0.0)]


def test_a_decrease_outside_every_track_is_ignored():
    pair1 = box(empty(), 1, slice(2, 5), slice(2, 5), slice(2, 5))
    pair2 = box(empty(), 1, slice(12, 15), slice(12, 15), slice(12, 15))
    rows = track_changes([pair1, pair2], ["01", "02", "03"], voxel_volume_mm3=1.0, decreases=[[], [1]])
    assert [(r["track_id"], r["session"], r["state"]) for r in rows] == [(1, "02", "new"), (1, "03", "stable")]


def test_centroids_go_through_the_affine():
    pair1 = box(empty(), 1, slice(2, 5), slice(2, 5), slice(2, 5))            # centre voxel (3, 3, 3)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, 0, 5]
    row = track_changes([pair1], ["01", "02"], voxel_volume_mm3=8.0, affine=affine)[0]
    assert (row["centroid_x"], row["centroid_y"], row["centroid_z"]) == (-4.0, 6.0, 11.0)


def test_bad_input_is_refused_with_what_is_wrong():
    with pytest.raises(ValueError, match="2 pair.* need 3 session labels"):
        track_changes([empty(), empty()], ["01", "02"], 1.0)
    with pytest.raises(ValueError, match="share one grid"):
        track_changes([empty(), np.zeros((5, 5, 5))], ["01", "02", "03"], 1.0)
    with pytest.raises(ValueError, match="one collection per pair"):
        track_changes([empty()], ["01", "02"], 1.0, decreases=[[], []])
