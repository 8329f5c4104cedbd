"""Issue 16: every bad input ends in one sentence naming the file (or option) and the fix, as early
as possible, and never stops the other subjects; tests assert what the code guarantees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bids_lesionchange.cli import parser as cli_parser
from bids_lesionchange.cli.parser import parse_args


def _fake_model(path: Path) -> Path:
    """A model directory that passes the parse-time checks (its weights are not a network)."""
    from bids_lesionchange.model.io import sha256_of
    from bids_lesionchange.params import HyperParams

    path.mkdir(parents=True)
    (path / "detector.weights.h5").write_bytes(b"weights")
    (path / "model.json").write_text(json.dumps({
        "format": "bids_lesionchange-model", "format_version": 1, "weights": "detector.weights.h5",
        "hyperparams": HyperParams().to_dict(),
        "sha256": {"detector.weights.h5": sha256_of(path / "detector.weights.h5")}}))
    return path


def _usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        parse_args([str(a) for a in argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


# ------------------------------------------------------------------------ item 7: early refusals
def test_a_tampered_model_is_refused_before_any_subject_starts(tiny_bids, tmp_path, capsys):
    model = _fake_model(tmp_path / "model")
    assert parse_args([str(tiny_bids), str(tmp_path / "out"), "participant", "--model", str(model)])
    (model / "detector.weights.h5").write_bytes(b"weightz")  # same size, other content
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", model])
    assert f"{model / 'detector.weights.h5'}: SHA-256 mismatch" in err
    assert "restore the original model directory" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "work-bids_lesionchange").exists()


def test_a_model_with_a_missing_listed_file_or_bad_hyperparams_is_refused(tiny_bids, tmp_path, capsys):
    model = _fake_model(tmp_path / "model")
    spec = json.loads((model / "model.json").read_text())
    spec["sha256"]["vae.weights.h5"] = "0" * 64
    (model / "model.json").write_text(json.dumps(spec))
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", model])
    assert f"{model / 'vae.weights.h5'}: listed in model.json but missing" in err

    del spec["sha256"]["vae.weights.h5"]
    spec["hyperparams"]["detector"]["levels"] = 0
    (model / "model.json").write_text(json.dumps(spec))
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", model])
    assert "has bad hyperparams" in err and "'detector.levels' = 0 is out of range" in err


def test_the_shipped_model_is_verified_too(tiny_bids, tmp_path, capsys, monkeypatch):
    shipped = _fake_model(tmp_path / "default_model")
    monkeypatch.setattr(cli_parser, "DEFAULT_MODEL_DIR", shipped)
    assert parse_args([str(tiny_bids), str(tmp_path / "out"), "participant"]).model_dir == shipped
    (shipped / "detector.weights.h5").write_bytes(b"")
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant"])
    assert "SHA-256 mismatch" in err and "reinstall bids_lesionchange" in err


@pytest.mark.parametrize("name", ["detector.keras", "model.h5", "weights.weights.h5"])
def test_a_file_given_to_model_asks_for_a_directory(tiny_bids, tmp_path, capsys, name):
    (tmp_path / name).write_bytes(b"PK\x03\x04")
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", tmp_path / name])
    assert f"expected a model directory (with model.json) but {tmp_path / name} is a file" in err
    assert "does not exist" not in err and "pass --model with the directory written by" in err


def test_model_json_given_to_model_names_its_folder(tiny_bids, tmp_path, capsys):
    model = _fake_model(tmp_path / "model")
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", model / "model.json"])
    assert f"pass its folder {model} instead" in err


@pytest.mark.parametrize("option, value, message", [
    ("--mem-gb", "-1", "must be a finite number above 0"),
    ("--mem-gb", "0", "must be a finite number above 0"),
    ("--mem-gb", "nan", "must be a finite number above 0"),
    ("--mem-gb", "inf", "must be a finite number above 0"),
    ("--mem-gb", "lots", "is not a number"),
    ("--nprocs", "0", "must be 1 or more"),
    ("--nprocs", "-2", "must be 1 or more"),
    ("--omp-nthreads", "0", "must be 1 or more"),
    ("--device", "gpu", "unknown device 'gpu': use cpu, cuda or cuda:N"),
])
def test_resource_options_are_range_checked_at_parse_time(tiny_bids, tmp_path, capsys, option, value,
                                                          message):
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", f"{option}={value}"])
    assert option in err and message in err


def test_mem_gb_within_range_reaches_the_settings(tiny_bids, tmp_path):
    model = _fake_model(tmp_path / "model")
    s = parse_args([str(tiny_bids), str(tmp_path / "out"), "participant", "--model", str(model),
                    "--mem-gb", "3.5", "--nprocs", "1", "--omp-nthreads", "1"])
    assert (s.mem_gb, s.nprocs, s.omp_nthreads) == (3.5, 1, 1)


@pytest.mark.parametrize("device, visible, message", [
    ("cuda", 0, "--device cuda: PyTorch sees no CUDA GPU on this machine; use --device cpu"),
    ("cuda:1", 0, "--device cuda:1: PyTorch sees no CUDA GPU on this machine"),
    ("cuda:2", 2, "--device cuda:2: PyTorch sees 2 CUDA device(s) (cuda:0 to cuda:1); pick one of them"),
    ("cuda", None, "--device cuda needs PyTorch (HD-BET), which is not installed; use --device cpu"),
])
def test_a_cuda_device_without_a_gpu_is_refused_before_the_run(tiny_bids, tmp_path, capsys, monkeypatch,
                                                              device, visible, message):
    model = _fake_model(tmp_path / "model")
    monkeypatch.setattr(cli_parser, "visible_cuda_devices", lambda: visible)
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", model,
                                "--device", device])
    assert message in err


def test_a_visible_cuda_device_or_no_hdbet_is_accepted(tiny_bids, tmp_path, monkeypatch):
    model = _fake_model(tmp_path / "model")
    monkeypatch.setattr(cli_parser, "visible_cuda_devices", lambda: 1)
    argv = [str(tiny_bids), str(tmp_path / "out"), "participant", "--model", str(model)]
    assert parse_args(argv + ["--device", "cuda:0"]).device == "cuda:0"
    monkeypatch.setattr(cli_parser, "visible_cuda_devices", lambda: 0)
    # the threshold skull stripping runs no HD-BET, so the device is never used
    assert parse_args(argv + ["--device", "cuda", "--skull-strip", "threshold"]).device == "cuda"


def test_this_machine_is_asked_for_real(tiny_bids, tmp_path, capsys):
    """Without monkeypatching: on a machine without a GPU --device cuda is refused."""
    count = cli_parser.visible_cuda_devices()
    if count:
        pytest.skip("this machine has a CUDA GPU")
    model = _fake_model(tmp_path / "model")
    err = _usage_error(capsys, [tiny_bids, tmp_path / "out", "participant", "--model", model,
                                "--device", "cuda"])
    assert err.startswith("bids_lesionchange: error: --device cuda") and "use --device cpu" in err


# --------------------------------------------- items 4 and 6: missing, truncated and corrupt images
def _good_image(path: Path, shape=(12, 12, 12)) -> Path:
    import nibabel as nib
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def _damage(path: Path, kind: str) -> Path:
    """Damage an image file the way copies and crashed writers do."""
    import gzip
    import os

    raw = path.read_bytes()
    if kind == "truncated":  # the gzip stream ends early: EOFError "Compressed file ended"
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "short":  # a complete gzip stream holding less data than the header announces
        path.write_bytes(gzip.compress(gzip.decompress(raw)[:2000]))
    elif kind == "header_cut":  # cut inside the NIfTI header
        path.write_bytes(raw[:60])
    elif kind == "dangling":
        path.unlink()
        os.symlink(path.parent / "annex" / "MD5E-s123--abc.nii.gz", path)
    elif kind == "missing":
        path.unlink()
    return path


DAMAGE_MESSAGES = {
    "truncated": "the file is truncated: its compressed data end before the image does; "
                 "re-export it from the scanner data or copy it again from its source",
    "short": "but its header announces",
    "header_cut": "re-export it from the scanner data or copy it again from its source",
    "dangling": "the file is a symbolic link to",
    "missing": "the file does not exist",
}


@pytest.mark.parametrize("kind", sorted(DAMAGE_MESSAGES))
def test_a_damaged_image_is_named_with_the_fix(tmp_path, kind):
    from bids_lesionchange.errors import InputError
    from bids_lesionchange.image.io import check_image_file, load_flair

    path = _damage(_good_image(tmp_path / "sub-01_ses-02_FLAIR.nii.gz"), kind)
    for check, step in ((check_image_file, "check_inputs"), (load_flair, "load")):
        with pytest.raises(InputError) as err:
            check(path)
        text = str(err.value)
        assert text.startswith(f"{step}: {path}: ") and "\n" not in text
        if check is check_image_file or kind not in ("short", "header_cut"):
            assert DAMAGE_MESSAGES[kind] in text
        assert "re-export" in text or "restore" in text or "copy it again" in text


def test_load_flair_names_gzip_data_shorter_than_the_header(tmp_path):
    from bids_lesionchange.errors import InputError
    from bids_lesionchange.image.io import load_flair

    path = _damage(_good_image(tmp_path / "f.nii.gz"), "short")
    with pytest.raises(InputError, match=r"holds less image data than its header announces \(Expected "
                                         r"6912 bytes, got \d+ bytes\).*copy it again from its source"):
        load_flair(path)


def test_a_truncated_uncompressed_nifti_is_refused(tmp_path):
    from bids_lesionchange.errors import InputError
    from bids_lesionchange.image.io import check_image_file

    path = _good_image(tmp_path / "f.nii")
    check_image_file(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InputError, match=r"the file holds \d+ bytes but its header announces 7264"):
        check_image_file(path)


def test_valid_images_pass_including_multi_member_gzip(tmp_path):
    """The O(1) gzip-trailer check falls back to a full read, which accepts a valid multi-member file."""
    import gzip

    import nibabel as nib
    import numpy as np

    from bids_lesionchange.image.io import check_image_file

    good = _good_image(tmp_path / "good.nii.gz")
    check_image_file(good)
    raw = gzip.decompress(good.read_bytes())
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))  # as bgzip/pigz -i write
    check_image_file(multi)
    np.testing.assert_array_equal(np.asanyarray(nib.load(multi).dataobj), np.asanyarray(nib.load(good).dataobj))


def _two_subjects(root: Path, damage: str | None = "dangling") -> Path:
    from tests.conftest import make_bids

    bids = make_bids(root / "bids", {s: [f"ses-01/anat/sub-{s}_ses-01_FLAIR.nii.gz",
                                         f"ses-02/anat/sub-{s}_ses-02_FLAIR.nii.gz"] for s in ("01", "02")})
    if damage:
        _damage(bids / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_FLAIR.nii.gz", damage)
    return bids


def test_the_graph_is_built_although_a_flair_is_a_dangling_link(tmp_path):
    """The graph is built without touching the input files (it used to raise a TraitError)."""
    from bids_lesionchange.config import Settings
    from bids_lesionchange.discovery import find_pairs
    from bids_lesionchange.workflows.base import init_bids_lesionchange_wf

    bids = _two_subjects(tmp_path)
    model = _fake_model(tmp_path / "model")
    pairs, _ = find_pairs(bids)
    assert [p.subject for p in pairs] == ["01", "02"] and not pairs[0].followup_flair.exists()
    settings = Settings(bids_dir=bids, output_dir=tmp_path / "out", analysis_level="participant",
                        mode="infer", work_dir=tmp_path / "work", model_dir=model, skull_strip="threshold")
    workflow = init_bids_lesionchange_wf(settings=settings, pairs=pairs)
    names = workflow.list_node_names()
    assert any(n.startswith("sub_01_ses_01to02_wf.") and n.endswith(".native_mask") for n in names)
    assert any(n.startswith("sub_02_ses_01to02_wf.") and n.endswith(".native_mask") for n in names)


@pytest.mark.parametrize("damage", ["dangling", "truncated", "short", "header_cut"])
def test_a_bad_flair_fails_its_pair_before_the_graph_and_the_others_run(tmp_path, monkeypatch, damage):
    import csv

    from bids_lesionchange.cli import levels
    from bids_lesionchange.config import Settings

    bids = _two_subjects(tmp_path, damage)
    sent = []

    def fake_run_graph(workflow, settings, pairs, run_uuid):
        sent.extend(p.name for p in pairs)
        return [levels.PairOutcome(p) for p in pairs]

    monkeypatch.setattr(levels, "run_graph", fake_run_graph)
    settings = Settings(bids_dir=bids, output_dir=tmp_path / "out", analysis_level="participant",
                        mode="preprocess", work_dir=tmp_path / "work", skull_strip="threshold",
                        skip_bids_validation=True, reports=False)
    assert levels.run_participant(settings, "run1") == 1
    assert sent == ["sub-02_ses-01to02"]  # the good subject runs
    with (settings.output_dir / "logs" / "summary-run1.tsv").open() as fh:
        rows = {r["pair"]: r for r in csv.DictReader(fh, delimiter="\t")}
    assert list(rows) == ["sub-01_ses-01to02", "sub-02_ses-01to02"]
    bad = rows["sub-01_ses-01to02"]
    flair = bids / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_FLAIR.nii.gz"
    assert (bad["status"], bad["step"]) == ("failed", "check_inputs")
    assert bad["message"].startswith(f"check_inputs: {flair}: ") and DAMAGE_MESSAGES[damage] in bad["message"]
    assert rows["sub-02_ses-01to02"]["status"] == "ok"


def test_only_bad_flairs_end_with_exit_1_and_a_summary(tmp_path, monkeypatch):
    from bids_lesionchange.cli import levels
    from bids_lesionchange.config import Settings

    bids = _two_subjects(tmp_path, "truncated")
    _damage(bids / "sub-02" / "ses-01" / "anat" / "sub-02_ses-01_FLAIR.nii.gz", "dangling")
    monkeypatch.setattr(levels, "run_graph", lambda *a: pytest.fail("no graph for zero pairs"))
    settings = Settings(bids_dir=bids, output_dir=tmp_path / "out", analysis_level="participant",
                        mode="preprocess", work_dir=tmp_path / "work", reports=False)
    assert levels.run_participant(settings, "run1") == 1
    summary = (settings.output_dir / "logs" / "summary-run1.tsv").read_text()
    assert summary.count("\tfailed\tcheck_inputs\t") == 2


def _crash_file(tmp_path: Path, inputs: dict[str, Path], error: str) -> Path:
    lines = ["Node: bids_lesionchange_wf.sub_01_ses_01to02_wf.components",
             "Working directory: /w/components", "", "Node inputs:", ""]
    lines += [f"{key} = {value}" for key, value in inputs.items()] + ["direction = increase", "",
                                                                    "Traceback (most recent call last):",
                                                                    f"  {error}"]
    crash = tmp_path / "crash-x.txt"
    crash.write_text("\n".join(lines) + "\n")
    return crash


@pytest.mark.parametrize("kind, error", [
    ("truncated", "EOFError: Compressed file ended before the end-of-stream marker was reached"),
    ("short", "OSError: Expected 6912 bytes, got 2000 bytes from "),
])
def test_a_damaged_intermediate_in_the_work_dir_says_to_delete_it(tmp_path, kind, error):
    from bids_lesionchange.cli.levels import _read_crash, explain_damaged_file

    work = tmp_path / "work"
    good = _good_image(work / "wf" / "rigid_reg" / "brain_mask.nii.gz")
    bad = _damage(_good_image(work / "wf" / "predict" / "change_probability.nii.gz"), kind)
    crash = _crash_file(tmp_path, {"brain_mask": good, "probability": bad}, error)
    node, message = _read_crash(crash)
    assert node.endswith(".components") and message == error.strip()
    text = explain_damaged_file(crash, message, work)
    assert text.startswith(f"{bad} is a damaged cached intermediate in the work directory")
    assert f"delete the work directory {work.resolve()} (or rerun with a fresh -w DIR)" in text
    assert str(good) not in text


def test_a_damaged_input_outside_the_work_dir_says_to_recopy_it(tmp_path):
    from bids_lesionchange.cli.levels import explain_damaged_file

    bad = _damage(_good_image(tmp_path / "bids" / "f.nii.gz"), "truncated")
    crash = _crash_file(tmp_path, {"followup": bad}, "EOFError: Compressed file ended")
    text = explain_damaged_file(crash, "EOFError: Compressed file ended", tmp_path / "work")
    assert text.startswith(f"{bad}: the file is truncated") and "copy it again" in text
    assert "work directory" not in text


def test_other_crash_messages_are_left_alone(tmp_path):
    from bids_lesionchange.cli.levels import explain_damaged_file

    crash = _crash_file(tmp_path, {}, "ValueError: the brain mask is empty")
    assert explain_damaged_file(crash, "ValueError: the brain mask is empty", tmp_path) == \
        "ValueError: the brain mask is empty"
    # damage whose file cannot be found among the inputs still gets the work-dir hint
    text = explain_damaged_file(crash, "EOFError: Compressed file ended", tmp_path / "w")
    assert "delete the work directory" in text and str((tmp_path / "w").resolve()) in text


def test_a_dangling_reference_mask_is_not_evaluated_but_does_not_stop_the_build(tmp_path, caplog):
    import os

    from bids_lesionchange.cli.levels import find_references
    from bids_lesionchange.discovery import SessionPair

    folder = tmp_path / "ref" / "sub-01" / "ses-02" / "anat"
    folder.mkdir(parents=True)
    os.symlink(tmp_path / "nowhere.nii.gz", folder / "sub-01_ses-02_desc-change_mask.nii.gz")
    pair = SessionPair("01", "01", "02", Path("b.nii.gz"), Path("f.nii.gz"))
    assert find_references(tmp_path / "ref", [pair]) == {}
    assert "broken symbolic link" in caplog.text


def _app(*args) -> "subprocess.CompletedProcess":
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "bids_lesionchange.cli.run", *map(str, args)],
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_end_to_end_a_dangling_flair_and_a_damaged_work_dir(tmp_path):
    """As a user runs it: sub-01's follow-up is a dangling link, sub-02 is fine; then one of
    sub-02's cached intermediates is truncated (as by a crash while writing) and the run repeated."""
    import csv

    from bids_lesionchange.simulate.cohort import write_cohort

    bids = write_cohort(tmp_path / "bids", n_nochange=0, n_change=2, seed=3, preset="small")
    _damage(bids / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_FLAIR.nii.gz", "dangling")
    out, work = tmp_path / "out", tmp_path / "work"
    args = [bids, out, "participant", "--mode", "preprocess", "--skip-bids-validation",
            "--skull-strip", "threshold", "--output-resolution", "2.5", "--nprocs", "1",
            "--no-reports", "-w", work]

    def summary() -> dict[str, dict]:
        latest = sorted((out / "logs").glob("summary-*.tsv"))[-1]
        with latest.open() as fh:
            return {r["pair"]: r for r in csv.DictReader(fh, delimiter="\t")}

    first = _app(*args)
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr[-3000:]
    assert "sub-01_ses-01to02 FAILED at step 'check_inputs'" in first.stderr
    assert "sub-01_ses-02_FLAIR.nii.gz: the file is a symbolic link to" in first.stderr
    assert summary()["sub-02_ses-01to02"]["status"] == "ok"
    outputs = sorted(p.relative_to(out) for p in (out / "sub-02").rglob("*") if p.is_file())
    assert any(p.name.endswith("desc-preproc_FLAIR.nii.gz") for p in outputs)
    assert not (out / "sub-01").exists()

    cached = next(work.rglob("sub_02_ses_01to02_wf/preproc_wf/rigid_reg/baseline_common.nii*"))
    cached.write_bytes(cached.read_bytes()[:5000])
    second = _app(*args)
    assert second.returncode == 1, second.stderr[-3000:]
    last = second.stderr.strip().splitlines()[-1]  # (Nipype itself logs the node's traceback above)
    assert "sub-02_ses-01to02 FAILED at step" in last and "damaged cached intermediate" in last
    row = summary()["sub-02_ses-01to02"]
    assert row["status"] == "failed"
    assert row["message"].startswith(f"{cached} is a damaged cached intermediate in the work directory")
    assert f"delete the work directory {work}" in row["message"]


# ----------------------------------------------------------------------- item 5: SIGTERM / SIGINT
SLEEPY_RUN = """
import sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from tests.conftest import make_bids
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
import bids_lesionchange.workflows.base as base

def nap(x):
    import time
    time.sleep(120)
    return x

def build(settings, pairs, references=None, name="bids_lesionchange_wf"):
    # every pair: one long step (as HD-BET or N4 would be) then its derivative sink
    workflow = pe.Workflow(name=name)
    for pair in pairs:
        pair_wf = pe.Workflow(name=base.pair_workflow_name(pair))
        step = pe.Node(niu.Function(input_names=["x"], output_names=["y"], function=nap), name="nap")
        step.inputs.x = 1
        pair_wf.connect(step, "y", pe.Node(niu.IdentityInterface(fields=["y"]), name="ds_y"), "y")
        workflow.add_nodes([pair_wf])
    return workflow

base.init_bids_lesionchange_wf = build
root = Path(sys.argv[1])
bids = make_bids(root / "bids", {{s: [f"ses-01/anat/sub-{{s}}_ses-01_FLAIR.nii.gz",
                                     f"ses-02/anat/sub-{{s}}_ses-02_FLAIR.nii.gz"] for s in ("01", "02")}})
from bids_lesionchange.cli.run import main
sys.exit(main([str(bids), str(root / "out"), "participant", "--mode", "preprocess", "-w", str(root / "work"),
               "--skip-bids-validation", "--no-reports", "--plugin", sys.argv[2], "--nprocs", "2"]))
"""


@pytest.mark.parametrize("plugin, signum, code", [("MultiProc", "SIGTERM", 143), ("MultiProc", "SIGINT", 130),
                                                  ("Linear", "SIGTERM", 143)])
def test_a_signal_stops_the_workers_writes_the_summary_and_says_how_to_resume(tmp_path, plugin, signum, code):
    """Under MultiProc the two pairs' long steps run in two worker processes, which must not outlive
    the run; under Linear the step runs in the main process, where Nipype turns the interruption
    into a node crash and would go on with the next pair's step."""
    import csv
    import os
    import signal
    import subprocess
    import sys
    import time

    from bids_lesionchange.cli.interrupt import _alive, descendant_pids

    script = tmp_path / "run.py"
    script.write_text(SLEEPY_RUN.format(repo=str(Path(__file__).resolve().parents[2])))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), plugin], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    want_workers, want_running = (2, 2) if plugin == "MultiProc" else (0, 1)
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            workers = descendant_pids(proc.pid)
            nodes = list((tmp_path / "work").rglob("nap/_node.pklz"))
            if len(workers) >= want_workers and len(nodes) == want_running:  # the long steps run
                break
            time.sleep(0.2)
        assert proc.poll() is None and len(workers) >= want_workers, proc.communicate()[1][-3000:]
        time.sleep(1.0)
        proc.send_signal(getattr(signal, signum))
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in workers:  # the workers this test started, should the code under test leave them
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == code, stderr[-3000:]
    assert not [pid for pid in workers if _alive(pid)], "orphan worker processes"
    if plugin == "MultiProc":  # (under Linear, Nipype logs the interrupted node's crash itself)
        assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert f"stopped by {signum}: finished outputs are kept; the summary so far is" in last
    assert f"to resume, rerun the same command with the same work directory (-w {tmp_path / 'work'})" in last
    (summary,) = (tmp_path / "out" / "logs").glob("summary-*.tsv")
    with summary.open() as fh:
        rows = {r["pair"]: r for r in csv.DictReader(fh, delimiter="\t")}
    assert [r["status"] for r in rows.values()] == ["interrupted", "interrupted"]
    assert f"not finished when the run was stopped ({signum})" in rows["sub-01_ses-01to02"]["message"]


# ------------------------------------------- items 1 and 2: wrong contrast or person, resolution, coverage
def test_input_flags_reach_the_summary_and_the_log_and_leave_the_exit_code_0(tmp_path, caplog):
    """A pair whose preprocessing QC holds plausibility flags is done (exit 0) but flagged by name in
    the summary TSV and the log; the other pair's row is unflagged."""
    import csv
    import logging

    from bids_lesionchange.cli import levels
    from bids_lesionchange.config import Settings
    from bids_lesionchange.discovery import find_pairs

    bids = _two_subjects(tmp_path, None)
    pairs, _ = find_pairs(bids)
    settings = Settings(bids_dir=bids, output_dir=tmp_path / "out", analysis_level="participant",
                        mode="preprocess", work_dir=tmp_path / "work", reports=False)
    flag = ("sub-01_ses-02_FLAIR.nii.gz does not look like a FLAIR: its white matter is as bright as or "
            "brighter than its cortex, as in a T1w image (depth-intensity correlation +0.26 > +0.10, real "
            "FLAIRs <= +0.01); check that this file is the FLAIR of that session")
    qc = settings.output_dir / levels.outputs_of(pairs[0]).preproc_qc
    qc.parent.mkdir(parents=True)
    qc.write_text(json.dumps({"plausibility": {"flags": [flag]}}))
    with caplog.at_level(logging.WARNING, logger="bids_lesionchange"):
        code = levels._summarise([levels.PairOutcome(p) for p in pairs], settings, "run1", [])
    assert code == 0
    with (settings.output_dir / "logs" / "summary-run1.tsv").open() as fh:
        rows = {r["pair"]: r for r in csv.DictReader(fh, delimiter="\t")}
    assert rows["sub-01_ses-01to02"]["input_flags"] == flag and rows["sub-02_ses-01to02"]["input_flags"] == "none"
    assert f"sub-01_ses-01to02: {flag}" in caplog.text


def _t1w_like(session) -> np.ndarray:
    """The session's head with a T1w contrast in the brain (white matter brightest, CSF dark)."""
    import numpy as np

    t = session.tissues
    brain = (t["csf"] + t["gm"] + t["wm"]) > 0.5
    t1w = 0.25 * t["csf"] + 0.6 * t["gm"] + 1.0 * t["wm"]
    level = np.percentile(session.image[brain], 75)
    return np.where(brain, t1w * level, session.image)


def _replace_followup(bids: Path, kind: str) -> Path:
    """Replace sub-01's ses-02 FLAIR by a 10-slice slab of it, a 10 mm version, a T1w-like image, or
    sub-02's ses-02 FLAIR (another person: the synthetic subjects share one anatomy template)."""
    import nibabel as nib
    import numpy as np

    from bids_lesionchange.simulate.cohort import simulate_subject, write_nifti

    path = bids / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_FLAIR.nii.gz"
    img = nib.load(str(path))
    data, affine = np.asanyarray(img.dataobj), img.affine.copy()
    if kind == "slab":
        start = data.shape[2] // 2 - 5
        affine[:3, 3] = affine[:3, :3] @ np.array([0, 0, start]) + affine[:3, 3]
        data = data[:, :, start:start + 10]
    elif kind == "10mm":  # every n-th slice: slices 10 mm or more apart
        step = int(np.ceil(10.0 / img.header.get_zooms()[2]))
        affine[:3, 2] *= step
        data = data[:, :, ::step]
    elif kind == "t1w":
        session = simulate_subject(0, "Change", seed=3, preset="small", label="01", keep_tissues=True).sessions[1]
        data = np.clip(np.rint(_t1w_like(session)), 0, 32767).astype(np.int16)
    elif kind == "other_subject":
        other = nib.load(str(bids / "sub-02" / "ses-02" / "anat" / "sub-02_ses-02_FLAIR.nii.gz"))
        data, affine = np.asanyarray(other.dataobj), other.affine
    write_nifti(path, data, affine)
    return path


def _run_two_subjects(tmp_path: Path, kind: str):
    import csv

    from bids_lesionchange.simulate.cohort import write_cohort

    bids = write_cohort(tmp_path / "bids", n_nochange=0, n_change=2, seed=3, preset="small")
    bad = _replace_followup(bids, kind)
    out = tmp_path / "out"
    done = _app(bids, out, "participant", "--mode", "preprocess", "--skip-bids-validation",
                "--skull-strip", "threshold", "--output-resolution", "2.5", "--nprocs", "1",
                "--no-reports", "-w", tmp_path / "work")
    with sorted((out / "logs").glob("summary-*.tsv"))[-1].open() as fh:
        rows = {r["pair"]: r for r in csv.DictReader(fh, delimiter="\t")}
    good = sorted(p.name for p in (out / "sub-02").rglob("*") if p.is_file())
    assert any(name.endswith("desc-preproc_FLAIR.nii.gz") for name in good)
    assert rows["sub-02_ses-01to02"]["status"] == "ok" and rows["sub-02_ses-01to02"]["input_flags"] == "none"
    return done, rows["sub-01_ses-01to02"], bad


@pytest.mark.slow
@pytest.mark.parametrize("kind, message", [
    ("slab", "the field of view cuts through the head at both ends of its third axis (10 slices of"),
    ("10mm", "above the limit of 7 mm: new lesions of 3-10 mm are lost between such slices"),
])
def test_end_to_end_a_slab_or_a_10_mm_scan_is_refused_and_the_other_subject_finishes(tmp_path, kind, message):
    done, row, bad = _run_two_subjects(tmp_path, kind)
    assert done.returncode == 1 and "Traceback" not in done.stderr.strip().splitlines()[-1]
    assert (row["status"], row["step"]) == ("failed", "check_inputs")
    assert f"check_inputs: {bad}: " in row["message"] and message in row["message"]
    assert not (tmp_path / "out" / "sub-01").exists()


@pytest.mark.slow
def test_end_to_end_a_t1w_named_flair_is_flagged_and_the_other_subject_is_not(tmp_path):
    """At the small cohort's 2.5 mm the FLAIR-likeness check does not judge (the cortex is not
    resolved); the same-person-and-contrast check flags the pair (brain NCC about 0.6, below 0.7)."""
    done, row, bad = _run_two_subjects(tmp_path, "t1w")
    assert done.returncode == 0, done.stderr[-3000:]
    sentence = f"sub-01_ses-01_FLAIR.nii.gz and {bad.name} may not be the same person or the same contrast"
    assert row["status"] == "ok" and row["input_flags"].startswith(sentence)
    assert f"sub-01_ses-01to02: {sentence}" in done.stderr


@pytest.mark.slow
def test_end_to_end_another_subjects_follow_up_is_flagged_and_the_other_subject_is_not(tmp_path):
    """The synthetic subjects share one anatomy (brain NCC about 0.85, inside the same-person range
    of real rescans), so the same-person check passes; the follow-up does not show the baseline's
    lesions (about 2 % of them still hyperintense), which flags the pair."""
    done, row, bad = _run_two_subjects(tmp_path, "other_subject")
    assert done.returncode == 0, done.stderr[-3000:]
    sentence = f"{bad.name} does not show the lesions of sub-01_ses-01_FLAIR.nii.gz"
    assert row["status"] == "ok" and sentence in row["input_flags"]
    assert f"sub-01_ses-01to02: {sentence}" in done.stderr


# ---------------------------------------------------------------- item 8: mixed or silent outputs
def _settings(bids: Path, tmp_path: Path, **kwargs):
    from bids_lesionchange.config import Settings

    values = dict(bids_dir=bids, output_dir=tmp_path / "out", analysis_level="participant", mode="infer",
                  work_dir=tmp_path / "work", skull_strip="threshold", skip_bids_validation=True, reports=False)
    return Settings(**{**values, **kwargs})


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_rerun_with_no_native_removes_the_earlier_native_masks_and_nothing_else(tmp_path, caplog):
    """(a) The paths come from the real graph of a --no-native run; sub-01 is rerun, sub-02 is not."""
    import logging

    from bids_lesionchange.cli import levels
    from bids_lesionchange.derivatives import owned_pair_files, sidecar_path
    from bids_lesionchange.discovery import find_pairs
    from bids_lesionchange.workflows.base import init_bids_lesionchange_wf, pair_workflow_name

    bids = _two_subjects(tmp_path, None)
    pairs, _ = find_pairs(bids)
    settings = _settings(bids, tmp_path, model_dir=_fake_model(tmp_path / "model"), write_native=False)
    workflow = init_bids_lesionchange_wf(settings=settings, pairs=pairs)
    written = levels.sink_paths(workflow, pair_workflow_name(pairs[0]))
    first = levels.outputs_of(pairs[0])
    assert first.mask in written and first.native_mask not in written
    out = settings.output_dir
    for pair in pairs:  # what the earlier run with native outputs left
        _touch(out, owned_pair_files(levels.outputs_of(pair)))
    mine = out / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_desc-manual_mask.nii.gz"
    mine.write_text("a file the app does not own")
    other_before = _snapshot(out / "sub-02")
    with caplog.at_level(logging.INFO, logger="bids_lesionchange"):
        levels.finish_pair_outputs(out, [levels.PairOutcome(pairs[0])], {pairs[0].name: written})
    gone = {first.native_mask, first.native_probability, sidecar_path(first.native_mask),
            sidecar_path(first.native_probability), first.metrics, sidecar_path(first.metrics)}
    assert {p for p in owned_pair_files(first) if not (out / p).exists()} == gone  # no --reference-dir either
    assert (out / first.mask).is_file() and (out / first.change_mosaic).is_file() and mine.is_file()
    assert _snapshot(out / "sub-02") == other_before
    assert "sub-01_ses-01to02: removed 6 file(s) of an earlier run that this run does not write" in caplog.text
    assert str(first.native_mask) in caplog.text


def test_a_failed_pair_keeps_its_earlier_outputs(tmp_path):
    from bids_lesionchange.cli import levels
    from bids_lesionchange.derivatives import owned_pair_files
    from bids_lesionchange.discovery import find_pairs

    pairs, _ = find_pairs(_two_subjects(tmp_path, None))
    out = tmp_path / "out"
    _touch(out, owned_pair_files(levels.outputs_of(pairs[0])))
    before = _snapshot(out)
    failed = levels.PairOutcome(pairs[0], status="failed", step="predict", message="boom")
    levels.finish_pair_outputs(out, [failed], {pairs[0].name: {levels.outputs_of(pairs[0]).mask}})
    assert _snapshot(out) == before and failed.status == "failed"


def _touch(root: Path, paths) -> None:
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"earlier run: {rel}")


def test_a_full_disk_leaves_no_sidecar_without_its_nifti(tmp_path, monkeypatch):
    """(c) The sink writes the data file first: a failed NIfTI write (ENOSPC) leaves no new sidecar."""
    import errno

    from bids_lesionchange.interfaces import bids as bids_interfaces
    from bids_lesionchange.interfaces.bids import DerivativeSink

    source = _good_image(tmp_path / "work" / "change_mask.nii.gz")
    out_path = "sub-01/ses-02/anat/sub-01_ses-02_desc-change_mask.nii.gz"

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(bids_interfaces, "atomic_copy", full_disk)
    sink = DerivativeSink(in_file=str(source), base_directory=str(tmp_path / "out"), out_path=out_path,
                          meta_dict={"Threshold": 0.1})
    with pytest.raises(OSError, match="No space left"):
        sink.run(cwd=str(tmp_path / "work"))
    assert not list((tmp_path / "out").rglob("*.json")) and not list((tmp_path / "out").rglob("*.nii.gz"))
    monkeypatch.undo()
    sink.run(cwd=str(tmp_path / "work"))
    assert (tmp_path / "out" / out_path).is_file()
    assert json.loads((tmp_path / "out" / out_path.replace(".nii.gz", ".json")).read_text()) == {"Threshold": 0.1}


def test_an_orphan_sidecar_is_removed_and_its_pair_failed_by_name(tmp_path):
    """(c) A sidecar whose data file is missing (written by an older version, or by another tool)."""
    from bids_lesionchange.cli import levels
    from bids_lesionchange.derivatives import owned_pair_files, sidecar_path
    from bids_lesionchange.discovery import find_pairs

    pairs, _ = find_pairs(_two_subjects(tmp_path, None))
    out = tmp_path / "out"
    for pair in pairs:
        _touch(out, owned_pair_files(levels.outputs_of(pair)))
    first = levels.outputs_of(pairs[0])
    (out / first.probability).unlink()
    other_before = _snapshot(out / "sub-02")
    outcomes = [levels.PairOutcome(p) for p in pairs]
    levels.finish_pair_outputs(out, outcomes, None)
    orphan = out / sidecar_path(first.probability)
    assert not orphan.exists() and (out / first.mask).is_file()
    assert (outcomes[0].status, outcomes[0].step) == ("failed", "write_outputs")
    assert outcomes[0].message.startswith(f"removed 1 JSON sidecar(s) whose data file is missing ({orphan})")
    assert "free space in the output directory and rerun this subject" in outcomes[0].message
    assert outcomes[1].status == "ok" and _snapshot(out / "sub-02") == other_before


def test_a_second_run_on_the_same_output_dir_is_refused_at_once(tmp_path):
    """(b) As a user starts it: the CLI exits 2 before any subject starts, naming the other run."""
    import os
    import socket

    from bids_lesionchange.cli.lock import LOCK_NAME, lock_output_dir

    bids = _two_subjects(tmp_path, None)
    out = tmp_path / "out"
    with lock_output_dir(out, level="participant", subjects=("02",), command=["bids_lesionchange", "..."]):
        done = _app(bids, out, "participant", "--mode", "preprocess", "--skip-bids-validation",
                    "--skull-strip", "threshold", "--no-reports", "-w", tmp_path / "work")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"bids_lesionchange: error: the output directory {out} is being written by "
                           "another bids_lesionchange run")
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in last and "participant level for sub-02" in last
    assert f"lock file: {out / LOCK_NAME}" in last and "Wait until that run has finished" in last
    assert not (out / "sub-01").exists() and not (out / "sub-02").exists()


def _run_pair_files(tmp_path: Path) -> Path:
    from tests.conftest import make_bids

    return make_bids(tmp_path / "bids", {
        "01": ["ses-01/anat/sub-01_ses-01_FLAIR.nii.gz", "ses-02/anat/sub-01_ses-02_run-1_FLAIR.nii.gz",
               "ses-02/anat/sub-01_ses-02_run-2_FLAIR.nii.gz"],
        "02": ["ses-01/anat/sub-02_ses-01_FLAIR.nii.gz", "ses-02/anat/sub-02_ses-02_FLAIR.nii.gz"]})


def test_run_1_of_two_runs_is_used_with_a_warning_and_a_note_in_the_summary(tmp_path, monkeypatch, caplog):
    """(d) Which FLAIR of a session with run-1 and run-2 is used, and how to use the other."""
    import csv
    import logging

    from bids_lesionchange.cli import levels

    bids = _run_pair_files(tmp_path)
    monkeypatch.setattr(levels, "run_graph", lambda w, s, pairs, r: [levels.PairOutcome(p) for p in pairs])
    settings = _settings(bids, tmp_path, mode="preprocess")
    with caplog.at_level(logging.WARNING):
        assert levels.run_participant(settings, "run1") == 0
    note = (f"sub-01 ses-02 has 2 FLAIR images; using sub-01_ses-02_run-1_FLAIR.nii.gz (the first in name "
            f"order), not sub-01_ses-02_run-2_FLAIR.nii.gz; to use another, move the unwanted file(s) out of "
            f"{bids / 'sub-01' / 'ses-02' / 'anat'}")
    assert any(r.levelno == logging.WARNING and note in r.getMessage() for r in caplog.records)
    with (settings.output_dir / "logs" / "summary-run1.tsv").open() as fh:
        rows = {r["pair"]: r for r in csv.DictReader(fh, delimiter="\t")}
    assert rows["sub-01_ses-01to02"]["status"] == "ok" and note in rows["sub-01_ses-01to02"]["message"]
    assert rows["sub-02_ses-01to02"]["message"] == "n/a"


def _with_qform(path: Path, shift_mm: float) -> Path:
    import nibabel as nib
    import numpy as np

    img = nib.load(str(path))
    qform = img.affine.copy()
    qform[0, 3] += shift_mm
    img.set_qform(qform, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))
    return path


def test_a_qform_that_disagrees_with_the_sform_is_warned_before_the_graph(tmp_path, monkeypatch, caplog):
    """(e) The warning names the file and says the sform is used; the other subject gets none."""
    import logging

    from bids_lesionchange.cli import levels
    from bids_lesionchange.discovery import find_pairs

    bids = _two_subjects(tmp_path, None)
    bad = _with_qform(bids / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_FLAIR.nii.gz", 3.0)
    pairs, _ = find_pairs(bids)
    with caplog.at_level(logging.WARNING):
        ready, failed = levels.check_pair_files(pairs)
    assert len(ready) == 2 and not failed  # flagged, not refused
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{bad.name}: its qform and sform disagree (they place the field of view up to 3.00 mm "
                        "apart; qform code 1, sform code 1); the sform is used (nibabel's rule: the sform when "
                        "its code is above 0); if the qform is the right one, copy it to the sform (e.g. "
                        "fslorient -copyqform2sform) and rerun"]


def test_a_reference_mask_covering_half_the_fov_is_flagged_in_the_metrics(tmp_path, caplog):
    """(f) The metrics are still computed, but the table, its sidecar and the log say the reference is
    implausible, naming it; a plausible reference of the other subject gets 'none'."""
    import logging

    import nibabel as nib
    import numpy as np

    from bids_lesionchange.analysis.files import aggregate_metric_files, evaluate_files
    from bids_lesionchange.analysis.tables import read_table_tsv
    from bids_lesionchange.image.transforms import write_xfm

    shape, affine = (32, 32, 32), np.eye(4)
    grid = np.indices(shape)
    brain = ((grid - 15.5) ** 2).sum(0) < 12 ** 2
    lesion = ((grid - np.array([12, 16, 16])[:, None, None, None]) ** 2).sum(0) < 2.5 ** 2
    files = {}
    for name, data, dtype in (("brain", brain, np.uint8), ("labels", lesion, np.int16),
                              ("half", grid[0] < 16, np.uint8), ("good", lesion, np.uint8)):
        files[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(dtype), affine), str(files[name]))
    xfm = write_xfm(np.eye(4), tmp_path / "xfm.txt", source="follow-up")
    with caplog.at_level(logging.WARNING):
        bad, bad_sidecar = evaluate_files(str(files["labels"]), str(files["half"]), str(xfm),
                                          str(tmp_path / "bad.tsv"), pair="sub-01_ses-01to02", brain_mask=str(files["brain"]))
        good, _ = evaluate_files(str(files["labels"]), str(files["good"]), str(xfm), str(tmp_path / "good.tsv"),
                                 pair="sub-02_ses-01to02", brain_mask=str(files["brain"]))
    (row,) = read_table_tsv(bad)
    assert row["reference_flag"].startswith(f"the reference mask {files['half']} is implausible for a change "
                                            "mask: it covers 50% of the brain")
    assert "the metrics of this pair are not meaningful" in row["reference_flag"]
    assert row["n_ref"] == 1 and np.isfinite(row["dice"])  # computed all the same
    assert bad_sidecar["ReferencePlausibility"]["plausible"] is False and "reference_flag" in bad_sidecar
    assert f"sub-01_ses-01to02: {row['reference_flag']}" in caplog.text
    assert read_table_tsv(good)[0]["reference_flag"] == "none" and "sub-02_ses-01to02" not in caplog.text
    rows = read_table_tsv(aggregate_metric_files([Path(bad), Path(good)], tmp_path / "group.tsv"))
    assert [r["reference_flag"] for r in rows][:2] == [row["reference_flag"], "none"]


@pytest.mark.slow
def test_end_to_end_a_rerun_with_no_native_replaces_the_pairs_outputs_as_a_set(tmp_path):
    """(a) and (f) as a user runs them: infer with native outputs and the true change masks as
    references (plausible: reference_flag none), then rerun sub-01 alone with --no-native and no
    references into the same output dir: sub-01's native masks and metrics are gone, its other outputs
    are there, and sub-02's files are byte-identical."""
    from bids_lesionchange.analysis.tables import read_table_tsv
    from bids_lesionchange.cli.levels import outputs_of
    from bids_lesionchange.derivatives import sidecar_path
    from bids_lesionchange.discovery import find_pairs
    from bids_lesionchange.simulate.cohort import write_cohort

    bids = write_cohort(tmp_path / "bids", n_nochange=0, n_change=2, seed=3, preset="small")
    out, work = tmp_path / "out", tmp_path / "work"
    args = [bids, out, "participant", "--skip-bids-validation", "--skull-strip", "threshold",
            "--output-resolution", "2.5", "--nprocs", "1", "--no-reports", "-w", work]
    first = _app(*args, "--reference-dir", bids / "derivatives" / "truth")
    assert first.returncode == 0, first.stderr[-3000:]
    pairs, _ = find_pairs(bids)
    files = outputs_of(pairs[0])
    for rel in (files.native_mask, files.native_probability, files.metrics):
        assert (out / rel).is_file()
    assert read_table_tsv(out / files.metrics)[0]["reference_flag"] == "none"
    other = _snapshot(out / "sub-02")

    second = _app(*args, "--no-native", "--participant-label", "01")
    assert second.returncode == 0, second.stderr[-3000:]
    for rel in (files.native_mask, files.native_probability, files.metrics):
        assert not (out / rel).exists() and not (out / sidecar_path(rel)).exists()
    for rel in (files.mask, files.probability, files.lesions, files.change_qc, files.followup_preproc):
        assert (out / rel).is_file()
    assert "sub-01_ses-01to02: removed 6 file(s) of an earlier run that this run does not write" in second.stderr
    assert _snapshot(out / "sub-02") == other
