"""BIDS-Derivatives naming: every path the app writes, and the dataset description.

Files are written through :mod:`bids_lesionchange.atomic` (no half-written file is ever left behind).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bids_lesionchange import __version__
from bids_lesionchange.atomic import atomic_write_json, atomic_write_text

#: Entities in the order BIDS puts them in a file name.
ENTITY_ORDER = ("sub", "ses", "acq", "rec", "run", "from", "to", "mode", "space", "res", "label", "desc")


def bids_name(*, suffix: str, extension: str, **entities: str | None) -> str:
    """Return a BIDS file name with entities in canonical order, e.g. ``sub-01_ses-02_desc-x_mask.nii.gz``.

    Entity keys use ``from_`` for ``from`` (a Python keyword).
    """
    entities = {k.rstrip("_"): v for k, v in entities.items() if v is not None}
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"unknown BIDS entities {sorted(unknown)}")
    parts = [f"{key}-{entities[key]}" for key in ENTITY_ORDER if key in entities]
    return "_".join(parts + [suffix]) + extension


def derivative_path(*, suffix: str, extension: str, sub: str, ses: str | None = None,
                    datatype: str = "anat", **entities: str | None) -> Path:
    """Return the path of a derivative relative to the dataset root (``sub-X/ses-Y/anat/<name>``)."""
    folder = Path(f"sub-{sub}") / (f"ses-{ses}" if ses else "") / datatype
    return folder / bids_name(suffix=suffix, extension=extension, sub=sub, ses=ses, **entities)


@dataclass(frozen=True)
class PairOutputs:
    """Every file a session pair writes, relative to the output directory: the one place they are named.

    The pair's common space is the follow-up's anatomy (``space-ses<followup>``). Built by
    :func:`pair_outputs`; the workflow's sinks, the CLI (summary, training, adaptation) and the
    reports read it.
    """

    baseline_preproc: Path
    followup_preproc: Path
    brain_mask: Path
    baseline_xfm: Path
    followup_xfm: Path
    preproc_qc: Path
    probability: Path
    mask: Path
    labels: Path
    labels_lookup: Path
    lesions: Path
    change_qc: Path
    native_probability: Path
    native_mask: Path
    metrics: Path
    mask_svg: Path
    registration_svg: Path
    change_mosaic: Path
    change_slices: Path


def pair_outputs(*, sub: str, baseline: str, followup: str) -> PairOutputs:
    """The :class:`PairOutputs` of subject ``sub``'s pair ses-``baseline`` -> ses-``followup``."""
    space = f"ses{followup}"
    figures = Path(f"sub-{sub}") / "figures"
    pair = f"sub-{sub}_ses-{baseline}to{followup}"

    def deriv(ses, **entities):
        return derivative_path(sub=sub, ses=ses, **entities)

    return PairOutputs(
        baseline_preproc=deriv(baseline, space=space, desc="preproc", suffix="FLAIR", extension=".nii.gz"),
        followup_preproc=deriv(followup, space=space, desc="preproc", suffix="FLAIR", extension=".nii.gz"),
        brain_mask=deriv(followup, space=space, desc="brain", suffix="mask", extension=".nii.gz"),
        baseline_xfm=deriv(baseline, from_="orig", to=space, mode="image", suffix="xfm", extension=".txt"),
        followup_xfm=deriv(followup, from_="orig", to=space, mode="image", suffix="xfm", extension=".txt"),
        preproc_qc=deriv(followup, desc="preproc", suffix="qc", extension=".json"),
        probability=deriv(followup, space=space, label="change", suffix="probseg", extension=".nii.gz"),
        mask=deriv(followup, space=space, desc="change", suffix="mask", extension=".nii.gz"),
        labels=deriv(followup, space=space, desc="change", suffix="dseg", extension=".nii.gz"),
        labels_lookup=deriv(followup, space=space, desc="change", suffix="dseg", extension=".tsv"),
        lesions=deriv(followup, space=space, desc="change", suffix="lesions", extension=".tsv"),
        change_qc=deriv(followup, space=space, desc="change", suffix="qc", extension=".json"),
        native_probability=deriv(followup, label="change", suffix="probseg", extension=".nii.gz"),
        native_mask=deriv(followup, desc="change", suffix="mask", extension=".nii.gz"),
        metrics=deriv(followup, desc="evaluation", suffix="metrics", extension=".tsv"),
        mask_svg=figures / f"sub-{sub}_ses-{followup}_desc-brain_mask.svg",
        registration_svg=figures / f"{pair}_desc-registration_FLAIR.svg",
        change_mosaic=figures / f"{pair}_desc-changemosaic_FLAIR.png",
        change_slices=figures / f"{pair}_desc-changeslices_FLAIR.png",
    )


#: Extensions of a pair's data files that may carry a JSON sidecar (same name up to the first dot).
SIDECAR_CARRIERS = (".nii.gz", ".nii", ".tsv")


def sidecar_path(path: Path | str) -> Path:
    """Return the JSON sidecar of a data file: ``x_mask.nii.gz`` -> ``x_mask.json`` (same folder)."""
    path = Path(path)
    return path.parent / (path.name.split(".")[0] + ".json")


def owned_pair_files(outputs: PairOutputs) -> set[Path]:
    """Every file a pair may own: each :class:`PairOutputs` path and the sidecar of each data file.

    Relative to the output directory. Nothing else in the output directory belongs to the pair,
    so only these are ever removed when a pair's outputs are replaced.
    """
    paths = {Path(p) for p in vars(outputs).values()}
    return paths | {sidecar_path(p) for p in paths if p.name.endswith(SIDECAR_CARRIERS)}


def stale_pair_files(output_dir: Path | str, outputs: PairOutputs, written) -> list[Path]:
    """Return the pair's existing files (absolute) that a run writing ``written`` leaves behind.

    A run replaces a pair's outputs as a set (issue 16: a rerun with ``--no-native`` kept the
    earlier run's native masks beside the new results): every :func:`owned_pair_files` path that
    exists but is neither in ``written`` (relative paths) nor the sidecar of a written data file.
    """
    output_dir = Path(output_dir)
    written = {Path(p) for p in written}
    keep = written | {sidecar_path(p) for p in written if p.name.endswith(SIDECAR_CARRIERS)}
    return sorted(output_dir / p for p in owned_pair_files(outputs) - keep
                  if (output_dir / p).is_file() or (output_dir / p).is_symlink())


def orphan_sidecars(output_dir: Path | str, outputs: PairOutputs) -> list[Path]:
    """Return the pair's JSON sidecars (absolute) whose data file does not exist.

    A sink writes the data file before its sidecar, so such a file is left by a write that failed
    (a full disk) or by another tool; it describes nothing and must not be read as a result.
    """
    output_dir = Path(output_dir)
    carriers: dict[Path, list[Path]] = {}
    for path in owned_pair_files(outputs):
        if path.name.endswith(SIDECAR_CARRIERS):
            carriers.setdefault(sidecar_path(path), []).append(path)
    return sorted(output_dir / json_file for json_file, data in carriers.items()
                  if (output_dir / json_file).is_file()
                  and not any((output_dir / d).is_file() for d in data))


@dataclass(frozen=True)
class SubjectOutputs:
    """The files a subject writes from all of its pairs together (relative to the output directory).

    ``tracking`` is the longitudinal change table (subjects with two pairs or more, in the space
    of their last session); ``tracking_figure`` its volume-over-sessions plot in the report.
    """

    tracking: Path
    tracking_figure: Path


def subject_outputs(*, sub: str) -> SubjectOutputs:
    """The :class:`SubjectOutputs` of subject ``sub``."""
    return SubjectOutputs(
        tracking=derivative_path(sub=sub, desc="changes", suffix="tracking", extension=".tsv"),
        tracking_figure=Path(f"sub-{sub}") / "figures" / f"sub-{sub}_desc-tracking_volumes.png",
    )


#: The cohort tables of ``group --mode summarise`` (relative to the output directory).
GROUP_CHANGE_TABLE = Path("group_desc-change_lesions.tsv")
GROUP_PAIR_TABLE = Path("group_desc-change_pairs.tsv")


def container_info() -> dict[str, str]:
    """Describe the container the app runs in, if any (for ``GeneratedBy``)."""
    if os.environ.get("BIDS_LESIONCHANGE_CONTAINER"):
        kind = "docker" if Path("/.dockerenv").exists() else "oci"
        if os.environ.get("SINGULARITY_CONTAINER") or os.environ.get("APPTAINER_CONTAINER"):
            kind = "singularity"
        return {"Type": kind, "Tag": os.environ["BIDS_LESIONCHANGE_CONTAINER"]}
    return {}


#: Files that BIDS has no rule for (yet): reports, figures, transforms, QC, tables, logs, models.
BIDSIGNORE = (
    "*.html", "sub-*/figures", "sub-*/figures/*", "*_xfm.txt", "*_qc.json", "*_lesions.tsv",
    "*_lesions.json", "*_tracking.tsv", "*_tracking.json", "*_metrics.tsv", "*_metrics.json", "group_*", "logs", "logs/*", "model",
    "model/*",
)


def write_dataset_description(output_dir: Path, bids_dir: Path, *, model_dir: Path | None = None) -> Path:
    """Write ``dataset_description.json`` of the derivatives (DatasetType derivative, GeneratedBy)."""
    generated = {
        "Name": "bids_lesionchange",
        "Version": __version__,
        "Description": "Self-supervised detection of new and enlarging MS lesions (To et al. 2021)",
        "CodeURL": "https://github.com/bids-lesionchange/bids_lesionchange",
    }
    container = container_info()
    if container:
        generated["Container"] = container
    description = {
        "Name": "bids_lesionchange derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [{"URL": Path(bids_dir).resolve().as_uri()}],
        "HowToAcknowledge": "Cite To et al., Self-supervised lesion change detection and localisation "
        "in longitudinal multiple sclerosis brain imaging, MICCAI 2021.",
    }
    if model_dir is not None:
        description["GeneratedBy"][0]["Model"] = str(model_dir)
    atomic_write_text(Path(output_dir) / ".bidsignore", "\n".join(BIDSIGNORE) + "\n")
    return atomic_write_json(Path(output_dir) / "dataset_description.json", description)
