"""Find the FLAIR session pairs of a BIDS dataset with pybids, and say why a subject is skipped."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
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
        with a FLAIR is used in sorted order, so ses-01→ses-02 and ses-02→ses-03.

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
        sessions = list(session_label) if session_label else sorted(by_session)
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
        for (s0, f0), (s1, f1) in zip(chosen[:-1], chosen[1:]):
            pairs.append(SessionPair(subject, s0, s1, f0, f1, tuple(notes[f] for f in (f0, f1) if f in notes)))
    return pairs, skipped


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
