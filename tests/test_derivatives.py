"""BIDS-Derivatives names and atomic writes."""

import json

import pytest

from bids_lesionchange.derivatives import (
    atomic_copy, bids_name, derivative_path, write_dataset_description,
)


def test_entities_in_canonical_order():
    name = bids_name(desc="change", space="ses02", ses="02", sub="01", suffix="mask",
                     extension=".nii.gz")
    assert name == "sub-01_ses-02_space-ses02_desc-change_mask.nii.gz"
    xfm = derivative_path(sub="01", ses="01", mode="image", to="ses02", from_="orig",
                          suffix="xfm", extension=".txt")
    assert str(xfm) == "sub-01/ses-01/anat/sub-01_ses-01_from-orig_to-ses02_mode-image_xfm.txt"
    with pytest.raises(ValueError, match="unknown BIDS entities"):
        bids_name(sub="01", hemi="L", suffix="x", extension=".txt")


def test_atomic_copy_leaves_no_temporary(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("hello")
    dst = atomic_copy(src, tmp_path / "out" / "b.txt")
    assert dst.read_text() == "hello"
    assert [p.name for p in dst.parent.iterdir()] == ["b.txt"]
    assert dst.stat().st_mode & 0o777 == 0o644  # readable by collaborators, not private


def test_dataset_description(tmp_path):
    path = write_dataset_description(tmp_path / "out", tmp_path / "bids")
    data = json.loads(path.read_text())
    assert data["DatasetType"] == "derivative"
    assert data["GeneratedBy"][0]["Name"] == "bids_lesionchange"
    assert data["SourceDatasets"][0]["URL"].startswith("file://")
