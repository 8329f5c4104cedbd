"""Nipype interfaces for change inference, components, lesion tables and evaluation."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec, File, TraitedSpec, isdefined, traits,
)

from bids_lesionchange.analysis.components import rule_digest
from bids_lesionchange.analysis.plausibility import MAX_PLAUSIBLE_FRACTION
from bids_lesionchange.interfaces.base import LeanInterface


def _out(runtime, name: str) -> str:
    return str(Path(runtime.cwd) / name)


class _PredictInputSpec(BaseInterfaceInputSpec):
    baseline = File(exists=True, mandatory=True, desc="preprocessed baseline in the common space")
    followup = File(exists=True, mandatory=True, desc="preprocessed follow-up in the common space")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask in the common space")
    model_dir = traits.Directory(exists=True, mandatory=True, desc="trained model directory")
    model_sha256 = traits.Str("", usedefault=True,
                              desc="SHA-256 of the detector weights: part of the node's hash, so new weights "
                              "at the same path (an adapted copy, a retrained model) are never served from "
                              "the cache")
    num_threads = traits.Int(1, usedefault=True, nohash=True,
                             desc="TensorFlow threads (not part of the cache key: they change the speed)")
    record_compute = traits.Bool(True, usedefault=True,
                                 desc="return what computed the map (always on; part of the hash, so that a "
                                 "work directory from before the record runs predict again instead of "
                                 "handing on a result without it)")


class _PredictOutputSpec(TraitedSpec):
    probability = File(desc="change probability map in the common space")
    compute = traits.Dict(desc="what computed the map: CPU, vector extensions, oneDNN and its cap, graph, "
                          "precision, threads, TensorFlow and Keras versions")


class SiameseUNetPredict(LeanInterface):
    """Compute the change probability map of a pair with a trained detector."""

    input_spec = _PredictInputSpec
    output_spec = _PredictOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.model.files import predict_files
        from bids_lesionchange.model.isolated import run_isolated

        # uncompressed: components, plausibility, the lesion table and the native map read it
        out = _out(runtime, "change_probability.nii")
        # in a process of its own: the worker does not keep TensorFlow's memory for the rest of the run
        _, compute = run_isolated("predict", predict_files, self.inputs.model_dir, self.inputs.baseline,
                                  self.inputs.followup, self.inputs.brain_mask, out,
                                  num_threads=self.inputs.num_threads, return_environment=True)
        self._results.update(probability=out, compute=compute)
        return runtime


class _AdaptInputSpec(BaseInterfaceInputSpec):
    baseline = File(exists=True, mandatory=True, desc="preprocessed baseline in the common space")
    followup = File(exists=True, mandatory=True, desc="preprocessed follow-up in the common space")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask in the common space")
    model_dir = traits.Directory(exists=True, mandatory=True, desc="model to adapt (left unchanged)")
    steps = traits.Int(mandatory=True, desc="Adam steps of the adaptation")
    seed = traits.Int(0, usedefault=True, desc="seed of crops, nuisance and synthetic changes")
    num_threads = traits.Int(1, usedefault=True, desc="TensorFlow threads")


class _AdaptOutputSpec(TraitedSpec):
    model_dir = traits.Directory(desc="the adapted copy of the model (in the work directory)")
    adaptation = traits.Dict(desc="what was done: steps, seed, sessions, seconds, base model digest")
    model_sha256 = traits.Str(desc="SHA-256 of the adapted detector weights")


class AdaptModel(LeanInterface):
    """Fine-tune a copy of the model on self-pairs of this pair's two sessions (no label, no real change)."""

    input_spec = _AdaptInputSpec
    output_spec = _AdaptOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.model.adapt import adapt_files
        from bids_lesionchange.model.io import read_model_spec
        from bids_lesionchange.model.isolated import run_isolated

        out = run_isolated("adapt", adapt_files, self.inputs.model_dir,
                           [self.inputs.baseline, self.inputs.followup], [self.inputs.brain_mask],
                           _out(runtime, "adapted_model"), steps=self.inputs.steps, seed=self.inputs.seed,
                           description="this pair's two sessions, each against itself",
                           num_threads=self.inputs.num_threads)
        spec = read_model_spec(out, verify=False)  # adapt_detector records base model, steps, seed, time
        self._results.update(model_dir=str(out), adaptation=dict(spec["training"]["adaptation"]),
                             model_sha256=spec["sha256"][spec["weights"]])
        return runtime


class _ComponentsInputSpec(BaseInterfaceInputSpec):
    probability = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    threshold = traits.Float(0.1, usedefault=True, desc="kappa: voxels with p > kappa are change")
    min_size = traits.Int(20, usedefault=True, desc="smallest component kept (voxels)")
    direction = traits.Enum("increase", "any", usedefault=True,
                            desc="increase: only where the follow-up is brighter (new/enlarging lesions)")
    baseline = File(exists=True, desc="preprocessed baseline (for direction=increase)")
    followup = File(exists=True, desc="preprocessed follow-up (for direction=increase)")
    preproc_qc = File(exists=True, desc="preprocessing QC JSON: its resolution-matching report gives the "
                                        "sessions' point-spread functions (for direction=increase)")
    extent_mm = traits.Float(0.0, usedefault=True,
                             desc="grow each change into the new hyperintensity around it by up to this far "
                             "(mm; 0: off)")
    rule_digest = traits.Str(rule_digest(), usedefault=True,
                             desc="digest of the change rule's code: part of the node's hash, so that a work "
                             "directory kept from an earlier version runs the new rule instead of serving the "
                             "old one's changes from the cache")


class _ComponentsOutputSpec(TraitedSpec):
    mask = File(desc="binary change mask")
    labels = File(desc="connected components, labelled 1..n")
    n_components = traits.Int()


class ChangeComponents(LeanInterface):
    """Threshold the probability map and keep connected components of at least ``min_size`` voxels."""

    input_spec = _ComponentsInputSpec
    output_spec = _ComponentsOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.analysis.files import components_files

        mask, labels, n = components_files(
            self.inputs.probability, self.inputs.brain_mask, _out(runtime, "change_mask.nii.gz"),
            _out(runtime, "change_dseg.nii.gz"), self.inputs.threshold, self.inputs.min_size,
            direction=self.inputs.direction, baseline=self.inputs.baseline or None,
            followup=self.inputs.followup or None, preproc_qc=self.inputs.preproc_qc or None,
            extent_mm=self.inputs.extent_mm)
        self._results.update(mask=mask, labels=labels, n_components=n)
        return runtime


class _PlausibilityInputSpec(BaseInterfaceInputSpec):
    probability = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    n_changes = traits.Int(mandatory=True, desc="number of changes found")
    threshold = traits.Float(0.1, usedefault=True, desc="kappa: voxels with p > kappa are change")
    adaptation = traits.Dict(desc="the pair's model adaptation, recorded in the QC JSON")
    compute = traits.Dict(desc="what computed the probability map (the predict step's), recorded in the QC JSON")
    max_fraction = traits.Float(MAX_PLAUSIBLE_FRACTION, usedefault=True,
                                desc="largest plausible fraction of the brain above kappa")


class _PlausibilityOutputSpec(TraitedSpec):
    qc_json = File(desc="JSON: fraction of the brain above kappa, n_changes, out_of_domain, message")
    out_of_domain = traits.Bool()


class ChangePlausibility(LeanInterface):
    """Flag a probability map that calls too much of the brain change (model out of its domain)."""

    input_spec = _PlausibilityInputSpec
    output_spec = _PlausibilityOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.analysis.files import plausibility_files

        out, qc = plausibility_files(
            self.inputs.probability, self.inputs.brain_mask, self.inputs.n_changes,
            _out(runtime, "change_qc.json"), self.inputs.threshold,
            max_plausible_fraction=self.inputs.max_fraction,
            adaptation=self.inputs.adaptation if isdefined(self.inputs.adaptation) else None,
            compute=self.inputs.compute if isdefined(self.inputs.compute) else None)
        self._results.update(qc_json=out, out_of_domain=qc["out_of_domain"])
        return runtime


class _LesionTableInputSpec(BaseInterfaceInputSpec):
    labels = File(exists=True, mandatory=True)
    probability = File(exists=True, mandatory=True)
    baseline = File(exists=True, mandatory=True)
    followup = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)


class _LesionTableOutputSpec(TraitedSpec):
    table = File(desc="TSV, one row per detected change")
    sidecar = traits.Dict(desc="JSON sidecar describing the columns")
    lookup = File(desc="BIDS dseg.tsv of the change labels: index, name, abbreviation, color, mapping")


class LesionTable(LeanInterface):
    """Describe every detected change: size, position, probabilities, intensities, new or enlarging."""

    input_spec = _LesionTableInputSpec
    output_spec = _LesionTableOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.analysis.files import lesion_table_files

        table, sidecar, lookup = lesion_table_files(
            self.inputs.labels, self.inputs.probability, self.inputs.baseline, self.inputs.followup,
            self.inputs.brain_mask, _out(runtime, "lesions.tsv"), _out(runtime, "change_dseg.tsv"))
        self._results.update(table=table, sidecar=sidecar, lookup=lookup)
        return runtime


class _EvaluateInputSpec(BaseInterfaceInputSpec):
    labels = File(exists=True, mandatory=True, desc="predicted components (common space)")
    reference = File(exists=True, mandatory=True, desc="reference change mask (follow-up native grid)")
    followup_xfm = File(exists=True, mandatory=True, desc="follow-up native-to-common transform")
    brain_mask = File(exists=True, desc="brain mask (common space): checks the reference is plausible")
    pair = traits.Str(mandatory=True, desc="pair name for the table")
    match = traits.Enum("iou", "overlap", "msseg2", usedefault=True,
                        desc="lesion matching rule (analysis.metrics.MATCH_MODES)")


class _EvaluateOutputSpec(TraitedSpec):
    metrics = File(desc="TSV with LTP, LFN, LFP, LTPR, LFPR, PPV, lesion F1 and Dice")
    sidecar = traits.Dict()


class EvaluateChange(LeanInterface):
    """Compare detected changes with a reference mask (lesion-wise and voxel-wise); flag an implausible one."""

    input_spec = _EvaluateInputSpec
    output_spec = _EvaluateOutputSpec

    def _run_interface(self, runtime):
        from bids_lesionchange.analysis.files import evaluate_files

        out, sidecar = evaluate_files(
            self.inputs.labels, self.inputs.reference, self.inputs.followup_xfm,
            _out(runtime, "metrics.tsv"), pair=self.inputs.pair, match=self.inputs.match,
            brain_mask=self.inputs.brain_mask if isdefined(self.inputs.brain_mask) else None)
        self._results.update(metrics=out, sidecar=sidecar)
        return runtime

