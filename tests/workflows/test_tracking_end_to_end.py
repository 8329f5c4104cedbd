"""Three sessions through the app: participant writes the longitudinal table, group summarise links it
(slow: the shipped model on a small synthetic 3-session subject, ``bids_lesionchange-synth --sessions 3``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bids_lesionchange.analysis.tables import read_table_tsv
from bids_lesionchange.cli.parser import DEFAULT_MODEL_DIR
from bids_lesionchange.derivatives import GROUP_CHANGE_TABLE, pair_outputs, subject_outputs
from bids_lesionchange.simulate.cohort import write_cohort

pytestmark = pytest.mark.slow


def app(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bids_lesionchange.cli.run", *map(str, args)],
                          capture_output=True, text=True, timeout=1500)


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.json").is_file(), reason="no default model")
def test_three_sessions_give_one_longitudinal_table_consistent_with_the_pairs(tmp_path):
    bids = write_cohort(tmp_path / "bids", n_nochange=0, n_change=1, seed=5, preset="small", n_sessions=3)
    out = tmp_path / "out"
    proc = app(bids, out, "participant", "--skull-strip", "threshold", "--output-resolution", "2.5",
               "--nprocs", "2", "--skip-bids-validation", "-w", tmp_path / "work")
    assert proc.returncode == 0, proc.stderr[-3000:]

    rows = read_table_tsv(out / subject_outputs(sub="01").tracking)
    pairs = [read_table_tsv(out / pair_outputs(sub="01", baseline=b, followup=f).lesions)
             for b, f in (("01", "02"), ("02", "03"))]
    # every change of the first pair starts its own track at ses-02
    first = [r for r in rows if r["session"] == 2]
    assert sorted(r["first_label"] for r in first) == sorted(r["label"] for r in pairs[0])
    assert all(r["state"] == "new" and r["first_type"] in ("new", "enlarging") for r in first)
    # every change of the second pair is assigned to exactly one track at ses-03
    assigned = [int(v) for r in rows if r["session"] == 3 and r["pair_labels"] == r["pair_labels"]
                for v in str(r["pair_labels"]).split(";")]
    assert sorted(assigned) == sorted(r["label"] for r in pairs[1])
    # every track that started at ses-02 has a ses-03 row (nothing is lost between sessions)
    assert {r["track_id"] for r in first} <= {r["track_id"] for r in rows if r["session"] == 3}
    assert "Changes over sessions" in (out / "sub-01.html").read_text()
    assert (out / subject_outputs(sub="01").tracking_figure).is_file() or not rows

    proc = app(bids, out, "group", "--mode", "summarise", "--skip-bids-validation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cohort = read_table_tsv(out / GROUP_CHANGE_TABLE)
    listed = [r for r in cohort if r["label"] == r["label"]]  # rows with a change
    assert len(listed) == len(pairs[0]) + len(pairs[1])
    assert all(r["track_id"] == r["track_id"] for r in listed)  # every change has its track

    # the derivatives with the tracking and cohort tables are still valid BIDS
    validator = Path(sys.executable).with_name("bids-validator-deno")
    if validator.exists():
        report = subprocess.run([str(validator), "--format", "json", str(out)],
                                capture_output=True, text=True, timeout=300).stdout
        errors = [i for i in json.loads(report)["issues"]["issues"] if i["severity"] == "error"]
        assert errors == [], errors[:5]
