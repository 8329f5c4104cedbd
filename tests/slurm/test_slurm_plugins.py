"""Nipype's SLURM plugins on a tiny toy graph, against a real single-node SLURM."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from bids_lesionchange.cli.cluster import (
    batch_directory, complete_plugin_args, ensure_logname, failed_job_logs, find_job_log,
    request_node_resources, wait_for_batch_jobs,
)

pytestmark = pytest.mark.slurm


def _write_value(value):
    import os

    path = os.path.abspath("value.txt")
    with open(path, "w") as fh:
        fh.write(str(value))
    return path


def _double(in_file):
    import os

    value = int(open(in_file).read())
    if value < 0:
        raise ValueError(f"negative value {value} in {in_file}")
    path = os.path.abspath("doubled.txt")
    with open(path, "w") as fh:
        fh.write(str(2 * value))
    return path


def _toy_workflow(base_dir: Path, crash_dir: Path):
    """Two branches make -> double -> copy; the 'bad' branch fails in 'double'."""
    from nipype.interfaces.utility import Function
    from nipype.pipeline import engine as pe

    top = pe.Workflow(name="toy_wf", base_dir=str(base_dir))
    top.config["execution"].update({"crashdump_dir": str(crash_dir), "crashfile_format": "txt",
                                    "poll_sleep_duration": 0.5, "stop_on_first_crash": False})
    for branch, value in (("good", 3), ("bad", -1)):
        sub = pe.Workflow(name=f"{branch}_wf")
        make = pe.Node(Function(function=_write_value, input_names=["value"],
                                output_names=["out_file"]), name="make")
        make.inputs.value = value
        double = pe.Node(Function(function=_double, input_names=["in_file"],
                                  output_names=["out_file"]), name="double", n_procs=2, mem_gb=1.0)
        copy = pe.Node(Function(function=_double, input_names=["in_file"],
                                output_names=["out_file"]), name="copy")
        sub.connect([(make, double, [("out_file", "in_file")]),
                     (double, copy, [("out_file", "in_file")])])
        top.add_nodes([sub])
    return top


def _scontrol_job(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                          check=True).stdout


def test_slurm_plugin_runs_nodes_as_jobs_and_names_the_failed_log(local_slurm, tmp_path):
    ensure_logname()
    workflow = _toy_workflow(tmp_path / "work", tmp_path / "crash")
    batch = batch_directory(tmp_path / "work", workflow.name)
    added = request_node_resources(workflow, "SLURM")
    assert added == {"toy_wf.good_wf.double": "--cpus-per-task=2 --mem=1024M",
                     "toy_wf.bad_wf.double": "--cpus-per-task=2 --mem=1024M"}
    with pytest.raises(RuntimeError):  # Nipype raises at the end when a node failed
        workflow.run(plugin="SLURM", plugin_args=complete_plugin_args("SLURM", {}, batch))

    good = tmp_path / "work" / "toy_wf" / "good_wf" / "copy" / "doubled.txt"
    assert good.read_text() == "12"
    assert not (tmp_path / "work" / "toy_wf" / "bad_wf" / "copy").exists()
    crashes = list((tmp_path / "crash").glob("crash-*.txt"))
    assert len(crashes) == 1 and "negative value -1" in crashes[0].read_text()

    logs = sorted(batch.glob("slurm-*.out"))
    job_ids = {re.search(r"-(\d+)\.out$", p.name).group(1) for p in logs}
    assert len(logs) == 5 and len(job_ids) == 5  # make x2, double x2, copy (good branch only)
    log = find_job_log(batch, "toy_wf.bad_wf.double")
    assert log is not None and log.name.startswith("slurm-double.bad_wf.toy_wf.")
    job = _scontrol_job(re.search(r"-(\d+)\.out$", log.name).group(1))
    assert "NumCPUs=2" in job and "MinMemoryNode=1G" in job.replace("1024M", "1G")
    make_log = find_job_log(batch, "toy_wf.bad_wf.make")
    assert make_log is not None and make_log != log


def test_slurmgraph_waits_for_jobs_and_cancels_the_unreachable(local_slurm, tmp_path):
    ensure_logname()
    workflow = _toy_workflow(tmp_path / "work", tmp_path / "crash")
    batch = batch_directory(tmp_path / "work", workflow.name)
    request_node_resources(workflow, "SLURMGraph")
    started = time.time()
    workflow.run(plugin="SLURMGraph", plugin_args=complete_plugin_args("SLURMGraph", {}, batch))
    waited = wait_for_batch_jobs(batch, poll_seconds=0.5, timeout=300)

    assert not waited.timed_out and len(waited.seen) >= 1
    assert (tmp_path / "work" / "toy_wf" / "good_wf" / "copy" / "doubled.txt").read_text() == "12"
    assert len(list(batch.glob("batchscript_*.sh"))) == 6  # every node is a job
    # 'copy' of the bad branch depends on the failed 'double': cancelled, never run
    assert [p.name.endswith("bad_wf_copy.sh") for p in waited.cancelled] == [True]
    crashes = list((tmp_path / "crash").glob("crash-*.txt"))
    assert len(crashes) == 1 and "negative value -1" in crashes[0].read_text()
    log = find_job_log(batch, "toy_wf.bad_wf.double")
    assert log is not None and log.name.endswith("toy_wf.bad_wf_double.sh.e")
    assert "negative value -1" in log.read_text()
    assert failed_job_logs(batch, since=started - 1) == [log]
