"""TensorFlow steps run in a process of their own: results and errors come back, memory does not stay."""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest

from bids_lesionchange.errors import InputError
from bids_lesionchange.model.isolated import ChildTraceback, run_isolated


# module level, so that the spawned process finds them by name
def _refuse(path):
    raise InputError(path, "predict", "cannot read this image")


def _killed():
    os.kill(os.getpid(), signal.SIGKILL)


def _sleeps(pid_file):
    import time

    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)


def _logs(value):
    logging.getLogger("bids_lesionchange.model.adapt").info("adapted on %d sessions", value)
    return value


def test_input_error_crosses_a_process_boundary_as_itself():
    err = pickle.loads(pickle.dumps(InputError("/data/sub-01_FLAIR.nii.gz", "predict", "cannot read it")))
    assert type(err) is InputError
    assert (str(err.path), err.step, err.message) == ("/data/sub-01_FLAIR.nii.gz", "predict", "cannot read it")
    assert str(err) == "predict: /data/sub-01_FLAIR.nii.gz: cannot read it"


def test_run_isolated_computes_in_another_process_and_returns_errors_as_they_were_raised(tmp_path):
    assert run_isolated("step", os.getpid) != os.getpid()
    with pytest.raises(InputError) as err:
        run_isolated("predict", _refuse, str(tmp_path / "b.nii.gz"))
    assert err.value.path == tmp_path / "b.nii.gz" and err.value.message == "cannot read this image"
    # where it was raised in the other process comes with it (Nipype's crash file shows it)
    assert isinstance(err.value.__cause__, ChildTraceback) and "in _refuse" in str(err.value.__cause__)


def test_what_the_isolated_step_logs_reaches_the_callers_log(caplog):
    with caplog.at_level(logging.INFO, logger="bids_lesionchange"):
        assert run_isolated("adapt", _logs, 2) == 2
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("bids_lesionchange.model.adapt", "adapted on 2 sessions")]


def test_a_process_killed_mid_step_is_reported_with_the_step_the_cause_and_the_fix():
    with pytest.raises(RuntimeError) as err:
        run_isolated("predict", _killed)
    message = str(err.value)
    assert message.startswith("predict: the process running it was killed by SIGKILL")
    assert "out of memory" in message and "--mem-gb" in message


def test_the_predict_node_leaves_no_tensorflow_in_the_process_that_runs_it(tmp_path, make_brain):
    """The node's worker never imports TensorFlow (so never holds its memory), and the map it writes
    is the one predict_files computes in-process."""
    from bids_lesionchange.model.detector import build_detector
    from bids_lesionchange.model.files import predict_files
    from bids_lesionchange.model.io import DETECTOR_WEIGHTS, write_model_spec
    from bids_lesionchange.params import DetectorParams, HyperParams

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    hyper = HyperParams(detector=DetectorParams(base_filters=4, levels=2))
    build_detector(hyper.detector).save_weights(str(model_dir / DETECTOR_WEIGHTS))
    write_model_spec(model_dir, hyper, software={"test": "1"})
    paths = []
    for name, data in zip(("b", "f", "m"), make_brain((24, 20, 16))):
        paths.append(str(tmp_path / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4)), paths[-1])
    script = textwrap.dedent(f"""
        import os, sys
        from bids_lesionchange.interfaces.change import SiameseUNetPredict
        os.chdir({str(tmp_path)!r})
        result = SiameseUNetPredict(baseline={paths[0]!r}, followup={paths[1]!r}, brain_mask={paths[2]!r},
                                    model_dir={str(model_dir)!r}).run()
        print(result.outputs.probability)
        print("tensorflow" in sys.modules)
        print(json.dumps(result.outputs.compute, separators=(",", ":")))
    """).replace("import os, sys", "import json, os, sys")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    probability, tensorflow_imported, compute = done.stdout.strip().splitlines()[-3:]
    assert tensorflow_imported == "False"
    # what computed the map comes back from the isolated process (for the change QC JSON)
    compute = json.loads(compute)
    assert compute["threads"] == 1 and compute["graph"] in ("polyphase", "plain") and compute["tensorflow"]
    expected = predict_files(str(model_dir), *paths, str(tmp_path / "in_process.nii.gz"))
    np.testing.assert_allclose(np.asarray(nib.load(probability).dataobj),
                               np.asarray(nib.load(expected).dataobj), atol=1e-5)


def test_a_main_script_without_a_guard_is_not_run_again_by_the_isolated_process(tmp_path):
    """Nipype's batch plugins (SLURM, SGE, PBS) run each node from a script with no
    ``if __name__ == "__main__"``; a spawned process would run that script, so the node, again."""
    runs = tmp_path / "runs.txt"
    script = tmp_path / "pyscript_node.py"
    script.write_text(textwrap.dedent(f"""
        import os
        from bids_lesionchange.model.isolated import run_isolated
        with open({str(runs)!r}, "a") as f:
            f.write("ran\\n")
        print(run_isolated("predict", os.getpid) != os.getpid())
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True"]
    assert runs.read_text() == "ran\n"


def test_where_no_process_can_be_started_the_step_runs_here_with_a_warning(monkeypatch, caplog):
    import multiprocessing

    def no_semaphores(self, *args, **kwargs):
        raise OSError("this platform lacks a functioning sem_open implementation")

    monkeypatch.setattr(type(multiprocessing.get_context("spawn")), "Queue", no_semaphores)
    with caplog.at_level(logging.WARNING, logger="bids_lesionchange"):
        assert run_isolated("predict", os.getpid) == os.getpid()
    assert "predict: cannot start a process of its own (this platform lacks" in caplog.text


def test_an_interrupted_caller_leaves_no_process_behind(tmp_path):
    """Ctrl-C (or the app's stop signal) while the step runs: the step's process is ended, not
    waited for."""
    pid_file = tmp_path / "pid"

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 3, 5)  # after 3 s (the step is running), then every 5 s
    try:
        with pytest.raises(KeyboardInterrupt):
            run_isolated("predict", _sleeps, str(pid_file))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    with pytest.raises(ProcessLookupError):  # ended and reaped
        os.kill(int(pid_file.read_text()), 0)
