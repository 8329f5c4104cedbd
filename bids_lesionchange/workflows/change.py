"""Change detection of a preprocessed pair, its native-space copies and its evaluation (Nipype wiring)."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_lesionchange.analysis.plausibility import MAX_PLAUSIBLE_FRACTION
from bids_lesionchange.interfaces.change import (
    AdaptModel, ChangeComponents, ChangePlausibility, EvaluateChange, LesionTable, SiameseUNetPredict,
)
from bids_lesionchange.interfaces.preproc import ResampleToNative

#: The outputs of :func:`init_change_wf`.
CHANGE_FIELDS = ("probability", "mask", "labels", "lookup", "table", "table_sidecar", "change_qc")
#: What change detection takes from preprocessing (``qc_json``: the resolution-matching report).
CHANGE_INPUTS = ("baseline_preproc", "followup_preproc", "brain_mask", "qc_json")


def detector_digest(model_dir) -> str:
    """The SHA-256 of a model's detector weights as model.json records it ("" when unknown)."""
    if not model_dir:
        return ""
    from bids_lesionchange.model.io import read_model_spec

    try:
        spec = read_model_spec(model_dir, verify=False)
        return str(spec["sha256"][spec["weights"]])
    except Exception:  # noqa: BLE001 - a bad model is refused with its message by the parser and predict
        return ""


def init_change_wf(*, model_dir, model_sha256=None, threshold=0.1, min_blob_size=20,
                   max_change_fraction=MAX_PLAUSIBLE_FRACTION, adapt_steps=0, seed=0,
                   change_direction="increase", extent_mm=0.0, omp_nthreads=1, name="change_wf"):
    """Detect change in a preprocessed pair: predict -> components -> lesion table, and the QC.

    With ``adapt_steps`` > 0 a copy of the model is first fine-tuned on self-pairs of the two
    preprocessed sessions (:mod:`bids_lesionchange.model.adapt`, node ``adapt``, seeded by
    ``seed``); the copy stays in the work directory and the change QC JSON records the adaptation.

    Parameters
    ----------
    model_dir : str
        The trained model directory.
    model_sha256 : str, optional
        The detector weights' digest, part of the predict node's hash (read from ``model_dir``
        when None).
    threshold : float
        Kappa: the probability above which a voxel is change.
    min_blob_size : int
        Smallest change kept, in voxels.
    max_change_fraction : float
        Fraction of the brain above ``threshold`` beyond which the pair is out of domain.
    adapt_steps, seed : int
        Fine-tuning steps of the model on this pair (0: none) and their seed.
    change_direction : str
        ``increase`` (brighter at follow-up, not CSF, hyperintense) or ``any``.
    extent_mm : float
        With ``increase``: grow each change into the new hyperintensity around it by up to this
        far (0: off; :func:`bids_lesionchange.analysis.components.grow_to_extent`).
    omp_nthreads : int
        Threads of the predict and adapt nodes.
    name : str
        Workflow name.

    Inputs
    ------
    baseline_preproc, followup_preproc, brain_mask
        The preprocessed pair on the common grid.
    qc_json
        The preprocessing QC JSON (optional): its resolution-matching report gives each session's
        point-spread function, which the change rule's pre-existing-lesion step widens by.

    Outputs
    -------
    probability, mask, labels
        Change probability, binary change mask and components labelled 1..n (common space).
    table, table_sidecar, lookup
        Lesion table (TSV), its JSON sidecar (a dict) and the dseg.tsv lookup of the labels.
    change_qc
        JSON of the out-of-domain guard (fraction of the brain above ``threshold``, number of
        changes, ``out_of_domain``, the adaptation).
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = (
        f"The change probability of each voxel was predicted from the preprocessed pair; voxels above "
        f"{threshold} formed the changes, connected components of fewer than {min_blob_size} voxels were "
        f"discarded ({change_direction!r} direction), and each change was described in a lesion table. "
        + (f"Each change was grown by up to {extent_mm:g} mm into the adjacent tissue that had become newly "
           f"hyperintense. " if extent_mm > 0 and change_direction == "increase" else "")
    )
    inputnode = pe.Node(niu.IdentityInterface(fields=list(CHANGE_INPUTS)), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=list(CHANGE_FIELDS)), name="outputnode")

    if model_sha256 is None:
        model_sha256 = detector_digest(model_dir)
    predict = pe.Node(SiameseUNetPredict(model_dir=model_dir, model_sha256=model_sha256,
                                         num_threads=omp_nthreads),
                      name="predict", n_procs=omp_nthreads, mem_gb=3.0)
    components = pe.Node(ChangeComponents(threshold=threshold, min_size=min_blob_size,
                                          direction=change_direction, extent_mm=extent_mm), name="components")
    plausibility = pe.Node(ChangePlausibility(threshold=threshold, max_fraction=max_change_fraction),
                           name="plausibility")
    lesion_table = pe.Node(LesionTable(), name="lesion_table")
    images = [("baseline_preproc", "baseline"), ("followup_preproc", "followup"), ("brain_mask", "brain_mask")]
    workflow.connect([
        (inputnode, predict, images),
        (inputnode, components, images + [("qc_json", "preproc_qc")]),
        (predict, components, [("probability", "probability")]),
        (predict, plausibility, [("probability", "probability"), ("compute", "compute")]),
        (inputnode, plausibility, [("brain_mask", "brain_mask")]),
        (components, plausibility, [("n_components", "n_changes")]),
        (components, lesion_table, [("labels", "labels")]),
        (predict, lesion_table, [("probability", "probability")]),
        (inputnode, lesion_table, images),
        (predict, outputnode, [("probability", "probability")]),
        (components, outputnode, [("mask", "mask"), ("labels", "labels")]),
        (lesion_table, outputnode, [("table", "table"), ("sidecar", "table_sidecar"), ("lookup", "lookup")]),
        (plausibility, outputnode, [("qc_json", "change_qc")]),
    ])

    if adapt_steps:
        adapt = pe.Node(AdaptModel(model_dir=model_dir, steps=int(adapt_steps), seed=int(seed),
                                   num_threads=omp_nthreads), name="adapt", n_procs=omp_nthreads, mem_gb=3.0)
        workflow.connect([
            (inputnode, adapt, images),
            (adapt, predict, [("model_dir", "model_dir"), ("model_sha256", "model_sha256")]),
            (adapt, plausibility, [("adaptation", "adaptation")]),
        ])
    return workflow


def init_native_wf(*, name="native_wf"):
    """Bring the change probability and mask back onto the follow-up's native grid.

    Parameters
    ----------
    name : str
        Workflow name.

    Inputs
    ------
    probability, mask
        Change probability and binary mask on the common grid.
    native_ref
        The follow-up's original FLAIR (connected, not set: setting a File trait stats the file
        while the graph is built, and a missing FLAIR would then stop every subject, issue 16).
    xfm_file
        The follow-up's native-to-common transform.

    Outputs
    -------
    probability, mask
        The same on the native grid (linear and nearest-neighbour interpolation).
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = "The change probability and mask were also resampled onto the follow-up's own grid. "
    inputnode = pe.Node(niu.IdentityInterface(fields=["probability", "mask", "native_ref", "xfm_file"]),
                        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["probability", "mask"]), name="outputnode")
    for field, order in (("probability", 1), ("mask", 0)):
        to_native = pe.Node(ResampleToNative(order=order, out_name=f"{field}_native.nii.gz"),
                            name=f"native_{field}")
        workflow.connect([(inputnode, to_native, [(field, "in_file"), ("native_ref", "native_ref"),
                                                  ("xfm_file", "xfm_file")]),
                          (to_native, outputnode, [("out_file", field)])])
    return workflow


def init_evaluate_wf(*, reference, pair_name, match="iou", name="evaluate_wf"):
    """Compare a pair's detected changes with its reference change mask.

    Parameters
    ----------
    reference : str
        The reference change mask (the follow-up's native grid).
    pair_name : str
        The pair's name, the ``pair`` column of the metrics table.
    match : str
        Lesion matching rule (:data:`bids_lesionchange.analysis.metrics.MATCH_MODES`).
    name : str
        Workflow name.

    Inputs
    ------
    labels
        Detected changes labelled 1..n (common space).
    followup_xfm
        The follow-up's native-to-common transform (brings the reference to the common grid).
    brain_mask
        The brain mask (common space): the metrics' ``reference_flag`` says whether the reference
        is plausible for a change mask.

    Outputs
    -------
    metrics, sidecar
        The metrics table (TSV) and its JSON sidecar (a dict).
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = f"Detected changes were compared with the reference change mask ({match} matching). "
    inputnode = pe.Node(niu.IdentityInterface(fields=["labels", "followup_xfm", "brain_mask"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["metrics", "sidecar"]), name="outputnode")
    evaluate = pe.Node(EvaluateChange(reference=reference, pair=pair_name, match=match), name="evaluate")
    workflow.connect([(inputnode, evaluate, [("labels", "labels"), ("followup_xfm", "followup_xfm"),
                                             ("brain_mask", "brain_mask")]),
                      (evaluate, outputnode, [("metrics", "metrics"), ("sidecar", "sidecar")])])
    return workflow
