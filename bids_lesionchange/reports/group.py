"""Group HTML report: training curves, SuperMix examples, validation and metrics across subjects."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from bids_lesionchange.analysis.metrics import METRIC_COLUMNS, RATE_COLUMNS, aggregate_metrics
from bids_lesionchange.analysis.tables import read_table_tsv
from bids_lesionchange.reports.embed import RASTER_TYPES, as_block, is_long, try_embed
from bids_lesionchange.reports.figures import plot_metric_distribution, plot_training_curves
from bids_lesionchange.reports.render import cell, key_values, provenance_context, render_to_file

LOGGER = logging.getLogger("bids_lesionchange.reports")

GROUP_SECTIONS = (
    ("training", "Training"),
    ("supermix", "SuperMix examples"),
    ("validation", "Validation"),
    ("evaluation", "Evaluation"),
    ("provenance", "Provenance"),
)

#: Columns that name a pair in a metrics table (shown first when present).
PAIR_KEY_COLUMNS = ("subject", "pair", "baseline_session", "followup_session")
IMAGE_SUFFIXES = tuple(RASTER_TYPES) + (".svg",)


def build_group_report(
    out_html: str | Path,
    *,
    training_log_tsv: str | Path | None = None,
    supermix_examples: Iterable[str | Path] = (),
    validation: Any = None,
    metrics_rows: Iterable[Mapping[str, Any]] = (),
    provenance: Mapping[str, Any] | None,
) -> Path:
    """Write the group HTML report (self-contained: images inline, no scripts).

    Parameters
    ----------
    out_html : str or Path
        HTML file to write (atomically).
    training_log_tsv : str or Path, optional
        Training log with columns ``iteration``, ``loss``, ``val_loss``, ... (plotted as curves;
        the last row is listed).
    supermix_examples : iterable of paths
        Images (PNG/JPEG/GIF/SVG) of SuperMix training pairs.
    validation : mapping, sequence of paths, or None
        Validation results: a mapping of values (a ``figures`` key may list image paths) or a
        list of image paths.
    metrics_rows : iterable of mapping
        Per-pair metric rows (as :func:`lesion_metrics` with a ``pair`` or ``subject`` key).
        Rows already holding an aggregate (``pair`` "mean"/"pooled" or an ``aggregate`` value)
        are left out and the aggregates are recomputed from the per-pair rows.
    provenance : mapping
        Shown in the Provenance section.

    Returns
    -------
    Path
        ``out_html``.
    """
    with tempfile.TemporaryDirectory(prefix="bids_lesionchange-report-") as scratch:
        scratch = Path(scratch)
        context = {
            "title": "bids_lesionchange: group report",
            "sections": GROUP_SECTIONS,
            "training": _training_context(training_log_tsv, scratch),
            "supermix": [_captioned(path, "SuperMix example") for path in supermix_examples or ()],
            "validation": _validation_context(validation),
            "evaluation": _evaluation_context(list(metrics_rows or ()), scratch),
            "provenance": provenance_context(provenance),
        }
        path = render_to_file("group.html.j2", out_html, context)
    LOGGER.info("group report written to %s", path)
    return path


def _captioned(path: str | Path, alt: str) -> dict[str, Any]:
    item = try_embed(path, alt=alt)
    item["caption"] = Path(str(path)).stem.replace("_", " ")
    return item


def _training_context(training_log_tsv, scratch: Path) -> dict[str, Any]:
    if training_log_tsv is None:
        return {"figure": {"html": None, "note": "not available (no training log)"}, "last": []}
    try:
        rows = read_table_tsv(training_log_tsv)
        figure = try_embed(plot_training_curves(training_log_tsv, scratch / "training_curves.png"),
                           alt="training curves")
    except FileNotFoundError:
        return {"figure": {"html": None, "note": f"not available ({Path(training_log_tsv).name} "
                           "was not found)"}, "last": []}
    except (OSError, ValueError, KeyError) as err:
        LOGGER.warning("training curves not drawn: %s", err)
        return {"figure": {"html": None, "note": f"not available ({err})"}, "last": []}
    return {"figure": figure, "last": key_values(rows[-1]) if rows else []}


def _validation_context(validation: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"scalars": [], "figures": [], "text": ""}
    if validation is None:
        return out
    if isinstance(validation, (str, Path)) and Path(str(validation)).suffix.lower() in IMAGE_SUFFIXES:
        validation = [validation]
    if isinstance(validation, Mapping):
        figures = validation.get("figures") or ()
        out["figures"] = [_captioned(p, "validation figure") for p in figures]
        scalars = {k: v for k, v in validation.items() if k != "figures" and not is_long(v)}
        nested = {k: v for k, v in validation.items() if k != "figures" and is_long(v)}
        out["scalars"] = key_values(scalars)
        out["text"] = as_block(nested) if nested else ""
    elif isinstance(validation, (list, tuple)):
        out["figures"] = [_captioned(p, "validation figure") for p in validation]
    else:
        out["text"] = as_block(validation)
    return out


def _is_aggregate(row: Mapping[str, Any]) -> bool:
    aggregate = row.get("aggregate")
    if isinstance(aggregate, str) and aggregate and aggregate != "n/a":
        return True
    return str(row.get("pair", "")).lower() in ("mean", "pooled")


def _evaluation_context(rows: list[Mapping[str, Any]], scratch: Path) -> dict[str, Any]:
    per_pair = [row for row in rows if not _is_aggregate(row)]
    if not per_pair:
        return {"rows": [], "columns": [], "aggregates": [], "figure": None}
    keys = [k for k in PAIR_KEY_COLUMNS if any(k in row for row in per_pair)]
    if not keys:
        per_pair = [{"pair": str(n + 1), **row} for n, row in enumerate(per_pair)]
        keys = ["pair"]
    metrics = [c for c in METRIC_COLUMNS if any(c in row for row in per_pair)]
    columns = keys + metrics
    table = [[cell(row.get(c)) for c in columns] for row in per_pair]
    mean_row, pooled_row = aggregate_metrics(per_pair)
    aggregates = []
    for label, agg in (("mean", mean_row), ("pooled", pooled_row)):
        label_cells = [{"text": label if n == 0 else "", "cls": "", "badge": False}
                       for n in range(len(keys))]
        aggregates.append(label_cells + [cell(agg.get(c)) for c in metrics])
    try:
        shown = [c for c in RATE_COLUMNS if c in metrics]
        figure = try_embed(plot_metric_distribution(per_pair, scratch / "metrics.png", shown),
                           alt="metrics across pairs")
    except (ValueError, OSError) as err:
        LOGGER.warning("metrics plot not drawn: %s", err)
        figure = {"html": None, "note": f"not available ({err})"}
    return {"rows": table, "columns": columns, "aggregates": aggregates, "figure": figure}
