"""The cohort's change tables: every detected change of every pair in one table, and one row per pair.

Built from what the participant level wrote (lesion tables, change and preprocessing QC, run
summaries, longitudinal tables); a pair without outputs, or whose last run failed, is listed with
its status instead of being left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from bids_lesionchange.analysis.lesions import LESION_TABLE_COLUMNS

#: A pair's status in the cohort tables.
PAIR_STATUSES = {
    "ok": "Changes detected and the out-of-domain guard passed.",
    "out_of_domain": "Changes detected, but more of the brain than plausible is above the threshold: "
    "the model does not fit these scans; do not trust the pair's changes.",
    "no_qc": "Lesion table present but no change QC JSON: the guard's verdict is unknown.",
    "failed": "The last participant run that processed the pair failed (see step and message); "
    "earlier outputs, if any, are not listed.",
    "interrupted": "The last participant run that processed the pair was stopped before it finished.",
    "preprocessed_only": "Only preprocessed (participant --mode preprocess): no change detection.",
    "skipped": "The subject yields no pair (see message: one session, no FLAIR, ...); the session "
    "columns are empty.",
    "not_run": "No output of the pair in the output directory: the participant level has not "
    "processed it.",
}
#: Per-change columns copied from each pair's lesion table (all but the voxel centroids).
CHANGE_VALUE_COLUMNS = tuple(c for c in LESION_TABLE_COLUMNS if c not in ("centroid_i", "centroid_j", "centroid_k"))
#: Pair columns repeated on every change row, and the pairs table's own columns.
PAIR_KEY_COLUMNS = ("subject", "pair", "baseline_session", "followup_session", "status")
QC_COLUMNS = ("out_of_domain", "fraction_above_threshold", "input_flags")
CHANGE_COLUMNS = (*PAIR_KEY_COLUMNS, *CHANGE_VALUE_COLUMNS, "track_id", *QC_COLUMNS)
PAIR_COLUMNS = (*PAIR_KEY_COLUMNS, "step", "message", "n_changes", "n_new", "n_enlarging",
                "total_volume_mm3", "new_volume_mm3", "enlarging_volume_mm3", *QC_COLUMNS)


@dataclass
class PairRecord:
    """What the output directory holds about one pair.

    Attributes
    ----------
    subject, baseline_session, followup_session : str
        Labels without prefixes.
    lesion_rows : list of dict or None
        The pair's lesion table (None: no table).
    change_qc : dict or None
        The pair's change QC JSON (out-of-domain guard).
    input_flags : list of str or None
        Plausibility flags of the inputs from the preprocessing QC (None: no preprocessing QC).
    last_run : dict or None
        The pair's row of the most recent run summary (``status``, ``step``, ``message``).
    track_ids : dict
        Change label -> track_id of the subject's longitudinal table.
    """

    subject: str
    baseline_session: str
    followup_session: str
    lesion_rows: list[dict[str, Any]] | None = None
    change_qc: dict[str, Any] | None = None
    input_flags: list[str] | None = None
    last_run: dict[str, Any] | None = None
    track_ids: dict[int, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``sub-<subject>_ses-<baseline>to<followup>``, as the run summaries name a pair (a skipped
        subject without sessions: ``sub-<subject>``)."""
        if not (self.baseline_session and self.followup_session):
            return f"sub-{self.subject}"
        return f"sub-{self.subject}_ses-{self.baseline_session}to{self.followup_session}"


def pair_status(record: PairRecord) -> str:
    """Return a pair's status (a key of :data:`PAIR_STATUSES`), first rule that applies:

    the last run failed or was interrupted, or discovery skipped the subject; no lesion table (``preprocessed_only`` when the
    preprocessing QC exists, else ``not_run``); no change QC (``no_qc``); the guard's
    ``out_of_domain``; else ``ok``.
    """
    last = (record.last_run or {}).get("status")
    if last in ("failed", "interrupted", "skipped"):
        return last
    if record.lesion_rows is None:
        return "preprocessed_only" if record.input_flags is not None else "not_run"
    if record.change_qc is None:
        return "no_qc"
    return "out_of_domain" if record.change_qc.get("out_of_domain") else "ok"


def cohort_tables(records: Sequence[PairRecord]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Build the cohort's change table and pairs table.

    Change table: one row per detected change of every pair whose changes are listed (status
    ``ok``, ``out_of_domain`` or ``no_qc``), with the pair's keys, status and QC repeated; a pair
    with no change listed (none detected, or a status without changes) gets one row with the
    change columns empty, so that every pair appears. Pairs table: one row per pair with its
    status, the failed step and message, the number and total volume of its changes (all, new,
    enlarging; empty when its changes are not listed) and its QC.

    ``input_flags`` is ``none`` when the inputs passed every plausibility check, the flags joined
    by `` | `` otherwise, and empty when there is no preprocessing QC.
    """
    changes, pairs = [], []
    for record in records:
        status = pair_status(record)
        qc = record.change_qc or {}
        flags = None if record.input_flags is None else (" | ".join(record.input_flags) or "none")
        keys = {"subject": record.subject, "pair": record.name, "baseline_session": record.baseline_session,
                "followup_session": record.followup_session, "status": status,
                "out_of_domain": qc.get("out_of_domain"),
                "fraction_above_threshold": qc.get("fraction_above_threshold"), "input_flags": flags}
        listed = record.lesion_rows if status in ("ok", "out_of_domain", "no_qc") else None
        for row in listed or [{}]:
            change = {**keys, **{c: row.get(c) for c in CHANGE_VALUE_COLUMNS}}
            if row:
                change["track_id"] = record.track_ids.get(int(row["label"]))
            changes.append(change)
        totals: dict[str, Any] = {}
        if listed is not None:
            for kind, rows in (("", listed), ("new_", [r for r in listed if r.get("type") == "new"]),
                               ("enlarging_", [r for r in listed if r.get("type") == "enlarging"])):
                volume = sum(float(r["volume_mm3"]) for r in rows if _finite(r.get("volume_mm3")))
                totals[f"{kind}volume_mm3" if kind else "total_volume_mm3"] = volume
            totals.update(n_changes=len(listed), n_new=sum(r.get("type") == "new" for r in listed),
                          n_enlarging=sum(r.get("type") == "enlarging" for r in listed))
        last = record.last_run or {}
        failed = status in ("failed", "interrupted", "skipped")
        pairs.append({**keys, **totals, "step": last.get("step") if failed else None,
                      "message": last.get("message") if failed else None})
    return changes, pairs


def cohort_sidecars() -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the JSON sidecars (a Description per column) of the change table and the pairs table."""
    keys = {
        "subject": {"Description": "Participant label (without 'sub-')."},
        "pair": {"Description": "Session pair, sub-<label>_ses-<baseline>to<follow-up>."},
        "baseline_session": {"Description": "Baseline session label."},
        "followup_session": {"Description": "Follow-up session label."},
        "status": {"Description": "What the output directory holds for the pair.", "Levels": PAIR_STATUSES},
        "out_of_domain": {"Description": "The pair's out-of-domain flag (change QC JSON): true when more "
                          "of the brain than plausible is above the threshold."},
        "fraction_above_threshold": {"Description": "Fraction of the brain where the change probability "
                                     "exceeds the threshold (0 to 1, change QC JSON)."},
        "input_flags": {"Description": "Plausibility flags of the pair's inputs (not a FLAIR, maybe not the "
                        "same person), ' | '-separated; 'none' when every check passed; n/a without "
                        "preprocessing QC."},
    }
    from bids_lesionchange.analysis.lesions import lesion_table_sidecar

    lesion = lesion_table_sidecar()
    change = {
        "Description": "Every detected change of every session pair of the cohort, one row each; a pair "
        "without a listed change has one row with empty change columns. Positions are in the pair's "
        "common space (the follow-up session's scanner coordinates).",
        **keys, **{c: lesion[c] for c in CHANGE_VALUE_COLUMNS},
        "track_id": {"Description": "Identifier of the change in the subject's longitudinal table "
                     "(sub-<label>_desc-changes_tracking.tsv); n/a when the subject has none."},
    }
    volume = {"Units": "mm^3"}
    pairs = {
        "Description": "One row per session pair of the cohort with its status and change totals.",
        **keys,
        "step": {"Description": "Step that failed in the pair's last run (failed pairs)."},
        "message": {"Description": "Why the step failed, and the fix (failed, interrupted or skipped)."},
        "n_changes": {"Description": "Number of detected changes (n/a when they are not listed)."},
        "n_new": {"Description": "Number of changes of type 'new'."},
        "n_enlarging": {"Description": "Number of changes of type 'enlarging'."},
        "total_volume_mm3": {"Description": "Summed volume of the detected changes.", **volume},
        "new_volume_mm3": {"Description": "Summed volume of the 'new' changes.", **volume},
        "enlarging_volume_mm3": {"Description": "Summed volume of the 'enlarging' changes.", **volume},
    }
    return change, pairs


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
