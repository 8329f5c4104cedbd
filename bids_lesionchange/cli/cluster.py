"""Cluster execution helpers: Nipype plugin arguments, per-node requests, SLURM job waiting and logs.

Nipype's batch plugins write one Python script per node into ``<work>/<workflow>/batch/`` and submit
it with ``sbatch``/``qsub``. ``SLURM`` keeps a controller process that polls each job; ``SLURMGraph``
submits the whole graph at once with ``--dependency=afterok`` and returns, so the caller waits with
:func:`wait_for_batch_jobs`. Nothing here imports Nipype: these functions take plain values or the
workflow object and only read or set node attributes.
"""

from __future__ import annotations

import getpass
import logging
import math
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

LOGGER = logging.getLogger("bids_lesionchange")

SLURM_PLUGINS = ("SLURM", "SLURMGraph")
QSUB_PLUGINS = ("SGE", "SGEGraph", "PBS", "PBSGraph")
CLUSTER_PLUGINS = SLURM_PLUGINS + QSUB_PLUGINS
#: Nipype's default ``mem_gb`` of a node; nodes asking for more (or for threads) get explicit requests.
NIPYPE_DEFAULT_MEM_GB = 0.20
#: SLURM reason of a job whose ``afterok`` dependency failed; it would stay pending forever.
NEVER_SATISFIED = "DependencyNeverSatisfied"
_FAILURE_MARKERS = ("Traceback (most recent call last)", "slurmstepd: error", "oom-kill",
                    "DUE TO TIME LIMIT", "CANCELLED")
_TIMESTAMP = re.compile(r"^\d{8}_\d{6}_")


def is_cluster_plugin(plugin: str | None) -> bool:
    """Return True when ``plugin`` submits nodes to a batch scheduler (SLURM, SGE, PBS)."""
    return plugin in CLUSTER_PLUGINS


def ensure_logname(environ: dict | None = None) -> str:
    """Set ``LOGNAME`` when it is missing (Nipype's SLURM plugin names jobs after it) and return it.

    Containers often run without a login session, and Nipype then fails with ``KeyError: 'LOGNAME'``.

    Parameters
    ----------
    environ : mapping, optional
        The environment to complete (default: ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    if not environ.get("LOGNAME"):
        try:
            name = environ.get("USER") or getpass.getuser()
        except (KeyError, OSError):
            name = f"uid{os.getuid()}"
        environ["LOGNAME"] = name
    return environ["LOGNAME"]


def parse_plugin_args(plugin: str, text: str | None) -> dict:
    """Turn ``--plugin-args`` into Nipype ``plugin_args``.

    A plain string is the scheduler's own arguments (``sbatch_args`` for SLURM, ``qsub_args`` for
    SGE/PBS); a string starting with ``{`` is a YAML/JSON mapping of Nipype plugin arguments, e.g.
    ``"{sbatch_args: --time=1:00:00, max_jobs: 20}"``.

    Parameters
    ----------
    plugin : str
        Nipype plugin name.
    text : str or None
        The value given on the command line.

    Returns
    -------
    dict
        Nipype ``plugin_args`` (empty when ``text`` is empty).

    Raises
    ------
    ValueError
        When a mapping cannot be read, or scheduler arguments are given to a local plugin.
    """
    text = (text or "").strip()
    if not text:
        return {}
    if text.startswith("{"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            problem = " ".join(str(err).split())
            raise ValueError(f"--plugin-args {text!r} is not a YAML mapping ({problem})") from None
        if not isinstance(data, dict):
            raise ValueError(f"--plugin-args {text!r} is not a mapping")
        return data
    if plugin in SLURM_PLUGINS:
        return {"sbatch_args": text}
    if plugin in QSUB_PLUGINS:
        return {"qsub_args": text}
    raise ValueError(
        f"--plugin-args {text!r} looks like scheduler arguments, but --plugin {plugin} is not a "
        "cluster plugin; give a mapping such as \"{n_procs: 2}\" or choose SLURM/SGE/PBS"
    )


def _has_option(args: str, short: str, long: str) -> bool:
    for token in shlex.split(args):
        if token == short or token.startswith(short) and not token.startswith("--") \
                or token == long or token.startswith(long + "="):
            return True
    return False


def complete_plugin_args(plugin: str, plugin_args: dict, batch_dir: Path) -> dict:
    """Fill in what Nipype's SLURM plugins need to run reliably and leave logs one can find.

    - ``SLURM``: unless the user chose ``-o``/``-e``, write each job's log to
      ``<batch_dir>/slurm-%x-%j.out`` (``%x`` is the job name, which Nipype builds from the node's
      name, so a failed node's log is found by name even when Python never started).
    - ``SLURMGraph``: always set ``dont_resubmit_completed_jobs`` (Nipype reads it unconditionally
      when any argument is given) to True, so that a rerun submits only what is not done.
    - ``sbatch_args`` always exists (Nipype concatenates to it).

    Parameters
    ----------
    plugin : str
        Nipype plugin name.
    plugin_args : dict
        Arguments so far (not modified).
    batch_dir : Path
        Where Nipype writes the batch scripts (:func:`batch_directory`).

    Returns
    -------
    dict
        A new ``plugin_args`` mapping.
    """
    args = dict(plugin_args)
    if plugin not in SLURM_PLUGINS:
        return args
    sbatch = str(args.get("sbatch_args") or "").strip()
    if plugin == "SLURM":
        log = shlex.quote(str(Path(batch_dir) / "slurm-%x-%j.out"))
        if not _has_option(sbatch, "-o", "--output"):
            sbatch = f"{sbatch} --output={log}".strip()
        if not _has_option(sbatch, "-e", "--error"):
            sbatch = f"{sbatch} --error={log}".strip()
    else:
        args.setdefault("dont_resubmit_completed_jobs", True)
    args["sbatch_args"] = sbatch
    return args


def batch_directory(work_dir: Path, workflow_name: str) -> Path:
    """Return where Nipype's batch plugins write scripts and logs: ``<work_dir>/<workflow>/batch``."""
    return Path(work_dir) / workflow_name / "batch"


def node_requests(plugin: str, n_procs: int, mem_gb: float) -> str:
    """Return the scheduler arguments asking for ``n_procs`` CPUs and ``mem_gb`` GB of memory.

    Examples: SLURM ``--cpus-per-task=2 --mem=3072M``; PBS ``-l nodes=1:ppn=2,mem=3072mb``;
    SGE has no portable parallel environment name, so only ``-l h_vmem`` (per slot) is set.
    """
    mem_mb = max(1, math.ceil(mem_gb * 1024))
    if plugin in SLURM_PLUGINS:
        return f"--cpus-per-task={n_procs} --mem={mem_mb}M"
    if plugin in ("PBS", "PBSGraph"):
        return f"-l nodes=1:ppn={n_procs},mem={mem_mb}mb"
    if plugin in ("SGE", "SGEGraph"):
        return f"-l h_vmem={max(1, math.ceil(mem_mb / max(n_procs, 1)))}M"
    return ""


def request_node_resources(workflow, plugin: str) -> dict[str, str]:
    """Give each node that declares more than Nipype's defaults its own scheduler request.

    Nipype's batch plugins ignore a node's ``n_procs``/``mem_gb``; this turns them into per-node
    ``plugin_args`` (``sbatch_args`` or ``qsub_args``) so that skull stripping and inference ask the
    scheduler for what they use. Requests the user already set on a node are kept.

    Parameters
    ----------
    workflow : nipype Workflow
        The graph to annotate (changed in place).
    plugin : str
        Nipype plugin name; nothing is done for local plugins.

    Returns
    -------
    dict
        Node name (``<workflow>.<...>.<node>``) -> the arguments added.
    """
    if not is_cluster_plugin(plugin):
        return {}
    key = "sbatch_args" if plugin in SLURM_PLUGINS else "qsub_args"
    added: dict[str, str] = {}
    for node in workflow._get_all_nodes():
        n_procs = int(getattr(node, "n_procs", 1) or 1)
        mem_gb = float(getattr(node, "mem_gb", NIPYPE_DEFAULT_MEM_GB) or NIPYPE_DEFAULT_MEM_GB)
        if n_procs <= 1 and mem_gb <= NIPYPE_DEFAULT_MEM_GB:
            continue
        node_args = dict(getattr(node, "plugin_args", None) or {})
        if key in node_args:
            continue
        request = node_requests(plugin, n_procs, mem_gb)
        # SLURMGraph concatenates node arguments without a separator: lead with a space.
        node_args[key] = " " + request
        node.plugin_args = node_args
        added[f"{workflow.name}.{node.fullname}"] = request
    return added


@dataclass
class BatchWait:
    """What :func:`wait_for_batch_jobs` saw: the jobs it cancelled and whether it timed out."""

    seen: set[str] = field(default_factory=set)
    cancelled: list[Path] = field(default_factory=list)
    timed_out: bool = False


def _queued_jobs(batch_dir: Path, squeue: str) -> list[tuple[str, str, str, str]]:
    """Return (job id, state, reason, script) of queued jobs whose script lies in ``batch_dir``."""
    out = subprocess.run([squeue, "--noheader", "--format=%i|%T|%r|%o"], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    prefix = str(Path(batch_dir)) + os.sep
    jobs = []
    for line in out.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) == 4 and parts[3].startswith(prefix):
            jobs.append((parts[0], parts[1], parts[2], parts[3]))
    return jobs


def wait_for_batch_jobs(batch_dir: Path, *, poll_seconds: float = 2.0, timeout: float | None = None,
                        squeue: str = "squeue", scancel: str = "scancel") -> BatchWait:
    """Wait until no SLURM job of this batch directory is queued or running (``SLURMGraph``).

    Jobs are recognised by their batch script's path (``squeue --format=%o``), so accounting
    (``sacct``) is not needed. A job whose ``afterok`` dependency failed would stay pending forever
    (reason ``DependencyNeverSatisfied``) unless the cluster sets ``kill_invalid_depend``; such jobs
    are cancelled and listed in the result.

    Parameters
    ----------
    batch_dir : Path
        The workflow's batch directory (:func:`batch_directory`).
    poll_seconds : float
        Time between two ``squeue`` calls.
    timeout : float, optional
        Give up after this many seconds (jobs keep running); default: wait as long as it takes.
    squeue, scancel : str
        The SLURM commands.

    Returns
    -------
    BatchWait
        Job ids seen, batch scripts cancelled, and whether the wait timed out.
    """
    result = BatchWait()
    start = time.monotonic()
    failures = 0
    while True:
        try:
            jobs = _queued_jobs(batch_dir, squeue)
            failures = 0
        except (subprocess.SubprocessError, OSError) as err:
            failures += 1
            if failures > 10:
                raise RuntimeError(f"squeue keeps failing ({err}); is SLURM reachable?") from err
            LOGGER.warning("squeue failed (%s); retrying", err)
            time.sleep(poll_seconds)
            continue
        result.seen.update(job[0] for job in jobs)
        stuck = [job for job in jobs if job[2] == NEVER_SATISFIED]
        if stuck:
            subprocess.run([scancel, *[job[0] for job in stuck]], capture_output=True, text=True,
                           check=False, timeout=60)
            result.cancelled.extend(Path(job[3]) for job in stuck)
            LOGGER.info("cancelled %d job(s) whose upstream job failed", len(stuck))
        if not jobs or len(stuck) == len(jobs):
            return result
        if timeout is not None and time.monotonic() - start > timeout:
            result.timed_out = True
            LOGGER.warning("stopped waiting for %d SLURM job(s) after %.0f s", len(jobs), timeout)
            return result
        time.sleep(poll_seconds)


def batch_script_node(script: Path) -> str:
    """Return the ``<hierarchy>_<node id>`` label of a Nipype batch script or its log file.

    ``batchscript_pyscript_20240101_120000_wf.sub_wf_skullstrip.sh.e`` gives
    ``wf.sub_wf_skullstrip`` (Nipype joins the hierarchy and the node id with ``_``).
    """
    name = Path(script).name
    for prefix in ("batchscript_pyscript_", "batchscript_", "pyscript_"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    name = _TIMESTAMP.sub("", name)
    for suffix in (".sh.o", ".sh.e", ".sh", ".py"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_job_log(batch_dir: Path, node_fullname: str) -> Path | None:
    """Return the newest scheduler log of a node, or None when there is none.

    Looks for, in order: the ``SLURMGraph`` error log named after the node
    (``batchscript_pyscript_<time>_<hierarchy>_<id>.sh.e``); the ``SLURM`` log named after the job
    (``slurm-<id>.<reversed hierarchy>.<user>-<job id>.out``, see :func:`complete_plugin_args`);
    any log in the batch directory that mentions the node (Nipype logs ``Setting-up "<node>"``).

    Parameters
    ----------
    batch_dir : Path
        The workflow's batch directory.
    node_fullname : str
        Dotted node name as in a crash file's ``Node:`` line, e.g. ``wf.sub_01_wf.skullstrip``.
    """
    batch_dir = Path(batch_dir)
    if not batch_dir.is_dir() or not node_fullname:
        return None
    parts = node_fullname.split(".")
    label = ".".join(parts[:-1]) + "_" + parts[-1] if len(parts) > 1 else parts[0]

    def newest(paths):
        paths = [p for p in paths if p.is_file()]
        return max(paths, key=lambda p: p.stat().st_mtime) if paths else None

    graph_logs = [p for p in batch_dir.glob("batchscript_*.sh.[eo]") if batch_script_node(p) == label]
    found = newest([p for p in graph_logs if p.name.endswith(".e")]) or newest(graph_logs)
    if found:
        return found
    job_name = ".".join(reversed(parts))
    found = newest(batch_dir.glob(f"slurm-{glob_escape(job_name)}.*-*.out"))
    if found:
        return found
    needle = f'"{node_fullname}"'
    mentioning = []
    for path in list(batch_dir.glob("slurm-*.out")) + list(batch_dir.glob("batchscript_*.sh.[eo]")):
        try:
            if needle in path.read_text(errors="replace"):
                mentioning.append(path)
        except OSError:
            continue
    return newest(mentioning)


def glob_escape(text: str) -> str:
    """Escape the glob metacharacters of ``text`` (``*``, ``?``, ``[``)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def failed_job_logs(batch_dir: Path, since: float = 0.0) -> list[Path]:
    """Return the scheduler logs written since ``since`` that show a failed job.

    A log shows failure when it holds a Python traceback or a SLURM error (out of memory, time
    limit, cancellation). With ``SLURMGraph`` this finds jobs killed before Nipype could write a
    crash file.

    Parameters
    ----------
    batch_dir : Path
        The workflow's batch directory.
    since : float
        Only logs modified at or after this time (seconds since the epoch).
    """
    batch_dir = Path(batch_dir)
    if not batch_dir.is_dir():
        return []
    failed = []
    for path in sorted(list(batch_dir.glob("slurm-*.out")) + list(batch_dir.glob("batchscript_*.sh.e"))):
        try:
            if path.stat().st_mtime < since:
                continue
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if any(marker in text for marker in _FAILURE_MARKERS):
            failed.append(path)
    return failed


def owner_of(name: str, workflow_names) -> str | None:
    """Return the workflow among ``workflow_names`` that a job, script or log name belongs to.

    Nipype joins workflow levels with ``.`` and the last level to the node id with ``_``, so a
    name matches when the workflow name stands between separators (``.``, ``_``, ``-`` or an end).
    """
    for workflow_name in sorted(workflow_names, key=len, reverse=True):
        if re.search(rf"(?:^|[./_-]){re.escape(workflow_name)}(?:[._-]|$)", name):
            return workflow_name
    return None


def _step_of(name: str, owner: str) -> str:
    """Best-effort node name of a scheduler log or script belonging to workflow ``owner``."""
    if name.startswith("slurm-"):  # SLURM plugin log: slurm-<node>.<wf>...<user>-<job>.out
        return name[len("slurm-"):].split(".")[0]
    label = batch_script_node(Path(name))
    tail = label.split(f"{owner}.", 1)[-1] if f"{owner}." in label else label.split(".")[-1]
    return tail.removeprefix(f"{owner}_")


def scheduler_failures(batch_dir: Path, workflow_names, *, since: float = 0.0,
                       cancelled=()) -> dict[str, tuple[str, str]]:
    """Name the failures that left no Nipype crash file, per workflow (e.g. per session pair).

    A job killed by the scheduler (out of memory, time limit) writes no crash file; with
    ``SLURMGraph`` the jobs after it are then cancelled by :func:`wait_for_batch_jobs`. Both show here.

    Parameters
    ----------
    batch_dir : Path
        The workflow's batch directory.
    workflow_names : iterable of str
        Names of the workflows to attribute failures to (the pair workflows).
    since : float
        Only logs written since this time (the start of the run).
    cancelled : iterable of Path
        Batch scripts cancelled because a job they depend on failed.

    Returns
    -------
    dict
        Workflow name -> (step, message); the message names the scheduler log.
    """
    names = list(workflow_names)
    found: dict[str, tuple[str, str]] = {}
    for log in failed_job_logs(batch_dir, since):
        owner = owner_of(log.name, names)
        if owner and owner not in found:
            found[owner] = (_step_of(log.name, owner), f"the scheduler job failed (SLURM log: {log})")
    for script in cancelled:
        owner = owner_of(Path(script).name, names)
        if owner and owner not in found:
            found[owner] = (_step_of(Path(script).name, owner),
                            f"the job never ran because a job it depends on failed (script: {script})")
    return found
