"""Top-level wiring: one Nipype graph over every session pair (the only place Settings is unpacked).

Each pair's workflow (:func:`init_pair_wf`) is split as sMRIPrep splits its own: preprocessing
(:mod:`~bids_lesionchange.workflows.preproc`); change detection, the native-space copies and the
evaluation (:mod:`~bids_lesionchange.workflows.change`); the derivatives
(:mod:`~bids_lesionchange.workflows.outputs`, the only place files are written to the output
directory).
"""

from __future__ import annotations

import re

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_lesionchange.analysis.plausibility import MAX_PLAUSIBLE_FRACTION
from bids_lesionchange.workflows.change import (
    CHANGE_FIELDS, CHANGE_INPUTS, detector_digest, init_change_wf, init_evaluate_wf, init_native_wf,
)
from bids_lesionchange.workflows.outputs import init_ds_pair_wf
from bids_lesionchange.workflows.preproc import PREPROC_FIELDS, init_preproc_wf


def model_intensity_norm(model_dir) -> str:
    """The intensity normalisation a model was trained with (``percentile`` for models before it was recorded)."""
    if not model_dir:
        return "percentile"
    from bids_lesionchange.model.io import read_model_spec

    spec = read_model_spec(model_dir, verify=False)
    return (spec.get("hyperparams", {}).get("training", {}) or {}).get("intensity_normalisation", "percentile")


def pair_workflow_name(pair) -> str:
    """Return the Nipype-safe name of a pair's workflow, e.g. ``sub_01_ses_01to02_wf``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", pair.name.replace("-", "_")) + "_wf"


def init_bids_lesionchange_wf(*, settings, pairs, references=None, name="bids_lesionchange_wf"):
    """Build the participant-level graph from Settings and the discovered pairs.

    Parameters
    ----------
    settings : Settings
        The run's settings.
    pairs : list of SessionPair
        Pairs to process; each gets its own :func:`init_pair_wf`.
    references : dict, optional
        Reference change mask per pair name (enables evaluation).
    name : str
        Workflow name.
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = (
        "Change between two FLAIR sessions was detected with *bids_lesionchange*, an implementation "
        "of the self-supervised siamese 3D U-net of To et al. (2021). "
    )
    references = references or {}
    intensity_norm = settings.intensity_norm or model_intensity_norm(settings.model_dir)
    model_sha256 = detector_digest(settings.model_dir)  # read once, not per pair
    for pair in pairs:
        pair_wf = init_pair_wf(
            pair=pair,
            output_dir=str(settings.output_dir),
            model_dir=str(settings.model_dir) if settings.model_dir else None,
            model_sha256=model_sha256,
            reference=str(references[pair.name]) if pair.name in references else None,
            infer=settings.mode == "infer",
            skull_strip=settings.skull_strip,
            hdbet_mode=settings.hdbet_mode,
            hdbet_precision=settings.hdbet_precision,
            device=settings.device,
            resolution=settings.resolution,
            intensity_norm=intensity_norm,
            threshold=settings.threshold,
            min_blob_size=settings.min_blob_size,
            max_change_fraction=settings.max_change_fraction,
            adapt_steps=settings.adapt_steps,
            seed=settings.seed,
            change_direction=settings.change_direction,
            extent_mm=settings.extent_mm,
            match=settings.match,
            write_native=settings.write_native,
            omp_nthreads=settings.omp_nthreads,
            name=pair_workflow_name(pair),
        )
        workflow.add_nodes([pair_wf])
    return workflow


def init_pair_wf(*, pair, output_dir, model_dir, model_sha256=None, reference=None, infer=True,
                 skull_strip="auto", hdbet_mode="fast", hdbet_precision="auto", device="cpu",
                 resolution=1.0, intensity_norm="percentile",
                 threshold=0.1, min_blob_size=20, max_change_fraction=MAX_PLAUSIBLE_FRACTION,
                 adapt_steps=0, seed=0, change_direction="increase", extent_mm=0.0, match="iou", write_native=True,
                 omp_nthreads=1, name="pair_wf"):
    """Preprocess one session pair, detect change, describe it, evaluate it and write derivatives.

    Wires :func:`~bids_lesionchange.workflows.preproc.init_preproc_wf` (``preproc_wf``),
    :func:`~bids_lesionchange.workflows.change.init_change_wf` (``change_wf``, with ``infer``),
    :func:`~bids_lesionchange.workflows.change.init_native_wf` (``native_wf``, with ``write_native``),
    :func:`~bids_lesionchange.workflows.change.init_evaluate_wf` (``evaluate_wf``, with ``reference``)
    and :func:`~bids_lesionchange.workflows.outputs.init_ds_pair_wf` (``ds_pair_wf``: every file
    written, named by :func:`bids_lesionchange.derivatives.pair_outputs`).

    Parameters
    ----------
    pair : SessionPair
        The pair (subject, sessions, FLAIR files).
    output_dir : str
        Root of the derivatives dataset.
    model_dir : str or None
        The trained model directory.
    model_sha256 : str, optional
        The detector weights' digest (read from ``model_dir`` when None): part of the predict
        node's hash, so new weights at the same path are never served from the cache.
    reference : str, optional
        Reference change mask of the pair: adds the evaluation.
    infer : bool
        Detect change (False: preprocess only).
    skull_strip, hdbet_mode, hdbet_precision, device, resolution, intensity_norm
        Preprocessing, see :func:`~bids_lesionchange.workflows.preproc.init_preproc_wf`.
    threshold, min_blob_size, max_change_fraction, adapt_steps, seed, change_direction, extent_mm
        Change detection, see :func:`~bids_lesionchange.workflows.change.init_change_wf`.
    match : str
        Lesion matching rule of the evaluation, see
        :func:`~bids_lesionchange.workflows.change.init_evaluate_wf`.
    write_native : bool
        Also write the probability and the mask on the follow-up's native grid.
    omp_nthreads : int
        Threads of each heavy node.
    name : str
        Workflow name.

    Inputs
    ------
    baseline_flair, followup_flair
        The original FLAIR images (set from ``pair``).

    Outputs
    -------
    probability, mask, labels, table
        Change probability, binary change mask, components and lesion table (common space).
    change_qc
        JSON of the out-of-domain guard: fraction of the brain above ``threshold``, number of
        changes, ``out_of_domain`` (fraction > ``max_change_fraction``) and its message.
    """
    workflow = Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["baseline_flair", "followup_flair"]),
                        name="inputnode")
    inputnode.inputs.baseline_flair = str(pair.baseline_flair)
    inputnode.inputs.followup_flair = str(pair.followup_flair)
    outputnode = pe.Node(niu.IdentityInterface(fields=["probability", "mask", "labels", "table",
                                                       "change_qc"]),
                         name="outputnode")

    preproc_wf = init_preproc_wf(skull_strip=skull_strip, hdbet_mode=hdbet_mode,
                                 hdbet_precision=hdbet_precision, device=device,
                                 resolution=resolution, intensity_norm=intensity_norm,
                                 omp_nthreads=omp_nthreads)
    change_meta = None
    if infer:
        change_meta = {"BaselineSession": f"ses-{pair.baseline_session}",
                       "FollowupSession": f"ses-{pair.followup_session}",
                       "Threshold": threshold, "MinBlobSizeVoxels": min_blob_size,
                       "ChangeDirection": change_direction, "ExtentMm": float(extent_mm),
                       "AdaptationSteps": int(adapt_steps),
                       "Model": str(model_dir), "Sources": [str(pair.baseline_flair),
                                                            str(pair.followup_flair)]}
    ds_pair_wf = init_ds_pair_wf(pair=pair, output_dir=output_dir, resolution=resolution,
                                 change_meta=change_meta, write_native=infer and write_native,
                                 evaluate=infer and bool(reference))
    workflow.connect([
        (inputnode, preproc_wf, [("baseline_flair", "inputnode.baseline_flair"),
                                 ("followup_flair", "inputnode.followup_flair")]),
        (preproc_wf, ds_pair_wf, [(f"outputnode.{field}", f"inputnode.{field}") for field in PREPROC_FIELDS]),
    ])
    if not infer:
        return workflow

    change_wf = init_change_wf(model_dir=model_dir, model_sha256=model_sha256, threshold=threshold,
                               min_blob_size=min_blob_size, max_change_fraction=max_change_fraction,
                               adapt_steps=adapt_steps, seed=seed, change_direction=change_direction,
                               extent_mm=extent_mm, omp_nthreads=omp_nthreads)
    workflow.connect([
        (preproc_wf, change_wf, [(f"outputnode.{field}", f"inputnode.{field}") for field in CHANGE_INPUTS]),
        (change_wf, outputnode, [("outputnode.probability", "probability"), ("outputnode.mask", "mask"),
                                 ("outputnode.labels", "labels"), ("outputnode.table", "table"),
                                 ("outputnode.change_qc", "change_qc")]),
        (change_wf, ds_pair_wf, [(f"outputnode.{field}", f"inputnode.{field}") for field in CHANGE_FIELDS]),
    ])

    if write_native:
        native_wf = init_native_wf()
        workflow.connect([
            (change_wf, native_wf, [("outputnode.probability", "inputnode.probability"),
                                    ("outputnode.mask", "inputnode.mask")]),
            (inputnode, native_wf, [("followup_flair", "inputnode.native_ref")]),
            (preproc_wf, native_wf, [("outputnode.followup_xfm", "inputnode.xfm_file")]),
            (native_wf, ds_pair_wf, [("outputnode.probability", "inputnode.native_probability"),
                                     ("outputnode.mask", "inputnode.native_mask")]),
        ])

    if reference:
        evaluate_wf = init_evaluate_wf(reference=reference, pair_name=pair.name, match=match)
        workflow.connect([
            (change_wf, evaluate_wf, [("outputnode.labels", "inputnode.labels")]),
            (preproc_wf, evaluate_wf, [("outputnode.followup_xfm", "inputnode.followup_xfm"),
                                       ("outputnode.brain_mask", "inputnode.brain_mask")]),
            (evaluate_wf, ds_pair_wf, [("outputnode.metrics", "inputnode.metrics"),
                                       ("outputnode.sidecar", "inputnode.metrics_sidecar")]),
        ])
    return workflow
