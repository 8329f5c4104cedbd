"""The run summary: per-pair status plus the out-of-domain guard's measures; a flag warns, never fails."""

import csv
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.analysis.files import plausibility_files
from bids_lesionchange.cli.levels import PairOutcome, _summarise
from bids_lesionchange.config import Settings
from bids_lesionchange.derivatives import pair_outputs
from bids_lesionchange.discovery import SessionPair, SkippedSubject

SHAPE = (10, 10, 10)


def _pair(subject: str) -> SessionPair:
    return SessionPair(subject, "01", "02", Path(f"/bids/sub-{subject}/b.nii.gz"),
                       Path(f"/bids/sub-{subject}/f.nii.gz"))


def _write_change_qc(out: Path, pair: SessionPair, above: int, n_changes: int, tmp: Path) -> None:
    """Write a pair's change QC as the participant workflow does, from a map with ``above`` voxels > kappa."""
    prob = np.zeros(SHAPE, np.float32)
    prob.ravel()[:above] = 0.9
    nib.save(nib.Nifti1Image(prob, np.eye(4)), str(tmp / f"{pair.subject}_p.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.uint8), np.eye(4)), str(tmp / f"{pair.subject}_m.nii.gz"))
    path = out / pair_outputs(sub=pair.subject, baseline=pair.baseline_session,
                              followup=pair.followup_session).change_qc
    path.parent.mkdir(parents=True)
    plausibility_files(str(tmp / f"{pair.subject}_p.nii.gz"), str(tmp / f"{pair.subject}_m.nii.gz"),
                       n_changes, str(path), 0.1)


def _settings(tmp_path: Path, mode: str = "infer") -> Settings:
    return Settings(bids_dir=tmp_path / "bids", output_dir=tmp_path / "out", mode=mode,
                    analysis_level="participant", work_dir=tmp_path / "work")


def _read(out: Path) -> dict[str, dict]:
    (summary,) = (out / "logs").glob("summary-*.tsv")
    with summary.open() as fh:
        return {row["pair"]: row for row in csv.DictReader(fh, delimiter="\t")}


@pytest.fixture
def run(tmp_path):
    """Four pairs: one out of domain, one plausible, one failed (with a stale QC file), one bare."""
    settings = _settings(tmp_path)
    flooded, fine, failed, bare = (_pair(s) for s in ("01", "02", "03", "04"))
    _write_change_qc(settings.output_dir, flooded, above=970, n_changes=96, tmp=tmp_path)
    _write_change_qc(settings.output_dir, fine, above=5, n_changes=1, tmp=tmp_path)
    _write_change_qc(settings.output_dir, failed, above=970, n_changes=96, tmp=tmp_path)
    outcomes = [PairOutcome(flooded), PairOutcome(fine),
                PairOutcome(failed, status="failed", step="predict", message="boom", crash_file="c.txt"),
                PairOutcome(bare)]
    return settings, outcomes


def test_summary_has_the_guard_columns_and_warns_by_pair(run, caplog):
    settings, outcomes = run
    skipped = [SkippedSubject("05", "only one session has a FLAIR")]
    with caplog.at_level(logging.INFO, logger="bids_lesionchange"):
        code = _summarise(outcomes, settings, "abc", skipped)
    rows = _read(settings.output_dir)
    assert list(next(iter(rows.values()))) == ["pair", "status", "step", "message", "crash_file",
                                               "fraction_above_threshold", "n_changes", "out_of_domain",
                                               "input_flags"]
    flooded = rows["sub-01_ses-01to02"]
    assert (float(flooded["fraction_above_threshold"]), flooded["n_changes"], flooded["out_of_domain"]) \
        == (0.97, "96", "true")
    fine = rows["sub-02_ses-01to02"]
    assert (float(fine["fraction_above_threshold"]), fine["n_changes"], fine["out_of_domain"]) \
        == (0.005, "1", "false")
    for name in ("sub-03_ses-01to02", "sub-04_ses-01to02", "sub-05"):  # failed, no QC, skipped
        assert [rows[name][c] for c in ("fraction_above_threshold", "n_changes", "out_of_domain")] \
            == ["n/a"] * 3
    assert rows["sub-03_ses-01to02"]["step"] == "predict" and rows["sub-05"]["status"] == "skipped"

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # only the ok pair that is out of domain, not the failed one
    assert warnings[0].startswith("sub-01_ses-01to02: the model does not fit these scans (97.0 % of "
                                  "the brain above kappa = 0.1, 96 changes)")
    assert code == 1  # sub-03 failed


def test_a_flag_alone_keeps_exit_code_zero(run):
    settings, outcomes = run
    assert _summarise(outcomes[:2], settings, "abc", []) == 0
    assert _read(settings.output_dir)["sub-01_ses-01to02"]["out_of_domain"] == "true"


def test_preprocess_only_runs_report_na(run, caplog):
    settings, outcomes = run
    settings = _settings(settings.output_dir.parent, mode="preprocess")
    with caplog.at_level(logging.WARNING, logger="bids_lesionchange"):
        assert _summarise(outcomes[:2], settings, "abc", []) == 0
    rows = _read(settings.output_dir)
    assert rows["sub-01_ses-01to02"]["out_of_domain"] == "n/a"
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_portable_command_drops_the_machine_paths(tmp_path):
    from bids_lesionchange.cli.levels import portable_command

    (tmp_path / "bids").mkdir()
    (tmp_path / "train.toml").write_text("")
    argv = ("bids_lesionchange", str(tmp_path / "bids"), "out", "group", "--mode", "train",
            "--config", str(tmp_path / "train.toml"), "--seed", "2026", "-w", "/no/such/dir")
    command = portable_command(argv)
    assert command == ("bids_lesionchange bids out group --mode train --config train.toml --seed 2026 "
                       "-w /no/such/dir")
    assert str(tmp_path) not in command


@pytest.mark.parametrize("plugin, nprocs, expected", [("MultiProc", 2, 0.1), ("Linear", 1, 0.1), ("SLURM", 1, 2.0)])
def test_the_workflow_runs_with_the_apps_execution_settings_not_nipypes_defaults(tmp_path, monkeypatch, plugin, nprocs,
                                                                   expected):
    """The workflow's own config is what Nipype's plugin reads (its 2 s default delayed every node)."""
    import unittest.mock as mock

    from bids_lesionchange.cli import cluster, levels
    from bids_lesionchange.config import Settings

    from nipype.pipeline import engine as pe

    class FakeWorkflow(pe.Workflow):
        """A real workflow (its config copied from Nipype's at creation) that records instead of running."""

        seen = None

        def run(self, plugin=None, plugin_args=None, updatehash=False):
            execution = self.config["execution"]
            self.seen = (plugin, float(execution["poll_sleep_duration"]))
            self.settings = {key: execution[key] for key in ("hash_method", "crashdump_dir", "crashfile_format")}

    from nipype import config as nipype_config

    # run_graph changes Nipype's global config and logging: keep them as they are for other tests.
    monkeypatch.setattr(nipype_config, "update_config", lambda *args, **kwargs: None)
    monkeypatch.setattr(levels, "_route_nipype_logs", lambda: None)
    settings = Settings(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="participant",
                        mode="infer", work_dir=tmp_path / "work", nprocs=nprocs,
                        plugin="SLURM" if plugin == "SLURM" else None)
    workflow = FakeWorkflow(name="toy_wf")
    with mock.patch.object(cluster, "ensure_logname"), \
            mock.patch.object(cluster, "request_node_resources", return_value={}):
        levels.run_graph(workflow, settings, [], "run1")
    assert workflow.seen == (plugin, expected)
    # and so are the app's other execution settings: crash files as text in the output's logs
    # (Nipype's defaults: the current directory, pickles), caches keyed by file times
    assert workflow.settings == {"hash_method": "timestamp",
                                 "crashdump_dir": str(tmp_path / "out" / "logs" / "crash-run1"),
                                 "crashfile_format": "txt"}


@pytest.mark.parametrize("interface", ["SkullStrip", "N4Correct", "CoarseRegistration", "RigidRegistration"])
def test_thread_counts_are_not_part_of_a_steps_cache_key(interface):
    """A re-run with another --nprocs/--omp-nthreads reuses the cached preprocessing."""
    from bids_lesionchange.interfaces import preproc

    one, two = getattr(preproc, interface)(nthreads=1), getattr(preproc, interface)(nthreads=2)
    assert one.inputs.get_hashval()[1] == two.inputs.get_hashval()[1]
    assert one.inputs.nthreads != two.inputs.nthreads


def test_the_run_freezes_the_heap_at_its_first_step_and_unfreezes_it_after(tmp_path, monkeypatch):
    """Nipype's MultiProc collects garbage before each submission; a frozen heap makes that cheap
    (issue 15: 10.5 s of a 1 mm pair's run in the scheduler), and it is unfrozen after the run."""
    import gc

    from nipype import config as nipype_config
    from nipype.pipeline import engine as pe

    from bids_lesionchange.cli import levels
    from bids_lesionchange.config import Settings

    class FakeWorkflow(pe.Workflow):
        counts = []

        def run(self, plugin=None, plugin_args=None, updatehash=False):
            callback = plugin_args["status_callback"]
            self.counts.append(gc.get_freeze_count())
            callback(self, "start")  # the first node starts
            self.counts.append(gc.get_freeze_count())
            garbage = [[] for _ in range(10)]  # made during the run: not frozen
            callback(self, "end")
            self.counts.append(gc.get_freeze_count())
            del garbage

    monkeypatch.setattr(nipype_config, "update_config", lambda *args, **kwargs: None)
    monkeypatch.setattr(levels, "_route_nipype_logs", lambda: None)
    settings = Settings(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="participant",
                        mode="infer", work_dir=tmp_path / "work", nprocs=1)
    workflow = FakeWorkflow(name="toy_wf")
    assert gc.get_freeze_count() == 0
    levels.run_graph(workflow, settings, [], "run1")
    before, frozen, later = workflow.counts
    assert before == 0 and frozen > 1000 and later == frozen  # frozen once, at the first start
    assert gc.get_freeze_count() == 0  # and given back to the collector after the run
    seen = []
    wrapped = levels.frozen_heap_callback(lambda node, status: seen.append((node, status)) or "kept")
    assert wrapped("n", "start") == "kept" and seen == [("n", "start")]  # the app's callback still runs
    gc.unfreeze()
