"""Issue 18's done-when: tracking the TRUE changes of a synthetic subject of 3 or more sessions gives
back its true lesion histories (no model involved: the change labels are the generator's truth).

Each pair's true change mask is labelled into components, and the pair's true rigid transform is
its baseline transform, so :func:`tracking_files` maps every pair into the last session's grid as
the app does. A component belongs to the lesion whose id it carries in the session's
``desc-lesions_dseg`` (the generator keeps lesions apart, so each carries one).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.analysis.components import label_connected_components
from bids_lesionchange.analysis.files import tracking_files
from bids_lesionchange.analysis.tables import read_table_tsv, write_table_tsv
from bids_lesionchange.simulate.cohort import write_cohort


def track_truth(bids: Path, sub: str, sessions: list[str], out: Path) -> tuple[list[dict], dict]:
    """Track a subject's true changes; return the table and, per (pair index, component label), its lesion id."""
    truth = bids / "derivatives" / "truth" / f"sub-{sub}"
    out.mkdir(parents=True)
    labels, xfms, tables, lesion_of = [], [], [], {}
    for k, (a, b) in enumerate(zip(sessions, sessions[1:])):
        anat = truth / f"ses-{b}" / "anat"
        image = nib.load(anat / f"sub-{sub}_ses-{b}_desc-change_dseg.nii.gz")
        dseg = np.asarray(image.dataobj)
        ids = np.asarray(nib.load(anat / f"sub-{sub}_ses-{b}_desc-lesions_dseg.nii.gz").dataobj)
        components, n = label_connected_components(dseg > 0)
        rows = []
        for v in range(1, n + 1):
            carried = np.unique(ids[components == v])
            assert len(carried) == 1 and carried[0] > 0, f"pair {a}->{b}: component {v} carries lesions {carried}"
            lesion_of[(k, v)] = int(carried[0])
            kind = np.bincount(dseg[components == v]).argmax()
            rows.append({"label": v, "type": "new" if kind == 1 else "enlarging", "baseline_mean": 0.4,
                         "followup_mean": 0.6})
        labels.append(out / f"pair{k}_labels.nii.gz")
        nib.save(nib.Nifti1Image(components.astype(np.int16), image.affine), str(labels[-1]))
        tables.append(out / f"pair{k}_lesions.tsv")
        write_table_tsv(rows, tables[-1], columns=["label", "type", "baseline_mean", "followup_mean"])
        xfms.append(truth / "anat" / f"sub-{sub}_from-ses{a}_to-ses{b}_mode-image_xfm.txt")
    table = tracking_files(labels, xfms, tables, sessions, out / "tracking.tsv", spatial_reference=str(labels[-1]))
    return read_table_tsv(table), lesion_of


@pytest.mark.parametrize("n_sessions, seed", [(3, 4), (4, 6)])
def test_tracking_the_true_changes_recovers_the_true_histories(tmp_path, n_sessions, seed):
    bids = write_cohort(tmp_path / "bids", n_nochange=0, n_change=1, seed=seed, n_sessions=n_sessions)
    sessions = [f"{s:02d}" for s in range(1, n_sessions + 1)]
    rows, lesion_of = track_truth(bids, "01", sessions, tmp_path / "out")
    history = read_table_tsv(bids / "derivatives" / "truth" / "sub-01" / "anat" / "sub-01_desc-lesions_history.tsv")
    truth = {(r["lesion_id"], r["session"]): r for r in history}
    last = nib.load(bids / "derivatives" / "truth" / "sub-01" / f"ses-{sessions[-1]}" / "anat"
                    / f"sub-01_ses-{sessions[-1]}_desc-lesions_dseg.nii.gz")
    last_ids = np.asarray(last.dataobj)

    # every track follows one lesion: all the changes assigned to it, at every session, are that lesion's
    lesions_of_track: dict[int, set[int]] = {}
    for row in rows:
        if row["pair_labels"] == row["pair_labels"]:  # n/a (NaN): nothing of this pair assigned
            k = row["session"] - 2
            for v in str(row["pair_labels"]).split(";"):
                lesions_of_track.setdefault(row["track_id"], set()).add(lesion_of[(k, int(float(v)))])
    assert all(len(ids) == 1 for ids in lesions_of_track.values()), lesions_of_track
    lesion = {track: ids.pop() for track, ids in lesions_of_track.items()}
    assert set(lesion) == {r["track_id"] for r in rows}

    # the tracked lesions are exactly those that ever changed
    changed = {r["lesion_id"] for r in history if r["state"] in ("new", "enlarging")}
    assert set(lesion.values()) == changed

    for track in sorted(lesion):
        track_rows = [r for r in rows if r["track_id"] == track]
        lesion_id = lesion[track]
        lesion_rows = [r for r in history if r["lesion_id"] == lesion_id]
        first_change = min(r["session"] for r in lesion_rows if r["state"] in ("new", "enlarging"))
        # the id persists from the session the lesion first changed to the last session
        assert [r["session"] for r in track_rows] == list(range(first_change, n_sessions + 1))
        assert track_rows[0]["first_session"] == first_change and track_rows[0]["state"] == "new"
        appeared = lesion_rows[0]["first_session"]
        assert track_rows[0]["first_type"] == ("new" if appeared == first_change else "enlarging")
        # at every later session, the tracked state is the true one: enlarging where the truth enlarges
        for row in track_rows[1:]:
            assert row["state"] == truth[(lesion_id, row["session"])]["state"], (track, lesion_id, row)
        if appeared > 1:  # a new lesion is one change: one track, whose region is the whole lesion
            assert sum(1 for t in lesion.values() if t == lesion_id) == 1
            # mapped into the last session through the true transforms, it lies on that lesion there
            # (with the pairs left in their own session's world it would be off by the head motion)
            where = np.argwhere(last_ids == lesion_id).mean(axis=0)
            centre = last.affine[:3, :3] @ where + last.affine[:3, 3]
            tracked = [track_rows[-1][f"centroid_{axis}"] for axis in "xyz"]
            assert np.linalg.norm(centre - tracked) <= max(last.header.get_zooms()), (track, lesion_id)
    # not vacuous: from ses-03 on, at every session a lesion that was new earlier enlarges, and the
    # tracking says so under the id it got when it appeared
    grown = [r for r in rows if r["state"] == "enlarging"
             and truth[(lesion[r["track_id"]], r["session"])]["first_session"] > 1]
    assert len(grown) >= n_sessions - 2
