"""The pair workflow is split as sMRIPrep splits its own: one sub-workflow per job, sinks apart."""

from niworkflows.engine.workflows import LiterateWorkflow

from bids_lesionchange.discovery import SessionPair
from bids_lesionchange.interfaces.bids import DerivativeSink
from bids_lesionchange.workflows.base import init_pair_wf
from bids_lesionchange.workflows.preproc import init_preproc_wf


def _pair(tmp_path):
    return SessionPair("01", "01", "02", tmp_path / "a.nii.gz", tmp_path / "b.nii.gz")


def test_the_pair_workflow_has_one_sub_workflow_per_job_and_only_ds_pair_wf_writes(tmp_path):
    (tmp_path / "ref.nii.gz").write_bytes(b"")
    workflow = init_pair_wf(pair=_pair(tmp_path), output_dir=str(tmp_path), model_dir=str(tmp_path),
                            model_sha256="x", reference=str(tmp_path / "ref.nii.gz"), adapt_steps=1,
                            extent_mm=6.0)
    names = workflow.list_node_names()
    assert workflow.get_node("change_wf.components").inputs.extent_mm == 6.0  # --extent-mm reaches the rule
    assert {n.split(".")[0] for n in names} - {"inputnode", "outputnode"} == {
        "preproc_wf", "change_wf", "native_wf", "evaluate_wf", "ds_pair_wf"}
    assert {n for n in names if n.startswith("change_wf.") and not n.endswith("node")} == {
        "change_wf.adapt", "change_wf.predict", "change_wf.components", "change_wf.plausibility",
        "change_wf.lesion_table"}
    sinks = [n for n in names if isinstance(workflow.get_node(n).interface, DerivativeSink)]
    assert sinks and all(n.startswith("ds_pair_wf.ds_") for n in sinks)


def test_preprocess_only_writes_the_preprocessing_alone(tmp_path):
    workflow = init_pair_wf(pair=_pair(tmp_path), output_dir=str(tmp_path), model_dir=None, infer=False)
    parts = {n.split(".")[0] for n in workflow.list_node_names()} - {"inputnode", "outputnode"}
    assert parts == {"preproc_wf", "ds_pair_wf"}


def test_every_workflow_describes_itself():
    preproc = init_preproc_wf(skull_strip="threshold", resolution=1.5, intensity_norm="wm-peak")
    assert isinstance(preproc, LiterateWorkflow)
    assert "1.5 mm" in preproc.__desc__ and "wm-peak" in preproc.__desc__
