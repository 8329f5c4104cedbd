"""Denormal floats: does any numeric path of the app slow down without flush-to-zero?

Usage: python benchmarks/denormals.py [--name denormals] [--repeats 2]

HD-BET's PyTorch convolutions ran 28x slower on an Intel AVX-512 machine because of denormal
numbers (the app now flushes them in the HD-BET process). This benchmark checks the app's other
numeric paths the same way: each runs in a fresh child process twice, once as the app runs it
and once with the CPU's flush-to-zero and denormals-are-zero bits (MXCSR FTZ/DAZ) set at the
start of the process (threads created later inherit them), and the two times are compared.
The paths, on one synthetic 1 mm subject (``bids_lesionchange.simulate.cohort``, seed 4242):

- ``generator``: simulating that subject (numpy/scipy: anatomy, lesions, acquisition);
- ``n4``: SimpleITK N4 of the follow-up (2 threads);
- ``registration``: dipy rigid registration of the baseline to the follow-up;
- ``inference``: the shipped model's forward pass over the brain (TensorFlow, 2 threads);
- ``adaptation``: 10 steps of ``participant --adapt-steps`` (VAE reconstruction, SuperMix and
  detector training steps: TensorFlow training).

A path whose ratio (as run / flushed) is near 1 meets no denormals worth flushing. x86-64 Linux
only (MXCSR through glibc's ``fesetenv``). Writes benchmarks/results/<name>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (DEFAULT_MODEL, command_line, machine, markdown_table, setup_logging,
                     write_results)

PATHS = ("generator", "n4", "registration", "inference", "adaptation")
SEED = 4242


def set_flush_to_zero() -> bool:
    """Set MXCSR's FTZ and DAZ bits in this thread (inherited by threads created after); True if set."""
    import ctypes
    import ctypes.util

    import numpy as np

    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    env = (ctypes.c_uint8 * 32)()  # glibc x86-64 fenv_t: 28 bytes of x87 state, then MXCSR
    if libm.fegetenv(ctypes.byref(env)) != 0:
        return False
    mxcsr = int.from_bytes(bytes(env[28:32]), "little") | (1 << 15) | (1 << 6)
    env[28:32] = list(mxcsr.to_bytes(4, "little"))
    if libm.fesetenv(ctypes.byref(env)) != 0:
        return False
    return float((np.array([1e-39], np.float32) * np.float32(1.0))[0]) == 0.0


def _subject():
    from bids_lesionchange.simulate.cohort import simulate_subject

    return simulate_subject(0, "Change", seed=SEED, preset="1mm")


def _common_pair(subject):
    """Both sessions on the follow-up's grid (the true transform), brain mask, zooms."""
    import numpy as np

    from bids_lesionchange.image.grid import resample_to_grid

    base, follow = subject.sessions
    pull = np.linalg.inv(subject.ses01_to_ses02)  # follow-up world -> baseline world
    moved = resample_to_grid(base.image, base.affine, follow.image.shape, follow.affine, pull, order=1)
    zooms = np.sqrt((follow.affine[:3, :3] ** 2).sum(0))
    return moved.astype(np.float32), follow.image.astype(np.float32), follow.brain_mask > 0, zooms


def child(path: str, flush: bool, model_dir: str) -> dict:
    """Run one path once in this process; return its seconds (set-up excluded)."""
    flushed = set_flush_to_zero() if flush else False
    import numpy as np

    if path == "generator":
        began = time.perf_counter()
        _subject()
        return {"seconds": time.perf_counter() - began, "flushed": flushed}
    subject = _subject()
    base, follow, brain, zooms = _common_pair(subject)
    if path == "n4":
        from bids_lesionchange.image.intensity import n4_bias_correct

        began = time.perf_counter()
        n4_bias_correct(follow, brain, zooms, nthreads=2)
    elif path == "registration":
        from bids_lesionchange.image.register import rigid_register

        session = subject.sessions[0]
        began = time.perf_counter()
        rigid_register(follow, subject.sessions[1].affine, session.image, session.affine, brain,
                       level_iters=(100, 50), sigmas=(1.0, 0.0), factors=(2, 1), n_samples=50_000,
                       nthreads=2)
    else:
        from bids_lesionchange.image.intensity import normalise
        from bids_lesionchange.model._backend import tf

        tf.config.threading.set_intra_op_parallelism_threads(2)
        base_n, follow_n = (normalise(x, brain, "wm-peak").astype(np.float32) for x in (base, follow))
        if path == "inference":
            from bids_lesionchange.model.inference import predict_change
            from bids_lesionchange.model.io import load_detector

            model, spec = load_detector(model_dir)
            predict_change(model, spec, base_n, follow_n, brain)  # tracing, oneDNN primitives
            began = time.perf_counter()
            predict_change(model, spec, base_n, follow_n, brain)
        else:
            from bids_lesionchange.model.adapt import adapt_detector

            with tempfile.TemporaryDirectory() as out:
                began = time.perf_counter()
                adapt_detector(model_dir, [("ses-01", base_n, brain), ("ses-02", follow_n, brain)],
                               Path(out) / "adapted", steps=10, seed=0)
    return {"seconds": time.perf_counter() - began, "flushed": flushed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="denormals")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--repeats", type=int, default=2, help="child runs per path and setting (best kept)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, flush, model_dir = args.child
        print(json.dumps(child(path, flush == "1", model_dir)))
        return
    setup_logging()
    env = dict(os.environ, OMP_NUM_THREADS="2", TF_CPP_MIN_LOG_LEVEL="2")
    rows, records = [], []
    for path in args.paths:
        best = {}
        for flush in ("0", "1"):
            runs = []
            for _ in range(max(1, args.repeats)):
                done = subprocess.run([sys.executable, __file__, "--child", path, flush, str(args.model)],
                                      capture_output=True, text=True, env=env, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"{path} (flush {flush}) failed:\n{done.stderr[-3000:]}")
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            if flush == "1" and not all(r["flushed"] for r in runs):
                raise SystemExit("could not set flush-to-zero on this CPU (x86-64 Linux only)")
            best[flush] = round(min(r["seconds"] for r in runs), 2)
        ratio = round(best["0"] / best["1"], 2)
        records.append({"path": path, "seconds_as_run": best["0"], "seconds_flushed": best["1"],
                        "ratio": ratio})
        rows.append([path, best["0"], best["1"], ratio])
        print(rows[-1], flush=True)
    cpu = machine()
    c = cpu["cpu"]
    md = ["# Denormal floats: each numeric path as the app runs it and with flush-to-zero\n",
          f"Command: `{command_line()}`\n",
          f"CPU: {c['model']}, {c['cores']} cores, {', '.join(c['extensions'])}; FP32 peak "
          f"{c['fp32_peak_gflops']} GFLOP/s. Load average at the end {cpu['load_average_1min']}.\n",
          "Each path in a fresh process, best of "
          f"{max(1, args.repeats)}; flushed = MXCSR FTZ and DAZ set at the start of the process. "
          "A ratio near 1: the path meets no denormals worth flushing (HD-BET, for comparison, "
          "ran 28x slower without flushing on an Intel AVX-512 machine; it flushes in its own process).\n",
          markdown_table(["path", "as run s", "flushed s", "ratio"], rows)]
    write_results(args.name, {"command": command_line(), "machine": cpu, "paths": records}, "\n".join(md))


if __name__ == "__main__":
    main()
