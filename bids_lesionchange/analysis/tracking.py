"""Follow detected changes over three or more sessions: one identifier per change, its history.

The app detects *changes* between consecutive sessions (pair k: session k -> k+1), not lesions.
A *track* is a change followed over the later pairs: it starts at the session where it was first
detected, and every later change that overlaps or touches its region joins it. Its region at
session s is its *detected change region*: the union of the increases assigned to it up to s,
minus the decreases detected inside it (decreases exist only with ``--change-direction any``).
Its volume at s is the volume of that region. Lesion tissue that was never detected as change
(a lesion already present at the first session) is not part of any volume.

:func:`track_changes` works on label images that are already on one reference grid; mapping
each pair's labels there is the adapter's job (:mod:`bids_lesionchange.analysis.files`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Sequence

import numpy as np
from scipy import ndimage

from bids_lesionchange.analysis.components import label_connected_components

#: States of a track at a session, from the session it first appeared on.
TRACK_STATES = ("new", "stable", "enlarging", "shrinking", "merged", "split", "resolved")
#: Columns of the longitudinal table (one row per track and session), in the order written.
TRACKING_COLUMNS = ("track_id", "session", "first_session", "first_pair", "first_label", "first_type",
                    "state", "volume_mm3", "volume_change_mm3", "n_pieces", "pair_labels",
                    "merged_into", "centroid_x", "centroid_y", "centroid_z")

#: Default margins of "enlarging"/"shrinking": the volume must change by more than
#: max(RELATIVE_MARGIN x previous volume, ABSOLUTE_MARGIN_MM3).
RELATIVE_MARGIN = 0.2
ABSOLUTE_MARGIN_MM3 = 10.0

_CUBE = ndimage.generate_binary_structure(3, 3)


@dataclass
class _Track:
    track_id: int
    first: int  # index of the session it appeared on (>= 1)
    first_label: int
    region: np.ndarray  # bool, reference grid
    pieces: int = 1
    merged_into: int | None = None
    volumes: dict[int, float] = field(default_factory=dict)


def track_changes(
    change_labels: Sequence[np.ndarray],
    sessions: Sequence[str],
    voxel_volume_mm3: float,
    *,
    decreases: Sequence[Collection[int]] | None = None,
    affine: np.ndarray | None = None,
    link_margin: int = 1,
    relative_margin: float = RELATIVE_MARGIN,
    absolute_margin_mm3: float = ABSOLUTE_MARGIN_MM3,
) -> list[dict[str, Any]]:
    """Give every detected change one identifier over the sessions and classify it at each session.

    Rules, pair by pair (pair k compares session k with session k+1; its components are the
    non-zero labels of ``change_labels[k]``):

    - **link**: a component is linked to every track whose region at session k, dilated by
      ``link_margin`` voxels (26-neighbourhood), it overlaps. An enlargement is a rim *beside* the
      earlier change, so touching counts. Links are decided on the regions as they were before
      pair k, so the order of the components does not matter.
    - **new**: an increase linked to no track starts a new track at session k+1 (ids 1, 2, ... in
      the order of appearance, then of label).
    - **merged**: an increase linked to two or more tracks joins them (transitively, through any
      chain of components and tracks of this pair) into the oldest one (smallest id): its region
      becomes the union of theirs and of the components. The surviving track and every absorbed
      track are ``merged`` at session k+1; an absorbed track names the survivor in
      ``merged_into`` and has no later row.
    - **decrease** (a label listed in ``decreases[k]``): removed from the region of every track it
      overlaps (no margin); a decrease overlapping no track is ignored (its lesion was never
      detected as change).
    - **split**: a decrease left a track's region in more 26-connected pieces than before.
    - **resolved**: the region is empty (every voxel decreased); the track has no later row.
    - **enlarging** / **shrinking**: the volume changed since the previous session by more than
      ``max(relative_margin * previous volume, absolute_margin_mm3)``, up or down.
    - **stable**: none of the above.

    A state is the first that applies in the order merged, split, resolved, enlarging,
    shrinking, stable; the session of appearance is ``new``.

    Parameters
    ----------
    change_labels : sequence of ndarray of int
        K >= 1 label images (0 = no change), pair k = session k -> k+1, all on one grid.
    sessions : sequence of str
        The K + 1 session labels, in order.
    voxel_volume_mm3 : float
        Volume of one voxel of the grid.
    decreases : sequence of collections of int, optional
        Per pair, the labels that are decreases (the follow-up darker than the baseline); by
        default every change is an increase (the app's default ``--change-direction increase``).
    affine : ndarray (4, 4), optional
        Voxel-to-world matrix of the grid, for the centroids (default: voxel indices).
    link_margin : int
        Voxels of dilation of a track's region when linking (0 = overlap only).
    relative_margin, absolute_margin_mm3 : float
        Margins of enlarging/shrinking (defaults 0.2 and 10 mm^3).

    Returns
    -------
    list of dict
        One row per track and session, from the session it appeared on to its last (keys
        :data:`TRACKING_COLUMNS`; ``first_type`` is left None for the caller, who knows the pair's
        lesion table; ``first_pair`` is ``"<first baseline>to<first follow-up>"``;
        ``pair_labels`` are the labels of the pair ending at that session assigned to the track,
        joined by ``;``). Sorted by track, then session.
    """
    change_labels = [np.asarray(labels) for labels in change_labels]
    if not change_labels:
        raise ValueError("tracking needs at least one pair's change labels")
    if len(sessions) != len(change_labels) + 1:
        raise ValueError(f"{len(change_labels)} pair(s) need {len(change_labels) + 1} session labels, "
                         f"got {len(sessions)}")
    shape = change_labels[0].shape
    if len(shape) != 3 or any(labels.shape != shape for labels in change_labels):
        raise ValueError("the change label images must be 3D and share one grid, got shapes "
                         f"{[labels.shape for labels in change_labels]}")
    if voxel_volume_mm3 <= 0 or relative_margin < 0 or absolute_margin_mm3 < 0 or link_margin < 0:
        raise ValueError("the voxel volume must be positive and the margins not negative")
    decreases = [set(map(int, d)) for d in decreases] if decreases is not None else [set()] * len(change_labels)
    if len(decreases) != len(change_labels):
        raise ValueError(f"decreases: one collection per pair expected ({len(change_labels)}), got {len(decreases)}")
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=float)

    tracks: list[_Track] = []
    rows: dict[tuple[int, int], dict[str, Any]] = {}

    def alive(k: int) -> list[_Track]:
        return [t for t in tracks if t.merged_into is None and t.first <= k and t.region.any()]

    for k, labels in enumerate(change_labels):
        s = k + 1  # the session this pair ends at
        before = alive(k)
        grown = {t.track_id: ndimage.binary_dilation(t.region, _CUBE, iterations=link_margin)
                 if link_margin else t.region for t in before}
        present = [int(v) for v in np.unique(labels) if v > 0]
        increases = [v for v in present if v not in decreases[k]]
        assigned: dict[int, list[int]] = {}  # track id -> labels of this pair
        merged_ids: set[int] = set()

        # Union-find over the tracks linked by the increases of this pair.
        parent = {t.track_id: t.track_id for t in before}

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        links: dict[int, list[int]] = {}
        for v in increases:
            component = labels == v
            linked = sorted(tid for tid, region in grown.items() if (region & component).any())
            links[v] = linked
            for a in linked[1:]:
                ra, rb = find(linked[0]), find(a)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
        by_id = {t.track_id: t for t in tracks}
        groups: dict[int, list[int]] = {}
        for tid in parent:
            groups.setdefault(find(tid), []).append(tid)
        for root, members in groups.items():
            if len(members) > 1:
                survivor = by_id[root]
                for tid in members:
                    if tid != root:
                        survivor.region |= by_id[tid].region
                        by_id[tid].merged_into = root
                        by_id[tid].volumes[s] = 0.0
                merged_ids.update(members)
        for v in increases:
            component = labels == v
            if links[v]:
                target = by_id[find(links[v][0])]
                target.region |= component
                assigned.setdefault(target.track_id, []).append(v)
            else:
                track = _Track(len(tracks) + 1, s, v, component.copy())
                tracks.append(track)
                by_id[track.track_id] = track
                assigned.setdefault(track.track_id, []).append(v)

        for tid in set(assigned) | merged_ids:
            if by_id[tid].merged_into is None:
                by_id[tid].pieces = label_connected_components(by_id[tid].region, connectivity=26)[1]

        split_ids: set[int] = set()
        for v in sorted(decreases[k] & set(present)):
            component = labels == v
            for track in alive(k):  # survivors of this pair's merges
                if track.merged_into is None and (track.region & component).any():
                    track.region &= ~component
                    assigned.setdefault(track.track_id, []).append(v)
                    if track.region.any():
                        pieces = label_connected_components(track.region, connectivity=26)[1]
                        if pieces > track.pieces:
                            split_ids.add(track.track_id)
                        track.pieces = pieces
                    else:
                        track.pieces = 0

        for track in tracks:
            if track.first > s:
                continue
            if track.merged_into is not None and track.track_id not in merged_ids:
                continue  # absorbed at an earlier session: no more rows
            if track.first < s and not (track.volumes.get(s - 1, 0.0) > 0 or track.track_id in merged_ids):
                continue  # resolved earlier
            volume = float(track.region.sum()) * voxel_volume_mm3 if track.merged_into is None else 0.0
            previous = track.volumes.get(s - 1)
            if track.merged_into is None:
                track.volumes[s] = volume
            if track.first == s:
                state = "new"
            elif track.track_id in merged_ids:
                state = "merged"
            elif track.track_id in split_ids:
                state = "split"
            elif volume == 0.0:
                state = "resolved"
            else:
                margin = max(relative_margin * previous, absolute_margin_mm3)
                state = ("enlarging" if volume - previous > margin
                         else "shrinking" if previous - volume > margin else "stable")
            rows[(track.track_id, s)] = _row(track, s, sessions, state, volume, previous, assigned, affine)
    return [rows[key] for key in sorted(rows)]


def _row(track: _Track, s: int, sessions: Sequence[str], state: str, volume: float,
         previous: float | None, assigned: dict[int, list[int]], affine: np.ndarray) -> dict[str, Any]:
    centroid = [None, None, None]
    if track.merged_into is None and track.region.any():
        ijk = np.argwhere(track.region).mean(axis=0)
        centroid = (affine[:3, :3] @ ijk + affine[:3, 3]).tolist()
    return {
        "track_id": track.track_id,
        "session": sessions[s],
        "first_session": sessions[track.first],
        "first_pair": f"{sessions[track.first - 1]}to{sessions[track.first]}",
        "first_label": track.first_label,
        "first_type": None,
        "state": state,
        "volume_mm3": volume,
        "volume_change_mm3": None if previous is None else volume - previous,
        "n_pieces": track.pieces if track.merged_into is None else 0,
        "pair_labels": ";".join(str(v) for v in sorted(assigned.get(track.track_id, []))) or None,
        "merged_into": track.merged_into,
        "centroid_x": centroid[0],
        "centroid_y": centroid[1],
        "centroid_z": centroid[2],
    }


def tracking_sidecar() -> dict[str, Any]:
    """Return the BIDS JSON sidecar of the longitudinal table: a Description (and Units) per column."""
    margins = (f"more than max({RELATIVE_MARGIN:g} x the previous volume, {ABSOLUTE_MARGIN_MM3:g} mm^3)")
    return {
        "Description": "Detected changes followed over consecutive session pairs: one row per change "
        "(track) and session, from the session it was first detected on. Volumes are those of the "
        "detected change region (the app detects changes, not whole lesions): the changes assigned to "
        "the track so far, minus the decreases detected inside it.",
        "track_id": {"Description": "Identifier of the change, kept over sessions (1, 2, ... in order "
                     "of appearance)."},
        "session": {"Description": "Session of this row (without 'ses-')."},
        "first_session": {"Description": "Session where the change was first detected (the follow-up "
                          "of its first pair)."},
        "first_pair": {"Description": "Session pair where the change was first detected, "
                       "'<baseline>to<follow-up>'."},
        "first_label": {"Description": "Label of the change in that pair's desc-change_dseg image and "
                        "lesion table."},
        "first_type": {"Description": "Type of the change in that pair's lesion table: 'new', or "
                       "'enlarging' (it touched a hyperintensity already visible at its baseline)."},
        "state": {"Description": "What happened to the change by this session.", "Levels": {
            "new": "First detected at this session.",
            "stable": f"Volume changed by no more than the margin ({margins}) since the previous session.",
            "enlarging": f"Volume grew by {margins} since the previous session: a detected change "
            "overlapping or touching (1 voxel, 26-neighbourhood) its region joined it.",
            "shrinking": f"Volume fell by {margins}: a detected decrease (follow-up darker, only with "
            "--change-direction any) overlapped it.",
            "merged": "One detected change overlapped or touched this change and another one: they "
            "continue as the oldest identifier; an absorbed change names it in merged_into and has "
            "no later row.",
            "split": "A detected decrease cut the region into more pieces (26-connected); the pieces "
            "keep this identifier.",
            "resolved": "Every voxel of the region was detected as a decrease; no later row.",
        }},
        "volume_mm3": {"Description": "Volume of the change's detected change region at this session "
                       "(0 once merged into another change).", "Units": "mm^3"},
        "volume_change_mm3": {"Description": "volume_mm3 minus that of the previous session (n/a at "
                              "the first session).", "Units": "mm^3"},
        "n_pieces": {"Description": "Number of 26-connected pieces of the region."},
        "pair_labels": {"Description": "Labels of the changes of the pair ending at this session "
                        "assigned to this change, ';'-separated (n/a: none)."},
        "merged_into": {"Description": "track_id this change was merged into (n/a: not merged away)."},
        "centroid_x": {"Description": "Centroid of the region in the space of the last session "
                       "(SpatialReference), x.", "Units": "mm"},
        "centroid_y": {"Description": "Centroid of the region, y (see centroid_x).", "Units": "mm"},
        "centroid_z": {"Description": "Centroid of the region, z (see centroid_x).", "Units": "mm"},
    }
