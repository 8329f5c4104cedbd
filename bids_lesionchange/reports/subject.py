"""Per-subject HTML report: one self-contained page with every session pair of the subject."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from bids_lesionchange.analysis.metrics import METRIC_COLUMNS, RATE_COLUMNS
from bids_lesionchange.reports.embed import format_value, try_embed
from bids_lesionchange.reports.render import cell, key_values, provenance_context, render_to_file

LOGGER = logging.getLogger("bids_lesionchange.reports")

SUBJECT_SECTIONS = (
    ("summary", "Summary"),
    ("skull-stripping", "Skull stripping"),
    ("registration", "Registration"),
    ("change-detection", "Change detection"),
    ("lesions", "Lesion table"),
    ("tracking", "Changes over sessions"),
    ("metrics", "Evaluation metrics"),
    ("errors", "Errors"),
    ("provenance", "Provenance"),
)

#: Lesion table columns shown in the report (header text, row key).
LESION_DISPLAY_COLUMNS = (
    ("label", "label"),
    ("type", "type"),
    ("voxels", "voxels"),
    ("volume (mm³)", "volume_mm3"),
    ("x (mm)", "centroid_x"),
    ("y (mm)", "centroid_y"),
    ("z (mm)", "centroid_z"),
    ("max p", "prob_max"),
    ("mean p", "prob_mean"),
    ("baseline", "baseline_mean"),
    ("follow-up", "followup_mean"),
)

SUMMARY_COLUMNS = ("pair", "baseline", "follow-up", "status", "changes", "new", "enlarging",
                   "total volume (mm³)", "brain above κ")

FIGURE_CAPTIONS = {
    "mosaic": "Axial slices of the follow-up FLAIR with the change probability (hot colours) and "
              "the change mask (cyan outline).",
    "slices": "Axial, coronal and sagittal views through each detected change, zoomed around it.",
}


def build_subject_report(
    out_html: str | Path,
    *,
    subject: str,
    pairs: Sequence[Mapping[str, Any]],
    provenance: Mapping[str, Any] | None,
    tracking: Mapping[str, Any] | None = None,
) -> Path:
    """Write the HTML report of one subject (self-contained: images inline, no scripts).

    Parameters
    ----------
    out_html : str or Path
        HTML file to write (atomically).
    subject : str
        Subject label (without ``sub-``).
    pairs : sequence of mapping
        One mapping per session pair with the keys ``name``, ``baseline_session``,
        ``followup_session``, ``qc`` (dict), ``mask_svg`` and ``registration_svg`` (paths),
        ``figures`` (list of image paths), ``lesion_rows`` (list of lesion table rows),
        ``metrics`` (dict or None), ``change_qc`` (the out-of-domain guard's dict, see
        :func:`bids_lesionchange.analysis.plausibility.change_plausibility`, or None) and
        ``errors`` (list of str), ``notes`` (list of str: how the input files were chosen, e.g.
        one FLAIR of several in a session). Any key may be missing or None: the report then
        says "not available". A pair whose ``change_qc`` is ``out_of_domain``, whose ``qc``
        holds plausibility ``flags``, whose ``metrics`` carry a ``reference_flag`` other than
        ``none``, or that has ``notes``, gets a warning box.
    tracking : mapping, optional
        The longitudinal change table of a subject with two pairs or more: ``rows`` (its rows),
        ``figure`` (the volume plot) and ``table`` (its path); None: the section says why not.
    provenance : mapping
        Shown in the Provenance section: any keys (e.g. version, command line, settings, model
        card); long texts and containers go into collapsible blocks.

    Returns
    -------
    Path
        ``out_html``.
    """
    prepared = [_prepare_pair(pair, n) for n, pair in enumerate(pairs)]
    errors = [(pair["heading"], message) for pair in prepared for message in pair["errors"]]
    warnings = [("Implausible input", pair["heading"], flag) for pair in prepared for flag in pair["input_flags"]]
    warnings += [("Implausible reference", pair["heading"], pair["reference_flag"]) for pair in prepared
                 if pair["reference_flag"]]
    warnings += [("Out of domain", pair["heading"], pair["guard"]["message"]) for pair in prepared
                 if pair["guard"] and pair["guard"]["out_of_domain"]]
    warnings += [("Input choice", pair["heading"], note) for pair in prepared for note in pair["notes"]]
    warnings += [("Brain mask", pair["heading"], pair["mask_repair"]) for pair in prepared if pair["mask_repair"]]
    context = {
        "title": f"bids_lesionchange: sub-{subject}",
        "sections": SUBJECT_SECTIONS,
        "subject": subject,
        "pairs": prepared,
        "summary_columns": SUMMARY_COLUMNS,
        "summary_rows": [pair["summary"] for pair in prepared],
        "lesion_columns": [header for header, _ in LESION_DISPLAY_COLUMNS],
        "errors": errors,
        "warnings": warnings,
        "provenance": provenance_context(provenance),
        "tracking": _tracking(tracking, len(prepared)),
    }
    path = render_to_file("subject.html.j2", out_html, context)
    LOGGER.info("sub-%s: report written to %s", subject, path)
    return path


def _prepare_pair(pair: Mapping[str, Any], position: int) -> dict[str, Any]:
    baseline = _text(pair.get("baseline_session"))
    followup = _text(pair.get("followup_session"))
    name = _text(pair.get("name")) or f"pair {position + 1}"
    heading = name
    if baseline and followup and not (f"ses-{baseline}" in name and f"ses-{followup}" in name):
        heading = f"ses-{baseline} → ses-{followup} ({name})"
    errors = [str(e) for e in (pair.get("errors") or [])]
    lesion_rows = pair.get("lesion_rows")
    rows = list(lesion_rows) if lesion_rows else []
    known = lesion_rows is not None and not (errors and not rows)

    figures = []
    for path in pair.get("figures") or []:
        item = try_embed(path, alt=f"{name} change detection figure")
        stem = Path(str(path)).name.lower()
        item["caption"] = next((text for key, text in FIGURE_CAPTIONS.items() if key in stem), "")
        figures.append(item)

    metrics = pair.get("metrics")
    guard = _guard(pair.get("change_qc"))
    return {
        "heading": heading,
        "mask": try_embed(pair.get("mask_svg"), alt=f"{name} brain mask"),
        "registration": try_embed(pair.get("registration_svg"), alt=f"{name} registration"),
        "figures": figures,
        "qc": key_values(pair.get("qc")),
        "lesion_rows": [_lesion_cells(row) for row in rows],
        "lesion_note": "no change detected" if known else "not available",
        "metrics": _metrics_table(metrics) if metrics else None,
        "errors": errors,
        "guard": guard,
        "input_flags": _input_flags(pair.get("qc")),
        "mask_repair": _mask_repair(pair.get("qc")),
        "reference_flag": _reference_flag(metrics),
        "notes": [str(note) for note in (pair.get("notes") or ())],
        "summary": _summary_cells(name, baseline, followup, rows, known, errors, guard),
    }


#: Longitudinal table columns shown in the report (header text, row key).
TRACKING_DISPLAY_COLUMNS = (("change", "track_id"), ("session", "session"), ("first seen", "first_session"),
                            ("first type", "first_type"), ("state", "state"), ("volume (mm³)", "volume_mm3"),
                            ("merged into", "merged_into"))


def _tracking(tracking: Mapping[str, Any] | None, n_pairs: int) -> dict[str, Any]:
    if not tracking:
        note = ("needs two consecutive pairs or more" if n_pairs < 2
                else "not written (a pair failed or was not run in --mode infer)")
        return {"figure": None, "rows": [], "note": note}
    rows = tracking.get("rows") or []
    return {"figure": try_embed(tracking.get("figure"), alt="volume of each tracked change over sessions")
            if tracking.get("figure") else None,
            "columns": [header for header, _ in TRACKING_DISPLAY_COLUMNS],
            "rows": [[cell(row.get(key), badge=(key == "state")) for _, key in TRACKING_DISPLAY_COLUMNS]
                     for row in rows],
            "table": tracking.get("table"), "note": "no change detected in any pair"}


def _guard(change_qc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The out-of-domain guard of a pair, ready to show: percent of the brain above kappa, changes."""
    if not change_qc:
        return None
    fraction = _float(change_qc.get("fraction_above_threshold"))
    limit = _float(change_qc.get("max_plausible_fraction"))
    kappa = _float(change_qc.get("threshold"))
    return {
        "fraction": f"{100 * fraction:.1f} %" if math.isfinite(fraction) else "n/a",
        "limit": f"{100 * limit:g} %" if math.isfinite(limit) else "n/a",
        "kappa": f"{kappa:g}" if math.isfinite(kappa) else "n/a",
        "n_changes": format_value(change_qc.get("n_changes")),
        "out_of_domain": bool(change_qc.get("out_of_domain")),
        "message": _text(change_qc.get("message")),
        "adaptation": _adaptation(change_qc.get("adaptation")),
        "compute": _compute(change_qc.get("compute")),
    }


def _input_flags(qc: Any) -> list[str]:
    """The plausibility flags of a pair's inputs (not a FLAIR, maybe not the same person), from its QC."""
    block = qc.get("plausibility") if isinstance(qc, Mapping) else None
    flags = block.get("flags") if isinstance(block, Mapping) else None
    return [str(flag) for flag in flags] if isinstance(flags, list) else []


def _mask_repair(qc: Any) -> str:
    """A sentence when the follow-up's brain mask was checked (too large) and cut to the baseline's, else ""."""
    block = qc.get("plausibility") if isinstance(qc, Mapping) else None
    measures = block.get("brain_mask") if isinstance(block, Mapping) else None
    repair = measures.get("repair") if isinstance(measures, Mapping) else None
    if not isinstance(repair, Mapping) or not repair.get("used"):
        return ""  # not checked, or not used: a mask still too large is one of the input flags
    try:
        volumes = [float(repair[key]) for key in ("followup_mask_ml", "baseline_mask_ml", "intersection_ml")]
    except (KeyError, TypeError, ValueError):
        return ""
    return (f"HD-BET's brain mask of the follow-up held {volumes[0]:.0f} ml, more than all but the largest adult "
            f"brains: it may have taken in tissue outside the brain (face, neck). The baseline's own mask held "
            f"{volumes[1]:.0f} ml; this pair uses the "
            f"{volumes[2]:.0f} ml that both call brain. Check the brain mask figure.")


def _reference_flag(metrics: Any) -> str:
    """The evaluation's ``reference_flag`` sentence when the reference mask was implausible, else ""."""
    flag = _text(metrics.get("reference_flag")) if isinstance(metrics, Mapping) else ""
    return "" if flag.lower() in ("", "none", "n/a", "nan") else flag


def _adaptation(adaptation: Any) -> str:
    """One sentence on the model's adaptation to this pair ("" when the model was used as given)."""
    if not isinstance(adaptation, Mapping) or not adaptation.get("steps"):
        return ""
    seconds = _float(adaptation.get("seconds"))
    took = f" in {seconds:.0f} s" if math.isfinite(seconds) else ""
    return (f"The model was adapted to this pair before inference: {adaptation['steps']} fine-tuning steps"
            f"{took} on self-pairs of its two sessions (each against a nuisance-rich copy of itself; no "
            f"label, no real change used), seed {adaptation.get('seed', 'n/a')}, from "
            f"{adaptation.get('base_model', 'the given model')}.")


def _compute(compute: Any) -> str:
    """One sentence on what computed the probability map ("" when the QC JSON does not say)."""
    if not isinstance(compute, Mapping) or not compute.get("cpu"):
        return ""
    extensions = compute.get("vector_extensions") or []
    cap = compute.get("onednn_max_cpu_isa")
    threads = compute.get("threads")
    return (f"The probability map was computed on {_text(compute['cpu'])}"
            + (f" ({', '.join(str(e) for e in extensions)})" if extensions else "")
            + (f", with oneDNN capped at {_text(cap)} (ONEDNN_MAX_CPU_ISA)" if cap else "")
            + f": {_text(compute.get('graph', 'n/a'))} graph in {_text(compute.get('precision', 'n/a'))}"
            + (f" on {threads} thread(s)" if threads else "")
            + f", TensorFlow {_text(compute.get('tensorflow', 'n/a'))}. Maps computed on another CPU can "
            "differ in the last digits.")


def _metrics_table(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One-row table: the rates first, then the counts, then any other key."""
    order = [c for c in (*RATE_COLUMNS, *METRIC_COLUMNS) if c in metrics]
    order = list(dict.fromkeys(order))
    order += [k for k in metrics if k not in order and k not in ("pair", "subject")]
    return {"columns": order, "rows": [[cell(metrics[k]) for k in order]]}


def _lesion_cells(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    cells = []
    for _, key in LESION_DISPLAY_COLUMNS:
        value = row.get(key)
        cells.append(cell(value, badge=(key == "type" and value in ("new", "enlarging"))))
    return cells


def _summary_cells(name, baseline, followup, rows, known, errors, guard) -> list[dict[str, Any]]:
    status = "failed" if errors else "ok"
    if known:
        types = [row.get("type") for row in rows]
        volumes = [_float(row.get("volume_mm3")) for row in rows]
        volume = sum(v for v in volumes if math.isfinite(v)) if rows else 0.0
        counts = [len(rows), types.count("new"), types.count("enlarging"), volume]
    else:
        counts = [None, None, None, None]
    cells = [cell(name), cell(baseline or None), cell(followup or None), cell(status)]
    cells[3]["cls"] = "error" if errors else "ok"
    above = cell(guard["fraction"] if guard else None)
    if guard and guard["out_of_domain"]:
        above["cls"] = "error"
    return cells + [cell(value) for value in counts] + [above]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
