"""Subjects scanned three or more times: an evolving anatomy with known lesion histories.

A Change subject of ``N`` sessions has baseline lesions at ses-01; at every later session ``k``
some lesions are new, and some lesions already present enlarge: at each session from ses-03 on,
one of them is a lesion that was itself new at an earlier session (so a change followed over
sessions is seen to grow), the others are lesions that enlarge once. Every other lesion is stable.
NoChange subjects keep their baseline lesions at every session. Every session is a rescan of its
own (head pose, grid, gain, bias, noise), drawn as for two sessions (:mod:`.cohort`).

Lesions lie at least ``separation_mm`` apart at their largest, so each lesion's changes are
distinct from every other lesion's on the session grids, and a lesion grows by the same fixed
flood order as in :mod:`.lesions` (the enlarged lesion contains the earlier one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from bids_lesionchange.atomic import atomic_write_json
from bids_lesionchange.simulate.acquisition import (
    RescanEffects,
    acquire,
    random_motion,
    resample_to_session,
    rigid_matrix,
    rotation_matrix,
)
from bids_lesionchange.simulate.anatomy import AnatomyParams, SubjectAnatomy, load_template_tissues, \
    make_subject_anatomy
from bids_lesionchange.simulate.cohort import GROUPS, PRESETS, SimulatedSession, _protocol, _write_tsv, \
    write_change_truth, write_session_files, write_transform_truth
from bids_lesionchange.simulate.lesions import LesionInstance, LesionLoad, LesionShape, _draw_lesion, \
    _log_uniform, placement_maps, render_lesions
from bids_lesionchange.simulate.sampling import dilated_support

#: States of a lesion in the truth history: at ses-01, at the session it appears, afterwards.
HISTORY_STATES = ("baseline", "new", "stable", "enlarging")
#: Columns of the truth history table (one row per lesion and session it is present at).
HISTORY_COLUMNS = ("lesion_id", "session", "first_session", "state", "volume_mm3", "grid_volume_mm3",
                   "location")


@dataclass(frozen=True)
class TimelineLesion:
    """One lesion over all sessions.

    Attributes
    ----------
    lesion_id : int
        Identifier, 1, 2, ... (the value of the lesion in the ``desc-lesions_dseg`` images).
    shape : LesionShape
        Its fixed growth order.
    n_voxels : tuple of int
        Phantom voxels it has at each session (0: not yet present).
    """

    lesion_id: int
    shape: LesionShape
    n_voxels: tuple[int, ...]

    @property
    def first(self) -> int:
        """Return the index of the session it appears at."""
        return next(s for s, n in enumerate(self.n_voxels) if n > 0)

    def state(self, s: int) -> str | None:
        """Return its state at session index ``s`` (None: not present yet)."""
        if self.n_voxels[s] == 0:
            return None
        if s == 0:
            return "baseline"
        if self.n_voxels[s - 1] == 0:
            return "new"
        return "enlarging" if self.n_voxels[s] > self.n_voxels[s - 1] else "stable"


@dataclass(frozen=True)
class LesionTimeline:
    """Every lesion of a subject at every session.

    Attributes
    ----------
    labels : tuple of str
        Session labels ("01", "02", ...).
    lesions : tuple of TimelineLesion
        The lesions, by id.
    voxel_mm3 : float
        Volume of a phantom voxel.
    """

    labels: tuple[str, ...]
    lesions: tuple[TimelineLesion, ...]
    voxel_mm3: float

    def instances(self, s: int) -> list[LesionInstance]:
        """Return the lesions present at session index ``s``, at their size then."""
        return [LesionInstance(les.lesion_id, les.shape, les.n_voxels[s]) for les in self.lesions
                if les.n_voxels[s] > 0]

    def count(self, state: str, s: int | None = None) -> int:
        """Return how many lesions are in ``state`` at session index ``s`` (default: summed over sessions)."""
        indices = range(len(self.labels)) if s is None else [s]
        return sum(1 for les in self.lesions for i in indices if les.state(i) == state)

    def pair_events(self, s: int) -> list[dict]:
        """Return one row per lesion present at session index ``s`` >= 1: what happened since ``s - 1``
        (the two-session generator's ``Lesions`` rows, with these two sessions' volumes)."""
        a, b = self.labels[s - 1], self.labels[s]
        return [{"lesion_id": les.lesion_id, "location": les.shape.location, "event": les.state(s),
                 f"volume_ses{a}_mm3": les.n_voxels[s - 1] * self.voxel_mm3,
                 f"volume_ses{b}_mm3": les.n_voxels[s] * self.voxel_mm3}
                for les in self.lesions if les.n_voxels[s] > 0]


def _mark(forbidden: np.ndarray, instance: LesionInstance, margin: int) -> None:
    """Add ``instance`` grown by ``margin`` voxels to ``forbidden`` (in place)."""
    lower = [max(0, c - margin) for c in instance.shape.corner]
    upper = [min(n, c + b + margin) for n, c, b in zip(forbidden.shape, instance.shape.corner,
                                                       instance.shape.box_shape)]
    box = np.zeros([u - l for l, u in zip(lower, upper)], dtype=bool)
    inner = tuple(slice(c - l, c - l + b) for c, l, b in zip(instance.shape.corner, lower,
                                                             instance.shape.box_shape))
    box[inner] = instance.binary_box()
    region = tuple(slice(l, u) for l, u in zip(lower, upper))
    forbidden[region] |= ndi.binary_dilation(box, iterations=margin) if margin else box


def simulate_lesion_timeline(anatomy: SubjectAnatomy, change: bool, load: LesionLoad, n_sessions: int,
                             rng: np.random.Generator, separation_mm: float,
                             min_change_mm3: float = 0.0) -> LesionTimeline:
    """Plan and place every lesion of a subject over ``n_sessions`` sessions.

    Parameters
    ----------
    anatomy : SubjectAnatomy
        Where lesions may go.
    change : bool
        False: the same baseline lesions at every session.
    load : LesionLoad
        Numbers and sizes: ``n_baseline`` at ses-01; per later session ``n_new`` new lesions and
        ``n_enlarging`` enlarging ones, each by a factor drawn from ``enlarge_factor``.
    n_sessions : int
        Sessions (2 or more).
    rng : numpy.random.Generator
        Source of everything random here.
    separation_mm : float
        Least distance between two lesions at their largest.
    min_change_mm3 : float
        Least volume of a lesion and of an enlargement (so that both show on the session grids).

    Returns
    -------
    LesionTimeline
    """
    if n_sessions < 2:
        raise ValueError(f"a timeline needs 2 or more sessions, got {n_sessions}")
    maps = placement_maps(anatomy)
    voxel3 = anatomy.voxel_mm ** 3
    # Plan first (appearance, size at each session), place afterwards: a lesion's shape must be
    # able to reach its final size, and the separation holds for the final extents.
    plans: list[dict] = []
    for _ in range(int(rng.integers(load.n_baseline[0], load.n_baseline[1] + 1))):
        plans.append({"first": 0, "volume": max(_log_uniform(rng, *load.volume_mm3), min_change_mm3),
                      "growth": {}})
    if change:
        for s in range(1, n_sessions):
            earlier_new = [p for p in plans if 1 <= p["first"] < s]
            once = [p for p in plans if p["first"] == 0 and not p["growth"]]
            n_enlarging = int(rng.integers(load.n_enlarging[0], load.n_enlarging[1] + 1))
            chosen = [earlier_new[int(rng.integers(len(earlier_new)))]] if earlier_new else []
            pool = [p for p in once if p not in chosen]
            picks = rng.permutation(len(pool))[: max(0, n_enlarging - len(chosen))]
            for p in chosen + [pool[i] for i in picks]:
                p["growth"][s] = float(rng.uniform(*load.enlarge_factor))
            for _ in range(int(rng.integers(load.n_new[0], load.n_new[1] + 1))):
                plans.append({"first": s, "volume": max(_log_uniform(rng, *load.new_volume_mm3), min_change_mm3),
                              "growth": {}})

    forbidden = np.zeros(anatomy.shape, dtype=bool)
    margin = max(1, int(np.ceil(separation_mm / anatomy.voxel_mm)))
    lesions = []
    min_growth = max(4, int(np.ceil(min_change_mm3 / voxel3)))
    for lesion_id, plan in enumerate(plans, start=1):
        counts = [0] * n_sessions
        n = max(1, int(round(plan["volume"] / voxel3)))
        for s in range(plan["first"], n_sessions):
            if s in plan["growth"]:
                n = max(int(round(n * plan["growth"][s])), n + min_growth)
            counts[s] = n
        final = _draw_lesion(lesion_id, counts[-1] * voxel3, counts[-1] * voxel3, maps, anatomy, rng, forbidden)
        _mark(forbidden, final, margin)
        lesions.append(TimelineLesion(lesion_id, final.shape, tuple(counts)))
    return LesionTimeline(labels=tuple(f"{s + 1:02d}" for s in range(n_sessions)), lesions=tuple(lesions),
                          voxel_mm3=voxel3)


def _lesion_id_map(timeline: LesionTimeline, s: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Return the phantom-grid id of the lesion at every voxel its soft edge reaches (0: none)."""
    ids = np.zeros(shape, dtype=np.uint16)
    for lesion in timeline.instances(s):
        box = lesion.slices(shape)
        reach = ndi.binary_dilation(lesion.binary_box(), iterations=2)
        ids[box] = np.where(reach, lesion.lesion_id, ids[box])
    return ids


def _ids_on_session(ids: np.ndarray, phantom_affine: np.ndarray, session: SimulatedSession) -> np.ndarray:
    """Label each lesion voxel of a session with the id of the lesion at its centre in the phantom."""
    out = np.zeros(session.lesion_mask.shape, dtype=np.uint16)
    ijk = np.argwhere(session.lesion_mask)
    if not len(ijk):
        return out
    matrix = np.linalg.inv(phantom_affine) @ np.linalg.inv(session.protocol.head_pose) @ session.affine
    coords = np.rint(matrix[:3, :3] @ ijk.T + matrix[:3, 3:4]).astype(np.intp)
    for axis in range(3):
        np.clip(coords[axis], 0, ids.shape[axis] - 1, out=coords[axis])
    out[tuple(ijk.T)] = ids[tuple(coords)]
    missing = session.lesion_mask & (out == 0)
    if missing.any() and (out > 0).any():  # a partial-volume voxel whose centre lies just outside
        _, nearest = ndi.distance_transform_edt(out == 0, return_indices=True)
        out[missing] = out[tuple(index[missing] for index in nearest)]
    return out


@dataclass
class LongitudinalSubject:
    """A subject scanned ``N`` times, with the truth of every consecutive pair and every lesion.

    Attributes
    ----------
    label, group : str
        Participant label (without "sub-") and "NoChange" or "Change".
    sessions : tuple of SimulatedSession
        ses-01 .. ses-N, each with ``lesion_ids``.
    change_dsegs : tuple of ndarray of uint8
        Per pair k (session k -> k+1), on session k+1's grid: 1 = new, 2 = enlarging, 0 = no change.
    transforms : tuple of ndarray
        Per pair, the 4x4 world-to-world matrix: session k+1 scanner coordinates = M @ session k
        scanner coordinates of the same anatomical point.
    timeline : LesionTimeline
        Every lesion at every session.
    anatomy : AnatomyParams
        How the anatomy was varied.
    """

    label: str
    group: str
    sessions: tuple[SimulatedSession, ...]
    change_dsegs: tuple[np.ndarray, ...]
    transforms: tuple[np.ndarray, ...]
    timeline: LesionTimeline
    anatomy: AnatomyParams

    @property
    def n_new(self) -> int:
        """Return the number of lesions new at a later session."""
        return self.timeline.count("new")

    @property
    def n_enlarging(self) -> int:
        """Return the number of enlargements (a lesion enlarging at two sessions counts twice)."""
        return self.timeline.count("enlarging")

    def history_rows(self) -> list[list]:
        """Return the truth history table's rows (:data:`HISTORY_COLUMNS`), by lesion then session."""
        timeline = self.timeline
        grid_volumes = []
        for session in self.sessions:
            voxel = float(np.prod(session.protocol.zooms))
            grid_volumes.append(np.bincount(session.lesion_ids.ravel(), minlength=len(timeline.lesions) + 1) * voxel)
        return [[les.lesion_id, timeline.labels[s], timeline.labels[les.first], les.state(s),
                 les.n_voxels[s] * timeline.voxel_mm3, float(grid_volumes[s][les.lesion_id]), les.shape.location]
                for les in timeline.lesions for s in range(len(timeline.labels)) if les.n_voxels[s] > 0]


def simulate_longitudinal_subject(index: int, group: str, n_sessions: int, seed: int = 0, preset: str = "small",
                                  effects: RescanEffects | None = None,
                                  label: str | None = None) -> LongitudinalSubject:
    """Simulate one subject's ``n_sessions`` sessions and their ground truth in memory.

    The anatomy is the one :func:`.cohort.simulate_subject` makes for the same ``index`` and
    ``seed``; the lesions and sessions are drawn here. Every session after the first has its own
    rigid motion from the baseline pose, and is a 2D thick-slice acquisition with probability
    ``effects.thick_slice``.

    Parameters
    ----------
    index : int
        Subject number within the cohort (with ``seed``, fixes every random draw).
    group : str
        "NoChange" or "Change".
    n_sessions : int
        Sessions (2 or more).
    seed : int
        Cohort seed.
    preset : str
        "small" or "1mm".
    effects : RescanEffects, optional
        Rescan effects (default: all on, no thick slices).
    label : str, optional
        Participant label (default: the index, two digits).

    Returns
    -------
    LongitudinalSubject
    """
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if n_sessions < 2:
        raise ValueError(f"n_sessions must be 2 or more, got {n_sessions}")
    effects = effects or RescanEffects()
    config = PRESETS[preset]
    # The first stream is the anatomy's in simulate_subject (SeedSequence children depend only on their index).
    streams = np.random.SeedSequence([int(seed), int(index)]).spawn(9 + n_sessions)
    rng_anat = np.random.default_rng(streams[0])
    rng_lesion, rng_subject, rng_noise = (np.random.default_rng(s) for s in streams[6:9])
    rng_sessions = [np.random.default_rng(s) for s in streams[9:]]

    tissues = load_template_tissues(config.template_resolution)
    params = AnatomyParams.draw(rng_anat)
    anatomy = make_subject_anatomy(tissues, params, rng_anat)
    timeline = simulate_lesion_timeline(anatomy, group == "Change", config.lesion_load, n_sessions, rng_lesion,
                                        separation_mm=4.0 * max(config.zooms),
                                        min_change_mm3=8.0 * float(np.prod(config.zooms)))

    head_centre = tissues.brain_centre_mm + np.array([0.0, 0.0, 5.0])
    centring = rigid_matrix(np.eye(3), -head_centre)
    pose_angles = rng_subject.uniform(-4.0, 4.0, size=3)
    pose_shift = rng_subject.uniform(-3.0, 3.0, size=3)
    pose1 = rigid_matrix(rotation_matrix(pose_angles), pose_shift) @ centring if effects.motion else centring
    poses, thick = [pose1], [False]
    for _ in range(1, n_sessions):
        motion = random_motion(rng_subject, effects.max_rotation_deg, effects.max_translation_mm)
        poses.append(motion @ pose1 if effects.motion else centring)
        thick.append(bool(rng_subject.random() < effects.thick_slice))
    protocols = [_protocol(rng, config, effects, pose, thick=t, vary_fov=s > 0)
                 for s, (rng, pose, t) in enumerate(zip(rng_sessions, poses, thick))]
    noise_seeds = rng_noise.integers(2**31, size=n_sessions)

    def present(s: int) -> list[TimelineLesion]:
        return [t for t in timeline.lesions if t.n_voxels[s] > 0]

    voxel = anatomy.voxel_mm
    base_flair = anatomy.flair()
    rendered = [render_lesions(timeline.instances(s), anatomy.shape, voxel) for s in range(n_sessions)]
    new_fractions = [None] + [render_lesions([les for les, t in zip(timeline.instances(s), present(s))
                                              if t.state(s) == "new"], anatomy.shape, voxel)[0]
                              for s in range(1, n_sessions)]
    head_support = dilated_support((anatomy.icv + anatomy.skull + anatomy.diploe + anatomy.scalp) > 0)
    lesion_support = dilated_support(np.any([fraction > 0 for fraction, _ in rendered], axis=0))

    sessions, change_dsegs = [], []
    for s, protocol in enumerate(protocols):
        fraction, contrast = rendered[s]
        clean = ((base_flair * (1.0 - fraction) + fraction * contrast) * anatomy.texture).astype(np.float32)
        volumes = [clean, anatomy.icv, fraction]
        if s:
            volumes += [rendered[s - 1][0], new_fractions[s]]
        sampled = resample_to_session(volumes, anatomy.affine, protocol,
                                      [head_support] * 2 + [lesion_support] * (len(volumes) - 2))
        image, bias = acquire(sampled[0], protocol, int(noise_seeds[s]))
        session = SimulatedSession(timeline.labels[s], image, protocol.affine, protocol, sampled[0], bias,
                                   sampled[1] >= 0.5, sampled[2] >= 0.5)
        session.lesion_ids = _ids_on_session(_lesion_id_map(timeline, s, anatomy.shape), anatomy.affine, session)
        sessions.append(session)
        if s:
            change = (sampled[2] >= 0.5) & (sampled[3] < 0.5)
            dseg = np.zeros(protocol.shape, dtype=np.uint8)
            dseg[change & (sampled[4] >= 0.5)] = 1
            dseg[change & (sampled[4] < 0.5)] = 2
            change_dsegs.append(dseg)
    transforms = tuple(later @ np.linalg.inv(earlier) for earlier, later in zip(poses, poses[1:]))
    return LongitudinalSubject(label=label or f"{index + 1:02d}", group=group, sessions=tuple(sessions),
                               change_dsegs=tuple(change_dsegs), transforms=transforms, timeline=timeline,
                               anatomy=params)


def history_sidecar() -> dict:
    """Return the JSON sidecar of the truth history table."""
    return {
        "Description": "True history of every lesion of a simulated subject: one row per lesion and "
                       "session it is present at. The session-native lesion ids are in each session's "
                       "desc-lesions_dseg image; each consecutive pair's change is in the later session's "
                       "desc-change_mask/desc-change_dseg.",
        "lesion_id": {"Description": "Lesion identifier, the same at every session (its value in the "
                                    "desc-lesions_dseg images)."},
        "session": {"Description": "Session of this row (without 'ses-')."},
        "first_session": {"Description": "Session the lesion appears at (01: present at baseline)."},
        "state": {"Description": "What happened to the lesion since the previous session.", "Levels": {
            "baseline": "Present at the first session.",
            "new": "Absent at the previous session.",
            "stable": "Same lesion as at the previous session.",
            "enlarging": "Grew since the previous session (the earlier lesion is contained in it).",
        }},
        "volume_mm3": {"Description": "Lesion volume as simulated, on the phantom grid.", "Units": "mm^3"},
        "grid_volume_mm3": {"Description": "Volume of the lesion's voxels in this session's desc-lesions_dseg "
                                           "(after partial volume on the session's grid; a small lesion "
                                           "can measure less than volume_mm3).", "Units": "mm^3"},
        "location": {"Description": "Where the lesion was placed: periventricular, deep or juxtacortical."},
    }


def write_longitudinal_subject(out_dir, truth_dir, subject: LongitudinalSubject) -> None:
    """Write a subject's sessions, the truth of each consecutive pair and its lesion history."""
    sub = f"sub-{subject.label}"
    for session in subject.sessions:
        write_session_files(out_dir, truth_dir, sub, session)
    for s, (earlier, later) in enumerate(zip(subject.sessions, subject.sessions[1:]), start=1):
        if subject.group == "Change":
            write_change_truth(truth_dir, sub, later, subject.change_dsegs[s - 1], since=earlier.label)
        write_transform_truth(truth_dir, sub, earlier, later, subject.transforms[s - 1],
                              subject.timeline.pair_events(s))
    history = truth_dir / sub / "anat" / f"{sub}_desc-lesions_history.tsv"
    _write_tsv(history, list(HISTORY_COLUMNS), subject.history_rows())
    atomic_write_json(history.with_suffix(".json"), history_sidecar())
