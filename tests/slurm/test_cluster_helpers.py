"""Cluster helpers without a scheduler: plugin arguments, node requests, log discovery, waiting."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bids_lesionchange.cli.cluster import (
    batch_directory, batch_script_node, complete_plugin_args, ensure_logname, failed_job_logs,
    find_job_log, is_cluster_plugin, node_requests, parse_plugin_args, request_node_resources,
    wait_for_batch_jobs,
)


def test_plugin_args_from_the_command_line():
    assert parse_plugin_args("SLURM", "--partition=short --time=0:20:00") == {
        "sbatch_args": "--partition=short --time=0:20:00"}
    assert parse_plugin_args("PBS", "-q batch") == {"qsub_args": "-q batch"}
    assert parse_plugin_args("SLURMGraph", "{sbatch_args: --qos=low, max_jobs: 4}") == {
        "sbatch_args": "--qos=low", "max_jobs": 4}
    assert parse_plugin_args("SLURM", None) == {}
    with pytest.raises(ValueError, match="not a cluster plugin"):
        parse_plugin_args("MultiProc", "--partition=short")
    with pytest.raises(ValueError, match="not a mapping|not a YAML mapping"):
        parse_plugin_args("SLURM", "{a: [1, 2")
    assert is_cluster_plugin("SLURMGraph") and not is_cluster_plugin("MultiProc")


def test_completed_args_name_logs_after_jobs_and_keep_user_choices(tmp_path):
    batch = batch_directory(tmp_path / "work", "top_wf")
    assert batch == tmp_path / "work" / "top_wf" / "batch"
    args = complete_plugin_args("SLURM", {"sbatch_args": "--exclusive"}, batch)
    log = f"{batch}/slurm-%x-%j.out"
    assert args["sbatch_args"] == f"--exclusive --output={log} --error={log}"
    mine = complete_plugin_args("SLURM", {"sbatch_args": "-o /logs/%j.out"}, batch)
    assert mine["sbatch_args"] == f"-o /logs/%j.out --error={log}"
    graph = complete_plugin_args("SLURMGraph", {}, batch)
    assert graph == {"dont_resubmit_completed_jobs": True, "sbatch_args": ""}
    assert complete_plugin_args("SGE", {"qsub_args": "-q all.q"}, batch) == {"qsub_args": "-q all.q"}


def test_node_requests_follow_declared_needs():
    from nipype.interfaces.utility import IdentityInterface
    from nipype.pipeline import engine as pe

    wf = pe.Workflow(name="top_wf")
    sub = pe.Workflow(name="pair_wf")
    light = pe.Node(IdentityInterface(fields=["a"]), name="light")
    heavy = pe.Node(IdentityInterface(fields=["a"]), name="heavy", n_procs=4, mem_gb=2.5)
    chosen = pe.Node(IdentityInterface(fields=["a"]), name="chosen", n_procs=2)
    chosen.plugin_args = {"sbatch_args": "--gres=gpu:1"}
    sub.connect([(light, heavy, [("a", "a")]), (heavy, chosen, [("a", "a")])])
    wf.add_nodes([sub])

    assert request_node_resources(wf, "MultiProc") == {}
    assert request_node_resources(wf, "SLURMGraph") == {
        "top_wf.pair_wf.heavy": "--cpus-per-task=4 --mem=2560M"}
    assert heavy.plugin_args == {"sbatch_args": " --cpus-per-task=4 --mem=2560M"}
    assert light.plugin_args == {} and chosen.plugin_args == {"sbatch_args": "--gres=gpu:1"}
    assert node_requests("PBS", 2, 3.0) == "-l nodes=1:ppn=2,mem=3072mb"
    assert node_requests("SGE", 2, 3.0) == "-l h_vmem=1536M"


def test_logname_is_set_only_when_missing():
    env = {"USER": "alice"}
    assert ensure_logname(env) == "alice" and env["LOGNAME"] == "alice"
    env = {"LOGNAME": "bob", "USER": "alice"}
    assert ensure_logname(env) == "bob"
    env = {}
    assert ensure_logname(env) and env["LOGNAME"]


def _touch(path: Path, text: str = "", mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_job_logs_are_found_by_node_name(tmp_path):
    batch = tmp_path / "batch"
    graph_err = _touch(batch / "batchscript_pyscript_20240101_120000_top_wf.pair_wf_skull_strip.sh.e",
                       "Traceback (most recent call last):\nValueError: bad\n")
    _touch(batch / "batchscript_pyscript_20240101_120000_top_wf.pair_wf_skull_strip.sh.o", "")
    _touch(batch / "batchscript_pyscript_20240101_120000_top_wf.pair_wf_strip.sh.e", "", mtime=1)
    assert batch_script_node(graph_err) == "top_wf.pair_wf_skull_strip"
    assert find_job_log(batch, "top_wf.pair_wf.skull_strip") == graph_err
    assert find_job_log(batch, "top_wf.pair_wf.strip") == batch / (
        "batchscript_pyscript_20240101_120000_top_wf.pair_wf_strip.sh.e")

    named = _touch(batch / "slurm-predict.pair_wf.top_wf.root-17.out", "")
    assert find_job_log(batch, "top_wf.pair_wf.predict") == named
    mentioned = _touch(batch / "slurm-23.out", '[Node] Setting-up "top_wf.pair_wf.n4" in "/w"\n')
    assert find_job_log(batch, "top_wf.pair_wf.n4") == mentioned
    assert find_job_log(batch, "top_wf.pair_wf.absent") is None
    assert find_job_log(tmp_path / "nowhere", "top_wf.pair_wf.n4") is None

    oom = _touch(batch / "slurm-9.out", "slurmstepd: error: Detected 1 oom-kill event(s)\n")
    assert failed_job_logs(batch, since=2) == [graph_err, oom]


def _fake_command(path: Path, body: str) -> str:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_waiting_cancels_jobs_whose_dependency_failed(tmp_path):
    batch = tmp_path / "work" / "top_wf" / "batch"
    batch.mkdir(parents=True)
    calls = tmp_path / "calls"
    calls.write_text("0")
    # squeue: first a running and a stuck job of ours plus a foreign job; then only the stuck one
    # (the runner finished); after scancel nothing.
    squeue = _fake_command(tmp_path / "squeue", f"""
n=$(cat {calls}); echo $((n + 1)) > {calls}
if [ -e {tmp_path}/cancelled ]; then echo "5|RUNNING|None|/elsewhere/job.sh"; exit 0; fi
if [ "$n" = 0 ]; then echo "11|RUNNING|None|{batch}/batchscript_a.sh"; fi
echo "12|PENDING|DependencyNeverSatisfied|{batch}/batchscript_b.sh"
echo "5|RUNNING|None|/elsewhere/job.sh"
""")
    scancel = _fake_command(tmp_path / "scancel", f'echo "$@" > {tmp_path}/cancelled\n')
    waited = wait_for_batch_jobs(batch, poll_seconds=0.01, squeue=squeue, scancel=scancel)
    assert waited.seen == {"11", "12"} and not waited.timed_out
    assert waited.cancelled == [batch / "batchscript_b.sh"]
    assert (tmp_path / "cancelled").read_text().split() == ["12"]


def test_waiting_gives_up_after_the_timeout(tmp_path):
    batch = tmp_path / "batch"
    squeue = _fake_command(tmp_path / "squeue", f'echo "3|RUNNING|None|{batch}/batchscript_x.sh"\n')
    waited = wait_for_batch_jobs(batch, poll_seconds=0.01, timeout=0.05, squeue=squeue,
                                 scancel="true")
    assert waited.timed_out and waited.seen == {"3"} and waited.cancelled == []


def test_failures_without_crash_files_are_attributed_to_their_pair(tmp_path):
    from bids_lesionchange.cli.cluster import owner_of, scheduler_failures

    pairs = ["sub_01_ses_01to02_wf", "sub_011_ses_01to02_wf"]
    assert owner_of("batchscript_pyscript_20240101_120000_top_wf.sub_01_ses_01to02_wf_ds_mask.sh",
                    pairs) == "sub_01_ses_01to02_wf"
    assert owner_of("slurm-predict.sub_011_ses_01to02_wf.top_wf.root-3.out", pairs) == \
        "sub_011_ses_01to02_wf"
    assert owner_of("slurm-predict.sub_02_ses_01to02_wf.top_wf.root-3.out", pairs) is None

    batch = tmp_path / "batch"
    killed = _touch(batch / "slurm-predict.sub_011_ses_01to02_wf.top_wf.root-3.out",
                    "slurmstepd: error: *** JOB 3 CANCELLED AT 2024 DUE TO TIME LIMIT ***\n")
    _touch(batch / "slurm-predict.sub_01_ses_01to02_wf.top_wf.root-4.out", "all fine\n")
    cancelled = [batch / "batchscript_pyscript_20240101_120000_top_wf.sub_01_ses_01to02_wf.preproc_wf_n4.sh"]
    found = scheduler_failures(batch, pairs, cancelled=cancelled)
    assert found["sub_011_ses_01to02_wf"] == ("predict", f"the scheduler job failed (SLURM log: {killed})")
    step, message = found["sub_01_ses_01to02_wf"]
    assert step == "preproc_wf_n4" and "never ran" in message
