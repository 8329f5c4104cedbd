"""Top-level wiring: one Nipype graph over every session pair (the only place Settings is unpacked)."""

from __future__ import annotations

import re

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_lesionchange.analysis.plausibility import MAX_PLAUSIBLE_FRACTION
from bids_lesionchange.derivatives import pair_outputs
from bids_lesionchange.interfaces.bids import DerivativeSink
from bids_lesionchange.interfaces.change import (
    AdaptModel, ChangeComponents, ChangePlausibility, EvaluateChange, LesionTable, SiameseUNetPredict,
)
from bids_lesionchange.interfaces.preproc import ResampleToNative
from bids_lesionchange.workflows.preproc import init_preproc_wf


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


def _detector_digest(model_dir) -> str:
    """The SHA-256 of a model's detector weights as model.json records it ("" when unknown)."""
    if not model_dir:
        return ""
    from bids_lesionchange.model.io import read_model_spec

    try:
        spec = read_model_spec(model_dir, verify=False)
        return str(spec["sha256"][spec["weights"]])
    except Exception:  # noqa: BLE001 - a bad model is refused with its message by the parser and predict
        return ""


def init_bids_lesionchange_wf(settings, pairs, references=None, name="bids_lesionchange_wf"):
    """Build the participant-level graph from Settings and the discovered pairs.

    Parameters
    ----------
    settings : Settings
        The run's settings.
    pairs : list of SessionPair
        Pairs to process.
    references : dict, optional
        Reference change mask per pair name (enables evaluation).
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = (
        "Change between two FLAIR sessions was detected with *bids_lesionchange*, an implementation "
        "of the self-supervised siamese 3D U-net of To et al. (2021). "
    )
    references = references or {}
    intensity_norm = settings.intensity_norm or model_intensity_norm(settings.model_dir)
    model_sha256 = _detector_digest(settings.model_dir)  # read once, not per pair
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
            device=settings.device,
            resolution=settings.resolution,
            intensity_norm=intensity_norm,
            threshold=settings.threshold,
            min_blob_size=settings.min_blob_size,
            max_change_fraction=settings.max_change_fraction,
            adapt_steps=settings.adapt_steps,
            seed=settings.seed,
            change_direction=settings.change_direction,
            match=settings.match,
            write_native=settings.write_native,
            omp_nthreads=settings.omp_nthreads,
            name=pair_workflow_name(pair),
        )
        workflow.add_nodes([pair_wf])
    return workflow


def init_pair_wf(*, pair, output_dir, model_dir, model_sha256=None, reference=None, infer=True,
                 skull_strip="auto", hdbet_mode="fast", device="cpu", resolution=1.0, intensity_norm="percentile",
                 threshold=0.1, min_blob_size=20, max_change_fraction=MAX_PLAUSIBLE_FRACTION,
                 adapt_steps=0, seed=0, change_direction="increase", match="iou", write_native=True,
                 omp_nthreads=1, name="pair_wf"):
    """Preprocess one session pair, detect change, describe it, evaluate it and write derivatives.

    ``model_sha256`` (the detector weights' digest, read from ``model_dir`` when None) is part of
    the predict node's hash, so new weights at the same path are never served from the cache.
    With ``adapt_steps`` > 0 a copy of the model is first fine-tuned on self-pairs of the two
    preprocessed sessions (:mod:`bids_lesionchange.model.adapt`, node ``adapt``, seeded by
    ``seed``); the copy stays in the work directory and the change QC JSON records the adaptation.

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
    sub, ses_b, ses_f = pair.subject, pair.baseline_session, pair.followup_session

    inputnode = pe.Node(niu.IdentityInterface(fields=["baseline_flair", "followup_flair"]),
                        name="inputnode")
    inputnode.inputs.baseline_flair = str(pair.baseline_flair)
    inputnode.inputs.followup_flair = str(pair.followup_flair)
    outputnode = pe.Node(niu.IdentityInterface(fields=["probability", "mask", "labels", "table",
                                                       "change_qc"]),
                         name="outputnode")

    preproc_wf = init_preproc_wf(skull_strip=skull_strip, hdbet_mode=hdbet_mode, device=device,
                                 resolution=resolution, intensity_norm=intensity_norm,
                                 omp_nthreads=omp_nthreads)
    workflow.connect([(inputnode, preproc_wf, [("baseline_flair", "inputnode.baseline_flair"),
                                               ("followup_flair", "inputnode.followup_flair")])])

    def sink(name_, field, source, path, meta=None):
        node = pe.Node(DerivativeSink(base_directory=output_dir, out_path=str(path)),
                       name=name_, run_without_submitting=True)
        if meta:
            node.inputs.meta_dict = meta
        workflow.connect(source, field, node, "in_file")
        return node

    outputs = pair_outputs(sub=sub, baseline=ses_b, followup=ses_f)  # every file this pair writes
    reference_image = str(outputs.followup_preproc)
    spatial = {"SpatialReference": reference_image}
    preproc_meta = {"Sources": [str(pair.baseline_flair), str(pair.followup_flair)],
                    "SkullStripped": True, **spatial,
                    "Description": f"FLAIR in the common space: the follow-up session ses-{ses_f} "
                    f"at {resolution} mm isotropic (RAS)"}
    sink("ds_baseline", "outputnode.baseline_preproc", preproc_wf, outputs.baseline_preproc, preproc_meta)
    sink("ds_followup", "outputnode.followup_preproc", preproc_wf, outputs.followup_preproc, preproc_meta)
    sink("ds_brain_mask", "outputnode.brain_mask", preproc_wf, outputs.brain_mask,
         {"Type": "Brain", "Sources": [str(pair.followup_flair)], **spatial})
    sink("ds_baseline_xfm", "outputnode.baseline_xfm", preproc_wf, outputs.baseline_xfm)
    sink("ds_followup_xfm", "outputnode.followup_xfm", preproc_wf, outputs.followup_xfm)
    sink("ds_qc", "outputnode.qc_json", preproc_wf, outputs.preproc_qc)
    sink("ds_mask_svg", "outputnode.mask_svg", preproc_wf, outputs.mask_svg)
    sink("ds_registration_svg", "outputnode.registration_svg", preproc_wf, outputs.registration_svg)
    if not infer:
        return workflow

    if model_sha256 is None:
        model_sha256 = _detector_digest(model_dir)
    predict = pe.Node(SiameseUNetPredict(model_dir=model_dir, model_sha256=model_sha256,
                                         num_threads=omp_nthreads),
                      name="predict", n_procs=omp_nthreads, mem_gb=3.0)
    components = pe.Node(ChangeComponents(threshold=threshold, min_size=min_blob_size,
                                          direction=change_direction), name="components")
    plausibility = pe.Node(ChangePlausibility(threshold=threshold, max_fraction=max_change_fraction),
                           name="plausibility")
    lesion_table = pe.Node(LesionTable(), name="lesion_table")
    workflow.connect([
        (preproc_wf, predict, [("outputnode.baseline_preproc", "baseline"),
                               ("outputnode.followup_preproc", "followup"),
                               ("outputnode.brain_mask", "brain_mask")]),
        (preproc_wf, components, [("outputnode.brain_mask", "brain_mask"),
                                  ("outputnode.baseline_preproc", "baseline"),
                                  ("outputnode.followup_preproc", "followup")]),
        (predict, components, [("probability", "probability")]),
        (predict, plausibility, [("probability", "probability")]),
        (preproc_wf, plausibility, [("outputnode.brain_mask", "brain_mask")]),
        (components, plausibility, [("n_components", "n_changes")]),
        (components, lesion_table, [("labels", "labels")]),
        (predict, lesion_table, [("probability", "probability")]),
        (preproc_wf, lesion_table, [("outputnode.baseline_preproc", "baseline"),
                                    ("outputnode.followup_preproc", "followup"),
                                    ("outputnode.brain_mask", "brain_mask")]),
        (predict, outputnode, [("probability", "probability")]),
        (components, outputnode, [("mask", "mask"), ("labels", "labels")]),
        (lesion_table, outputnode, [("table", "table")]),
        (plausibility, outputnode, [("qc_json", "change_qc")]),
    ])

    if adapt_steps:
        adapt = pe.Node(AdaptModel(model_dir=model_dir, steps=int(adapt_steps), seed=int(seed),
                                   num_threads=omp_nthreads), name="adapt", n_procs=omp_nthreads, mem_gb=3.0)
        workflow.connect([
            (preproc_wf, adapt, [("outputnode.baseline_preproc", "baseline"),
                                 ("outputnode.followup_preproc", "followup"),
                                 ("outputnode.brain_mask", "brain_mask")]),
            (adapt, predict, [("model_dir", "model_dir"), ("model_sha256", "model_sha256")]),
            (adapt, plausibility, [("adaptation", "adaptation")]),
        ])

    change_meta = {"BaselineSession": f"ses-{ses_b}", "FollowupSession": f"ses-{ses_f}",
                   "Threshold": threshold, "MinBlobSizeVoxels": min_blob_size,
                   "ChangeDirection": change_direction, "AdaptationSteps": int(adapt_steps),
                   "Model": str(model_dir), "Sources": [str(pair.baseline_flair),
                                                        str(pair.followup_flair)]}
    sink("ds_probability", "probability", predict, outputs.probability, {**change_meta, **spatial})
    sink("ds_mask", "mask", components, outputs.mask, {**change_meta, **spatial})
    sink("ds_labels", "labels", components, outputs.labels,
         {**change_meta, **spatial, "Description": "Changes labelled 1..n, largest first (label = "
          "row of the lesion table); the dseg.tsv beside it names each one new or enlarging"})
    sink("ds_labels_lookup", "lookup", lesion_table, outputs.labels_lookup)
    ds_table = sink("ds_table", "table", lesion_table, outputs.lesions)
    workflow.connect(lesion_table, "sidecar", ds_table, "meta_dict")
    sink("ds_change_qc", "qc_json", plausibility, outputs.change_qc)

    if write_native:
        for field, order, ds_name, path in (
            ("probability", 1, "ds_native_probability", outputs.native_probability),
            ("mask", 0, "ds_native_mask", outputs.native_mask),
        ):
            # native_ref is connected, not set: setting a File trait stats the file while the graph
            # is built, and a missing FLAIR would then stop every subject (issue 16).
            to_native = pe.Node(ResampleToNative(order=order, out_name=f"{field}_native.nii.gz"),
                                name=f"native_{field}")
            workflow.connect([(outputnode, to_native, [(field, "in_file")]),
                              (inputnode, to_native, [("followup_flair", "native_ref")]),
                              (preproc_wf, to_native, [("outputnode.followup_xfm", "xfm_file")])])
            sink(ds_name, "out_file", to_native, path, {**change_meta, "Space": "native follow-up grid"})

    if reference:
        evaluate = pe.Node(EvaluateChange(reference=reference, pair=pair.name, match=match),
                           name="evaluate")
        workflow.connect([(components, evaluate, [("labels", "labels")]),
                          (preproc_wf, evaluate, [("outputnode.followup_xfm", "followup_xfm"),
                                                  ("outputnode.brain_mask", "brain_mask")])])
        ds_metrics = sink("ds_metrics", "metrics", evaluate, outputs.metrics)
        workflow.connect(evaluate, "sidecar", ds_metrics, "meta_dict")
    return workflow
