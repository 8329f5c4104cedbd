"""The preprocessing workflow: its graph, and a run end to end on a small synthetic pair."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bids_lesionchange.simulate.phantom import head_phantom
from bids_lesionchange.image.register import rigid_error
from bids_lesionchange.image.skullstrip import hdbet_available
from bids_lesionchange.image.transforms import read_xfm
from bids_lesionchange.workflows.preproc import init_preproc_wf

OUTPUTS = ["baseline_preproc", "followup_preproc", "brain_mask", "baseline_xfm", "followup_xfm",
           "qc_json", "mask_svg", "registration_svg"]


def _save(path, phantom):
    nib.save(nib.Nifti1Image(phantom.data, phantom.affine), str(path))
    return str(path)


def _collecting(workflow, base_dir):
    """Wrap the workflow with a node that keeps its outputs (identity nodes are pruned)."""
    outer = pe.Workflow(name="outer", base_dir=str(base_dir))
    collect = pe.Node(niu.Merge(len(OUTPUTS)), name="collect")
    outer.connect([(workflow, collect, [(f"outputnode.{name}", f"in{i + 1}")
                                        for i, name in enumerate(OUTPUTS)])])
    outer.config["execution"]["crashdump_dir"] = str(base_dir)
    return outer


def test_graph_has_the_contract_fields_and_resources():
    workflow = init_preproc_wf(skull_strip="threshold", omp_nthreads=2, resolution=2.0)
    inputnode = workflow.get_node("inputnode")
    outputnode = workflow.get_node("outputnode")
    assert set(inputnode.inputs.copyable_trait_names()) == {"baseline_flair", "followup_flair"}
    assert set(outputnode.inputs.copyable_trait_names()) == set(OUTPUTS)
    names = set(workflow.list_node_names())
    assert {"skullstrip", "rigid_reg", "n4_followup", "n4_baseline", "match_resolution",
            "normalise_baseline", "normalise_followup", "qc"} <= names
    for heavy in ("skullstrip", "rigid_reg", "coarse_reg", "n4_followup", "n4_baseline"):
        assert workflow.get_node(heavy).n_procs == 2
    assert workflow.get_node("skullstrip").inputs.method == "threshold"
    assert workflow.get_node("common_grid").inputs.resolution == 2.0


@pytest.mark.skipif(not hdbet_available(), reason="HD-BET is not installed")
def test_hdbet_skullstrip_node_asks_for_memory():
    workflow = init_preproc_wf(skull_strip="auto", hdbet_mode="fast")
    node = workflow.get_node("skullstrip")
    # the node decides at run time (an already brain-extracted input keeps its own support),
    # but it is sized for HD-BET, which auto resolves to when installed
    assert node.inputs.method == "auto"
    assert node.mem_gb >= 3.0


def test_registration_gets_the_skull_strip_method_and_hdbet_settings_for_an_oversized_mask():
    workflow = init_preproc_wf(skull_strip="auto", hdbet_mode="accurate", hdbet_precision="float32")
    rigid_reg = workflow.get_node("rigid_reg")
    sources = {(edge[0].name, name_out, name_in) for edge in workflow._graph.in_edges(rigid_reg)
               for name_out, name_in in workflow._graph.get_edge_data(*edge)["connect"]}
    assert ("skullstrip", "method", "skull_strip") in sources  # the method that ran, known only at run time
    assert ("check_inputs", "followup_flair", "followup_source") in sources
    assert rigid_reg.inputs.hdbet_mode == "accurate" and rigid_reg.inputs.hdbet_precision == "float32"


def test_runs_end_to_end_on_a_small_pair(tmp_path):
    followup = head_phantom((40, 40, 40), 2.0, head_radius_mm=36.0, seed=1)
    baseline = head_phantom((40, 40, 40), 2.0, head_radius_mm=36.0, seed=2,
                            rotation_deg=(-5, 4, 7), translation_mm=(-2, 3, 2))
    workflow = init_preproc_wf(skull_strip="threshold", resolution=2.0)
    workflow.inputs.inputnode.baseline_flair = _save(tmp_path / "ses-01_FLAIR.nii.gz", baseline)
    workflow.inputs.inputnode.followup_flair = _save(tmp_path / "ses-02_FLAIR.nii.gz", followup)
    graph = _collecting(workflow, tmp_path / "work").run(plugin="Linear")
    collect = next(node for node in graph.nodes() if node.name == "collect")
    out = dict(zip(OUTPUTS, collect.result.outputs.out))

    rotation, translation = rigid_error(read_xfm(out["baseline_xfm"]), np.linalg.inv(baseline.motion))
    assert rotation < 1.0 and translation < 1.0
    np.testing.assert_allclose(read_xfm(out["followup_xfm"]), np.eye(4))
    mask = np.asanyarray(nib.load(out["brain_mask"]).dataobj)
    assert mask.dtype == np.uint8
    for name in ("baseline_preproc", "followup_preproc"):
        img = nib.load(out[name])
        data = np.asanyarray(img.dataobj)
        assert img.get_data_dtype() == np.float32 and img.shape == (40, 40, 40)
        assert data.min() >= 0.0 and data.max() <= 1.0
        assert np.all(data[mask == 0] == 0)
    b = np.asanyarray(nib.load(out["baseline_preproc"]).dataobj)[mask > 0]
    f = np.asanyarray(nib.load(out["followup_preproc"]).dataobj)[mask > 0]
    assert np.corrcoef(b, f)[0, 1] > 0.8
    qc = json.loads(open(out["qc_json"]).read())
    assert qc["registration_failed"] is False and qc["skull_strip"] == "threshold"
    # both phantoms have 2 mm voxels: the same resolution, so no session is smoothed
    assert qc["resolution_matching"]["smoothed"] == []
    np.testing.assert_allclose(qc["resolution_matching"]["fwhm_mm"]["followup"], [2.0, 2.0, 2.0])
    for name in ("mask_svg", "registration_svg"):
        assert "<svg" in open(out[name]).read()


def test_bad_input_stops_the_workflow_with_file_and_step(tmp_path):
    bad = tmp_path / "ses-01_FLAIR.nii.gz"
    nib.save(nib.Nifti1Image(np.full((16, 16, 16), np.nan, np.float32), np.eye(4)), str(bad))
    good = _save(tmp_path / "ses-02_FLAIR.nii.gz",
                 head_phantom((40, 40, 40), 2.0, head_radius_mm=36.0))
    workflow = init_preproc_wf(skull_strip="threshold", resolution=2.0)
    workflow.inputs.inputnode.baseline_flair = str(bad)
    workflow.inputs.inputnode.followup_flair = good
    outer = _collecting(workflow, tmp_path / "work")
    with pytest.raises(RuntimeError):
        outer.run(plugin="Linear")
    from nipype.utils.filemanip import loadcrash

    crashes = sorted((tmp_path / "work").glob("crash-*check_inputs*.pklz"))
    assert crashes, "the failing node should be check_inputs"
    text = "".join(loadcrash(str(crashes[0]))["traceback"])
    assert f"load: {bad}: " in text and "NaN" in text
