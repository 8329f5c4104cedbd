"""Preprocessing of a session pair into the common space (the follow-up's anatomy)."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_lesionchange.image.plausibility import checks_digest
from bids_lesionchange.image.skullstrip import resolve_skull_strip_method
from bids_lesionchange.interfaces.preproc import (CheckInputs, CoarseRegistration, CommonGrid,
                                                  MaskReport, MaskToNative, MatchResolution,
                                                  N4Correct, Normalise,
                                                  PreprocQC, RegistrationReport,
                                                  RigidRegistration, SCRATCH_NII, SkullStrip)

HDBET_MEM_GB = {"fast": 3.5, "accurate": 4.0}
#: The outputs of :func:`init_preproc_wf`.
PREPROC_FIELDS = ("baseline_preproc", "followup_preproc", "brain_mask", "baseline_xfm", "followup_xfm",
                  "qc_json", "mask_svg", "registration_svg")
#: How each skull-strip method draws the brain mask, for the workflow description.
MASK_METHODS = {"hdbet": "HD-BET", "threshold": "intensity threshold and morphology",
                "none": "non-zero voxels of the brain-extracted input"}


def init_preproc_wf(*, skull_strip: str = "auto", hdbet_mode: str = "fast", hdbet_precision: str = "auto",
                    device: str = "cpu",
                    resolution: float = 1.0, intensity_norm: str = "percentile", omp_nthreads: int = 1,
                    name: str = "preproc_wf"):
    """Build the workflow (a LiterateWorkflow) that preprocesses a baseline/follow-up FLAIR pair.

    Follow-up to the common grid (RAS, ``resolution`` mm) -> brain mask -> N4 of the follow-up;
    meanwhile the baseline: coarse rigid alignment -> mask on its native grid -> N4; then refined rigid
    alignment and a single resampling onto the common grid; the sharper session smoothed to the
    coarser one's resolution (a no-op for same-protocol pairs); both sessions normalised to
    [0, 1] inside the shared mask; QC and reportlets. See
    :mod:`bids_lesionchange.image.preprocess` for the reasons of this order.

    Parameters
    ----------
    skull_strip : str
        ``auto``, ``hdbet``, ``threshold`` or ``none``; ``auto`` is resolved here (HD-BET if
        installed with its weights, else threshold).
    hdbet_mode : str
        ``fast`` (one fold, no TTA) or ``accurate`` (five folds with TTA).
    hdbet_precision : str
        ``auto`` (bfloat16 on a CPU that computes it natively, else float32), ``float32`` or
        ``bfloat16`` (:mod:`bids_lesionchange.image.hdbet_cli`).
    device : str
        HD-BET's device: ``cpu``, ``cuda`` or ``cuda:N``.
    resolution : float
        Voxel size of the common grid in mm.
    intensity_norm : str
        ``wm-peak`` (white-matter peak at 0.5) or ``percentile`` (0th-99th, the paper): the
        normalisation the model was trained with.
    omp_nthreads : int
        Threads of each heavy node (HD-BET, N4, registration).
    name : str
        Workflow name.

    Inputs
    ------
    baseline_flair
        FLAIR of the earlier session (any orientation and voxel size).
    followup_flair
        FLAIR of the later session; its anatomy defines the common space.

    Outputs
    -------
    baseline_preproc, followup_preproc
        Preprocessed images on the common grid (float32 in [0, 1], 0 outside the brain).
    brain_mask
        The shared brain mask (uint8) on the common grid.
    baseline_xfm, followup_xfm
        Native-world-to-common-world 4x4 matrices (text, see
        :mod:`bids_lesionchange.image.transforms`).
    qc_json
        QC measures (brain volumes, similarity in the brain, ``registration_failed``, and the
        ``plausibility`` flags: not a FLAIR, maybe not the same person).
    mask_svg, registration_svg
        SVG reportlets.

    Raises
    ------
    ValueError
        When ``skull_strip`` is ``hdbet`` and HD-BET is not installed.
    """
    method = resolve_skull_strip_method(skull_strip, hdbet_mode)
    workflow = Workflow(name=name)
    workflow.__desc__ = (
        f"Each session pair was brought into the space of its follow-up session: the follow-up FLAIR was "
        f"resampled to a {resolution:g} mm isotropic grid and its brain mask drawn "
        f"({MASK_METHODS.get(method, method)}); "
        f"both sessions were corrected for intensity non-uniformity (N4); the baseline was rigidly "
        f"registered to the follow-up (a coarse alignment, then a refined one inside the brain) and "
        f"resampled once onto the common grid; the sharper session was smoothed to the coarser one's "
        f"resolution, and both were normalised ({intensity_norm}) inside the shared brain mask. "
    )
    inputnode = pe.Node(niu.IdentityInterface(fields=["baseline_flair", "followup_flair"]),
                        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=list(PREPROC_FIELDS)), name="outputnode")

    # both sessions at once, and the resampling on omp_nthreads threads: nothing else can run yet
    check_inputs = pe.Node(CheckInputs(nthreads=min(omp_nthreads, 2)), name="check_inputs",
                           n_procs=min(omp_nthreads, 2))
    common_grid = pe.Node(CommonGrid(resolution=resolution, nthreads=omp_nthreads), name="common_grid",
                          n_procs=omp_nthreads, mem_gb=1.0)
    skullstrip = pe.Node(
        SkullStrip(method=skull_strip, hdbet_mode=hdbet_mode, hdbet_precision=hdbet_precision,
                   device=device, nthreads=omp_nthreads),
        name="skullstrip", n_procs=omp_nthreads,
        mem_gb=HDBET_MEM_GB[hdbet_mode] if method == "hdbet" else 1.0)
    n4_followup = pe.Node(N4Correct(out_name="followup_n4" + SCRATCH_NII, nthreads=omp_nthreads),
                          name="n4_followup", n_procs=omp_nthreads, mem_gb=1.5)
    coarse_reg = pe.Node(CoarseRegistration(nthreads=omp_nthreads), name="coarse_reg",
                         n_procs=omp_nthreads, mem_gb=1.5)
    baseline_mask = pe.Node(MaskToNative(), name="baseline_mask", mem_gb=1.0)
    n4_baseline = pe.Node(N4Correct(out_name="baseline_n4" + SCRATCH_NII, nthreads=omp_nthreads),
                          name="n4_baseline", n_procs=omp_nthreads, mem_gb=1.5)
    rigid_reg = pe.Node(RigidRegistration(nthreads=omp_nthreads, hdbet_mode=hdbet_mode,
                                          hdbet_precision=hdbet_precision, device=device),
                        name="rigid_reg", n_procs=omp_nthreads, mem_gb=2.0)
    match_resolution = pe.Node(MatchResolution(), name="match_resolution", mem_gb=1.5)
    normalise_baseline = pe.Node(Normalise(out_name="baseline_preproc" + SCRATCH_NII, method=intensity_norm),
                                 name="normalise_baseline", mem_gb=1.0)
    normalise_followup = pe.Node(Normalise(out_name="followup_preproc" + SCRATCH_NII, method=intensity_norm),
                                 name="normalise_followup", mem_gb=1.0)
    qc = pe.Node(PreprocQC(checks_digest=checks_digest()), name="qc", mem_gb=1.0)
    mask_report = pe.Node(MaskReport(), name="mask_report", mem_gb=1.0)
    registration_report = pe.Node(RegistrationReport(), name="registration_report", mem_gb=1.0)

    workflow.connect([
        (inputnode, check_inputs, [("baseline_flair", "baseline_flair"),
                                   ("followup_flair", "followup_flair")]),
        (check_inputs, common_grid, [("followup_flair", "in_file")]),
        (common_grid, skullstrip, [("out_file", "in_file")]),
        (check_inputs, skullstrip, [("followup_flair", "source_file"),
                                    ("followup_foreground_ml", "foreground_ml")]),
        (common_grid, n4_followup, [("out_file", "in_file")]),
        (skullstrip, n4_followup, [("out_mask", "mask_file")]),
        (skullstrip, qc, [("method", "skull_strip")]),
        (check_inputs, n4_followup, [("followup_flair", "source_file")]),
        (common_grid, coarse_reg, [("out_file", "fixed_file")]),
        (skullstrip, coarse_reg, [("out_mask", "mask_file")]),
        (check_inputs, coarse_reg, [("baseline_flair", "moving_file")]),
        (skullstrip, baseline_mask, [("out_mask", "mask_file")]),
        (check_inputs, baseline_mask, [("baseline_flair", "native_file")]),
        (coarse_reg, baseline_mask, [("out_xfm", "xfm_file")]),
        (check_inputs, n4_baseline, [("baseline_flair", "in_file"),
                                     ("baseline_flair", "source_file")]),
        (baseline_mask, n4_baseline, [("out_file", "mask_file")]),
        (n4_followup, rigid_reg, [("out_file", "fixed_file")]),
        (skullstrip, rigid_reg, [("out_mask", "mask_file"), ("method", "skull_strip")]),
        (check_inputs, rigid_reg, [("followup_flair", "followup_source")]),
        (n4_baseline, rigid_reg, [("out_file", "moving_file")]),
        (coarse_reg, rigid_reg, [("out_xfm", "init_xfm")]),
        (check_inputs, rigid_reg, [("baseline_flair", "source_file")]),
        (rigid_reg, match_resolution, [("out_file", "baseline_file"), ("out_xfm", "baseline_xfm")]),
        (n4_followup, match_resolution, [("out_file", "followup_file")]),
        (rigid_reg, qc, [("out_file", "baseline_unmatched")]),
        (n4_followup, qc, [("out_file", "followup_unmatched")]),
        (common_grid, match_resolution, [("out_xfm", "followup_xfm")]),
        (check_inputs, match_resolution, [("baseline_flair", "baseline_native"),
                                          ("followup_flair", "followup_native")]),
        (match_resolution, normalise_baseline, [("baseline_file", "in_file")]),
        (rigid_reg, normalise_baseline, [("out_mask", "mask_file")]),
        (check_inputs, normalise_baseline, [("baseline_flair", "source_file")]),
        (match_resolution, normalise_followup, [("followup_file", "in_file")]),
        (match_resolution, qc, [("out_report", "resolution_json"), ("baseline_file", "baseline_unnormalised"),
                                ("followup_file", "followup_unnormalised")]),
        (check_inputs, qc, [("baseline_flair", "baseline_source"), ("followup_flair", "followup_source")]),
        (rigid_reg, normalise_followup, [("out_mask", "mask_file")]),
        (check_inputs, normalise_followup, [("followup_flair", "source_file")]),
        (normalise_baseline, qc, [("out_file", "baseline_file")]),
        (normalise_followup, qc, [("out_file", "followup_file")]),
        (rigid_reg, qc, [("out_mask", "mask_file"), ("out_report", "registration_json")]),
        (n4_followup, mask_report, [("out_file", "in_file")]),
        (rigid_reg, mask_report, [("out_mask", "mask_file")]),
        (n4_followup, registration_report, [("out_file", "followup_file")]),
        (rigid_reg, registration_report, [("out_file", "baseline_common"),
                                          ("out_before", "baseline_before")]),
        (rigid_reg, registration_report, [("out_mask", "mask_file")]),
        (normalise_baseline, outputnode, [("out_file", "baseline_preproc")]),
        (normalise_followup, outputnode, [("out_file", "followup_preproc")]),
        (rigid_reg, outputnode, [("out_mask", "brain_mask"), ("out_xfm", "baseline_xfm")]),
        (common_grid, outputnode, [("out_xfm", "followup_xfm")]),
        (qc, outputnode, [("out_json", "qc_json")]),
        (mask_report, outputnode, [("out_report", "mask_svg")]),
        (registration_report, outputnode, [("out_report", "registration_svg")]),
    ])
    return workflow
