"""Run the participant and group levels: build and run graphs, report failures by subject and step."""

from __future__ import annotations

import csv
import gc
import json
import os
import re
import shlex
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bids_lesionchange.atomic import atomic_write_text
from bids_lesionchange.derivatives import (
    PairOutputs, orphan_sidecars, pair_outputs, stale_pair_files, write_dataset_description,
)
from bids_lesionchange.discovery import SessionPair, find_pairs, nochange_subjects

LOGGER = logging.getLogger("bids_lesionchange")


#: The out-of-domain guard's measures in the summary (``n/a`` for failed and preprocess-only pairs).
GUARD_COLUMNS = ("fraction_above_threshold", "n_changes", "out_of_domain")
#: Columns of ``logs/summary-<run>.tsv``: each pair's status, then the guard's measures.
SUMMARY_COLUMNS = ("pair", "status", "step", "message", "crash_file", *GUARD_COLUMNS, "input_flags")


class UsageProblem(RuntimeError):
    """A problem with the input that the user must fix (exit code 2)."""


class RunInterrupted(Exception):
    """The graph was stopped by SIGINT/SIGTERM: the outcomes so far and the original interruption."""

    def __init__(self, outcomes: list, error: BaseException):
        super().__init__(str(error))
        self.outcomes = outcomes
        self.error = error


@dataclass
class PairOutcome:
    """What happened to one pair: ``ok`` or the failed step with its message."""

    pair: SessionPair
    status: str = "ok"
    step: str = ""
    message: str = ""
    crash_file: str = ""


def find_references(reference_dir: Path | None, pairs: list[SessionPair]) -> dict[str, Path]:
    """Find each pair's reference change mask: ``sub-X/ses-F/anat/sub-X_ses-F_*desc-change_mask.nii*``."""
    refs: dict[str, Path] = {}
    if reference_dir is None:
        return refs
    for pair in pairs:
        folder = reference_dir / f"sub-{pair.subject}" / f"ses-{pair.followup_session}" / "anat"
        found = sorted(folder.glob(f"sub-{pair.subject}_ses-{pair.followup_session}_*desc-change_mask.nii*"))
        if found and not found[0].exists():
            LOGGER.warning("%s: the reference change mask %s is a broken symbolic link; not evaluated "
                           "(fetch or restore its target)", pair.name, found[0])
        elif found:
            refs[pair.name] = found[0]
        else:
            LOGGER.warning("%s: no reference change mask in %s; not evaluated", pair.name, folder)
    return refs


def _plugin(settings) -> tuple[str, dict]:
    if settings.use_plugin is not None:
        import yaml

        data = yaml.safe_load(settings.use_plugin.read_text()) or {}
        return data.get("plugin", "MultiProc"), dict(data.get("plugin_args") or {})
    name = settings.plugin or ("MultiProc" if settings.nprocs > 1 else "Linear")
    args: dict = {}
    if name == "MultiProc":
        args = {"n_procs": settings.nprocs, "raise_insufficient": False}
        if settings.mem_gb:
            args["memory_gb"] = settings.mem_gb
    elif settings.plugin_args:
        from bids_lesionchange.cli.cluster import parse_plugin_args

        args = parse_plugin_args(name, settings.plugin_args)
    return name, args


#: Step name of the check of every input file before the graph is built.
CHECK_STEP = "check_inputs"
POLL_SECONDS = 0.1  # how often a local Nipype plugin looks for finished nodes and ready ones
CLUSTER_POLL_SECONDS = 2.0  # a batch plugin asks the scheduler (squeue, qstat) at each poll


def check_pair_files(pairs: list[SessionPair]) -> tuple[list[SessionPair], list[PairOutcome]]:
    """Check every pair's FLAIR files before any processing: (pairs to run, failed outcomes).

    A broken symbolic link, a missing, truncated or corrupt file fails its pair at the step
    ``check_inputs`` with one sentence naming the file and the fix; the other pairs run.
    """
    from bids_lesionchange.image.io import corrupt_image_in

    ready, failed = [], []
    for pair in pairs:
        problem = corrupt_image_in((pair.baseline_flair, pair.followup_flair), step=CHECK_STEP)
        if problem is None:
            ready.append(pair)
        else:
            failed.append(PairOutcome(pair, status="failed", step=CHECK_STEP, message=str(problem)))
    return ready, failed


# How a damaged image reads in a crash file (EOFError of a truncated gzip stream, nibabel's
# "Expected N bytes" for gzip data shorter than the header, zlib's and gzip's own errors).
_DAMAGED = re.compile(r"EOFError|Compressed file ended|Expected \d+ bytes|Error -\d+ while decompressing|"
                      r"BadGzipFile|Not a gzipped file|CRC check failed|could the file be damaged")


def _crash_inputs(path: Path) -> list[Path]:
    """The existing image files among the node inputs listed in a Nipype text crash file."""
    files, inside = [], False
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("Node inputs:"):
            inside = True
            continue
        if inside and line.startswith("Traceback"):
            break
        if inside and " = " in line:
            value = line.split(" = ", 1)[1].strip()
            if value.endswith((".nii", ".nii.gz")) and Path(value).is_absolute():
                files.append(Path(value))
    return files


def explain_disk_full(message: str, work_dir: Path, output_dir: Path) -> str:
    """A step that failed because a disk filled: its message with where the space is short and the fix
    (:func:`bids_lesionchange.cli.diskspace.disk_full_sentence`); any other message as it is."""
    from bids_lesionchange.cli import diskspace

    if not diskspace.DISK_FULL_MESSAGE.search(message):
        return message
    return f"{message} ({diskspace.disk_full_sentence(work_dir, output_dir)})"


def explain_damaged_file(crash: Path, message: str, work_dir: Path) -> str:
    """Rewrite a crash message about a damaged image as one sentence naming the file and the fix.

    A damaged input of the node under ``work_dir`` is a cached intermediate of an earlier,
    interrupted run (every rerun would fail the same way): the fix is to delete the work dir or
    to rerun with a fresh one. Elsewhere it is an input file, to be re-exported or re-copied.
    """
    if not _DAMAGED.search(message):
        return message
    from bids_lesionchange.image.io import corrupt_image_in

    work_dir = Path(work_dir).resolve()
    bad = corrupt_image_in(_crash_inputs(crash), step="")
    if bad is None:
        return (f"{message} (an image read by this step is damaged; if it is a cached intermediate, "
                f"delete the work directory {work_dir} or rerun with a fresh -w)")
    if _is_under(bad.path, work_dir):
        return (f"{bad.path} is a damaged cached intermediate in the work directory ({bad.message.split(';')[0]}), "
                f"probably left by an interrupted run; delete the work directory {work_dir} "
                "(or rerun with a fresh -w DIR) and run again")
    return f"{bad.path}: {bad.message}"


def _is_under(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def _read_crash(path: Path) -> tuple[str, str]:
    """Return (node full name, last error line) from a Nipype text crash file."""
    node, message = "", ""
    lines = path.read_text(errors="replace").splitlines()
    for line in lines:
        if line.startswith("Node:"):
            node = line.split(":", 1)[1].strip()
            break
    for line in reversed(lines):
        text = line.strip()
        if text and not text.startswith(("File ", "^", "~")) and ("Error" in text or "error" in text):
            message = text
            break
    return node, message or (lines[-1].strip() if lines else "")


def _route_nipype_logs() -> None:
    """Send Nipype's log records through our handlers only (its own handlers print them twice)."""
    from nipype import config as ncfg
    from nipype import logging as nlogging

    nlogging.update_logging(ncfg)
    for name in ("nipype", "nipype.workflow", "nipype.interface", "nipype.utils"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def frozen_heap_callback(callback):
    """Wrap a Nipype status callback so that the heap is frozen (:func:`gc.freeze`) once the run starts.

    Nipype's MultiProc scheduler calls :func:`gc.collect` before it submits jobs, and a full
    collection walks every object of the app's process: the workflow graph, its nodes and their
    traits, the BIDS layout. That took 0.16 s per call, 10.5 s of a 1 mm pair's 94 s run in the
    scheduling process (67 calls; cProfile of the app, 2-core AMD EPYC Zen 3), time in which no
    finished step's successor is started and which the workers lose on a 2-core machine. At the
    first node's start the graph is built; what is alive then stays alive for the run, so it is
    moved out of the collector's reach and each later collection walks only what the run adds.
    ``run_graph`` unfreezes the heap when the run ends.
    """
    frozen = []

    def wrapped(node, status):
        if not frozen:
            gc.collect()
            gc.freeze()
            frozen.append(True)
        return callback(node, status)

    return wrapped


def run_graph(workflow, settings, pairs: list[SessionPair], run_uuid: str) -> list[PairOutcome]:
    """Run a Nipype graph; return one outcome per pair (failures named by step)."""
    from nipype import config as ncfg

    from bids_lesionchange.cli import cluster
    from bids_lesionchange.workflows.base import pair_workflow_name

    crash_dir = settings.output_dir / "logs" / f"crash-{run_uuid}"
    plugin, plugin_args = _plugin(settings)
    batched = cluster.is_cluster_plugin(plugin)
    execution = {
        "crashdump_dir": str(crash_dir), "crashfile_format": "txt", "stop_on_first_crash": False,
        # a cached step is reused when its input files keep their size and time. Hashing their
        # contents instead (robust to a copied dataset) cost 1.7 s per 1 mm pair between the steps
        # (47 ms per work-dir image, hashed at every step that reads it; benchmarks/end_to_end.py,
        # hash_content_r* against hash_timestamp_r*)
        "hash_method": "timestamp",
        # Nipype's default 2 s poll made every node of a MultiProc run wait 1-2 s for its predecessor
        "poll_sleep_duration": CLUSTER_POLL_SECONDS if batched else POLL_SECONDS,
    }
    ncfg.update_config({"execution": execution, "monitoring": {"enabled": False},
                        "logging": {"workflow_level": "INFO", "interface_level": "WARNING"}})
    _route_nipype_logs()
    workflow.base_dir = str(settings.work_dir)
    # The workflow's own config (copied from Nipype's when it was built) is what its run reads:
    # the global update above alone does not reach it.
    workflow.config["execution"].update({key: str(value) if isinstance(value, bool) else value
                                         for key, value in execution.items()})
    batch_dir, cancelled = None, []
    if batched:
        cluster.ensure_logname()
        batch_dir = cluster.batch_directory(settings.work_dir, workflow.name)
        plugin_args = cluster.complete_plugin_args(plugin, plugin_args, batch_dir)
        for node, request in cluster.request_node_resources(workflow, plugin).items():
            LOGGER.debug("%s asks the scheduler for %s", node, request)
    LOGGER.info("running %d pair(s) with the %s plugin (work dir %s)", len(pairs), plugin, settings.work_dir)
    _warn_if_work_dir_short(workflow, settings.work_dir, pairs)
    t0 = time.time()
    interrupted = None
    from bids_lesionchange.cli.interrupt import raise_if_stopped, stop_requested

    plugin_args = {**plugin_args, "status_callback": frozen_heap_callback(
        plugin_args.get("status_callback", raise_if_stopped))}
    try:
        workflow.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError as err:
        LOGGER.debug("nipype: %s", err)
    except KeyboardInterrupt as err:  # SIGINT, or SIGTERM through cli.interrupt
        from bids_lesionchange.cli.interrupt import signal_name, stop_child_processes

        LOGGER.error("%s received: stopping the workers", signal_name(err))
        stop_child_processes()
        if batch_dir is not None:
            LOGGER.warning("jobs already submitted to the scheduler keep running; cancel them with "
                           "scancel/qdel if needed (their scripts are in %s)", batch_dir)
        interrupted = err
    finally:
        gc.unfreeze()  # what the run kept alive can be collected again
    if interrupted is None and stop_requested():  # the signal ended inside a node: Nipype went on
        from bids_lesionchange.cli.interrupt import Interrupted

        interrupted = Interrupted(stop_requested())
    if plugin == "SLURMGraph" and interrupted is None:
        LOGGER.info("all jobs submitted; waiting for them to finish (squeue)")
        cancelled = cluster.wait_for_batch_jobs(batch_dir).cancelled
    LOGGER.info("graph finished in %.0f s", time.time() - t0)

    outcomes = {p.name: PairOutcome(p) for p in pairs}
    by_wf = {pair_workflow_name(p): p.name for p in pairs}
    for crash in sorted(crash_dir.glob("crash-*.txt")) if crash_dir.exists() else []:
        node, message = _read_crash(crash)
        parts = node.split(".")
        owner = next((by_wf[p] for p in parts if p in by_wf), None)
        if owner is None:
            continue
        outcome = outcomes[owner]
        if outcome.status == "ok":
            outcome.status, outcome.step = "failed", parts[-1]
            outcome.message = explain_disk_full(explain_damaged_file(crash, message, settings.work_dir),
                                                settings.work_dir, settings.output_dir)
            outcome.crash_file = str(crash)
            log = cluster.find_job_log(batch_dir, node) if batch_dir is not None else None
            if log is not None:
                kind = "SLURM log" if plugin in cluster.SLURM_PLUGINS else "scheduler log"
                outcome.message = f"{outcome.message} ({kind}: {log})"
    if batch_dir is not None:
        for wf_name, (step, message) in cluster.scheduler_failures(
                batch_dir, by_wf, since=t0, cancelled=cancelled).items():
            outcome = outcomes[by_wf[wf_name]]
            if outcome.status == "ok":
                outcome.status, outcome.step, outcome.message = "failed", step, message
    if interrupted is not None:
        from bids_lesionchange.cli.interrupt import signal_name

        for wf_name, name in by_wf.items():
            outcome = outcomes[name]
            if outcome.status == "failed" and _crashed_by_signal(outcome):  # the signal, not a bug
                outcome.status, outcome.step, outcome.crash_file = "ok", "", ""
            if outcome.status == "ok" and not _finished_in_this_run(workflow, wf_name, t0):
                outcome.status = "interrupted"
                outcome.message = (f"not finished when the run was stopped ({signal_name(interrupted)}); "
                                   "rerun the same command with the same --work-dir to resume")
        raise RunInterrupted(list(outcomes.values()), interrupted)
    return list(outcomes.values())


def _crashed_by_signal(outcome: PairOutcome) -> bool:
    """Whether a pair's crash is the interruption itself (Nipype records it as a node crash)."""
    try:
        return "bids_lesionchange.cli.interrupt.Interrupted" in Path(outcome.crash_file).read_text(errors="replace")
    except OSError:
        return False


def _finished_in_this_run(workflow, wf_name: str, since: float) -> bool:
    """Whether every derivative sink (``ds_*``) of a pair's workflow wrote its result since ``since``.

    Conservative: a pair whose results all came from an earlier run's cache counts as unfinished
    (a rerun confirms it in seconds), never the reverse.
    """
    sinks = [n for n in workflow.list_node_names()
             if n.startswith(wf_name + ".") and n.rsplit(".", 1)[-1].startswith("ds_")]
    if not sinks:
        return False
    for name in sinks:
        node = workflow.get_node(name)
        try:
            result = Path(node.output_dir()) / f"result_{node.name}.pklz"
            if result.stat().st_mtime < since:
                return False
        except (OSError, AttributeError, TypeError):
            return False
    return True


def read_input_flags(output_dir: Path, pair: SessionPair) -> list[str]:
    """Return the plausibility flags of a pair's inputs (not a FLAIR, maybe not the same person) from
    its preprocessing QC (:mod:`bids_lesionchange.image.plausibility`); [] when there is none."""
    qc = _read_qc(output_dir / outputs_of(pair).preproc_qc, pair) or {}
    return [str(flag) for flag in (qc.get("plausibility") or {}).get("flags") or []]


def read_change_qc(output_dir: Path, pair: SessionPair) -> dict | None:
    """Return a pair's change QC (the out-of-domain guard's measures), or None when it is absent."""
    return _read_qc(output_dir / outputs_of(pair).change_qc, pair)


def _read_qc(path: Path, pair: SessionPair) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        LOGGER.warning("%s: could not read %s (%s)", pair.name, path, err)
        return None


def _summarise(outcomes: list[PairOutcome], settings, run_uuid: str, skipped) -> int:
    """Write ``logs/summary-<run>.tsv``, log failures and out-of-domain pairs; return the exit code."""
    from bids_lesionchange.analysis.tables import write_table_tsv

    rows, flagged = [], []
    for o in outcomes:
        # a done pair's message says how its inputs were chosen (one FLAIR of several in a session)
        row = {"pair": o.pair.name, "status": o.status, "step": o.step,
               "message": o.message or " | ".join(o.pair.notes), "crash_file": o.crash_file}
        qc = (read_change_qc(settings.output_dir, o.pair)
              if o.status == "ok" and settings.mode == "infer" else None)
        if qc:
            row.update({key: qc.get(key) for key in GUARD_COLUMNS})
            if qc.get("out_of_domain"):
                flagged.append((o.pair.name, qc.get("message", "")))
        inputs = read_input_flags(settings.output_dir, o.pair) if o.status == "ok" else []
        if o.status == "ok":  # "none": checked and passed; n/a: not preprocessed
            row["input_flags"] = " | ".join(inputs) or "none"
        flagged += [(o.pair.name, flag) for flag in inputs]
        rows.append(row)
    rows += [{"pair": f"sub-{s.subject}", "status": "skipped", "step": "discovery", "message": s.reason}
             for s in skipped]
    summary = write_table_tsv(rows, settings.output_dir / "logs" / f"summary-{run_uuid}.tsv",
                              columns=SUMMARY_COLUMNS)
    failed = [o for o in outcomes if o.status == "failed"]
    stopped = [o for o in outcomes if o.status == "interrupted"]
    LOGGER.info("summary: %d pair(s) done, %d failed, %s%d flagged (out of domain or implausible inputs), "
                "%d subject(s) skipped (%s)", len(outcomes) - len(failed) - len(stopped), len(failed),
                f"{len(stopped)} interrupted, " if stopped else "", len({name for name, _ in flagged}),
                len(skipped), summary)
    for name, message in flagged:
        LOGGER.warning("%s: %s", name, message)
    for o in failed:
        details = f" (details: {o.crash_file})" if o.crash_file else ""
        LOGGER.error("%s FAILED at step '%s': %s%s", o.pair.name, o.step, o.message, details)
    return 1 if failed or stopped else 0


def _discover(settings, participant_label=None, need_order=True) -> tuple[list[SessionPair], list]:
    label = settings.participant_label if participant_label is None else participant_label
    pairs, skipped = find_pairs(settings.bids_dir, label, settings.session_label, need_order=need_order)
    for s in skipped:
        LOGGER.warning("skipping sub-%s: %s", s.subject, s.reason)
    if not pairs:
        why = "; ".join(f"sub-{s.subject}: {s.reason}" for s in skipped[:5])
        more = f" (and {len(skipped) - 5} more in the warnings above)" if len(skipped) > 5 else ""
        raise UsageProblem(
            f"no pair of FLAIR sessions to process in {settings.bids_dir}: every subject was skipped. "
            f"{why}{more}" if skipped else
            f"no subject of {settings.bids_dir} has two sessions with a FLAIR image "
            "(anat/*_FLAIR.nii.gz in ses-<label> folders); check the dataset or --session-label"
        )
    LOGGER.info("found %d pair(s): %s", len(pairs), ", ".join(p.name for p in pairs))
    return pairs, skipped


def _run_pairs(settings, graph_settings, pairs: list[SessionPair], skipped: list, run_uuid: str, *,
               not_used: str, references: dict | None = None,
               name: str = "bids_lesionchange_wf", replace_sets: bool = False) -> list[PairOutcome]:
    """Check the pairs' files, run the graph of the readable ones with ``graph_settings`` and return
    every pair's outcome in discovery order. An unreadable pair is logged as ``<pair> <not_used>``.
    On SIGTERM/SIGINT the summary so far is written before the interruption goes on to main().
    Then :func:`finish_pair_outputs` (with ``replace_sets``: a done pair's outputs are replaced as a set)."""
    from bids_lesionchange.workflows.base import init_bids_lesionchange_wf, pair_workflow_name

    order = [p.name for p in pairs]
    pairs, outcomes = check_pair_files(pairs)
    for o in outcomes:
        LOGGER.error("%s %s: %s", o.pair.name, not_used, o.message)
    written: dict[str, set[Path]] = {}
    if pairs:
        workflow = init_bids_lesionchange_wf(settings=graph_settings, pairs=pairs, references=references,
                                             name=name)
        written = {p.name: sink_paths(workflow, pair_workflow_name(p)) for p in pairs}
        try:
            outcomes += run_graph(workflow, graph_settings, pairs, run_uuid)
        except RunInterrupted as stop:  # write the summary so far, then let main() say how to resume
            outcomes += stop.outcomes
            outcomes.sort(key=lambda o: order.index(o.pair.name))
            _summarise(outcomes, settings, run_uuid, skipped)
            raise stop.error from None
    outcomes.sort(key=lambda o: order.index(o.pair.name))
    finish_pair_outputs(settings.output_dir, outcomes, written if replace_sets else None)
    return outcomes


def _warn_if_work_dir_short(workflow, work_dir: Path, pairs) -> None:
    """Warn when the work directory's disk looks too small for the pairs not yet started in it
    (:func:`bids_lesionchange.cli.diskspace.space_warning`); a resumed run counts only new pairs."""
    from bids_lesionchange.cli import diskspace
    from bids_lesionchange.workflows.base import pair_workflow_name

    root = Path(work_dir) / workflow.name
    pending = [p.followup_flair for p in pairs if not (root / pair_workflow_name(p)).exists()]
    try:
        message = diskspace.space_warning(Path(work_dir), pending)
    except OSError as err:  # the estimate is advice: never a reason to stop
        LOGGER.debug("could not estimate the work directory's disk space: %s", err)
        return
    if message:
        LOGGER.warning("%s", message)


def sink_paths(workflow, wf_name: str) -> set[Path]:
    """The derivative paths (relative to the output directory) that a pair's sinks (``ds_*``) write."""
    paths = set()
    for name in workflow.list_node_names():
        if name.startswith(wf_name + ".") and name.rsplit(".", 1)[-1].startswith("ds_"):
            out_path = getattr(workflow.get_node(name).inputs, "out_path", None)
            if isinstance(out_path, str) and out_path:
                paths.add(Path(out_path))
    return paths


#: Step named when a pair's derivatives are inconsistent after its graph finished.
FINISH_STEP = "write_outputs"


def finish_pair_outputs(output_dir: Path, outcomes: list[PairOutcome],
                        written: dict[str, set[Path]] | None) -> None:
    """Leave every pair's derivatives consistent after its graph ran (issue 16).

    - With ``written`` (pair name -> the paths its sinks write; the participant level), a pair
      that is done has its outputs replaced as a set: its files from an earlier run that this run
      does not write (:func:`~bids_lesionchange.derivatives.stale_pair_files`, e.g. native masks
      after a rerun with ``--no-native``) are removed, with one INFO line per pair. The report
      figures drawn from the change outputs count as written when the probability map is. Pairs
      that failed or were not run keep their files; other pairs' files and files the app does not
      name are never touched.
    - A JSON sidecar whose data file is missing (a write that failed, e.g. on a full disk) is
      removed, and the pair is reported failed at step ``write_outputs`` with the files and the fix.
    """
    for outcome in outcomes:
        outputs = outputs_of(outcome.pair)
        paths = (written or {}).get(outcome.pair.name)
        if paths and outcome.status == "ok":
            if outputs.probability in paths:
                paths = paths | {outputs.change_mosaic, outputs.change_slices}
            stale = stale_pair_files(output_dir, outputs, paths)
            for path in stale:
                path.unlink(missing_ok=True)
            if stale:
                LOGGER.info("%s: removed %d file(s) of an earlier run that this run does not write "
                            "(outputs are replaced as a set): %s", outcome.pair.name, len(stale),
                            ", ".join(str(p.relative_to(output_dir)) for p in stale))
        orphans = orphan_sidecars(output_dir, outputs)
        if not orphans:
            continue
        for path in orphans:
            path.unlink(missing_ok=True)
        message = (f"removed {len(orphans)} JSON sidecar(s) whose data file is missing "
                   f"({', '.join(str(p) for p in orphans)}): the data file was not written (a full disk "
                   "or a failed write?); free space in the output directory and rerun this subject")
        if outcome.status == "ok":
            outcome.status, outcome.step, outcome.message = "failed", FINISH_STEP, message
        else:
            LOGGER.error("%s: %s", outcome.pair.name, message)


def run_participant(settings, run_uuid: str) -> int:
    """Preprocess every pair and, in ``infer`` mode, detect and describe change; write reports."""
    pairs, skipped = _discover(settings)
    write_dataset_description(settings.output_dir, settings.bids_dir, model_dir=settings.model_dir)
    references = find_references(settings.reference_dir, pairs) if settings.mode == "infer" else {}
    outcomes = _run_pairs(settings, settings, pairs, skipped, run_uuid, not_used="is not processed",
                          references=references, replace_sets=True)
    if settings.mode == "infer":
        track_subjects(settings.output_dir, outcomes)
    if settings.reports:
        _subject_reports(settings, outcomes, run_uuid)
    return _summarise(outcomes, settings, run_uuid, skipped)


def track_subjects(output_dir: Path, outcomes: list[PairOutcome]) -> list[Path]:
    """Write the longitudinal change table of every subject with two pairs or more, all done.

    A subject with a failed pair gets none (a gap breaks the identities), with a warning.
    """
    from bids_lesionchange.analysis.files import subject_tracking_files

    by_subject: dict[str, list[PairOutcome]] = {}
    for o in outcomes:
        by_subject.setdefault(o.pair.subject, []).append(o)
    written = []
    for subject, items in sorted(by_subject.items()):
        if len(items) < 2:
            continue
        bad = [o.pair.name for o in items if o.status != "ok"]
        if bad:
            LOGGER.warning("sub-%s: no longitudinal change table: %s not done", subject, ", ".join(bad))
            continue
        if any(a.pair.followup_session != b.pair.baseline_session for a, b in zip(items, items[1:])):
            LOGGER.warning("sub-%s: no longitudinal change table: the pairs are not consecutive", subject)
            continue
        sessions = [items[0].pair.baseline_session] + [o.pair.followup_session for o in items]
        try:
            written.append(subject_tracking_files(output_dir, subject, sessions))
            LOGGER.info("sub-%s: changes tracked over %d sessions: %s", subject, len(sessions), written[-1])
        except (OSError, ValueError) as err:
            LOGGER.warning("sub-%s: no longitudinal change table (%s)", subject, err)
    return written


def _subject_reports(settings, outcomes: list[PairOutcome], run_uuid: str) -> None:
    try:
        from bids_lesionchange.reports.collect import write_subject_reports

        for path in write_subject_reports(settings, outcomes, run_uuid):
            LOGGER.info("report: %s", path)
    except Exception as err:  # noqa: BLE001 - a failed report never fails the pipeline
        LOGGER.warning("could not write the reports (%s: %s); the derivatives are complete",
                       type(err).__name__, err)


def outputs_of(pair: SessionPair) -> PairOutputs:
    """The files a pair writes (relative to the output directory)."""
    return pair_outputs(sub=pair.subject, baseline=pair.baseline_session, followup=pair.followup_session)


def preprocessed_paths(output_dir: Path, pair: SessionPair) -> tuple[Path, Path, Path]:
    """Return the (baseline, follow-up, brain mask) derivatives of a pair in its common space."""
    outputs = outputs_of(pair)
    return (output_dir / outputs.baseline_preproc, output_dir / outputs.followup_preproc,
            output_dir / outputs.brain_mask)


def run_training(settings, run_uuid: str) -> int:
    """Preprocess the NoChange pairs, then train the VAE and the change detector on them."""
    try:
        subjects = nochange_subjects(settings.bids_dir, settings.nochange_label,
                                     settings.nochange_column, settings.nochange_value)
    except ValueError as err:
        raise UsageProblem(str(err)) from None
    if settings.participant_label:
        subjects = [s for s in subjects if s in settings.participant_label]
    missing = [s for s in subjects if not (settings.bids_dir / f"sub-{s}").is_dir()]
    if missing:
        raise UsageProblem(f"NoChange subject(s) {', '.join(missing)} not found in {settings.bids_dir}")
    LOGGER.info("training on %d NoChange subject(s): %s", len(subjects), ", ".join(subjects))
    if settings.self_pairs:
        pairs, skipped = _training_pairs_with_self_pairs(settings, subjects)
    else:
        pairs, skipped = _discover(settings, participant_label=subjects, need_order=False)  # NoChange pairs

    write_dataset_description(settings.output_dir, settings.bids_dir)
    # Preprocess with the normalisation the new model will be trained (and later run) with.
    prep_settings = replace(settings, mode="preprocess",
                            intensity_norm=settings.hyperparams.training.intensity_normalisation)
    outcomes = _run_pairs(settings, prep_settings, pairs, skipped, run_uuid, not_used="is not used for training",
                          name="training_preproc_wf")
    status = _summarise(outcomes, settings, run_uuid, skipped)
    ready = [o.pair for o in outcomes if o.status == "ok"]
    if len(ready) < 2:
        LOGGER.error("only %d NoChange pair(s) preprocessed; training needs at least 2", len(ready))
        return 1
    training_pairs = [(*map(str, preprocessed_paths(settings.output_dir, p)), p.name) for p in ready]

    from bids_lesionchange.model.training import train_change_detector

    model_dir = settings.output_dir / "model"
    train_change_detector(training_pairs, model_dir, settings.hyperparams,
                          work_dir=settings.work_dir / "training", resume=settings.resume,
                          progress=True, seed=settings.seed, command=portable_command(settings.command_line))
    LOGGER.info("model written to %s; use it with --model %s", model_dir, model_dir)
    if settings.reports:
        try:
            from bids_lesionchange.reports.collect import write_group_report

            LOGGER.info("report: %s", write_group_report(settings, run_uuid, model_dir=model_dir))
        except Exception as err:  # noqa: BLE001
            LOGGER.warning("could not write the group report (%s)", err)
    return status


GROUP_ADAPT_STEPS = 100  # group --mode adapt without --adapt-steps
MAX_ADAPT_SESSIONS = 64  # sessions held in memory for group --mode adapt (drawn with --seed beyond)


def run_adaptation(settings, run_uuid: str) -> int:
    """group --mode adapt: preprocess every pair of the cohort, then fine-tune a copy of the model on
    self-pairs of its sessions (each session against a nuisance-rich copy of itself; no label and
    no real change between sessions is used) and write ``<output_dir>/model-adapted``."""
    import nibabel as nib
    import numpy as np

    from bids_lesionchange.model.adapt import adapt_detector
    from bids_lesionchange.workflows.base import model_intensity_norm

    pairs, skipped = _discover(settings)
    write_dataset_description(settings.output_dir, settings.bids_dir, model_dir=settings.model_dir)
    prep_settings = replace(settings, mode="preprocess",
                            intensity_norm=settings.intensity_norm or model_intensity_norm(settings.model_dir))
    outcomes = _run_pairs(settings, prep_settings, pairs, skipped, run_uuid, not_used="is not used for adaptation",
                          name="adaptation_preproc_wf")
    status = _summarise(outcomes, settings, run_uuid, skipped)
    ready = [o.pair for o in outcomes if o.status == "ok"]
    if not ready:
        LOGGER.error("no pair could be preprocessed; nothing to adapt on")
        return 1
    files = []
    for pair in ready:
        baseline, followup, mask = preprocessed_paths(settings.output_dir, pair)
        files += [(f"sub-{pair.subject}_ses-{pair.baseline_session}", baseline, mask),
                  (f"sub-{pair.subject}_ses-{pair.followup_session}", followup, mask)]
    if len(files) > MAX_ADAPT_SESSIONS:
        keep = np.random.default_rng(settings.seed).choice(len(files), MAX_ADAPT_SESSIONS, replace=False)
        LOGGER.info("adapting on %d of the %d preprocessed sessions (drawn with --seed %d)",
                    MAX_ADAPT_SESSIONS, len(files), settings.seed)
        files = [files[i] for i in sorted(keep)]
    sessions = [(name, np.asarray(nib.load(str(image)).dataobj, dtype=np.float32),
                 np.asarray(nib.load(str(mask)).dataobj) > 0) for name, image, mask in files]
    steps = settings.adapt_steps or GROUP_ADAPT_STEPS
    out = settings.output_dir / "model-adapted"
    LOGGER.info("adapting %s on %d session(s), %d steps", settings.model_dir, len(sessions), steps)
    adapt_detector(settings.model_dir, sessions, out, steps=steps, seed=settings.seed, progress=True,
                   description=f"{len(sessions)} session(s) of {settings.bids_dir.name}, each against itself")
    _write_adapted_card(out, portable_command(settings.command_line))
    LOGGER.info("adapted model written to %s; use it with participant --model %s", out, out)
    return status


def _write_adapted_card(model_dir: Path, command: str) -> Path:
    """A short model card for an adapted model: what it was adapted from, on what, and how."""
    from bids_lesionchange.model.io import read_model_spec

    spec = read_model_spec(model_dir)
    adaptation = spec["training"]["adaptation"]
    lines = ["# Adapted change detector (bids_lesionchange)", "",
             "A copy of a trained model fine-tuned without labels on self-pairs of the sessions below "
             "(each session against a nuisance-rich copy of itself; see docs/method.md, adaptation).", "",
             f"- base model: `{Path(adaptation['base_model']).name}` (detector SHA-256 "
             f"`{adaptation['base_detector_sha256']}`)",
             f"- steps: {adaptation['steps']}, seed {adaptation['seed']}, learning rate "
             f"{adaptation['learning_rate']:g}, acquisition nuisance {adaptation['acquisition_augmentation']:g}",
             f"- time: {adaptation['seconds']} s", f"- command: `{command}`", "",
             f"## Sessions ({len(adaptation['sessions'])})", "",
             *[f"- {name}" for name in adaptation["sessions"]], ""]
    return atomic_write_text(model_dir / "model_card.md", "\n".join(lines))


def portable_command(argv) -> str:
    """The command line as a user types it: every argument naming an existing path is shortened to
    its last component, so a model card does not carry the paths of the machine it was trained on."""
    words = []
    for i, word in enumerate(argv):
        if i > 0 and os.sep in word and Path(word).exists():
            word = Path(word).name
        words.append(shlex.quote(word))
    return " ".join(words)


def _training_pairs_with_self_pairs(settings, subjects: list[str]) -> tuple[list[SessionPair], list]:
    """Real NoChange pairs plus ``settings.self_pairs`` simulated rescan pairs per subject.

    Subjects with a single FLAIR session are training material here (their pair is a rescan of
    their scan); the self-pairs are written under ``<work>/self_pairs`` (kept for resuming).
    """
    from bids_lesionchange.discovery import find_flairs
    from bids_lesionchange.simulate.selfpairs import write_self_pairs

    # NoChange pairs: either session may come first (training swaps them), so no order is needed
    pairs, skipped = find_pairs(settings.bids_dir, subjects, settings.session_label, need_order=False)
    flairs, problems = find_flairs(settings.bids_dir, subjects)
    for s in problems:
        LOGGER.warning("sub-%s: %s", s.subject, s.reason)
    if not flairs:
        raise UsageProblem(f"no NoChange subject of {settings.bids_dir} has a FLAIR image "
                           "(anat/*_FLAIR.nii.gz); check the dataset or --nochange-label")
    LOGGER.info("simulating %d rescan pair(s) per subject for %d subject(s) (--self-pairs)",
                settings.self_pairs, len(flairs))
    self_pairs = write_self_pairs(flairs, settings.work_dir / "self_pairs", settings.self_pairs,
                                  seed=settings.seed)
    skipped = [s for s in skipped if s.subject not in flairs]
    for s in skipped:
        LOGGER.warning("skipping sub-%s: %s", s.subject, s.reason)
    LOGGER.info("%d real pair(s) and %d self-pair(s)", len(pairs), len(self_pairs))
    return pairs + self_pairs, skipped


def run_group_evaluation(settings, run_uuid: str) -> int:
    """Aggregate every pair's metrics into one TSV (mean over pairs and pooled counts)."""
    from bids_lesionchange.analysis.files import aggregate_metric_files

    files = sorted(settings.output_dir.glob("sub-*/ses-*/anat/*_desc-evaluation_metrics.tsv"))
    if settings.participant_label:
        files = [f for f in files if f.name.split("_")[0][4:] in settings.participant_label]
    if not files:
        raise UsageProblem(
            f"no *_desc-evaluation_metrics.tsv in {settings.output_dir}; run the participant level "
            "with --reference-dir first"
        )
    try:
        out = aggregate_metric_files(files, settings.output_dir / "group_desc-evaluation_metrics.tsv")
    except ValueError as err:  # pairs scored with different --match rules
        raise UsageProblem(str(err)) from err
    with out.open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    for row in rows:
        flag = row.get("reference_flag") or "none"
        if row.get("pair") not in ("mean", "pooled") and flag not in ("none", "n/a"):
            LOGGER.warning("%s: %s (counted in the mean and pooled rows; remove its metrics file or fix "
                           "its reference and rerun the participant level to leave it out)", row["pair"], flag)
        if row.get("pair") in ("mean", "pooled"):
            LOGGER.info("%s: LTPR %s  LFPR %s  PPV %s  lesion F1 %s  Dice %s", row["pair"],
                        row.get("LTPR"), row.get("LFPR"), row.get("PPV"), row.get("lesion_F1"),
                        row.get("dice"))
    LOGGER.info("group metrics: %s", out)
    if settings.reports:
        try:
            from bids_lesionchange.reports.collect import write_group_report

            LOGGER.info("report: %s", write_group_report(settings, run_uuid, metrics_file=out))
        except Exception as err:  # noqa: BLE001
            LOGGER.warning("could not write the group report (%s)", err)
    return 0


def run_group_summary(settings, run_uuid: str) -> int:
    """group --mode summarise: the cohort's change table (a row per detected change of every pair) and
    pairs table (a row per pair with its status and totals) from the participant derivatives; a
    pair without outputs, or whose last run failed, is listed with its status."""
    from bids_lesionchange.analysis.cohort import PairRecord, pair_status
    from bids_lesionchange.analysis.files import cohort_table_files, read_last_runs, read_pair_record

    pairs, skipped = _discover(settings)
    last = read_last_runs(settings.output_dir / "logs")
    try:
        records = [read_pair_record(settings.output_dir, p.subject, p.baseline_session, p.followup_session,
                                    last_run=last.get(p.name)) for p in pairs]
    except ValueError as err:
        raise UsageProblem(str(err)) from None
    records += [PairRecord(s.subject, "", "", last_run={"status": "skipped", "step": "discovery",
                                                       "message": s.reason}) for s in skipped]
    changes, pair_table = cohort_table_files(records, settings.output_dir)
    statuses = [pair_status(r) for r in records]
    LOGGER.info("cohort tables: %s, %s (%s)", changes, pair_table,
                ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses)))
    return 0
