"""group --mode summarise on a hand-written derivative tree, through the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bids_lesionchange.analysis.tables import read_table_tsv, write_table_tsv
from bids_lesionchange.analysis.tracking import TRACKING_COLUMNS
from bids_lesionchange.cli.run import main
from bids_lesionchange.derivatives import GROUP_CHANGE_TABLE, GROUP_PAIR_TABLE, pair_outputs, subject_outputs
from tests.conftest import make_bids

LESION_COLUMNS = ("label", "type", "voxels", "volume_mm3", "centroid_x", "centroid_y", "centroid_z",
                  "prob_max", "prob_mean", "baseline_mean", "followup_mean")


pytestmark = pytest.mark.usefixtures("restore_root_logging")


def write_pair(out: Path, sub: str, baseline: str, followup: str, lesions, *, out_of_domain=False,
               flags=()) -> None:
    files = pair_outputs(sub=sub, baseline=baseline, followup=followup)
    rows = [{"label": n + 1, "type": kind, "voxels": int(volume), "volume_mm3": volume, "centroid_x": 1,
             "centroid_y": 2, "centroid_z": 3, "prob_max": 0.9, "prob_mean": 0.6, "baseline_mean": 0.4,
             "followup_mean": 0.7} for n, (kind, volume) in enumerate(lesions)]
    write_table_tsv(rows, out / files.lesions, columns=LESION_COLUMNS)
    (out / files.change_qc).write_text(json.dumps({"out_of_domain": out_of_domain,
                                                   "fraction_above_threshold": 0.3 if out_of_domain else 0.01}))
    (out / files.preproc_qc).write_text(json.dumps({"plausibility": {"flags": list(flags)}}))


def test_summarise_lists_every_change_and_every_pair_with_its_status(tmp_path):
    flair = "ses-{0}/anat/sub-{1}_ses-{0}_FLAIR.nii.gz"
    bids = make_bids(tmp_path / "bids", {
        "01": [flair.format(s, "01") for s in ("01", "02", "03")],     # two pairs, tracked
        "02": [flair.format(s, "02") for s in ("01", "02")],           # failed in the last run
        "03": [flair.format(s, "03") for s in ("01", "02")],           # never run
        "04": [flair.format("01", "04")],                              # one session: skipped
        "05": [flair.format(s, "05") for s in ("01", "02")],           # out of domain, flagged inputs
    })
    out = tmp_path / "out"
    write_pair(out, "01", "01", "02", [("new", 40.0)])
    write_pair(out, "01", "02", "03", [("enlarging", 20.0), ("new", 10.0)])
    write_pair(out, "02", "01", "02", [("new", 5.0)])
    write_pair(out, "05", "01", "02", [("new", 900.0)], out_of_domain=True, flags=["sub-05: not a FLAIR"])
    tracking = [{"track_id": 1, "session": "02", "pair_labels": "1"},
                {"track_id": 1, "session": "03", "pair_labels": "1"},
                {"track_id": 2, "session": "03", "pair_labels": "2"}]
    write_table_tsv(tracking, out / subject_outputs(sub="01").tracking, columns=TRACKING_COLUMNS)
    logs = out / "logs"
    write_table_tsv([{"pair": "sub-02_ses-01to02", "status": "ok"}], logs / "summary-20260101-000000_a.tsv")
    write_table_tsv([{"pair": "sub-02_ses-01to02", "status": "failed", "step": "predict",
                      "message": "the model did not load"}], logs / "summary-20260102-000000_b.tsv")

    assert main([str(bids), str(out), "group", "--mode", "summarise", "--skip-bids-validation",
                 "-w", str(tmp_path / "work")]) == 0

    changes = read_table_tsv(out / GROUP_CHANGE_TABLE)
    assert [(r["pair"], r["status"]) for r in changes] == [
        ("sub-01_ses-01to02", "ok"), ("sub-01_ses-02to03", "ok"), ("sub-01_ses-02to03", "ok"),
        ("sub-02_ses-01to02", "failed"), ("sub-03_ses-01to02", "not_run"),
        ("sub-05_ses-01to02", "out_of_domain"), ("sub-04", "skipped")]
    labels = [r["label"] for r in changes]
    assert labels[:3] == [1, 1, 2] and labels[5] == 1
    assert all(math.isnan(labels[i]) for i in (3, 4, 6))  # n/a: no change listed for these pairs
    assert [r["track_id"] for r in changes[:3]] == [1, 1, 2]
    assert changes[5]["out_of_domain"] == "true" and changes[5]["input_flags"] == "sub-05: not a FLAIR"
    assert changes[0]["input_flags"] == "none"

    pairs = {r["pair"]: r for r in read_table_tsv(out / GROUP_PAIR_TABLE)}
    assert len(pairs) == 6
    assert (pairs["sub-01_ses-02to03"]["n_changes"], pairs["sub-01_ses-02to03"]["total_volume_mm3"]) == (2, 30)
    assert (pairs["sub-02_ses-01to02"]["step"], pairs["sub-02_ses-01to02"]["message"]) == \
        ("predict", "the model did not load")
    assert (pairs["sub-04"]["status"], pairs["sub-04"]["step"]) == ("skipped", "discovery")
    assert pairs["sub-04"]["message"].startswith("only one session with a FLAIR")
    for table in (GROUP_CHANGE_TABLE, GROUP_PAIR_TABLE):
        sidecar = json.loads((out / table).with_suffix(".json").read_text())
        header = (out / table).read_text().splitlines()[0].split("\t")
        assert set(header) <= set(sidecar)


def test_summarise_names_an_unreadable_qc_file(tmp_path, capsys):
    bids = make_bids(tmp_path / "bids", {"01": ["ses-01/anat/sub-01_ses-01_FLAIR.nii.gz",
                                                 "ses-02/anat/sub-01_ses-02_FLAIR.nii.gz"]})
    out = tmp_path / "out"
    write_pair(out, "01", "01", "02", [])
    broken = out / pair_outputs(sub="01", baseline="01", followup="02").change_qc
    broken.write_text("{not json")
    assert main([str(bids), str(out), "group", "--mode", "summarise", "--skip-bids-validation",
                 "-w", str(tmp_path / "work")]) == 2
    assert f"{broken} is not valid JSON" in capsys.readouterr().err
