"""The derivatives of a session pair: the ``ds_*`` sinks (Nipype wiring)."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_lesionchange.derivatives import pair_outputs
from bids_lesionchange.interfaces.bids import DerivativeSink
from bids_lesionchange.workflows.change import CHANGE_FIELDS
from bids_lesionchange.workflows.preproc import PREPROC_FIELDS


def init_ds_pair_wf(*, pair, output_dir, resolution=1.0, change_meta=None, write_native=True, evaluate=False,
                    name="ds_pair_wf"):
    """Write a pair's derivatives (the ``ds_*`` sinks) to the output directory.

    Each sink copies its file, atomically, to the path that
    :func:`~bids_lesionchange.derivatives.pair_outputs` names, with its JSON sidecar if any.

    Parameters
    ----------
    pair : SessionPair
        The pair (its subject and sessions name the files; its FLAIRs are the ``Sources``).
    output_dir : str
        Root of the derivatives dataset.
    resolution : float
        Voxel size of the common grid (for the preprocessed images' description).
    change_meta : dict, optional
        Sidecar entries of the change images (sessions, threshold, model, ...); None: the pair was
        only preprocessed and no change derivative is written.
    write_native : bool
        With ``change_meta``: also write the probability and mask on the native grid.
    evaluate : bool
        With ``change_meta``: also write the metrics table.
    name : str
        Workflow name.

    Inputs
    ------
    baseline_preproc, followup_preproc, brain_mask, baseline_xfm, followup_xfm, qc_json, mask_svg, registration_svg
        From the preprocessing.
    probability, mask, labels, lookup, table, table_sidecar, change_qc
        From the change detection (with ``change_meta``).
    native_probability, native_mask
        From the native-space workflow (with ``write_native``).
    metrics, metrics_sidecar
        From the evaluation (with ``evaluate``).

    Outputs
    -------
    None (the files are the output).
    """
    sub, ses_b, ses_f = pair.subject, pair.baseline_session, pair.followup_session
    fields = list(PREPROC_FIELDS)
    if change_meta is not None:
        fields += list(CHANGE_FIELDS)
        fields += ["native_probability", "native_mask"] if write_native else []
        fields += ["metrics", "metrics_sidecar"] if evaluate else []
    workflow = Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=fields), name="inputnode")

    def sink(name_, field, path, meta=None):
        node = pe.Node(DerivativeSink(base_directory=output_dir, out_path=str(path)),
                       name=name_, run_without_submitting=True)
        if meta:
            node.inputs.meta_dict = meta
        workflow.connect(inputnode, field, node, "in_file")
        return node

    outputs = pair_outputs(sub=sub, baseline=ses_b, followup=ses_f)  # every file this pair writes
    spatial = {"SpatialReference": str(outputs.followup_preproc)}
    preproc_meta = {"Sources": [str(pair.baseline_flair), str(pair.followup_flair)],
                    "SkullStripped": True, **spatial,
                    "Description": f"FLAIR in the common space: the follow-up session ses-{ses_f} "
                    f"at {resolution} mm isotropic (RAS)"}
    sink("ds_baseline", "baseline_preproc", outputs.baseline_preproc, preproc_meta)
    sink("ds_followup", "followup_preproc", outputs.followup_preproc, preproc_meta)
    sink("ds_brain_mask", "brain_mask", outputs.brain_mask,
         {"Type": "Brain", "Sources": [str(pair.followup_flair)], **spatial})
    sink("ds_baseline_xfm", "baseline_xfm", outputs.baseline_xfm)
    sink("ds_followup_xfm", "followup_xfm", outputs.followup_xfm)
    sink("ds_qc", "qc_json", outputs.preproc_qc)
    sink("ds_mask_svg", "mask_svg", outputs.mask_svg)
    sink("ds_registration_svg", "registration_svg", outputs.registration_svg)
    if change_meta is None:
        return workflow

    sink("ds_probability", "probability", outputs.probability, {**change_meta, **spatial})
    sink("ds_mask", "mask", outputs.mask, {**change_meta, **spatial})
    sink("ds_labels", "labels", outputs.labels,
         {**change_meta, **spatial, "Description": "Changes labelled 1..n, largest first (label = "
          "row of the lesion table); the dseg.tsv beside it names each one new or enlarging"})
    sink("ds_labels_lookup", "lookup", outputs.labels_lookup)
    ds_table = sink("ds_table", "table", outputs.lesions)
    workflow.connect(inputnode, "table_sidecar", ds_table, "meta_dict")
    sink("ds_change_qc", "change_qc", outputs.change_qc)
    if write_native:
        native_meta = {**change_meta, "Space": "native follow-up grid"}
        sink("ds_native_probability", "native_probability", outputs.native_probability, native_meta)
        sink("ds_native_mask", "native_mask", outputs.native_mask, native_meta)
    if evaluate:
        ds_metrics = sink("ds_metrics", "metrics", outputs.metrics)
        workflow.connect(inputnode, "metrics_sidecar", ds_metrics, "meta_dict")
    return workflow
