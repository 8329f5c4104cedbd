"""Find the FLAIR session pairs of a BIDS dataset with pybids, and say why a subject is skipped."""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

LOGGER = logging.getLogger("bids_lesionchange.discovery")


@dataclass(frozen=True)
class SessionPair:
    """Two FLAIR images of one subject: ``baseline`` (earlier) and ``followup`` (later) session."""

    subject: str
    baseline_session: str
    followup_session: str
    baseline_flair: Path
    followup_flair: Path
    #: Sentences the user must see about how the files were chosen (one FLAIR of several in a session).
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def name(self) -> str:
        """Return a short unique name, e.g. ``sub-01_ses-01to02``."""
        return f"sub-{self.subject}_ses-{self.baseline_session}to{self.followup_session}"


@dataclass(frozen=True)
class SkippedSubject:
    """A subject that yields no pair, with the reason in one sentence."""

    subject: str
    reason: str


def _flairs_by_session(layout, subject: str) -> dict[str, list]:
    files = layout.get(
        subject=subject, datatype="anat", suffix="FLAIR", extension=[".nii", ".nii.gz"]
    )
    by_session: dict[str, list] = {}
    for f in files:
        session = f.entities.get("session")
        by_session.setdefault(session, []).append(f)
    return by_session


def _pick_flair(subject: str, session: str, files: list) -> tuple[Path | None, str | None, str | None]:
    """Return (the session's FLAIR, a problem, a note): its only FLAIR; or the first in name order of
    several told apart by their run/acq/rec entities, with a note (logged as a warning) naming all of
    them and how to use another; or no file and the problem."""
    if len(files) == 1:
        return Path(files[0].path), None, None
    keys = {(f.entities.get("acquisition"), f.entities.get("run"), f.entities.get("reconstruction"))
            for f in files}
    if len(keys) < len(files):
        names = ", ".join(sorted(Path(f.path).name for f in files))
        return None, (
            f"session {session} has {len(files)} FLAIR images ({names}) with no run/acq entity "
            "to tell them apart; rename them with run-1/run-2 or pass --session-label"
        ), None
    chosen = Path(sorted(files, key=lambda f: Path(f.path).name)[0].path)
    others = sorted(Path(f.path).name for f in files if Path(f.path) != chosen)
    note = choice_note(subject, session, chosen, others)
    LOGGER.warning("%s", note)
    return chosen, None, note


def choice_note(subject: str, session: str, chosen: Path, others: list[str]) -> str:
    """The sentence saying which of a session's FLAIRs is used and how to use another instead."""
    return (f"sub-{subject} ses-{session} has {len(others) + 1} FLAIR images; using {chosen.name} (the first "
            f"in name order), not {', '.join(others)}; to use another, move the unwanted file(s) out of "
            f"{chosen.parent} (bids_lesionchange has no run/acq filter)")


def _layout_and_subjects(bids_dir: Path, participant_label) -> tuple[object, list[str]]:
    """The pybids layout of ``bids_dir`` and its subjects (only ``participant_label`` if given), sorted."""
    from bids import BIDSLayout

    layout = BIDSLayout(str(bids_dir), validate=False, derivatives=False)
    subjects = sorted(layout.get_subjects())
    if participant_label:
        subjects = [s for s in subjects if s in set(participant_label)]
    return layout, subjects


def find_pairs(
    bids_dir: Path,
    participant_label: tuple[str, ...] | list[str] = (),
    session_label: tuple[str, ...] | list[str] = (),
    need_order: bool = True,
) -> tuple[list[SessionPair], list[SkippedSubject]]:
    """List the FLAIR session pairs of a BIDS dataset.

    Parameters
    ----------
    bids_dir
        Root of the BIDS dataset.
    participant_label
        Subjects to consider (without ``sub-``); all when empty.
    session_label
        Sessions to use, in this order (consecutive ones form pairs); when empty every session
        with a FLAIR is used in time order (:func:`order_sessions`: acquisition times recorded in the
        dataset, else labels whose order is evident), so ses-01→ses-02 and ses-02→ses-03.
    need_order
        When false (training on pairs without change, where either session may come first), a
        subject whose order nothing tells is paired in the labels' natural order instead of skipped.

    Returns
    -------
    pairs, skipped
        The pairs in subject order, and the subjects that gave no pair, each with a reason.
    """
    layout, subjects = _layout_and_subjects(bids_dir, participant_label)
    pairs: list[SessionPair] = []
    skipped: list[SkippedSubject] = []
    for subject in subjects:
        by_session = _flairs_by_session(layout, subject)
        if not by_session:
            skipped.append(SkippedSubject(subject, "no FLAIR image (anat/*_FLAIR.nii[.gz])"))
            continue
        if None in by_session:
            skipped.append(SkippedSubject(
                subject, "FLAIR images without a session entity; put them in ses-<label> folders"))
            continue
        sessions = list(session_label) if session_label else sorted(by_session, key=natural_key)
        chosen: list[tuple[str, Path]] = []
        notes: dict[Path, str] = {}
        problem = None
        for session in sessions:
            if session not in by_session:
                continue
            path, problem, note = _pick_flair(subject, session, by_session[session])
            if problem:
                break
            chosen.append((session, path))
            if note:
                notes[path] = note
        if problem:
            skipped.append(SkippedSubject(subject, problem))
            continue
        if len(chosen) < 2:
            have = ", ".join(f"ses-{s}" for s, _ in chosen) or "none of the requested sessions"
            skipped.append(SkippedSubject(
                subject, f"only one session with a FLAIR ({have}); two are needed"))
            continue
        times = acquisition_times(Path(bids_dir), subject, chosen, layout)
        chosen, order_note, problem = order_sessions(subject, chosen, times, given=bool(session_label))
        if problem and not need_order:
            chosen, order_note, problem = sorted(chosen, key=lambda c: natural_key(c[0])), None, None
        if problem:
            skipped.append(SkippedSubject(subject, problem))
            continue
        if order_note:
            LOGGER.warning("%s", order_note)
        for (s0, f0), (s1, f1) in zip(chosen[:-1], chosen[1:]):
            pair_notes = tuple(notes[f] for f in (f0, f1) if f in notes) + ((order_note,) if order_note else ())
            pairs.append(SessionPair(subject, s0, s1, f0, f1, pair_notes))
    return pairs, skipped


# Which session came first. A session's label is only a name: ses-10 sorts before ses-2 as text, and
# ses-post before ses-pre. Pairing them the wrong way round turns new lesions into vanished ones and
# gives a plausible, wrong answer, so the order is taken from the acquisition times the dataset
# records, else from labels whose order is evident, else the subject is skipped with the fix.

#: Labels (their letters, case-folded) that name the first and the last time point.
EARLY_WORDS = frozenset({"baseline", "base", "bl", "screening", "screen", "pre", "before", "first",
                         "initial", "start"})
LATE_WORDS = frozenset({"followup", "follow", "fu", "post", "after", "second", "last", "final", "end"})


def natural_key(label: str) -> tuple:
    """Sort key of a session label with its numbers compared as numbers (2 before 10, M6 before M12)."""
    return tuple((0, int(tok), "") if tok.isdigit() else (1, 0, tok.lower())
                 for tok in re.findall(r"\d+|\D+", label))


def _skeleton(label: str) -> tuple:
    """The label with its numbers and a last single letter blanked: labels of one skeleton differ
    only by a count (01/02, M6/M12, time1/time2, 2019/2020) or a letter (1a/1b, A/B)."""
    toks = re.findall(r"\d+|\D+", label.lower())
    return tuple("#" if t.isdigit() else ("*" if len(t) == 1 and i == len(toks) - 1 else t)
                 for i, t in enumerate(toks))


def _rank(label: str) -> int:
    word = re.sub(r"\d", "", label).lower()
    return 0 if word in EARLY_WORDS else 2 if word in LATE_WORDS else 1


def label_order(labels: list[str]) -> list[str] | None:
    """Labels in time order when the names make it evident, else ``None``.

    Evident: words naming the first (baseline, pre, bl, ...) and the last time point (followup, post,
    fu, ...) come first and last, and the labels of each such group differ only by a number or by a
    last single letter, e.g. 01/02/10, M6/M12, baseline/m12/m24, pre/post, 1a/1b.
    """
    groups: dict[int, list[str]] = {}
    for label in labels:
        groups.setdefault(_rank(label), []).append(label)
    if any(len({_skeleton(label) for label in group}) > 1 for group in groups.values()):
        return None
    return [label for rank in sorted(groups) for label in sorted(groups[rank], key=natural_key)]


def _parse_time(text) -> datetime | None:
    """An ISO 8601 date or date-time (BIDS acq_time), as naive UTC; ``None`` for n/a or unreadable."""
    text = str(text or "").strip()
    if not text or text.lower() == "n/a":
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t


def _tsv_rows(path: Path) -> list[dict]:
    try:
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def acquisition_times(bids_dir: Path, subject: str, chosen: list[tuple[str, Path]], layout=None
                      ) -> dict[str, tuple[datetime, str]]:
    """When each chosen session was acquired, with where that was read, for the sessions that say.

    Read, first found: ``acq_time`` of the session in ``sub-X/sub-X_sessions.tsv``; ``acq_time`` of
    the FLAIR in ``sub-X/ses-Y/sub-X_ses-Y_scans.tsv``; ``AcquisitionDateTime`` (or
    ``AcquisitionDate`` [+ ``AcquisitionTime``]) in the FLAIR's JSON sidecar.
    """
    sub_dir = bids_dir / f"sub-{subject}"
    sessions_tsv = sub_dir / f"sub-{subject}_sessions.tsv"
    by_session = {}
    for row in _tsv_rows(sessions_tsv):
        sid = str(row.get("session_id") or "").strip()
        t = _parse_time(row.get("acq_time"))
        if sid and t is not None:
            by_session[sid[4:] if sid.startswith("ses-") else sid] = t
    times: dict[str, tuple[datetime, str]] = {}
    for session, flair in chosen:
        if session in by_session:
            times[session] = (by_session[session], sessions_tsv.name)
            continue
        scans_tsv = sub_dir / f"ses-{session}" / f"sub-{subject}_ses-{session}_scans.tsv"
        for row in _tsv_rows(scans_tsv):
            t = _parse_time(row.get("acq_time"))
            if Path(str(row.get("filename") or "")).name == flair.name and t is not None:
                times[session] = (t, scans_tsv.name)
                break
        if session in times:
            continue
        meta = _sidecar(flair, layout)
        t = _parse_time(meta.get("AcquisitionDateTime"))
        if t is None and meta.get("AcquisitionDate"):
            t = _parse_time(f"{meta['AcquisitionDate']}T{meta.get('AcquisitionTime') or '00:00:00'}")
        if t is not None:
            times[session] = (t, flair.name.split(".")[0] + ".json")
    return times


def _sidecar(flair: Path, layout) -> dict:
    """The FLAIR's JSON metadata (with BIDS inheritance when a pybids layout is given)."""
    if layout is not None:
        try:
            return dict(layout.get_metadata(str(flair)))
        except Exception:  # noqa: BLE001 - a malformed sidecar must not stop the pairing
            pass
    path = flair.with_name(flair.name.split(".")[0] + ".json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def order_sessions(subject: str, chosen: list[tuple[str, Path]], times: dict[str, tuple[datetime, str]],
                   given: bool = False) -> tuple[list[tuple[str, Path]], str | None, str | None]:
    """Put a subject's sessions in time order: return (sessions, a note the user must see, a problem).

    ``given``: the order came from ``--session-label`` and is kept; the note says when the recorded
    acquisition times disagree with it. Otherwise the acquisition times decide when every session has
    one and no two are equal; else the labels, when their order is evident (:func:`label_order`);
    else there is no order and the problem says how to give one.
    """
    labels = [s for s, _ in chosen]
    path = dict(chosen)
    timed = len(times) == len(labels) and len({t for t, _ in times.values()}) == len(labels)
    by_time = sorted(labels, key=lambda s: times[s][0]) if timed else None
    shown = ", ".join(f"ses-{s}" for s in labels)
    if given:
        note = None
        if by_time and by_time != labels:
            note = (f"sub-{subject}: --session-label orders {shown}, but the recorded acquisition times "
                    f"({_times_text(by_time, times)}) put ses-{by_time[0]} first; the order given is used")
        return chosen, note, None
    by_label = label_order(labels)
    if by_time:
        note = None
        if by_label is None:
            note = (f"sub-{subject}: sessions ordered by their acquisition times ({_times_text(by_time, times)}); "
                    "their labels do not say; to choose the order yourself, pass --session-label")
        elif by_label != by_time:
            note = (f"sub-{subject}: sessions ordered by their acquisition times ({_times_text(by_time, times)}), "
                    f"not by their labels ({', '.join(f'ses-{s}' for s in by_label)}); to choose the order "
                    "yourself, pass --session-label")
        return [(s, path[s]) for s in by_time], note, None
    if by_label:
        return [(s, path[s]) for s in by_label], None, None
    missing = [f"ses-{s}" for s in labels if s not in times]
    why = (f"no acquisition time for {', '.join(missing)}" if missing
           else "two sessions have the same acquisition time")
    return chosen, None, (
        f"cannot tell which of {shown} came first: their labels do not say, and {why}. Add acq_time to "
        f"sub-{subject}/sub-{subject}_sessions.tsv (or the sessions' scans.tsv), or give the order with "
        f"--session-label (earliest first, e.g. --session-label {' '.join(labels)})")


def _times_text(order: list[str], times: dict[str, tuple[datetime, str]]) -> str:
    return ", ".join(f"ses-{s} {times[s][0].isoformat(sep=' ')} from {times[s][1]}" for s in order)


def find_flairs(bids_dir: Path, participant_label: tuple[str, ...] | list[str] = ()
                ) -> tuple[dict[str, list[tuple[str | None, Path]]], list[SkippedSubject]]:
    """List every subject's FLAIR images, one per session (``None`` for a dataset without sessions).

    Used to make self-pairs (simulated rescans) from single scans, so a subject with one
    session is material too. A session with several FLAIRs that nothing tells apart is skipped
    with the reason, as in :func:`find_pairs`.
    """
    layout, subjects = _layout_and_subjects(bids_dir, participant_label)
    found: dict[str, list[tuple[str | None, Path]]] = {}
    skipped: list[SkippedSubject] = []
    for subject in subjects:
        by_session = _flairs_by_session(layout, subject)
        chosen = []
        for session in sorted(by_session, key=lambda s: (s is None, s or "")):
            path, problem, _ = _pick_flair(subject, session or "(none)", by_session[session])
            if problem:
                skipped.append(SkippedSubject(subject, problem))
                continue
            chosen.append((session, path))
        if chosen:
            found[subject] = chosen
        elif not by_session:
            skipped.append(SkippedSubject(subject, "no FLAIR image (anat/*_FLAIR.nii[.gz])"))
    return found, skipped


def nochange_subjects(
    bids_dir: Path, labels: tuple[str, ...] | list[str] = (),
    column: str = "group", value: str = "NoChange",
) -> list[str]:
    """Return the NoChange subjects: ``labels`` if given, else from ``participants.tsv``.

    Raises ``ValueError`` with a sentence naming the file and the fix when none can be found.
    """
    if labels:
        return sorted(labels)
    tsv = Path(bids_dir) / "participants.tsv"
    if not tsv.is_file():
        raise ValueError(
            f"{tsv} does not exist, so NoChange subjects are unknown; "
            "pass --nochange-label or add participants.tsv with a 'group' column"
        )
    with tsv.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows or column not in rows[0]:
        raise ValueError(
            f"{tsv} has no column '{column}'; add it (value '{value}' for subjects without change) "
            "or pass --nochange-label / --nochange-column"
        )
    subjects = sorted(r["participant_id"].removeprefix("sub-") for r in rows
                      if r.get(column, "").strip() == value)
    if not subjects:
        raise ValueError(f"no subject of {tsv} has {column} = {value}; pass --nochange-label")
    return subjects
