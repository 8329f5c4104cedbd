"""File-level entry points of the analysis layer, used by the Nipype interfaces.

Each function loads NIfTI images, calls the pure functions of this package and writes the
results (atomically); none holds an algorithm of its own.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_lesionchange.analysis.cohort import (
    CHANGE_COLUMNS, PAIR_COLUMNS, PairRecord, cohort_sidecars, cohort_tables,
)
from bids_lesionchange.analysis.components import change_labels, pair_psf_fwhm
from bids_lesionchange.analysis.lesions import (
    DSEG_LOOKUP_COLUMNS, LESION_TABLE_COLUMNS, baseline_hyperintensities, change_dseg_lookup, lesion_table,
    lesion_table_sidecar,
)
from bids_lesionchange.analysis.metrics import aggregate_metrics, lesion_metrics, metrics_sidecar
from bids_lesionchange.analysis.plausibility import (
    MAX_PLAUSIBLE_FRACTION, change_plausibility, reference_flag, reference_plausibility,
)
from bids_lesionchange.analysis.tables import read_table_tsv, write_table_tsv
from bids_lesionchange.analysis.tracking import TRACKING_COLUMNS, track_changes, tracking_sidecar
from bids_lesionchange.atomic import atomic_write_json, atomic_write_nifti

LOGGER = logging.getLogger("bids_lesionchange.analysis")


def qc_psf_fwhm(preproc_qc: str | Path | None):
    """The pair's coarser point-spread function (mm per grid axis) from its preprocessing QC JSON
    (:func:`bids_lesionchange.analysis.components.pair_psf_fwhm` of its resolution-matching
    report); None without a QC file or without that report."""
    if not preproc_qc:
        return None
    return pair_psf_fwhm(json.loads(Path(preproc_qc).read_text()).get("resolution_matching"))


def components_files(probability: str, brain_mask: str, mask_out: str, labels_out: str,
                     threshold: float = 0.1, min_size: int = 20, *, direction: str = "any",
                     baseline: str | None = None, followup: str | None = None,
                     preproc_qc: str | None = None, extent_mm: float = 0.0) -> tuple[str, str, int]:
    """Threshold a probability image and write the binary change mask and the component labels.

    With ``direction="increase"`` (``baseline`` and ``followup`` are then required) the rule of
    :func:`bids_lesionchange.analysis.components.change_labels` applies: brighter on the follow-up,
    not CSF, hyperintense at follow-up, new tissue, not mostly in the brain's outer rim.
    ``preproc_qc``: the pair's preprocessing QC JSON, whose resolution-matching report gives the
    sessions' point-spread functions (thick slices widen "already hyperintense at baseline").
    ``extent_mm``: grow each change into the new hyperintensity around it by up to this far
    (:func:`bids_lesionchange.analysis.components.grow_to_extent`; 0: off).
    """
    prob_img = nib.load(probability)
    prob = np.asarray(prob_img.dataobj, dtype=np.float32)
    brain = np.asarray(nib.load(brain_mask).dataobj) > 0
    images = {}
    if direction == "increase":  # change_labels says what is missing
        images = {key: np.asarray(nib.load(path).dataobj, dtype=np.float32)
                  for key, path in (("baseline", baseline), ("followup", followup)) if path}
    labels = change_labels(prob, brain, threshold, min_size, direction=direction,
                           zooms=prob_img.header.get_zooms()[:3], psf_fwhm=qc_psf_fwhm(preproc_qc),
                           extent_mm=extent_mm, **images)
    atomic_write_nifti(mask_out, labels > 0, prob_img.affine, dtype=np.uint8)
    atomic_write_nifti(labels_out, labels, prob_img.affine, dtype=np.int16 if labels.max() < 32767 else np.int32)
    return mask_out, labels_out, int(labels.max())


def plausibility_files(probability: str, brain_mask: str, n_changes: int, qc_out: str,
                       threshold: float = 0.1, *,
                       max_plausible_fraction: float = MAX_PLAUSIBLE_FRACTION,
                       adaptation: dict | None = None, compute: dict | None = None) -> tuple[str, dict]:
    """Write a pair's change QC JSON: :func:`change_plausibility`, kappa, the model's adaptation
    (``None``: the model was used as given) and what computed the map (``compute``, the predict step's
    :func:`bids_lesionchange.model.inference.compute_environment`; ``None``: not known); return path
    and contents."""
    qc = change_plausibility(np.asarray(nib.load(probability).dataobj, dtype=np.float32),
                             np.asarray(nib.load(brain_mask).dataobj), threshold, n_changes,
                             max_plausible_fraction=max_plausible_fraction)
    qc = {**qc, "threshold": float(threshold), "adaptation": adaptation, "compute": compute}
    atomic_write_json(qc_out, qc, sort_keys=True)
    return qc_out, qc


def lesion_table_files(labels: str, probability: str, baseline: str, followup: str, brain_mask: str,
                       table_out: str, lookup_out: str) -> tuple[str, dict, str]:
    """Write the lesion table of labelled changes and the labels' BIDS lookup table (dseg.tsv).

    Returns the table's path, its JSON sidecar and the lookup table's path.
    """
    labels_img = nib.load(labels)
    lab = np.asarray(labels_img.dataobj).astype(np.int32)
    base = np.asarray(nib.load(baseline).dataobj, dtype=np.float32)
    brain = np.asarray(nib.load(brain_mask).dataobj) > 0
    rows = lesion_table(
        lab, np.asarray(nib.load(probability).dataobj, dtype=np.float32), base,
        np.asarray(nib.load(followup).dataobj, dtype=np.float32), labels_img.affine,
        labels_img.header.get_zooms()[:3],
        baseline_hyperintensity=baseline_hyperintensities(base, brain),
    )
    write_table_tsv(rows, table_out, columns=LESION_TABLE_COLUMNS)
    write_table_tsv(change_dseg_lookup(rows), lookup_out, columns=DSEG_LOOKUP_COLUMNS)
    return table_out, lesion_table_sidecar(), lookup_out


def evaluate_files(labels: str, reference: str, followup_xfm: str, metrics_out: str, *, pair: str,
                   match: str = "iou", brain_mask: str | None = None) -> tuple[str, dict]:
    """Compare predicted components with a reference mask given on the follow-up's native grid.

    The reference is brought onto the common grid of ``labels`` (nearest neighbour, through the
    follow-up's native-to-common transform) before lesion-wise and voxel-wise comparison. With
    ``brain_mask`` (same grid as ``labels``) the row's ``reference_flag`` says whether the reference
    is plausible for a change mask (:func:`reference_plausibility`; a warning is logged when not),
    and the sidecar records the measures.
    """
    from bids_lesionchange.image.transforms import to_common

    labels_img = nib.load(labels)
    ref_img = nib.load(reference)
    binary = nib.Nifti1Image((np.asarray(ref_img.dataobj) > 0).astype(np.uint8), ref_img.affine)
    ref = to_common(binary, followup_xfm, labels_img.shape[:3], labels_img.affine)
    zooms = labels_img.header.get_zooms()[:3]
    row = {"pair": pair, **lesion_metrics(np.asarray(labels_img.dataobj), ref > 0, match=match, zooms=zooms)}
    sidecar = {"pair": {"Description": "session pair (subject, baseline to follow-up)"},
               **metrics_sidecar(match), "Match": match}
    if brain_mask is not None:
        measures = reference_plausibility(ref > 0, np.asarray(nib.load(brain_mask).dataobj) > 0,
                                          float(np.prod(zooms)))
        flag = reference_flag(measures, reference)
        if flag:
            LOGGER.warning("%s: %s", pair, flag)
        row["reference_flag"] = flag or "none"
        sidecar["ReferencePlausibility"] = measures
    write_table_tsv([row], metrics_out)
    return metrics_out, sidecar


def _recorded_match(files: list[Path]) -> str:
    """The ``Match`` rule the per-pair sidecars record; one rule for all pairs, ``iou`` if none says."""
    recorded = {}
    for f in files:
        sidecar = Path(f).with_suffix(".json")
        if sidecar.is_file():
            match = json.loads(sidecar.read_text()).get("Match")
            if match:
                recorded.setdefault(match, []).append(Path(f).name)
    if len(recorded) > 1:
        listing = "; ".join(f"{m}: {', '.join(names)}" for m, names in sorted(recorded.items()))
        raise ValueError(f"the pairs were evaluated with different --match rules ({listing}); rerun "
                         "the participant level of those pairs with one --match before aggregating")
    return next(iter(recorded), "iou")


def aggregate_metric_files(files: list[Path], out: Path) -> Path:
    """Concatenate per-pair metric tables and append the ``mean`` and ``pooled`` rows.

    All pairs must have been evaluated with one matching rule (the ``Match`` of their sidecars).
    """
    match = _recorded_match(files)
    rows = [row for f in files for row in read_table_tsv(f)]
    mean_row, pooled_row = aggregate_metrics(rows)
    table = rows + [{**mean_row, "pair": "mean"}, {**pooled_row, "pair": "pooled"}]
    columns = ["pair"] + [c for c in dict.fromkeys(k for row in rows for k in row) if c != "pair"]
    write_table_tsv(table, out, columns=columns)
    atomic_write_json(Path(out).with_suffix(".json"),
                      {"pair": {"Description": "session pair; 'mean' averages the pairs (as the "
                                               "paper's Table 1), 'pooled' recomputes rates from summed counts"},
                       **metrics_sidecar(match), "Match": match}, sort_keys=True)
    return Path(out)


def tracking_files(labels: list[Path], baseline_xfms: list[Path], lesion_tables: list[Path],
                   sessions: list[str], table_out: Path, *, spatial_reference: str) -> Path:
    """Write a subject's longitudinal change table from its consecutive pairs' derivatives.

    Pair k (session k -> k+1) has its change labels on the grid of its common space, the world of
    session k+1, and its baseline transform maps session k's world to it. Every pair's labels are
    brought onto the grid of the last pair's labels (world of the last session) through the
    chain of the later pairs' baseline transforms, nearest neighbour (``spatial_reference``, that
    grid's file relative to the dataset, goes into the sidecar), then
    :func:`~bids_lesionchange.analysis.tracking.track_changes` follows them. A change whose mean
    follow-up intensity (lesion table) is below its mean baseline intensity is a decrease.
    """
    from bids_lesionchange.image.grid import resample_to_grid
    from bids_lesionchange.image.transforms import read_xfm

    if not (len(labels) == len(baseline_xfms) == len(lesion_tables) == len(sessions) - 1):
        raise ValueError("tracking needs one labels image, baseline transform and lesion table per pair, "
                         "and one session more than pairs")
    reference = nib.load(str(labels[-1]))
    shape, affine = reference.shape[:3], reference.affine
    to_last = np.eye(4)  # world of session k+1 -> world of the last session, built backwards
    resampled, decreases, tables = [None] * len(labels), [None] * len(labels), [None] * len(labels)
    for k in range(len(labels) - 1, -1, -1):
        image = nib.load(str(labels[k]))
        data = np.asarray(image.dataobj).astype(np.int32)
        resampled[k] = resample_to_grid(data, image.affine, shape, affine,
                                        world_transform=np.linalg.inv(to_last), order=0).astype(np.int32)
        tables[k] = read_table_tsv(lesion_tables[k])
        decreases[k] = {int(r["label"]) for r in tables[k] if r["followup_mean"] < r["baseline_mean"]}
        to_last = to_last @ read_xfm(baseline_xfms[k])
    rows = track_changes(resampled, sessions, float(np.prod(reference.header.get_zooms()[:3])),
                         decreases=decreases, affine=affine)
    types = {(k, int(r["label"])): r["type"] for k, table in enumerate(tables) for r in table}
    for row in rows:
        first = sessions.index(row["first_session"]) - 1
        row["first_type"] = types.get((first, row["first_label"]))
    write_table_tsv(rows, table_out, columns=TRACKING_COLUMNS)
    atomic_write_json(Path(table_out).with_suffix(".json"),
                      {**tracking_sidecar(), "SpatialReference": spatial_reference,
                       "Sessions": [f"ses-{s}" for s in sessions]}, sort_keys=True)
    return Path(table_out)


def subject_tracking_files(output_dir: Path, subject: str, sessions: list[str]) -> Path:
    """Write ``sub-<subject>``'s longitudinal change table from the derivatives of its consecutive
    pairs (``sessions[0]`` -> ``sessions[1]`` -> ...) in ``output_dir``; return its path.

    A missing derivative raises FileNotFoundError naming it and how to make it.
    """
    from bids_lesionchange.derivatives import pair_outputs, subject_outputs

    output_dir = Path(output_dir)
    pairs = [pair_outputs(sub=subject, baseline=b, followup=f) for b, f in zip(sessions, sessions[1:])]
    needed = [[output_dir / p.labels for p in pairs], [output_dir / p.baseline_xfm for p in pairs],
              [output_dir / p.lesions for p in pairs]]
    for path in (path for group in needed for path in group):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: rerun the participant level (--mode infer) for "
                                    f"sub-{subject} to write it")
    out = output_dir / subject_outputs(sub=subject).tracking
    return tracking_files(*needed, sessions, out, spatial_reference=str(pairs[-1].labels))


def read_last_runs(logs_dir: Path) -> dict[str, dict]:
    """Each pair's row of the most recent run summary (``logs/summary-<run>.tsv``) that lists it.

    Run names start with their date and time, so the last file in name order is the newest.
    """
    last: dict[str, dict] = {}
    for summary in sorted(Path(logs_dir).glob("summary-*.tsv")):
        for row in read_table_tsv(summary):
            last[str(row.get("pair"))] = row
    return last


def read_pair_record(output_dir: Path, subject: str, baseline: str, followup: str, *,
                     last_run: dict | None = None) -> PairRecord:
    """Gather what ``output_dir`` holds about one pair (lesion table, QC JSONs, track ids).

    A JSON or table that cannot be read raises ValueError naming the file and the fix.
    """
    from bids_lesionchange.derivatives import pair_outputs, subject_outputs

    output_dir = Path(output_dir)
    files = pair_outputs(sub=subject, baseline=baseline, followup=followup)

    def load_json(path: Path) -> dict | None:
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); rerun the participant level for "
                             f"sub-{subject} or delete the file") from None

    preproc_qc = load_json(output_dir / files.preproc_qc)
    flags = None if preproc_qc is None else [str(f) for f in (preproc_qc.get("plausibility") or {}).get("flags") or []]
    lesions = output_dir / files.lesions
    track_ids: dict[int, int] = {}
    tracking = output_dir / subject_outputs(sub=subject).tracking
    if tracking.is_file():
        for row in read_table_tsv(tracking):
            if str(row["session"]) == followup or _same_label(row["session"], followup):
                labels = str(row["pair_labels"]).split(";") if isinstance(row["pair_labels"], str) \
                    else [row["pair_labels"]]
                for label in labels:
                    if _finite_number(label):
                        track_ids[int(float(label))] = int(row["track_id"])
    return PairRecord(subject=subject, baseline_session=baseline, followup_session=followup,
                      lesion_rows=read_table_tsv(lesions) if lesions.is_file() else None,
                      change_qc=load_json(output_dir / files.change_qc), input_flags=flags,
                      last_run=last_run, track_ids=track_ids)


def _same_label(cell, label: str) -> bool:
    """Whether a parsed TSV cell (``02`` reads as the number 2) is the session label ``label``."""
    return str(cell) == label or (label.isdigit() and _finite_number(cell) and float(cell) == int(label))


def _finite_number(value) -> bool:
    try:
        return np.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def cohort_table_files(records: list[PairRecord], output_dir: Path) -> tuple[Path, Path]:
    """Write the cohort's change table and pairs table with their JSON sidecars; return both paths."""
    from bids_lesionchange.derivatives import GROUP_CHANGE_TABLE, GROUP_PAIR_TABLE

    changes, pairs = cohort_tables(records)
    change_sidecar, pair_sidecar = cohort_sidecars()
    paths = []
    for rows, columns, sidecar, name in ((changes, CHANGE_COLUMNS, change_sidecar, GROUP_CHANGE_TABLE),
                                         (pairs, PAIR_COLUMNS, pair_sidecar, GROUP_PAIR_TABLE)):
        path = Path(output_dir) / name
        write_table_tsv(rows, path, columns=columns)
        atomic_write_json(path.with_suffix(".json"), sidecar, sort_keys=True)
        paths.append(path)
    return paths[0], paths[1]
