"""Thin Nipype interfaces over :mod:`bids_lesionchange.image.preprocess` (no algorithm here)."""

from __future__ import annotations

import os

from nipype.interfaces.base import BaseInterfaceInputSpec, File, TraitedSpec, isdefined, traits

from bids_lesionchange.interfaces.base import LeanInterface


def _out(runtime, name: str) -> str:
    return os.path.join(runtime.cwd, name)


#: Suffix of the full-head float images that only later steps read (no derivative copies them):
#: uncompressed. gzip cost 0.4-0.9 s per write and 0.2-0.3 s per read of each of the six at 1 mm
#: (about 8 s of a pair's CPU time, measured on the work dir of benchmarks/end_to_end.py), for
#: about 60 MB more work directory per pair. The normalised images and the probability map,
#: read by several later steps, are uncompressed too; their derivative sinks gzip them.
SCRATCH_NII = ".nii"

# Threads change how fast a step runs, not its result: a re-run with another --nprocs or
# --omp-nthreads reuses the cached step (Nipype leaves nohash inputs out of a node's hash).
_THREADS_DESC = "threads of the step (not part of the cache key)"
_CROP_DESC = ("HD-BET sees the head's box, not the whole field of view (hdbet_cli.head_box); part of the "
              "node's hash, so a work directory made before the crop is not reused")


class _CheckInputsInputSpec(BaseInterfaceInputSpec):
    baseline_flair = File(exists=True, mandatory=True, desc="FLAIR of the earlier session")
    followup_flair = File(exists=True, mandatory=True, desc="FLAIR of the later session")
    nthreads = traits.Int(1, usedefault=True, nohash=True, desc=_THREADS_DESC)


class _CheckInputsOutputSpec(TraitedSpec):
    baseline_flair = File(exists=True)
    followup_flair = File(exists=True)
    followup_foreground_ml = traits.Float(desc="volume of the follow-up's foreground (head, or brain)")


class CheckInputs(LeanInterface):
    """Refuse bad FLAIRs (2D, 4D, all zero, NaN, slices over 7 mm, a slab) before any work."""

    input_spec = _CheckInputsInputSpec
    output_spec = _CheckInputsOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.image.preprocess import check_pair

        coverage = check_pair(self.inputs.baseline_flair, self.inputs.followup_flair,
                              threads=self.inputs.nthreads)
        self._results.update(baseline_flair=self.inputs.baseline_flair,
                             followup_flair=self.inputs.followup_flair,
                             followup_foreground_ml=coverage["followup"]["foreground_ml"])
        return runtime


class _CommonGridInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the follow-up FLAIR")
    resolution = traits.Float(1.0, usedefault=True, desc="voxel size of the common grid (mm)")
    nthreads = traits.Int(1, usedefault=True, nohash=True, desc=_THREADS_DESC)


class _CommonGridOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the follow-up on the common grid")
    out_xfm = File(exists=True, desc="follow-up native-to-common transform (identity)")


class CommonGrid(LeanInterface):
    """Resample the follow-up onto the common RAS grid (one interpolation)."""

    input_spec = _CommonGridInputSpec
    output_spec = _CommonGridOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.image.preprocess import followup_to_common

        out_file, out_xfm = followup_to_common(
            self.inputs.in_file, _out(runtime, "followup_common" + SCRATCH_NII),
            _out(runtime, "from-followup_to-common_mode-image_xfm.txt"),
            resolution=self.inputs.resolution, threads=self.inputs.nthreads)
        self._results.update(out_file=str(out_file), out_xfm=str(out_xfm))
        return runtime


class _SkullStripInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the follow-up on the common grid")
    method = traits.Enum("auto", "hdbet", "threshold", "none", usedefault=True)
    hdbet_mode = traits.Enum("fast", "accurate", usedefault=True)
    hdbet_precision = traits.Enum("auto", "float32", "bfloat16", usedefault=True)
    hdbet_crop = traits.Bool(True, usedefault=True, desc=_CROP_DESC)
    device = traits.Str("cpu", usedefault=True)
    nthreads = traits.Int(1, usedefault=True, nohash=True, desc=_THREADS_DESC)
    source_file = File(desc="the user's file, named in errors")
    foreground_ml = traits.Float(desc="the follow-up's foreground volume (check_inputs): a head skips "
                                 "the brain-extracted test")


class _SkullStripOutputSpec(TraitedSpec):
    out_mask = File(exists=True, desc="brain mask (uint8) on the common grid")
    method = traits.Str(desc="the method that ran (auto resolved; an already brain-extracted input: none)")


class SkullStrip(LeanInterface):
    """Brain mask of the follow-up (HD-BET in a child process, threshold, or nonzero)."""

    input_spec = _SkullStripInputSpec
    output_spec = _SkullStripOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.image.preprocess import skullstrip_followup

        out, method = skullstrip_followup(
            self.inputs.in_file, _out(runtime, "brain_mask.nii.gz"), method=self.inputs.method,
            hdbet_mode=self.inputs.hdbet_mode, device=self.inputs.device, nthreads=self.inputs.nthreads,
            source_file=self.inputs.source_file or None, return_method=True,
            hdbet_precision=self.inputs.hdbet_precision, hdbet_crop=self.inputs.hdbet_crop,
            foreground_ml=self.inputs.foreground_ml if isdefined(self.inputs.foreground_ml) else None)
        self._results["out_mask"] = str(out)
        self._results["method"] = method
        return runtime


class _N4InputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True, desc="brain mask on the same grid")
    out_name = traits.Str("n4.nii.gz", usedefault=True)
    nthreads = traits.Int(1, usedefault=True, nohash=True, desc=_THREADS_DESC)
    source_file = File(desc="the user's file, named in errors")


class _FileOutputSpec(TraitedSpec):
    out_file = File(exists=True)


class N4Correct(LeanInterface):
    """N4 bias-field correction inside the brain mask (SimpleITK, ~4 mm shrink)."""

    input_spec = _N4InputSpec
    output_spec = _FileOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.image.preprocess import n4_correct_file

        out = n4_correct_file(self.inputs.in_file, self.inputs.mask_file,
                              _out(runtime, self.inputs.out_name), nthreads=self.inputs.nthreads,
                              source_file=self.inputs.source_file or None)
        self._results["out_file"] = str(out)
        return runtime


class _CoarseRegInputSpec(BaseInterfaceInputSpec):
    fixed_file = File(exists=True, mandatory=True, desc="bias-corrected follow-up, common grid")
    mask_file = File(exists=True, mandatory=True, desc="brain mask on the common grid")
    moving_file = File(exists=True, mandatory=True, desc="the baseline FLAIR (native)")
    nthreads = traits.Int(1, usedefault=True, nohash=True, desc=_THREADS_DESC)


class _XfmOutputSpec(TraitedSpec):
    out_xfm = File(exists=True, desc="native-to-common 4x4 matrix (text)")


class CoarseRegistration(LeanInterface):
    """Coarse rigid alignment of the raw baseline (pyramid levels 4 and 2)."""

    input_spec = _CoarseRegInputSpec
    output_spec = _XfmOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.image.preprocess import coarse_register_file

        out = coarse_register_file(self.inputs.fixed_file, self.inputs.mask_file,
                                   self.inputs.moving_file, _out(runtime, "coarse_xfm.txt"),
                                   nthreads=self.inputs.nthreads)
        self._results["out_xfm"] = str(out)
        return runtime


class _MaskToNativeInputSpec(BaseInterfaceInputSpec):
    mask_file = File(exists=True, mandatory=True, desc="mask on the common grid")
    native_file = File(exists=True, mandatory=True, desc="the session's original image")
    xfm_file = File(exists=True, mandatory=True, desc="that session's native-to-common xfm")


class MaskToNative(LeanInterface):
    """Carry the brain mask onto a session's native grid (nearest neighbour, dilated 3 mm)."""

    input_spec = _MaskToNativeInputSpec
    output_spec = _FileOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.image.preprocess import mask_to_native_file

        out = mask_to_native_file(self.inputs.mask_file, self.inputs.native_file,
                                  self.inputs.xfm_file, _out(runtime, "native_mask.nii.gz"))
        self._results["out_file"] = str(out)
        return runtime


class _RigidRegInputSpec(BaseInterfaceInputSpec):
    fixed_file = File(exists=True, mandatory=True, desc="bias-corrected follow-up, common grid")
    mask_file = File(exists=True, mandatory=True, desc="brain mask on the common grid")
    moving_file = File(exists=True, mandatory=True, desc="bias-corrected baseline (native)")
    init_xfm = File(exists=True, mandatory=True, desc="coarse native-to-common transform")
    source_file = File(desc="the user's baseline, named in errors")
    min_ncc = traits.Float(0.5, usedefault=True, desc="brain NCC below which it failed")
    nthreads = traits.Int(1, usedefault=True, nohash=True, desc=_THREADS_DESC)
    skull_strip = traits.Str(desc="the skull-strip method that made the mask (SkullStrip's 'method'): with "
                             "HD-BET, a mask too large for a brain is checked against the baseline's own")
    hdbet_mode = traits.Enum("fast", "accurate", usedefault=True)
    hdbet_precision = traits.Enum("auto", "float32", "bfloat16", usedefault=True)
    hdbet_crop = traits.Bool(True, usedefault=True, desc=_CROP_DESC)
    device = traits.Str("cpu", usedefault=True)
    followup_source = File(desc="the user's follow-up, named in the mask warning")
    write_before = traits.Bool(True, usedefault=True, desc="also write the baseline placed by scanner "
                               "coordinates (out_before, the registration reportlet's 'before'); part of "
                               "the node's hash, so a work directory made before this output is not reused")


class _RigidRegOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="baseline on the common grid (interpolated once)")
    out_xfm = File(exists=True, desc="baseline native-to-common transform")
    out_mask = File(exists=True, desc="brain mask restricted to voxels the baseline covers")
    out_report = File(exists=True, desc="registration measures (JSON)")
    out_before = File(exists=True, desc="the baseline on the common grid by scanner coordinates only "
                      "(linear; the reportlet's 'before')")


class RigidRegistration(LeanInterface):
    """Refine the rigid alignment, resample the baseline once, fail on a bad alignment."""

    input_spec = _RigidRegInputSpec
    output_spec = _RigidRegOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.image.preprocess import register_baseline_file

        names = {"out_file": "baseline_common" + SCRATCH_NII, "out_mask": "brain_mask.nii.gz",
                 "out_xfm": "from-baseline_to-common_mode-image_xfm.txt",
                 "out_report": "registration.json"}
        if self.inputs.write_before:
            names["out_before"] = "baseline_before" + SCRATCH_NII
        paths = {key: _out(runtime, name) for key, name in names.items()}
        hdbet = None
        if isdefined(self.inputs.skull_strip) and self.inputs.skull_strip.startswith("hdbet"):
            hdbet = {"mode": self.inputs.hdbet_mode, "precision": self.inputs.hdbet_precision,
                     "device": self.inputs.device, "crop": self.inputs.hdbet_crop}
        register_baseline_file(self.inputs.fixed_file, self.inputs.mask_file,
                               self.inputs.moving_file, self.inputs.init_xfm, paths["out_file"],
                               paths["out_xfm"], paths["out_mask"], paths["out_report"],
                               source_file=self.inputs.source_file or None,
                               min_ncc=self.inputs.min_ncc, nthreads=self.inputs.nthreads,
                               hdbet=hdbet, followup_source=self.inputs.followup_source or None,
                               out_before=paths.get("out_before"))
        self._results.update(paths)
        return runtime


class _MatchResolutionInputSpec(BaseInterfaceInputSpec):
    baseline_file = File(exists=True, mandatory=True, desc="baseline on the common grid")
    followup_file = File(exists=True, mandatory=True, desc="follow-up on the common grid")
    baseline_native = File(exists=True, mandatory=True, desc="the baseline FLAIR as acquired")
    followup_native = File(exists=True, mandatory=True, desc="the follow-up FLAIR as acquired")
    baseline_xfm = File(exists=True, mandatory=True, desc="baseline native-to-common transform")
    followup_xfm = File(exists=True, mandatory=True, desc="follow-up native-to-common transform")


class _MatchResolutionOutputSpec(TraitedSpec):
    baseline_file = File(exists=True)
    followup_file = File(exists=True)
    out_report = File(exists=True, desc="FWHM of each session and the smoothing applied (JSON)")


class MatchResolution(LeanInterface):
    """Smooth the sharper session to the coarser one's resolution (e.g. 3D vs thick-slice 2D)."""

    input_spec = _MatchResolutionInputSpec
    output_spec = _MatchResolutionOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.image.preprocess import match_resolution_file

        paths = {"baseline_file": _out(runtime, "baseline_matched" + SCRATCH_NII),
                 "followup_file": _out(runtime, "followup_matched" + SCRATCH_NII),
                 "out_report": _out(runtime, "resolution.json")}
        i = self.inputs
        match_resolution_file(i.baseline_file, i.followup_file, i.baseline_native, i.followup_native,
                              i.baseline_xfm, i.followup_xfm, paths["baseline_file"], paths["followup_file"],
                              paths["out_report"])
        self._results.update(paths)
        return runtime


class _NormaliseInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True)
    out_name = traits.Str("preproc.nii.gz", usedefault=True)
    method = traits.Enum("percentile", "wm-peak", usedefault=True,
                         desc="wm-peak: white-matter peak at 0.5; percentile: 0th-99th (the paper)")
    source_file = File(desc="the user's file, named in errors")


class Normalise(LeanInterface):
    """Intensities to [0, 1] in the brain (white-matter peak or 0th-99th percentiles), 0 outside."""

    input_spec = _NormaliseInputSpec
    output_spec = _FileOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.image.preprocess import normalise_file

        out = normalise_file(self.inputs.in_file, self.inputs.mask_file,
                             _out(runtime, self.inputs.out_name), method=self.inputs.method,
                             source_file=self.inputs.source_file or None)
        self._results["out_file"] = str(out)
        return runtime


class _QCInputSpec(BaseInterfaceInputSpec):
    baseline_file = File(exists=True, mandatory=True)
    followup_file = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True)
    registration_json = File(exists=True, mandatory=True)
    skull_strip = traits.Str("", usedefault=True, desc="the skull-strip method that ran")
    resolution_json = File(exists=True, desc="the resolution-matching report")
    baseline_source = File(desc="the user's baseline FLAIR, named in the flags")
    followup_source = File(desc="the user's follow-up FLAIR, named in the flags")
    baseline_unnormalised = File(exists=True, desc="the baseline before intensity normalisation (same grid)")
    followup_unnormalised = File(exists=True, desc="the follow-up before intensity normalisation (same grid)")
    baseline_unmatched = File(exists=True, desc="the baseline before resolution matching (same grid): its "
                                                "FLAIR-likeness is judged at its own resolution")
    followup_unmatched = File(exists=True, desc="the follow-up before resolution matching (same grid)")
    checks_digest = traits.Str(desc="digest of the input checks' code (hashed: a newer version reruns them); "
                                    "set by the node to image.plausibility.checks_digest()")


class _QCOutputSpec(TraitedSpec):
    out_json = File(exists=True)


class PreprocQC(LeanInterface):
    """Write qc.json: brain volumes, similarity in the brain, registration_failed, plausibility flags."""

    input_spec = _QCInputSpec
    output_spec = _QCOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.image.preprocess import quality_file

        out = _out(runtime, "qc.json")
        quality_file(self.inputs.baseline_file, self.inputs.followup_file, self.inputs.mask_file,
                     self.inputs.registration_json, out, skull_strip=self.inputs.skull_strip,
                     resolution_json=self.inputs.resolution_json or None,
                     baseline_source=self.inputs.baseline_source or None,
                     followup_source=self.inputs.followup_source or None,
                     unnormalised=(self.inputs.baseline_unnormalised or None,
                                   self.inputs.followup_unnormalised or None),
                     unmatched=(self.inputs.baseline_unmatched or None, self.inputs.followup_unmatched or None))
        self._results["out_json"] = out
        return runtime


class _MaskReportInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the follow-up on the common grid")
    mask_file = File(exists=True, mandatory=True)


class _SvgOutputSpec(TraitedSpec):
    out_report = File(exists=True, desc="SVG reportlet")


class MaskReport(LeanInterface):
    """SVG reportlet: outline of the brain mask on the follow-up."""

    input_spec = _MaskReportInputSpec
    output_spec = _SvgOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.image.reportlets import mask_report_file

        out = mask_report_file(self.inputs.in_file, self.inputs.mask_file,
                               _out(runtime, "mask.svg"))
        self._results["out_report"] = str(out)
        return runtime


class _RegistrationReportInputSpec(BaseInterfaceInputSpec):
    followup_file = File(exists=True, mandatory=True, desc="follow-up on the common grid")
    baseline_before = File(exists=True, mandatory=True, desc="the baseline on the common grid by "
                           "scanner coordinates only (RigidRegistration's out_before)")
    baseline_common = File(exists=True, mandatory=True, desc="registered baseline")
    mask_file = File(exists=True, mandatory=True)


class RegistrationReport(LeanInterface):
    """SVG reportlet: the baseline's edges on the follow-up before and after registration."""

    input_spec = _RegistrationReportInputSpec
    output_spec = _SvgOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.image.reportlets import registration_report_file

        out = registration_report_file(self.inputs.followup_file, self.inputs.baseline_before,
                                       self.inputs.baseline_common, self.inputs.mask_file,
                                       _out(runtime, "registration.svg"))
        self._results["out_report"] = str(out)
        return runtime


class _ToNativeInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="an image on the common grid")
    native_ref = File(exists=True, mandatory=True, desc="the session's original FLAIR")
    xfm_file = File(exists=True, mandatory=True, desc="that session's native-to-common xfm")
    order = traits.Int(0, usedefault=True, desc="0 nearest (masks), 1 linear (maps)")
    out_name = traits.Str("native.nii.gz", usedefault=True)


class ResampleToNative(LeanInterface):
    """Map an image from the common space back onto a session's original grid."""

    input_spec = _ToNativeInputSpec
    output_spec = _FileOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.atomic import atomic_write_nifti
        from bids_lesionchange.image.transforms import to_native

        out = _out(runtime, self.inputs.out_name)
        atomic_write_nifti(out, to_native(self.inputs.in_file, self.inputs.native_ref, self.inputs.xfm_file,
                                          order=self.inputs.order))
        self._results["out_file"] = out
        return runtime
