"""Gather a run's derivatives and build the subject and group HTML reports from them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_lesionchange import __version__
from bids_lesionchange.derivatives import pair_outputs
from bids_lesionchange.model.io import MODEL_SPEC

LOGGER = logging.getLogger("bids_lesionchange.reports")


def _provenance(settings, run_uuid: str) -> dict:
    prov = {
        "version": __version__,
        "run": run_uuid,
        "command line": " ".join(settings.command_line),
        "model": str(settings.model_dir) if settings.model_dir else "n/a",
        "settings": json.dumps(settings.to_dict(), indent=1, default=str),
    }
    card = settings.model_dir / "model_card.md" if settings.model_dir else None
    if card and card.is_file():
        prov["model card"] = card.read_text()[:4000]
    return prov


def _load(path: Path):
    if not path.is_file():
        return None, None
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def _pair_entry(settings, outcome) -> dict:
    from bids_lesionchange.analysis.tables import read_table_tsv
    from bids_lesionchange.reports.figures import plot_change_mosaic, plot_lesion_slices

    pair, out = outcome.pair, settings.output_dir
    sub, ses_b, ses_f = pair.subject, pair.baseline_session, pair.followup_session
    files = pair_outputs(sub=sub, baseline=ses_b, followup=ses_f)
    entry = {
        "name": pair.name, "baseline_session": ses_b, "followup_session": ses_f,
        "qc": {}, "mask_svg": out / files.mask_svg, "registration_svg": out / files.registration_svg,
        "figures": [], "lesion_rows": [], "metrics": None, "change_qc": None, "errors": [],
        "notes": list(pair.notes),
    }
    if outcome.status != "ok":
        entry["errors"].append(f"step '{outcome.step}' failed: {outcome.message} "
                               f"(crash file: {outcome.crash_file})")
    if (out / files.preproc_qc).is_file():
        entry["qc"] = json.loads((out / files.preproc_qc).read_text())
    if (out / files.change_qc).is_file():
        entry["change_qc"] = json.loads((out / files.change_qc).read_text())
    if (out / files.lesions).is_file():
        entry["lesion_rows"] = read_table_tsv(out / files.lesions)
    if (out / files.metrics).is_file():
        rows = read_table_tsv(out / files.metrics)
        entry["metrics"] = rows[0] if rows else None
    followup, affine = _load(out / files.followup_preproc)
    baseline, _ = _load(out / files.baseline_preproc)
    prob, _ = _load(out / files.probability)
    labels, _ = _load(out / files.labels)
    if followup is not None and prob is not None and labels is not None:
        entry["figures"].append(plot_change_mosaic(followup, prob, labels > 0, out / files.change_mosaic,
                                                   affine=affine))
        slices = out / files.change_slices
        if entry["lesion_rows"]:
            entry["figures"].append(plot_lesion_slices(followup, labels, entry["lesion_rows"], slices,
                                                       probability=prob, baseline=baseline,
                                                       affine=affine))
        else:  # an earlier run's slices would show changes this result does not have
            slices.unlink(missing_ok=True)
    return entry


def _tracking_entry(output_dir: Path, subject: str) -> dict | None:
    """The subject's longitudinal change table and its volume plot, or None when it has none."""
    from bids_lesionchange.analysis.tables import read_table_tsv
    from bids_lesionchange.derivatives import subject_outputs
    from bids_lesionchange.reports.figures import plot_tracked_volumes

    files = subject_outputs(sub=subject)
    if not (output_dir / files.tracking).is_file():
        return None
    rows = read_table_tsv(output_dir / files.tracking)
    figure = plot_tracked_volumes(rows, output_dir / files.tracking_figure) if rows else None
    return {"rows": rows, "figure": figure, "table": str(files.tracking)}


def write_subject_reports(settings, outcomes, run_uuid: str) -> list[Path]:
    """Write ``OUTPUT_DIR/sub-<label>.html`` for every subject of the run; return their paths."""
    from bids_lesionchange.reports.subject import build_subject_report

    by_subject: dict[str, list] = {}
    for outcome in outcomes:
        by_subject.setdefault(outcome.pair.subject, []).append(outcome)
    provenance = _provenance(settings, run_uuid)
    written = []
    for subject, items in sorted(by_subject.items()):
        try:
            pairs = [_pair_entry(settings, o) for o in items]
            written.append(build_subject_report(settings.output_dir / f"sub-{subject}.html",
                                                subject=subject, pairs=pairs, provenance=provenance,
                                                tracking=_tracking_entry(settings.output_dir, subject)))
        except Exception as err:  # noqa: BLE001 - one subject's report never stops the others
            LOGGER.warning("sub-%s: report not written (%s: %s)", subject, type(err).__name__, err)
    return written


def write_group_report(settings, run_uuid: str, *, model_dir: Path | None = None,
                       metrics_file: Path | None = None) -> Path:
    """Write ``OUTPUT_DIR/group.html``: training curves and SuperMix examples, or metrics."""
    from bids_lesionchange.analysis.tables import read_table_tsv
    from bids_lesionchange.reports.group import build_group_report

    kwargs = {}
    if model_dir is not None:
        log = model_dir / "training_log.tsv"
        kwargs["training_log_tsv"] = log if log.is_file() else None
        kwargs["supermix_examples"] = sorted((model_dir / "supermix_examples").glob("*.png"))
        spec = model_dir / MODEL_SPEC
        if spec.is_file():
            kwargs["validation"] = json.loads(spec.read_text()).get("validation")
    if metrics_file is not None:
        kwargs["metrics_rows"] = read_table_tsv(metrics_file)
    name = "group_desc-training_report.html" if model_dir is not None else "group_desc-evaluation_report.html"
    return build_group_report(settings.output_dir / name, provenance=_provenance(settings, run_uuid),
                              **kwargs)
