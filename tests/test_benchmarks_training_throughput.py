"""benchmarks/training_throughput.py: which pairs of a training work directory it measures, and what it
says when the directory holds none."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import load_benchmark


def _pair(work, name, files=("normalise_baseline/baseline_preproc.nii", "normalise_followup/followup_preproc.nii",
                             "rigid_reg/brain_mask.nii.gz")):
    for f in files:
        path = work / "training_preproc_wf" / name / "preproc_wf" / f
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_only_pairs_whose_preprocessing_finished_are_measured(tmp_path):
    bench = load_benchmark("training_throughput")
    _pair(tmp_path, "sub_01_ses_01to02_wf")
    _pair(tmp_path, "sub_02_ses_01to02_wf", files=("normalise_baseline/baseline_preproc.nii",))  # unfinished
    _pair(tmp_path, "sub_03_ses_selfpair01atoselfpair01b_wf")
    pairs = bench.preprocessed_pairs(tmp_path)
    assert [p[3] for p in pairs] == ["sub_01_ses_01to02_wf", "sub_03_ses_selfpair01atoselfpair01b_wf"]
    assert pairs[0][2].endswith("rigid_reg/brain_mask.nii.gz")


def test_a_work_directory_without_pairs_or_vae_is_named_with_the_fix(tmp_path, monkeypatch, capsys):
    bench = load_benchmark("training_throughput")
    _pair(tmp_path, "sub_01_ses_01to02_wf")  # pairs, but no training/vae
    monkeypatch.setattr(sys, "argv", ["training_throughput.py", "--work-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as stop:
        bench.main()
    assert str(tmp_path) in str(stop.value) and "train.sh" in str(stop.value)
