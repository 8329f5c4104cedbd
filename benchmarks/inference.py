"""Benchmark full-brain inference of the change detector (time, peak RSS, GFLOP/s).

Usage: TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/inference.py [--shape 160 192 160] [--configs cpu cpu-group ...]

Each configuration runs in its own process (so peak RSS is its own) with random weights on a
synthetic brain-shaped pair; FLOPs are counted analytically (convolutions, final output only).
GFLOP/s are compared with the FP32 peak of the CPU it runs on (``_common.cpu_description``).
Writes benchmarks/results/inference.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, cpu_description, machine, write_results  # noqa: E402

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CONFIGS = {
    "cpu": {},  # the cpu preset: siamese, base 8, 3 levels, inception + AG + MS + DS
    "cpu-group": {"normalization": "group"},
    "unet-bce": "unet-bce",
}


def _child(name: str, shape: tuple[int, int, int], window: int | None) -> dict:
    import resource

    import numpy as np

    from bids_lesionchange.model.detector import build_detector, forward_flops, input_multiple
    from bids_lesionchange.model.inference import predict_change
    from bids_lesionchange.params import PRESETS
    from bids_lesionchange.model.variants import variant_params

    base = PRESETS["cpu"].detector
    config = CONFIGS[name]
    params = variant_params(config, base) if isinstance(config, str) else base.__class__(**{**base.__dict__, **config})
    model = build_detector(params)
    spec = {"input_multiple": input_multiple(params), "architecture": params.architecture}
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    mask = (grid**2).sum(0) < 0.95
    rng = np.random.default_rng(0)
    baseline = (rng.uniform(0.2, 0.8, shape) * mask).astype(np.float32)
    followup = baseline.copy()
    predict_change(model, spec, baseline[:64, :64, :64], followup[:64, :64, :64], mask[:64, :64, :64])  # warm-up
    times = []
    for _ in range(2):
        began = time.perf_counter()
        predict_change(model, spec, baseline, followup, mask, window=window)
        times.append(time.perf_counter() - began)
    coords = np.argwhere(mask)
    box = tuple(int(np.ceil((hi - lo + 1) / spec["input_multiple"]) * spec["input_multiple"])
                for lo, hi in zip(coords.min(0), coords.max(0)))
    flops = forward_flops(params, box, final_only=True)
    seconds = min(times)
    return {
        "config": name, "volume": list(shape), "network_input": list(box), "window": window,
        "parameters": int(model.count_params()), "seconds": round(seconds, 3),
        "gflop": round(flops / 1e9, 2), "gflops_per_s": round(flops / 1e9 / seconds, 1),
        "fraction_of_peak": round(flops / 1e9 / seconds / cpu_description()["fp32_peak_gflops"], 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),  # the machine is shared: > 2 means contention
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 192, 160])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--window", type=int, default=None, help="also time sliding windows of this side")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        window = opts.window if opts.window else None
        print(json.dumps(_child(opts.child, tuple(opts.shape), window)))
        return
    results = []
    runs = [(c, None) for c in opts.configs] + ([("cpu", opts.window)] if opts.window else [])
    for name, window in runs:
        cmd = [sys.executable, __file__, "--child", name, "--shape", *map(str, opts.shape)]
        if window:
            cmd += ["--window", str(window)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results.append(json.loads(out))
        print(json.dumps(results[-1]), flush=True)
    host = machine()
    write_results("inference", {"command": command_line(), "machine": host,
                                "peak_gflops": host["cpu"]["fp32_peak_gflops"],
                                "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "results": results})


if __name__ == "__main__":
    main()
