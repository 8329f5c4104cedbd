"""BIDS-Derivatives names and the dataset description."""

import json
from pathlib import Path

import pytest

from bids_lesionchange.derivatives import bids_name, derivative_path, write_dataset_description


def test_entities_in_canonical_order():
    name = bids_name(desc="change", space="ses02", ses="02", sub="01", suffix="mask",
                     extension=".nii.gz")
    assert name == "sub-01_ses-02_space-ses02_desc-change_mask.nii.gz"
    xfm = derivative_path(sub="01", ses="01", mode="image", to="ses02", from_="orig",
                          suffix="xfm", extension=".txt")
    assert str(xfm) == "sub-01/ses-01/anat/sub-01_ses-01_from-orig_to-ses02_mode-image_xfm.txt"
    with pytest.raises(ValueError, match="unknown BIDS entities"):
        bids_name(sub="01", hemi="L", suffix="x", extension=".txt")


def test_dataset_description(tmp_path):
    path = write_dataset_description(tmp_path / "out", tmp_path / "bids")
    data = json.loads(path.read_text())
    assert data["DatasetType"] == "derivative"
    assert data["GeneratedBy"][0]["Name"] == "bids_lesionchange"
    assert data["SourceDatasets"][0]["URL"].startswith("file://")


def test_pair_outputs_are_distinct_and_are_exactly_what_the_workflow_writes(tmp_path):
    """One place names a pair's files: the workflow's sinks write those paths and no others."""
    from dataclasses import astuple

    from bids_lesionchange.derivatives import pair_outputs
    from bids_lesionchange.interfaces.bids import DerivativeSink
    from bids_lesionchange.discovery import SessionPair
    from bids_lesionchange.workflows.base import init_pair_wf

    outputs = pair_outputs(sub="01", baseline="01", followup="02")
    paths = [str(p) for p in astuple(outputs)]
    assert len(set(paths)) == len(paths)
    assert str(outputs.change_qc) == "sub-01/ses-02/anat/sub-01_ses-02_space-ses02_desc-change_qc.json"
    (tmp_path / "ref.nii.gz").write_bytes(b"")  # the evaluation node checks that its reference exists
    pair = SessionPair("01", "01", "02", tmp_path / "a.nii.gz", tmp_path / "b.nii.gz")
    workflow = init_pair_wf(pair=pair, output_dir=str(tmp_path), model_dir=str(tmp_path),
                            reference=str(tmp_path / "ref.nii.gz"), adapt_steps=2)
    sinks = {workflow.get_node(name).inputs.out_path for name in workflow.list_node_names()
             if isinstance(workflow.get_node(name).interface, DerivativeSink)}
    assert sinks == set(paths) - {str(outputs.change_mosaic), str(outputs.change_slices)}  # figures: reports


def _touch_all(root: Path, paths) -> None:
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(str(rel))


def test_a_pairs_stale_files_are_those_it_owns_but_no_longer_writes(tmp_path):
    """Issue 16: a rerun with --no-native left the native masks of the earlier run; the stale files are
    exactly the pair's own files (data and sidecars) that the new run does not write."""
    from bids_lesionchange.derivatives import owned_pair_files, pair_outputs, sidecar_path, stale_pair_files

    outputs = pair_outputs(sub="01", baseline="01", followup="02")
    other = pair_outputs(sub="01", baseline="02", followup="03")  # shares ses-02 with the first pair
    _touch_all(tmp_path, owned_pair_files(outputs) | owned_pair_files(other))
    foreign = tmp_path / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_desc-manual_mask.nii.gz"
    foreign.write_text("the user's")
    written = {Path(p) for p in vars(outputs).values()} - {outputs.native_mask, outputs.native_probability}
    stale = stale_pair_files(tmp_path, outputs, written)
    expected = {outputs.native_mask, outputs.native_probability, sidecar_path(outputs.native_mask),
                sidecar_path(outputs.native_probability)}
    assert {p.relative_to(tmp_path) for p in stale} == expected
    assert not owned_pair_files(outputs) & owned_pair_files(other)  # two pairs never share a file
    assert sidecar_path("a/x_desc-change_dseg.nii.gz") == Path("a/x_desc-change_dseg.json")
    # a file that does not exist is not listed
    (tmp_path / outputs.native_mask).unlink()
    assert tmp_path / outputs.native_mask not in stale_pair_files(tmp_path, outputs, written)


def test_orphan_sidecars_are_those_without_any_data_file(tmp_path):
    from bids_lesionchange.derivatives import orphan_sidecars, pair_outputs, sidecar_path

    outputs = pair_outputs(sub="01", baseline="01", followup="02")
    _touch_all(tmp_path, [sidecar_path(outputs.mask), outputs.mask, sidecar_path(outputs.labels),
                          outputs.labels_lookup, sidecar_path(outputs.probability), outputs.preproc_qc])
    # the mask has its data; the dseg sidecar still has the dseg.tsv; the probseg sidecar has nothing;
    # a QC JSON is data, not a sidecar
    assert orphan_sidecars(tmp_path, outputs) == [tmp_path / sidecar_path(outputs.probability)]


def test_a_sink_gzips_an_uncompressed_work_image_and_copies_the_rest(tmp_path):
    """The work dir keeps some images as .nii (read by several steps); their derivatives are .nii.gz."""
    import gzip

    import nibabel as nib
    import numpy as np

    from bids_lesionchange.interfaces.bids import DerivativeSink

    data = np.random.default_rng(0).random((9, 8, 7)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.2, 3.0, 1.0])), str(tmp_path / "prob.nii"))
    out = tmp_path / "out"
    result = DerivativeSink(in_file=str(tmp_path / "prob.nii"), base_directory=str(out),
                            out_path="sub-01/anat/x_probseg.nii.gz", meta_dict={"a": 1}).run()
    stored = Path(result.outputs.out_file)
    assert stored == out / "sub-01/anat/x_probseg.nii.gz"
    assert gzip.decompress(stored.read_bytes()) == (tmp_path / "prob.nii").read_bytes()
    image = nib.load(str(stored))
    np.testing.assert_array_equal(np.asarray(image.dataobj), data)
    assert image.header.get_zooms() == (1.0, 1.2, 3.0)
    assert (out / "sub-01/anat/x_probseg.json").is_file()
    (tmp_path / "t.tsv").write_text("a\tb\n")
    copied = DerivativeSink(in_file=str(tmp_path / "t.tsv"), base_directory=str(out), out_path="t.tsv").run()
    assert Path(copied.outputs.out_file).read_text() == "a\tb\n"
